#!/usr/bin/env bash
# console.sh: what the web console's live updates cost payroute (issue 17).
#
#   LT_PORT_BASE=26000 bash loadtest/console.sh [--smoke]
#
# 1. Per poll: on an idle payroute, BURST (2,000) polls of /-/ui/state.json
#    back to back; payroute's CPU (utime + stime from /proc) over them, per
#    poll — with 3 channels and with 50.
# 2. At a fixed payment rate: k6 sends RATE (1,000) payments a second
#    through payroute (3 channels, 3 zero-latency mock acquirers) while
#    ROUNDS (6) rounds of SECS (20) seconds alternate no console and
#    CONSOLES (5) consoles polling once a second as the page does
#    (console_poll.py); payroute's CPU per round, with and without them.
#
# Results: $OUT (default loadtest/results/console/): results.jsonl (one line
# per measurement), summary.txt. Loopback only; bounded in time; every process
# it starts is stopped on exit. --smoke: seconds-long, numbers meaningless.
# Environment: RATE, SECS, ROUNDS, CONSOLES, BURST, LT_PORT_BASE (18000), OUT,
# CARGO_TARGET_DIR (where the release build is), LT_KEEP=1 keeps the work dir.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

smoke_args "$@"
if [ "$SMOKE" = 1 ]; then
  RATE=${RATE:-50}; SECS=${SECS:-2}; ROUNDS=${ROUNDS:-2}; CONSOLES=${CONSOLES:-5}; BURST=${BURST:-50}
  OUT=${OUT:-"$(mktemp -d /tmp/payroute-console-smoke.XXXXXX)"}
else
  RATE=${RATE:-1000}; SECS=${SECS:-20}; ROUNDS=${ROUNDS:-6}; CONSOLES=${CONSOLES:-5}; BURST=${BURST:-2000}
  OUT=${OUT:-"$LT_ROOT/loadtest/results/console"}
fi

lt_init console
need_python; need_curl; need_procps; need_k6
build_release
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
POLL="$LT_ROOT/loadtest/console_poll.py"
K6_FIXED="$LT_ROOT/loadtest/k6/fixed_rate.js"
port_free_or_die "$PORT_PAYROUTE" "$PORT_ADMIN" "$PORT_MOCK1" "$PORT_MOCK2" "$PORT_MOCK3"
TICK=$(getconf CLK_TCK)

{
  echo "== machine"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu: $(cpu_model)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "payroute: $(payroute_rev)"
  echo "k6: $(k6 version 2>&1 | head -1)"
  echo "settings: smoke=$SMOKE rate=$RATE/s secs=$SECS rounds=$ROUNDS consoles=$CONSOLES burst=$BURST"
} | tee "$OUT/machine.txt"

start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
STATE_URL="http://127.0.0.1:$PORT_ADMIN/-/ui/state.json"

# record JSON: one line of results.
record() { echo "$1" >>"$RESULTS"; }

# --- 1. CPU per poll --------------------------------------------------------
for channels in 3 50; do
  gen_config "$LT_WORK/routes-$channels.toml" "$channels" 1000
  start_payroute "$LT_WORK/routes-$channels.toml"
  wait_port "$PORT_ADMIN" "$PAYROUTE_PID" 10 || die "no admin listener"
  python3 "$POLL" --url "$STATE_URL" --burst 20 >/dev/null # warm: connections, first allocations
  sleep 1
  t0=$(cpu_ticks "$PAYROUTE_PID"); s0=$(date +%s.%N)
  out=$(python3 "$POLL" --url "$STATE_URL" --burst "$BURST")
  t1=$(cpu_ticks "$PAYROUTE_PID"); s1=$(date +%s.%N)
  bytes=$(echo "$out" | sed -n 's/.*bytes=\([0-9]*\).*/\1/p')
  line=$(python3 -c 'import json, sys
ticks, tick, n, ch, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5]), int(sys.argv[6])
secs = float(sys.argv[4].split()[1]) - float(sys.argv[4].split()[0])
print(json.dumps({"section": "per_poll", "channels": ch, "polls": n, "bytes": size, "wall_s": round(secs, 3),
                  "cpu_s": ticks / tick, "cpu_us_per_poll": round(ticks / tick / n * 1e6, 1)}))' \
    "$((t1 - t0))" "$TICK" "$BURST" "$s0 $s1" "$channels" "${bytes:-0}")
  record "$line"; log "per poll, $channels channels: $line"
  stop_pid "$PAYROUTE_PID"
done

# --- 2. at a fixed payment rate, with and without consoles ------------------
gen_config "$LT_WORK/routes.toml" 3 1000
start_payroute "$LT_WORK/routes.toml"
wait_port "$PORT_ADMIN" "$PAYROUTE_PID" 10 || die "no admin listener"
log "warm-up: 5 s at $RATE/s"
k6 run -q --no-usage-report -e URL="http://127.0.0.1:$PORT_PAYROUTE/v1/payments" -e RATE="$RATE" -e DURATION=5s \
  -e MERCHANTS=1000 -e OUT="$LT_WORK/warm.json" "$K6_FIXED" >/dev/null 2>&1 || die "k6 warm-up failed"

for round in $(seq 1 "$ROUNDS"); do
  # Alternate which comes first, so a drift of the box is not one side's.
  if [ $((round % 2)) = 1 ]; then order="0 $CONSOLES"; else order="$CONSOLES 0"; fi
  for consoles in $order; do
    f="$LT_WORK/k6-$round-$consoles.json"
    pollers=""
    if [ "$consoles" -gt 0 ]; then
      python3 "$POLL" --url "$STATE_URL" --consoles "$consoles" --seconds "$SECS" >"$LT_WORK/poll.out" &
      pollers=$!
    fi
    t0=$(cpu_ticks "$PAYROUTE_PID")
    k6 run -q --no-usage-report -e URL="http://127.0.0.1:$PORT_PAYROUTE/v1/payments" -e RATE="$RATE" \
      -e DURATION="${SECS}s" -e MERCHANTS=1000 -e OUT="$f" "$K6_FIXED" >>"$LT_WORK/k6.log" 2>&1 \
      || { tail -20 "$LT_WORK/k6.log" >&2; die "k6 failed"; }
    t1=$(cpu_ticks "$PAYROUTE_PID")
    polls=0
    if [ -n "$pollers" ]; then
      wait "$pollers" || die "a console poller failed"
      polls=$(sed -n 's/polls=//p' "$LT_WORK/poll.out")
    fi
    line=$(python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
ticks, tick, secs = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
print(json.dumps({"section": "fixed_rate", "round": int(sys.argv[5]), "consoles": int(sys.argv[6]), "polls": int(sys.argv[7]),
                  "rate": int(sys.argv[8]), "requests": r["requests"], "failed_rate": r["failed_rate"],
                  "dropped": r["dropped_iterations"], "cpu_s": ticks / tick, "cpu_percent": round(100 * ticks / tick / secs, 2)}))' \
      "$f" "$((t1 - t0))" "$TICK" "$SECS" "$round" "$consoles" "$polls" "$RATE")
    record "$line"; log "round $round, $consoles consoles: $line"
  done
done

python3 - "$RESULTS" "$RATE" "$CONSOLES" <<'PY' | tee "$OUT/summary.txt"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rate, consoles = int(sys.argv[2]), int(sys.argv[3])
for r in (r for r in rows if r["section"] == "per_poll"):
    print(f"per poll, {r['channels']:>2} channels: {r['cpu_us_per_poll']:.0f} µs of payroute CPU "
          f"({r['polls']} polls, {r['bytes']} bytes each); {consoles} consoles at 1 poll/s: "
          f"{consoles * r['cpu_us_per_poll'] / 1e4:.3f} % of one core")
fixed = [r for r in rows if r["section"] == "fixed_rate"]
off = [r["cpu_percent"] for r in fixed if r["consoles"] == 0]
on = [r["cpu_percent"] for r in fixed if r["consoles"] > 0]
if off and on:
    m0, m1 = statistics.median(off), statistics.median(on)
    print(f"at {rate} payments/s: payroute {m0:.1f} % CPU without consoles, {m1:.1f} % with {consoles} "
          f"(medians of {len(off)} and {len(on)} rounds; difference {m1 - m0:+.2f} points, {100 * (m1 - m0) / m0:+.1f} %)")
    print(f"  without: {off}")
    print(f"  with:    {on}")
    worst = max(r["dropped"] / (r["requests"] + r["dropped"]) for r in fixed)
    print(f"  k6 kept the rate within {100 * worst:.2f} % in every round (dropped iterations)")
    if worst > 0.01 or any(r["failed_rate"] > 0 for r in fixed):
        print("  WARNING: payments failed or over 1 % of a round's were dropped: the rate was not held")
PY
