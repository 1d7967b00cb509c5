#!/usr/bin/env bash
# crash.sh: kill -9 in the middle of N notifications in and out (issue 13),
# then restart on the same directory and check what the contract promises.
#
#   loadtest/crash.sh              # N=10000
#   N=300 loadtest/crash.sh        # tests/it/lifecycle_crash.rs runs this size in CI
#
# Processes, all real, on loopback: payroute (release build, SQLite journal
# beside its config); a fake acquirer (mock-acquirer) that answers every
# payment "processing", decides it DELAY_MS later (70 % paid) and notifies
# payroute, signed, retrying until it gets a 2xx; payroute-rig as the tap
# between the two (it records which notifications payroute acknowledged)
# and as MERCHANTS JSON merchants' notify_url (checks each signature,
# counts each event_id), and as the payment driver (N payments, CONC at a
# time, nothing retried).
#
# payroute is killed with SIGKILL once half of the notifications in were
# acknowledged (deliveries out are under way by then), restarted on the
# same directory after RESTART_AFTER_S, and the run waits until it is quiet
# (every payment settled, no merchant event pending). Then, from the tap's
# log, `payroute journal export` and the journal's outbox:
#   - every notification payroute acknowledged is in the journal: its
#     payment is in the state the notification stated;
#   - every merchant event in the journal was delivered, and the merchant
#     got exactly those; repeats are counted (allowed: at most one per
#     event, from a crash between a delivery and its record);
#   - payments whose answer the kill cut off: what the journal says of them.
# Exits 1 if a promise is broken.
# Environment: N (10000), CONC (32), MERCHANTS (10), DELAY_MS (1000),
# RESTART_AFTER_S (1), LT_PORT_BASE (18000), LT_KEEP=1 keeps the work dir.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

N=${N:-10000}; CONC=${CONC:-32}; MERCHANTS=${MERCHANTS:-10}; DELAY_MS=${DELAY_MS:-1000}
RESTART_AFTER_S=${RESTART_AFTER_S:-1}

lt_init crash
need_python; need_curl
command -v sqlite3 >/dev/null 2>&1 || apt_install sqlite3
build_release
build_rig
port_free_or_die "$PORT_PAYROUTE" "$PORT_ADMIN" "$PORT_MOCK1" "$PORT_RIG" "$PORT_SINK" "$PORT_TAP"

echo "== machine: $(cpu_model), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== payroute $(payroute_rev); N=$N, $CONC payments at a time, $MERCHANTS merchants, notifications ${DELAY_MS} ms after the answer"

spawn rig "$RIG" serve --control "127.0.0.1:$PORT_RIG" --sink "127.0.0.1:$PORT_SINK" --secret "$LT_MERCHANT_SECRET" \
  --tap "127.0.0.1:$PORT_TAP" --to "http://127.0.0.1:$PORT_PAYROUTE"
RIG_PID=$SPAWNED
wait_port "$PORT_RIG" "$RIG_PID" 10 || die "payroute-rig did not start"
# info: the mock logs its counters when it stops.
RUST_LOG=info start_mock "$PORT_MOCK1" --outcome-in-body --pending-rate 1 --success-rate 0.7 --notify-delay-ms "$DELAY_MS" \
  --notify-url "http://127.0.0.1:$PORT_TAP/notify/acq" --notify-secret "$LT_CHANNEL_SECRET" \
  --notify-attempts 60 --notify-backoff-ms 100
MOCK_PID=$SPAWNED
mkdir -p "$LT_WORK/crash"
CFG="$LT_WORK/crash/routes.toml"
lifecycle_config "$CFG" "$PORT_PAYROUTE" "$PORT_ADMIN" "http://127.0.0.1:$PORT_MOCK1" "$MERCHANTS" \
  "http://127.0.0.1:$PORT_SINK/payroute/notify" \
  'retry_ms = [0, 500, 1000, 2000, 5000, 10000, 30000]
timeout_ms = 2000'
DB="$LT_WORK/crash/payroute.db"
start_payroute "$CFG" 60
P=$PAYROUTE_PID

"$RIG" pay --url "http://127.0.0.1:$PORT_PAYROUTE/v1/payments" --n "$N" --concurrency "$CONC" \
  --merchants "$MERCHANTS" >"$LT_WORK/payments.jsonl" 2>"$LT_WORK/payments.summary" &
PAYER=$!; LT_PIDS+=("$PAYER")

# kill -9 at half of the notifications in.
end=$((SECONDS + 600))
acked() { curl -s "http://127.0.0.1:$PORT_RIG/stats" | grep -o '"acknowledged":[0-9]*' | cut -d: -f2; }
until [ "$(acked)" -ge $((N / 2)) ]; do
  [ $SECONDS -lt $end ] || die "half of the notifications were not acknowledged within 600 s"
done
kill -KILL "$P"
wait "$P" 2>/dev/null || true
KILLED_AT=$(curl -s "http://127.0.0.1:$PORT_RIG/stats")
PAID_AT_KILL=$(grep -c '"code":200' "$LT_WORK/payments.jsonl" || true)
log "kill -9 payroute: $KILLED_AT; payments answered so far: $PAID_AT_KILL"
sleep "$RESTART_AFTER_S"
spawn payroute-restarted "$PAYROUTE" serve --config "$CFG"
P=$SPAWNED
wait_port "$PORT_PAYROUTE" "$P" 60 || { tail -20 "$LT_WORK/payroute-restarted.log" >&2; die "payroute did not restart"; }
log "payroute restarted on the same directory"
wait "$PAYER" || die "the payment driver failed"
log "payments: $(cat "$LT_WORK/payments.summary")"

# Quiet: every answered payment's notification acknowledged, no
# notification for 3 s (the acquirer has nothing left to retry), and no
# merchant event left undelivered.
ANSWERED=$(grep -c '"code":200' "$LT_WORK/payments.jsonl" || true)
LAST_FORWARDED=-1
quiet() {
  local settled forwarded undelivered
  settled=$(curl -s "http://127.0.0.1:$PORT_RIG/tap/log" | python3 -c 'import json, sys
print(len({r["trade_no"] for r in map(json.loads, sys.stdin) if 200 <= r["answer"] < 300}))')
  forwarded=$(rig_stats tap forwarded)
  undelivered=$(sqlite3 -cmd '.timeout 10000' "$DB" "SELECT count(*) FROM events WHERE state <> 'delivered'")
  local still=$(( forwarded == LAST_FORWARDED ))
  LAST_FORWARDED=$forwarded
  [ "$settled" -ge "$ANSWERED" ] && [ "$still" = 1 ] && [ "$undelivered" = 0 ]
}
end=$((SECONDS + 600))
until quiet; do
  [ $SECONDS -lt $end ] || { log "not quiet after 600 s"; break; }
  sleep 3
done
log "quiet"

curl -s "http://127.0.0.1:$PORT_RIG/tap/log" >"$LT_WORK/tap.jsonl"
curl -s "http://127.0.0.1:$PORT_RIG/sink/events" >"$LT_WORK/sink.jsonl"
"$PAYROUTE" journal export --config "$CFG" --format jsonl >"$LT_WORK/journal.jsonl"
sqlite3 -cmd '.timeout 10000' -json "$DB" "SELECT event_id, trade_no, state, attempts FROM events" >"$LT_WORK/events.json"
sqlite3 -cmd '.timeout 10000' -json "$DB" "SELECT result, count(*) AS n FROM notifications_in GROUP BY result" >"$LT_WORK/in.json"
stop_pid "$MOCK_PID"   # logs its counters on the way out
MOCK_LINE=$(grep 'mock-acquirer stopped' "$LT_WORK/mock-$PORT_MOCK1.log" | tail -1 || true)

python3 - "$LT_WORK" "$N" "$KILLED_AT" "$MOCK_LINE" <<'PY'
import json, re, sys
from collections import Counter
work, n, killed_at, mock_line = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
rows = lambda f: [json.loads(l) for l in open(f"{work}/{f}") if l.strip()]
payments, tap, sink, journal = rows("payments.jsonl"), rows("tap.jsonl"), rows("sink.jsonl"), rows("journal.jsonl")
events = json.loads(open(f"{work}/events.json").read() or "[]")
notif_in = json.loads(open(f"{work}/in.json").read() or "[]")
by_trade = {r["trade_no"]: r for r in journal}
broken = []

answered = [p for p in payments if p["code"] == 200]
cut_off = [p for p in payments if p["code"] == 0]
other = Counter(p["code"] for p in payments if p["code"] not in (0, 200))
acked = [t for t in tap if 200 <= t["answer"] < 300]
acked_by_trade = {}
for t in acked:
    acked_by_trade.setdefault(t["trade_no"], set()).add(t["status"])
want = lambda s: "paid" if s == "paid" else "declined"
for trade, stated in acked_by_trade.items():
    row = by_trade.get(trade)
    if row is None:
        broken.append(f"{trade}: notification acknowledged, payment not in the journal")
    elif len(stated) != 1 or row["state"] != want(next(iter(stated))):
        broken.append(f"{trade}: acknowledged {sorted(stated)}, journal says {row['state']}")
never_acked = [p["trade_no"] for p in answered if p["trade_no"] not in acked_by_trade]
for t in never_acked:
    broken.append(f"{t}: answered processing, its notification never acknowledged")
still_pending = [r["trade_no"] for r in journal if r["state"] == "pending"]

ev = {e["event_id"]: e for e in events}
seen = {s["event_id"]: s for s in sink}
for eid, e in ev.items():
    if e["state"] != "delivered":
        broken.append(f"event {eid}: {e['state']}")
    elif eid not in seen:
        broken.append(f"event {eid}: delivered per the journal, never received")
for eid, s in seen.items():
    if eid not in ev:
        broken.append(f"event {eid}: received, not in the journal")
    if s["deliveries"] > 2:
        broken.append(f"event {eid}: delivered {s['deliveries']} times")
repeats = sum(s["deliveries"] - 1 for s in seen.values())
settled_in_journal = sum(1 for r in journal if r["state"] in ("paid", "declined"))
events_per_payment = Counter(e["trade_no"] for e in events)
if any(c != 1 for c in events_per_payment.values()):
    broken.append(f"payments with more than one event: {sum(1 for c in events_per_payment.values() if c != 1)}")

print("== kill -9 amid notifications in and out")
print(f"payments: {len(payments)} sent, {len(answered)} answered processing, {len(cut_off)} cut off by the kill"
      + (f", other answers {dict(other)}" if other else ""))
print(f"at the kill: {killed_at['tap']['acknowledged']} notifications acknowledged, {killed_at['sink']['events']} merchant events delivered")
print(f"notifications in: {len(tap)} forwarded, {len(acked)} acknowledged for {len(acked_by_trade)} payments "
      f"({len(acked) - len(acked_by_trade)} acknowledged twice: a repeat of one payroute had already taken, "
      f"answered as a duplicate), {sum(1 for t in tap if t['answer'] == 0)} unanswered (payroute down); journal: "
      + ", ".join(f"{r['result']} {r['n']}" for r in notif_in))
print(f"journal: {len(journal)} payments, {settled_in_journal} settled, {len(still_pending)} pending"
      + (" (recorded, then cut off by the kill before the acquirer had them: the sweeper asks about them after query_after_ms)" if still_pending else ""))
print(f"merchant events: {len(ev)} in the journal, {len(seen)} received, {repeats} repeats "
      f"({sum(1 for s in seen.values() if s['deliveries'] == 2)} events twice, none more)")
if cut_off:
    known = {p["trade_no"] for p in answered}
    unanswered_rows = Counter(r["state"] for r in journal if r["trade_no"] not in known)
    print(f"payments cut off by the kill: {len(cut_off)}; the journal holds {sum(unanswered_rows.values())} payments "
          f"whose answer no merchant got, now {dict(unanswered_rows)} (recorded before their attempt left, settled like the rest)")
print(f"mock: {re.sub(r'.*mock-acquirer stopped', '', mock_line).strip() or '(no counters line)'}")
if broken:
    print(f"BROKEN: {len(broken)} promise(s):")
    for b in broken[:30]:
        print("  " + b)
    sys.exit(1)
print("every acknowledged notification is in the journal; every merchant event was delivered; repeats within the contract")
PY
