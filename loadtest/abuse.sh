#!/usr/bin/env bash
# abuse.sh: real payments while 2,000 connections dribble requests a byte a
# second (issue 18, part 3).
#
#   LT_PORT_BASE=27000 bash loadtest/abuse.sh [--smoke]
#
# One payroute (release build, 3 zero-latency mock acquirers, max_connections
# 10000) serves k6 at RATE payments a second for SECS seconds per round, in
# ROUNDS rounds of three kinds, interleaved: nothing else; CONNS
# connections each sending a request head one byte a second (slowloris,
# reconnecting when cut); CONNS connections each sending a valid head and
# then its body one byte a second. Per round: k6's p50/p99/max and failed
# share, payroute's peak RSS, and how many of the slow connections payroute
# cut. The slow ones must be cut (header_timeout_ms, body_timeout_ms: 10 s),
# every real payment must succeed, and RSS must stay bounded.
#
# Results: $OUT (default loadtest/results/abuse/): results.jsonl, summary.txt.
# --smoke: seconds-long, numbers meaningless. Environment: RATE (200), SECS
# (30), ROUNDS (2), CONNS (2000), LT_PORT_BASE (18000), OUT, CARGO_TARGET_DIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

smoke_args "$@"
if [ "$SMOKE" = 1 ]; then
  RATE=${RATE:-50}; SECS=${SECS:-3}; ROUNDS=${ROUNDS:-1}; CONNS=${CONNS:-100}
  OUT=${OUT:-"$(mktemp -d /tmp/payroute-abuse-smoke.XXXXXX)"}
else
  RATE=${RATE:-200}; SECS=${SECS:-30}; ROUNDS=${ROUNDS:-2}; CONNS=${CONNS:-2000}
  OUT=${OUT:-"$LT_ROOT/loadtest/results/abuse"}
fi

lt_init abuse
need_python; need_curl; need_procps; need_k6
build_release
# Each slow connection is a file descriptor here and one in payroute.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $((CONNS + 512)) ] || die "open-file limit $(ulimit -n) is too low for $CONNS connections"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
K6_FIXED="$LT_ROOT/loadtest/k6/fixed_rate.js"
port_free_or_die "$PORT_PAYROUTE" "$PORT_ADMIN" "$PORT_MOCK1" "$PORT_MOCK2" "$PORT_MOCK3"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu: $(cpu_model)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "payroute: $(payroute_rev)"
  echo "settings: smoke=$SMOKE rate=$RATE/s secs=$SECS rounds=$ROUNDS conns=$CONNS"
} | tee "$OUT/machine.txt"

start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
gen_config "$LT_WORK/routes.toml" 3 1000
sed -i 's/^\[server\]$/[server]\nmax_connections = 10000/' "$LT_WORK/routes.toml"
start_payroute "$LT_WORK/routes.toml"
k6 run -q --no-usage-report -e URL="http://127.0.0.1:$PORT_PAYROUTE/v1/payments" -e RATE="$RATE" -e DURATION=3s \
  -e MERCHANTS=1000 -e OUT="$LT_WORK/warm.json" "$K6_FIXED" >/dev/null 2>&1 || die "k6 warm-up failed"

for round in $(seq 1 "$ROUNDS"); do
  for kind in none head body; do
    slow=""
    if [ "$kind" != none ]; then
      flag=""; [ "$kind" = body ] && flag="--body"
      python3 "$LT_ROOT/loadtest/slowloris.py" --addr "127.0.0.1:$PORT_PAYROUTE" --conns "$CONNS" \
        --seconds "$((SECS + 5))" $flag >"$LT_WORK/slow.out" &
      slow=$!
      sleep 3 # the slow connections open first
    fi
    f="$LT_WORK/k6-$round-$kind.json"
    peak=0
    ( while sleep 0.5; do rss_kb "$PAYROUTE_PID"; done ) >"$LT_WORK/rss.txt" &
    sampler=$!
    k6 run -q --no-usage-report -e URL="http://127.0.0.1:$PORT_PAYROUTE/v1/payments" -e RATE="$RATE" \
      -e DURATION="${SECS}s" -e MERCHANTS=1000 -e OUT="$f" "$K6_FIXED" >>"$LT_WORK/k6.log" 2>&1 \
      || { tail -20 "$LT_WORK/k6.log" >&2; die "k6 failed (round $round, $kind)"; }
    kill "$sampler" 2>/dev/null || true
    peak=$(sort -n "$LT_WORK/rss.txt" | tail -1)
    cut=0; open=0
    if [ -n "$slow" ]; then
      wait "$slow" || die "slowloris.py failed"
      cut=$(sed -n 's/.*cut=\([0-9]*\).*/\1/p' "$LT_WORK/slow.out")
      open=$(sed -n 's/.*max_open=\([0-9]*\).*/\1/p' "$LT_WORK/slow.out")
    fi
    line=$(python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"round": int(sys.argv[2]), "kind": sys.argv[3], "rate": int(sys.argv[4]), "requests": r["requests"],
                  "failed_rate": r["failed_rate"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "max_ms": r["max_ms"],
                  "peak_rss_kib": int(sys.argv[5] or 0), "slow_cut": int(sys.argv[6] or 0), "slow_max_open": int(sys.argv[7] or 0)}))' \
      "$f" "$round" "$kind" "$RATE" "$peak" "$cut" "$open")
    echo "$line" >>"$RESULTS"; log "round $round, $kind: $line"
  done
done

python3 - "$RESULTS" "$CONNS" <<'PY' | tee "$OUT/summary.txt"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
conns = int(sys.argv[2])
bad = []
for kind, what in (("none", "no attack"), ("head", f"{conns} heads a byte a second"), ("body", f"{conns} bodies a byte a second")):
    rs = [r for r in rows if r["kind"] == kind]
    p99 = statistics.median(r["p99_ms"] for r in rs)
    print(f"{what:<34} p50 {statistics.median(r['p50_ms'] for r in rs):7.2f} ms  p99 {p99:7.2f} ms  "
          f"failed {max(r['failed_rate'] for r in rs):.4f}  peak RSS {max(r['peak_rss_kib'] for r in rs) / 1024:6.1f} MiB  "
          f"slow connections cut {sum(r['slow_cut'] for r in rs)} (at most {max(r['slow_max_open'] for r in rs)} open)")
    bad += [f"{kind}: failed_rate {r['failed_rate']}" for r in rs if r["failed_rate"] > 0]
if bad:
    print("FAILED: real payments failed under attack:", "; ".join(bad))
    sys.exit(1)
PY
