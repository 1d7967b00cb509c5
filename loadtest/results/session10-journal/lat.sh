#!/usr/bin/env bash
# lat.sh VARIANT...: "name|ENV=v|binary"; oha -q RATE for SECS per variant, ROUNDS interleaved; p50/p99/p99.9 ms
set -euo pipefail
LT_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"; cd "$LT_ROOT"; source loadtest/lib.sh; lt_init lat
PAYROUTE=${PAYROUTE:-$LT_ROOT/target/release/payroute}; MOCK=$LT_ROOT/target/release/mock-acquirer
ROUNDS=${ROUNDS:-3}; SECS=${SECS:-6}; RATE=${RATE:-2000}
start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
python3 - "$LT_WORK/bodies" $((RATE*SECS*ROUNDS*8)) <<'PY'
import sys, random
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write('{"amount":%d,"currency":"CNY","order_id":"L%x-%d","note":"oha"}\n' % (random.choice([100, 1250, 9900]), random.randrange(1<<40), i))
PY
start_variants "$@"
for r in $(seq 1 "$ROUNDS"); do
  for j in "${!NAMES[@]}"; do
    k=$(( (j + r) % ${#NAMES[@]} )); name=${NAMES[$k]}; url=${URLS[$k]}
    oha --no-tui --output-format json -z "${SECS}s" -c 64 -q "$RATE" --latency-correction -m POST \
      -H "X-Merchant-Id: m-0000001" -T application/json -Z "$LT_WORK/bodies" "$url/v1/payments" > "$LT_WORK/o.json"
    python3 - "$LT_WORK/o.json" "$r" "$name" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); p = j["latencyPercentiles"]
print("round %s %-12s p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms" % (sys.argv[2], sys.argv[3], p["p50"]*1e3, p["p99"]*1e3, p["p99.9"]*1e3, j["summary"]["slowest"]*1e3))
PY
  done
done
