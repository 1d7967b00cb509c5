#!/usr/bin/env python3
"""Signed epay requests for loadtest/epay.sh, one per line, for wrk/lines.lua.

    epay_gen.py orders --n 100000 --merchants 1000 --notify-url http://127.0.0.1:18111/notify > orders.txt
    epay_gen.py notifies --db payroute.db > notifies.txt

`orders`: `/mapi.php` form bodies as an epay shop sends them: merchant
`m-<7 digits>` drawn at random from --merchants (as gen_config.py names
them; its epay_key is `<--key-prefix>-<merchant id>`), a unique
`out_trade_no` (a run prefix + a counter: payroute's idempotency must
never replay one), type alipay or wxpay, amounts mixed like
wrk/payments.lua's (1.00 .. 1200.00 yuan), a Chinese name with a space,
`clientip`, `device`, `param`, then `sign` (MD5 by the contract's rule:
every non-empty parameter but sign and sign_type, sorted by name, joined
k=v with &, the key appended; the values as sent, before URL-encoding)
and `sign_type=MD5`. URL-encoded as PHP's http_build_query (space as +).

`notifies`: for every pending epay payment in payroute's SQLite journal
(read-only), the gateway's `GET /notify/{channel}?...` a paying buyer
triggers: `pid` of payroute's account at that channel (gen_config.py's
`2000 + i` for `ep-<i>`), `trade_no` (the gateway's, from the journal when
it kept one), `out_trade_no` = payroute's trade number, `type`, `name`,
`money` (yuan, two decimals, from the amount in fen), `trade_status =
TRADE_SUCCESS`, signed with the channel's key (`epay-bench-key-<i>`).
"""

import argparse
import hashlib
import json
import random
import sqlite3
import sys
import time
from urllib.parse import urlencode

AMOUNTS_FEN = [100, 1250, 9900, 25000, 120000, 499]
TYPES = ["alipay", "alipay", "wxpay"]


def sign(params, key):
    signed = sorted((k, v) for k, v in params.items() if v != "" and k not in ("sign", "sign_type"))
    text = "&".join("%s=%s" % (k, v) for k, v in signed) + key
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def signed_query(params, key):
    params = dict(params)
    params["sign"] = sign(params, key)
    params["sign_type"] = "MD5"
    return urlencode(params)


def yuan(fen):
    return "%d.%02d" % (fen // 100, fen % 100)


def orders(a):
    run = a.run or "e%x%04x" % (int(time.time() * 1000), random.randrange(65536))
    rnd = random.Random(a.seed)
    out = sys.stdout if a.out == "-" else open(a.out, "w")
    for i in range(a.n):
        m = "m-%07d" % rnd.randrange(a.merchants)
        p = {
            "pid": m,
            "type": TYPES[i % len(TYPES)],
            "out_trade_no": "%s-%d" % (run, i),
            "notify_url": a.notify_url,
            "name": "VIP会员 月卡",
            "money": yuan(AMOUNTS_FEN[i % len(AMOUNTS_FEN)]),
            "clientip": "127.0.0.1",
            "device": "pc",
            "param": "wrk-%d" % i,
        }
        out.write(signed_query(p, "%s-%s" % (a.key_prefix, m)) + "\n")
    if out is not sys.stdout:
        out.close()
    return 0


def notifies(a):
    db = sqlite3.connect("file:%s?mode=ro" % a.db, uri=True, timeout=30)
    rows = db.execute(
        "SELECT trade_no, channel_id, channel_trade_no, amount, pay_type, merchant_data FROM payments_all "
        "WHERE protocol = 'epay' AND state = 'pending' AND channel_id IS NOT NULL ORDER BY created_at_ms"
    ).fetchall()
    out = sys.stdout if a.out == "-" else open(a.out, "w")
    n = 0
    for trade_no, channel, gateway_no, amount, pay_type, data in rows:
        if not channel.startswith("ep-"):
            continue
        i = int(channel[3:])
        name = (json.loads(data or "{}") or {}).get("name") or "order"
        p = {
            "pid": str(2000 + i),
            "trade_no": gateway_no or "G%s" % trade_no,
            "out_trade_no": trade_no,
            "type": pay_type or "alipay",
            "name": name,
            "money": yuan(amount),
            "trade_status": "TRADE_SUCCESS",
        }
        out.write("/notify/%s?%s\n" % (channel, signed_query(p, "epay-bench-key-%02d" % i)))
        n += 1
        if a.limit and n >= a.limit:
            break
    if out is not sys.stdout:
        out.close()
    print(n, file=sys.stderr)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("orders", help="signed /mapi.php bodies")
    o.add_argument("--n", type=int, required=True)
    o.add_argument("--merchants", type=int, default=1000)
    o.add_argument("--key-prefix", default="shop-key")
    o.add_argument("--notify-url", required=True)
    o.add_argument("--run", default="", help="order id prefix (default: time + random)")
    o.add_argument("--seed", type=int, default=None)
    o.add_argument("--out", default="-")
    n = sub.add_parser("notifies", help="signed gateway notifications for the journal's pending epay payments")
    n.add_argument("--db", required=True)
    n.add_argument("--limit", type=int, default=0)
    n.add_argument("--out", default="-")
    a = p.parse_args()
    return orders(a) if a.cmd == "orders" else notifies(a)


if __name__ == "__main__":
    sys.exit(main())
