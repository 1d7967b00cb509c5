#!/usr/bin/env bash
# soak.sh: a fault soak (issue 18, item 1). Steady JSON and epay traffic
# through two payroute instances sharing Redis and PostgreSQL while a
# schedule injects faults, then an invariant checker (soak_check.py) that
# fails on anything lost or doubled.
#
#   loadtest/soak.sh                    # DURATION=1800 (30 minutes of traffic)
#   DURATION=600 loadtest/soak.sh       # any length
#   loadtest/soak.sh --smoke            # CI: ~75 s of traffic, faults every few seconds
#
# Processes, all real, on loopback (ports at LT_PORT_BASE, default 18000):
#   - a private redis-server (AOF, fsync always: a restart loses nothing) and
#     a private PostgreSQL cluster (initdb in a temp dir; the machine's own
#     servers are never touched), both restarted by the schedule;
#   - payroute A (plain HTTP) and B (TLS, its certificate renewed every
#     CERT_S), both `[state] backend = "redis"`, `[journal] backend =
#     "postgres"`, reloaded every RELOAD_S (a fee toggled, POST /-/reload);
#   - three JSON acquirers (mock-acquirer --ledger: every charge listed at
#     GET /-/charges, reversals marked): outcomes in the body, a quarter of
#     payments "processing" then notified, 5 % of notifications lost, 10 %
#     repeated; queries and reversals by trade number; acq-2 has a daily_cap;
#   - two epay gateways (mock-acquirer --protocol epay): 80 % of buyers pay,
#     notifications lost and repeated as above;
#   - payroute-rig: the merchants' notify_url (JSON events checked by
#     signature and counted by event_id; epay shop notifications verified by
#     MD5 and counted by trade_no) and the tap every notification in passes
#     through (it records which ones payroute acknowledged);
#   - soak_traffic.py: RATE payments a second, a share of them epay, to A
#     and B in turn; a payment without an answer is sent again, same order
#     id, to the other instance.
# The schedule cycles through: an acquirer that hangs; one that answers a
# 5xx storm; one that resets connections mid-answer (after charging); one
# that answers after payroute's timeout (after charging); one whose payments
# and queries hang (ambiguity that only a reversal ends); an epay gateway
# answering late, and one storming; Redis restarted; PostgreSQL restarted;
# payroute A killed with -9 and restarted. Each fault lasts FAULT_S, GAP_S
# apart. After the traffic, faults off, the run waits until nothing is
# pending (sweeper, notifications, outbox) and runs the checker.
#
# Environment: DURATION (1800 s of traffic), RATE (30/s), EPAY_SHARE (0.3),
# FAULT_S (20), GAP_S (10), RELOAD_S (5), CERT_S (60), DRAIN_S (180: the
# longest wait for quiet), LT_PORT_BASE, LT_KEEP=1 keeps the work dir.
# Exit 1 on any violation.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
if [ "$SMOKE" = 1 ]; then
  DURATION=${DURATION:-75}; FAULT_S=${FAULT_S:-4}; GAP_S=${GAP_S:-3}; CERT_S=${CERT_S:-20}; DRAIN_S=${DRAIN_S:-60}
else
  DURATION=${DURATION:-1800}; FAULT_S=${FAULT_S:-20}; GAP_S=${GAP_S:-10}; CERT_S=${CERT_S:-60}; DRAIN_S=${DRAIN_S:-180}
fi
RATE=${RATE:-30}; EPAY_SHARE=${EPAY_SHARE:-0.3}; RELOAD_S=${RELOAD_S:-5}; MERCHANTS=8

lt_init soak
need_python; need_curl; need_procps
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  apt_install postgresql
  PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi
command -v psql >/dev/null 2>&1 || apt_install postgresql-client
command -v openssl >/dev/null 2>&1 || apt_install openssl
build_release
build_rig
# Copies: a build during a long soak must not change what a restart runs.
mkdir -p "$LT_WORK/bin"
cp "$PAYROUTE" "$MOCK" "$RIG" "$LT_WORK/bin/"
PAYROUTE="$LT_WORK/bin/payroute"; MOCK="$LT_WORK/bin/mock-acquirer"; RIG="$LT_WORK/bin/payroute-rig"

PORT_A=$PORT_PAYROUTE; PORT_ADMIN_A=$PORT_ADMIN
PORT_B=$((${LT_PORT_BASE:-18000} + 180)); PORT_ADMIN_B=$((${LT_PORT_BASE:-18000} + 190))
PORT_REDIS=$((${LT_PORT_BASE:-18000} + 120)); PORT_PG=$((${LT_PORT_BASE:-18000} + 121))
port_free_or_die "$PORT_A" "$PORT_ADMIN_A" "$PORT_B" "$PORT_ADMIN_B" "$PORT_MOCK1" "$PORT_MOCK2" "$PORT_MOCK3" \
  "$PORT_EPAY1" "$PORT_EPAY2" "$PORT_RIG" "$PORT_SINK" "$PORT_TAP" "$PORT_REDIS" "$PORT_PG"
W="$LT_WORK"
mkdir -p "$W/a" "$W/b" "$W/certs" "$W/redis"
CHANNEL_SECRET="whsec-soak"; MERCHANT_SECRET="msec-soak"; SHOP_KEY="soak-shop-key"

echo "== machine: $(cpu_model), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== payroute $(payroute_rev); DURATION=${DURATION}s RATE=$RATE/s EPAY_SHARE=$EPAY_SHARE FAULT_S=$FAULT_S GAP_S=$GAP_S RELOAD_S=$RELOAD_S CERT_S=$CERT_S"

# --- Redis: private, AOF with fsync always (a restart keeps every key).
start_redis() {
  spawn redis "$(command -v redis-server)" --port "$PORT_REDIS" --bind 127.0.0.1 --dir "$W/redis" \
    --save "" --appendonly yes --appendfsync always --daemonize no
  REDIS_PID=$SPAWNED
  wait_port "$PORT_REDIS" "$REDIS_PID" 20 || { cat "$W/redis.log" >&2; die "redis-server did not start"; }
}
start_redis

# --- PostgreSQL: a private cluster. initdb refuses root, so as root the
# cluster belongs to the postgres user (setpriv execs, so the pid we keep is
# the postmaster's own and SIGINT is its fast shutdown).
PGDATA_DIR="$W/pg"
mkdir -p "$PGDATA_DIR"
AS_PG=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chmod 711 "$W"   # the postgres user may pass through to its own directory
  chown postgres "$PGDATA_DIR"
  AS_PG=(setpriv --reuid=postgres --regid="$(id -g postgres)" --clear-groups)
fi
"${AS_PG[@]}" "$PGBIN/initdb" -D "$PGDATA_DIR/data" -U postgres --auth=trust -E UTF8 >"$W/initdb.log" 2>&1 \
  || { cat "$W/initdb.log" >&2; die "initdb failed"; }
start_pg() {
  spawn pg "${AS_PG[@]}" "$PGBIN/postgres" -D "$PGDATA_DIR/data" -p "$PORT_PG" -k "$PGDATA_DIR" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c shared_buffers=64MB
  PG_PID=$SPAWNED
  wait_port "$PORT_PG" "$PG_PID" 30 || { cat "$W/pg.log" >&2; die "postgres did not start"; }
}
start_pg
PSQL=(psql -h 127.0.0.1 -p "$PORT_PG" -U postgres -v ON_ERROR_STOP=1 -qAt)
for _ in $(seq 1 50); do "${PSQL[@]}" -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
"${PSQL[@]}" -d postgres -c 'CREATE DATABASE soak' >/dev/null
JOURNAL_URL="postgres://postgres@127.0.0.1:$PORT_PG/soak"
stop_pg() {
  # SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for payroute's
  # pooled connections to leave).
  kill -INT "$PG_PID" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$PG_PID"
}

# --- TLS for B: a CA and a leaf for localhost; renewal reissues the leaf
# (same key) and renames it over the served file.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/certs/ca.key" -out "$W/certs/ca.pem" -days 2 \
  -subj "/CN=soak test CA" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -keyout "$W/certs/server.key" -out "$W/certs/server.csr" -subj "/CN=localhost" >/dev/null 2>&1
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$W/certs/san.ext"
issue_leaf() {
  # issue_leaf OUT: a leaf for B's key, serial and validity new each time.
  openssl x509 -req -in "$W/certs/server.csr" -CA "$W/certs/ca.pem" -CAkey "$W/certs/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
    -days 2 -extfile "$W/certs/san.ext" -out "$1" >/dev/null 2>&1
}
issue_leaf "$W/certs/server.pem"
fingerprint() { openssl x509 -noout -fingerprint -sha256 -in "$1" | cut -d= -f2; }

# --- the config, for A and B: FEE toggles on every reload.
LIMIT=$(python3 -c "print(int($RATE * $DURATION * 1841 / $MERCHANTS * 0.3))")
CAP=$(python3 -c "print(int($RATE * $DURATION * (1 - $EPAY_SHARE) / 3 * 1841 * 0.3))")
soak_config() {
  # soak_config OUT LISTEN ADMIN TLS(0|1) FEE
  local out="$1" listen="$2" admin="$3" tls="$4" fee="$5" i m
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\ndeadline_ms = 8000\n' "$listen" "$admin"
    printf 'public_url = "http://127.0.0.1:%s"\n\n' "$PORT_TAP"
    [ "$tls" = 1 ] && printf '[server.tls]\ncert = "%s/certs/server.pem"\nkey = "%s/certs/server.key"\n\n' "$W" "$W"
    printf '[routing]\nmax_attempts = 3\nfailover_on = ["connect", "timeout", "5xx"]\nexplore_share = 0.05\n'
    printf 'eject_consecutive_failures = 5\neject_base_ms = 2000\neject_max_ms = 10000\n\n'
    printf '[state]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:%s/0"\nkey_prefix = "soak:"\non_unavailable = "fail_closed"\n\n' "$PORT_REDIS"
    printf '[journal]\nbackend = "postgres"\nurl = "%s"\n\n' "$JOURNAL_URL"
    printf '[notify]\nretry_ms = [0, 1000, 2000, 5000, 10000, 20000, 30000, 60000]\ntimeout_ms = 2000\n\n'
    # The sweeper asks at most 20 queries a second per channel (a constant):
    # epay orders whose buyer never pays stay pending and are asked about
    # every 12 s until closed, so they are closed after 2 minutes — with an
    # hour, 3,000 of them by the end of a 30-minute run outgrow that rate
    # and a lost notification's order waits minutes in the queue. (The
    # mock's buyers pay within 1.5 s or never.)
    printf '[sweeper]\nquery_after_ms = [3000, 6000, 12000]\nclose_after_ms = 120000\n\n'
    for i in 1 2 3; do
      printf '[[channel]]\nid = "acq-%s"\nurl = "http://127.0.0.1:%s"\n' "$i" "$((PORT_MOCK1 + i - 1))"
      printf 'fee_percent = %s\ntimeout_ms = 1500\nconnect_timeout_ms = 300\ncurrencies = ["CNY"]\n' "$( [ "$i" = 1 ] && echo "$fee" || echo 0.4)"
      [ "$i" = 2 ] && printf 'daily_cap = %s\n' "$CAP"
      printf 'query = { method = "GET", path = "/v1/payments/{trade_no}" }\n'
      printf 'reversal = { method = "POST", path = "/v1/payments/{trade_no}/reverse" }\n'
      printf 'outcome = { pointer = "/status", paid = ["paid"], pending = ["processing"], declined = ["declined", "failed"], trade_no_pointer = "/id" }\n'
      printf 'notify = { signature_header = "x-signature", secret = "%s", amount_pointer = "/amount" }\n\n' "$CHANNEL_SECRET"
    done
    for i in 1 2; do
      printf '[[channel]]\nid = "ep-%s"\nprotocol = "epay"\nurl = "http://127.0.0.1:%s/"\npid = "300%s"\nkey = "soak-gw-key-%s"\n' \
        "$i" "$((PORT_EPAY1 + i - 1))" "$i" "$i"
      printf 'fee_percent = 0.6\ntimeout_ms = 1500\nconnect_timeout_ms = 300\n\n'
    done
    for m in $(seq 0 $((MERCHANTS - 1))); do
      printf '[[merchant]]\nid = "m-%02d"\nrate_per_sec = 100000\nburst = 100000\n' "$m"
      printf 'notify_url = "http://127.0.0.1:%s/payroute/notify"\nnotify_secret = "%s"\nepay_key = "%s"\n' "$PORT_SINK" "$MERCHANT_SECRET" "$SHOP_KEY"
      [ "$m" = 0 ] && printf 'daily_limit = %s\n' "$LIMIT"
      printf '\n'
    done
  } >"$out.tmp"
  mv "$out.tmp" "$out"
}
soak_config "$W/a/routes.toml" "$PORT_A" "$PORT_ADMIN_A" 0 0.3
soak_config "$W/b/routes.toml" "$PORT_B" "$PORT_ADMIN_B" 1 0.3
"$PAYROUTE" check "$W/a/routes.toml" >/dev/null || die "config A does not check"
"$PAYROUTE" check "$W/b/routes.toml" >/dev/null || die "config B does not check"

# --- the parties.
spawn rig "$RIG" serve --control "127.0.0.1:$PORT_RIG" --sink "127.0.0.1:$PORT_SINK" --secret "$MERCHANT_SECRET" \
  --epay-key "$SHOP_KEY" --tap "127.0.0.1:$PORT_TAP" --to "http://127.0.0.1:$PORT_A"
wait_port "$PORT_RIG" "$SPAWNED" 10 || die "payroute-rig did not start"
NOTIFY_FAULTS=(--notify-loss 0.05 --notify-repeat 0.1 --notify-attempts 100 --notify-backoff-ms 200)
for i in 1 2 3; do
  RUST_LOG=info start_mock "$((PORT_MOCK1 + i - 1))" --ledger --seed "$i" --outcome-in-body --success-rate 0.85 \
    --latency-ms 5 --jitter-ms 20 --pending-rate 0.25 --notify-delay-ms 1000 \
    --notify-url "http://127.0.0.1:$PORT_TAP/notify/acq-$i" --notify-secret "$CHANNEL_SECRET" "${NOTIFY_FAULTS[@]}"
done
for i in 1 2; do
  RUST_LOG=info start_mock "$((PORT_EPAY1 + i - 1))" --protocol epay --pid "300$i" --key "soak-gw-key-$i" --seed "$((10 + i))" \
    --success-rate 0.8 --latency-ms 5 --jitter-ms 20 --notify-delay-ms 1500 "${NOTIFY_FAULTS[@]}"
done
MOCKS=("acq-1 $PORT_MOCK1" "acq-2 $PORT_MOCK2" "acq-3 $PORT_MOCK3" "ep-1 $PORT_EPAY1" "ep-2 $PORT_EPAY2")

start_a() {
  spawn "payroute-a-$1" "$PAYROUTE" serve --config "$W/a/routes.toml"
  A_PID=$SPAWNED; echo "$A_PID" >"$W/pid.a"
  wait_port "$PORT_A" "$A_PID" 60 || { tail -20 "$W/payroute-a-$1.log" >&2; die "payroute A did not start"; }
}
spawn payroute-b "$PAYROUTE" serve --config "$W/b/routes.toml"
B_PID=$SPAWNED; echo "$B_PID" >"$W/pid.b"
wait_port "$PORT_B" "$B_PID" 60 || { tail -20 "$W/payroute-b.log" >&2; die "payroute B did not start"; }
start_a 0
log "payroute A (pid $A_PID, http :$PORT_A) and B (pid $B_PID, https :$PORT_B) on redis :$PORT_REDIS and postgres :$PORT_PG"

# --- background loops: RSS samples, reloads, certificate renewals. Each
# writes its own log; each is stopped by cleanup.
(
  while :; do
    a=$(cat "$W/pid.a"); b=$(cat "$W/pid.b")
    echo "$(date +%s) $a $(rss_kb "$a") $b $(rss_kb "$b")" >>"$W/rss.txt"
    sleep 5
  done
) &
LT_PIDS+=($!)
(
  n=0
  while :; do
    sleep "$RELOAD_S"
    n=$((n + 1))
    fee=$( [ $((n % 2)) = 0 ] && echo 0.3 || echo 0.35 )
    soak_config "$W/a/routes.toml" "$PORT_A" "$PORT_ADMIN_A" 0 "$fee"
    soak_config "$W/b/routes.toml" "$PORT_B" "$PORT_ADMIN_B" 1 "$fee"
    for p in "$PORT_ADMIN_A" "$PORT_ADMIN_B"; do
      code=$(curl -s -o /dev/null -w '%{http_code}' -m 10 -X POST "http://127.0.0.1:$p/-/reload" || true)
      echo "$(date +%s) $p $code" >>"$W/reloads.txt"
    done
  done
) &
LT_PIDS+=($!)
(
  while :; do
    sleep "$CERT_S"
    issue_leaf "$W/certs/server.pem.new" && mv "$W/certs/server.pem.new" "$W/certs/server.pem"
    want=$(fingerprint "$W/certs/server.pem")
    got=""
    for _ in $(seq 1 50); do
      got=$(openssl s_client -connect "127.0.0.1:$PORT_B" -servername localhost </dev/null 2>/dev/null |
        openssl x509 -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2 || true)
      [ "$got" = "$want" ] && break
      sleep 0.2
    done
    echo "$(date +%s) $([ "$got" = "$want" ] && echo served || echo stale)" >>"$W/certs.txt"
  done
) &
LT_PIDS+=($!)

# --- traffic.
python3 "$LT_ROOT/loadtest/soak_traffic.py" --a "http://127.0.0.1:$PORT_A" --b "https://localhost:$PORT_B" \
  --ca "$W/certs/ca.pem" --rate "$RATE" --seconds "$DURATION" --merchants "$MERCHANTS" --epay-share "$EPAY_SHARE" \
  --epay-key "$SHOP_KEY" --shop-notify "http://127.0.0.1:$PORT_SINK/epay/notify" --out "$W/answers.jsonl" \
  --stop-file "$W/stop" 2>"$W/traffic.summary" &
TRAFFIC=$!; LT_PIDS+=("$TRAFFIC")

# --- the fault schedule.
fault() {
  # fault PORT JSON: switches a mock's fault.
  curl -sf -m 5 -X POST "http://127.0.0.1:$1/-/fault" -d "$2" >/dev/null || log "fault switch on :$1 failed"
}
record() { echo "{\"t\":$(date +%s%3N),\"kind\":\"$1\",\"target\":\"$2\"}" >>"$W/faults.jsonl"; }
# A kill early in the cycle: the sweeper's claims a dead instance held run
# out 30 s later, which the drain then need not wait for.
SCHEDULE=(hang kill storm reset late blackout redis epay_late epay_storm pg)
END=$((SECONDS + DURATION))
step=0
sleep "$GAP_S"
while [ $((SECONDS + FAULT_S)) -lt $END ] && kill -0 "$TRAFFIC" 2>/dev/null; do
  kind=${SCHEDULE[$((step % ${#SCHEDULE[@]}))]}
  mock_i=$((step % 3)); mock_port=$((PORT_MOCK1 + mock_i)); mock_name="acq-$((mock_i + 1))"
  step=$((step + 1))
  case "$kind" in
    hang) record hang "$mock_name"; fault "$mock_port" '{"kind":"hang","hold_ms":20000}' ;;
    storm) record storm "$mock_name"; fault "$mock_port" '{"kind":"storm"}' ;;
    reset) record reset "$mock_name"; fault "$mock_port" '{"kind":"reset","rate":0.5}' ;;
    late) record late "$mock_name"; fault "$mock_port" '{"kind":"late","rate":0.5,"late_ms":3000}' ;;
    blackout) # every JSON acquirer: half the payments charged and answered late, queries late
              # too, so only a reversal ends the ambiguity
              record blackout acq-all
              for p in "$PORT_MOCK1" "$PORT_MOCK2" "$PORT_MOCK3"; do
                fault "$p" '{"kind":"late","rate":0.5,"late_ms":4000,"queries":true}'
              done ;;
    epay_late) mock_port=$PORT_EPAY1; record epay_late ep-1; fault "$mock_port" '{"kind":"late","rate":0.5,"late_ms":3000}' ;;
    epay_storm) mock_port=$PORT_EPAY2; record epay_storm ep-2; fault "$mock_port" '{"kind":"storm"}' ;;
    redis) record redis_restart redis; stop_pid "$REDIS_PID"; sleep 1; start_redis ;;
    pg) record pg_restart postgres; stop_pg; sleep 1; start_pg ;;
    kill) record kill9 payroute-a; kill -KILL "$A_PID"; wait "$A_PID" 2>/dev/null || true
          keep=(); for p in "${LT_PIDS[@]}"; do [ "$p" != "$A_PID" ] && keep+=("$p"); done; LT_PIDS=("${keep[@]}")
          sleep 2; start_a "$step" ;;
  esac
  sleep "$FAULT_S"
  case "$kind" in
    hang|storm|reset|late|epay_late|epay_storm) fault "$mock_port" '{"kind":"none"}' ;;
    blackout) for p in "$PORT_MOCK1" "$PORT_MOCK2" "$PORT_MOCK3"; do fault "$p" '{"kind":"none"}'; done ;;
  esac
  sleep "$GAP_S"
done
wait "$TRAFFIC" || true
log "traffic done: $(cat "$W/traffic.summary")"
for m in "${MOCKS[@]}"; do fault "${m#* }" '{"kind":"none"}'; done

# --- drain: nothing pending that can still move, every event delivered,
# no notification through the tap for 5 s.
undecided() {
  # JSON payments still pending, events not delivered, and epay orders a
  # gateway charged that the journal still has pending.
  local n charged pending
  n=$("${PSQL[@]}" -d soak -c "SELECT
    (SELECT count(*) FROM payments WHERE state = 'pending' AND protocol = 'http') +
    (SELECT count(*) FROM events WHERE state = 'pending')" 2>/dev/null || echo 1)
  charged=$(for p in "$PORT_EPAY1" "$PORT_EPAY2"; do curl -s "http://127.0.0.1:$p/-/statement"; echo; done |
    python3 -c 'import json, sys
for l in sys.stdin:
    for r in (json.loads(l) if l.strip() else []):
        print(r["trade_no"])' | sort)
  pending=$("${PSQL[@]}" -d soak -c "SELECT trade_no FROM payments WHERE state = 'pending' AND protocol = 'epay'" 2>/dev/null | sort)
  echo $((n + $(comm -12 <(echo "$charged") <(echo "$pending") | grep -c . || true)))
}
last=-1; still=0; t0=$SECONDS
while [ $((SECONDS - t0)) -lt "$DRAIN_S" ]; do
  fwd=$(rig_stats tap forwarded)
  [ "$fwd" = "$last" ] && still=$((still + 1)) || still=0
  last=$fwd
  # 15 s at least: the sweeper's last step (12 s) has asked about every
  # epay order a lost notification left pending.
  [ "$(undecided)" = 0 ] && [ "$still" -ge 5 ] && [ $((SECONDS - t0)) -ge 15 ] && break
  sleep 1
done
log "drained after $((SECONDS - t0)) s: $(undecided) undecided"

# --- evidence for the checker.
curl -s "http://127.0.0.1:$PORT_RIG/tap/log" >"$W/tap.jsonl"
curl -s "http://127.0.0.1:$PORT_RIG/sink/events" >"$W/sink.jsonl"
for m in "${MOCKS[@]}"; do
  name=${m% *}; port=${m#* }
  curl -s "http://127.0.0.1:$port/-/fault" >"$W/fault-$name.json"
  case "$name" in
    acq-*) curl -s "http://127.0.0.1:$port/-/charges" >"$W/charges-$name.json" ;;
    ep-*) curl -s "http://127.0.0.1:$port/-/statement" >"$W/statement-$name.json" ;;
  esac
done
dump() { "${PSQL[@]}" -d soak -c "SELECT coalesce(json_agg(t), '[]') FROM ($1) t" >"$W/$2.json"; }
dump "SELECT trade_no, merchant_id, order_id, amount, protocol, channel_id, state, created_at_ms, paid_at_ms FROM payments" journal
dump "SELECT event_id, trade_no, merchant_id, method, state, attempts FROM events" events
dump "SELECT channel_id, trade_no, result FROM notifications_in" notifications_in
dump "SELECT trade_no, kind, channel_id, result FROM adjustments" adjustments
cat >"$W/knobs.json" <<JSON
{"duration_s": $DURATION, "rate": $RATE, "daily_limit": {"m-00": $LIMIT}, "daily_cap": {"acq-2": $CAP},
 "day_offset_ms": 28800000, "smoke": $SMOKE}
JSON
stop_pg
python3 "$LT_ROOT/loadtest/soak_check.py" "$W"
