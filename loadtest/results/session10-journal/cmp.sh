#!/usr/bin/env bash
# cmp.sh VARIANT... : each variant "name|ENV=val ENV2=val" runs this build with env; wrk closed loop, rounds interleaved.
set -euo pipefail
LT_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$LT_ROOT"
source loadtest/lib.sh
lt_init cmp
PAYROUTE=${PAYROUTE:-$LT_ROOT/target/release/payroute}; MOCK=$LT_ROOT/target/release/mock-acquirer
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-8}
start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
start_variants "$@"
for r in $(seq 1 "$ROUNDS"); do
  for j in "${!NAMES[@]}"; do
    k=$(( (j + r) % ${#NAMES[@]} ))
    name=${NAMES[$k]}; url=${URLS[$k]}; pid=${PIDS[$k]}
    c0=$(cpu_ticks "$pid")
    out=$(wrk -t2 -c64 -d${DUR}s --timeout 5s -s loadtest/wrk/payments.lua "$url/v1/payments" -- 1000 2>&1)
    c1=$(cpu_ticks "$pid")
    js=$(echo "$out" | sed -n 's/^WRKJSON //p')
    rps=$(echo "$js" | python3 -c "import json,sys; print(json.load(sys.stdin)['rps'])")
    n=$(echo "$js" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['requests'])")
    e=$(echo "$js" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['errors_status']+d['errors_timeout'])")
    us=$(python3 -c "print(round(($c1-$c0)*1e6/100/$n,1))")
    p99=$(echo "$js" | python3 -c "import json,sys; print(json.load(sys.stdin)['p99_us']/1000)")
    echo "round $r $name rps=$rps cpu_us=$us p99ms=$p99 errors=$e"
  done
done
