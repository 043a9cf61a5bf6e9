"""
The cluster rows of C{bench/run.py} (issue 14, C{--only cluster}):
securemsg as several processes joined through Redis, against one process,
in one run.

  - B{handshakes}: full TLS handshakes a second, 1 process against 2 on one
    port (C{--reuse-port}), both C{--cluster} on one redis-server; 1
    process without C{--cluster} as a reference;
  - B{light}: the light-load capacity at p99 <= 5 ms of the same three,
    the rate stepped up;
  - B{fan-out}: two nodes on ports of their own, one sender and 100
    receivers, everyone on node A against the sender on A and the
    receivers on B, at the maximum rate and at 200 lines/s.

Every figure comes with the CPU of the servers, the load generator and
Redis, from C{/proc}: the machine has few cores, and the table must show
when they, not securemsg, bound a result.
"""

from __future__ import annotations

import copy
import http.client
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import capacity as cap
import harness as h

#: label, processes, --cluster: the configurations compared.
CONFIGS: dict[str, tuple[str, int, bool]] = {
    "single": ("1 process, no --cluster", 1, False),
    "one": ("1 process, --cluster", 1, True),
    "two": ("2 processes, --cluster, one port", 2, True),
}
#: Concurrent handshake clients per load generator process.
HANDSHAKE_CONCURRENCY = 32
#: Light load: as the light scenario, 100 receivers and 10 senders ...
LIGHT_RECEIVERS = 100
LIGHT_SENDERS = 10
#: ... each sender's rate stepped up through these lines/s.
LIGHT_RATES = [20, 50, 100, 150, 200, 300, 400, 600, 800, 1200, 1600]
#: Each step lasts long enough for this many lines to be sent: one line is
#: 109 deliveries, so over fewer lines the p99 is the fate of one or two.
LIGHT_MIN_LINES = 1200
FANOUT_RECEIVERS = 100
#: Fan-out measurements: cross-node or not, and the sender's lines/s (None:
#: the maximum rate, as run.py's fan-out, where a node reads many lines at
#: once; 200/s: about one line per read, as at light load).
FANOUTS: dict[str, tuple[bool, float | None]] = {
    "local": (False, None),
    "cross": (True, None),
    "local-200": (False, 200.0),
    "cross-200": (True, 200.0),
}
TIMES = "×"  # noqa: RUF001 (the sign of a ratio in the tables)


def skip_reason() -> str | None:
    """Why the cluster rows cannot run here, or None."""
    if h.redis_server_binary() is None:
        return "no redis-server (pip install -e '.[test]', or redis-server on PATH)"
    try:
        import txredisapi  # noqa: F401
    except ImportError:
        return "no txredisapi (pip install -e '.[cluster]' or '.[test]')"
    return None


class Group:
    """The securemsg processes of one configuration, and their Redis."""

    def __init__(
        self,
        bench: Any,
        label: str,
        processes: int,
        cluster: bool,
        shared_port: bool = True,
    ) -> None:
        self.redis: h.Redis | None = None
        self.servers: list[h.Server] = []
        #: Each node's metrics port (--metrics), for its count of dropped
        #: bus messages.
        self.metrics: list[int] = []
        try:
            if cluster:
                binary = h.redis_server_binary()
                assert binary is not None
                self.redis = h.Redis(binary, bench.out / "servers")
            port = h.free_port() if shared_port else None
            for index in range(processes):
                spec = copy.deepcopy(bench.specs["securemsg"])
                spec.name = f"{label}-{index + 1}"
                if self.redis is not None:
                    spec.argv += ["--cluster", self.redis.url]
                    if shared_port:
                        # Also with one process, so that only the process
                        # count differs between the rows.
                        spec.argv += ["--reuse-port"]
                    self.metrics.append(h.free_port())
                    where = f"tcp:{self.metrics[-1]}:interface=127.0.0.1"
                    spec.argv += ["--metrics", where]
                self.servers.append(
                    h.Server(spec, bench.cert, bench.key, bench.out / "servers", port)
                )
        except BaseException:
            self.kill()
            raise

    @property
    def port(self) -> int:
        return self.servers[0].port

    def cpu(self) -> list[float]:
        return [s.cpu() for s in self.servers]

    def redis_cpu(self) -> float:
        return self.redis.cpu() if self.redis is not None else 0.0

    def link(self) -> dict[str, int]:
        """
        What the nodes' links to Redis went through so far: bus messages
        dropped (C{securemsg_cluster_dropped_total}, from --metrics) and
        links lost (C{lost Redis at} in their logs).
        """
        dropped = 0
        for port in self.metrics:
            dropped += int(metric(port, "securemsg_cluster_dropped_total"))
        lost = 0
        for server in self.servers if self.metrics else []:
            with open(server.log_path, "rb") as f:
                lost += f.read().count(b"] lost Redis at ")
        return {"dropped": dropped, "link_lost": lost}

    def alive(self) -> bool:
        return all(s.alive() for s in self.servers) and (
            self.redis is None or self.redis.proc.poll() is None
        )

    def connections(self) -> list[int]:
        """The clients each process holds."""
        return [h.connections_held(s.pid, s.port) for s in self.servers]

    def settle(self, limit: float = 15.0) -> None:
        """Wait until every process is nearly idle (join notices sent)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            a = sum(self.cpu()) + self.redis_cpu()
            time.sleep(0.3)
            if sum(self.cpu()) + self.redis_cpu() - a <= 0.03 * len(self.servers):
                break

    def kill(self) -> None:
        for server in self.servers:
            server.kill()
        if self.redis is not None:
            self.redis.kill()


def metric(port: int, name: str) -> float:
    """One value from a node's /metrics (0 if it is not there)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def link_change(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """What happened to the links to Redis between two L{Group.link}."""
    return {k: b[k] - a[k] for k in a}


@dataclass
class Sample:
    """The counters of one moment: CPU seconds of each process, lines."""

    t: float
    servers: list[float]
    redis: float
    gen: float
    machine: tuple[int, int]
    delivered: int
    sent: int

    @classmethod
    def take(cls, group: Group, gen: h.Generator) -> Sample:
        return cls(
            time.monotonic(),
            group.cpu(),
            group.redis_cpu(),
            gen.cpu(),
            machine_busy(),
            gen.counter(h.DELIVERED),
            gen.counter(h.SENT),
        )


def machine_busy() -> tuple[int, int]:
    """Idle and total jiffies of the whole machine, from C{/proc/stat}."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)


def between(a: Sample, b: Sample) -> dict[str, Any]:
    """CPU (in cores and seconds) and lines between two samples."""
    secs = b.t - a.t
    each = [y - x for x, y in zip(a.servers, b.servers, strict=True)]
    server = sum(each)
    redis = b.redis - a.redis
    gen = b.gen - a.gen
    jiffies = b.machine[1] - a.machine[1]
    idle = b.machine[0] - a.machine[0]
    cores = os.cpu_count() or 1
    busy = cores * (1 - idle / jiffies) if jiffies else 0.0
    lines = b.delivered - a.delivered

    def per_line(cpu: float) -> float:
        return cpu * 1e6 / lines if lines else float("nan")

    return {
        "secs": secs,
        "delivered": lines,
        "sent": b.sent - a.sent,
        "lines_per_s": lines / secs,
        "sent_per_s": (b.sent - a.sent) / secs,
        "server_cpu_s": server,
        "server_cpu_each_s": each,
        "redis_cpu_s": redis,
        "gen_cpu_s": gen,
        "server_cores": server / secs,
        "server_cores_each": [c / secs for c in each],
        "redis_cores": redis / secs,
        "gen_cores": gen / secs,
        "machine_busy_cores": busy,
        "other_load_cores": max(0.0, busy - (server + redis + gen) / secs),
        "server_us_per_line": per_line(server),
        "server_us_per_line_each": [per_line(c) for c in each],
        "redis_us_per_line": per_line(redis),
        "gen_us_per_line": per_line(gen),
    }


def median_of(windows: list[dict[str, Any]], key: str) -> Any:
    """The median of a figure over windows (element-wise for lists)."""
    values = [w[key] for w in windows]
    if isinstance(values[0], list):
        return [_median(list(v)) for v in zip(*values, strict=True)]
    return _median(values)


def _median(values: list[float]) -> float:
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


class ClusterRows:
    """The three measurements, run by C{bench/run.py}'s C{Bench}."""

    def __init__(self, bench: Any, log: Any) -> None:
        self.bench = bench
        self.log = log
        self.quick: bool = bench.quick
        self.workers = max(2, bench.workers)

    def generator(self, port: int | list[int]) -> h.Generator:
        return h.Generator(port, self.workers, cgen=self.bench.cgen)

    # --------------------------------------------------------------

    def handshakes(self, config: str) -> dict[str, Any]:
        """Full TLS handshakes as fast as the load generator makes them."""
        label, processes, cluster = CONFIGS[config]
        secs = 1.5 if self.quick else 2.0
        group = Group(self.bench, f"hs-{config}", processes, cluster)
        gen = self.generator(group.port)
        try:
            gen.same({"op": "handshakes", "secs": 0.3, "conc": 4})
            group.settle(5)
            link = group.link()
            a = Sample.take(group, gen)
            replies = gen.same(
                {"op": "handshakes", "secs": secs, "conc": HANDSHAKE_CONCURRENCY},
                timeout=secs + 30,
            )
            b = Sample.take(group, gen)
            w = between(a, b)
            w.update(link_change(link, group.link()))
            done = sum(r["handshakes"] for r in replies)

            def per_hs(cpu: float) -> float:
                return cpu * 1e6 / done if done else float("nan")

            return {
                "label": label,
                "processes": processes,
                "handshakes": done,
                "errors": sum(r["errors"] for r in replies),
                "per_s": done / w["secs"],
                "server_us": per_hs(w["server_cpu_s"]),
                "server_us_each": [per_hs(c) for c in w["server_cpu_each_s"]],
                "redis_us": per_hs(w["redis_cpu_s"]),
                "gen_us": per_hs(w["gen_cpu_s"]),
                **{
                    k: v
                    for k, v in w.items()
                    if k.endswith("cores") or k in ("secs", "dropped", "link_lost")
                },
                "server_cores_each": w["server_cores_each"],
                "alive": group.alive(),
            }
        finally:
            gen.close()
            group.kill()

    def light(self, config: str) -> dict[str, Any]:
        """
        The light scenario's room (100 receivers, 10 senders), each
        sender's rate stepped up until two steps in a row miss p99 <= 50 ms
        or fall behind; the capacity is the highest step with p99 <= 5 ms
        that kept up.
        """
        label, processes, cluster = CONFIGS[config]
        secs = 1.5 if self.quick else 2.0
        group = Group(self.bench, f"light-{config}", processes, cluster)
        gen = self.generator(group.port)
        try:
            receivers = self.bench.connect(gen, "recv", LIGHT_RECEIVERS)
            senders = self.bench.connect(gen, "send", LIGHT_SENDERS)
            group.settle()
            # Every line reaches everyone else in the room.
            members = receivers["done"] + senders["done"]
            held = group.connections()
            steps: list[dict[str, Any]] = []
            for rate in LIGHT_RATES:
                offered = rate * senders["done"]
                lines = LIGHT_MIN_LINES // (2 if self.quick else 1)
                step = self.light_step(
                    group,
                    gen,
                    rate,
                    senders["done"],
                    members - 1,
                    max(secs, lines / max(1, offered)),
                    config,
                )
                steps.append(step)
                self.log(
                    f"  {rate} lines/s per sender: {step['lines_per_s']:,.0f}"
                    f" delivered/s ({step['delivered_share']:.0%}), p99"
                    f" {step['p99_ms']:.2f} ms, servers"
                    f" {step['server_cores']:.2f} / gen {step['gen_cores']:.2f}"
                    f" / redis {step['redis_cores']:.2f} / other"
                    f" {step['other_load_cores']:.2f} cores"
                )
                if not group.alive() or not cap.keep_stepping(
                    steps, p99_limit_ms=cap.P99_GIVE_UP_MS
                ):
                    break
            best = cap.capacity(steps)
            carried = cap.capacity(steps, p99_limit_ms=cap.P99_GIVE_UP_MS)
            return {
                "label": label,
                "processes": processes,
                "receivers": receivers["done"],
                "senders": senders["done"],
                "connections_each": held,
                "steps": steps,
                "capacity": dict(best) if best is not None else None,
                "carried": dict(carried) if carried is not None else None,
                "first_failed_above": cap.first_failed_above(steps, best),
                "alive": group.alive(),
            }
        finally:
            gen.close()
            group.kill()

    def light_step(
        self,
        group: Group,
        gen: h.Generator,
        rate: float,
        senders: int,
        receivers_per_line: int,
        secs: float,
        config: str,
    ) -> dict[str, Any]:
        """One rate: senders at C{rate} lines/s each, latency over C{secs}."""
        # Worker i's senders start i/(rate x senders) s after worker 0's, so
        # that the lines of all workers interleave evenly (as in light).
        gen.all(
            [
                {
                    "op": "send",
                    "mode": "rate",
                    "rate": rate,
                    "offset": i / (rate * max(1, senders)),
                }
                for i in range(gen.nworkers)
            ]
        )
        time.sleep(0.7)
        link = group.link()
        gen.same({"op": "record", "on": True, "clear": True})
        a = Sample.take(group, gen)
        time.sleep(secs)
        b = Sample.take(group, gen)
        gen.same({"op": "record", "on": False})
        changed = link_change(link, group.link())
        latency = self.bench.collect_latencies(gen, f"cluster-{config}-{rate}")
        gen.same({"op": "stop_send"})
        w = between(a, b)
        offered = rate * senders
        expected = offered * receivers_per_line
        # Let what is queued drain before the next step.
        group.settle(3)
        return {
            "rate_per_sender": rate,
            "offered_lines_per_s": offered,
            "expected_deliveries_per_s": expected,
            "delivered_share": w["lines_per_s"] / expected if expected else 0.0,
            **{k: latency[k] for k in ("samples", "p50_ms", "p99_ms", "max_ms")},
            **w,
            **changed,
        }

    def fanout(
        self, group: Group, cross: bool, rate: float | None = None
    ) -> dict[str, Any]:
        """
        One sender on node A, 100 receivers on node B (C{cross}) or on A
        too; server CPU summed over both nodes.  The sender writes at the
        maximum rate (as run.py's fan-out), or at C{rate} lines/s.
        """
        a_port, b_port = (s.port for s in group.servers)
        # Worker 0 (the sender) connects to A, the others to B or A.
        ports = [a_port] + [b_port if cross else a_port] * (self.workers - 1)
        gen = self.generator(ports)
        try:
            receivers = self.bench.connect(
                gen, "recv", FANOUT_RECEIVERS, timeout=120, only=1
            )
            self.bench.connect(gen, "send", 1, only=0)
            group.settle()
            held = group.connections()
            expect = receivers["done"]
            window = max(200, min(8000, 400_000 // max(1, expect)))
            batch = max(32, min(1024, window // 8))
            send: dict[str, Any] = (
                {"op": "send", "mode": "rate", "rate": rate, "offset": 0.0}
                if rate
                else {
                    "op": "send",
                    "mode": "max",
                    "window": window,
                    "expect": expect,
                    "batch": batch,
                }
            )
            link = group.link()
            gen.all([send] + [None] * (gen.nworkers - 1))
            time.sleep(1.0 if self.quick else 1.5)
            count, secs = (3, 1.0) if self.quick else (3, 2.0)
            gen.same({"op": "record", "on": True, "clear": True})
            windows = []
            for _ in range(count):
                a = Sample.take(group, gen)
                time.sleep(secs)
                windows.append(between(a, Sample.take(group, gen)))
            gen.same({"op": "record", "on": False})
            gen.all([{"op": "stop_send"}] + [None] * (gen.nworkers - 1))
            # From the start of sending to its end, warm-up included: a
            # dropped message is lost for the other node whenever it was.
            changed = link_change(link, group.link())
            tag = f"cluster-fanout-{int(cross)}-{rate}"
            latency = self.bench.collect_latencies(gen, tag) if rate else {}
            figures = {k: median_of(windows, k) for k in windows[0]}
            return {
                "placement": "cross" if cross else "local",
                "rate": rate or "max",
                "receivers": expect,
                "connections_each": held,
                "windows": windows,
                **figures,
                **{k: latency[k] for k in ("p50_ms", "p99_ms") if k in latency},
                **changed,
                "lost": gen.counter(h.LOST),
                "alive": group.alive(),
            }
        finally:
            gen.close()
            # The receivers' departures, before the next placement.
            group.settle(5)

    # --------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Every cluster measurement; what C{results.json} keeps of them."""
        h_rounds = 1 if self.quick else 3
        f_rounds = 1 if self.quick else 2
        out: dict[str, Any] = {
            "configs": {k: v[0] for k, v in CONFIGS.items()},
            "cores": os.cpu_count(),
            "load_average_before": os.getloadavg(),
            "generator_workers": self.workers,
            "handshake_concurrency": HANDSHAKE_CONCURRENCY * self.workers,
        }
        binary = h.redis_server_binary()
        assert binary is not None
        # "Redis server v=7.2.4 sha=... malloc=jemalloc-5.3.0 bits=64 ..."
        version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True
        ).stdout.split()
        out["redis"] = " ".join(version[:3])
        t0 = time.monotonic()
        # Handshakes, in rounds through the configurations (as run.py's
        # handshake scenario): the median of each figure.
        rounds: dict[str, list[dict[str, Any]]] = {c: [] for c in CONFIGS}
        for k in range(h_rounds):
            for config in CONFIGS:
                self.log(f"cluster handshakes (round {k + 1}): {CONFIGS[config][0]}")
                try:
                    r = self.handshakes(config)
                except Exception as error:
                    self.log(f"  failed: {type(error).__name__}: {error}")
                    continue
                rounds[config].append(r)
                self.log(
                    f"  {r['per_s']:,.0f}/s, server {r['server_us']:.0f} us/hs,"
                    f" redis {r['redis_us']:.0f}, gen {r['gen_us']:.0f}; cores:"
                    f" servers {r['server_cores']:.2f} / gen {r['gen_cores']:.2f}"
                    f" / redis {r['redis_cores']:.2f} /"
                    f" other {r['other_load_cores']:.2f}"
                )
        out["handshakes"] = {
            c: merge(rs) | {"each_round": rs} if rs else {"error": "failed"}
            for c, rs in rounds.items()
        }
        self.bench.record("cluster", "rows", out)
        for config in CONFIGS:
            self.log(f"cluster light-load capacity: {CONFIGS[config][0]}")
            try:
                out.setdefault("light", {})[config] = self.light(config)
            except Exception as error:
                self.log(f"  failed: {type(error).__name__}: {error}")
                out.setdefault("light", {})[config] = {"error": str(error)}
            self.bench.record("cluster", "rows", out)
        placements: dict[str, list[dict[str, Any]]] = {k: [] for k in FANOUTS}
        for k in range(f_rounds):
            group = Group(self.bench, f"fanout-{k + 1}", 2, True, shared_port=False)
            try:
                # Alternate which placement goes first.
                for name in FANOUTS if k % 2 == 0 else reversed(FANOUTS):
                    cross, rate = FANOUTS[name]
                    self.log(f"cluster fan-out (round {k + 1}): {name}")
                    r = self.fanout(group, cross, rate)
                    placements[name].append(r)
                    self.log(
                        f"  {r['lines_per_s']:,.0f} lines/s, servers"
                        f" {r['server_us_per_line']:.3f} us/line"
                        f" (A {r['server_us_per_line_each'][0]:.3f},"
                        f" B {r['server_us_per_line_each'][1]:.3f}),"
                        f" redis {r['redis_us_per_line']:.3f},"
                        f" gen {r['gen_cores']:.2f} cores,"
                        f" other {r['other_load_cores']:.2f}"
                    )
            except Exception as error:
                self.log(f"  failed: {type(error).__name__}: {error}")
            finally:
                group.kill()
        out["fanout"] = {
            name: merge([strip(r) for r in rs]) | {"each_round": [strip(r) for r in rs]}
            if rs
            else {"error": "failed"}
            for name, rs in placements.items()
        }
        out["elapsed_s"] = time.monotonic() - t0
        return out


def strip(result: dict[str, Any]) -> dict[str, Any]:
    """A result without its windows, for the JSON's per-round list."""
    return {k: v for k, v in result.items() if k != "windows"}


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each number over rounds (element-wise for lists)."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r[key] for r in runs if key in r]
        if isinstance(first, bool) or not isinstance(first, (int, float, list)):
            out[key] = first
        elif isinstance(first, list):
            if all(
                isinstance(v, list)
                and len(v) == len(first)
                and all(isinstance(x, (int, float)) for x in v)
                for v in values
            ):
                out[key] = [_median(list(x)) for x in zip(*values, strict=True)]
            else:
                out[key] = first
        else:
            out[key] = _median([float(v) for v in values])
    out["rounds"] = len(runs)
    return out


# ----------------------------------------------------------------------
# The table


_n = h.fmt


def _cores(r: dict[str, Any] | None) -> str:
    """Cores used: servers / load generator / Redis / others' load."""
    if not r or "server_cores" not in r:
        return "-"
    return (
        f"{r['server_cores']:.2f} / {r['gen_cores']:.2f} / {r['redis_cores']:.2f}"
        f" / {r['other_load_cores']:.2f}" + (" (full)" if _full(r) else "")
    )


def _full(r: dict[str, Any] | None) -> bool:
    """
    Whether the machine was busy (nearly) all the time: the servers, the
    load generator, Redis and other programs used 90% of its cores or
    more, so a throughput was bounded by the cores, not by the servers.
    """
    if not r or "machine_busy_cores" not in r:
        return False
    return bool(r["machine_busy_cores"] >= 0.9 * (os.cpu_count() or 1))


def _bound(goal: str, *measured: dict[str, Any] | None) -> str:
    """C{goal}, said to be bounded by the machine if it was full."""
    if goal in ("met", "not met") and any(_full(r) for r in measured):
        others = " and ".join(
            f"{r['other_load_cores']:.2f}" for r in measured if r is not None
        )
        return (
            f"{goal}, but the machine was full (other programs: {others}"
            " cores; the rest the servers, the load generator and Redis):"
            " a ratio of what the cores allowed, not of the servers alone"
        )
    return goal


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}{TIMES}"


def _link_sum(r: dict[str, Any]) -> tuple[int, int] | None:
    """Bus messages dropped and Redis links lost, over every round or step."""
    parts = r.get("each_round") or r.get("steps") or [r]
    if not any("dropped" in x for x in parts):
        return None
    return (
        sum(int(x.get("dropped", 0)) for x in parts),
        sum(int(x.get("link_lost", 0)) for x in parts),
    )


def _link_cell(r: dict[str, Any]) -> str:
    counts = _link_sum(r)
    return "-" if counts is None else f"{counts[0]:,} / {counts[1]}"


def _goal(value: float | None, at_least: float | None, at_most: float | None) -> str:
    if value is None:
        return "-"
    met = (at_least is None or value >= at_least) and (
        at_most is None or value <= at_most
    )
    return "met" if met else "not met"


def render(results: dict[str, Any]) -> str:
    """The cluster table: Markdown, as run.py's."""
    rows = results.get("scenarios", {}).get("cluster", {}).get("rows")
    if not rows:
        return ""
    hs = rows.get("handshakes", {})
    light = rows.get("light", {})
    fan = rows.get("fanout", {})
    cores = rows.get("cores")

    def cap_of(config: str) -> dict[str, Any] | None:
        c = light.get(config, {}).get("capacity")
        return c if isinstance(c, dict) else None

    def hs_of(config: str) -> dict[str, Any]:
        r = hs.get(config, {})
        return r if "per_s" in r else {}

    lines = [
        "",
        f"Cluster rows (issue 14): {cores} cores; Redis: `{rows.get('redis')}`;"
        f" load generator: {rows.get('generator_workers')} processes;"
        f" load average before: "
        + ", ".join(f"{x:.2f}" for x in rows.get("load_average_before", [])),
        "",
        "Cores used are servers (all processes) / load generator / redis-server"
        " / other programs on the machine, from /proc.",
        "",
        "| figure | " + " | ".join(CONFIGS[c][0] for c in CONFIGS) + " |",
        "|---|" + "---|" * len(CONFIGS),
    ]

    def row(label: str, get: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(get(c) for c in CONFIGS) + " |")

    row(
        f"full TLS handshakes per second ({rows.get('handshake_concurrency')}"
        " clients at once)",
        lambda c: _n(hs_of(c).get("per_s")),
    )
    row(
        "server CPU µs per handshake (summed over processes)",
        lambda c: _n(hs_of(c).get("server_us")),
    )
    row(
        "  each process: cores busy",
        lambda c: " / ".join(_n(x) for x in hs_of(c).get("server_cores_each", [])),
    )
    row(
        "Redis CPU µs per handshake (not in the sum)",
        lambda c: _n(hs_of(c).get("redis_us")) if CONFIGS[c][2] else "-",
    )
    row("load generator CPU µs per handshake", lambda c: _n(hs_of(c).get("gen_us")))
    row("handshakes: cores used", lambda c: _cores(hs_of(c)))
    row(
        "handshakes: bus messages dropped / Redis links lost (all rounds)",
        lambda c: _link_cell(hs.get(c, {})) if CONFIGS[c][2] else "-",
    )
    row(
        "light load: capacity at p99 ≤ 5 ms, delivered lines/s",
        lambda c: _n((cap_of(c) or {}).get("lines_per_s")),
    )

    def at_capacity(text: Any) -> Any:
        """A cell of the step at the capacity, C{text} of its figures."""

        def get(c: str) -> str:
            step = cap_of(c)
            return "-" if step is None else str(text(step))

        return get

    row(
        "  offered there (10 senders × lines/s each)",  # noqa: RUF001
        at_capacity(
            lambda s: f"{_n(s['offered_lines_per_s'])} ({s['rate_per_sender']:g} each)"
        ),
    )
    row(
        "  p50 / p99 ms there",
        at_capacity(lambda s: f"{_n(s['p50_ms'])} / {_n(s['p99_ms'])}"),
    )
    row(
        "  server / Redis CPU µs per delivered line there",
        at_capacity(
            lambda s: f"{_n(s['server_us_per_line'])} / {_n(s['redis_us_per_line'])}"
        ),
    )
    row("  cores used there", lambda c: _cores(cap_of(c)))
    row(
        "  first step above that failed: offered lines/s, p99 ms, share delivered",
        lambda c: _first_failed(light.get(c, {})),
    )
    row(
        "light load: highest rate carried with p99 ≤ 50 ms, delivered lines/s (p99 ms)",
        lambda c: (
            "-"
            if not isinstance(light.get(c, {}).get("carried"), dict)
            else f"{_n(light[c]['carried']['lines_per_s'])}"
            f" ({_n(light[c]['carried']['p99_ms'])})"
        ),
    )
    row(
        "light load: bus messages dropped / Redis links lost (all steps)",
        lambda c: _link_cell(light.get(c, {})) if CONFIGS[c][2] else "-",
    )
    row(
        "  clients per process",
        lambda c: (
            " / ".join(f"{x:.0f}" for x in light.get(c, {}).get("connections_each", []))
            or "-"
        ),
    )

    one_hs, two_hs = hs_of("one").get("per_s"), hs_of("two").get("per_s")
    one_cap = (cap_of("one") or {}).get("lines_per_s")
    two_cap = (cap_of("two") or {}).get("lines_per_s")
    local, cross = fan.get("local", {}), fan.get("cross", {})
    # Within each round first (its configurations ran one after the
    # other, under much the same load from other programs), then the
    # median over the rounds.
    per_round = [
        cap.ratio(two.get("per_s"), one.get("per_s"))
        for one, two in zip(
            hs_of("one").get("each_round", []),
            hs_of("two").get("each_round", []),
            strict=False,
        )
    ]
    per_round_known = [r for r in per_round if r is not None]
    hs_ratio = (
        _median(per_round_known) if per_round_known else cap.ratio(two_hs, one_hs)
    )
    hs_rounds = ", ".join(f"{r:.2f}" for r in per_round_known)
    carried = [
        (light.get(c, {}).get("carried") or {}).get("lines_per_s")
        for c in ("one", "two")
    ]
    carried_ratio = cap.ratio(carried[1], carried[0])
    light_ratio = cap.ratio(two_cap, one_cap)
    fan_ratio = cap.ratio(
        cross.get("server_us_per_line"), local.get("server_us_per_line")
    )
    fans = [fan.get(name, {}) for name in FANOUTS]
    lines += [
        "",
        "Fan-out across nodes: 2 processes with --cluster on ports of their own"
        f" and one Redis, one sender, {FANOUT_RECEIVERS} receivers; the sender"
        " at the maximum rate (as the fan-out scenario) or at 200 lines/s:",
        "",
        "| figure | max rate, everyone on node A | max rate, sender on A,"
        " receivers on B | 200/s, everyone on A | 200/s, sender on A,"
        " receivers on B |",
        "|---|---|---|---|---|",
    ]

    def frow(label: str, get: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(get(r) for r in fans) + " |")

    frow(
        "server CPU µs per delivered line, both nodes",
        lambda r: _n(r.get("server_us_per_line"), 3),
    )
    frow(
        "  node A / node B",
        lambda r: (
            " / ".join(_n(x, 3) for x in r.get("server_us_per_line_each", [])) or "-"
        ),
    )
    frow(
        "Redis CPU µs per delivered line (not in the sum)",
        lambda r: _n(r.get("redis_us_per_line"), 3),
    )
    frow("delivered lines/s", lambda r: _n(r.get("lines_per_s")))
    frow(
        "p50 / p99 latency ms",
        lambda r: f"{_n(r['p50_ms'])} / {_n(r['p99_ms'])}" if "p99_ms" in r else "-",
    )
    frow(
        "  clients per node (A / B)",
        lambda r: " / ".join(f"{x:.0f}" for x in r.get("connections_each", [])) or "-",
    )
    frow("cores used", _cores)
    frow("bus messages dropped / Redis links lost (all rounds)", _link_cell)
    frow("load generator µs per delivered line", lambda r: _n(r.get("gen_us_per_line")))
    rate_ratio = cap.ratio(
        fan.get("cross-200", {}).get("server_us_per_line"),
        fan.get("local-200", {}).get("server_us_per_line"),
    )
    lines += [
        "",
        "| ratio | measured | goal | |",
        "|---|---|---|---|",
        "| handshakes/s, 2 processes ÷ 1 (both --cluster; the median of the"
        f" rounds' ratios) | {_ratio(hs_ratio)} ({hs_rounds})"
        f" | ≥ 1.70{TIMES}"
        f" | {_bound(_goal(hs_ratio, 1.7, None), hs_of('one'), hs_of('two'))} |",
        f"| light-load capacity at p99 ≤ 5 ms, 2 processes ÷ 1 | {_ratio(light_ratio)}"
        f" | ≥ 1.70{TIMES}"
        f" | {_bound(_goal(light_ratio, 1.7, None), cap_of('one'), cap_of('two'))} |",
        "| light load, highest rate carried with p99 ≤ 50 ms, 2 processes ÷ 1"
        f" | {_ratio(carried_ratio)} | | |",
        "| fan-out at the maximum rate, server µs per delivered line,"
        f" cross-node ÷ local | {_ratio(fan_ratio)} | ≤ 2.00{TIMES}"
        f" | {_fan_goal(fan_ratio, local, cross)} |",
        "| fan-out at 200 lines/s, server µs per delivered line,"
        f" cross-node ÷ local | {_ratio(rate_ratio)} | ≤ 2.00{TIMES}"
        f" | {_fan_goal(rate_ratio, *[fan.get(k, {}) for k in FANOUTS][2:])} |",
    ]
    for config in ("two",):
        r = hs_of(config)
        if r and cores:
            used = r["server_cores"] + r["gen_cores"] + r["redis_cores"]
            lines += [
                "",
                f"With 2 processes the handshakes used {used:.2f} of the"
                f" machine's {cores} cores for the servers, the load generator"
                f" and Redis, and {r['other_load_cores']:.2f} went to other"
                " programs.",
            ]
    return "\n".join(lines) + "\n"


def _fan_goal(value: float | None, local: dict[str, Any], cross: dict[str, Any]) -> str:
    """
    Whether the cross-node cost is within 2x the local one; not comparable
    when a node dropped bus messages (it then skipped work it owed).
    """
    for name, r in (("local", local), ("cross-node", cross)):
        counts = _link_sum(r)
        if counts and (counts[0] or counts[1]):
            return (
                f"not comparable: {counts[0]:,} bus messages dropped, Redis"
                f" link lost {counts[1]} times ({name})"
            )
    return _goal(value, None, 2.0)


def _first_failed(light: dict[str, Any]) -> str:
    step = light.get("first_failed_above")
    if not isinstance(step, dict):
        return "-"
    return (
        f"{_n(step['offered_lines_per_s'])}, {_n(step['p99_ms'])},"
        f" {step['delivered_share']:.0%}"
    )
