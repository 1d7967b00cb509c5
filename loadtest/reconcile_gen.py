#!/usr/bin/env python3
"""reconcile_gen.py: a journal of N paid payments and the channel's statement
of the same day with injected differences, for loadtest/reconcile.sh.

    reconcile_gen.py DB STATEMENT N [--encoding utf-8|gbk] [--seed S]

DB must exist and be migrated (payroute creates it: reconcile.sh runs
`payroute journal export` on it first). Payments are written straight into
the `payments` table (a journal filled through the proxy at ~4,000/s would
take minutes per million; the reconciler only reads rows). The day is
2026-12-01 in Beijing time (day-cut 00:00+08:00); payments are spread over
it; a tenth of them were created the day before and paid just after
midnight, and a few are paid the day after (they must not be reported).

The statement lists every payment of the day in paid-time order (yuan,
thousands separators, fee 0.6 % where 0.6 % is configured, a GBK or UTF-8
bill with a preamble and a 合计 row), minus injected differences, one per
1,000 payments for each kind. Prints the expected difference counts as JSON.
"""
import argparse
import json
import random
import sqlite3

DAY_START_MS = 1_796_054_400_000  # 2026-12-01 00:00 +08:00
DAY_MS = 86_400_000
CHANNEL = "acq-a"


def yuan(fen):
    return f"{fen // 100:,}.{fen % 100:02d}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("statement")
    ap.add_argument("n", type=int)
    ap.add_argument("--encoding", default="gbk")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rnd = random.Random(a.seed)

    rows = []  # (trade_no, amount, fee, created, paid)
    for i in range(a.n):
        paid = DAY_START_MS + (i * DAY_MS) // a.n
        created = paid - rnd.randint(50, 3_000)
        if i % 10 == 0:  # created the day before, paid after midnight
            created = DAY_START_MS - rnd.randint(1_000, 600_000)
        amount = rnd.randint(100, 500_000)
        fee = (amount * 6 + 500) // 1000  # 0.6 %, half up
        rows.append((f"T{i:012d}R{rnd.randint(0, 99999):05d}", amount, fee, created, paid))
    # Paid the next day: in the journal, not on this statement, not a difference.
    late = [(f"L{i:012d}", 1_000, 6, DAY_START_MS + DAY_MS - 5_000, DAY_START_MS + DAY_MS + 1_000)
            for i in range(max(1, a.n // 1000))]

    db = sqlite3.connect(a.db)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.executemany(
        "INSERT INTO payments (trade_no, merchant_id, order_id, amount, currency, protocol, channel_id, "
        "channel_trade_no, state, expected_fee, created_at_ms, updated_at_ms, paid_at_ms) "
        "VALUES (?, 'm-001', ?, ?, 'CNY', 'http', ?, NULL, 'paid', ?, ?, ?, ?)",
        ((t, "o" + t, amt, CHANNEL, fee, c, p, p) for (t, amt, fee, c, p) in rows + late),
    )
    db.commit()
    db.close()

    every = 1000
    expected = {"missing_in_journal": 0, "missing_at_channel": 0, "amount_mismatch": 0,
                "status_mismatch": 0, "fee_mismatch": 0}
    lines = ["#模拟收单机构 交易明细",
             "#起始日期：[2026-12-01 00:00:00]  终止日期：[2026-12-02 00:00:00]",
             "交易时间,商户订单号,渠道流水号,金额,手续费,状态"]
    total_amount = total_fee = 0
    for i, (t, amount, fee, _created, paid) in enumerate(rows):
        status = "成功"
        k = i % every
        if k == 1:
            expected["missing_at_channel"] += 1
            continue
        if k == 2:
            amount += 100
            expected["amount_mismatch"] += 1
        elif k == 3:
            status = "失败"
            expected["status_mismatch"] += 1
        elif k == 4:
            fee += 50
            expected["fee_mismatch"] += 1
        elif k == 5:
            lines.append(f"2026-12-01 12:00:00,P{i:012d},x{i},1.00,0.01,成功")
            expected["missing_in_journal"] += 1
        secs = (paid - DAY_START_MS) // 1000
        when = f"2026-12-01 {secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
        lines.append(f'{when},{t},c{i},"{yuan(amount)}",{yuan(fee)},{status}')
        total_amount += amount
        total_fee += fee
    lines.append(f'合计,{len(lines) - 3},,"{yuan(total_amount)}",{yuan(total_fee)},')
    with open(a.statement, "w", encoding=a.encoding, newline="") as f:
        f.write("\r\n".join(lines) + "\r\n")
    print(json.dumps(expected))


if __name__ == "__main__":
    main()
