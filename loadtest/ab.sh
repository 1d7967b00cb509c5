#!/usr/bin/env bash
# ab.sh: two or more payroute builds against each other and nginx, in one run.
#
#   loadtest/ab.sh OLD_BINARY NEW_BINARY [MORE...]     # e.g. a saved copy vs target/release/payroute
#   H2C=1 loadtest/ab.sh BIN...                        # channels with h2c = true
#
# For a before -> after claim about one change: the same config (3 channels,
# 1,000 merchants, the bench's), the same mock acquirers, wrk -t2 -c64 with
# unique payments, targets interleaved for ROUNDS rounds of D seconds; prints
# req/s and each target's own CPU per request (user+system from /proc).
# nginx (proxy_pass, upstream keepalive) runs beside them as the yardstick,
# so a drift of the shared box shows in its column too.
# SPLIT=1 prints the CPU per request as user + system (from /proc) as well.
# Environment: ROUNDS (3), D (5), SPLIT (0), LT_PORT_BASE (18000). Loopback only.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] || die "usage: loadtest/ab.sh BINARY... (see the header)"
ROUNDS=${ROUNDS:-3}; D=${D:-5}
lt_init ab
need_python; need_wrk; need_nginx; need_procps
build_release
WRK_LUA="$LT_ROOT/loadtest/wrk/payments.lua"

for port in "$PORT_MOCK1" "$PORT_MOCK2" "$PORT_MOCK3"; do start_mock "$port"; done

start_nginx
TARGETS=("nginx|$PORT_NGINX|$NGINX_PID")

i=0
for bin in "$@"; do
  [ -x "$bin" ] || die "$bin is not an executable"
  port=$((PORT_PAYROUTE + 200 + i)); admin=$((PORT_ADMIN + 200 + i))
  extra=(); [ "${H2C:-0}" = 1 ] && extra=(--h2c)
  gen_config "$LT_WORK/ab-$i.toml" 3 1000 --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" "${extra[@]}"
  start_payroute "$LT_WORK/ab-$i.toml" 60 "$port" "$bin"
  TARGETS+=("b$i|$port|$PAYROUTE_PID")
  log "b$i = $bin"
  i=$((i + 1))
done

for t in "${TARGETS[@]}"; do
  IFS='|' read -r _ port _ <<<"$t"
  wrk -t1 -c64 -d1s -s "$WRK_LUA" "http://127.0.0.1:$port/v1/payments" -- 1000 >/dev/null 2>&1 || true
done
for round in $(seq 1 "$ROUNDS"); do
  line="round $round:"
  for t in "${TARGETS[@]}"; do
    IFS='|' read -r name port pid <<<"$t"
    u0=$(sum_tree "$pid" stat '{print $14}'); s0=$(sum_tree "$pid" stat '{print $15}')
    out=$(wrk -t2 -c64 -d"${D}s" --timeout 5s -s "$WRK_LUA" "http://127.0.0.1:$port/v1/payments" -- 1000 2>&1) \
      || die "wrk failed against $name: $out"
    u1=$(sum_tree "$pid" stat '{print $14}'); s1=$(sum_tree "$pid" stat '{print $15}')
    line+=" $(python3 - "$(echo "$out" | sed -n 's/^WRKJSON //p')" "$name" "$((u1 - u0))" "$((s1 - s0))" "$CLK_TCK" "${SPLIT:-0}" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
per = lambda ticks: int(ticks) / int(sys.argv[5]) * 1e6 / max(1, r["requests"])
user, system = per(sys.argv[3]), per(sys.argv[4])
split = " = %.1f user + %.1f sys" % (user, system) if sys.argv[6] == "1" else ""
errors = sum(v for k, v in r.items() if k.startswith("errors_"))
print("%s=%.0f/s(%.1fus/req%s%s)" % (sys.argv[2], r["rps"], user + system, split, ", %d errors" % errors if errors else ""))
PY
)"
  done
  echo "$line"
done
