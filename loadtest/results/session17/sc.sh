#!/usr/bin/env bash
# sc.sh BIN OUT: system calls per payment (strace -c -f, attached for one
# oha run at RATE/s for SECS s, unique payments), payroute with its journal
# (SQLite; JOURNAL_URL: PostgreSQL there). STRACE_ARGS replaces -c.
set -euo pipefail
LT_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"; cd "$LT_ROOT"; source loadtest/lib.sh
lt_init sc
BIN=$1; OUT=$2; RATE=${RATE:-4000}; SECS=${SECS:-5}
MOCK=$LT_ROOT/target/release/mock-acquirer
start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
port=$((PORT_PAYROUTE + 200)); admin=$((PORT_PAYROUTE + 300))
gen_config "$LT_WORK/p.toml" 3 1000 --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin"
[ -n "${JOURNAL_URL:-}" ] && printf '\n[journal]\nbackend = "postgres"\nurl = "%s"\n' "$JOURNAL_URL" >> "$LT_WORK/p.toml"
start_payroute "$LT_WORK/p.toml" 60 "$port" "$BIN"; pid=$PAYROUTE_PID
python3 -c "
with open('$LT_WORK/bodies', 'w') as f:
    for i in range($RATE * ($SECS + 3)):
        f.write('{\"amount\":1250,\"currency\":\"CNY\",\"order_id\":\"sc-%d\"}\n' % i)"
oha --no-tui -z 2s -c 64 -q "$RATE" -m POST -H "X-Merchant-Id: m-0000001" -T application/json \
  -d '{"amount":1250,"currency":"CNY","order_id":"warm"}' "http://127.0.0.1:$port/v1/payments" >/dev/null 2>&1 || true
strace ${STRACE_ARGS:--c} -f -p "$pid" -o "$OUT.strace" & st=$!
sleep 1
oha --no-tui --output-format json -z "${SECS}s" -c 64 -q "$RATE" -m POST -H "X-Merchant-Id: m-0000001" \
  -T application/json -Z "$LT_WORK/bodies" "http://127.0.0.1:$port/v1/payments" > "$OUT.oha.json" 2>/dev/null || true
sleep 0.5; kill -INT $st; wait $st || true
n=$(python3 -c "import json; d=json.load(open('$OUT.oha.json')); print(sum(d['statusCodeDistribution'].values()))")
echo "payments=$n"
awk -v n="$n" 'NR>2 && $NF !~ /total/ && NF>=5 { c = ($4 ~ /^[0-9]+$/) ? $4 : $4; printf "%-16s %8.3f per payment\n", $NF, c / n }' "$OUT.strace" | sort -k2 -nr | head -25
