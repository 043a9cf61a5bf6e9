#!/usr/bin/env python3
"""
The securemsg benchmark: one command runs every scenario against securemsg
and the reference peers, prints a table with ratios, writes JSON and PNG
plots under bench/results/.

    python bench/run.py            # everything, about 14 minutes on 2 cores
    python bench/run.py --quick    # a subset, about 4 minutes
    python bench/run.py --only fanout,light --servers securemsg,twisted
    python bench/run.py --only cluster   # 2 processes on Redis against 1
    python bench/run.py --profile  # py-spy profiles of securemsg (fan-out 100
                                   # and light load) instead of the table

See bench/README.md for what each scenario does and how to read the table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time
from array import array
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h
import several_cores

RESULTS = h.BENCH / "results"
SCENARIOS = [
    "handshake",
    "fanout",
    "light",
    "crowd",
    "idle",
    "slow",
    "mixed",
    "cluster",
]
#: The crowd: this many members, each saying this many lines a second
#: (securemsg's default flood rate, the most its defaults allow a client).
CROWD_MEMBERS = 100
CROWD_RATE = 5

#: Idle members in the room during the third handshake measurement.
ROOM_MEMBERS = 150
# ncat --chat uses select(): more than about 1000 descriptors crash it, and
# every join sends everyone the whole user list (O(n^2) bytes per join).
NCAT_MAX_CONNECTIONS = 1000


def pyopenssl_version() -> str:
    """The OpenSSL that pyOpenSSL (so Twisted, so securemsg) uses."""
    try:
        from OpenSSL import SSL
    except ImportError:
        return "none"
    return SSL.SSLeay_version(SSL.SSLEAY_VERSION).decode()


def source_state() -> dict[str, Any]:
    """Which securemsg was measured: the commit, and files changed since."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(h.ROOT), *args],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    changed = git("status", "--porcelain", "--", "src", "twisted")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": [line[3:] for line in changed.splitlines()],
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)


def busy_cores(a: tuple[int, int], b: tuple[int, int]) -> float:
    total = b[1] - a[1]
    if not total:
        return 0.0
    return (os.cpu_count() or 1) * (1 - (b[0] - a[0]) / total)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


PERCENTILES = [50, 90, 99, 99.9]


def latency_summary(samples_ns: list[int]) -> dict[str, Any]:
    values = sorted(v / 1e6 for v in samples_ns)
    out: dict[str, Any] = {"samples": len(values)}
    for p in PERCENTILES:
        out[f"p{p:g}_ms"] = percentile(values, p)
    out["max_ms"] = values[-1] if values else float("nan")
    # A compact curve for the plots: 200 quantiles.
    out["curve_ms"] = [
        percentile(values, 100 * (1 - 10 ** (-4 * i / 199))) for i in range(200)
    ]
    return out


def merge_rounds(runs: list[Any]) -> Any:
    """The element-wise median of several results of the same shape."""
    first = runs[0]
    if isinstance(first, bool) or first is None or isinstance(first, str):
        return first
    if isinstance(first, (int, float)):
        if all(isinstance(r, (int, float)) for r in runs):
            return median([float(r) for r in runs])
        return first
    if isinstance(first, dict):
        return {
            k: merge_rounds([r[k] for r in runs if isinstance(r, dict) and k in r])
            for k in first
        }
    if isinstance(first, list):
        if all(isinstance(r, list) and len(r) == len(first) for r in runs) and all(
            isinstance(v, (int, float)) for v in first
        ):
            return [median(list(v)) for v in zip(*runs, strict=True)]
        return first
    return first


def strip_bulk(result: dict[str, Any]) -> dict[str, Any]:
    """A result without its per-window data and latency curve, for the JSON."""
    out = {k: v for k, v in result.items() if k != "windows"}
    if isinstance(out.get("latency"), dict):
        out["latency"] = {k: v for k, v in out["latency"].items() if k != "curve_ms"}
    return out


def median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


# What fan-out, light load and the crowd report of their measurement windows.
WINDOW_FIGURES = (
    "lines_per_s",
    "server_us_per_line",
    "server_util",
    "gen_us_per_line",
    "gen_cores",
    "other_load_cores",
)


def window_medians(
    windows: list[dict[str, float]], keys: tuple[str, ...] = WINDOW_FIGURES
) -> dict[str, float]:
    """The median over the measurement windows of each figure in C{keys}."""
    return {key: median([w[key] for w in windows]) for key in keys}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.specs = h.server_specs()
        if args.securemsg_args:
            self.specs["securemsg"].argv += args.securemsg_args.split()
            self.specs["securemsg"].how += " " + args.securemsg_args
        names = args.servers.split(",") if args.servers else list(self.specs)
        self.servers = [n for n in names if n in self.specs]
        self.workers = args.workers
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.out = RESULTS / stamp
        self.out.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = self.make_certificate()
        # Others change src/ while a run goes on: every securemsg server of
        # a run is started from one copy of it, taken now.
        self.snapshot = self.take_snapshot()
        self.specs["securemsg"].env["PYTHONPATH"] = str(self.snapshot)
        if args.baseline:
            self.add_baseline(args.baseline)
        self.cgen: str | None = None
        self.cgen_note = "disabled (--python-generator)"
        if not args.python_generator:
            self.cgen, self.cgen_note = h.build_cgen(RESULTS / "build")
        self.results: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "quick": self.quick,
            "machine": {
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "openssl": ssl.OPENSSL_VERSION,
                "pyopenssl_openssl": pyopenssl_version(),
                "kernel": platform.release(),
            },
            "source": source_state(),
            "generator": {
                "kind": "cgen (C, OpenSSL)" if self.cgen else "loadgen.py",
                "workers": self.workers,
                "note": self.cgen_note,
            },
            "servers": {
                n: {"label": self.specs[n].label, "how": self.specs[n].how}
                for n in self.servers
            },
            "scenarios": {},
        }

    # ------------------------------------------------------------------

    def make_certificate(self) -> tuple[str, str]:
        """An ECDSA P-256 certificate for 127.0.0.1, made by securemsg."""
        from cryptography.hazmat.primitives import serialization

        from securemsg.tls import certs

        cert, key = certs.generate_self_signed(["127.0.0.1"])
        cert_path = self.out / "certificate.pem"
        key_path = self.out / "private.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return str(cert_path), str(key_path)

    def take_snapshot(self) -> Path:
        snapshot = self.out / "snapshot"
        shutil.copytree(
            h.ROOT / "src" / "securemsg",
            snapshot / "securemsg",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        plugins = snapshot / "twisted" / "plugins"
        plugins.mkdir(parents=True)
        shutil.copy2(h.ROOT / "twisted" / "plugins" / "securemsg_plugin.py", plugins)
        return snapshot

    def add_baseline(self, rev: str) -> None:
        """
        Measure securemsg at git revision C{rev} too, as the server
        C{baseline}, beside the working tree's: a before/after in one run.
        """
        folder = self.out / "baseline"
        folder.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(h.ROOT), "archive", rev, "src/securemsg", "twisted"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        shutil.move(folder / "src" / "securemsg", folder / "securemsg")
        spec = copy.deepcopy(self.specs["securemsg"])
        spec.name = "baseline"
        spec.label = f"securemsg at {rev}"
        spec.env["PYTHONPATH"] = str(folder)
        self.specs["baseline"] = spec
        if "baseline" not in self.servers:
            self.servers.insert(1 if "securemsg" in self.servers else 0, "baseline")

    def start(self, name: str) -> h.Server:
        return h.Server(self.specs[name], self.cert, self.key, self.out / "servers")

    def generator(
        self, server: h.Server, line_size: int = 100, python: bool = False
    ) -> h.Generator:
        cgen = None if python else self.cgen
        return h.Generator(server.port, self.workers, line_size, cgen=cgen)

    def settle(self, server: h.Server, limit: float = 15.0) -> float:
        """Wait until the server is nearly idle (join notices sent)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            a = server.cpu()
            time.sleep(0.3)
            if server.cpu() - a <= 0.03:
                break
        return time.monotonic() - t0

    def connect(
        self,
        gen: h.Generator,
        role: str,
        n: int,
        timeout: float = 60,
        only: int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        if only is not None:
            cmds: list[dict[str, Any] | None] = [None] * gen.nworkers
            cmds[only] = {"op": "connect", "role": role, "n": n, "timeout": timeout}
            cmds[only].update(extra)  # type: ignore[union-attr]
        else:
            cmds = []
            for i, k in enumerate(gen.split(n)):
                cmd = {"op": "connect", "role": role, "n": k, "timeout": timeout}
                cmd.update(extra)
                cmd["gid0"] = extra.get("gid0", 0) + sum(gen.split(n)[:i])
                cmds.append(cmd if k else None)
        t0 = time.monotonic()
        replies = [r for r in gen.all(cmds, timeout + 30) if r is not None]
        return {
            "done": sum(r["done"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "secs": time.monotonic() - t0,
        }

    def measure_windows(
        self, server: h.Server, gen: h.Generator, count: int, secs: float
    ) -> list[dict[str, float]]:
        windows = []
        for _ in range(count):
            m0 = machine_busy()
            a = h.Snapshot.take(server, gen)
            time.sleep(secs)
            b = h.Snapshot.take(server, gen)
            m1 = machine_busy()
            w = h.window(a, b)
            w["machine_busy_cores"] = busy_cores(m0, m1)
            w["other_load_cores"] = max(
                0.0, w["machine_busy_cores"] - w["server_util"] - w["gen_cores"]
            )
            windows.append(w)
        return windows

    def record(self, name: str, key: str, value: Any) -> None:
        self.results["scenarios"].setdefault(name, {})[key] = value
        self.save()

    def save(self) -> None:
        (self.out / "results.json").write_text(
            json.dumps(self.results, indent=1, default=str)
        )

    # ------------------------------------------------------------------
    # Scenarios

    def handshake(self, name: str) -> dict[str, Any]:
        secs = 1.0 if self.quick else 2.0
        out: dict[str, Any] = {}
        for mode in ("full", "resumed", "room"):
            server = self.start(name)
            gen = self.generator(server)
            try:
                if mode == "room":
                    # Full handshakes again, with members in the room who
                    # each hear of every arrival and departure (if the
                    # server announces them).
                    self.connect(gen, "recv", ROOM_MEMBERS)
                    self.settle(server)
                # Warm up (imports, caches), then measure.
                gen.same({"op": "handshakes", "secs": 0.3, "conc": 4})
                m0 = machine_busy()
                c0, g0, t0 = server.cpu(), gen.cpu(), time.monotonic()
                replies = gen.same(
                    {
                        "op": "handshakes",
                        "secs": secs,
                        "conc": 16,
                        "resume": mode == "resumed",
                    },
                    timeout=secs + 30,
                )
                c1, g1, t1 = server.cpu(), gen.cpu(), time.monotonic()
                m1 = machine_busy()
                done = sum(r["handshakes"] for r in replies)
                resumed = sum(r["resumed"] for r in replies)
                errors = sum(r["errors"] for r in replies)
                out[mode] = {
                    "handshakes": done,
                    "per_s": done / (t1 - t0),
                    "server_us": (c1 - c0) * 1e6 / done if done else float("nan"),
                    "server_util": (c1 - c0) / (t1 - t0),
                    "gen_us": (g1 - g0) * 1e6 / done if done else float("nan"),
                    "gen_cores": (g1 - g0) / (t1 - t0),
                    "resumed_share": resumed / done if done else 0.0,
                    "errors": errors,
                    "alive": server.alive(),
                    "other_load_cores": max(
                        0.0,
                        busy_cores(m0, m1) - (c1 - c0 + g1 - g0) / (t1 - t0),
                    ),
                }
            finally:
                server.kill()
                gen.close()
        return out

    def fanout(self, name: str, receivers: int) -> dict[str, Any]:
        server = self.start(name)
        gen = self.generator(server)
        try:
            joined = self.connect(gen, "recv", receivers, timeout=120)
            sender = self.connect(gen, "send", 1, only=0)
            settle = self.settle(server)
            expect = joined["done"]  # every receiver gets each line
            window = max(200, min(8000, 400_000 // max(1, expect)))
            batch = max(32, min(1024, window // 8))
            if gen.compiled:
                gen.same({"op": "coalesce", "us": self.args.coalesce_us})
            gen.all(
                [
                    {
                        "op": "send",
                        "mode": "max",
                        "window": window,
                        "expect": expect,
                        "batch": batch,
                    }
                ]
                + [None] * (gen.nworkers - 1)
            )
            time.sleep(1.0 if self.quick else 1.5)
            count, secs = (3, 1.0) if self.quick else (3, 2.0)
            windows = self.measure_windows(server, gen, count, secs)
            gen.all([{"op": "stop_send"}] + [None] * (gen.nworkers - 1))
            return {
                "receivers": expect,
                "connect": joined,
                "sender": sender,
                "settle_s": settle,
                "window_lines": window,
                "batch_lines": batch,
                "windows": windows,
                **window_medians(windows),
                "lost": gen.counter(h.LOST),
                "alive": server.alive(),
            }
        finally:
            server.kill()
            gen.close()

    def rate_run(
        self,
        server: h.Server,
        gen: h.Generator,
        rate: float,
        count: int,
        secs: float,
        tag: str,
        total_senders: int,
        extra_send: dict[str, Any] | None = None,
    ) -> tuple[list[dict[str, float]], dict[str, Any]]:
        """Senders at C{rate} lines/s each; latency recorded over the windows."""
        # Worker i's senders start i/(rate x all senders) s after worker 0's,
        # so that lines from all workers interleave evenly.
        cmds: list[dict[str, Any] | None] = []
        for i in range(gen.nworkers):
            cmd = {
                "op": "send",
                "mode": "rate",
                "rate": rate,
                "offset": i / (rate * max(1, total_senders)),
            }
            if extra_send:
                cmd.update(extra_send)
            cmds.append(cmd)
        gen.all(cmds)
        time.sleep(1.0)
        gen.same({"op": "record", "on": True, "clear": True})
        windows = self.measure_windows(server, gen, count, secs)
        gen.same({"op": "record", "on": False})
        latency = self.collect_latencies(gen, tag)
        gen.same({"op": "stop_send"})
        return windows, latency

    def light(self, name: str) -> dict[str, Any]:
        return self.room_at_rate(name, receivers=100, senders=10, rate=20)

    def crowd(self, name: str) -> dict[str, Any]:
        """
        A busy room as securemsg's defaults allow one: every member speaks
        at the default flood rate and reads the others.
        """
        return self.room_at_rate(
            name, receivers=0, senders=CROWD_MEMBERS, rate=CROWD_RATE
        )

    def room_at_rate(
        self, name: str, *, receivers: int, senders: int, rate: float
    ) -> dict[str, Any]:
        """
        C{receivers} that only read and C{senders} that each say C{rate}
        lines a second (and read the others' too), in one room.
        """
        server = self.start(name)
        gen = self.generator(server)
        try:
            joined = self.connect(gen, "recv", receivers)
            speaking = self.connect(gen, "send", senders)
            self.settle(server)
            count, secs = (3, 1.5) if self.quick else (3, 2.0)
            windows, latency = self.rate_run(
                server, gen, rate, count, secs, name, speaking["done"]
            )
            return {
                "receivers": joined["done"],
                "senders": speaking["done"],
                "rate_per_sender": rate,
                "windows": windows,
                **window_medians(windows),
                "latency": latency,
                "lost": gen.counter(h.LOST),
            }
        finally:
            server.kill()
            gen.close()

    def in_rounds(self, scenario: str, fn: Any) -> None:
        """
        Handshakes, light load and the crowd are the most sensitive to other load on
        the machine: run them in rounds that go through every server in
        turn, and keep the median of each figure over the rounds.
        """
        rounds = 1 if self.quick else 3
        collected: dict[str, list[dict[str, Any]]] = {n: [] for n in self.servers}
        for k in range(rounds):
            for name in self.servers:
                log(f"{scenario} (round {k + 1} of {rounds}): {name} ...")
                t0 = time.monotonic()
                try:
                    result = fn(name)
                except Exception as error:  # one failure is a result too
                    log(f"  {name} failed: {type(error).__name__}: {error}")
                    continue
                collected[name].append(result)
                took = time.monotonic() - t0
                log(f"  {summary(scenario, result)}  ({took:.0f} s)")
        for name, runs in collected.items():
            if not runs:
                self.record(scenario, name, {"error": "every round failed"})
                continue
            merged = merge_rounds(runs)
            merged["rounds"] = len(runs)
            merged["each_round"] = [strip_bulk(r) for r in runs]
            self.record(scenario, name, merged)
            line = summary(scenario, merged)
            log(f"{scenario}, median of {len(runs)}: {name}: {line}")

    def idle(self, name: str) -> dict[str, Any]:
        levels = [1000] if self.quick else [1000, 5000, 10000]
        budget = 30.0 if self.quick else 130.0
        if name == "ncat":
            levels = [NCAT_MAX_CONNECTIONS] if not self.quick else []
        out: dict[str, Any] = {"levels": []}
        if not levels:
            out["skipped"] = "ncat: select() limit; full run only"
            return out
        server = self.start(name)
        gen = self.generator(server)
        t_start = time.monotonic()
        try:
            gen.same({"op": "handshakes", "secs": 0.3, "conc": 4})
            time.sleep(1.0)
            base = server.rss()
            out["base_rss_kib"] = base
            held = 0
            for level in levels:
                left = budget - (time.monotonic() - t_start)
                if left <= 5:
                    out["stopped"] = f"time budget of {budget:g} s used up"
                    break
                c0 = server.cpu()
                ramp = self.connect(gen, "idle", level - held, timeout=left, conc=16)
                cpu = server.cpu() - c0
                settle = self.settle(server, limit=20)
                held = gen.counter(h.READY) - gen.counter(h.LOST)
                if not server.alive():
                    out["levels"].append({"target": level, "died": True})
                    out["stopped"] = "server died"
                    break
                rss = server.rss()
                newcomer = self.connect(gen, "recv", 1, timeout=30, only=0)
                out["levels"].append(
                    {
                        "target": level,
                        "held": held,
                        "ramp_s": ramp["secs"],
                        "failed": ramp["failed"],
                        "ramp_server_cpu_s": cpu,
                        "server_us_per_connection": cpu * 1e6 / max(1, ramp["done"]),
                        "settle_s": settle,
                        "rss_kib": rss,
                        "kib_per_connection": (rss - base) / held if held else None,
                        "new_client_ok": newcomer["done"] == 1,
                        "new_client_ms": newcomer["secs"] * 1000,
                    }
                )
                held = gen.counter(h.READY) - gen.counter(h.LOST)
                if held < level * 0.9:
                    out["stopped"] = f"only {held} of {level} connections held"
                    break
            return out
        finally:
            server.kill()
            gen.close()

    def slow(self, name: str) -> dict[str, Any]:
        """
        20 receivers and 10 senders x 50 lines/s of 1000 bytes; then one
        client that never reads joins.  Phase A without it, B with it.
        """
        line = 1000
        a_secs, b_secs = (2.0, 6.0) if self.quick else (4.0, 12.0)
        server = self.start(name)
        gen = self.generator(server, line_size=line)
        rss: list[tuple[float, int]] = []
        try:
            self.connect(gen, "recv", 20)
            self.connect(gen, "send", 10)
            self.settle(server)
            cmds = [
                {"op": "send", "mode": "rate", "rate": 50, "offset": i * 0.001}
                for i in range(gen.nworkers)
            ]
            gen.all(cmds)
            time.sleep(1.0)
            # Phase A
            gen.same({"op": "record", "on": True, "clear": True})
            t0 = time.monotonic()
            while time.monotonic() - t0 < a_secs:
                rss.append((time.monotonic() - t0, server.rss()))
                time.sleep(0.25)
            gen.same({"op": "record", "on": False})
            lat_a = self.collect_latencies(gen, f"{name}-slowA")
            rss_a = median([r for _, r in rss])
            # Phase B: the slow reader
            gen.same({"op": "record", "on": True, "clear": True})
            self.connect(gen, "slow", 1, only=0, rcvbuf=4096)
            port_reply = gen.all(
                [{"op": "ports", "roles": ["slow"]}] + [None] * (gen.nworkers - 1)
            )[0]
            assert port_reply is not None
            ports = port_reply["ports"]
            slow_port = ports[0] if ports else None
            tb = time.monotonic()
            dropped_after = None
            rss_b: list[tuple[float, int]] = []
            while time.monotonic() - tb < b_secs:
                now = time.monotonic() - tb
                rss_b.append((now, server.rss()))
                if (
                    dropped_after is None
                    and slow_port is not None
                    and not h.server_holds_peer(server.pid, server.port, slow_port)
                ):
                    dropped_after = now
                time.sleep(0.25)
            gen.same({"op": "record", "on": False})
            lat_b = self.collect_latencies(gen, f"{name}-slowB")
            gen.same({"op": "stop_send"})
            peak = max(r for _, r in rss_b)
            return {
                "line_bytes": line,
                "rate": "10 senders x 50 lines/s, 20 receivers",
                "dropped_after_s": dropped_after,
                "rss_growth_kib": peak - rss_a,
                "rss_end_growth_kib": rss_b[-1][1] - rss_a,
                "p99_before_ms": lat_a["p99_ms"],
                "p99_during_ms": lat_b["p99_ms"],
                "p50_before_ms": lat_a["p50_ms"],
                "p50_during_ms": lat_b["p50_ms"],
                "others_lost": gen.counter(h.LOST),
                "rss_a": rss,
                "rss_b": rss_b,
            }
        finally:
            server.kill()
            gen.close()

    def collect_latencies(self, gen: h.Generator, tag: str) -> dict[str, Any]:
        samples: list[int] = []
        for i in range(gen.nworkers):
            path = self.out / f"lat-{tag}-{i}.bin"
            cmds: list[dict[str, Any] | None] = [None] * gen.nworkers
            cmds[i] = {"op": "dump_latencies", "path": str(path)}
            gen.all(cmds)
            data = array("q")
            with open(path, "rb") as f:
                data.frombytes(f.read())
            samples.extend(data)
            path.unlink()
        return latency_summary(samples)

    def probe_rooms(self, server: h.Server) -> tuple[bool, str]:
        """Whether the server answers /join without 'unknown command'."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        address = ("127.0.0.1", server.port)
        try:
            with (
                socket.create_connection(address, timeout=5) as raw,
                context.wrap_socket(raw) as tls,
            ):
                tls.settimeout(2)
                data = b""
                while b"\n" not in data:
                    data += tls.recv(4096)
                # Let the greeting and anything after it arrive, then ask.
                tls.settimeout(0.3)
                with contextlib.suppress(TimeoutError, ssl.SSLError, OSError):
                    while tls.recv(65536):
                        pass
                tls.settimeout(2)
                tls.sendall(b"/join #benchprobe\n")
                answer = b""
                while b"\n" not in answer:
                    answer += tls.recv(4096)
        except (TimeoutError, OSError):
            return False, "no answer to /join"
        first = answer.split(b"\n", 1)[0].decode("utf-8", "replace")
        return not first.startswith("!!! unknown command"), first

    def mixed(self, name: str) -> dict[str, Any]:
        """Named users sending room (or public) and private lines at 1/s."""
        users = 100 if self.quick else 200
        server = self.start(name)
        gen = self.generator(server, python=True)
        try:
            rooms, answer = self.probe_rooms(server)
            self.settle(server)
            join = [f"#r{k}" for k in range(10)] if rooms else None
            joined = self.connect(
                gen, "send", users, timeout=120, nick="u", join=join, conc=8
            )
            self.settle(server)
            names = [f"u{k}" for k in range(users)]
            count, secs = (3, 1.5) if self.quick else (3, 3.0)
            windows, latency = self.rate_run(
                server,
                gen,
                1.0,
                count,
                secs,
                f"{name}-mixed",
                joined["done"],
                extra_send={"names": names, "private": 0.5},
            )
            return {
                "users": joined["done"],
                "failed": joined["failed"],
                "rooms": rooms,
                "join_answer": answer,
                "rooms_joined": join,
                "private_share": 0.5,
                "rate_per_user": 1.0,
                "windows": windows,
                "lines_per_s": median([w["lines_per_s"] for w in windows]),
                "sent_per_s": median([w["sent"] / w["secs"] for w in windows]),
                "server_us_per_line": median(
                    [w["server_us_per_line"] for w in windows]
                ),
                "server_util": median([w["server_util"] for w in windows]),
                "gen_cores": median([w["gen_cores"] for w in windows]),
                "latency": latency,
                "lost": gen.counter(h.LOST),
            }
        finally:
            server.kill()
            gen.close()

    # ------------------------------------------------------------------

    def run(self) -> None:
        only = self.args.only.split(",") if self.args.only else SCENARIOS
        fan_levels = [100, 1000] if self.quick else [10, 100, 1000]
        t0 = time.monotonic()
        log(
            f"servers: {', '.join(self.servers)}; generator: "
            f"{self.results['generator']['kind']} x {self.workers} ({self.cgen_note})"
        )
        for scenario in only:
            for name in self.servers:
                if scenario == "mixed" and name != "securemsg":
                    continue
                if scenario in ("handshake", "light", "crowd"):
                    continue  # in rounds, below
                if scenario == "fanout":
                    for r in fan_levels:
                        if name == "ncat" and r > NCAT_MAX_CONNECTIONS // 2:
                            self.record(
                                f"fanout-{r}",
                                name,
                                {"skipped": "ncat: O(n^2) join lists, select()"},
                            )
                            continue
                        self.step(
                            f"fanout-{r}", name, lambda n=name, r=r: self.fanout(n, r)
                        )
                elif scenario == "idle":
                    self.step(scenario, name, lambda n=name: self.idle(n))
                elif scenario == "slow":
                    self.step(scenario, name, lambda n=name: self.slow(n))
                elif scenario == "mixed":
                    self.step(scenario, name, lambda n=name: self.mixed(n))
            if scenario == "handshake":
                self.in_rounds(scenario, self.handshake)
            elif scenario == "light":
                self.in_rounds(scenario, self.light)
            elif scenario == "crowd":
                self.in_rounds(scenario, self.crowd)
            elif scenario == "cluster":
                self.cluster()
        self.results["elapsed_s"] = time.monotonic() - t0
        self.save()
        table = full_table(self.results)
        (self.out / "table.md").write_text(table)
        print()
        print(table)
        try:
            import plots

            made = plots.draw(self.results, self.out)
            log("plots: " + ", ".join(str(p) for p in made))
        except ImportError as error:
            log(f"no plots ({error}); pip install -e '.[bench]'")
        latest = RESULTS / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(self.out.name)
        log(f"results in {self.out} (took {self.results['elapsed_s']:.0f} s)")

    def cluster(self) -> None:
        """
        The cluster rows (bench/several_cores.py): 2 securemsg processes
        on one port against 1, and fan-out across two nodes, on Redis.
        """
        if "securemsg" not in self.servers:
            return
        reason = several_cores.skip_reason()
        if reason is not None:
            log(f"cluster: skipped: {reason}")
            self.record("cluster", "rows", {"skipped": reason})
            return
        rows = several_cores.ClusterRows(self, log).run()
        self.record("cluster", "rows", rows)

    def step(self, scenario: str, name: str, fn: Any) -> None:
        log(f"{scenario}: {name} ...")
        t0 = time.monotonic()
        try:
            result = fn()
        except Exception as error:  # keep going: one failure is a result too
            result = {"error": f"{type(error).__name__}: {error}"}
            log(f"  {name} failed: {result['error']}")
        result["took_s"] = time.monotonic() - t0
        self.record(scenario, name, result)
        log(f"  {summary(scenario, result)}  ({result['took_s']:.0f} s)")


# ----------------------------------------------------------------------
# The table


fmt = h.fmt


def summary(scenario: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return "error: " + r["error"]
    if "skipped" in r:
        return "skipped: " + r["skipped"]
    if scenario == "handshake":
        return "; ".join(
            f"{m}: {fmt(v['per_s'])}/s, server {fmt(v['server_us'])} us, "
            f"gen {fmt(v['gen_us'])} us, resumed {v['resumed_share']:.0%}"
            for m, v in r.items()
            if isinstance(v, dict)
        )
    if scenario.startswith("fanout"):
        return (
            f"{fmt(r['lines_per_s'])} lines/s, server {fmt(r['server_us_per_line'])}"
            f" us/line ({r['server_util']:.0%} busy),"
            f" gen {fmt(r['gen_us_per_line'])} us/line"
            f" ({fmt(r['gen_cores'])} cores), others {fmt(r['other_load_cores'])}"
        )
    if scenario in ("light", "crowd", "mixed"):
        lat = r["latency"]
        return (
            f"{fmt(r['lines_per_s'])} lines/s, server {fmt(r['server_us_per_line'])}"
            f" us/line, p50 {fmt(lat['p50_ms'])} ms, p99 {fmt(lat['p99_ms'])} ms,"
            f" gen {fmt(r['gen_cores'])} cores"
        )
    if scenario == "idle":
        parts = [
            f"{lv.get('held')}: {fmt(lv.get('kib_per_connection'))} KiB/conn"
            f" (ramp {fmt(lv.get('ramp_s'))} s)"
            for lv in r.get("levels", [])
        ]
        return "; ".join(parts) + (f" [{r['stopped']}]" if "stopped" in r else "")
    if scenario == "slow":
        return (
            f"dropped after {fmt(r['dropped_after_s'])} s,"
            f" +{r['rss_growth_kib'] / 1024:.1f} MB, others p99"
            f" {fmt(r['p99_before_ms'])} -> {fmt(r['p99_during_ms'])} ms"
        )
    return ""


# Each row: label, function of the server's results -> number or text,
# whether lower is better (None: not a ratio row), issue target.
def _get(results: dict[str, Any], scenario: str, server: str) -> dict[str, Any]:
    value: dict[str, Any] = results["scenarios"].get(scenario, {}).get(server, {})
    return value if isinstance(value, dict) else {}


def _fan(level: int, key: str) -> Any:
    def get(res: dict[str, Any], s: str) -> Any:
        r = _get(res, f"fanout-{level}", s)
        return r.get(key)

    return get


def _fan_load(level: int) -> Any:
    def get(res: dict[str, Any], s: str) -> Any:
        r = _get(res, f"fanout-{level}", s)
        if r.get("server_util") is None:
            return None
        return f"{r['server_util']:.0%} / {fmt(r.get('gen_cores'))}"

    return get


def _latency(scenario: str, key: str) -> Any:
    def get(res: dict[str, Any], s: str) -> Any:
        return _get(res, scenario, s).get("latency", {}).get(key)

    return get


def _hs(mode: str, key: str) -> Any:
    def get(res: dict[str, Any], s: str) -> Any:
        return _get(res, "handshake", s).get(mode, {}).get(key)

    return get


def _idle_level(res: dict[str, Any], s: str, level: int) -> dict[str, Any] | None:
    """The idle scenario's figures at C{level} connections, if it got there."""
    for lv in _get(res, "idle", s).get("levels", []):
        if lv.get("target") == level:
            return lv
    return None


def _idle(level: int) -> Any:
    def get(res: dict[str, Any], s: str) -> Any:
        lv = _idle_level(res, s, level)
        if lv is None:
            return None
        kib = lv.get("kib_per_connection")
        if lv.get("held", 0) < level * 0.99:
            return f"{fmt(kib)} ({lv.get('held')} held)"
        return kib

    return get


def _idle_ramp(level: int) -> Any:
    def get(res: dict[str, Any], s: str) -> Any:
        lv = _idle_level(res, s, level)
        return None if lv is None else lv.get("server_us_per_connection")

    return get


def _idle_new(res: dict[str, Any], s: str) -> Any:
    r = _get(res, "idle", s)
    levels = r.get("levels", [])
    if not levels:
        return None
    last = levels[-1]
    ok = "yes" if last.get("new_client_ok") else "NO"
    return f"{ok}, {fmt(last.get('new_client_ms'))} ms at {last.get('held')}"


def _slow(res: dict[str, Any], s: str) -> Any:
    r = _get(res, "slow", s)
    if not r or "error" in r:
        return r.get("error") and "error"
    dropped = r.get("dropped_after_s")
    when = f"dropped after {dropped:.1f} s" if dropped is not None else "never dropped"
    return f"{when}, +{r['rss_growth_kib'] / 1024:.1f} MB"


def _slow_p99(res: dict[str, Any], s: str) -> Any:
    r = _get(res, "slow", s)
    if not r or "error" in r:
        return None
    return f"{fmt(r['p99_before_ms'])} → {fmt(r['p99_during_ms'])}"


def _mixed(key: str) -> Any:
    def get(res: dict[str, Any], s: str) -> Any:
        r = _get(res, "mixed", s)
        if key.startswith("p"):
            return r.get("latency", {}).get(key)
        return r.get(key)

    return get


ROWS: list[tuple[str, Any, bool | None, str]] = [
    (
        "fan-out 10 receivers, max rate: server µs per delivered line",
        _fan(10, "server_us_per_line"),
        True,
        "",
    ),
    (
        "fan-out 100 receivers, max rate: server µs per delivered line",
        _fan(100, "server_us_per_line"),
        True,
        "≤ 0.20",
    ),
    (
        "fan-out 1000 receivers, max rate: server µs per delivered line",
        _fan(1000, "server_us_per_line"),
        True,
        "≤ 0.50",
    ),
    (
        "fan-out 100: delivered lines/s (contended machine)",
        _fan(100, "lines_per_s"),
        False,
        "",
    ),
    (
        "fan-out 1000: delivered lines/s (contended machine)",
        _fan(1000, "lines_per_s"),
        False,
        "",
    ),
    (
        "fan-out 100: server busy / generator cores",
        _fan_load(100),
        None,
        "",
    ),
    (
        "fan-out 1000: server busy / generator cores",
        _fan_load(1000),
        None,
        "",
    ),
    (
        "light load (100 receivers, 10 senders × 20 lines/s): p50 latency ms",  # noqa: RUF001
        _latency("light", "p50_ms"),
        True,
        "",
    ),
    ("light load: p99 latency ms", _latency("light", "p99_ms"), True, "≤ 3"),
    (
        "light load: server µs per delivered line",
        lambda res, s: _get(res, "light", s).get("server_us_per_line"),
        True,
        "≤ 6",
    ),
    (
        f"crowd ({CROWD_MEMBERS} members, each {CROWD_RATE} lines/s):"
        " server µs per delivered line",
        lambda res, s: _get(res, "crowd", s).get("server_us_per_line"),
        True,
        "",
    ),
    ("crowd: p99 latency ms", _latency("crowd", "p99_ms"), True, ""),
    (
        "full TLS handshakes: server µs per handshake",
        _hs("full", "server_us"),
        True,
        "≤ 300",
    ),
    (
        "full TLS handshakes per second (contended machine)",
        _hs("full", "per_s"),
        False,
        "",
    ),
    ("resumption: server µs per handshake", _hs("resumed", "server_us"), True, ""),
    (
        f"full handshakes with {ROOM_MEMBERS} members in the room: server µs each",
        _hs("room", "server_us"),
        True,
        "",
    ),
    (
        "resumption: share of handshakes resumed",
        lambda res, s: (lambda v: None if v is None else f"{v:.0%}")(
            _hs("resumed", "resumed_share")(res, s)
        ),
        None,
        "",
    ),
    ("idle TLS connections: server KiB per connection at 1,000", _idle(1000), True, ""),
    ("idle: KiB per connection at 5,000", _idle(5000), True, ""),
    ("idle: KiB per connection at 10,000", _idle(10000), True, "≤ 20, 10,000 held"),
    (
        "idle: server µs per connection while ramping to 5,000 (joins)",
        _idle_ramp(5000),
        True,
        "",
    ),
    ("idle: new client served at the top level", _idle_new, None, ""),
    (
        "one client that never reads while others chat",
        _slow,
        None,
        "dropped, bounded growth",
    ),
    ("slow reader: others' p99 ms before → during", _slow_p99, None, "unchanged"),
    (
        "mixed (rooms if any + /msg): server µs per delivered line",
        _mixed("server_us_per_line"),
        None,
        "",
    ),
    ("mixed: p99 latency ms", _mixed("p99_ms"), None, ""),
]


def full_table(results: dict[str, Any]) -> str:
    """The table of every scenario run, and the cluster rows if run."""
    scenarios = results.get("scenarios", {})
    if set(scenarios) - {"cluster"}:
        table = render_table(results)
    else:
        source = results.get("source", {})
        table = (
            f"Run {results['date']}, securemsg at {source.get('commit')}"
            f" + {len(source.get('uncommitted', []))} uncommitted files,"
            f" `{results['command']}`, {results['machine']['cores']} cores,"
            f" {results['machine'].get('pyopenssl_openssl', '?')} in pyOpenSSL,"
            f" load generator: {results['generator']['kind']}.\n"
        )
    return table + several_cores.render(results)


def render_table(results: dict[str, Any]) -> str:
    servers = list(results["servers"])
    labels = [results["servers"][s]["label"] for s in servers]
    peers = [s for s in servers if s != "securemsg"]
    source = results.get("source", {})
    where = ""
    if source.get("commit"):
        where = f" securemsg at {source['commit']}"
        if source.get("uncommitted"):
            where += f" + {len(source['uncommitted'])} uncommitted files"
        where += ","
    lines = [
        f"Run {results['date']},{where} `{results['command']}`, "
        f"{results['machine']['cores']} cores, "
        f"{results['machine'].get('pyopenssl_openssl', '?')} in pyOpenSSL (Twisted),"
        f" {results['machine']['openssl']} in Python's ssl, ncat and cgen, "
        f"load generator: {results['generator']['kind']} × "  # noqa: RUF001
        f"{results['generator']['workers']} processes.",
        "",
        "| scenario | " + " | ".join(labels) + " | target |",
        "|---|" + "---|" * len(labels) + "---|",
    ]
    ratio_rows = []
    for label, get, lower, target in ROWS:
        values = [get(results, s) for s in servers]
        if all(v is None for v in values):
            continue
        lines.append(
            f"| {label} | " + " | ".join(fmt(v) for v in values) + f" | {target} |"
        )
        if lower is not None and "securemsg" in servers:
            ours = values[servers.index("securemsg")]
            if isinstance(ours, (int, float)):
                cells = []
                for p in peers:
                    theirs = get(results, p)
                    if isinstance(theirs, (int, float)) and theirs:
                        cells.append(f"{ours / theirs:.2f}×")  # noqa: RUF001
                    else:
                        cells.append("-")
                ratio_rows.append(f"| {label} | " + " | ".join(cells) + " |")
    if ratio_rows and peers:
        lines += [
            "",
            "securemsg ÷ each peer (for costs and latencies, below 1 means "
            "securemsg is better; for lines/s and handshakes/s, above 1):",
            "",
            "| scenario | "
            + " | ".join(results["servers"][p]["label"] for p in peers)
            + " |",
            "|---|" + "---|" * len(peers),
            *ratio_rows,
        ]
    gen_rows = []
    for s in servers:
        cells = []
        for scen in ("fanout-100", "fanout-1000", "light", "crowd"):
            r = _get(results, scen, s)
            if r.get("gen_cores") is not None:
                cells.append(
                    f"{fmt(r.get('gen_us_per_line'))} µs/line,"
                    f" {fmt(r.get('gen_cores'))} cores"
                )
            else:
                cells.append("-")
        hs = _get(results, "handshake", s).get("full", {})
        cells.append(
            f"{fmt(hs.get('gen_us'))} µs/hs, {fmt(hs.get('gen_cores'))} cores"
            if hs
            else "-"
        )
        gen_rows.append(
            f"| {results['servers'][s]['label']} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "The load generator's own CPU (all its processes, from /proc):",
        "",
        "| server | fan-out 100 | fan-out 1000 | light load | crowd"
        " | full handshakes |",
        "|---|---|---|---|---|---|",
        *gen_rows,
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------
# Profiling


#: What --profile runs each server under.
PROFILE_SCENARIOS = ("fanout-100", "light", "handshake")


def profile_runs(servers: str | None, only: str | None) -> list[tuple[str, str]]:
    """
    The (server, scenario) pairs --profile runs: securemsg unless
    C{servers} names others, each under the scenarios of
    L{PROFILE_SCENARIOS} that C{only} names (C{fanout} for fan-out 100).
    """
    names = servers.split(",") if servers else ["securemsg"]
    wanted = only.split(",") if only else None
    return [
        (name, scenario)
        for name in names
        for scenario in PROFILE_SCENARIOS
        if wanted is None or scenario.split("-")[0] in wanted
    ]


def profile(bench: Bench) -> None:
    """py-spy a server (securemsg, or the peers named) under load."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("bench: py-spy not found (pip install py-spy)")
    report: dict[str, Any] = {}
    for name, scenario in profile_runs(bench.args.servers, bench.args.only):
        # securemsg's keep their old names (and profile.json its old keys).
        key = scenario if name == "securemsg" else f"{name}-{scenario}"
        server = bench.start(name)
        gen = bench.generator(server)
        raw = bench.out / f"profile-{key}.txt"
        try:
            if scenario == "fanout-100":
                bench.connect(gen, "recv", 100)
                bench.connect(gen, "send", 1, only=0)
                bench.settle(server)
                if gen.compiled:
                    gen.same({"op": "coalesce", "us": bench.args.coalesce_us})
                gen.all(
                    [{"op": "send", "mode": "max", "window": 4000, "expect": 100}]
                    + [None] * (gen.nworkers - 1)
                )
            elif scenario == "light":
                bench.connect(gen, "recv", 100)
                bench.connect(gen, "send", 10)
                bench.settle(server)
                gen.all(
                    [
                        {"op": "send", "mode": "rate", "rate": 20, "offset": i * 0.005}
                        for i in range(gen.nworkers)
                    ]
                )
            secs = 8 if not bench.quick else 4
            if scenario == "handshake":
                for i in range(gen.nworkers):
                    gen.send(i, {"op": "handshakes", "secs": secs + 3, "conc": 16})
            time.sleep(1.5)
            log(f"profiling {name} in {scenario} for {secs} s ...")
            c0 = server.cpu()
            t0 = h.thread_cpu(server.pid)
            subprocess.run(
                [
                    *(spy, "record", "--pid", str(server.pid)),
                    *("--duration", str(secs), "--rate", "250", "--nonblocking"),
                    *("--threads", "--format", "raw", "--output", str(raw)),
                ],
                check=True,
                capture_output=True,
            )
            cpu = server.cpu() - c0
            t1 = h.thread_cpu(server.pid)
            per_thread: Counter[str] = Counter()
            for tid, (_, cpu_s) in t1.items():
                if tid in t0 and cpu_s > t0[tid][1]:
                    main = tid == str(server.pid)
                    kind = "reactor thread" if main else "thread pool (history)"
                    per_thread[kind] += cpu_s - t0[tid][1]
            if scenario == "handshake":
                for i in range(gen.nworkers):
                    gen.receive(i, 30)
        finally:
            server.kill()
            gen.close()
        report[key] = summarize_profile(raw)
        report[key]["server_cpu_s"] = cpu
        report[key]["thread_cpu_s"] = dict(per_thread)
        report[key]["server"], report[key]["scenario"] = name, scenario
    (bench.out / "profile.json").write_text(json.dumps(report, indent=1))
    text = render_profile(report)
    (bench.out / "profile.md").write_text(text)
    print(text)


BOILERPLATE = (
    "twisted/application/",
    "twisted/scripts/",
    "twisted/python/log.py",
    "twisted/python/context.py",
    "(twistd)",
    "threading.py",
    "twisted/_threads/",
    "twisted/python/threadpool.py",
)
BOILERPLATE_NAMES = (
    "ReactorBase.run ",
    "ReactorBase.mainLoop ",
    "EPollReactor.doPoll ",
)


def openssl_lines(source: Path) -> frozenset[str]:
    """
    The lines of securemsg's TLS layer (C{server/tlsserver.py} under
    C{source}, the run's snapshot of C{src/}) that call OpenSSL itself
    through pyOpenSSL's binding: py-spy, which sees Python frames only,
    gives their time to those lines.
    """
    path = source / "securemsg" / "server" / "tlsserver.py"
    if not path.exists():
        return frozenset()
    lines = path.read_text().splitlines()
    calls = ["_lib.", ".shutdown()", "_raise_ssl_error", "_creatorCallable"]
    # The module's own names for OpenSSL's calls (_ssl_write = _lib.SSL_write).
    calls += [
        alias.group(1) + "("
        for text in lines
        if (alias := re.match(r"(\w+) = _lib\.", text))
    ]
    return frozenset(
        f"securemsg/server/tlsserver.py:{number}"
        for number, text in enumerate(lines, 1)
        if any(call in text for call in calls)
    )


def _area(frames: list[str], openssl: frozenset[str] = frozenset()) -> str:
    """
    Which part of the stack the time of a sample belongs to (C{frames} as
    py-spy names them, with their lines; C{openssl}: see L{openssl_lines}).
    """
    leaf = frames[-1] if frames else ""
    where = leaf.partition(" (")[2].rstrip(")")
    if openssl and "securemsg/" + where.rpartition("securemsg/")[2] in openssl:
        return "OpenSSL via pyOpenSSL (crypto, BIOs)"
    frames = [_frame_name(f) for f in frames]
    leaf = frames[-1] if frames else ""
    if any("adbapi" in f or "history.py" in f for f in frames):
        return "history (securemsg/history.py, adbapi)"
    # securemsg's send_now is the send() system call and a few attribute
    # checks around it.
    if leaf.startswith(("untilConcludes", "Connection.writeSomeData", "send_now ")):
        return "kernel: send() to sockets"
    if leaf.startswith("Connection.doRead") or leaf.startswith("Port.doRead"):
        return "kernel: recv()/accept()"
    if leaf.startswith(("EPollReactor._add", "EPollReactor._remove")):
        return "kernel: epoll_ctl (start/stopWriting)"
    if leaf.startswith("EPollReactor.doPoll"):
        return "kernel: epoll_wait"
    if "(OpenSSL/" in leaf:
        return "OpenSSL via pyOpenSSL (crypto, BIOs)"
    if "(securemsg/" in leaf:
        return "securemsg's own Python"
    if "(twisted/logger/" in leaf:
        return "logging"
    if "(twisted/protocols/tls.py" in leaf:
        return "Twisted TLS layer (Python)"
    if "(twisted/protocols/basic.py" in leaf:
        return "LineReceiver"
    if "(twisted/" in leaf:
        return "Twisted reactor and TCP transport (Python)"
    return "other"


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    openssl = openssl_lines(path.parent / "snapshot")
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if frames and frames[0].startswith(("thread ", "process ")):
            frames = frames[1:]
        names = [_frame_name(f) for f in frames]
        main = any("mainLoop" in n for n in names)
        threads["reactor thread" if main else "other threads (history pool)"] += count
        if not main:
            # py-spy counts a thread waiting for the GIL as busy; /proc
            # says what the other threads really cost (thread_cpu_s).
            continue
        total += count
        if names:
            own[names[-1]] += count
        areas[_area(frames, openssl)] += count
        for name in set(names):
            if any(b in name for b in BOILERPLATE) or name.startswith(
                BOILERPLATE_NAMES
            ):
                continue
            inclusive[name] += count
            if "(securemsg/" in name:
                ours[name] += count

    def pct(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, 100 * c / max(1, total)) for k, c in counter.most_common(n)]

    return {
        "samples": total,
        "thread_samples": dict(threads),
        "areas": pct(areas, 20),
        "self": pct(own, top),
        "inclusive": pct(inclusive, top + 10),
        "securemsg_inclusive": pct(ours, top),
    }


def _frame_name(frame: str) -> str:
    """'write (twisted/protocols/tls.py:123)' -> 'write (twisted/protocols/tls.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "lib/python3.11/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def render_profile(report: dict[str, Any]) -> str:
    out = []
    for key, r in report.items():
        server, scenario = r.get("server", "securemsg"), r.get("scenario", key)
        out.append(
            f"### {server}, {scenario} ({r['samples']} samples of the reactor"
            f" thread at 250 Hz, {r['server_cpu_s']:.1f} s CPU)\n"
        )
        threads = r.get("thread_cpu_s", {})
        total = sum(threads.values()) or 1.0
        out.append(
            "CPU by thread (from /proc): "
            + ", ".join(
                f"{name} {100 * cpu / total:.0f}%"
                for name, cpu in sorted(threads.items(), key=lambda kv: -kv[1])
            )
            + ". The shares below are of the reactor thread's samples.\n"
        )
        out.append("| where the time goes | share |\n|---|---|")
        for name, p in r["areas"]:
            out.append(f"| {name} | {p:.1f}% |")
        out.append("\n| own time | function |\n|---|---|")
        for name, p in r["self"][:10]:
            out.append(f"| {p:.1f}% | `{name}` |")
        out.append("\n| inclusive | function |\n|---|---|")
        for name, p in r["inclusive"][:15]:
            out.append(f"| {p:.1f}% | `{name}` |")
        if r["securemsg_inclusive"]:
            out.append("\n| inclusive | securemsg function |\n|---|---|")
            for name, p in r["securemsg_inclusive"][:10]:
                out.append(f"| {p:.1f}% | `{name}` |")
        out.append("")
    return "\n".join(out) + "\n"


def render(folder: Path) -> None:
    """Redraw what a run wrote, from its JSON (and py-spy's raw stacks)."""
    results_path = folder / "results.json"
    if results_path.exists():
        results = json.loads(results_path.read_text())
        table = full_table(results)
        (folder / "table.md").write_text(table)
        print(table)
        try:
            import plots

            plots.draw(results, folder)
        except ImportError as error:
            log(f"no plots ({error}); pip install -e '.[bench]'")
    profile_path = folder / "profile.json"
    if profile_path.exists():
        report = json.loads(profile_path.read_text())
        kept = ("server_cpu_s", "thread_cpu_s", "server", "scenario")
        for key, old in report.items():
            raw = folder / f"profile-{key}.txt"
            if raw.exists():
                report[key] = summarize_profile(raw) | {
                    k: old[k] for k in kept if k in old
                }
        profile_path.write_text(json.dumps(report, indent=1))
        text = render_profile(report)
        (folder / "profile.md").write_text(text)
        print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 2-3 minute subset")
    parser.add_argument("--only", help="scenarios: " + ",".join(SCENARIOS))
    parser.add_argument("--servers", help="securemsg,twisted,asyncio,uvloop,ncat")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 2,
        help="load generator processes (default: one per core)",
    )
    parser.add_argument(
        "--coalesce-us",
        type=int,
        default=0,
        help="cgen: sleep this long after a small batch of events while"
        " counting at the maximum rate (default 0: read at once; sleeping"
        " saves generator CPU but lets the server's output back up)",
    )
    parser.add_argument(
        "--securemsg-args",
        help="extra twistd securemsg options, e.g. '--history-db :memory:'",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run securemsg at this git revision (server 'baseline'),"
        " for a before/after in one run",
    )
    parser.add_argument(
        "--python-generator",
        action="store_true",
        help="use loadgen.py even where the compiled cgen could be used",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile with py-spy under fan-out 100, light load and handshakes"
        " (securemsg, or the servers --servers names; --only picks among"
        " fanout, light, handshake)",
    )
    parser.add_argument(
        "--render",
        metavar="DIR",
        help="only redraw the table, plots and profile summary of a run folder",
    )
    args = parser.parse_args()
    if args.render:
        render(Path(args.render))
        return
    bench = Bench(args)
    if args.profile:
        profile(bench)
    else:
        bench.run()


if __name__ == "__main__":
    main()
