#!/usr/bin/env bash
# sc.sh BIN OUT [sites]: payroute amid a fixed 1,000 payments/s (oha, 16 connections, unique order ids),
#   counts: strace -c -f attached for 8 s: system calls per payment (OUT.strace, OUT.json)
#   sites:  strace -f -k -e trace=openat for 2 s: what opens stage segments, one per projection (OUT.k)
set -euo pipefail
LT_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"; cd "$LT_ROOT"; source loadtest/lib.sh
LT_PORT_BASE=${LT_PORT_BASE:-27000} lt_init sc
BIN=$1; OUT=$2; MODE=${3:-counts}
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
load() { oha --no-tui --output-format json -z "$1" -c 16 -q 1000 -m POST -H "X-Merchant-Id: m-0000001" \
  -T application/json -Z "$LT_WORK/bodies" "http://127.0.0.1:$port/v1/payments" 2>/dev/null || true; }
load 3s >/dev/null
if [ "$MODE" = sites ]; then
  load 4s >/dev/null & loader=$!
  sleep 1
  timeout 2 strace -f -k -e trace=openat -p "$pid" -o "$OUT.k" || true
  wait $loader
else
  strace -c -f -p "$pid" -o "$OUT.strace" & st=$!
  sleep 0.5
  load 8s > "$OUT.json"
  kill -INT $st; wait $st || true
  python3 -c "import json; d=json.load(open('$OUT.json')); print('answered', sum(d['statusCodeDistribution'].values()))"
fi
