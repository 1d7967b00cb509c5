#!/usr/bin/env bash
# epay.sh: issue 14's three numbers for epay (易支付), each measured in one run.
#
#   loadtest/epay.sh                                # everything, about 4-5 minutes on 2 cores
#   loadtest/epay.sh --sections notify,memory       # a subset
#   loadtest/epay.sh --smoke                        # seconds: the machinery works (CI)
#
# Sections (loadtest/README.md says more):
#   throughput  one payroute with 3 JSON channels (mock-acquirer, always pay,
#               zero latency) and 3 epay channels (mock-acquirer --protocol
#               epay, zero latency, buyers who never pay, so no notification
#               interferes), 1,000 merchants that each have JSON access and an
#               epay_key; SQLite journal beside the config (the default) for
#               both. ROUNDS rounds, in each a closed-loop wrk run of unique
#               JSON payments (wrk/payments.lua, as bench.sh) and one of unique
#               signed /mapi.php orders (wrk/lines.lua over bodies signed
#               beforehand by epay_gen.py), the order flipped every round:
#               req/s of each, epay/JSON per round and its median (target
#               >= 0.60), CPU per payment of payroute, of the mocks and of wrk,
#               context switches per payment; then (PROFILE=1, when perf is
#               installed) a flat perf profile of payroute on each path.
#   notify      a payroute on the same channels with [notify] retry_ms =
#               [600000] (the shop's notification is queued but not sent in
#               the window: the notification in alone); NOTIFY_N orders
#               created, then a signed TRADE_SUCCESS GET /notify/{channel}
#               for each, read from the journal and signed with the channel's
#               key: payroute's CPU (utime + stime from /proc) over the
#               notify phase only, divided by NOTIFY_N (target < 1 ms);
#               NOTIFY_ROUNDS rounds on the same payroute, median. Then
#               the same with the default retry_ms and the shop's notify_url
#               answered `success` by nginx, counted until every shop
#               notification is delivered: notification in + out.
#   memory      a payroute on the same channels: MEM_WARM orders, then RSS
#               idle (VmRSS), then MEM_N orders that stay unpaid in MEM_STEPS
#               steps (RSS after each), then RSS and VmHWM (target: MEM_N =
#               100,000 orders under 64 MiB beyond idle).
#
# Environment: DURATION (s per throughput run, 10), ROUNDS (3), CONNS (64),
# WRK_THREADS (2), MERCHANTS (1000), EPAY_RATE_CAP (12000, 20000 with --smoke:
# signed bodies made per second of a run, and a second more, since wrk runs a
# little past its duration; a run that uses them all is flagged), PROFILE (1),
# PROFILE_SECS (4), NOTIFY_N (20000 per round), NOTIFY_ROUNDS (3: the notify
# in alone, each round new orders on the same payroute), NOTIFY_CONNS (32),
# NOTIFY_OUT (1: then one round of in + out), MEM_N (100000), MEM_WARM (1000), MEM_STEPS (4), MEM_MAX_RECORDS
# (100000, payroute's default memory_max_records), PAYROUTE_BIN (another
# payroute binary to measure instead of this tree's release build), LT_PORT_BASE
# (18000), OUT (loadtest/results/epay-latest), LT_KEEP=1 keeps the work dir.
# Loopback only; bounded in time; every process it starts is stopped on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SMOKE=0
SECTIONS="throughput,notify,memory"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --sections) SECTIONS="$2"; shift ;;
    -h|--help) sed -n '2,45p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
has() { [[ ",$SECTIONS," == *",$1,"* ]]; }

if [ "$SMOKE" = 1 ]; then
  DURATION=${DURATION:-1}; ROUNDS=${ROUNDS:-1}; CONNS=${CONNS:-8}; WRK_THREADS=${WRK_THREADS:-1}
  NOTIFY_N=${NOTIFY_N:-300}; NOTIFY_ROUNDS=${NOTIFY_ROUNDS:-2}; MEM_N=${MEM_N:-2000}; MEM_WARM=${MEM_WARM:-100}; MEM_STEPS=${MEM_STEPS:-2}
  PROFILE=${PROFILE:-0}; EPAY_RATE_CAP=${EPAY_RATE_CAP:-20000}
  OUT=${OUT:-"$(mktemp -d /tmp/payroute-epay-smoke.XXXXXX)"}
else
  DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-64}; WRK_THREADS=${WRK_THREADS:-2}
  NOTIFY_N=${NOTIFY_N:-20000}; NOTIFY_ROUNDS=${NOTIFY_ROUNDS:-3}; MEM_N=${MEM_N:-100000}; MEM_WARM=${MEM_WARM:-1000}; MEM_STEPS=${MEM_STEPS:-4}
  PROFILE=${PROFILE:-1}
  OUT=${OUT:-"$LT_ROOT/loadtest/results/epay-latest"}
fi
MERCHANTS=${MERCHANTS:-1000}; EPAY_RATE_CAP=${EPAY_RATE_CAP:-12000}; PROFILE_SECS=${PROFILE_SECS:-4}
NOTIFY_CONNS=${NOTIFY_CONNS:-32}; NOTIFY_OUT=${NOTIFY_OUT:-1}

lt_init epay
need_python; need_curl; need_wrk; need_procps
has notify && [ "$NOTIFY_OUT" = 1 ] && need_nginx
python3 -c 'import sqlite3' 2>/dev/null || die "python3 lacks its sqlite3 module (epay_gen.py reads the journal)"
build_release
# PAYROUTE_BIN: measure another payroute build (an A/B of one change, as ab.sh).
if [ -n "${PAYROUTE_BIN:-}" ]; then
  [ -x "$PAYROUTE_BIN" ] || die "PAYROUTE_BIN=$PAYROUTE_BIN is not an executable"
  PAYROUTE="$PAYROUTE_BIN"
fi
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
GEN="$LT_ROOT/loadtest/epay_gen.py"
JSON_LUA="$LT_ROOT/loadtest/wrk/payments.lua"
LINES_LUA="$LT_ROOT/loadtest/wrk/lines.lua"
port_free_or_die "$PORT_PAYROUTE" "$PORT_ADMIN" "$PORT_MOCK1" "$PORT_MOCK2" "$PORT_MOCK3" \
  "$PORT_EPAY1" "$PORT_EPAY2" "$PORT_EPAY3" "$PORT_SINK"
P_URL="http://127.0.0.1:$PORT_PAYROUTE"
SHOP_NOTIFY="http://127.0.0.1:$PORT_SINK/notify"

{
  echo "== machine"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel: $(uname -sr)"
  echo "cpu: $(cpu_model)"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "payroute: $(payroute_rev), $(rustc --version)${PAYROUTE_BIN:+; measured binary: $PAYROUTE_BIN}"
  echo "wrk: $(wrk -v 2>&1 | head -1)"
  echo "settings: smoke=$SMOKE sections=$SECTIONS duration=${DURATION}s rounds=$ROUNDS conns=$CONNS wrk_threads=$WRK_THREADS merchants=$MERCHANTS notify_n=$NOTIFY_N notify_conns=$NOTIFY_CONNS mem_n=$MEM_N mem_warm=$MEM_WARM"
} | tee "$OUT/machine.txt"

# --- the parties -----------------------------------------------------------------
log "starting 3 JSON mock acquirers (always pay) and 3 epay gateways (buyers never pay), zero latency"
start_mock "$PORT_MOCK1"; M1=$SPAWNED
start_mock "$PORT_MOCK2"; M2=$SPAWNED
start_mock "$PORT_MOCK3"; M3=$SPAWNED
# gen_config.py's epay channel ep-<i> is payroute's account pid 2000+i, key epay-bench-key-<i>.
i=0; EPAY_PIDS=()
for port in "$PORT_EPAY1" "$PORT_EPAY2" "$PORT_EPAY3"; do
  start_mock "$port" --protocol epay --pid "$((2000 + i))" --key "$(printf 'epay-bench-key-%02d' "$i")" --success-rate 0
  EPAY_PIDS+=("$SPAWNED"); i=$((i + 1))
done
EPAY_UPSTREAMS="127.0.0.1:$PORT_EPAY1,127.0.0.1:$PORT_EPAY2,127.0.0.1:$PORT_EPAY3"
json_mock_ticks() { echo $(( $(cpu_ticks "$M1") + $(cpu_ticks "$M2") + $(cpu_ticks "$M3") )); }
epay_mock_ticks() { local t=0 p; for p in "${EPAY_PIDS[@]}"; do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }
idle_ticks() { awk '/^cpu / {print $5; exit}' /proc/stat; }
# Context switches of every thread of PID (voluntary + involuntary).
ctx_switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/_ctxt_switches:/ {s += $2} END {print s + 0}'; }
# metric NAME [SUBSTRING]: the sum of NAME's series (whose line contains SUBSTRING).
metric() {
  curl -s "http://127.0.0.1:$PORT_ADMIN/metrics" |
    awk -v m="$1" -v f="${2:-}" '($1 == m || index($1, m "{") == 1) && index($0, f) {s += $NF} END {printf "%d\n", s + 0}'
}

# epay_config DIR [gen_config.py args...]: a payroute config in DIR (its
# journal, payroute.db, goes beside it): 3 JSON channels, 3 epay channels,
# MERCHANTS merchants with JSON access and an epay_key; the sweeper waits
# 10 minutes (no query of a pending order within a run).
epay_config() {
  local dir="$1"; shift
  mkdir -p "$dir"
  gen_config "$dir/routes.toml" 3 "$MERCHANTS" --epay-upstreams "$EPAY_UPSTREAMS" \
    --sweeper-query-after-ms 600000 "$@"
}

# orders FILE N: N signed /mapi.php bodies with new order ids.
orders() { python3 "$GEN" orders --n "$2" --merchants "$MERCHANTS" --notify-url "$SHOP_NOTIFY" --out "$1"; }

# send_all FILE METHOD URL CONNS SECS COUNTER TARGET: sends every line of
# FILE once (wrk/lines.lua, stopping each thread when its lines are
# answered), until the payroute counter COUNTER ("metric args") reaches
# TARGET or SECS pass. Prints the seconds it took.
send_all() {
  local file="$1" method="$2" url="$3" conns="$4" secs="$5" counter="$6" target="$7" t0 wpid
  t0=$(date +%s.%N)
  wrk -t"$WRK_THREADS" -c"$conns" -d"${secs}s" --timeout 10s -s "$LINES_LUA" "$url" -- "$file" "$method" "$WRK_THREADS" stop \
    >"$LT_WORK/send.out" 2>&1 &
  wpid=$!
  LT_PIDS+=("$wpid")
  # shellcheck disable=SC2086
  while kill -0 "$wpid" 2>/dev/null; do
    [ "$(metric $counter)" -ge "$target" ] && { kill -INT "$wpid" 2>/dev/null || true; break; }
    sleep 0.1
  done
  wait "$wpid" 2>/dev/null || true
  python3 -c 'import sys, time; print("%.2f" % (time.time() - float(sys.argv[1])))' "$t0"
  # shellcheck disable=SC2086
  [ "$(metric $counter)" -ge "$target" ] || { cat "$LT_WORK/send.out" >&2; die "only $(metric $counter) of $target ($counter) after ${secs}s"; }
}

# run_wrk LABEL ROUND PID: one measured closed-loop run of the JSON or the
# epay path against payroute PID; a JSON line in RESULTS.
run_wrk() {
  local label="$1" round="$2" pid="$3" c0 c1 k0 k1 j0 j1 e0 e1 i0 i1 x0 x1 r0 r1 line gen TIMEFORMAT='%U %S'
  local cmd
  if [ "$label" = json ]; then
    cmd=(wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s -s "$JSON_LUA" "$P_URL/v1/payments" -- "$MERCHANTS")
  else
    orders "$LT_WORK/orders.txt" $(((DURATION + 1) * EPAY_RATE_CAP))
    cmd=(wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s -s "$LINES_LUA" "$P_URL/mapi.php" -- "$LT_WORK/orders.txt" POST "$WRK_THREADS")
  fi
  r0=$(metric payroute_replays_total)
  c0=$(cpu_ticks "$pid"); k0=$(sys_ticks "$pid"); j0=$(json_mock_ticks); e0=$(epay_mock_ticks); i0=$(idle_ticks); x0=$(ctx_switches "$pid")
  { time "${cmd[@]}" >"$LT_WORK/wrk.out" 2>&1; } 2>"$LT_WORK/wrk.time" || { cat "$LT_WORK/wrk.out" >&2; die "wrk failed ($label)"; }
  c1=$(cpu_ticks "$pid"); k1=$(sys_ticks "$pid"); j1=$(json_mock_ticks); e1=$(epay_mock_ticks); i1=$(idle_ticks); x1=$(ctx_switches "$pid")
  r1=$(metric payroute_replays_total)
  cat "$LT_WORK/wrk.out" >>"$OUT/wrk-raw.txt"
  gen=$(awk '{print $1 + $2}' "$LT_WORK/wrk.time")
  line=$(sed -n 's/^WRKJSON //p' "$LT_WORK/wrk.out")
  [ -n "$line" ] || { cat "$LT_WORK/wrk.out" >&2; die "no WRKJSON line from wrk ($label)"; }
  python3 - "$line" "$label" "$round" "$CLK_TCK" "$((c1 - c0))" "$((k1 - k0))" "$((j1 - j0))" "$((e1 - e0))" \
    "$gen" "$((i1 - i0))" "$((x1 - x0))" "$((r1 - r0))" "$(rss_kb "$pid")" >>"$RESULTS" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
tck = int(sys.argv[4]); n = max(1, r["requests"])
us = lambda ticks: int(ticks) / tck * 1e6 / n
r.update(section="throughput", target=sys.argv[2], round=int(sys.argv[3]),
         cpu_s=int(sys.argv[5]) / tck, cpu_us_per_req=us(sys.argv[5]), sys_us_per_req=us(sys.argv[6]),
         json_mocks_us_per_req=us(sys.argv[7]), epay_mocks_us_per_req=us(sys.argv[8]),
         gen_cpu_us_per_req=float(sys.argv[9]) * 1e6 / n, idle_us_per_req=us(sys.argv[10]),
         ctx_switches_per_req=int(sys.argv[11]) / n, replays=int(sys.argv[12]), rss_kb=int(sys.argv[13]))
print(json.dumps(r))
PY
  log "$label (round $round): $(echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f req/s p50 %.2f ms p99 %.2f ms non-2xx/errors %d" % (r["rps"], r["p50_us"]/1e3, r["p99_us"]/1e3, r["errors_status"]+r["errors_connect"]+r["errors_read"]+r["errors_timeout"]))'), payroute $(( (c1 - c0) * 1000000 / CLK_TCK / $(echo "$line" | python3 -c 'import json,sys; print(max(1, json.load(sys.stdin)["requests"]))') )) µs CPU/payment"
}

# --- 1. throughput: the epay path against the JSON path --------------------------
if has throughput; then
  epay_config "$LT_WORK/tp"
  start_payroute "$LT_WORK/tp/routes.toml"; P=$PAYROUTE_PID
  [ -f "$LT_WORK/tp/payroute.db" ] || die "no payroute.db beside the config: is the journal on?"
  log "warming up both paths (2 s each)"
  wrk -t1 -c"$CONNS" -d2s -s "$JSON_LUA" "$P_URL/v1/payments" -- "$MERCHANTS" >/dev/null 2>&1 || true
  orders "$LT_WORK/warm.txt" $((2 * EPAY_RATE_CAP))
  wrk -t1 -c"$CONNS" -d2s -s "$LINES_LUA" "$P_URL/mapi.php" -- "$LT_WORK/warm.txt" POST 1 >/dev/null 2>&1 || true
  log "== throughput: wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s, $ROUNDS round(s), JSON and epay interleaved, order flipped each round"
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="json epay"; else order="epay json"; fi
    for label in $order; do run_wrk "$label" "$round" "$P"; done
  done
  # Both paths made something: payroute's own counters agree with wrk.
  python3 - "$(metric payroute_requests_total)" "$(metric payroute_payments_total)" "$(du -ck "$LT_WORK"/tp/payroute.db* | awk 'END {print $1}')" >>"$RESULTS" <<'PY'
import json, sys
print(json.dumps({"section": "throughput_totals", "requests": int(sys.argv[1]), "payments_metric": int(sys.argv[2]), "db_kb": int(sys.argv[3])}))
PY
  if [ "$PROFILE" = 1 ] && command -v perf >/dev/null 2>&1; then
    # A flat profile of payroute (no call graphs: the release build has no
    # frame pointers), each path alone, under the same closed loop.
    for label in json epay; do
      if [ "$label" = json ]; then
        wrk -t"$WRK_THREADS" -c"$CONNS" -d"$((PROFILE_SECS + 2))s" -s "$JSON_LUA" "$P_URL/v1/payments" -- "$MERCHANTS" >/dev/null 2>&1 &
      else
        orders "$LT_WORK/orders.txt" $(((PROFILE_SECS + 2) * EPAY_RATE_CAP))
        wrk -t"$WRK_THREADS" -c"$CONNS" -d"$((PROFILE_SECS + 2))s" -s "$LINES_LUA" "$P_URL/mapi.php" -- "$LT_WORK/orders.txt" POST "$WRK_THREADS" >/dev/null 2>&1 &
      fi
      WPID=$!; LT_PIDS+=("$WPID")
      sleep 1
      # Payments answered while perf records (both paths count in requests_total).
      n0=$(metric payroute_requests_total)
      perf record -q -F 1999 -p "$P" -o "$LT_WORK/perf-$label.data" -- sleep "$PROFILE_SECS" >/dev/null 2>&1 || log "perf record failed ($label)"
      n1=$(metric payroute_requests_total)
      wait "$WPID" 2>/dev/null || true
      if [ -s "$LT_WORK/perf-$label.data" ]; then
        {
          echo "== perf, payroute under the $label closed loop, ${PROFILE_SECS}s at 1999 Hz, $((n1 - n0)) payments answered meanwhile"
          echo "== CPU per payment by thread (samples / 1999 Hz / payments)"
          perf report -i "$LT_WORK/perf-$label.data" --no-children --sort comm --stdio -F sample,comm 2>/dev/null |
            python3 -c '
import re, sys
n = max(1, int(sys.argv[1])); rows = []
for l in sys.stdin:
    m = re.match(r"\s*(\d+)\s+(\S.*\S)\s*$", l)
    if m and not l.startswith("#"):
        rows.append((int(m.group(1)), m.group(2)))
for s, comm in sorted(rows, reverse=True):
    print("%8.1f µs  %s" % (s / 1999 * 1e6 / n, comm))
print("%8.1f µs  all threads" % (sum(s for s, _ in rows) / 1999 * 1e6 / n))' "$((n1 - n0))"
          echo "== the payment workers: epay-specific work, µs per payment (symbols by name)"
          perf report -i "$LT_WORK/perf-$label.data" --comms payroute-worker --no-children --sort symbol --stdio -F sample,sym 2>/dev/null |
            python3 -c '
import re, sys
n = max(1, int(sys.argv[1]))
groups = [("md5", r"md5|Md5"), ("form encode/decode", r"form_urlencoded|percent_encoding|epay::form"),
          ("serde_json", r"serde_json"), ("payroute::epay, proxy::epay", r"payroute::(proxy::)?epay")]
tot = {g: 0 for g, _ in groups}; allw = 0
for l in sys.stdin:
    m = re.match(r"\s*(\d+)\s+\[.\]\s+(.*\S)\s*$", l)
    if not m: continue
    s, sym = int(m.group(1)), m.group(2); allw += s
    for g, rx in groups:
        if re.search(rx, sym): tot[g] += s; break
for g, _ in groups:
    print("%8.1f µs  %s" % (tot[g] / 1999 * 1e6 / n, g))
print("%8.1f µs  the workers, all that perf --comms selects (a little under the by-thread figure)" % (allw / 1999 * 1e6 / n))' "$((n1 - n0))"
          echo "== samples by thread"
          perf report -i "$LT_WORK/perf-$label.data" --no-children --sort comm --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12
          echo "== all threads, by symbol (self, >= 0.4 %)"
          perf report -i "$LT_WORK/perf-$label.data" --no-children --sort dso,symbol --stdio --percent-limit 0.4 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-150 | head -60
          echo "== the payment workers only (payroute-worker threads), by symbol (share of their samples, >= 0.3 %)"
          perf report -i "$LT_WORK/perf-$label.data" --comms payroute-worker --no-children --sort symbol --stdio --percent-limit 0.3 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-150 | head -80
        } >"$OUT/perf-$label.txt"
        log "profile: $OUT/perf-$label.txt"
      fi
    done
  fi
  stop_pid "$P"
  rm -f "$LT_WORK"/orders.txt "$LT_WORK"/warm.txt "$LT_WORK"/perf-*.data
  rm -rf "$LT_WORK/tp"
fi

# --- 2. a notification in: payroute's CPU per notify -----------------------------
# notify_run NAME RETRY ROUNDS: a fresh payroute ([notify] retry_ms = RETRY,
# or the default when empty); ROUNDS times NOTIFY_N orders, then one signed
# notify each; CPU over the notify phase (and, with the default schedule,
# until the shop got every notification).
notify_run() {
  local name="$1" retry="$2" rounds="$3" dir="$LT_WORK/$1" args=() P t t0 c0 c1 k0 k1 x0 x1 secs a0 accepted d0 delivered round
  [ -n "$retry" ] && args=(--notify-retry-ms "$retry")
  epay_config "$dir" "${args[@]}"
  start_payroute "$dir/routes.toml"; P=$PAYROUTE_PID
  for round in $(seq 1 "$rounds"); do
    # Each round: NOTIFY_N new orders (the earlier rounds' are paid by now,
    # so the journal's pending epay orders are exactly this round's).
    orders "$dir/orders.txt" "$NOTIFY_N"
    log "notify ($name, round $round): creating $NOTIFY_N orders"
    t=$(send_all "$dir/orders.txt" POST "$P_URL/mapi.php" "$CONNS" 300 "payroute_requests_total outcome=\"pending\"" "$((round * NOTIFY_N))")
    log "notify ($name, round $round): $NOTIFY_N orders in ${t}s; signing a notify for each from the journal"
    python3 "$GEN" notifies --db "$dir/payroute.db" --out "$dir/notifies.txt" 2>"$dir/notifies.count"
    [ "$(cat "$dir/notifies.count")" = "$NOTIFY_N" ] || die "the journal holds $(cat "$dir/notifies.count") pending epay orders, not $NOTIFY_N"
    sleep 1
    a0=$(metric payroute_notifications_in_total 'result="accepted"')
    d0=$(metric payroute_notifications_out_total 'result="delivered"')
    t0=$(date +%s.%N)
    c0=$(cpu_ticks "$P"); k0=$(sys_ticks "$P"); x0=$(ctx_switches "$P")
    secs=$(send_all "$dir/notifies.txt" GET "$P_URL" "$NOTIFY_CONNS" 300 "payroute_notifications_in_total result=\"accepted\"" "$((a0 + NOTIFY_N))")
    if [ -z "$retry" ]; then
      # In + out: until the shop has every notification.
      local end=$((SECONDS + 300))
      until [ "$(metric payroute_notifications_out_total 'result="delivered"')" -ge "$((d0 + NOTIFY_N))" ]; do
        [ $SECONDS -lt $end ] || die "the shop's notifications were not all delivered in 300 s"
        sleep 0.1
      done
    fi
    c1=$(cpu_ticks "$P"); k1=$(sys_ticks "$P"); x1=$(ctx_switches "$P")
    secs=$(python3 -c 'import sys, time; print("%.2f" % (time.time() - float(sys.argv[1])))' "$t0")
    accepted=$(( $(metric payroute_notifications_in_total 'result="accepted"') - a0 ))
    delivered=$(( $(metric payroute_notifications_out_total 'result="delivered"') - d0 ))
    python3 - "$name" "$NOTIFY_N" "$((c1 - c0))" "$CLK_TCK" "$secs" "$accepted" "$delivered" "$((x1 - x0))" \
      "$(metric payroute_notifications_in_total)" "$(metric payroute_payments_total 'state="paid"')" "$round" "$((k1 - k0))" >>"$RESULTS" <<'PY'
import json, sys
n = int(sys.argv[2]); cpu_s = int(sys.argv[3]) / int(sys.argv[4])
print(json.dumps({"section": "notify", "target": sys.argv[1], "round": int(sys.argv[11]), "notifies": n, "cpu_s": cpu_s,
                  "cpu_us_per_notify": cpu_s * 1e6 / n, "sys_us_per_notify": int(sys.argv[12]) / int(sys.argv[4]) * 1e6 / n, "wall_s": float(sys.argv[5]), "per_s": n / float(sys.argv[5]),
                  "accepted": int(sys.argv[6]), "delivered_out": int(sys.argv[7]),
                  "ctx_switches_per_notify": int(sys.argv[8]) / n, "notifications_in_total": int(sys.argv[9]),
                  "paid": int(sys.argv[10])}))
PY
    log "notify ($name, round $round): $accepted accepted, $delivered delivered to the shop, payroute CPU $(( (c1 - c0) * 1000000 / CLK_TCK / NOTIFY_N )) µs per notify"
  done
  stop_pid "$P"
  rm -rf "$dir"
}

if has notify; then
  log "== notify: $NOTIFY_N pending orders, then a signed TRADE_SUCCESS notify for each ($NOTIFY_CONNS connections)"
  notify_run notify-in 600000 "$NOTIFY_ROUNDS"
  if [ "$NOTIFY_OUT" = 1 ]; then
    # The shop: nginx answering every notification `success`.
    mkdir -p "$LT_WORK/shop"
    cat >"$LT_WORK/shop/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $LT_WORK/shop/nginx.pid;
error_log $LT_WORK/shop/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $LT_WORK/shop/body;
  proxy_temp_path $LT_WORK/shop/proxy;
  fastcgi_temp_path $LT_WORK/shop/fastcgi;
  uwsgi_temp_path $LT_WORK/shop/uwsgi;
  scgi_temp_path $LT_WORK/shop/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$PORT_SINK;
    location / { default_type text/plain; return 200 "success"; }
  }
}
NGX
    spawn shop /usr/sbin/nginx -e "$LT_WORK/shop/error.log" -p "$LT_WORK/shop" -c "$LT_WORK/shop/nginx.conf"
    SHOP_PID=$SPAWNED
    wait_port "$PORT_SINK" "$SHOP_PID" 10 || { cat "$LT_WORK/shop.log" "$LT_WORK/shop/error.log" >&2; die "the shop (nginx) did not start"; }
    notify_run notify-in-out "" 1
    stop_pid "$SHOP_PID"
  fi
fi

# --- 3. memory: 100,000 pending epay orders ---------------------------------------
if has memory; then
  log "== memory: RSS idle after $MEM_WARM orders, then $MEM_N unpaid orders in $MEM_STEPS steps"
  # MEM_MAX_RECORDS: [state] memory_max_records (default payroute's 100000);
  # a small value shows what the orders cost besides the idempotency store.
  epay_config "$LT_WORK/mem" --max-records "${MEM_MAX_RECORDS:-100000}"
  start_payroute "$LT_WORK/mem/routes.toml"; P=$PAYROUTE_PID
  orders "$LT_WORK/mem/warm.txt" "$MEM_WARM"
  send_all "$LT_WORK/mem/warm.txt" POST "$P_URL/mapi.php" "$CONNS" 120 "payroute_requests_total outcome=\"pending\"" "$MEM_WARM" >/dev/null
  sleep 2
  RSS_IDLE=$(rss_kb "$P")
  # VmRSS's parts: anonymous memory, file pages mapped (the binary; SQLite's
  # database if it were memory-mapped) and shared memory (SQLite's WAL index,
  # payroute.db-shm).
  rss_parts() { awk '/^Rss(Anon|File|Shmem):/ {printf "%s\"%s\": %d", n++ ? ", " : "", substr($1, 1, length($1) - 1), $2}' "/proc/$1/status"; }
  PARTS_IDLE="{$(rss_parts "$P")}"
  log "idle (after $MEM_WARM orders): RSS $((RSS_IDLE / 1024)) MiB"
  STEPS_JSON="[]"
  done_n=0
  for s in $(seq 1 "$MEM_STEPS"); do
    n=$((MEM_N / MEM_STEPS)); [ "$s" = "$MEM_STEPS" ] && n=$((MEM_N - done_n))
    orders "$LT_WORK/mem/step.txt" "$n"
    secs=$(send_all "$LT_WORK/mem/step.txt" POST "$P_URL/mapi.php" "$CONNS" 300 "payroute_requests_total outcome=\"pending\"" "$((MEM_WARM + done_n + n))")
    done_n=$((done_n + n))
    sleep 1
    rss=$(rss_kb "$P")
    STEPS_JSON=$(python3 -c 'import json,sys; l=json.loads(sys.argv[1]); l.append({"orders": int(sys.argv[2]), "rss_kb": int(sys.argv[3]), "secs": float(sys.argv[4])}); print(json.dumps(l))' "$STEPS_JSON" "$done_n" "$rss" "$secs")
    log "after $done_n orders (${secs}s for the last $n): RSS $((rss / 1024)) MiB"
  done
  sleep 3
  PENDING=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=30).execute("SELECT count(*) FROM payments_all WHERE protocol = '"'epay'"' AND state = '"'pending'"'").fetchone()[0])' "$LT_WORK/mem/payroute.db")
  python3 - "$MEM_N" "$MEM_WARM" "$RSS_IDLE" "$(rss_kb "$P")" "$(hwm_kb "$P")" "$PENDING" "$STEPS_JSON" \
    "$(metric payroute_replays_total)" "$(metric payroute_requests_total)" "$(du -ck "$LT_WORK"/mem/payroute.db* | awk 'END {print $1}')" \
    "${MEM_MAX_RECORDS:-100000}" "$PARTS_IDLE" "{$(rss_parts "$P")}" >>"$RESULTS" <<'PY'
import json, sys
a = sys.argv
print(json.dumps({"section": "memory", "orders": int(a[1]), "warm_orders": int(a[2]), "rss_idle_kb": int(a[3]),
                  "rss_after_kb": int(a[4]), "hwm_kb": int(a[5]), "pending_in_journal": int(a[6]),
                  "steps": json.loads(a[7]), "replays": int(a[8]), "requests": int(a[9]), "db_kb": int(a[10]),
                  "memory_max_records": int(a[11]), "parts_idle_kb": json.loads(a[12]), "parts_after_kb": json.loads(a[13])}))
PY
  log "memory: RSS idle $((RSS_IDLE / 1024)) MiB, after $MEM_N more orders $(( $(rss_kb "$P") / 1024 )) MiB ($PENDING pending in the journal)"
  stop_pid "$P"
  rm -rf "$LT_WORK/mem"
fi

# --- report ------------------------------------------------------------------------
REPORT_ARGS=()
[ "$SMOKE" = 1 ] && REPORT_ARGS+=(--smoke-check)
python3 "$LT_ROOT/loadtest/epay_report.py" "$RESULTS" "${REPORT_ARGS[@]}" | tee "$OUT/report.txt"
[ "${PIPESTATUS[0]}" = 0 ] || die "report: a check failed (see above)"
log "results in $OUT"
