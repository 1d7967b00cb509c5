#!/usr/bin/env bash
# rate-pg.sh [VARIANT...]: CPU per payment of payroute's own process at a fixed rate with
# the journal on SQLite (embedded: its b-tree work on the proxy's cores),
# on PostgreSQL (the fleet design: the b-tree work in the database server,
# whose processes are measured apart) and without a journal (BASELINE, a
# build before it). All alive at once, rounds interleaved; oha, unique
# payments (as rate.sh). PostgreSQL at PG_URL's server (a database of its own,
# dropped and created here). VARIANT: "name|ENV=v ...|binary|sqlite, postgres[?params] or none";
# default: sqlite, postgres (this build) and nojournal (BASELINE).
set -euo pipefail
LT_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"; cd "$LT_ROOT"; source loadtest/lib.sh
lt_init ratepg
PAYROUTE=${PAYROUTE:-$LT_ROOT/target/release/payroute}; MOCK=$LT_ROOT/target/release/mock-acquirer
ROUNDS=${ROUNDS:-3}; SECS=${SECS:-8}; RATE=${RATE:-4000}; DB=${DB:-payroute_ratepg}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
NAMES=(); URLS=(); PIDS=(); i=0
[ $# -gt 0 ] || set -- "sqlite||$PAYROUTE|sqlite" "postgres||$PAYROUTE|postgres" "nojournal||$BASELINE|none"
for v in "$@"; do
  IFS='|' read -r name envs bin journal <<<"$v"
  port=$((PORT_PAYROUTE + 200 + i)); admin=$((PORT_PAYROUTE + 300 + i)); mkdir -p "$LT_WORK/$name"
  gen_config "$LT_WORK/$name/$name.toml" 3 1000 --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin"
  if [ "${journal%%\?*}" = postgres ]; then
    params=""; [ "$journal" = postgres ] || params="?${journal#*\?}"
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS ${DB}_$i" -c "CREATE DATABASE ${DB}_$i" >/dev/null
    printf '\n[journal]\nbackend = "postgres"\nurl = "%s/%s_%s%s"\n' "$PG" "$DB" "$i" "$params" >> "$LT_WORK/$name/$name.toml"
  fi
  # shellcheck disable=SC2086
  spawn "p-$name" env $envs "$bin" serve --config "$LT_WORK/$name/$name.toml"
  wait_port "$port" "$SPAWNED" 60 || die "$name did not start"
  NAMES+=("$name"); URLS+=("http://127.0.0.1:$port"); PIDS+=("$SPAWNED"); i=$((i+1))
done
pg_ticks() { local t=0 p; for p in $(pgrep -x postgres); do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
for r in $(seq 1 "$ROUNDS"); do
  for j in "${!NAMES[@]}"; do
    k=$(( (j + r) % ${#NAMES[@]} )); name=${NAMES[$k]}; url=${URLS[$k]}; pid=${PIDS[$k]}
    python3 -c "
with open('$LT_WORK/bodies', 'w') as f:
    for i in range($RATE * $SECS * 20):
        f.write('{\"amount\":1250,\"currency\":\"CNY\",\"order_id\":\"r$r-$name-%d\"}\n' % i)"
    c0=$(cpu_ticks "$pid"); g0=$(pg_ticks)
    oha --no-tui --output-format json -z "${SECS}s" -c 64 -q "$RATE" -m POST -H "X-Merchant-Id: m-0000001" \
      -T application/json -Z "$LT_WORK/bodies" "$url/v1/payments" > "$LT_WORK/o.json" 2>/dev/null || true
    c1=$(cpu_ticks "$pid"); g1=$(pg_ticks)
    python3 - "$LT_WORK/o.json" "$name" "$r" "$((c1 - c0))" "$((g1 - g0))" <<'PY'
import json, sys, os
d = json.load(open(sys.argv[1])); tck = os.sysconf("SC_CLK_TCK")
n = sum(d["statusCodeDistribution"].values()); ok = d["statusCodeDistribution"].get("200", 0)
lat = d["latencyPercentiles"]; per = lambda t: int(t) / tck * 1e6 / max(n, 1)
print("round %s %-10s answered=%d ok=%d payroute_cpu_us=%.1f postgres_cpu_us=%.1f p50ms=%.2f p99ms=%.2f" % (
    sys.argv[3], sys.argv[2], n, ok, per(sys.argv[4]), per(sys.argv[5]), lat["p50"] * 1e3, lat["p99"] * 1e3))
PY
  done
done
