#!/usr/bin/env bash
# reconcile.sh: issue 15's number — a 1,000,000-line statement against a
# 1,000,000-payment journal reconciles in under 15 s with peak RSS under 256 MiB.
#
#   loadtest/reconcile.sh             # N=1000000, GBK statement, SQLite journal
#   loadtest/reconcile.sh --smoke     # N=10000: the machinery works (CI)
#
# reconcile_gen.py writes the journal's payments straight into a migrated
# SQLite journal and the statement with one injected difference of each kind
# per 1,000 payments; `payroute reconcile` runs under /usr/bin/time -v (wall
# time, max RSS), and its differences are checked against what was injected:
# a run that finds more or fewer fails, whatever its speed.
# Environment: N, ENCODING (gbk | utf-8), ROUNDS (1).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

N="${N:-1000000}"; ENCODING="${ENCODING:-gbk}"; ROUNDS="${ROUNDS:-1}"
[ "${1:-}" = "--smoke" ] && N=10000
need_python
command -v /usr/bin/time >/dev/null 2>&1 || [ -x /usr/bin/time ] || apt_install time
lt_init reconcile
build_release

cat > "$LT_WORK/routes.toml" <<TOML
[[channel]]
id = "acq-a"
url = "http://127.0.0.1:9"
fee_percent = 0.6
statement = { trade_no = "商户订单号", amount = "金额", fee = "手续费", status = "状态", paid_values = ["成功"], day_starts = "00:00+08:00" }

[[merchant]]
id = "m-001"
TOML
"$PAYROUTE" journal export --config "$LT_WORK/routes.toml" >/dev/null 2>&1   # creates and migrates payroute.db
log "generating a journal of $N payments and a $ENCODING statement"
expected=$(python3 "$LT_ROOT/loadtest/reconcile_gen.py" "$LT_WORK/payroute.db" "$LT_WORK/statement.csv" "$N" --encoding "$ENCODING")
log "expected differences: $expected; statement $(du -h "$LT_WORK/statement.csv" | cut -f1), journal $(du -h "$LT_WORK/payroute.db" | cut -f1)"

for round in $(seq 1 "$ROUNDS"); do
  set +e
  /usr/bin/time -v "$PAYROUTE" reconcile --config "$LT_WORK/routes.toml" --channel acq-a \
    --statement "$LT_WORK/statement.csv" --date 2026-12-01 --format json \
    >"$LT_WORK/out.json" 2>"$LT_WORK/time.txt"
  rc=$?
  set -e
  [ "$rc" = 1 ] || { cat "$LT_WORK/time.txt" >&2; die "reconcile exited $rc (differences were injected: want 1)"; }
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$LT_WORK/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$LT_WORK/time.txt")
  cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {print u + s}' "$LT_WORK/time.txt")
  python3 - "$LT_WORK/out.json" "$expected" <<'PY'
import collections, json, sys
out = json.load(open(sys.argv[1]))
want = json.loads(sys.argv[2])
got = collections.Counter(d["kind"] for d in out["differences"])
for kind in want:
    if got.get(kind, 0) != want[kind]:
        sys.exit(f"{kind}: found {got.get(kind, 0)}, injected {want[kind]}")
if sum(got.values()) != sum(want.values()):
    sys.exit(f"found {dict(got)}, injected {want}")
print(f"differences as injected: {dict(got)}; effective fee {out['effective_fee_percent']:.4f} %", file=sys.stderr)
PY
  echo "round $round: N=$N encoding=$ENCODING wall=${wall} cpu=${cpu}s max_rss=$((rss / 1024)) MiB (targets: < 15 s, < 256 MiB)"
done
