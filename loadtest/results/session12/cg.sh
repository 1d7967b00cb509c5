#!/usr/bin/env bash
# cg.sh BIN OUT: instructions per payment under callgrind, sequential payments (wrk -c1), counters zeroed after warm-up
# (JOURNAL_URL set: the journal on that PostgreSQL database, as in session 17)
set -euo pipefail
LT_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"; cd "$LT_ROOT"; source loadtest/lib.sh
LT_PORT_BASE=${LT_PORT_BASE:-25000} lt_init cg
BIN=$1; OUT=$2
MOCK=$LT_ROOT/target/release/mock-acquirer
start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
port=$((PORT_PAYROUTE + 200)); admin=$((PORT_PAYROUTE + 300))
gen_config "$LT_WORK/p.toml" 3 1000 --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin"
[ -n "${JOURNAL_URL:-}" ] && printf "\n[journal]\nbackend = \"postgres\"\nurl = \"%s\"\n" "$JOURNAL_URL" >> "$LT_WORK/p.toml"
spawn p valgrind --tool=callgrind --callgrind-out-file=$OUT.cg "$BIN" serve --config "$LT_WORK/p.toml"; pid=$SPAWNED
wait_port "$port" "$pid" 120 || die "no start"
wrk -t1 -c1 -d5s --timeout 5s -s loadtest/wrk/payments.lua "http://127.0.0.1:$port/v1/payments" -- 1000 >/dev/null 2>&1
callgrind_control -z $pid >/dev/null
wrk -t1 -c1 -d${DUR:-20}s --timeout 5s -s loadtest/wrk/payments.lua "http://127.0.0.1:$port/v1/payments" -- 1000 > $OUT.wrk 2>&1
callgrind_control -d $pid >/dev/null
n=$(sed -n 's/^WRKJSON //p' $OUT.wrk | python3 -c "import json,sys; print(json.load(sys.stdin)['requests'])")
f=$(ls -t $OUT.cg* | head -1)
tot=$(callgrind_annotate "$f" 2>/dev/null | grep -m1 "PROGRAM TOTALS" | awk '{gsub(",","",$1); print $1}')
echo "payments=$n total_Ir=$tot Ir/payment=$(python3 -c "print(round($tot/$n))")  file=$f"
