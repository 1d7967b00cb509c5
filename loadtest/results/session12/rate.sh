#!/usr/bin/env bash
# rate.sh VARIANT... : each variant "name|ENV=val|binary"; all alive at once, rounds
# interleaved; oha at a fixed rate (RATE/s, SECS s, 64 connections), unique payments
# (drawn from 20 lines per request: ~2.5 % replayed, as in bench.sh); CPU µs per payment of the payroute
# process (user + system, /proc), p50/p99.
set -euo pipefail
LT_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"; cd "$LT_ROOT"; source loadtest/lib.sh
lt_init rate
PAYROUTE=${PAYROUTE:-$LT_ROOT/target/release/payroute}; MOCK=$LT_ROOT/target/release/mock-acquirer
ROUNDS=${ROUNDS:-3}; SECS=${SECS:-8}; RATE=${RATE:-4000}
start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
start_variants "$@"
for r in $(seq 1 "$ROUNDS"); do
  for j in "${!NAMES[@]}"; do
    k=$(( (j + r) % ${#NAMES[@]} ))
    name=${NAMES[$k]}; url=${URLS[$k]}; pid=${PIDS[$k]}
    python3 -c "
import sys
run = 'r$r-$name'
with open('$LT_WORK/bodies', 'w') as f:
    for i in range($RATE * $SECS * 20):
        f.write('{\"amount\":1250,\"currency\":\"CNY\",\"order_id\":\"%s-%d\"}\n' % (run, i))"
    c0=$(cpu_ticks "$pid")
    oha --no-tui --output-format json -z "${SECS}s" -c 64 -q "$RATE" -m POST -H "X-Merchant-Id: m-0000001" \
      -T application/json -Z "$LT_WORK/bodies" "$url/v1/payments" > "$LT_WORK/o.json" 2>/dev/null || true
    c1=$(cpu_ticks "$pid")
    python3 - "$LT_WORK/o.json" "$name" "$r" "$((c1 - c0))" <<'PY'
import json, sys, os
d = json.load(open(sys.argv[1])); tck = os.sysconf("SC_CLK_TCK")
n = sum(d["statusCodeDistribution"].values()); ok = d["statusCodeDistribution"].get("200", 0)
lat = d["latencyPercentiles"]
print("round %s %-10s answered=%d ok=%d cpu_us=%.1f p50ms=%.2f p99ms=%.2f" % (
    sys.argv[3], sys.argv[2], n, ok, int(sys.argv[4]) / tck * 1e6 / max(n, 1), lat["p50"] * 1e3, lat["p99"] * 1e3))
PY
  done
done
