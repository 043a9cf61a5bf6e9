"""
PNG plots of a benchmark run (matplotlib, from the C{bench} extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

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
