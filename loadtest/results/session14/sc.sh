#!/usr/bin/env bash
# sc.sh BIN OUT: system calls per payment at a fixed 1,000 payments/s: strace -c -f attached for 8 s of oha (16 connections)
set -euo pipefail
LT_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"; cd "$LT_ROOT"; source loadtest/lib.sh
LT_PORT_BASE=${LT_PORT_BASE:-27000} lt_init sc
BIN=$1; OUT=$2
MOCK=$LT_ROOT/target/release/mock-acquirer
start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
port=$((PORT_PAYROUTE + 200)); admin=$((PORT_PAYROUTE + 300))
gen_config "$LT_WORK/p.toml" 3 1000 --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin"
spawn p "$BIN" serve --config "$LT_WORK/p.toml"; pid=$SPAWNED
wait_port "$port" "$pid" 120 || die "no start"
python3 -c "
with open('$LT_WORK/bodies', 'w') as f:
    for i in range(200000):
        f.write('{\"amount\":1250,\"currency\":\"CNY\",\"order_id\":\"sc-%d\"}\n' % i)"
oha --no-tui -z 3s -c 16 -q 1000 -m POST -H "X-Merchant-Id: m-0000001" -T application/json -Z "$LT_WORK/bodies" "http://127.0.0.1:$port/v1/payments" >/dev/null 2>&1 || true
strace -c -f -p "$pid" -o "$OUT.strace" & st=$!
sleep 0.5
oha --no-tui --output-format json -z 8s -c 16 -q 1000 -m POST -H "X-Merchant-Id: m-0000001" -T application/json -Z "$LT_WORK/bodies" "http://127.0.0.1:$port/v1/payments" > "$OUT.json" 2>/dev/null || true
kill -INT $st; wait $st || true
python3 -c "import json; d=json.load(open('$OUT.json')); print('answered', sum(d['statusCodeDistribution'].values()), d['statusCodeDistribution'])"
