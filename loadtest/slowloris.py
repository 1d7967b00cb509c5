#!/usr/bin/env python3
"""slowloris.py: hold N connections to a payroute listener, each sending a request
head one byte a second (and reconnecting when the server cuts it), or a
valid head followed by a body one byte a second (--body).

    python3 loadtest/slowloris.py --addr 127.0.0.1:18080 --conns 2000 --seconds 30

The merchant is gen_config.py's m-0000001, so a body is read (an unknown
merchant would be refused before its body). Prints on exit: conns=N cut=K (connections the server closed) bytes=B
max_open=M. Loopback only; bounded by --seconds.
"""
import argparse
import asyncio
import time

HEAD = (b"POST /v1/payments HTTP/1.1\r\nHost: payroute\r\nX-Merchant-Id: m-0000001\r\n"
        b"Content-Type: application/json\r\nX-Padding: " + b"a" * 4000 + b"\r\n")


async def one(host, port, body, deadline, stats):
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        stats["open"] += 1
        stats["max_open"] = max(stats["max_open"], stats["open"])
        try:
            if body:
                # Under max_body_bytes: only the body timeout can end it.
                writer.write(HEAD + b"Content-Length: 1000\r\n\r\n")
                payload = b"x" * 1000
            else:
                payload = HEAD
            i = 0
            while time.monotonic() < deadline and i < len(payload):
                writer.write(payload[i:i + 1])
                await writer.drain()
                stats["bytes"] += 1
                i += 1
                try:
                    # Waiting a second for the server paces the dribble; an
                    # answer or a close from it ends this connection.
                    await asyncio.wait_for(reader.read(4096), timeout=1.0)
                    stats["cut"] += 1
                    break
                except asyncio.TimeoutError:
                    pass
        except (ConnectionError, OSError):
            stats["cut"] += 1
        finally:
            stats["open"] -= 1
            writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--body", action="store_true", help="dribble a body after a valid head")
    a = p.parse_args()
    host, port = a.addr.rsplit(":", 1)
    deadline = time.monotonic() + a.seconds
    stats = {"open": 0, "max_open": 0, "cut": 0, "bytes": 0}
    tasks = []
    for i in range(a.conns):
        tasks.append(asyncio.create_task(one(host, int(port), a.body, deadline, stats)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)  # ramp up: do not look like a SYN flood
    await asyncio.gather(*tasks)
    print(f"conns={a.conns} cut={stats['cut']} bytes={stats['bytes']} max_open={stats['max_open']}")


asyncio.run(main())
