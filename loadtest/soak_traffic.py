#!/usr/bin/env python3
"""Steady JSON and epay traffic for loadtest/soak.sh, against two payroute
instances, recording every answer.

    soak_traffic.py --a http://127.0.0.1:18080 --b https://localhost:18180 --ca ca.pem \
        --rate 30 --seconds 120 --merchants 8 --epay-share 0.3 --out answers.jsonl

Each payment has a unique order id (run prefix + counter) and goes to A or
B in turn; JSON payments are `POST /v1/payments` (amount 100..5000 fen,
CNY, `X-Merchant-Id`), epay ones `POST /mapi.php` signed with the shop's
key (`--epay-key`). A payment that gets no answer (the instance was killed
with -9, a connection reset) is sent again, same order id and body, to the
other instance after a second, up to --tries times: what a merchant does,
and what payroute's fleet-wide idempotency must survive.

One JSON line per try: t (Unix ms), kind (json|epay), inst (a|b), merchant,
order_id, amount, try, status (HTTP; 0: no answer), code (payroute's error
code, the epay msg's code, or the body's status), channel, trade_no,
ambiguous, replayed, ms. A summary line goes to stderr at the end.

Pacing: a shared schedule of `rate` payments a second; threads take the
next slot, so a hanging acquirer slows nothing but the threads it holds
(there are --threads of them).
"""

import argparse
import hashlib
import http.client
import json
import random
import ssl
import sys
import threading
import time
from urllib.parse import urlencode, urlsplit


def sign(params, key):
    signed = sorted((k, v) for k, v in params.items() if v != "" and k not in ("sign", "sign_type"))
    text = "&".join("%s=%s" % (k, v) for k, v in signed) + key
    return hashlib.md5(text.encode("utf-8")).hexdigest()


class Target:
    def __init__(self, name, url, ca):
        u = urlsplit(url)
        self.name, self.host, self.port, self.tls = name, u.hostname, u.port, u.scheme == "https"
        self.ctx = None
        if self.tls:
            self.ctx = ssl.create_default_context(cafile=ca)

    def connect(self, timeout):
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


class Worker(threading.Thread):
    def __init__(self, g, idx):
        super().__init__(daemon=True)
        self.g, self.idx, self.conns = g, idx, {}
        self.rnd = random.Random(g.seed * 1000 + idx)

    def conn(self, t):
        c = self.conns.get(t.name)
        if c is None:
            c = t.connect(self.g.timeout)
            self.conns[t.name] = c
        return c

    def drop(self, t):
        c = self.conns.pop(t.name, None)
        if c is not None:
            try:
                c.close()
            except Exception:
                pass

    def send(self, t, method, path, body, headers):
        """(status, headers dict, body bytes, errors met); status 0 when no
        answer came."""
        errors = []
        for fresh in (False, True):
            if fresh:
                self.drop(t)
            c = self.conn(t)
            reused = c.sock is not None
            try:
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if hdrs.get("connection", "").lower() == "close":
                    self.drop(t)
                return r.status, hdrs, data, errors
            except TimeoutError as e:
                # Sent and not answered in time: it may be under way. An
                # unanswered try (the caller retries on the other instance,
                # same order id).
                self.drop(t)
                errors.append("%s: %s" % (type(e).__name__, e))
                return 0, {}, b"", errors
            except Exception as e:
                # On a kept-alive connection the server may have closed while
                # it sat idle (EOF, a reset, a TLS close): once more on a
                # fresh one. Safe even if the request was taken: the same
                # order id is answered as a replay, or duplicate_in_flight.
                self.drop(t)
                errors.append("%s%s: %s" % ("reused " if reused else "", type(e).__name__, e))
                if fresh or not reused:
                    return 0, {}, b"", errors
        return 0, {}, b"", errors

    def run(self):
        g = self.g
        while True:
            slot = g.next_slot()
            if slot is None:
                return
            n, at = slot
            wait = at - time.time()
            if wait > 0:
                time.sleep(wait)
            self.payment(n)

    def payment(self, n):
        g, rnd = self.g, self.rnd
        kind = "epay" if rnd.random() < g.epay_share else "json"
        merchant = "m-%02d" % rnd.randrange(g.merchants)
        order_id = "%s-%d" % (g.run, n)
        amount = rnd.choice([100, 250, 990, 1250, 2000, 3300, 4999])
        if kind == "json":
            path, method = "/v1/payments", "POST"
            body = json.dumps({"amount": amount, "currency": "CNY", "order_id": order_id, "note": "soak"}).encode()
            headers = {"Content-Type": "application/json", "X-Merchant-Id": merchant}
        else:
            path, method = "/mapi.php", "POST"
            p = {"pid": merchant, "type": "alipay", "out_trade_no": order_id, "notify_url": g.shop_notify,
                 "return_url": g.shop_notify, "name": "soak order", "money": "%d.%02d" % (amount // 100, amount % 100),
                 "clientip": "127.0.0.1", "device": "pc"}
            p["sign"] = sign(p, g.epay_key)
            p["sign_type"] = "MD5"
            body = urlencode(p).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        first = n % 2
        for attempt in range(g.tries):
            t = g.targets[(first + attempt) % 2]
            t0 = time.time()
            status, hdrs, data, errors = self.send(t, method, path, body, headers)
            rec = {"t": int(t0 * 1000), "kind": kind, "inst": t.name, "merchant": merchant, "order_id": order_id,
                   "amount": amount, "try": attempt + 1, "status": status, "ms": int((time.time() - t0) * 1000),
                   "channel": hdrs.get("x-payroute-channel"), "trade_no": hdrs.get("x-payroute-trade-no"),
                   "ambiguous": hdrs.get("x-payroute-ambiguous"), "replayed": hdrs.get("x-payroute-replayed") == "true",
                   "request_id": hdrs.get("x-payroute-request-id")}
            rec["code"] = read_code(kind, status, data, rec)
            if errors:
                rec["errors"] = errors
            g.write(rec)
            if status != 0:
                return
            time.sleep(1.0)


def read_code(kind, status, data, rec):
    """What the answer says, as one word: payroute's error code, the
    acquirer's stated status, or epay's code 1 (`created`)."""
    try:
        v = json.loads(data)
    except Exception:
        return "unreadable" if status else "no_answer"
    if not isinstance(v, dict):
        return "unreadable"
    if kind == "epay":
        if v.get("code") == 1:
            rec["trade_no"] = v.get("trade_no") or rec["trade_no"]
            return "created"
        msg = str(v.get("msg", ""))
        return msg.split(":", 1)[0].strip() or "epay_refused"
    err = v.get("error")
    if isinstance(err, dict):
        return str(err.get("code"))
    return str(v.get("status"))


class Gen:
    def __init__(self, a):
        self.run = a.run
        self.rate, self.seconds, self.epay_share = a.rate, a.seconds, a.epay_share
        self.merchants, self.epay_key, self.shop_notify = a.merchants, a.epay_key, a.shop_notify
        self.tries, self.timeout, self.seed = a.tries, a.timeout, a.seed
        self.targets = [Target("a", a.a, a.ca), Target("b", a.b, a.ca)]
        self.lock = threading.Lock()
        self.n = 0
        self.start = time.time()
        self.total = int(a.rate * a.seconds)
        self.out = open(a.out, "a", buffering=1)
        self.counts = {}
        self.stop_file = a.stop_file

    def next_slot(self):
        with self.lock:
            if self.n >= self.total:
                return None
            if self.stop_file and self.n % 50 == 0:
                try:
                    open(self.stop_file).close()
                    return None
                except OSError:
                    pass
            n = self.n
            self.n += 1
        return n, self.start + n / self.rate

    def write(self, rec):
        line = json.dumps(rec, separators=(",", ":"))
        with self.lock:
            self.out.write(line + "\n")
            key = (rec["kind"], rec["code"])
            self.counts[key] = self.counts.get(key, 0) + 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="instance A's base URL")
    p.add_argument("--b", required=True, help="instance B's base URL (https: verified with --ca)")
    p.add_argument("--ca", default=None)
    p.add_argument("--rate", type=float, default=30.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--merchants", type=int, default=8)
    p.add_argument("--epay-share", type=float, default=0.3)
    p.add_argument("--epay-key", default="soak-shop-key")
    p.add_argument("--shop-notify", required=True, help="the shops' notify_url (epay)")
    p.add_argument("--threads", type=int, default=48)
    p.add_argument("--tries", type=int, default=3)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--run", default="s%x" % int(time.time()))
    p.add_argument("--stop-file", default=None, help="stop early once this file exists")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    g = Gen(a)
    workers = [Worker(g, i) for i in range(a.threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    summary = {"%s/%s" % k: v for k, v in sorted(g.counts.items())}
    print(json.dumps({"payments": g.n, "answers": summary}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
