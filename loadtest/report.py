#!/usr/bin/env python3
"""Summarise bench.sh's results.jsonl: tables, ratios, and each target of
issue 3 as MET / NOT MET. With --smoke-check, exit 1 if any run served no
request or saw an error (correctness only: nothing about timing)."""

import json
import statistics
import sys

MIB = 1024


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def scale_medians(runs):
    """One row per (channels, merchants): medians over rounds, in run order."""
    points = []
    for r in runs:
        k = (r["channels"], r["merchants"])
        if k not in points:
            points.append(k)
    out = []
    for k in points:
        rs = [r for r in runs if (r["channels"], r["merchants"]) == k]
        row = dict(rs[0])
        for f in ("rps", "p99_us", "cpu_us_per_req"):
            row[f] = med([r[f] for r in rs])
        # The least-disturbed round: on a shared box noise only ever adds CPU.
        row["cpu_min"] = min(r["cpu_us_per_req"] for r in rs)
        row["rss_kb"] = max(r["rss_kb"] for r in rs)
        row["rss_idle_kb"] = max(r.get("rss_idle_kb", 0) for r in rs)
        row["startup_s"] = max(r["startup_s"] for r in rs)
        row["cpu_rounds"] = [r["cpu_us_per_req"] for r in rs]
        out.append(row)
    return out


def main():
    path = sys.argv[1]
    smoke = "--smoke-check" in sys.argv
    rows = [json.loads(l) for l in open(path) if l.strip()]
    by = lambda sec: [r for r in rows if r.get("section") == sec]
    problems = []
    verdicts = []

    def check_run(r, what):
        n = r.get("requests", 0)
        errs = sum(r.get(k, 0) for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout", "errors_status"))
        failed = r.get("failed_rate", 0) or 0
        if not n:
            problems.append(f"{what}: no request completed")
        if errs or failed > 0:
            problems.append(f"{what}: errors={errs} failed_rate={failed}")

    # Throughput -----------------------------------------------------------
    tp = by("throughput")
    if tp:
        targets = [t for t in ("direct", "nginx", "haproxy", "hyper-floor", "haproxy-h2", "payroute", "payroute-h2c")
                   if any(r["target"] == t for r in tp)]
        print("== throughput (wrk closed loop, unique payments; median of rounds)")
        print(f"{'target':12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'RSS MiB':>8} {'CPU us/req':>10} {'rounds':>6}")
        s = {}
        for t in targets:
            rs = [r for r in tp if r["target"] == t]
            for r in rs:
                check_run(r, f"throughput {t} round {r.get('round')}")
            s[t] = dict(rps=med([r["rps"] for r in rs]), p50=med([r["p50_us"] for r in rs]) / 1e3,
                        p99=med([r["p99_us"] for r in rs]) / 1e3, p999=med([r["p999_us"] for r in rs]) / 1e3,
                        rss=max(r["rss_kb"] for r in rs) / MIB, cpu=med([r["cpu_us_per_req"] for r in rs]), n=len(rs))
            x = s[t]
            print(f"{t:12} {x['rps']:9.0f} {x['p50']:8.2f} {x['p99']:8.2f} {x['p999']:9.2f} {x['rss']:8.1f} {x['cpu']:10.1f} {x['n']:6d}")
        print("per-round req/s: " + "; ".join(
            f"{t} " + "/".join(f"{r['rps']:.0f}" for r in tp if r["target"] == t) for t in targets))
        # Like for like: payroute and nginx/HAProxy all speak HTTP/1.1 to the
        # acquirers (the target's verdict). The h2c rows are what multiplexing
        # payments over HTTP/2 to the acquirers buys, against HAProxy doing the same.
        pairs = [("payroute", o) for o in ("nginx", "haproxy", "hyper-floor", "direct")] + [("hyper-floor", "nginx")]
        pairs += [("payroute-h2c", o) for o in ("nginx", "haproxy", "haproxy-h2")]
        rounds = sorted({r.get("round") for r in tp})
        shown = False
        for mine, other in pairs:
            if mine not in s or other not in s:
                continue
            if not shown:
                print("ratios (req/s, median of rounds; per-round ratio in brackets):")
                shown = True
            per = []
            for rd in rounds:
                a = [r["rps"] for r in tp if r["target"] == mine and r.get("round") == rd]
                b = [r["rps"] for r in tp if r["target"] == other and r.get("round") == rd]
                if a and b:
                    per.append(a[0] / b[0])
            ratio = s[mine]["rps"] / s[other]["rps"]
            print(f"  {mine + '/' + other:23} {ratio:5.2f}x  [{', '.join(f'{p:.2f}' for p in per)}]"
                  f"   CPU per request: {s[mine]['cpu'] / max(s[other]['cpu'], 1e-9):.2f}x")
            if mine == "payroute" and other in ("nginx", "haproxy"):
                verdicts.append((f"1. throughput >= 1.2x {other}", ratio >= 1.2, f"{ratio:.2f}x"))
        # Where the box's CPU goes (runs that recorded the generator's and the
        # mocks' CPU): on a shared box req/s = cores / (everyone's CPU per
        # request), so this is the arithmetic behind target 1.
        if all("gen_cpu_us_per_req" in r and "mocks_cpu_us_per_req" in r for r in tp):
            print("box CPU per request, µs (median of rounds): the target's own + mocks' + wrk's + idle = cores / req/s")
            box = {}
            for t in targets:
                rs = [r for r in tp if r["target"] == t]
                own = 0.0 if t == "direct" else s[t]["cpu"]
                mocks = med([r["mocks_cpu_us_per_req"] for r in rs])
                gen = med([r["gen_cpu_us_per_req"] for r in rs])
                idle = med([r.get("idle_us_per_req", 0.0) for r in rs])
                kern = 0.0 if t == "direct" else med([r.get("sys_us_per_req") for r in rs])
                box[t] = dict(own=own, mocks=mocks, gen=gen, idle=idle, sys=kern)
                split = f"   (own: {own - kern:.1f} user + {kern:.1f} system)" if kern is not None and t != "direct" else ""
                print(f"  {t:12} {own:6.1f} + {mocks:5.1f} + {gen:5.1f} + {idle:4.1f} = {own + mocks + gen + idle:6.1f}{split}")
            for other in ("nginx", "haproxy"):
                if other in box and "payroute" in box:
                    o, p = box[other], box["payroute"]
                    need = (o["own"] + o["mocks"] + o["gen"]) / 1.2
                    budget = need - p["mocks"] - p["gen"]
                    kern = f"; payroute's system time alone is {p['sys']:.1f}, {other}'s {o['sys']:.1f}" if p["sys"] is not None and o["sys"] is not None else ""
                    print(f"  1.2x {other}: {need:.1f} µs of box CPU per request; with payroute's mocks and wrk as measured, "
                          f"payroute may spend {budget:.1f} µs ({other} spends {o['own']:.1f}, payroute {p['own']:.1f}{kern})")
        print()

    # Latency --------------------------------------------------------------
    def latency(runs, title, generator, extra_col):
        """Per target: medians over rounds; added p99 = median of the
        per-round differences against direct (targets are interleaved in a
        round, so a round's drift of the box lands on all of them)."""
        print(f"== latency at a fixed rate ({title}); median of rounds")
        print(f"{'target':10} {'rate':>6} {'requests':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'failed':>7} {extra_col[0]:>8}  p99 per round")
        names, rounds = [], {}
        for r in runs:
            check_run(r, f"latency ({generator}) {r['target']} round {r.get('round', 1)}")
            if r["target"] not in names:
                names.append(r["target"])
            rounds.setdefault(r["target"], {})[r.get("round", 1)] = r
        for n in names:
            rs = list(rounds[n].values())
            m = lambda f: med([r[f] for r in rs])
            per = "/".join(f"{r['p99_ms']:.2f}" for r in rs)
            print(f"{n:10} {rs[0]['rate']:6d} {sum(r['requests'] for r in rs):9d} {m('p50_ms'):8.2f} {m('p90_ms'):8.2f} {m('p99_ms'):8.2f} {m('p999_ms'):9.2f} {m('failed_rate'):7.4f} {sum(extra_col[1](r) for r in rs):8d}  {per}")
        if "direct" not in rounds:
            return
        base = rounds["direct"]

        def added(n, f="p99_ms"):
            diffs = [rounds[n][k][f] - base[k][f] for k in rounds[n] if k in base]
            return med(diffs), diffs

        if "payroute" in rounds:
            a99, diffs = added("payroute")
            a50, _ = added("payroute", "p50_ms")
            pr = list(rounds["payroute"].values())
            note = ""
            if generator == "oha":
                rep, routed = sum(r["replayed"] for r in pr), sum(r["routed"] for r in pr)
                note = f", {rep / max(routed, 1):.1%} replays"
            print(f"added p99 (payroute - direct): {a99:.2f} ms [per round {', '.join(f'{d:.2f}' for d in diffs)}]; added p50: {a50:.2f} ms{note}")
            for o in ("nginx", "haproxy"):
                if o in rounds:
                    o99, odiffs = added(o)
                    print(f"  for comparison, {o} - direct p99: {o99:.2f} ms [per round {', '.join(f'{d:.2f}' for d in odiffs)}]")
            verdicts.append((f"2. added p99 at fixed rate <= 1 ms ({generator})", a99 <= 1.0,
                             f"{a99:.2f} ms at {pr[0]['rate']}/s, median of {len(diffs)} round(s){note}"))
        print()

    lat = by("latency")
    if lat:
        latency(lat, "k6 constant-arrival-rate", "k6", ("dropped", lambda r: r["dropped_iterations"]))
    lat2 = by("latency_oha")
    if lat2:
        latency(lat2, "oha -q --latency-correction, bodies drawn from a file of unique lines", "oha",
                ("replayed", lambda r: r["replayed"]))

    # Journal (issue 13) --------------------------------------------------
    jt = by("journal")
    if jt:
        print("== journal: this build (journal on, SQLite) against BASELINE (no journal); wrk closed loop, median of rounds")
        print(f"{'target':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'RSS MiB':>8} {'CPU us/req':>10}  req/s per round")
        for t in ("baseline", "journal"):
            rs = [r for r in jt if r["target"] == t]
            for r in rs:
                check_run(r, f"journal {t} round {r.get('round')}")
            if rs:
                print(f"{t:10} {med([r['rps'] for r in rs]):9.0f} {med([r['p50_us'] for r in rs]) / 1e3:8.2f} "
                      f"{med([r['p99_us'] for r in rs]) / 1e3:8.2f} {max(r['rss_kb'] for r in rs) / MIB:8.1f} "
                      f"{med([r['cpu_us_per_req'] for r in rs]):10.1f}  " + "/".join(f"{r['rps']:.0f}" for r in rs))
        per, cpu = [], []
        for rd in sorted({r.get("round") for r in jt}):
            on = [r for r in jt if r["target"] == "journal" and r.get("round") == rd]
            off = [r for r in jt if r["target"] == "baseline" and r.get("round") == rd]
            if on and off:
                per.append(on[0]["rps"] / off[0]["rps"])
                cpu.append(on[0]["cpu_us_per_req"] / max(off[0]["cpu_us_per_req"], 1e-9))
        if per:
            ratio = med(per)
            print(f"journal/baseline req/s: {ratio:.3f}x (cost {1 - ratio:+.1%}) [per round {', '.join(f'{p:.3f}' for p in per)}]; "
                  f"CPU per request {med(cpu):.2f}x")
            verdicts.append(("13a. the journal costs <= 10 % of throughput", ratio >= 0.9,
                             f"{ratio:.3f}x, median of {len(per)} round(s)"))
        for sec, gen in (("journal_latency", "k6"), ("journal_latency_oha", "oha")):
            lr = by(sec)
            if not lr:
                continue
            rounds = {}
            for r in lr:
                check_run(r, f"{sec} {r['target']} round {r.get('round', 1)}")
                rounds.setdefault(r["target"], {})[r.get("round", 1)] = r
            print(f"p99 at {lr[0]['rate']} req/s ({gen}), per round: " + "; ".join(
                f"{t} " + "/".join(f"{r['p99_ms']:.2f}" for r in rounds.get(t, {}).values()) for t in ("baseline", "journal")))
            on, off = rounds.get("journal", {}), rounds.get("baseline", {})
            diffs = [on[k]["p99_ms"] - off[k]["p99_ms"] for k in on if k in off]
            d50 = [on[k]["p50_ms"] - off[k]["p50_ms"] for k in on if k in off]
            if diffs:
                d = med(diffs)
                print(f"  journal - baseline: p99 {d:+.2f} ms [per round {', '.join(f'{x:+.2f}' for x in diffs)}], p50 {med(d50):+.2f} ms")
                verdicts.append((f"13b. p99 at {lr[0]['rate']}/s within +0.5 ms ({gen})", d <= 0.5,
                                 f"{d:+.2f} ms, median of {len(diffs)} round(s)"))
        size = by("journal_size")
        if size:
            z = size[0]
            print(f"journal: {z['payments']} payments recorded in {z['db_kb'] / MIB:.1f} MiB (payroute.db + WAL); "
                  f"peak RSS {z['hwm_kb'] / MIB:.1f} MiB with the journal, {z['baseline_hwm_kb'] / MIB:.1f} MiB without")
        print()

    # CPU per request at a fixed rate (issue 19) -----------------------------
    ct = by("cpu")
    if ct:
        rate = ct[0]["rate"]
        print(f"== cpu: CPU per request at {rate} req/s offered (oha -q), its process tree's user + system; median of rounds")
        print(f"{'target':19} {'answered/s':>10} {'CPU us/req':>10} {'system':>7} {'p99 ms':>8} {'replayed':>8}  CPU us/req per round")
        names = [t for t in ("direct", "nginx", "haproxy", "hyper-floor", "payroute", "payroute-nojournal") if any(r["target"] == t for r in ct)]
        cpu = {}
        for t in names:
            rs = [r for r in ct if r["target"] == t]
            for r in rs:
                check_run(r, f"cpu {t} round {r.get('round')}")
            cpu[t] = med([r["cpu_us_per_req"] for r in rs])
            print(f"{t:19} {med([r['achieved_rps'] for r in rs]):10.0f} {cpu[t]:10.1f} {med([r['sys_us_per_req'] for r in rs]):7.1f} "
                  f"{med([r['p99_ms'] for r in rs]):8.2f} {sum(r['replayed'] for r in rs):8d}  " + "/".join(f"{r['cpu_us_per_req']:.1f}" for r in rs))
        # hyper-floor relays on payroute's stack and does nothing else: its
        # ratio to nginx is the part of issue 19's budget the stack itself
        # takes; payroute's to it, what payroute's own work adds.
        if "hyper-floor" in cpu and "nginx" in cpu:
            print(f"  hyper-floor/nginx CPU per request: {cpu['hyper-floor'] / max(cpu['nginx'], 1e-9):.2f}x (the stack alone)")
        for mine in ("payroute", "payroute-nojournal"):
            if mine in cpu and "hyper-floor" in cpu:
                print(f"  {mine}/hyper-floor CPU per request: {cpu[mine] / max(cpu['hyper-floor'], 1e-9):.2f}x")
            for other in ("nginx", "haproxy"):
                if mine in cpu and other in cpu:
                    ratio = cpu[mine] / max(cpu[other], 1e-9)
                    print(f"  {mine}/{other} CPU per request: {ratio:.2f}x")
                    if other == "nginx":
                        verdicts.append((f"19. {mine} CPU per payment <= 1.0x nginx's at {rate}/s", ratio <= 1.0, f"{ratio:.2f}x"))
        print()

    # Memory ---------------------------------------------------------------
    mem = by("memory")
    peak = by("memory_peak")
    if mem:
        r = mem[0]
        check_run(r, "memory")
        p = peak[0] if peak else {}
        hwm = p.get("hwm_kb", 0) / MIB
        print("== memory")
        print(f"{r['merchants']} merchants configured, {r['active']} active, {r['requests']} unique payments in {r['duration_us'] / 1e6:.0f} s ({r['rps']:.0f} req/s)")
        print(f"RSS idle after start: {r['rss_idle_kb'] / MIB:.1f} MiB; RSS after the run: {r['rss_kb'] / MIB:.1f} MiB; peak (VmHWM): {hwm:.1f} MiB")
        verdicts.append(("3. RSS <= 64 MiB (100k merchants, 10k active)", hwm <= 64, f"peak {hwm:.1f} MiB, after run {r['rss_kb'] / MIB:.1f} MiB"))
        print()

    # Reload ---------------------------------------------------------------
    steady, during, times = by("reload_steady"), by("reload_during"), by("reload_times")
    if steady and during and times:
        # Rounds of (steady, during reloads); each ratio within its round.
        rounds = sorted({r.get("round", 1) for r in during})
        one = lambda rows, k: next(r for r in rows if r.get("round", 1) == k)
        ratios, failed, requests, codes, all_ms = [], 0, 0, set(), []
        for k in rounds:
            a, b = one(steady, k), one(during, k)
            check_run(a, f"reload steady round {k}")
            check_run(b, f"reload during round {k}")
            ratios.append(b["p99_ms"] / max(a["p99_ms"], 1e-9))
            failed += round(b["failed_rate"] * b["requests"])
            requests += b["requests"]
        for t in times:
            codes.update(t["http_codes"])
            all_ms += t["reload_ms"]
        all_ms.sort()
        if sorted(codes) != ["200"]:
            problems.append(f"reload endpoint answered {sorted(codes)}")
        t0, b0 = times[0], during[0]
        mx, md = (max(all_ms), all_ms[len(all_ms) // 2]) if all_ms else (None, None)
        ratio = med(ratios)
        print(f"== reload ({len(rounds)} round(s) of steady, then reloading)")
        print(f"{t0['merchants']} merchants; {len(all_ms)} reloads (POST /-/reload, once a second) during {len(rounds)} x {b0['duration']} at {b0['rate']} req/s")
        print(f"reload time ms (endpoint round trip): median {md:.0f}, max {mx:.0f}; all: {', '.join(f'{x:.0f}' for x in all_ms)}")
        for k, q in zip(rounds, ratios):
            a, b = one(steady, k), one(during, k)
            print(f"round {k}: steady p50 {a['p50_ms']:.2f} p99 {a['p99_ms']:.2f} ms | during reloads p50 {b['p50_ms']:.2f} p99 {b['p99_ms']:.2f} ms ({q:.2f}x)")
        print(f"p99 during reloads / steady: median {ratio:.2f}x; failed requests {failed} of {requests}")
        verdicts.append(("4a. reload of the 100k file <= 300 ms", mx is not None and mx <= 300, f"max {mx:.0f} ms, median {md:.0f} ms"))
        verdicts.append(("4b. zero failed requests during reloads", failed == 0, f"{failed} failed of {requests}"))
        verdicts.append(("4c. p99 during reload <= 2x steady", ratio <= 2,
                         f"median of {len(rounds)} round(s) {ratio:.2f}x [{', '.join(f'{q:.2f}' for q in ratios)}]"))
        print()

    # Scale ----------------------------------------------------------------
    sc_runs = by("scale")
    if sc_runs:
        for r in sc_runs:
            check_run(r, f"scale {r['channels']}x{r['merchants']} round {r.get('round')}")
        sc = scale_medians(sc_runs)
        print("== scale (wrk closed loop, 1,000 active merchants; median of rounds)")
        print(f"{'channels':>8} {'merchants':>9} {'req/s':>8} {'p99 ms':>8} {'CPU us/req':>10} {'min':>6} {'per round':>16} {'RSS idle MiB':>12} {'RSS MiB':>8} {'startup s':>9}")
        for r in sc:
            per = "/".join(f"{x:.0f}" for x in r["cpu_rounds"])
            print(f"{r['channels']:8d} {r['merchants']:9d} {r['rps']:8.0f} {r['p99_us'] / 1e3:8.2f} {r['cpu_us_per_req']:10.1f} {r['cpu_min']:6.1f} {per:>16} {r['rss_idle_kb'] / MIB:12.1f} {r['rss_kb'] / MIB:8.1f} {r['startup_s']:9d}")
        base = [r for r in sc if r["channels"] == min(x["channels"] for x in sc) and r["merchants"] == min(x["merchants"] for x in sc)]
        if base:
            # Judged on each point's least-disturbed round (min), medians shown too.
            b0 = base[0]["cpu_min"]
            ch = [r for r in sc if r["merchants"] == base[0]["merchants"]]
            me = [r for r in sc if r["channels"] == base[0]["channels"]]
            wc = max(ch, key=lambda r: r["channels"])
            wm = max(me, key=lambda r: r["merchants"])
            dc = wc["cpu_min"] / b0 - 1
            dm = wm["cpu_min"] / b0 - 1
            mc = wc["cpu_us_per_req"] / base[0]["cpu_us_per_req"] - 1
            mm = wm["cpu_us_per_req"] / base[0]["cpu_us_per_req"] - 1
            print(f"CPU per request (min of rounds): {wc['channels']} vs {base[0]['channels']} channels {dc:+.0%}; {wm['merchants']} vs {base[0]['merchants']} merchants {dm:+.0%}")
            print(f"CPU per request (median of rounds, noisier): channels {mc:+.0%}; merchants {mm:+.0%}")
            verdicts.append((f"5a. CPU/req flat (<= +20%) {base[0]['channels']} -> {wc['channels']} channels", dc <= 0.2, f"{dc:+.0%}"))
            verdicts.append((f"5b. CPU/req flat (<= +20%) {base[0]['merchants']} -> {wm['merchants']} merchants", dm <= 0.2, f"{dm:+.0%}"))
        print()

    if verdicts:
        print("== targets (issue 3; 13a/b: issue 13)" + (" -- SMOKE RUN: numbers are meaningless" if smoke else ""))
        for name, ok, detail in verdicts:
            print(f"{'MET    ' if ok else 'NOT MET'}  {name}: {detail}")
    if problems:
        print("\n== problems")
        for p in problems:
            print("  " + p)
    if smoke and problems:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
