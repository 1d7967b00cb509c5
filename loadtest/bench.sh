#!/usr/bin/env bash
# bench.sh: payroute against a direct call, nginx and HAProxy on the same box,
# with the same load generator, requests and concurrency, in one run.
#
#   loadtest/bench.sh                   # everything (about 9-10 minutes on 2 cores)
#   loadtest/bench.sh --smoke           # seconds: proves the machinery works (CI)
#   loadtest/bench.sh --sections throughput,latency   # a subset
#   BASELINE=/path/to/payroute loadtest/bench.sh --journal   # the journal's cost only
#
# Sections (loadtest/README.md says what each measures and why):
#   throughput  wrk closed loop, unique payments, ROUNDS rounds interleaved:
#               (a) direct to a mock acquirer, (b) nginx proxy_pass + upstream
#               keepalive, (c) HAProxy, (d) payroute (3 channels, 1,000
#               merchants, scoring, limits, idempotency, metrics), and
#               hyper-floor (hyper relaying, nothing else: the stack's
#               floor), all with HTTP/1.1 to the acquirers; then (e) HAProxy with `proto h2`
#               and (f) payroute with `h2c = true`: HTTP/2 to the acquirers.
#               req/s, p50/p99/p99.9, RSS, proxy CPU per request; ratios.
#   latency     k6 constant-arrival-rate at LAT_RATE req/s (2,000), direct,
#               nginx, HAProxy and payroute interleaved, LAT_ROUNDS rounds:
#               p99 of each, payroute p99 minus direct p99 (median of the
#               rounds); the same with oha -q when oha is installed
#               (LAT_OHA=1 installs, 0 skips).
#   memory      payroute with 100,000 merchants configured, 10,000 active.
#   reload      100,000-merchant file reloaded under fixed-rate load, in rounds: reload
#               time, failed requests, p99 during reloads vs steady.
#   scale       3/10/50 channels (1,000 merchants), 1k/10k/100k/1M merchants
#               (3 channels): req/s, p99, payroute CPU per request; CSV + PNG.
#   cpu         CPU per request at a fixed rate (issue 19): oha -q CPU_RATE
#               (15,000 req/s) for CPU_SECS, unique payments, CPU_ROUNDS
#               rounds with the targets interleaved: direct (the acquirer's
#               own cost), nginx, HAProxy, hyper-floor (a relay on
#               payroute's stack that does nothing else: what the stack
#               costs before any payment logic), payroute (journal on: the
#               default), and payroute-nojournal (BASELINE, when set). Each
#               target's user + system CPU (its process tree, /proc) over
#               the run divided by the requests it answered; ratios to
#               nginx and HAProxy. Not in the default set (--sections cpu).
#   journal     the journal's cost on the JSON payment path (issue 13): this
#               build (journal on, SQLite beside its config: the default)
#               against BASELINE, a payroute without the journal (built from
#               main), same config and mocks, side by side: wrk throughput in
#               ROUNDS interleaved rounds (the order flips every round), then
#               p99 at LAT_RATE req/s (k6, and oha when installed) in
#               LAT_ROUNDS interleaved rounds; ratios and differences taken
#               within each round. Runs only when BASELINE is set (also in
#               the default set and --smoke then); --journal = --sections journal.
#
# Environment: DURATION (s per throughput run, 10), ROUNDS (3), CONNS (64), LAT_OHA (auto),
# CPU_RATE (15000), CPU_SECS (8), CPU_ROUNDS (3), CPU_CONNS (64),
# BASELINE (the journal section's payroute without a journal), WRK_THREADS (2), LAT_RATE (2000), LAT_SECS (6), LAT_ROUNDS (3), SCALE_SECS (6), SCALE_ROUNDS (3),
# RELOAD_SECS (6), RELOAD_ROUNDS (3), LT_PORT_BASE (18000), OUT (result dir, default loadtest/results/latest),
# LT_KEEP=1 keeps the work dir (logs, configs).
# Loopback only; bounded in time; every process it starts is stopped on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SMOKE=0
SECTIONS="throughput,latency,memory,reload,scale"
[ -n "${BASELINE:-}" ] && SECTIONS+=",journal"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --sections) SECTIONS="$2"; shift ;;
    --journal) SECTIONS="journal" ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
has() { [[ ",$SECTIONS," == *",$1,"* ]]; }

if [ "$SMOKE" = 1 ]; then
  DURATION=${DURATION:-1}; ROUNDS=${ROUNDS:-1}; CONNS=${CONNS:-8}; WRK_THREADS=${WRK_THREADS:-1}
  LAT_RATE=${LAT_RATE:-100}; LAT_SECS=${LAT_SECS:-1}; LAT_ROUNDS=${LAT_ROUNDS:-1}; SCALE_SECS=${SCALE_SECS:-1}; SCALE_ROUNDS=${SCALE_ROUNDS:-1}
  CPU_RATE=${CPU_RATE:-200}; CPU_SECS=${CPU_SECS:-1}; CPU_ROUNDS=${CPU_ROUNDS:-1}; CPU_CONNS=${CPU_CONNS:-8}
  MEM_MERCHANTS=2000; MEM_ACTIVE=200; MEM_SECS=1
  RELOAD_RATE=100; RELOAD_SECS=3; RELOAD_ROUNDS=1
  SCALE_CHANNELS="3 5"; SCALE_MERCHANTS="1000 2000"
  OUT=${OUT:-"$(mktemp -d /tmp/payroute-bench-smoke.XXXXXX)"}
else
  DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-64}; WRK_THREADS=${WRK_THREADS:-2}
  LAT_RATE=${LAT_RATE:-2000}; LAT_SECS=${LAT_SECS:-6}; LAT_ROUNDS=${LAT_ROUNDS:-3}; SCALE_SECS=${SCALE_SECS:-6}; SCALE_ROUNDS=${SCALE_ROUNDS:-3}
  CPU_RATE=${CPU_RATE:-15000}; CPU_SECS=${CPU_SECS:-8}; CPU_ROUNDS=${CPU_ROUNDS:-3}; CPU_CONNS=${CPU_CONNS:-64}
  MEM_MERCHANTS=100000; MEM_ACTIVE=10000; MEM_SECS=${MEM_SECS:-15}
  RELOAD_RATE=${RELOAD_RATE:-1000}; RELOAD_SECS=${RELOAD_SECS:-6}; RELOAD_ROUNDS=${RELOAD_ROUNDS:-3}
  SCALE_CHANNELS=${SCALE_CHANNELS:-"3 10 50"}; SCALE_MERCHANTS=${SCALE_MERCHANTS:-"1000 10000 100000 1000000"}
  OUT=${OUT:-"$LT_ROOT/loadtest/results/latest"}
fi

lt_init bench
need_python; need_curl; need_wrk; need_procps
{ has throughput || has latency || has cpu; } && { need_nginx; need_haproxy; }
has cpu && need_oha
{ has latency || has reload || has journal; } && need_k6
if has journal; then
  [ -n "${BASELINE:-}" ] || die "the journal section needs BASELINE=path/to/payroute (a build without the journal, e.g. from main)"
fi
if [ -n "${BASELINE:-}" ]; then
  [ -x "$BASELINE" ] || die "BASELINE=$BASELINE is not an executable"
  BASELINE="$(cd "$(dirname "$BASELINE")" && pwd)/$(basename "$BASELINE")"
fi
build_release
{ has throughput || has cpu; } && build_floor
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
rm -f "$OUT"/oha-latency*.json "$OUT"/oha-journal*.json
WRK_LUA="$LT_ROOT/loadtest/wrk/payments.lua"
K6_FIXED="$LT_ROOT/loadtest/k6/fixed_rate.js"
port_free_or_die "$PORT_J_ON" "$PORT_J_OFF" "$PORT_ADMIN_J_ON" "$PORT_ADMIN_J_OFF" \
  "$PORT_PAYROUTE" "$PORT_ADMIN" "$PORT_FLOOR" "$PORT_NGINX" "$PORT_HAPROXY" "$PORT_HAPROXY_H2" "$PORT_PAYROUTE_H2C" "$PORT_ADMIN_H2C" "$PORT_MOCK1" "$PORT_MOCK2" "$PORT_MOCK3"

{
  echo "== machine"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel: $(uname -sr)"
  echo "cpu: $(cpu_model)"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "payroute: $(payroute_rev), $(rustc --version)"
  echo "wrk: $(wrk -v 2>&1 | head -1)"
  command -v nginx >/dev/null 2>&1 || true
  command -v /usr/sbin/nginx >/dev/null 2>&1 && echo "nginx: $(/usr/sbin/nginx -v 2>&1 | head -1)"
  command -v /usr/sbin/haproxy >/dev/null 2>&1 && echo "haproxy: $(/usr/sbin/haproxy -v 2>&1 | head -1)"
  has journal && echo "baseline (journal section): $BASELINE"
  command -v k6 >/dev/null 2>&1 && echo "k6: $(k6 version 2>&1 | head -1)"
  command -v oha >/dev/null 2>&1 && echo "oha: $(oha --version 2>&1 | head -1)"
  echo "settings: smoke=$SMOKE duration=${DURATION}s rounds=$ROUNDS conns=$CONNS wrk_threads=$WRK_THREADS lat_rate=$LAT_RATE lat_secs=$LAT_SECS lat_rounds=$LAT_ROUNDS"
} | tee "$OUT/machine.txt"

log "starting 3 mock acquirers (zero latency, always pay)"
start_mock "$PORT_MOCK1"; MOCK1_PID=$SPAWNED
start_mock "$PORT_MOCK2"; MOCK2_PID=$SPAWNED
start_mock "$PORT_MOCK3"; MOCK3_PID=$SPAWNED

# --- targets ---------------------------------------------------------------
# start_haproxy [h2]: HTTP/1.1 to the acquirers (keep-alive, reused), or
# with "h2" HTTP/2 to them (proto h2): the fair peer of payroute's h2c row.
start_haproxy() {
  local variant="${1:-}" port="$PORT_HAPROXY" proto=""
  [ "$variant" = h2 ] && { port="$PORT_HAPROXY_H2"; proto=" proto h2"; }
  cat >"$LT_WORK/haproxy$variant.cfg" <<HAP
global
  nbthread 2
  maxconn 8192
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend payments
  bind 127.0.0.1:$port
  default_backend acquirers
backend acquirers
  balance roundrobin
  http-reuse always
  server a1 127.0.0.1:$PORT_MOCK1$proto
  server a2 127.0.0.1:$PORT_MOCK2$proto
  server a3 127.0.0.1:$PORT_MOCK3$proto
HAP
  spawn "haproxy$variant" /usr/sbin/haproxy -db -f "$LT_WORK/haproxy$variant.cfg"
  HAPROXY_PID=$SPAWNED
  wait_port "$port" "$HAPROXY_PID" 10 || { cat "$LT_WORK/haproxy$variant.log" >&2; die "haproxy did not start"; }
}

# run_wrk LABEL SECTION URL MERCHANTS SECONDS PID [extra json] [ACTIVE]: one measured run.
run_wrk() {
  local label="$1" section="$2" url="$3" merchants="$4" secs="$5" pid="$6" extra="${7:-}" active="${8:-$4}"
  local c0 c1 k0 k1 m0 m1 i0 i1 out line rss gen TIMEFORMAT='%U %S'
  # The target's CPU, and the rest of the box's (the mocks', wrk's, idle):
  # on a shared box req/s = cores / the sum, the arithmetic of target 1.
  c0=$(cpu_ticks "$pid"); k0=$(sys_ticks "$pid"); m0=$(mock_ticks); i0=$(idle_ticks)
  { time wrk -t"$WRK_THREADS" -c"$CONNS" -d"${secs}s" --timeout 5s -s "$WRK_LUA" "$url/v1/payments" -- "$merchants" "$active" \
      >"$LT_WORK/wrk.out" 2>&1; } 2>"$LT_WORK/wrk.time" || { cat "$LT_WORK/wrk.out" >&2; die "wrk failed against $label"; }
  c1=$(cpu_ticks "$pid"); k1=$(sys_ticks "$pid"); m1=$(mock_ticks); i1=$(idle_ticks)
  out=$(cat "$LT_WORK/wrk.out"); gen=$(awk '{print $1 + $2}' "$LT_WORK/wrk.time")
  rss=$(rss_kb "$pid")
  echo "$out" >>"$OUT/wrk-raw.txt"
  line=$(echo "$out" | sed -n 's/^WRKJSON //p')
  [ -n "$line" ] || { echo "$out" >&2; die "no WRKJSON line from wrk against $label"; }
  python3 - "$line" "$label" "$section" "$rss" "$((c1 - c0))" "$CLK_TCK" "$extra" "$((m1 - m0))" "$gen" "$((i1 - i0))" "$((k1 - k0))" >>"$RESULTS" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
tck = int(sys.argv[6])
n = max(1, r["requests"])
r.update(target=sys.argv[2], section=sys.argv[3], rss_kb=int(sys.argv[4]),
         cpu_s=int(sys.argv[5]) / tck)
r["cpu_us_per_req"] = r["cpu_s"] * 1e6 / n
r["mocks_cpu_us_per_req"] = int(sys.argv[8]) / tck * 1e6 / n
r["gen_cpu_us_per_req"] = float(sys.argv[9]) * 1e6 / n
r["idle_us_per_req"] = int(sys.argv[10]) / tck * 1e6 / n
r["sys_us_per_req"] = int(sys.argv[11]) / tck * 1e6 / n
if sys.argv[7]:
    r.update(json.loads(sys.argv[7]))
print(json.dumps(r))
PY
  log "$label: $(echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f req/s p50 %.2f ms p99 %.2f ms p99.9 %.2f ms errors %d" % (r["rps"], r["p50_us"]/1e3, r["p99_us"]/1e3, r["p999_us"]/1e3, r["errors_status"]+r["errors_connect"]+r["errors_read"]+r["errors_timeout"]))')"
}

# CPU ticks of the three mock acquirers, and the box's idle ticks.
mock_ticks() { echo $(( $(cpu_ticks "$MOCK1_PID") + $(cpu_ticks "$MOCK2_PID") + $(cpu_ticks "$MOCK3_PID") )); }
idle_ticks() { awk '/^cpu / {print $5; exit}' /proc/stat; }

# run_k6 LABEL SECTION URL RATE SECONDS MERCHANTS [extra json]
run_k6() {
  local label="$1" section="$2" url="$3" rate="$4" secs="$5" merchants="$6" extra="${7:-}"
  local f="$LT_WORK/k6-$label-$section.json"
  k6 run -q --no-usage-report -e URL="$url/v1/payments" -e RATE="$rate" -e DURATION="${secs}s" \
    -e MERCHANTS="$merchants" -e OUT="$f" "$K6_FIXED" >>"$OUT/k6-raw.txt" 2>&1 \
    || { tail -20 "$OUT/k6-raw.txt" >&2; die "k6 failed against $label"; }
  python3 - "$f" "$label" "$section" "$extra" >>"$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r.update(target=sys.argv[2], section=sys.argv[3])
if sys.argv[4]:
    r.update(json.loads(sys.argv[4]))
print(json.dumps(r))
PY
  log "$label @ $rate/s: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("p50 %.2f ms p99 %.2f ms p99.9 %.2f ms failed %.4f dropped %d" % (r["p50_ms"], r["p99_ms"], r["p999_ms"], r["failed_rate"], r["dropped_iterations"]))' "$f")"
}

warm() { wrk -t1 -c"$CONNS" -d"${1}s" -s "$WRK_LUA" "$2/v1/payments" -- 1000 >/dev/null 2>&1 || true; }

# --- throughput and latency: the four targets ---------------------------------
if has throughput || has latency || has cpu; then
  gen_config "$LT_WORK/bench-3x1k.toml" 3 1000
  start_payroute "$LT_WORK/bench-3x1k.toml"; P_MAIN=$PAYROUTE_PID
  start_nginx; start_haproxy; HAPROXY_H1_PID=$HAPROXY_PID
  TARGETS=("direct|http://127.0.0.1:$PORT_MOCK1|$MOCK1_PID" "nginx|http://127.0.0.1:$PORT_NGINX|$NGINX_PID"
           "haproxy|http://127.0.0.1:$PORT_HAPROXY|$HAPROXY_H1_PID" "payroute|http://127.0.0.1:$PORT_PAYROUTE|$P_MAIN")
  if has throughput || has cpu; then
    # The stack's own floor: hyper relaying to the same mocks, nothing else.
    spawn floor "$FLOOR" --listen "127.0.0.1:$PORT_FLOOR" --upstream "$UPSTREAMS" --workers 2; P_FLOOR=$SPAWNED
    wait_port "$PORT_FLOOR" "$P_FLOOR" 10 || { cat "$LT_WORK/floor.log" >&2; die "hyper-floor did not start"; }
    TARGETS+=("hyper-floor|http://127.0.0.1:$PORT_FLOOR|$P_FLOOR")
  fi
  if has throughput; then
    start_haproxy h2; HAPROXY_H2_PID=$HAPROXY_PID
    # The same payroute config but with h2c = true on every channel.
    gen_config "$LT_WORK/bench-3x1k-h2c.toml" 3 1000 --h2c \
      --listen "127.0.0.1:$PORT_PAYROUTE_H2C" --admin "127.0.0.1:$PORT_ADMIN_H2C"
    start_payroute "$LT_WORK/bench-3x1k-h2c.toml" 60 "$PORT_PAYROUTE_H2C"; P_H2C=$PAYROUTE_PID
    TARGETS+=("haproxy-h2|http://127.0.0.1:$PORT_HAPROXY_H2|$HAPROXY_H2_PID"
              "payroute-h2c|http://127.0.0.1:$PORT_PAYROUTE_H2C|$P_H2C")
  fi
  for t in "${TARGETS[@]}"; do IFS='|' read -r name url pid <<<"$t"; warm 1 "$url"; done
fi

if has throughput; then
  log "== throughput: wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s, $ROUNDS round(s), targets interleaved"
  for round in $(seq 1 "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
      IFS='|' read -r name url pid <<<"$t"
      run_wrk "$name" throughput "$url" 1000 "$DURATION" "$pid" "{\"round\": $round}"
    done
  done
fi

# Latency: the four like-for-like targets (HTTP/1.1 to the acquirers).
LAT_TARGETS=()
if has latency; then
  for t in "${TARGETS[@]}"; do case "${t%%|*}" in haproxy-h2|payroute-h2c|hyper-floor) ;; *) LAT_TARGETS+=("$t") ;; esac; done
fi

# run_oha LABEL URL ROUND [SECTION] [ADMIN_PORT]: one fixed-rate oha run (see
# below); replays are counted on the payroute whose admin port is given
# (default: the payroute of the latency section, labelled "payroute").
run_oha() {
  local name="$1" url="$2" round="$3" section="${4:-latency_oha}" admin="${5:-}" r0 r1 n0 n1
  python3 - "$LT_WORK/oha-bodies.jsonl" $((LAT_RATE * LAT_SECS * 50)) <<'PY'
import sys, random, time
run = "h%x%04x" % (int(time.time() * 1000), random.randrange(65536))
cur = ["CNY", "CNY", "CNY", "USD", "EUR"]
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write('{"amount":%d,"currency":"%s","order_id":"%s-%d","note":"oha"}\n' % (
            random.choice([100, 1250, 9900, 25000, 120000, 499]), random.choice(cur), run, i))
PY
  [ -z "$admin" ] && [ "$name" = payroute ] && admin=$PORT_ADMIN
  metric() { [ -n "$admin" ] || { echo 0; return; }; curl -s "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 ~ "^"m {s += $2} END {print s + 0}'; }
  r0=$(metric payroute_replays_total); n0=$(metric payroute_requests_total)
  oha --no-tui --output-format json -z "${LAT_SECS}s" -c 64 -q "$LAT_RATE" --latency-correction -m POST \
    -H "X-Merchant-Id: m-0000001" -T application/json -Z "$LT_WORK/oha-bodies.jsonl" "$url/v1/payments" \
    >"$LT_WORK/oha-$name.json" || die "oha failed against $name"
  r1=$(metric payroute_replays_total); n1=$(metric payroute_requests_total)
  local tag=latency; [ "$section" = latency_oha ] || tag=$section
  cp "$LT_WORK/oha-$name.json" "$OUT/oha-$tag-$name-r$round.json"
  python3 - "$LT_WORK/oha-$name.json" "$name" "$LAT_RATE" "$((r1 - r0))" "$((n1 - n0))" "$round" "$section" >>"$RESULTS" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); p = j["latencyPercentiles"]
codes = j.get("statusCodeDistribution", {})
n = sum(codes.values())
print(json.dumps({"section": sys.argv[7], "target": sys.argv[2], "rate": int(sys.argv[3]), "requests": n,
                  "failed_rate": 1 - (codes.get("200", 0) / n if n else 0), "dropped_iterations": 0,
                  "p50_ms": p["p50"] * 1e3, "p90_ms": p["p90"] * 1e3, "p99_ms": p["p99"] * 1e3,
                  "p999_ms": p["p99.9"] * 1e3, "replayed": int(sys.argv[4]), "routed": int(sys.argv[5]),
                  "round": int(sys.argv[6])}))
PY
  rm -f "$LT_WORK/oha-bodies.jsonl"
  log "oha $name @ $LAT_RATE/s: $(tail -1 "$RESULTS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("p50 %.2f ms p99 %.2f ms p99.9 %.2f ms replayed %d" % (r["p50_ms"], r["p99_ms"], r["p999_ms"], r["replayed"]))')"
}

# Latency: LAT_ROUNDS rounds, the targets interleaved in each, so a drift
# of the shared box lands on all of them; the report takes the median of
# the per-round differences. A p99 from one 10 s run on 2 shared cores
# moves by a millisecond or more between identical runs (BENCHMARKS.md).
# k6 first in each round, then oha when it is installed (LAT_OHA=1 installs
# it, LAT_OHA=0 skips): a lighter generator than k6 (which takes most of a
# core at 2,000 req/s), so less of its own noise in the tails. oha cannot
# build bodies, so it draws them from a file of unique lines (50 per request
# sent), with replacement: ~1% of payroute's requests repeat an order id and
# are replayed. The count is printed.
if has latency; then
  [ "${LAT_OHA:-auto}" = 1 ] && need_oha
  USE_OHA=0
  [ "${LAT_OHA:-auto}" != 0 ] && command -v oha >/dev/null 2>&1 && USE_OHA=1
  [ "$USE_OHA" = 1 ] || log "oha not installed: the latency section runs k6 only (LAT_OHA=1 installs oha)"
  log "== latency: $LAT_RATE req/s for ${LAT_SECS}s per target and generator, $LAT_ROUNDS round(s), targets interleaved"
  for round in $(seq 1 "$LAT_ROUNDS"); do
    for t in "${LAT_TARGETS[@]}"; do
      IFS='|' read -r name url pid <<<"$t"
      run_k6 "$name" latency "$url" "$LAT_RATE" "$LAT_SECS" 1000 "{\"round\": $round}"
    done
    if [ "$USE_OHA" = 1 ]; then
      for t in "${LAT_TARGETS[@]}"; do
        IFS='|' read -r name url pid <<<"$t"
        run_oha "$name" "$url" "$round"
      done
    fi
  done
fi

# --- cpu: CPU per request at a fixed rate (issue 19) -----------------------------
# A closed loop measures how two shared cores are split between generator,
# mocks and proxy as much as the proxy; at a fixed rate every target does
# the same work, and its own CPU (user + system of its process tree, from
# /proc) divided by the requests it answered is its cost per request. oha
# draws bodies from a file of unique lines (20 per request sent), so ~2.5 %
# of payroute's requests repeat an order id and are replayed: counted.
# direct's row is the acquirer's own cost: the floor every proxy adds to.
run_cpu() {
  local name="$1" url="$2" pid="$3" round="$4" admin="${5:-}" c0 c1 k0 k1 r0 r1
  python3 - "$LT_WORK/cpu-bodies.jsonl" $((CPU_RATE * CPU_SECS * 20)) <<'PY'
import sys, random, time
run = "c%x%04x" % (int(time.time() * 1000), random.randrange(65536))
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write('{"amount":%d,"currency":"CNY","order_id":"%s-%d","note":"cpu"}\n' % (
            random.choice([100, 1250, 9900, 25000, 499]), run, i))
PY
  metric() { [ -n "$admin" ] || { echo 0; return; }; curl -s "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 ~ "^"m {s += $2} END {print s + 0}'; }
  r0=$(metric payroute_replays_total)
  c0=$(cpu_ticks "$pid"); k0=$(sys_ticks "$pid")
  oha --no-tui --output-format json -z "${CPU_SECS}s" -c "$CPU_CONNS" -q "$CPU_RATE" -m POST \
    -H "X-Merchant-Id: m-0000001" -T application/json -Z "$LT_WORK/cpu-bodies.jsonl" "$url/v1/payments" \
    >"$LT_WORK/cpu-$name.json" || die "oha failed against $name"
  c1=$(cpu_ticks "$pid"); k1=$(sys_ticks "$pid")
  r1=$(metric payroute_replays_total)
  python3 - "$LT_WORK/cpu-$name.json" "$name" "$CPU_RATE" "$CPU_SECS" "$((c1 - c0))" "$((k1 - k0))" "$CLK_TCK" "$((r1 - r0))" "$round" >>"$RESULTS" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); codes = j.get("statusCodeDistribution", {})
n = sum(codes.values()); ok = codes.get("200", 0); tck = int(sys.argv[7])
cpu, sys_ = int(sys.argv[5]) / tck, int(sys.argv[6]) / tck
print(json.dumps({"section": "cpu", "target": sys.argv[2], "rate": int(sys.argv[3]), "requests": n, "ok": ok,
                  "failed_rate": 1 - (ok / n if n else 0), "achieved_rps": n / float(sys.argv[4]),
                  "cpu_us_per_req": cpu * 1e6 / max(n, 1), "sys_us_per_req": sys_ * 1e6 / max(n, 1),
                  "p99_ms": j["latencyPercentiles"]["p99"] * 1e3, "replayed": int(sys.argv[8]), "round": int(sys.argv[9])}))
PY
  rm -f "$LT_WORK/cpu-bodies.jsonl"
  log "cpu $name @ $CPU_RATE/s: $(tail -1 "$RESULTS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%d answered (%.0f/s), %.1f us CPU per request (%.1f system), p99 %.2f ms, replayed %d" % (r["requests"], r["achieved_rps"], r["cpu_us_per_req"], r["sys_us_per_req"], r["p99_ms"], r["replayed"]))')"
}

if has cpu; then
  CPU_TARGETS=()
  for t in "${TARGETS[@]}"; do
    case "${t%%|*}" in haproxy-h2|payroute-h2c) ;; payroute) CPU_TARGETS+=("$t|$PORT_ADMIN") ;; *) CPU_TARGETS+=("$t|") ;; esac
  done
  if [ -n "${BASELINE:-}" ]; then
    mkdir -p "$LT_WORK/cpu-nojournal"
    gen_config "$LT_WORK/cpu-nojournal/cpu-nojournal.toml" 3 1000 --listen "127.0.0.1:$PORT_J_OFF" --admin "127.0.0.1:$PORT_ADMIN_J_OFF"
    start_payroute "$LT_WORK/cpu-nojournal/cpu-nojournal.toml" 60 "$PORT_J_OFF" "$BASELINE"; P_CPU_OFF=$PAYROUTE_PID
    warm 1 "http://127.0.0.1:$PORT_J_OFF"
    CPU_TARGETS+=("payroute-nojournal|http://127.0.0.1:$PORT_J_OFF|$P_CPU_OFF|$PORT_ADMIN_J_OFF")
  fi
  log "== cpu: $CPU_RATE req/s for ${CPU_SECS}s per target (oha, $CPU_CONNS connections), $CPU_ROUNDS round(s), targets interleaved"
  for round in $(seq 1 "$CPU_ROUNDS"); do
    for t in "${CPU_TARGETS[@]}"; do
      IFS='|' read -r name url pid admin <<<"$t"
      run_cpu "$name" "$url" "$pid" "$round" "$admin"
    done
  done
  [ -n "${P_CPU_OFF:-}" ] && stop_pid "$P_CPU_OFF"
fi

if has throughput || has latency || has cpu; then
  stop_pid "$P_MAIN"
  [ -n "${P_FLOOR:-}" ] && stop_pid "$P_FLOOR"
  [ -n "${NGINX_PID:-}" ] && stop_pid "$NGINX_PID"
  [ -n "${HAPROXY_H1_PID:-}" ] && stop_pid "$HAPROXY_H1_PID"
  [ -n "${HAPROXY_H2_PID:-}" ] && stop_pid "$HAPROXY_H2_PID"
  [ -n "${P_H2C:-}" ] && stop_pid "$P_H2C"
fi

# --- journal: its cost on the JSON payment path (issue 13) ------------------------
# Two payroutes on one config (3 channels, 1,000 merchants, zero-latency
# mocks that always pay), each in a directory of its own: "journal" is this
# build, which journals every payment to payroute.db (SQLite, WAL) beside its
# config (the default: nothing configured); "baseline" is BASELINE, a build
# without the journal. Both run all the time; each wrk run and each
# fixed-rate run goes to one of them, alternating, and which goes first flips
# every round, so the box's drift and a run's after-effects land on both.
if has journal; then
  for j in on off; do mkdir -p "$LT_WORK/journal-$j"; done
  gen_config "$LT_WORK/journal-on/journal-on.toml" 3 1000 --listen "127.0.0.1:$PORT_J_ON" --admin "127.0.0.1:$PORT_ADMIN_J_ON"
  gen_config "$LT_WORK/journal-off/journal-off.toml" 3 1000 --listen "127.0.0.1:$PORT_J_OFF" --admin "127.0.0.1:$PORT_ADMIN_J_OFF"
  start_payroute "$LT_WORK/journal-on/journal-on.toml" 60 "$PORT_J_ON"; P_J_ON=$PAYROUTE_PID
  start_payroute "$LT_WORK/journal-off/journal-off.toml" 60 "$PORT_J_OFF" "$BASELINE"; P_J_OFF=$PAYROUTE_PID
  [ -f "$LT_WORK/journal-on/payroute.db" ] || die "this build wrote no payroute.db beside its config: is the journal wired?"
  [ -f "$LT_WORK/journal-off/payroute.db" ] && die "BASELINE wrote a payroute.db: it is not a build without the journal"
  J_TARGETS=("journal|http://127.0.0.1:$PORT_J_ON|$P_J_ON|$PORT_ADMIN_J_ON" "baseline|http://127.0.0.1:$PORT_J_OFF|$P_J_OFF|$PORT_ADMIN_J_OFF")
  # j_order ROUND: the targets, first one first in odd rounds, reversed in even ones.
  j_order() { if [ $(($1 % 2)) = 1 ]; then printf '%s\n' "${J_TARGETS[@]}"; else printf '%s\n' "${J_TARGETS[1]}" "${J_TARGETS[0]}"; fi; }
  for t in "${J_TARGETS[@]}"; do IFS='|' read -r name url pid admin <<<"$t"; warm 2 "$url"; done
  log "== journal: wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s, $ROUNDS round(s), journal on (this build) and off ($BASELINE) interleaved"
  for round in $(seq 1 "$ROUNDS"); do
    while IFS='|' read -r name url pid admin; do
      run_wrk "$name" journal "$url" 1000 "$DURATION" "$pid" "{\"round\": $round}"
    done < <(j_order "$round")
  done
  [ "${LAT_OHA:-auto}" = 1 ] && need_oha
  J_OHA=0
  [ "${LAT_OHA:-auto}" != 0 ] && command -v oha >/dev/null 2>&1 && J_OHA=1
  log "== journal: $LAT_RATE req/s for ${LAT_SECS}s per target (k6$([ "$J_OHA" = 1 ] && echo ', then oha')), $LAT_ROUNDS round(s), interleaved"
  for round in $(seq 1 "$LAT_ROUNDS"); do
    while IFS='|' read -r name url pid admin; do
      run_k6 "$name" journal_latency "$url" "$LAT_RATE" "$LAT_SECS" 1000 "{\"round\": $round}"
    done < <(j_order "$round")
    if [ "$J_OHA" = 1 ]; then
      while IFS='|' read -r name url pid admin; do
        run_oha "$name" "$url" "$round" journal_latency_oha "$admin"
      done < <(j_order "$round")
    fi
  done
  J_PAYMENTS=$(curl -s "http://127.0.0.1:$PORT_ADMIN_J_ON/metrics" | awk '$1 ~ /^payroute_requests_total/ {s += $2} END {print s + 0}')
  J_DB_KB=$(du -ck "$LT_WORK"/journal-on/payroute.db* | awk 'END {print $1}')
  python3 - "$J_PAYMENTS" "$J_DB_KB" "$(hwm_kb "$P_J_ON")" "$(hwm_kb "$P_J_OFF")" >>"$RESULTS" <<'PY'
import json, sys
print(json.dumps({"section": "journal_size", "target": "journal", "payments": int(sys.argv[1]), "db_kb": int(sys.argv[2]),
                  "hwm_kb": int(sys.argv[3]), "baseline_hwm_kb": int(sys.argv[4])}))
PY
  log "journal: $J_PAYMENTS payments, payroute.db + WAL $((J_DB_KB / 1024)) MiB"
  stop_pid "$P_J_ON"; stop_pid "$P_J_OFF"
fi

# --- memory and reload: a 100,000-merchant config ---------------------------
if has memory || has reload; then
  CFG_BIG="$LT_WORK/bench-3x${MEM_MERCHANTS}.toml"
  gen_config "$CFG_BIG" 3 "$MEM_MERCHANTS"
  log "config with $MEM_MERCHANTS merchants: $(du -h "$CFG_BIG" | cut -f1)"
  start_payroute "$CFG_BIG"; P_BIG=$PAYROUTE_PID
  RSS_IDLE=$(rss_kb "$P_BIG")
  log "payroute idle with $MEM_MERCHANTS merchants: RSS $((RSS_IDLE / 1024)) MiB"
fi

if has memory; then
  log "== memory: $MEM_ACTIVE of $MEM_MERCHANTS merchants active for ${MEM_SECS}s"
  run_wrk payroute memory "http://127.0.0.1:$PORT_PAYROUTE" "$MEM_MERCHANTS" "$MEM_SECS" "$P_BIG" \
    "{\"merchants\": $MEM_MERCHANTS, \"active\": $MEM_ACTIVE, \"rss_idle_kb\": $RSS_IDLE}" "$MEM_ACTIVE"
  python3 - "$RESULTS" "$(hwm_kb "$P_BIG")" "$(rss_kb "$P_BIG")" "$(curl -s "http://127.0.0.1:$PORT_ADMIN/metrics" | awk '/^payroute_rate_limiter_keys/ {print $2}')" >>"$RESULTS" <<'PY'
import json, sys
print(json.dumps({"section": "memory_peak", "target": "payroute", "hwm_kb": int(sys.argv[2]), "rss_kb": int(sys.argv[3]),
                  "rate_limiter_keys": sys.argv[4] or None}))
PY
fi

if has reload; then
  log "== reload: $MEM_MERCHANTS-merchant file under $RELOAD_RATE req/s, $RELOAD_ROUNDS round(s) of steady then reloading"
  # Rounds of (steady, during reloads), each ratio taken within its round:
  # a ratio of two p99s of a few ms from single runs swung 1.1-3x on this
  # box between identical runs; the report takes the median of the rounds.
  for round in $(seq 1 "$RELOAD_ROUNDS"); do
    run_k6 payroute reload_steady "http://127.0.0.1:$PORT_PAYROUTE" "$RELOAD_RATE" "$RELOAD_SECS" "$MEM_ACTIVE" "{\"round\": $round}"
    # The same load again while the file is reloaded once a second.
    : >"$LT_WORK/reloads.txt"
    (
      sleep 1
      end=$((SECONDS + RELOAD_SECS - 2))
      while :; do
        curl -s -o "$LT_WORK/reload-answer.json" -w '%{http_code} %{time_total}\n' -X POST "http://127.0.0.1:$PORT_ADMIN/-/reload" >>"$LT_WORK/reloads.txt"
        [ $SECONDS -lt $end ] || break
        sleep 1
      done
    ) &
    RELOADER=$!
    LT_PIDS+=("$RELOADER")
    run_k6 payroute reload_during "http://127.0.0.1:$PORT_PAYROUTE" "$RELOAD_RATE" "$RELOAD_SECS" "$MEM_ACTIVE" "{\"round\": $round}"
    wait "$RELOADER" || true
    python3 - "$LT_WORK/reloads.txt" "$MEM_MERCHANTS" "$round" >>"$RESULTS" <<'PY'
import json, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
times = sorted(float(t) * 1000 for c, t in rows)
print(json.dumps({"section": "reload_times", "target": "payroute", "merchants": int(sys.argv[2]),
                  "reloads": len(rows), "http_codes": sorted({c for c, _ in rows}),
                  "reload_ms": times, "round": int(sys.argv[3])}))
PY
    log "reload times (HTTP code, seconds): $(tr '\n' ' ' <"$LT_WORK/reloads.txt")"
  done
fi

if has memory || has reload; then stop_pid "$P_BIG"; fi

# --- scale: channels and merchants ---------------------------------------------
if has scale; then
  log "== scale: wrk -t$WRK_THREADS -c$CONNS -d${SCALE_SECS}s per point, 1,000 active merchants, $SCALE_ROUNDS round(s)"
  # Every point in every round, points interleaved within a round (drift on
  # a shared box then hits all points alike); the report takes the median.
  scale_point() {
    local ch="$1" m="$2" round="$3" cfg="$LT_WORK/scale-${1}x${2}.toml"
    [ -f "$cfg" ] || gen_config "$cfg" "$ch" "$m"
    local t0=$SECONDS
    start_payroute "$cfg" 300
    local startup=$((SECONDS - t0))
    local idle
    idle=$(rss_kb "$PAYROUTE_PID")
    warm 1 "http://127.0.0.1:$PORT_PAYROUTE"
    # The 1,000 active merchants are spread over the configured id range.
    run_wrk payroute scale "http://127.0.0.1:$PORT_PAYROUTE" "$m" "$SCALE_SECS" "$PAYROUTE_PID" \
      "{\"channels\": $ch, \"merchants\": $m, \"startup_s\": $startup, \"rss_idle_kb\": $idle, \"round\": $round}" 1000
    stop_pid "$PAYROUTE_PID"
  }
  for round in $(seq 1 "$SCALE_ROUNDS"); do
    for ch in $SCALE_CHANNELS; do scale_point "$ch" 1000 "$round"; done
    for m in $SCALE_MERCHANTS; do [ "$m" = 1000 ] && continue; scale_point 3 "$m" "$round"; done
  done
  rm -f "$LT_WORK"/scale-*.toml
fi

# --- report ------------------------------------------------------------------
REPORT_ARGS=()
[ "$SMOKE" = 1 ] && REPORT_ARGS+=(--smoke-check)
python3 "$LT_ROOT/loadtest/report.py" "$RESULTS" "${REPORT_ARGS[@]}" | tee "$OUT/report.txt"
[ "${PIPESTATUS[0]}" = 0 ] || die "report: a check failed (see above)"
if has scale && [ "$SMOKE" = 0 ]; then
  python3 "$LT_ROOT/loadtest/plot_scale.py" "$RESULTS" "$OUT/scale.png" || log "no chart (matplotlib missing? pip install matplotlib)"
fi
log "results in $OUT"
