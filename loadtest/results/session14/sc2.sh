#!/usr/bin/env bash
# sc2.sh BIN OUT: what opens a stage segment (each projection starts one): strace -k of openat for 2 s amid 1,000 payments/s
set -euo pipefail
LT_ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"; cd "$LT_ROOT"; source loadtest/lib.sh
LT_PORT_BASE=${LT_PORT_BASE:-27000} lt_init sc
BIN=$1; OUT=$2
MOCK=$LT_ROOT/target/release/mock-acquirer
start_mock "$PORT_MOCK1"; start_mock "$PORT_MOCK2"; start_mock "$PORT_MOCK3"
port=$((PORT_PAYROUTE + 200)); admin=$((PORT_PAYROUTE + 300))
gen_config "$LT_WORK/p.toml" 3 1000 --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin"
cp "$LT_WORK/p.toml" "$OUT.toml"
spawn p "$BIN" serve --config "$LT_WORK/p.toml"; pid=$SPAWNED
wait_port "$port" "$pid" 120 || die "no start"
python3 -c "
with open('$LT_WORK/bodies', 'w') as f:
    for i in range(200000):
        f.write('{\"amount\":1250,\"currency\":\"CNY\",\"order_id\":\"sc-%d\"}\n' % i)"
oha --no-tui -z 2s -c 16 -q 1000 -m POST -H "X-Merchant-Id: m-0000001" -T application/json -Z "$LT_WORK/bodies" "http://127.0.0.1:$port/v1/payments" >/dev/null 2>&1 || true
(oha --no-tui -z 4s -c 16 -q 1000 -m POST -H "X-Merchant-Id: m-0000001" -T application/json -Z "$LT_WORK/bodies" "http://127.0.0.1:$port/v1/payments" >/dev/null 2>&1 || true) & ohapid=$!
sleep 1
timeout 2 strace -f -k -e trace=openat -p "$pid" -o "$OUT.k" || true
wait $ohapid
cp "$LT_WORK/p.log" "$OUT.log"
