#!/usr/bin/env python3
"""The fault soak's invariant checker (loadtest/soak.sh): reads what the
mock acquirers charged, the epay gateways' statements, the journal, the
notification tap's log, what the merchants received and every answer the
traffic got, and fails (exit 1) on any violation.

    soak_check.py WORKDIR

Inputs in WORKDIR (soak.sh writes them): answers.jsonl (soak_traffic.py),
charges-acq-*.json (GET /-/charges), statement-ep-*.json (GET /-/statement),
journal.json, events.json, notifications_in.json, adjustments.json (psql),
tap.jsonl, sink.jsonl (payroute-rig), fault-*.json (GET /-/fault),
faults.jsonl, reloads.txt, certs.txt, rss.txt, knobs.json.

Invariants, each counted as it is checked:
  charged_once            no merchant order is charged (and not reversed) more
                          than once, on one channel or across channels
  charge_in_journal       every live charge names a payment the journal holds,
                          for the same order and amount
  charge_known_paid       every live charge's payment is paid in the journal
                          (an ambiguous attempt is resolved or reversed)
  paid_is_charged         every payment the journal says paid has a live charge
  daily_cap               per channel and business day, live charges <= daily_cap
  daily_limit             per merchant and business day, live charges <= daily_limit
  answer_in_contract      every error answer is one of the contract's (status, code)
  answer_matches_journal  a merchant told "paid" has a paid payment with a live
                          charge; told declined / failed, no live charge
  ack_in_journal          every notification payroute acknowledged is in the
                          journal and its payment in the state it stated (or
                          one it may move on to: paid -> refunded, reversed)
  event_delivered         every merchant event in the journal was delivered, and
                          received by the merchant
  event_once              no event received more than twice (a repeat: once
                          after a crash, the contract's window) and none unknown
  rss_bounded             instance B's RSS over the last quarter is within
                          +50 % (and +32 MiB) of the second quarter's
  reload_ok               every reload an instance answered was 200 (000: it
                          was down, not counted)
  cert_served             every renewed certificate was served within 10 s
"""

import json
import os
import sys
from collections import Counter, defaultdict

DAY_MS = 86_400_000

# The contract's error table (status, code); epay refusals carry the same codes.
CONTRACT = {
    (400, "invalid_request"), (401, "unauthorized"), (403, "unknown_merchant"), (404, "unknown_route"),
    (404, "unknown_order"), (409, "duplicate_in_flight"), (413, "payload_too_large"),
    (422, "amount_limit_exceeded"), (422, "daily_limit_exceeded"), (422, "no_eligible_channel"),
    (422, "idempotency_key_reused"), (429, "rate_limited"), (502, "upstream_failed"),
    (503, "no_channel_available"), (503, "state_unavailable"), (504, "upstream_timeout"),
}
CODES = {c for _, c in CONTRACT}


def main(work):
    def path(name):
        return os.path.join(work, name)

    def load(name, default):
        try:
            with open(path(name)) as f:
                text = f.read()
            return json.loads(text) if text.strip() else default
        except FileNotFoundError:
            return default

    def lines(name):
        try:
            with open(path(name)) as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []

    knobs = load("knobs.json", {})
    offset = knobs.get("day_offset_ms", 8 * 3_600_000)
    answers = lines("answers.jsonl")
    journal = load("journal.json", [])
    events = load("events.json", [])
    notif_in = load("notifications_in.json", [])
    tap = lines("tap.jsonl")
    sink = lines("sink.jsonl")
    by_trade = {r["trade_no"]: r for r in journal}

    checked = Counter()
    broken = defaultdict(list)

    def check(name, ok, what):
        checked[name] += 1
        if not ok:
            broken[name].append(what)

    # --- charges: JSON acquirers' ledgers and epay gateways' statements.
    charges = []  # (channel, trade_no, order_id as the acquirer saw it, fen, charged_ms, reversed)
    for name in sorted(os.listdir(work)):
        if name.startswith("charges-") and name.endswith(".json"):
            ch = name[len("charges-"):-len(".json")]
            for c in load(name, []):
                amt = c.get("amount")
                fen = int(amt) if isinstance(amt, (int, str)) and str(amt).isdigit() else None
                charges.append((ch, c.get("trade_no"), c.get("order_id"), fen, c["charged_ms"], c.get("reversed_ms") is not None))
        if name.startswith("statement-") and name.endswith(".json"):
            ch = name[len("statement-"):-len(".json")]
            for c in load(name, []):
                yuan = str(c.get("amount", "0"))
                whole, _, frac = yuan.partition(".")
                fen = int(whole) * 100 + int((frac + "00")[:2])
                # epay: order_id and trade_no are both payroute's trade number.
                charges.append((ch, c.get("trade_no"), None, fen, c["charged_ms"], False))
    live = [c for c in charges if not c[5]]
    reversed_n = len(charges) - len(live)

    live_by_trade = defaultdict(list)
    live_by_order = defaultdict(list)
    for c in live:
        ch, trade, order, fen, at, _ = c
        row = by_trade.get(trade)
        check("charge_in_journal", row is not None and row["amount"] == fen and (order is None or order == row["order_id"]),
              f"{ch}: charge {trade} order {order} {fen} fen: journal has {row and (row['order_id'], row['amount'])}")
        live_by_trade[trade].append(c)
        key = (row["merchant_id"], row["order_id"]) if row else ("?", order or trade)
        live_by_order[key].append(c)
    for key, cs in live_by_order.items():
        check("charged_once", len(cs) == 1, f"order {key} charged {len(cs)} times: {[(c[0], c[1]) for c in cs]}")
    for trade, cs in live_by_trade.items():
        row = by_trade.get(trade)
        if row is not None:
            check("charge_known_paid", row["state"] in ("paid", "refunded"),
                  f"{trade} ({row['channel_id']}): charged on {[c[0] for c in cs]}, journal says {row['state']}")
    for r in journal:
        if r["state"] == "paid":
            check("paid_is_charged", r["trade_no"] in live_by_trade,
                  f"{r['trade_no']} ({r['channel_id']}, {r['protocol']}): paid in the journal, no live charge")

    # --- daily cap per channel, daily limit per merchant (business day at UTC+8 from 00:00).
    day = lambda ms: (ms + offset) // DAY_MS
    per_channel, per_merchant = Counter(), Counter()
    for ch, trade, _, fen, at, _ in live:
        per_channel[(ch, day(at))] += fen or 0
        row = by_trade.get(trade)
        if row:
            per_merchant[(row["merchant_id"], day(at))] += fen or 0
    caps, limits = knobs.get("daily_cap", {}), knobs.get("daily_limit", {})
    for (ch, d), total in sorted(per_channel.items()):
        if ch in caps:
            check("daily_cap", total <= caps[ch], f"{ch} day {d}: charged {total} > daily_cap {caps[ch]}")
    for (m, d), total in sorted(per_merchant.items()):
        if m in limits:
            check("daily_limit", total <= limits[m], f"{m} day {d}: charged {total} > daily_limit {limits[m]}")

    # --- answers: in the contract, and what they told the merchant agrees with the journal.
    outcomes = Counter()
    final = {}
    for a in answers:
        outcomes[(a["kind"], a["code"] if a["status"] else "no_answer")] += 1
        if a["status"] == 0:
            continue
        final[(a["merchant"], a["order_id"])] = a
        if a["kind"] == "json":
            if 200 <= a["status"] < 300:
                check("answer_in_contract", bool(a.get("channel")), f"{a['order_id']}: {a['status']} without X-Payroute-Channel")
            elif a["status"] in (402,):
                check("answer_in_contract", True, "")
            else:
                check("answer_in_contract", (a["status"], a["code"]) in CONTRACT,
                      f"{a['order_id']} on {a['inst']}: {a['status']} {a['code']}")
        else:
            check("answer_in_contract", a["status"] == 200 and (a["code"] == "created" or a["code"] in CODES),
                  f"epay {a['order_id']} on {a['inst']}: {a['status']} {a['code']}")
    journal_by_order = {(r["merchant_id"], r["order_id"]): r for r in journal}
    for key, a in final.items():
        row = journal_by_order.get(key)
        told = a["code"]
        if a["kind"] == "json" and 200 <= a["status"] < 300 and told == "paid":
            check("answer_matches_journal", row is not None and row["state"] in ("paid", "refunded") and row["trade_no"] in live_by_trade,
                  f"{key}: told paid, journal {row and row['state']}, charged {bool(row) and row['trade_no'] in live_by_trade}")
        elif a["kind"] == "json" and told in ("declined", "failed", "no_eligible_channel", "no_channel_available", "daily_limit_exceeded"):
            check("answer_matches_journal", row is None or row["trade_no"] not in live_by_trade,
                  f"{key}: told {told}, but {row and row['trade_no']} is charged")

    # --- notifications in: acknowledged means journaled, in the state stated.
    accepted = defaultdict(set)
    for n in notif_in:
        if n["result"] in ("accepted", "duplicate") and n.get("trade_no"):
            accepted[n["trade_no"]].add(n["result"])
    # The stated state, or one a payment may move on to from it: a payment
    # notified paid may since have been refunded, or reversed (payroute's
    # own reversal of an attempt whose query went unanswered, started before
    # the notification came, was accepted; one that came first keeps the
    # payment paid and stops the reversal; the charge checks above say
    # whether the money agrees).
    want = {"paid": {"paid", "refunded", "reversed"}, "failed": {"declined"}, "declined": {"declined"}}
    acked = [t for t in tap if t.get("acked")]
    for t in acked:
        row = by_trade.get(t["trade_no"])
        ok = row is not None and t["trade_no"] in accepted and row["state"] in want.get(t["status"], {t["status"]})
        check("ack_in_journal", ok, f"{t['protocol']} {t['trade_no']} stated {t['status']}: journal "
              f"{row and row['state']}, notifications_in {sorted(accepted.get(t['trade_no'], []))}")

    # --- notifications out: delivered, received, at most once more.
    seen = {}
    for s in sink:
        seen[s["event_id"]] = s
    expect = {}
    for e in events:
        sid = e["event_id"] if e["method"] != "GET" else "epay:" + e["trade_no"]
        expect[sid] = e
        check("event_delivered", e["state"] == "delivered" and sid in seen,
              f"event {e['event_id']} ({e['trade_no']}): {e['state']}, received {sid in seen}")
    for sid, s in seen.items():
        check("event_once", sid in expect and s["deliveries"] <= 2,
              f"event {sid}: received {s['deliveries']} times, in the journal {sid in expect}")
    repeats = sum(s["deliveries"] - 1 for s in seen.values())

    # --- RSS of B (never killed): the last quarter against the second.
    rss = []
    try:
        with open(path("rss.txt")) as f:
            for l in f:
                p = l.split()
                if len(p) == 5 and p[4].isdigit():
                    rss.append(int(p[4]))
    except FileNotFoundError:
        pass
    if len(rss) >= 8:
        q = len(rss) // 4
        med = lambda xs: sorted(xs)[len(xs) // 2]
        early, late = med(rss[q:2 * q]), med(rss[-q:])
        check("rss_bounded", late <= max(early * 1.5, early + 32 * 1024),
              f"B's RSS {early} KiB -> {late} KiB")
        rss_line = f"B's RSS {rss[0] // 1024} MiB at start, {early // 1024} MiB (2nd quarter), {late // 1024} MiB (last quarter), peak {max(rss) // 1024} MiB"
    else:
        rss_line = f"B's RSS: only {len(rss)} samples"

    # --- reloads and certificate renewals.
    reloads = Counter()
    try:
        with open(path("reloads.txt")) as f:
            for l in f:
                code = l.split()[-1]
                reloads[code] += 1
                # 000: no connection (the instance was down: killed, restarting).
                if code != "000":
                    check("reload_ok", code == "200", f"reload answered {code}: {l.strip()}")
    except FileNotFoundError:
        pass
    certs = Counter()
    try:
        with open(path("certs.txt")) as f:
            for l in f:
                certs[l.split()[-1]] += 1
                check("cert_served", l.split()[-1] == "served", f"renewed certificate not served: {l.strip()}")
    except FileNotFoundError:
        pass

    # --- faults injected, by kind.
    injected = Counter(f["kind"] for f in lines("faults.jsonl"))
    met = Counter()
    notify_faults = Counter()
    for name in sorted(os.listdir(work)):
        if name.startswith("fault-") and name.endswith(".json"):
            v = load(name, {})
            for k, n in (v.get("faulted") or {}).items():
                met[k] += n
            for k in ("notify_lost", "notify_repeated"):
                notify_faults[k] += (v.get("counters") or {}).get(k, 0)

    # --- report.
    pay = Counter()
    for key, a in final.items():
        pay[(a["kind"], a["code"])] += 1
    unanswered = {(a["merchant"], a["order_id"]) for a in answers} - set(final)
    print("== fault soak: figures")
    n_json = sum(v for (k, _), v in pay.items() if k == "json")
    n_epay = sum(v for (k, _), v in pay.items() if k == "epay")
    print(f"payments: {len(final) + len(unanswered)} ({n_json} JSON, {n_epay} epay answered; {len(unanswered)} never answered after every try)")
    for kind in ("json", "epay"):
        row = ", ".join(f"{c} {n}" for (k, c), n in sorted(pay.items(), key=lambda x: -x[1]) if k == kind)
        print(f"  {kind} by outcome: {row}")
    amb = Counter(a["code"] for a in final.values() if a.get("ambiguous"))
    print("  answered with X-Payroute-Ambiguous: " + (", ".join(f"{c} {n}" for c, n in amb.most_common()) or "none"))
    tries = Counter(a["status"] == 0 for a in answers)
    print(f"  tries: {len(answers)} ({tries[True]} without an answer, sent again to the other instance)")
    states = Counter((r["protocol"], r["state"]) for r in journal)
    print("journal: " + ", ".join(f"{p}/{s} {n}" for (p, s), n in sorted(states.items())))
    print(f"charges: {len(charges)} ({reversed_n} reversed), live {len(live)} on "
          + ", ".join(f"{ch} {n}" for ch, n in sorted(Counter(c[0] for c in live).items())))
    print("faults injected: " + (", ".join(f"{k} {n}" for k, n in sorted(injected.items())) or "none")
          + f"; requests that met one: " + ", ".join(f"{k} {n}" for k, n in sorted(met.items()))
          + f"; notifications lost {notify_faults['notify_lost']}, repeated {notify_faults['notify_repeated']}")
    print(f"reloads: {sum(reloads.values())} ({dict(reloads)}); certificate renewals: {sum(certs.values())} ({dict(certs)})")
    print(f"notifications in: {len(tap)} through the tap, {len(acked)} acknowledged; "
          f"merchant events: {len(events)} in the journal, {len(seen)} received, {repeats} repeats")
    for (ch, d), total in sorted(per_channel.items()):
        if ch in caps:
            print(f"daily_cap {ch} day {d}: live charges {total} of {caps[ch]} ({100 * total // max(caps[ch], 1)} %)")
    for (m, d), total in sorted(per_merchant.items()):
        if m in limits:
            print(f"daily_limit {m} day {d}: live charges {total} of {limits[m]} ({100 * total // max(limits[m], 1)} %)")
    print(rss_line)
    print("invariants checked:")
    for name in sorted(checked):
        print(f"  {name}: {checked[name]} checked, {len(broken[name])} violated")
    total = sum(len(v) for v in broken.values())
    print(f"violations: {total}")
    for name, items in sorted(broken.items()):
        for what in items[:10]:
            print(f"  {name}: {what}")
        if len(items) > 10:
            print(f"  {name}: ... {len(items) - 10} more")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
