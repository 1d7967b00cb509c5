#!/usr/bin/env python3
"""Chart bench.sh's scale section: req/s, p99 and payroute CPU per request
against channels (1,000 merchants) and configured merchants (3 channels).

    python3 loadtest/plot_scale.py loadtest/results/latest/results.jsonl loadtest/results/scale.png

Needs matplotlib (installed with pip if missing).
"""
import json
import subprocess
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    try:
        import matplotlib
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(l) for l in open(src) if l.strip()]
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
    from report import scale_medians
    sc = scale_medians([r for r in rows if r.get("section") == "scale"])
    if not sc:
        print("no scale rows", file=sys.stderr)
        return 1
    m0 = min(r["merchants"] for r in sc)
    c0 = min(r["channels"] for r in sc)
    by_ch = sorted((r for r in sc if r["merchants"] == m0), key=lambda r: r["channels"])
    by_m = sorted((r for r in sc if r["channels"] == c0), key=lambda r: r["merchants"])

    fig, axes = plt.subplots(3, 2, figsize=(10, 9), sharex="col")
    series = [
        ("req/s", lambda r: r["rps"]),
        ("p99 latency (ms)", lambda r: r["p99_us"] / 1000),
        ("payroute CPU per request (µs),\nleast-disturbed round", lambda r: r["cpu_min"]),
    ]
    for col, (data, xkey, xlabel, log) in enumerate([
        (by_ch, "channels", f"channels ({m0:,} merchants configured)", False),
        (by_m, "merchants", f"merchants configured ({c0} channels, log scale)", True),
    ]):
        xs = [r[xkey] for r in data]
        for row, (ylabel, f) in enumerate(series):
            ax = axes[row][col]
            ys = [f(r) for r in data]
            ax.plot(xs, ys, marker="o")
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:,.0f}" if y >= 100 else f"{y:.2f}", (x, y), textcoords="offset points",
                            xytext=(0, 6), ha="center", fontsize=8)
            if log:
                ax.set_xscale("log")
            ax.set_ylim(bottom=0, top=max(ys) * 1.25)
            ax.grid(True, alpha=0.3)
            if col == 0:
                ax.set_ylabel(ylabel)
            if row == 2:
                ax.set_xlabel(xlabel)
            if row == 2 and ys:
                ax.axhline(ys[0] * 1.2, color="red", linestyle="--", linewidth=0.8, label="+20% of first point")
                ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("payroute scale (loadtest/bench.sh --sections scale; wrk, unique payments, 2-core box)\nreq/s and p99: median of 3 rounds; CPU per request: least-disturbed round", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
