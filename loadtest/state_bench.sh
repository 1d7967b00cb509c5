#!/usr/bin/env bash
# state_bench.sh: the Redis state backend against the memory one, same run,
# same load generator (wrk, unique payments), same concurrency.
#
#   loadtest/state_bench.sh            # ROUNDS x DURATION per backend, interleaved
#   loadtest/state_bench.sh --smoke    # seconds, for CI
#
# Both payroute processes route 3 channels and 1,000 merchants to zero-latency
# mock acquirers; the only difference is `[state] backend`. With Redis, each
# payment makes two Redis round trips (admit before routing, settle after the
# answer), each one Lua script. Uses the Redis on 127.0.0.1:6379 (started if
# nothing answers) under a random key_prefix. Loopback only; every process
# started is stopped on exit. Environment: DURATION (8), ROUNDS (3), CONNS (64).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
DURATION=${DURATION:-8}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-64}
[ "$SMOKE" = 1 ] && { DURATION=2; ROUNDS=1; CONNS=8; }

lt_init state-bench
need_wrk
build_release
if ! port_open 6379; then
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 1 50); do port_open 6379 && break; sleep 0.1; done
fi
port_free_or_die "$PORT_PAYROUTE" "$PORT_ADMIN" "$PORT_MOCK1" "$PORT_MOCK2" "$PORT_MOCK3"
for p in "$PORT_MOCK1" "$PORT_MOCK2" "$PORT_MOCK3"; do start_mock "$p"; done

gen_config "$LT_WORK/memory.toml" 3 1000
gen_config "$LT_WORK/redis.toml" 3 1000
prefix="payroute-bench-$RANDOM$RANDOM:"
# gen_config writes a [state] table: switch its backend.
python3 - "$LT_WORK/redis.toml" "$prefix" <<'PY'
import re, sys
path, prefix = sys.argv[1], sys.argv[2]
text = open(path).read()
state = f'[state]\nbackend = "redis"\nkey_prefix = "{prefix}"\nredis_url = "redis://127.0.0.1:6379/0"\n'
if re.search(r'^\[state\]\n', text, re.M):
    text = re.sub(r'^\[state\]\n(?:[^\[\n].*\n)*', state + '\n', text, count=1, flags=re.M)
else:
    text = state + '\n' + text
open(path, 'w').write(text)
PY

run() { # run BACKEND: one wrk run against a fresh payroute on that backend
  start_payroute "$LT_WORK/$1.toml"
  wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$LT_ROOT/loadtest/wrk/payments.lua" \
    "http://127.0.0.1:$PORT_PAYROUTE/v1/payments" -- 1000 | grep '^WRKJSON' | sed "s/^WRKJSON /$1 /"
  stop_pid "$PAYROUTE_PID"
}

OUT_FILE="$LT_WORK/state.txt"
for r in $(seq 1 "$ROUNDS"); do
  run memory >>"$OUT_FILE"
  run redis >>"$OUT_FILE"
done
python3 - "$OUT_FILE" "$SMOKE" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, blob = line.split(' ', 1)
    rows.setdefault(name, []).append(json.loads(blob))
print(f"{'backend':8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'non-2xx':>8} rounds")
med = {}
for name in ("memory", "redis"):
    rs = rows.get(name, [])
    if not rs:
        sys.exit(f"no result for {name}")
    m = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_us", "p99_us", "p999_us")}
    bad = sum(r["errors_status"] + r["errors_connect"] + r["errors_timeout"] for r in rs)
    med[name] = m
    print(f"{name:8} {m['rps']:8.0f} {m['p50_us']/1000:7.2f} {m['p99_us']/1000:7.2f} {m['p999_us']/1000:8.2f} {bad:8d} "
          + "/".join(f"{r['rps']:.0f}" for r in rs))
    if bad:
        sys.exit(f"{name}: {bad} failed requests")
print(f"redis/memory: throughput {med['redis']['rps']/med['memory']['rps']:.2f}x, "
      f"p99 {med['redis']['p99_us']/max(med['memory']['p99_us'],1):.2f}x")
PY
