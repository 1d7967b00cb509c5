#!/usr/bin/env bash
# oha.sh: quick oha recipes (closed loop and fixed rate, JSON output) against
# a payroute it starts itself (3 zero-latency mock acquirers, 3 channels,
# 1,000 merchants).
#
#   loadtest/oha.sh             # every recipe, 10 s each
#   loadtest/oha.sh --smoke     # every recipe, 1 s each
#   loadtest/oha.sh RECIPE...   # some: replay unique fixed-rate direct-fixed-rate admin
#
# THE REPLAY CAVEAT. payroute answers a repeated order id from its
# idempotency record without contacting any acquirer ("Never twice"), and oha
# cannot make a body per request: `-d BODY` sends one body forever, so after
# the first request oha measures the *replay* path, not routing. The recipes
# say which path they measure:
#   replay           -d, one fixed body: replay-path throughput (labelled as such)
#   unique           -Z FILE: a random line of a file of unique bodies per
#                    request (100,000 lines per second of run). oha draws lines
#                    *with replacement*, so a share of requests repeat an
#                    earlier order id (replayed, or 409 while the first runs);
#                    the script counts replays exactly (payroute_replays_total)
#                    and prints the share next to the numbers.
#   fixed-rate       -q 2000 --latency-correction with -Z: open-model latency at
#                    2,000 req/s (the same repeat share caveat)
#   direct-fixed-rate  -q 2000 straight to a mock acquirer: the baseline
#   admin            GET /-/health and /metrics on the admin port
# For an exact routing-path measurement (every order id unique) use
# loadtest/bench.sh (wrk + Lua) or loadtest/k6/ (k6 builds each body).
# Each run's JSON is kept in OUT (default loadtest/results/oha-latest; a
# temporary directory for --smoke).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SECS=10; RECIPES=()
for a in "$@"; do
  case "$a" in
    --smoke) SECS=1 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    replay|unique|fixed-rate|direct-fixed-rate|admin) RECIPES+=("$a") ;;
    *) die "unknown argument $a (see --help)" ;;
  esac
done
[ ${#RECIPES[@]} -gt 0 ] || RECIPES=(replay unique fixed-rate direct-fixed-rate admin)
RATE=${RATE:-2000}
CONNS=${CONNS:-64}

lt_init oha
need_python; need_curl; need_oha
build_release
if [ "$SECS" = 1 ]; then
  OUT=${OUT:-"$(mktemp -d /tmp/payroute-oha-smoke.XXXXXX)"}
else
  OUT=${OUT:-"$LT_ROOT/loadtest/results/oha-latest"}
fi
mkdir -p "$OUT"
port_free_or_die "$PORT_PAYROUTE" "$PORT_ADMIN" "$PORT_MOCK1" "$PORT_MOCK2" "$PORT_MOCK3"
start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
gen_config "$LT_WORK/routes.toml" 3 1000
start_payroute "$LT_WORK/routes.toml"
P="http://127.0.0.1:$PORT_PAYROUTE/v1/payments"
ADMIN="http://127.0.0.1:$PORT_ADMIN"

# gen_bodies FILE LINES: unique bodies, one per line (a fresh order id prefix
# each time, so no recipe repeats another's ids).
gen_bodies() {
  python3 - "$1" "$2" <<'PY'
import sys, random, time
run = "o%x%04x" % (int(time.time() * 1000), random.randrange(65536))
cur = ["CNY", "CNY", "CNY", "USD", "EUR"]
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write('{"amount":%d,"currency":"%s","order_id":"%s-%d","note":"oha"}\n'
                % (random.choice([100, 1250, 9900, 25000, 120000]), random.choice(cur), run, i))
PY
}

replays() { curl -s "$ADMIN/metrics" | awk '/^payroute_replays_total/ {print $2}'; }
routed() { curl -s "$ADMIN/metrics" | awk '/^payroute_requests_total/ {s += $2} END {print s + 0}'; }

# run NAME oha-args...: runs oha with JSON output, prints one summary line.
run() {
  local name="$1"; shift
  local r0 n0
  r0=$(replays); n0=$(routed)
  echo "\$ oha --no-tui --output-format json $*" >&2
  oha --no-tui --output-format json "$@" >"$OUT/$name.json" || die "oha failed ($name)"
  python3 - "$OUT/$name.json" "$name" "$r0" "$(replays)" "$n0" "$(routed)" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); s = j["summary"]; p = j.get("latencyPercentiles", {})
ms = lambda k: (p.get(k) or 0) * 1000
line = "%-18s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  p99.9 %6.2f ms  success %.4f  statuses %s" % (
    sys.argv[2], s["requestsPerSec"], ms("p50"), ms("p99"), ms("p99.9"), s["successRate"],
    json.dumps(j.get("statusCodeDistribution", {})))
r = int(float(sys.argv[4] or 0)) - int(float(sys.argv[3] or 0))
n = int(float(sys.argv[6] or 0)) - int(float(sys.argv[5] or 0))
if n and sys.argv[2] != "direct-fixed-rate":
    line += "  replayed %d of %d (%.1f%%)" % (r, n, 100.0 * r / n)
print(line)
PY
}

HDR=(-H "X-Merchant-Id: m-0000001" -T application/json -m POST)
for recipe in "${RECIPES[@]}"; do
  case "$recipe" in
    replay)  run replay -z "${SECS}s" -c "$CONNS" "${HDR[@]}" -d '{"amount":1250,"currency":"CNY","order_id":"oha-fixed-1"}' "$P" ;;
    unique)  gen_bodies "$LT_WORK/unique.jsonl" $((SECS * 100000))
             run unique -z "${SECS}s" -c "$CONNS" "${HDR[@]}" -Z "$LT_WORK/unique.jsonl" "$P" ;;
    fixed-rate) gen_bodies "$LT_WORK/fixed.jsonl" $((SECS * RATE * 20))
             run fixed-rate -z "${SECS}s" -c "$CONNS" -q "$RATE" --latency-correction "${HDR[@]}" -Z "$LT_WORK/fixed.jsonl" "$P" ;;
    direct-fixed-rate) gen_bodies "$LT_WORK/direct.jsonl" $((SECS * RATE * 20))
             run direct-fixed-rate -z "${SECS}s" -c "$CONNS" -q "$RATE" --latency-correction "${HDR[@]}" \
               -Z "$LT_WORK/direct.jsonl" "http://127.0.0.1:$PORT_MOCK1/v1/payments" ;;
    admin)   run admin-health -z "${SECS}s" -c 8 "$ADMIN/-/health"
             run admin-metrics -z "${SECS}s" -c 8 "$ADMIN/metrics" ;;
  esac
done
log "JSON results in $OUT"
