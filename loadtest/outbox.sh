#!/usr/bin/env bash
# outbox.sh: notifications out, end to end (issue 13): how many merchant
# deliveries a second payroute sustains, and a backlog drained after a
# merchant outage, with payroute's RSS.
#
#   loadtest/outbox.sh                      # LIVE_N=60000, BACKLOG_N=100000 (a few minutes)
#   LIVE_N=2000 BACKLOG_N=5000 loadtest/outbox.sh    # quick
#
# Processes, all real, on loopback: payroute (release build, SQLite journal
# beside its config), a fake acquirer (mock-acquirer) that answers every
# payment "processing" and notifies payroute 200 ms later (signed), and
# payroute-rig as MERCHANTS JSON merchants' notify_url (checks each
# signature, counts each event_id) and as the payment driver.
#
# 1. live: LIVE_N payments (CONC at a time). Each becomes pending, is
#    settled by the acquirer's notification, and makes one merchant event:
#    deliveries per second at the merchant while payments flow.
# 2. backlog: the merchant goes down (its port refuses connections);
#    BACKLOG_N more payments, each settled by its notification; their
#    events' first try fails. The backlog is then made due at once (one
#    UPDATE of next_at_ms in the journal: the state of things when a long
#    outage ends, without waiting out [notify] retry_ms), the merchant comes
#    back, and payroute drains it: time, deliveries per second, payroute's
#    RSS sampled every 200 ms while draining, and its peak (VmHWM) over the
#    whole run.
#    RESTART=1: payroute is restarted (SIGTERM, then started on the same
#    directory) just before the drain, so the RSS is the outbox's with a
#    backlog and nothing else (no payments' idempotency records in memory).
# Environment: LIVE_N (60000; 0 skips the live part), BACKLOG_N (100000),
# CONC (64), MERCHANTS (100), RESTART (0), LT_PORT_BASE (18000), LT_KEEP=1
# keeps the work dir.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

LIVE_N=${LIVE_N:-60000}; BACKLOG_N=${BACKLOG_N:-100000}; CONC=${CONC:-64}; MERCHANTS=${MERCHANTS:-100}
RESTART=${RESTART:-0}

lt_init outbox
need_python; need_curl; need_procps
command -v sqlite3 >/dev/null 2>&1 || apt_install sqlite3
build_release
build_rig
port_free_or_die "$PORT_PAYROUTE" "$PORT_ADMIN" "$PORT_MOCK1" "$PORT_RIG" "$PORT_SINK"

echo "== machine: $(cpu_model), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== payroute $(payroute_rev); live $LIVE_N, backlog $BACKLOG_N, $MERCHANTS merchants, $CONC payments at a time"

spawn rig "$RIG" serve --control "127.0.0.1:$PORT_RIG" --sink "127.0.0.1:$PORT_SINK" --secret "$LT_MERCHANT_SECRET"
RIG_PID=$SPAWNED
wait_port "$PORT_RIG" "$RIG_PID" 10 || die "payroute-rig did not start"
start_mock "$PORT_MOCK1" --outcome-in-body --pending-rate 1 --notify-delay-ms 200 \
  --notify-url "http://127.0.0.1:$PORT_PAYROUTE/notify/acq" --notify-secret "$LT_CHANNEL_SECRET" \
  --notify-attempts 30 --notify-backoff-ms 200
MOCK_PID=$SPAWNED
mkdir -p "$LT_WORK/outbox"
CFG="$LT_WORK/outbox/routes.toml"
lifecycle_config "$CFG" "$PORT_PAYROUTE" "$PORT_ADMIN" "http://127.0.0.1:$PORT_MOCK1" "$MERCHANTS" \
  "http://127.0.0.1:$PORT_SINK/payroute/notify"
start_payroute "$CFG" 60
P=$PAYROUTE_PID
DB="$LT_WORK/outbox/payroute.db"
RSS_START=$(rss_kb "$P")
sql() { sqlite3 -cmd '.timeout 10000' "$DB" "$@"; }

# wait_for WHAT SECONDS CMD...: until CMD succeeds.
wait_for() {
  local what="$1" secs="$2"; shift 2
  local end=$((SECONDS + secs))
  until "$@"; do
    [ $SECONDS -lt $end ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}
delivered_at_least() { [ "$(rig_stats sink events)" -ge "$1" ]; }
events_at_least() { [ "$(sql "SELECT count(*) FROM events")" -ge "$1" ]; }

# --- 1. live -----------------------------------------------------------------
if [ "$LIVE_N" -gt 0 ]; then
log "== live: $LIVE_N payments, each settled by a notification, each one merchant event"
"$RIG" pay --url "http://127.0.0.1:$PORT_PAYROUTE/v1/payments" --n "$LIVE_N" --concurrency "$CONC" \
  --merchants "$MERCHANTS" >"$LT_WORK/live.jsonl" 2>"$LT_WORK/live.summary"
log "payments: $(cat "$LT_WORK/live.summary")"
wait_for "every live event delivered" 300 delivered_at_least "$LIVE_N"
curl -s "http://127.0.0.1:$PORT_RIG/sink/timeline" >"$LT_WORK/live-timeline.json"
LIVE_STATS=$(curl -s "http://127.0.0.1:$PORT_RIG/stats")
log "merchant side after live: $LIVE_STATS"
else
  echo '[]' >"$LT_WORK/live-timeline.json"
  LIVE_STATS='{"sink": {"events": 0, "repeats": 0}}'
fi

# --- 2. backlog ----------------------------------------------------------------
log "== backlog: the merchant goes down; $BACKLOG_N payments"
curl -s -X POST "http://127.0.0.1:$PORT_RIG/sink/down" >/dev/null
"$RIG" pay --url "http://127.0.0.1:$PORT_PAYROUTE/v1/payments" --n "$BACKLOG_N" --concurrency "$CONC" \
  --merchants "$MERCHANTS" >"$LT_WORK/backlog.jsonl" 2>"$LT_WORK/backlog.summary"
log "payments: $(cat "$LT_WORK/backlog.summary")"
TOTAL=$((LIVE_N + BACKLOG_N))
wait_for "an event for every payment" 600 events_at_least "$TOTAL"
wait_for "every first try made" 300 sh -c "[ \"\$(sqlite3 -cmd '.timeout 10000' '$DB' \"SELECT count(*) FROM events WHERE state = 'pending' AND attempts = 0\")\" = 0 ]"
BACKLOG=$(sql "SELECT count(*) FROM events WHERE state = 'pending'")
if [ "$RESTART" = 1 ]; then
  log "restarting payroute on the same directory before the drain"
  stop_pid "$P"
  spawn payroute-restarted "$PAYROUTE" serve --config "$CFG"
  P=$SPAWNED
  wait_port "$PORT_PAYROUTE" "$P" 60 || die "payroute did not restart"
  sleep 1
fi
RSS_BEFORE=$(rss_kb "$P")
log "backlog: $BACKLOG events pending (first try refused), payroute RSS $((RSS_BEFORE / 1024)) MiB"

# The outage ends: the backlog is due now, and the merchant is back.
: >"$LT_WORK/rss.txt"
( while kill -0 "$P" 2>/dev/null; do rss_kb "$P" >>"$LT_WORK/rss.txt"; sleep 0.2; done ) &
SAMPLER=$!; LT_PIDS+=("$SAMPLER")
curl -s -X POST "http://127.0.0.1:$PORT_RIG/sink/up" >/dev/null
T0=$(date +%s.%N)
sql "UPDATE events SET next_at_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000 WHERE state = 'pending'"
wait_for "the backlog drained" 900 delivered_at_least "$TOTAL"
T1=$(date +%s.%N)
stop_pid "$SAMPLER"
curl -s "http://127.0.0.1:$PORT_RIG/sink/timeline" >"$LT_WORK/drain-timeline.json"
DRAIN_STATS=$(curl -s "http://127.0.0.1:$PORT_RIG/stats")
HWM=$(hwm_kb "$P")
LEFT=$(sql "SELECT state, count(*) FROM events GROUP BY state" | tr '\n' ' ')

python3 - "$LT_WORK/live-timeline.json" "$LT_WORK/drain-timeline.json" "$LT_WORK/rss.txt" "$T0" "$T1" \
  "$BACKLOG" "$RSS_START" "$RSS_BEFORE" "$HWM" "$LIVE_STATS" "$DRAIN_STATS" "$LEFT" "$LT_WORK/live.summary" "$RESTART" <<'PY'
import json, sys
live, drain = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
rss = [int(l) for l in open(sys.argv[3]) if l.strip()]
t0, t1 = float(sys.argv[4]), float(sys.argv[5])
backlog, rss0, rss1, hwm = (int(x) for x in sys.argv[6:10])
live_stats, drain_stats, left = json.loads(sys.argv[10]), json.loads(sys.argv[11]), sys.argv[12]
import os
pay = json.loads(open(sys.argv[13]).read().strip().splitlines()[-1]) if os.path.exists(sys.argv[13]) else {}
restarted = sys.argv[14] == "1"

def windows(tl, lo, hi):
    """1-second windows (10 buckets of 100 ms) within buckets [lo, hi)."""
    return [sum(tl[i:i + 10]) for i in range(lo, max(lo, hi - 9), 10)]

busy = [i for i, n in enumerate(live) if n]
lw = windows(live, busy[0], busy[-1] + 1) if busy else []
# The steady part: drop the first and last second (ramp up, tail).
steady = lw[1:-1] or lw
if busy:
    print("== notifications out: live")
    print(f"payments: {pay['per_s']:.0f}/s offered ({pay['codes']}); merchant deliveries per second over "
          f"{len(lw)} s: median {sorted(steady)[len(steady) // 2] if steady else 0}, min {min(steady) if steady else 0}, "
          f"max {max(steady) if steady else 0}; all delivered: {live_stats['sink']['events']} events, "
          f"{live_stats['sink']['repeats']} repeats")
start = len(live)
dbusy = [i for i, n in enumerate(drain) if n and i >= start]
secs = t1 - t0
dw = windows(drain, dbusy[0], dbusy[-1] + 1) if dbusy else []
print("== notifications out: backlog after an outage")
print(f"{backlog} pending deliveries drained in {secs:.1f} s: {backlog / secs:.0f} deliveries/s "
      f"(1-s windows: min {min(dw) if dw else 0}, median {sorted(dw)[len(dw) // 2] if dw else 0}, max {max(dw) if dw else 0})")
print(f"payroute RSS: {rss0 / 1024:.1f} MiB at start, {rss1 / 1024:.1f} MiB with the backlog waiting"
      + (" (just restarted)" if restarted else "") + ", "
      f"max {max(rss) / 1024 if rss else 0:.1f} MiB while draining ({len(rss)} samples), peak (VmHWM) over the whole run {hwm / 1024:.1f} MiB")
print(f"merchant side: {drain_stats['sink']}; journal events by state: {left}")
live_rate = sorted(steady)[len(steady) // 2] if steady else 0
if busy:
    print(f"{'MET    ' if live_rate >= 2000 else 'NOT MET'}  >= 2,000 deliveries/s sustained (live, median 1-s window): {live_rate}")
print(f"{'MET    ' if backlog / secs >= 2000 else 'NOT MET'}  >= 2,000 deliveries/s draining the backlog: {backlog / secs:.0f}")
print(f"{'MET    ' if hwm <= 128 * 1024 else 'NOT MET'}  RSS <= 128 MiB: peak {hwm / 1024:.1f} MiB"
      + (" (since the restart before the drain)" if restarted else " (over the whole run, payments included)"))
PY
