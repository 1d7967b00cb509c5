#!/usr/bin/env bash
# ctx.sh BIN: payroute under wrk closed loop 8 s; context switches per payment per thread kind.
set -euo pipefail
LT_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"; cd "$LT_ROOT"; source loadtest/lib.sh
LT_PORT_BASE=${LT_PORT_BASE:-24000} lt_init ctx
BIN=$1
MOCK=$LT_ROOT/target/release/mock-acquirer
start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
port=$((PORT_PAYROUTE + 200)); admin=$((PORT_PAYROUTE + 300))
gen_config "$LT_WORK/p.toml" 3 1000 --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin"
spawn p env ${ENVS:-X=1} "$BIN" serve --config "$LT_WORK/p.toml"; pid=$SPAWNED
wait_port "$port" "$pid" 60 || die "no start"
snap() { for t in /proc/$pid/task/*; do echo "$(cat $t/comm) $(awk '/^voluntary_ctxt/{v=$2} /^nonvoluntary_ctxt/{n=$2} END{print v, n}' $t/status)"; done | sort; }
snap > "$LT_WORK/a"; c0=$(cpu_ticks "$pid")
out=$(wrk -t2 -c64 -d${DUR:-8}s --timeout 5s -s loadtest/wrk/payments.lua "http://127.0.0.1:$port/v1/payments" -- 1000 2>&1)
c1=$(cpu_ticks "$pid"); snap > "$LT_WORK/b"
n=$(echo "$out" | sed -n 's/^WRKJSON //p' | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['requests'])")
rps=$(echo "$out" | sed -n 's/^WRKJSON //p' | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['rps'], d['p99_us'])")
echo "rps p99us: $rps  cpu_us/payment: $(python3 -c "print(round(($c1-$c0)*1e6/100/$n,1))")"
paste "$LT_WORK/a" "$LT_WORK/b" | awk -v n="$n" '{v[$1]+=$5-$2; nv[$1]+=$6-$3} END{for (k in v) printf "%-18s vol/payment %.2f  invol/payment %.2f\n", k, v[k]/n, nv[k]/n}'
