#!/usr/bin/env bash
# cg-floor.sh OUT: instructions per request of hyper-floor under callgrind, sequential requests
# (wrk -c1), counters zeroed after warm-up; the same mocks and wrk script as session 12's cg.sh.
set -euo pipefail
LT_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"; cd "$LT_ROOT"; source loadtest/lib.sh
LT_PORT_BASE=${LT_PORT_BASE:-26000} lt_init cgf
OUT=$1
MOCK=$LT_ROOT/target/release/mock-acquirer
build_floor
start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
port=$((PORT_PAYROUTE + 200))
spawn f valgrind --tool=callgrind --callgrind-out-file=$OUT.cg "$FLOOR" --listen 127.0.0.1:$port --upstream "$UPSTREAMS" --workers 2; pid=$SPAWNED
wait_port "$port" "$pid" 120 || die "no start"
wrk -t1 -c1 -d5s --timeout 5s -s loadtest/wrk/payments.lua "http://127.0.0.1:$port/v1/payments" -- 1000 >/dev/null 2>&1
callgrind_control -z $pid >/dev/null
wrk -t1 -c1 -d${DUR:-15}s --timeout 5s -s loadtest/wrk/payments.lua "http://127.0.0.1:$port/v1/payments" -- 1000 > $OUT.wrk 2>&1
callgrind_control -d $pid >/dev/null
n=$(sed -n 's/^WRKJSON //p' $OUT.wrk | python3 -c "import json,sys; print(json.load(sys.stdin)['requests'])")
f=$(ls -t $OUT.cg* | head -1)
tot=$(callgrind_annotate "$f" 2>/dev/null | grep -m1 "PROGRAM TOTALS" | awk '{gsub(",","",$1); print $1}')
echo "requests=$n total_Ir=$tot Ir/request=$(python3 -c "print(round($tot/$n))")  file=$f"
