#!/usr/bin/env python3
"""
The abuse scenario of C{tests/test_abuse.py} at a larger scale, outside the
test suite: thousands of connections against the real C{twistd securemsg},
over TLS on loopback, while two healthy clients chat; prints a table.

    python bench/abuse.py --connections 3000 --stalled 500 --duration 20

Three processes:

  - the server, C{twistd -n securemsg} (its memory, CPU and sockets are
    read from C{/proc}; its log goes to a file, counted at the end);
  - this process: the two healthy clients, which send timestamped lines to
    each other, so each line's latency is measured with one clock
    (C{time.monotonic_ns}), and which check that every line arrives once
    and in order; and the sampling of C{/proc};
  - the load generator (this script with C{--generator}): the attackers.
    It first opens C{--connections} idle TLS connections (they finish the
    handshake, then neither send nor read), then for C{--duration}
    seconds keeps up every other attack: C{--stalled} connections stalled
    mid-handshake (half send part of a ClientHello, half nothing; each is
    reopened when the server aborts it), a flooder (a new one every
    C{--flood-every} s), a client that never reads fed private lines by
    C{--streamers} clients until the server drops it (then the next), a
    client sending 10 MB lines without a newline, and garbage (not TLS)
    senders; then it closes everything at once.

With C{--amplification} it runs instead the attacks in which a few bytes
ask for a lot (/history, /rooms, the replay on joining, connection churn)
and shows that the server's memory stays within
C{clients x (--send-queue + PER_CONNECTION)}; see bench/README.md.

The generator is a separate process so that the attackers' work never
delays the healthy clients' event loop (which would show up as latency);
its CPU time is reported, to show it is not the bottleneck.

Phases in the table: C{before} (healthy clients only), C{ramp} (idle
connections being opened), C{attack} (all held, every attack running),
C{teardown} (the generator closed everything; until the server is back to
two connections and idle) and C{after}.  Latencies and losses are grouped
by the phase in which the line was sent.  The server's options are those of
the test with the connection limits raised to fit, except flood control
(see C{SERVER_OPTIONS}).

Everything is bounded: every wait has a timeout and every loop ends with
its phase.  All traffic goes to 127.0.0.1.  Linux only (C{/proc}).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import re
import resource
import shlex
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import reactor as _global_reactor
from twisted.internet.defer import (
    Deferred,
    DeferredSemaphore,
    gatherResults,
)
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import LoopingCall, deferLater, react
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

reactor: Any = _global_reactor
T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent

CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
#: Bound on any single wait.
WAIT = 60.0
#: Server settings (SERVER_OPTIONS).  Those of tests/test_abuse.py, except that flood
#: control keeps the server's defaults (--flood-rate and --flood-burst
#: here): the test raises them only to finish fast, and with thousands in
#: one room, what a flooder may send in a burst is multiplied by the room's
#: size.  Lines of 16 kB (4 kB by default) let the streamers fill a client
#: that never reads (the kernel takes some 4 MB of it) within the run.
HANDSHAKE_TIMEOUT = 5.0
SEND_QUEUE = 262_144
MAX_LINE_LENGTH = 16_384
BIG_LINE = 10 * 1024 * 1024
STREAM_TEXT = b"s" * (MAX_LINE_LENGTH - 64)
HEALTHY = re.compile(rb"from-(alice|bob) (\d+) (\d+)$")


def started(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    return Deferred.fromCoroutine(coroutine)


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def bounded(deferred: Deferred[T], what: str, timeout: float = WAIT) -> Deferred[T]:
    def timed_out(result: object, seconds: float) -> Failure:
        return Failure(TimeoutError(f"timed out after {seconds} s waiting for {what}"))

    return deferred.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)


def raise_open_file_limit(needed: int) -> int:
    """Raise this process's soft limit on open files towards C{needed}."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


# ---------------------------------------------------------------------------
# /proc


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = [
        int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def sockets(pid: int) -> int:
    """Sockets a process holds: its connections, and its listening socket."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


# ---------------------------------------------------------------------------
# Clients, shared by both processes


@implementer(IHandshakeListener)
class Lines(LineReceiver):
    """A TLS chat client that lets its owner wait for a line."""

    delimiter = b"\n"
    MAX_LENGTH = 1_000_000

    def __init__(self) -> None:
        self.handshake: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.closed = False
        self._waiting: list[tuple[bytes, Deferred[bytes]]] = []
        self.on_line: Callable[[bytes], None] | None = None

    def connectionMade(self) -> None:
        with contextlib.suppress(AttributeError, OSError):
            self.transport.setTcpNoDelay(True)

    def handshakeCompleted(self) -> None:
        self.handshake.callback(None)

    def lineReceived(self, line: bytes) -> None:
        if self.on_line is not None:
            self.on_line(line)
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            for text, waiter in waiting:
                if text in line:
                    waiter.callback(line)
                else:
                    self._waiting.append((text, waiter))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed = True
        if not self.handshake.called:
            self.handshake.errback(Failure(ConnectionError("closed in handshake")))
        waiting, self._waiting = self._waiting, []
        for text, waiter in waiting:
            waiter.errback(Failure(ConnectionError(f"closed before {text!r}")))
        self.ended.callback(None)

    def wait_for(self, text: bytes, timeout: float = WAIT) -> Deferred[bytes]:
        """The next line containing C{text}."""
        waiter: Deferred[bytes] = Deferred(
            lambda waiter: self._waiting.remove((text, waiter))
        )
        if self.closed:
            waiter.errback(Failure(ConnectionError("closed")))
        else:
            self._waiting.append((text, waiter))
        return bounded(waiter, repr(text), timeout)

    def send(self, *lines: bytes) -> None:
        self.transport.write(b"".join(line + b"\n" for line in lines))

    def stop_reading(self) -> None:
        self.transport.pauseProducing()

    def start_reading(self) -> None:
        self.transport.resumeProducing()


class Idle(Lines):
    """Finishes the handshake, then neither sends nor reads."""

    def handshakeCompleted(self) -> None:
        self.stop_reading()
        super().handshakeCompleted()


class Raw(Protocol):
    """
    Plain TCP: sends C{first}, then nothing; notes how long it lasted, and
    whether we closed it (C{by_us}) or the server did.
    """

    def __init__(self, first: bytes, done: Callable[[Raw], None]) -> None:
        self.first = first
        self.done = done
        self.opened = time.monotonic()
        self.lasted = 0.0
        self.by_us = False

    def connectionMade(self) -> None:
        if self.first:
            self.transport.write(self.first)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lasted = time.monotonic() - self.opened
        self.done(self)


class Connector:
    """Connects TLS clients (trusting only the server's certificate) and raw ones."""

    def __init__(self, port: int, cert_path: str) -> None:
        self.port = port
        self.options = optionsForClientTLS(
            "localhost", trustRoot=Certificate.loadPEM(Path(cert_path).read_bytes())
        )
        self.open: set[Protocol] = set()

    def tcp(self, source: str | None = None) -> TCP4ClientEndpoint:
        """An endpoint to the server, from the address C{source} if given."""
        bind = (source, 0) if source is not None else None
        return TCP4ClientEndpoint(
            reactor, HOST, self.port, timeout=WAIT, bindAddress=bind
        )

    async def tls(
        self, make: Callable[[], Lines] = Lines, source: str | None = None
    ) -> Lines:
        endpoint = wrapClientTLS(self.options, self.tcp(source))
        client: Lines = await bounded(
            endpoint.connect(Factory.forProtocol(make)), "connect"
        )
        self.open.add(client)
        client.ended.addBoth(lambda _: self.open.discard(client))
        await bounded(client.handshake, "handshake")
        return client

    def raw(self, first: bytes, done: Callable[[Raw], None]) -> Deferred[Raw]:
        def lost(raw: Raw) -> None:
            self.open.discard(raw)
            done(raw)

        raw = Raw(first, lost)
        self.open.add(raw)
        connecting = self.tcp().connect(Factory.forProtocol(lambda: raw))

        def failed(failure: Failure) -> Failure:
            self.open.discard(raw)
            return failure

        return connecting.addErrback(failed)

    async def close_all(self) -> None:
        for connection in list(self.open):
            if isinstance(connection, Raw):
                connection.by_us = True
            connection.transport.abortConnection()
        for _ in range(600):
            if not self.open:
                return
            await sleep(0.1)


# ---------------------------------------------------------------------------
# The load generator


@dataclass
class Counters:
    idle_opened: int = 0
    idle_failed: int = 0
    ramp_seconds: float = 0.0
    stalled_opened: int = 0
    stalled_closed: int = 0
    stalled_lasted: list[float] = field(default_factory=list)
    flood_rounds: int = 0
    flood_lines: int = 0
    flood_disconnected: int = 0
    sink_rounds: int = 0
    sink_dropped: int = 0
    stream_lines: int = 0
    big_lines: int = 0
    big_refused: int = 0
    big_ponged: int = 0
    garbage_sent: int = 0
    garbage_closed: int = 0
    garbage_lasted: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def emit(event: str, **fields: Any) -> None:
    """One JSON line on standard output for the orchestrator."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def partial_client_hello(rng: random.Random) -> bytes:
    return b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(32)


class Generator:
    """The attackers; see the module docstring."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.connect = Connector(config["port"], config["cert"])
        self.counters = Counters()
        self.rng = random.Random(config["seed"])
        self.attacking = False
        self.idle: list[Lines] = []

    async def run(self) -> None:
        config, counters = self.config, self.counters
        began = time.monotonic()
        await self.ramp(config["connections"], config["ramp_concurrency"])
        counters.ramp_seconds = time.monotonic() - began
        emit("ramped", held=counters.idle_opened, failed=counters.idle_failed)
        self.attacking = True
        attack_ends = time.monotonic() + config["duration"]
        for _ in range(config["stalled"]):
            self.stall()
        attacks = [
            started(self.flood_rounds(attack_ends)),
            started(self.sink_rounds(attack_ends)),
            started(self.big_line_rounds(attack_ends)),
            started(self.garbage_loop(attack_ends)),
        ]
        await sleep(max(0.0, attack_ends - time.monotonic()))
        self.attacking = False
        await gatherResults(
            [bounded(attack, "an attacker to stop") for attack in attacks],
            consumeErrors=True,
        )
        emit("attack-over")
        await self.connect.close_all()
        times = os.times()
        summary = {
            key: value
            for key, value in vars(counters).items()
            if not isinstance(value, list)
        }
        summary["stalled_lasted"] = _spread(counters.stalled_lasted)
        summary["garbage_lasted"] = _spread(counters.garbage_lasted)
        summary["errors"] = counters.errors[:10]
        summary["cpu"] = times.user + times.system
        emit("summary", **summary)

    async def ramp(self, count: int, concurrency: int) -> None:
        semaphore = DeferredSemaphore(concurrency)

        async def one() -> None:
            try:
                self.idle.append(await self.connect.tls(Idle))
                self.counters.idle_opened += 1
            except Exception as error:
                self.counters.idle_failed += 1
                self._error("idle", error)
            if self.counters.idle_opened % 500 == 0:
                emit("progress", held=self.counters.idle_opened)

        await gatherResults(
            [semaphore.run(lambda: started(one())) for _ in range(count)],
            consumeErrors=True,
        )

    def _error(self, what: str, error: BaseException) -> None:
        self.counters.errors.append(f"{what}: {error}")

    def stall(self) -> None:
        """Open one stalled connection, and another when the server drops it."""
        counters = self.counters
        first = partial_client_hello(self.rng) if counters.stalled_opened % 2 else b""
        counters.stalled_opened += 1

        def done(raw: Raw) -> None:
            if raw.by_us:
                return
            counters.stalled_closed += 1
            counters.stalled_lasted.append(raw.lasted)
            if self.attacking:
                reactor.callLater(0, self.stall)

        self.connect.raw(first, done).addErrback(
            lambda failure: self._error("stalled", failure.value)
        )

    async def flood_rounds(self, ends: float) -> None:
        """A flooder every --flood-every seconds, each until disconnected."""
        counters = self.counters
        while time.monotonic() < ends:
            counters.flood_rounds += 1
            next_round = time.monotonic() + self.config["flood_every"]
            try:
                flooder = await self.connect.tls()
                told = flooder.wait_for(b"disconnected for flooding")
                told.addErrback(lambda _: None)
                sent = 0
                while not flooder.closed and sent < 50_000:
                    flooder.send(*(b"flood %d" % (sent + i) for i in range(100)))
                    sent += 100
                    await sleep(0.01)
                counters.flood_lines += sent
                if (await told) is not None:
                    counters.flood_disconnected += 1
            except Exception as error:
                self._error("flooder", error)
            await sleep(max(0.0, min(next_round, ends) - time.monotonic()))

    async def sink_rounds(self, ends: float) -> None:
        """
        A client that never reads, fed private lines by --streamers clients
        (each within the flood limit: three quarters of the burst, then 80 %
        of the rate) until the server drops it; then the next one.
        """
        counters, config = self.counters, self.config
        rate, burst = config["flood_rate"], config["flood_burst"]
        try:
            streamers = [await self.connect.tls() for _ in range(config["streamers"])]
        except Exception as error:
            self._error("streamer", error)
            return
        while time.monotonic() < ends and not any(s.closed for s in streamers):
            if counters.sink_rounds:
                # Let the streamers' flood allowance fill up again first.
                await sleep(burst / rate)
            counters.sink_rounds += 1
            name = b"sink%d" % counters.sink_rounds
            try:
                sink = await self.connect.tls()
                renamed = sink.wait_for(b"you are now " + name)
                sink.send(b"/nick " + name)
                await renamed
                sink.stop_reading()
                gone = streamers[0].wait_for(b"nobody here is called " + name)
                gone.addErrback(lambda _: None)
                line = b"/msg " + name + b" " + STREAM_TEXT
                allowance = burst * 3 / 4
                while not gone.called and time.monotonic() < ends + WAIT:
                    lines = int(allowance)
                    allowance += 0.8 * rate * 0.25 - lines
                    for streamer in streamers:
                        streamer.send(*[line] * lines)
                    counters.stream_lines += lines * len(streamers)
                    await sleep(0.25)
                if (await gone) is not None:
                    sink.start_reading()
                    await bounded(sink.ended, "the sink to be reset")
                    counters.sink_dropped += 1
            except Exception as error:
                self._error("sink", error)
                await sleep(1)

    async def big_line_rounds(self, ends: float) -> None:
        """10 MB without a newline, then a newline and /ping; again."""
        counters = self.counters
        try:
            big = await self.connect.tls()
        except Exception as error:
            self._error("big line", error)
            return
        while time.monotonic() < ends and not big.closed:
            try:
                refused = big.wait_for(b"longer than")
                big.transport.write(b"x" * BIG_LINE)
                counters.big_lines += 1
                await refused
                counters.big_refused += 1
                ponged = big.wait_for(b"pong")
                big.transport.write(b"\n/ping\n")
                await ponged
                counters.big_ponged += 1
            except Exception as error:
                self._error("big line", error)
            await sleep(1)

    async def garbage_loop(self, ends: float) -> None:
        """Five connections a second that send bytes which are not TLS."""
        counters = self.counters

        def done(raw: Raw) -> None:
            if raw.by_us:
                return
            counters.garbage_closed += 1
            counters.garbage_lasted.append(raw.lasted)

        while time.monotonic() < ends:
            garbage = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n" + self.rng.randbytes(
                4000
            )
            counters.garbage_sent += 1
            self.connect.raw(garbage, done).addErrback(
                lambda failure: self._error("garbage", failure.value)
            )
            await sleep(0.2)


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "max": ordered[-1],
    }


def generator_main(config: dict[str, Any]) -> None:
    raise_open_file_limit(config["connections"] + config["stalled"] + 500)

    async def main(_: object) -> None:
        await Generator(config).run()

    react(lambda r: started(main(r)))


# ---------------------------------------------------------------------------
# The orchestrator and the healthy pair

PHASES = ("before", "ramp", "attack", "teardown", "after")


@dataclass
class Phase:
    name: str
    began: float = 0.0
    ended: float = 0.0
    latencies: list[float] = field(default_factory=list)
    #: Healthy lines sent in the phase that never arrived.
    lost: int = 0
    rss: list[float] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    #: CPU seconds used in the phase: server, generator, this process, and
    #: the whole machine.
    cpu: dict[str, float] = field(default_factory=dict)


class GeneratorProcess(ProcessProtocol):
    """The generator, whose JSON lines move the phases on."""

    def __init__(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.on_event = on_event
        self.partial = b""
        self.err = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            with contextlib.suppress(ValueError):
                self.on_event(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        self.err += data
        sys.stderr.write(data.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class ServerProcess(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()
        self.status: object = None

    def processEnded(self, reason: Failure) -> None:
        self.status = reason.value
        self.ended.callback(None)


def write_certificate(directory: Path) -> tuple[str, str]:
    """A new self-signed certificate and key in C{directory}; their paths."""
    sys.path.insert(0, str(ROOT / "src"))
    from securemsg.tls import certs

    certificate, key = certs.generate_self_signed()
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    certs.write_certificate(cert_path, certificate, force=True)
    certs.write_private_key(key_path, key, None, force=True)
    return str(cert_path), str(key_path)


async def start_twistd(
    directory: Path, log_path: Path, cert_path: str, key_path: str, options: list[str]
) -> tuple[ServerProcess, Any, int]:
    """
    Start C{twistd -n securemsg} in C{directory} with C{options}, listening
    on an ephemeral port of 127.0.0.1; return it, its process transport and
    the port, once it listens.
    """
    argv = [
        sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
        "-n", "--pidfile=", f"--logfile={log_path}", "securemsg",
        "--cert", cert_path, "--key", key_path,
        "--listen", f"tcp:0:interface={HOST}:backlog=4096",
        *options,
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    server = ServerProcess()
    transport = reactor.spawnProcess(
        server, sys.executable, argv, env=env, path=str(directory)
    )
    listening = re.compile(r"securemsg listening on [\d.]+:(\d+)")
    for _ in range(300):
        await sleep(0.1)
        with contextlib.suppress(FileNotFoundError):
            found = listening.search(log_path.read_text())
            if found:
                return server, transport, int(found.group(1))
        if server.ended.called:
            break
    raise SystemExit(f"the server did not start; see {log_path}")


class Healthy:
    """
    Alice and Bob: each sends numbered, timestamped lines to the room at
    C{rate} a second; each receiver checks the other's arrive once and in
    order, and notes each line's latency under the phase it was sent in.
    """

    def __init__(self, bench: Bench, rate: float) -> None:
        self.bench = bench
        self.rate = rate
        self.sent = {"alice": 0, "bob": 0}
        self.received: dict[str, list[int]] = {"alice": [], "bob": []}
        self.phase_of: dict[tuple[str, int], Phase] = {}
        self.loops: list[LoopingCall] = []
        self.clients: dict[str, Lines] = {}
        #: Error lines the server sent the healthy clients (such as "too
        #: many lines" from flood control), by text.
        self.errors: dict[str, int] = {}

    async def connect(self) -> None:
        for name in ("alice", "bob"):
            client = await self.bench.connect.tls()
            client.on_line = self._receiver()
            self.clients[name] = client

    def _receiver(self) -> Callable[[bytes], None]:
        def received(line: bytes) -> None:
            now = time.monotonic_ns()
            match = HEALTHY.search(line)
            if match is None:
                if line.startswith(b"!!! "):
                    text = line.decode("utf-8", "replace")
                    self.errors[text] = self.errors.get(text, 0) + 1
                return
            name = match.group(1).decode()
            number, sent_at = int(match.group(2)), int(match.group(3))
            self.received[name].append(number)
            phase = self.phase_of.pop((name, number), None)
            if phase is not None:
                phase.latencies.append((now - sent_at) / 1e6)

        return received

    def start(self) -> None:
        for name, client in self.clients.items():

            def one(name: str = name, client: Lines = client) -> None:
                number = self.sent[name]
                self.sent[name] += 1
                self.phase_of[(name, number)] = self.bench.phase
                client.send(
                    b"from-%s %d %d" % (name.encode(), number, time.monotonic_ns())
                )

            loop = LoopingCall(one)
            loop.start(1 / self.rate)
            self.loops.append(loop)

    def stop(self) -> None:
        for loop in self.loops:
            if loop.running:
                loop.stop()

    def all_in(self) -> bool:
        return all(len(self.received[name]) >= self.sent[name] for name in self.sent)

    def verdict(self) -> tuple[int, int, int, int]:
        """Lines sent, lost, duplicated and out of order, both ways."""
        sent = lost = duplicated = disordered = 0
        for name, numbers in self.received.items():
            sent += self.sent[name]
            lost += len(set(range(self.sent[name])) - set(numbers))
            duplicated += len(numbers) - len(set(numbers))
            disordered += sum(1 for a, b in itertools.pairwise(numbers) if b <= a)
        return sent, lost, duplicated, disordered


SERVER_OPTIONS = [
    "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
    "--send-queue", str(SEND_QUEUE),
    "--max-line-length", str(MAX_LINE_LENGTH),
    "--greeting", "",
]  # fmt: skip


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.phases = {name: Phase(name) for name in PHASES}
        self.phase = self.phases["before"]
        self.directory = Path(tempfile.mkdtemp(prefix="securemsg-abuse-"))
        self.generator_summary: dict[str, Any] = {}
        self.ramped: dict[str, Any] = {}
        self.generator_pid = 0
        self.generator_cpu = 0.0
        self.loads = os.getloadavg()

    def cpu_marks(self) -> dict[str, float]:
        """CPU seconds used so far by each process, and by the machine."""
        times = os.times()
        return {
            "server": cpu_seconds(self.server_pid),
            "generator": self.generator_cpu,
            "bench": times.user + times.system,
            "machine": machine_busy_seconds(),
        }

    def enter(self, name: str) -> None:
        self.finish()
        self.phase = self.phases[name]
        self.phase.began = self.phase.ended = time.monotonic()
        print(
            f"[{self.phase.began - self.began:6.1f} s] {name}",
            file=sys.stderr,
            flush=True,
        )

    def finish(self) -> None:
        """End the current phase."""
        self.sample()
        self.phase.ended = time.monotonic()
        marks = self.cpu_marks()
        self.phase.cpu = {key: marks[key] - self._marks[key] for key in marks}
        self._marks = marks

    def sample(self) -> None:
        with contextlib.suppress(OSError):
            self.phase.rss.append(rss_mb(self.server_pid))
            # Less the listening socket.
            self.phase.held.append(sockets(self.server_pid) - 1)
        if self.generator_pid:
            with contextlib.suppress(OSError):
                self.generator_cpu = cpu_seconds(self.generator_pid)

    def write_certificate(self) -> tuple[str, str]:
        return write_certificate(self.directory)

    def server_options(self) -> list[str]:
        return [
            *SERVER_OPTIONS,
            "--flood-rate",
            f"{self.args.flood_rate:g}",
            "--flood-burst",
            str(self.args.flood_burst),
        ]

    async def start_server(self, cert_path: str, key_path: str) -> int:
        args = self.args
        self.log_path = self.directory / "server.log"
        limit = args.connections + args.stalled + 200
        options = [
            "--max-connections", str(limit), "--max-per-ip", str(limit),
            "--connect-burst", str(limit), "--connect-rate", "1000000",
            *self.server_options(),
        ]  # fmt: skip
        self.server, transport, port = await start_twistd(
            self.directory, self.log_path, cert_path, key_path, options
        )
        self.server_pid = transport.pid
        self.server_transport = transport
        return port

    def on_generator_event(self, event: dict[str, Any]) -> None:
        kind = event.pop("event")
        if kind == "ramped":
            self.ramped = event
            self.enter("attack")
        elif kind == "attack-over":
            self.enter("teardown")
        elif kind == "summary":
            self.generator_summary = event
        elif kind == "progress":
            print(f"         {event['held']} held", file=sys.stderr, flush=True)

    async def run(self) -> None:
        """Run the bench; whatever happens, leave no process behind."""
        self.server: ServerProcess | None = None
        self.generator: GeneratorProcess | None = None
        try:
            await self._run()
        finally:
            for process in (self.generator, self.server):
                if process is not None and not process.ended.called:
                    with contextlib.suppress(Exception):
                        process.transport.signalProcess("KILL")
                    await bounded(process.ended, "a process to be killed", 10)

    async def _run(self) -> None:
        args = self.args
        raise_open_file_limit(1024)
        self.began = time.monotonic()
        cert_path, key_path = self.write_certificate()
        port = await self.start_server(cert_path, key_path)
        self._marks = self.cpu_marks()
        self.phase.began = time.monotonic()
        sampling = LoopingCall(self.sample)
        sampling.start(0.25)
        self.connect = Connector(port, cert_path)
        healthy = Healthy(self, args.rate)
        await healthy.connect()
        healthy.start()
        await sleep(args.settle)

        self.enter("ramp")
        config = {
            "port": port,
            "cert": cert_path,
            "connections": args.connections,
            "stalled": args.stalled,
            "duration": args.duration,
            "ramp_concurrency": args.ramp_concurrency,
            "flood_every": args.flood_every,
            "flood_rate": args.flood_rate,
            "flood_burst": args.flood_burst,
            "streamers": args.streamers,
            "seed": args.seed,
        }
        generator = self.generator = GeneratorProcess(self.on_generator_event)
        transport = reactor.spawnProcess(
            generator,
            sys.executable,
            [sys.executable, __file__, "--generator", json.dumps(config)],
            env=dict(os.environ),
        )
        self.generator_pid = transport.pid
        await bounded(generator.ended, "the generator", args.timeout)
        self.generator_pid = 0
        if self.phase.name != "teardown":
            raise SystemExit(f"the generator failed:\n{generator.err.decode()}")

        # Until the server holds only the healthy pair again and is idle.
        last_cpu = cpu_seconds(self.server_pid)
        for _ in range(int(args.timeout)):
            await sleep(1)
            cpu = cpu_seconds(self.server_pid)
            if sockets(self.server_pid) - 1 <= 2 and cpu - last_cpu < 0.05:
                break
            last_cpu = cpu
        self.enter("after")
        await sleep(args.settle)
        healthy.stop()
        self.finish()
        for _ in range(int(WAIT * 10)):
            if healthy.all_in():
                break
            await sleep(0.1)
        sampling.stop()
        self.sample()
        self.server_transport.signalProcess(signal.SIGTERM)
        await bounded(self.server.ended, "the server to stop")
        self.report(healthy)

    def exit_status(self) -> str:
        status = self.server.status if self.server is not None else None
        if isinstance(status, ProcessTerminated):
            if status.signal is not None:
                return f"ended by signal {status.signal} (as twistd does)"
            return f"exited with status {status.exitCode}"
        if isinstance(status, ProcessDone):
            return "exited with status 0"
        return f"ended: {status}"

    def log_counts(self) -> dict[str, int]:
        # twistd rotates its log file every MB: server.log, server.log.1, ...
        text = "".join(
            path.read_text(errors="replace")
            for path in self.directory.glob(self.log_path.name + "*")
        )
        patterns = {
            "handshake timeouts": r"TLS handshake not done after",
            "flood disconnects": r"disconnected: flooding",
            "send queue drops": r"disconnected: send queue over",
            "over-long lines": r"sent a line longer than",
            "refused (limits)": r"refus",
            "tracebacks": r"Traceback",
        }
        counts = {name: len(re.findall(p, text)) for name, p in patterns.items()}
        # Garbage is refused by OpenSSL (a TLS error) or, if it does not
        # start like TLS (the bench's starts with an HTTP request), told how
        # to connect by the guard.
        counts["garbage refused (TLS errors, not TLS)"] = len(
            re.findall(r"\(not joined\) disconnected: (?:Error|NotTLSError)", text)
        )
        return counts

    def report(self, healthy: Healthy) -> None:
        args = self.args
        summary = self.generator_summary
        for sent_in in healthy.phase_of.values():
            sent_in.lost += 1
        rows = []
        for phase in self.phases.values():
            seconds = phase.ended - phase.began
            lat = sorted(phase.latencies)

            def pct(q: float, lat: list[float] = lat) -> str:
                return (
                    f"{lat[min(len(lat) - 1, int(q * len(lat)))]:.1f}" if lat else "-"
                )

            held = f"{max(phase.held)}" if phase.held else "-"
            rss = f"{phase.rss[-1]:.0f} / {max(phase.rss):.0f}" if phase.rss else "-"
            cpu = phase.cpu
            others = cpu["machine"] - cpu["server"] - cpu["generator"] - cpu["bench"]

            def share(used: float, seconds: float = seconds) -> str:
                return f"{100 * used / seconds:.0f} %" if seconds > 0 else "-"

            rows.append(
                [
                    phase.name,
                    f"{seconds:.1f}",
                    held,
                    str(len(lat)),
                    str(phase.lost),
                    pct(0.50),
                    pct(0.99),
                    f"{lat[-1]:.1f}" if lat else "-",
                    share(cpu["server"]),
                    share(cpu["generator"]),
                    share(max(0.0, others)),
                    rss,
                ]
            )
        header = [
            "phase",
            "seconds",
            "server connections (peak)",
            "healthy lines",
            "lost",
            "p50 ms",
            "p99 ms",
            "max ms",
            "server CPU",
            "generator CPU",
            "other CPU",
            "server RSS MB (end / peak)",
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            return (
                "| "
                + " | ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(cells, widths, strict=True))
                )
                + " |"
            )

        sent, lost, duplicated, disordered = healthy.verdict()
        loads = ", ".join(f"{load:.2f}" for load in self.loads)
        out = [
            "",
            f"securemsg under abuse: {args.connections} idle connections,"
            f" {args.stalled} stalled handshakes, flooders, a client that never"
            f" reads, 10 MB lines and garbage, for {args.duration:g} s",
            "",
            line(header),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *map(line, rows),
            "",
            f"healthy lines: {sent} sent, {lost} lost, {duplicated} duplicated,"
            f" {disordered} out of order ({args.rate:g} a second from each of two"
            " clients); errors the server sent them: "
            + (
                "; ".join(f"{n} x {text!r}" for text, n in healthy.errors.items())
                or "none"
            ),
            f"CPU is in % of one core ({os.cpu_count()} cores); other CPU is what"
            " processes other than the server, the generator and this one used"
            f" (load average before: {loads})",
        ]
        if summary:
            stalled = summary.get("stalled_lasted") or {}
            garbage = summary.get("garbage_lasted") or {}
            out += [
                f"ramp: {summary['idle_opened']} idle connections opened"
                f" ({summary['idle_failed']} failed) in"
                f" {summary['ramp_seconds']:.1f} s",
                f"stalled: {summary['stalled_opened']} opened,"
                f" {summary['stalled_closed']} closed by the server after"
                f" {stalled.get('min', 0):.2f} / {stalled.get('median', 0):.2f}"
                f" / {stalled.get('max', 0):.2f} s (min / median / max;"
                f" timeout {HANDSHAKE_TIMEOUT:g} s), the rest by the generator at"
                " the end",
                f"flooders: {summary['flood_rounds']} rounds,"
                f" {summary['flood_lines']} lines sent,"
                f" {summary['flood_disconnected']} told 'disconnected for flooding'",
                f"never reads: {summary['sink_rounds']} clients,"
                f" {summary['sink_dropped']} dropped by the server"
                f" ({summary['stream_lines']} private lines of"
                f" {len(STREAM_TEXT)} bytes streamed)",
                f"10 MB lines: {summary['big_lines']} sent,"
                f" {summary['big_refused']} refused, {summary['big_ponged']}"
                " answered /ping after",
                f"garbage: {summary['garbage_sent']} sent, {summary['garbage_closed']}"
                f" closed by the server after {garbage.get('median', 0):.2f} s"
                " (median)",
                f"generator CPU: {summary['cpu']:.1f} s (user + system) over the"
                f" run; errors: {summary['errors'] or 'none'}",
            ]
        counts = self.log_counts()
        out.append("server log: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        out.append(
            f"server: {self.exit_status()} on SIGTERM; options:"
            f" {shlex.join(self.server_options())}; log: {self.log_path}"
        )
        print("\n".join(out))
        if lost or duplicated or disordered:
            raise SystemExit("healthy lines were lost, duplicated or reordered")


# ---------------------------------------------------------------------------
# Amplification: a few bytes in that ask for a lot out (--amplification)

#: 2040 C1 control characters: 4082 bytes as sent (within the default line
#: length), 16 kB as shown and kept (each becomes <U+0085>).  Between two
#: other characters: U+0085 is white space to Python, so a line of nothing
#: else would be a blank line, and a topic's would be stripped away.
C1_TEXT = b"<" + b"\xc2\x85" * 2040 + b">"
#: What one connection may make the server hold, besides --send-queue: one
#: bounded reply (Limits.reply_bytes), Twisted's transport buffer and one
#: write (README, Abuse), and a TLS connection's own state (about 50 kB,
#: see tests/test_abuse.py).
PER_CONNECTION = 128 * 1024 + 80 * 1024 + 50 * 1024


def kernel_tcp_mb() -> float:
    """Memory the kernel holds in TCP buffers, machine-wide (/proc/net/sockstat)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return (
                int(fields[fields.index("mem") + 1])
                * os.sysconf("SC_PAGE_SIZE")
                / 2**20
            )
    return 0.0


def source_addresses() -> Iterator[str]:
    """
    Loopback addresses, one per attacker (Linux routes all of 127/8 to the
    loopback interface), so that the per-address limits keep their
    defaults.
    """
    for number in itertools.count():
        yield f"127.0.{1 + number // 250}.{2 + number % 250}"


@dataclass
class Attack:
    """One amplification attack and what it did to the server."""

    name: str
    clients: int
    sent: int = 0
    dropped: int = 0
    rss: tuple[float, float, float] = (0.0, 0.0, 0.0)
    kernel: float = 0.0
    seconds: float = 0.0


class Amplification:
    """
    The amplification attacks of issue 12 against the real server with its
    default limits (except --send-queue): clients that ask for a lot in one
    write and never read (/history of lines full of C1 characters, JSON
    /rooms with long topics, the replay on joining), and one address that
    connects and closes as fast as it can (churn).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.directory = Path(tempfile.mkdtemp(prefix="securemsg-amplify-"))
        self.log_path = self.directory / "server.log"
        self.addresses = source_addresses()
        self.attacks: list[Attack] = []
        self.churn: dict[str, float] = {}
        self.peak = 0.0
        self.kernel_peak = 0.0
        self.server: ServerProcess | None = None
        self.keep: list[Lines] = []

    def options(self) -> list[str]:
        return [
            "--send-queue", str(self.args.send_queue),
            "--flood-burst", str(self.args.flood_burst),
            "--flood-rate", f"{self.args.flood_rate:g}",
            "--history-db", ":memory:",
            "--greeting", "",
        ]  # fmt: skip

    def sample(self) -> None:
        with contextlib.suppress(OSError):
            self.peak = max(self.peak, rss_mb(self.pid))
            self.kernel_peak = max(self.kernel_peak, kernel_tcp_mb())

    async def client(self, *lines: bytes, until: bytes | None = None) -> Lines:
        """A reading client from an address of its own that sent C{lines}."""
        client = await self.connect.tls(source=next(self.addresses))
        if lines:
            waiting = client.wait_for(until) if until is not None else None
            client.send(*lines)
            if waiting is not None:
                await waiting
        return client

    async def fill(self) -> None:
        """
        Fill #big and #lobby with 50 lines of C1 characters each (800 kB as
        kept), and make 20 rooms with 16 kB topics; the fillers stay.
        """
        fillers = []
        for room in ("#big", "#lobby"):
            for _ in range(5):
                join = [b"/join " + room.encode()] if room != "#lobby" else []
                lines = [*join, *[C1_TEXT] * 10, b"/ping"]
                fillers.append(self.client(*lines, until=b"pong"))
        for number in range(10):
            lines = []
            for room in (f"#topic{number}a", f"#topic{number}b"):
                lines += [b"/join " + room.encode(), b"/topic " + C1_TEXT]
            fillers.append(self.client(*lines, b"/ping", until=b"pong"))
        self.keep += await gatherResults([started(f) for f in fillers])

    async def attack(
        self, name: str, prepare: list[bytes], until: bytes | None, payload: list[bytes]
    ) -> None:
        """
        C{--attackers} clients, each from its own address, send C{prepare}
        (and wait for C{until}), stop reading, and send C{payload} in one
        write; the server has a few seconds to deal with them, then they
        close.
        """
        attack = Attack(name, self.args.attackers)
        before = rss_mb(self.pid)
        self.peak = before
        self.kernel_peak = kernel_tcp_mb()
        began = time.monotonic()
        clients = await gatherResults(
            [
                started(self.client(*prepare, until=until))
                for _ in range(self.args.attackers)
            ]
        )
        for client in clients:
            client.stop_reading()
            client.send(*payload)
            attack.sent += sum(len(line) + 1 for line in payload)
        for _ in range(30):
            await sleep(0.1)
            if all(client.closed for client in clients):
                break
        attack.dropped = sum(client.closed for client in clients)
        attack.seconds = time.monotonic() - began
        peak = self.peak
        attack.kernel = self.kernel_peak
        for client in clients:
            client.transport.abortConnection()
        await gatherResults([bounded(c.ended, "an attacker to close") for c in clients])
        await sleep(1)
        attack.rss = (before, peak, rss_mb(self.pid))
        self.attacks.append(attack)

    async def churn_attack(self, seconds: float) -> None:
        """
        One address connects, joins (its /ping is answered) and closes,
        ten at a time, for C{seconds}; a client in #lobby counts the
        notices it gets.
        """
        notices = 0

        def count(line: bytes) -> None:
            nonlocal notices
            notices += b" joined" in line or b" left" in line or b"announced" in line

        observer = await self.client()
        observer.on_line = count
        source = next(self.addresses)
        accepted = refused = 0
        ends = time.monotonic() + seconds
        cpu = cpu_seconds(self.pid)

        async def churner() -> None:
            nonlocal accepted, refused
            while time.monotonic() < ends:
                try:
                    client = await self.connect.tls(source=source)
                except ConnectionError:
                    refused += 1
                    continue
                try:
                    pong = client.wait_for(b"pong")
                    client.send(b"/ping")
                    await pong
                except ConnectionError:
                    refused += 1
                    continue
                accepted += 1
                client.transport.loseConnection()
                await bounded(client.ended, "a churner to close")

        await gatherResults([started(churner()) for _ in range(10)])
        cpu = cpu_seconds(self.pid) - cpu
        await sleep(1)
        self.churn = {
            "seconds": seconds,
            "accepted": accepted / seconds,
            "joined": accepted,
            "refused": refused / seconds,
            "notices": notices / seconds,
            "cpu": 100 * cpu / seconds,
        }

    async def run(self) -> None:
        raise_open_file_limit(4096)
        cert_path, key_path = write_certificate(self.directory)
        self.server, transport, port = await start_twistd(
            self.directory, self.log_path, cert_path, key_path, self.options()
        )
        self.pid = transport.pid
        try:
            sampling = LoopingCall(self.sample)
            sampling.start(0.02)
            self.connect = Connector(port, cert_path)
            await self.fill()
            base = rss_mb(self.pid)
            history = [b"/history #big 50"] * 20
            await self.attack("history", [b"/join #big"], b"end of history", history)
            rooms = [b'{"type": "rooms"}'] * 20
            await self.attack("rooms (JSON)", [b"/format json"], b"json", rooms)
            replay = [b"/join #big", b"/part #big"] * 10
            await self.attack("replay on join", [], None, replay)
            await self.churn_attack(self.args.churn_seconds)
            sampling.stop()
            transport.signalProcess(signal.SIGTERM)
            await bounded(self.server.ended, "the server to stop")
            self.report(base)
        finally:
            if not self.server.ended.called:
                with contextlib.suppress(Exception):
                    transport.signalProcess("KILL")
                await bounded(self.server.ended, "the server to be killed", 10)

    def report(self, base: float) -> None:
        log = self.log_path.read_text(errors="replace")
        bound = self.args.attackers * (self.args.send_queue + PER_CONNECTION) / 2**20
        header = [
            "attack",
            "clients",
            "sent kB",
            "dropped (send queue)",
            "server RSS MB: before / peak / after",
            "peak growth MB",
            "bound MB",
            "kernel TCP MB (peak)",
        ]
        rows = [
            [
                a.name,
                str(a.clients),
                f"{a.sent / 1000:.0f}",
                str(a.dropped),
                " / ".join(f"{value:.0f}" for value in a.rss),
                f"{a.rss[1] - a.rss[0]:.1f}",
                f"{bound:.0f}",
                f"{a.kernel:.0f}",
            ]
            for a in self.attacks
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            return (
                "| "
                + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
                + " |"
            )

        churn = self.churn
        print(
            "\n".join(
                [
                    "",
                    f"amplification: {self.args.attackers} non-reading clients per"
                    f" attack, each from its own address, each one write;"
                    f" --send-queue {self.args.send_queue}"
                    f" --flood-burst {self.args.flood_burst}"
                    f" --flood-rate {self.args.flood_rate:g},"
                    " other limits default;"
                    f" server at {base:.0f} MB after filling #big and #lobby with"
                    " 50 lines of C1 characters and 20 rooms with 16 kB topics",
                    "",
                    line(header),
                    line(["-" * w for w in widths]),
                    *[line(row) for row in rows],
                    "",
                    f"bound = clients x (send queue + {PER_CONNECTION // 1024} KiB:"
                    " one bounded reply, transport buffers, TLS state); the"
                    " kernel's TCP buffers (machine-wide, both ends) are"
                    " bounded by net.ipv4.tcp_wmem and tcp_rmem, not by the"
                    " server",
                    f"churn from one address for {churn['seconds']:g} s:"
                    f" {churn['accepted']:.1f} joined a second (each with the"
                    f" bounded #lobby replay),"
                    f" {churn['refused']:.0f}/s refused before TLS;"
                    f" a #lobby member got {churn['notices']:.1f} join/leave"
                    f" notices/s; server CPU {churn['cpu']:.0f} %",
                    "server log: "
                    + ", ".join(
                        f"{name} {len(re.findall(pattern, log))}"
                        for name, pattern in {
                            "send queue drops": r"disconnected: send queue over",
                            "flood disconnects": r"disconnected: flooding",
                            "connection refusal lines": r"refus",
                            "tracebacks": r"Traceback",
                        }.items()
                    ),
                ]
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--stalled", type=int, default=500)
    parser.add_argument(
        "--duration", type=float, default=20, help="seconds of the attack phase"
    )
    parser.add_argument(
        "--rate", type=float, default=2, help="lines a second per healthy client"
    )
    parser.add_argument("--settle", type=float, default=5, help="before and after")
    parser.add_argument("--ramp-concurrency", type=int, default=100)
    parser.add_argument(
        "--flood-every", type=float, default=5, help="seconds between flooders"
    )
    parser.add_argument(
        "--flood-rate", type=float, default=5, help="the server's --flood-rate"
    )
    parser.add_argument(
        "--flood-burst", type=int, default=20, help="the server's --flood-burst"
    )
    parser.add_argument(
        "--streamers",
        type=int,
        default=20,
        help="clients streaming private lines to the one that never reads",
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--timeout", type=float, default=900, help="bound on the generator's run"
    )
    parser.add_argument(
        "--amplification",
        action="store_true",
        help="run the amplification attacks instead (history, rooms, replay,"
        " churn; see bench/README.md)",
    )
    parser.add_argument(
        "--attackers", type=int, default=100, help="(amplification) per attack"
    )
    parser.add_argument(
        "--send-queue",
        type=int,
        default=SEND_QUEUE,
        help="(amplification) the server's --send-queue",
    )
    parser.add_argument(
        "--churn-seconds", type=float, default=5, help="(amplification)"
    )
    parser.add_argument("--generator", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generator:
        generator_main(json.loads(args.generator))
        return
    if not Path("/proc/self/status").exists():
        raise SystemExit("abuse.py reads /proc: Linux only")
    if args.amplification:

        async def amplify(_: object) -> None:
            await Amplification(args).run()

        react(lambda r: started(amplify(r)))
        return

    async def run(_: object) -> None:
        await Bench(args).run()

    react(lambda r: started(run(r)))


if __name__ == "__main__":
    main()
