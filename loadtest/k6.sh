#!/usr/bin/env bash
# k6.sh: the realistic scenario of loadtest/k6/payments.js against a real
# payroute, with one acquirer degrading mid-run.
#
#   loadtest/k6.sh            # about 100 s: ramp, steady, spike, degrade
#   loadtest/k6.sh --smoke    # about 15 s, tiny rates (CI)
#
# Starts three mock acquirers (5-30 ms latency, 1-5% issuer declines as 402; the first is the best),
# payroute in front of them (3 channels, 1,000 merchants on the default
# 100/s rate limit), runs k6; when the `degrade` scenario is a quarter in, the
# preferred (cheapest) acquirer is restarted failing 80% of payments with 503.
# payroute must fail those over (and eject the channel) so that the k6
# thresholds — under 1% failed requests, p95/p99 bounds — still hold: k6
# exits non-zero, and so does this script, if any threshold is missed.
# Env: RATE, SPIKE_RATE, RAMP_S, STEADY_S, SPIKE_S, DEGRADE_S (see payments.js),
# LT_PORT_BASE (18000), LT_KEEP=1 keeps logs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
if [ "$SMOKE" = 1 ]; then
  export RATE=${RATE:-40} SPIKE_RATE=${SPIKE_RATE:-120} RAMP_S=${RAMP_S:-2} STEADY_S=${STEADY_S:-2} SPIKE_S=${SPIKE_S:-2} DEGRADE_S=${DEGRADE_S:-4}
  # CI asserts nothing about timing: only the error-rate thresholds bind.
  export P95_MS=${P95_MS:-600000} P99_MS=${P99_MS:-600000}
else
  export RATE=${RATE:-300} SPIKE_RATE=${SPIKE_RATE:-900} RAMP_S=${RAMP_S:-20} STEADY_S=${STEADY_S:-30} SPIKE_S=${SPIKE_S:-15} DEGRADE_S=${DEGRADE_S:-30}
fi

lt_init k6
need_python; need_k6
build_release
port_free_or_die "$PORT_PAYROUTE" "$PORT_ADMIN" "$PORT_MOCK1" "$PORT_MOCK2" "$PORT_MOCK3"

# ch-00 (cheapest, fastest) is the one that will degrade.
start_mock "$PORT_MOCK1" --latency-ms 5 --jitter-ms 5 --success-rate 0.99 --status 402; DEGRADING=$SPAWNED
start_mock "$PORT_MOCK2" --latency-ms 10 --jitter-ms 10 --success-rate 0.96 --status 402
start_mock "$PORT_MOCK3" --latency-ms 20 --jitter-ms 10 --success-rate 0.95 --status 402
gen_config "$LT_WORK/routes.toml" 3 1000 --rate 100 --burst 20 --timeout-ms 1000
start_payroute "$LT_WORK/routes.toml"

DEGRADE_AT=$((RAMP_S + STEADY_S + SPIKE_S + 4 + DEGRADE_S / 4))
(
  sleep "$DEGRADE_AT"
  echo "[$(date +%H:%M:%S)] degrading 127.0.0.1:$PORT_MOCK1 (ch-00): restarting it with --success-rate 0.2 (503)" >&2
  kill -TERM "$DEGRADING" 2>/dev/null || true
  while kill -0 "$DEGRADING" 2>/dev/null; do sleep 0.05; done
  exec "$MOCK" --listen "127.0.0.1:$PORT_MOCK1" --latency-ms 5 --jitter-ms 5 --success-rate 0.2 >"$LT_WORK/mock-degraded.log" 2>&1
) &
LT_PIDS+=("$!")   # the subshell becomes the degraded mock (exec): cleanup stops it

log "k6: ramp ${RAMP_S}s, steady ${STEADY_S}s at ${RATE}/s, spike ${SPIKE_S}s at ${SPIKE_RATE}/s, degrade ${DEGRADE_S}s (acquirer fails from +${DEGRADE_AT}s)"
set +e
k6 run --no-usage-report -q -e BASE_URL="http://127.0.0.1:$PORT_PAYROUTE" -e MERCHANTS=1000 \
  "$LT_ROOT/loadtest/k6/payments.js"
rc=$?
set -e
# What payroute saw: attempts per channel and result, failovers, ejections.
log "payroute metrics after the run:"
curl -s "http://127.0.0.1:$PORT_ADMIN/metrics" | grep -E '^payroute_(attempts_total|failovers_total|requests_total)' | grep -v ' 0$' >&2 || true
curl -s "http://127.0.0.1:$PORT_ADMIN/-/channels" >&2 || true
echo >&2
[ "$rc" = 0 ] || die "k6 thresholds failed (exit $rc)"
log "k6 thresholds held"
