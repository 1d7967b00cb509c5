#!/usr/bin/env bash
# codes.sh: what the rare non-200s of bench.sh's cpu section are. bench.sh's
# cpu rounds against one payroute (journal on): oha at RATE/s for SECS s,
# bodies drawn with replacement from 20 unique lines per request; per round
# oha's status codes and errors, and the deltas of payroute's
# payroute_requests_total{outcome} and payroute_replays_total.
set -euo pipefail
LT_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"; cd "$LT_ROOT"; source loadtest/lib.sh
lt_init codes
PAYROUTE=${PAYROUTE:-$LT_ROOT/target/release/payroute}; MOCK=$LT_ROOT/target/release/mock-acquirer
ROUNDS=${ROUNDS:-5}; SECS=${SECS:-8}; RATE=${RATE:-15000}
start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
port=$((PORT_PAYROUTE + 200)); admin=$((PORT_PAYROUTE + 300))
gen_config "$LT_WORK/p.toml" 3 1000 --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin"
start_payroute "$LT_WORK/p.toml" 60 "$port" "$PAYROUTE"
metrics() { curl -s "http://127.0.0.1:$admin/metrics" | grep -E '^payroute_(requests_total|replays_total)' | sort; }
for r in $(seq 1 "$ROUNDS"); do
  python3 - "$LT_WORK/bodies" $((RATE * SECS * 20)) <<'PY'
import sys, random, time
run = "c%x%04x" % (int(time.time() * 1000), random.randrange(65536))
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write('{"amount":%d,"currency":"CNY","order_id":"%s-%d","note":"cpu"}\n' % (
            random.choice([100, 1250, 9900, 25000, 499]), run, i))
PY
  metrics > "$LT_WORK/m0"
  oha --no-tui --output-format json -z "${SECS}s" -c 64 -q "$RATE" -m POST -H "X-Merchant-Id: m-0000001" \
    -T application/json -Z "$LT_WORK/bodies" "http://127.0.0.1:$port/v1/payments" > "$LT_WORK/o.json" || true
  metrics > "$LT_WORK/m1"
  python3 - "$LT_WORK/o.json" "$LT_WORK/m0" "$LT_WORK/m1" "$r" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
def m(p):
    out = {}
    for line in open(p):
        k, v = line.rsplit(" ", 1); out[k] = float(v)
    return out
a, b = m(sys.argv[2]), m(sys.argv[3])
delta = {k: int(b[k] - a.get(k, 0)) for k in b if b[k] - a.get(k, 0)}
print("round %s codes=%s errors=%s payroute=%s" % (sys.argv[4], d["statusCodeDistribution"], d.get("errorDistribution", {}), delta))
PY
done
