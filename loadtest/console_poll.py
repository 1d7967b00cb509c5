#!/usr/bin/env python3
"""Console pollers for loadtest/console.sh: what open web consoles cost payroute.

    console_poll.py --url http://127.0.0.1:18090/-/ui/state.json --consoles 5 --seconds 30
    console_poll.py --url ... --burst 5000

With --consoles N, N pollers each fetch the URL once a second for --seconds,
as the page does (one kept-alive connection per console, the next poll a
second after the previous one started), and print how many polls were
answered 200. With --burst N, one client fetches it N times back to back
(for payroute's CPU per poll) and prints the count. Anything but 200 fails.
"""

import argparse
import http.client
import sys
import threading
import time
import urllib.parse


def fetch(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200 or not body.startswith(b"{"):
        raise RuntimeError(f"state.json answered {r.status}")
    return len(body)


def console(host, port, path, seconds, counts, errors, i):
    try:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        end = time.monotonic() + seconds
        while True:
            started = time.monotonic()
            if started >= end:
                break
            fetch(conn, path)
            counts[i] += 1
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    except Exception as e:  # reported by main: a failed poll fails the run
        errors.append(f"console {i}: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--consoles", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--burst", type=int, default=0)
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    host, port, path = u.hostname, u.port or 80, u.path
    if a.burst:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        size = 0
        for _ in range(a.burst):
            size = fetch(conn, path)
        print(f"polls={a.burst} bytes={size}")
        return 0
    counts, errors = [0] * a.consoles, []
    threads = [
        threading.Thread(target=console, args=(host, port, path, a.seconds, counts, errors, i))
        for i in range(a.consoles)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"polls={sum(counts)}")
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
