"""
PNG plots of a benchmark run (matplotlib, from the C{bench} extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _servers(results: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s, v["label"]) for s, v in results["servers"].items()]


def _scenario(results: dict[str, Any], name: str, server: str) -> dict[str, Any]:
    value = results["scenarios"].get(name, {}).get(server)
    return value if isinstance(value, dict) and "error" not in value else {}


def _label(
    ax: Any, xlabel: str, ylabel: str, title: str, legend: bool, grid: str = "major"
) -> None:
    """
    Name the axes and title of a line chart, grid it (C{grid="both"} for the
    minor ticks of a log axis too), and give it a legend if C{legend}.
    """
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which=grid, alpha=0.3)
    if legend:
        ax.legend(fontsize=8)


def _save(fig: Any, path: Path, drawn: bool) -> list[Path]:
    """
    Write C{fig} to C{path} if anything was drawn on it, and close it either
    way; the list of what was written.
    """
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path] if drawn else []


def draw(results: dict[str, Any], out: Path) -> list[Path]:
    made = []
    made += _latency(results, out)
    made += _cost(results, out)
    made += _memory(results, out)
    made += _slow(results, out)
    made += _cluster(results, out)
    return made


def _latency(results: dict[str, Any], out: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    drawn = False
    for ax, scenario, title in (
        (axes[0], "light", "light load: 100 receivers, 10 senders x 20 lines/s"),
        (axes[1], "mixed", "mixed: rooms (if any) and /msg, 1 line/s per user"),
    ):
        for server, label in _servers(results):
            lat = _scenario(results, scenario, server).get("latency")
            if not lat or not lat.get("curve_ms"):
                continue
            curve = lat["curve_ms"]
            # x: percentile as "nines" (0 = p0, 1 = p90, 2 = p99, 3 = p99.9)
            xs = [4 * i / (len(curve) - 1) for i in range(len(curve))]
            ax.plot(xs, curve, label=label)
            drawn = True
        ax.set_yscale("log")
        ax.set_xticks([0, 1, 2, 3, 4], ["p0", "p90", "p99", "p99.9", "p99.99"])
        ax.set_ylabel("line latency, ms (log)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, out / "latency.png", drawn)


def _cost(results: dict[str, Any], out: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    drawn = False
    ax = axes[0]
    for server, label in _servers(results):
        xs, ys = [], []
        for level in (10, 100, 1000):
            r = _scenario(results, f"fanout-{level}", server)
            if r.get("server_us_per_line") is not None:
                xs.append(level)
                ys.append(r["server_us_per_line"])
        if xs:
            ax.plot(xs, ys, marker="o", label=label)
            drawn = True
    ax.set_xscale("log")
    ax.set_yscale("log")
    _label(
        ax,
        "receivers",
        "server CPU µs per delivered line (log)",
        "fan-out at the maximum rate",
        legend=drawn,
        grid="both",
    )

    ax = axes[1]
    labels, full, resumed, light = [], [], [], []
    for server, label in _servers(results):
        hs = _scenario(results, "handshake", server)
        lt = _scenario(results, "light", server)
        labels.append(label)
        full.append(hs.get("full", {}).get("server_us") or 0)
        resumed.append(hs.get("resumed", {}).get("server_us") or 0)
        light.append(lt.get("server_us_per_line") or 0)
    if any(full):
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], full, width=0.4, label="full")
        ax.bar([x + 0.2 for x in xs], resumed, width=0.4, label="resumed")
        ax.set_xticks(list(xs), labels, rotation=20, fontsize=8)
        ax.set_ylabel("server CPU µs per handshake")
        ax.set_title("TLS handshakes", fontsize=10)
        ax.legend(fontsize=8)
        drawn = True
    ax = axes[2]
    if any(light):
        ax.bar(range(len(labels)), light)
        ax.set_xticks(list(range(len(labels))), labels, rotation=20, fontsize=8)
        ax.set_ylabel("server CPU µs per delivered line")
        ax.set_title("light load", fontsize=10)
        drawn = True
    return _save(fig, out / "cost.png", drawn)


def _memory(results: dict[str, Any], out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    drawn = False
    for server, label in _servers(results):
        r = _scenario(results, "idle", server)
        pts = [
            (lv["held"], lv["kib_per_connection"])
            for lv in r.get("levels", [])
            if lv.get("kib_per_connection") is not None
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=label)
            drawn = True
    _label(
        ax,
        "idle TLS connections held",
        "server RSS growth per connection, KiB",
        "idle connections",
        legend=drawn,
    )
    return _save(fig, out / "memory.png", drawn)


def _slow(results: dict[str, Any], out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for server, label in _servers(results):
        r = _scenario(results, "slow", server)
        if not r.get("rss_b"):
            continue
        base = r["rss_a"][-1][1] if r.get("rss_a") else r["rss_b"][0][1]
        xs = [t for t, _ in r["rss_b"]]
        ys = [(v - base) / 1024 for _, v in r["rss_b"]]
        line = ax.plot(xs, ys, label=label)[0]
        if r.get("dropped_after_s") is not None:
            ax.axvline(r["dropped_after_s"], color=line.get_color(), ls=":", alpha=0.7)
        drawn = True
    _label(
        ax,
        "seconds since the client that never reads joined",
        "server RSS growth, MB",
        "slow reader (dotted: when the server dropped it)",
        legend=drawn,
    )
    return _save(fig, out / "slow_reader.png", drawn)


def _cluster(results: dict[str, Any], out: Path) -> list[Path]:
    """The cluster rows (bench/several_cores.py): cluster.png."""
    rows = results["scenarios"].get("cluster", {}).get("rows")
    if not isinstance(rows, dict) or "configs" not in rows:
        return []
    configs = rows["configs"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    drawn = False

    ax = axes[0]
    hs = rows.get("handshakes", {})
    labels = list(configs.values())
    per_s = [hs.get(c, {}).get("per_s") or 0 for c in configs]
    if any(per_s):
        positions = list(range(len(labels)))
        bars = ax.bar(positions, per_s)
        for bar, c in zip(bars, configs, strict=True):
            r = hs.get(c, {})
            if "server_cores" in r:
                ax.annotate(
                    f"cores: servers {r['server_cores']:.2f}\n"
                    f"generator {r['gen_cores']:.2f}\n"
                    f"Redis {r['redis_cores']:.2f}, other"
                    f" {r['other_load_cores']:.2f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_xticks(positions, labels, rotation=12, fontsize=8)
        ax.set_ylabel("full TLS handshakes per second")
        ax.set_title("handshakes (cores used above each bar)", fontsize=10)
        ax.margins(y=0.3)
        drawn = True

    ax = axes[1]
    for c, label in configs.items():
        steps = rows.get("light", {}).get(c, {}).get("steps", [])
        pts = [
            (s["lines_per_s"], s["p99_ms"])
            for s in steps
            if s.get("p99_ms") == s.get("p99_ms")
        ]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=label)
            drawn = True
    ax.axhline(5.0, color="grey", ls=":", label="p99 = 5 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # The minor ticks' labels of a log axis run into each other here.
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    _label(
        ax,
        "delivered lines/s (100 receivers, 10 senders, rate stepped up)",
        "p99 latency, ms (log)",
        "light load: capacity at p99 ≤ 5 ms",
        legend=drawn,
        grid="both",
    )

    ax = axes[2]
    fan = rows.get("fanout", {})
    names = [n for n in ("local", "cross", "local-200", "cross-200") if n in fan]
    a_cost, b_cost, redis = [], [], []
    for n in names:
        r = fan[n]
        each = r.get("server_us_per_line_each") or [0.0, 0.0]
        a_cost.append(each[0])
        b_cost.append(each[1])
        redis.append(r.get("redis_us_per_line") or 0.0)
    if names:
        xs = list(range(len(names)))
        ax.bar(xs, a_cost, label="node A (sender's)")
        ax.bar(xs, b_cost, bottom=a_cost, label="node B")
        tops = [x + y for x, y in zip(a_cost, b_cost, strict=True)]
        ax.bar(xs, redis, bottom=tops, label="Redis (not in the sum)")
        ticks = {
            "local": "max rate,\nall on A",
            "cross": "max rate,\nA -> B",
            "local-200": "200/s,\nall on A",
            "cross-200": "200/s,\nA -> B",
        }
        ax.set_xticks(xs, [ticks[n] for n in names], fontsize=8)
        ax.set_yscale("log")
        # Down to the cheapest bar's foot (a log axis starts at its data).
        low = min([v for v in a_cost if v > 0] or [1.0])
        ax.set_ylim(bottom=low / 3)
        ax.set_ylabel("CPU µs per delivered line (log)")
        ax.set_title("fan-out to 100 across two nodes", fontsize=10)
        ax.legend(fontsize=8)
        drawn = True
    return _save(fig, out / "cluster.png", drawn)
