#!/usr/bin/env python3
"""
What one connection costs the server, in one process, without the kernel.

N full TLS 1.3 handshakes are driven in memory through each server's real
Twisted stack, on Twisted's own TCP transport (C{tcp.Server}) over a fake
socket and a fake reactor's reader/writer sets (no system call, no epoll),
with the real reactor's timers:

  - C{securemsg}: what C{twistd securemsg} builds (L{securemsg.tap}'s
    C{make_service} with C{bench/run.py}'s options): the guard
    (C{GuardedTLSFactory}), C{TLSServerProtocol}, C{ChatServerFactory}:
    the limits, the handshake timeout, the join, the greeting, the history
    replay, the announcements, the counters, the disconnection line.
    Also without session tickets (C{OP_NO_TICKET}, no session cache: the
    hub's session settings), to tell what the tickets cost.
  - C{hub}: C{bench/peers/twisted_hub.py}'s C{Hub} behind Twisted's
    C{TLSMemoryBIOFactory} with the context Twisted's C{ssl:} endpoint makes.
  - C{sketch}: L{LeanTLS}, the hub's greeting with nothing between
    Twisted's TCP transport and pyOpenSSL's memory BIOs, with the hub's
    context: what a TLS layer of securemsg's own could come down to.
  - C{openssl}: pyOpenSSL alone with memory BIOs and each context (the
    handshake, the greeting written, the close): the floor under each.

The client (pyOpenSSL, memory BIOs, offering the X25519 key exchange only,
which is what C{bench/run.py}'s clients end up with) connects, finishes the handshake,
sends its close_notify as soon as it can, and never reads what comes after the
server's Finished (its cost is not counted either way).  Only the server's
calls are timed, in CPU time (C{time.process_time_ns}): accepting (the
factory's C{buildProtocol} and C{makeConnection}), each read
(C{tcp.Server.doRead}), the writes and the closing the reactor would do
(C{doWrite}, C{connectionLost}) and its timers (C{runUntilCurrent}).

Each connection is made, used and closed before the next (one at a time);
C{--members M} keeps M more clients connected in the room, so that each
arrival and departure is announced to them.  Logging: C{none} (no log
observer: each line is still made and published) or C{twistd} (the text file
observer C{twistd -n} writes with, to a file under C{/tmp}).

    python bench/handshake_inprocess.py [-n 2000] [--rounds 5] [--members 0]
        [--client-groups X25519|default] [--only ROWS] [--calls]

Prints the best of the rounds (µs of server CPU per connection) for each
server and logging, the variants taking turns within each round.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from OpenSSL._util import lib as _openssl_lib
from twisted.internet import reactor as _reactor
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import (
    globalLogBeginner,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.protocols.tls import TLSMemoryBIOFactory

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "peers"))

import harness  # noqa: E402
import twisted_hub  # noqa: E402

reactor: Any = _reactor
_EAGAIN = OSError(errno.EAGAIN, "would block")


class FakeSocket:
    """A connected socket: what it is sent goes to the client, at once."""

    def __init__(self, keep: bool = True) -> None:
        self.inbox: list[bytes] = []
        self.sent: list[bytes] = []
        self.keep = keep

    def recv(self, size: int) -> bytes:
        if self.inbox:
            return self.inbox.pop(0)
        raise _EAGAIN

    def send(self, data: bytes) -> int:
        if self.keep:
            self.sent.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.sent)
        self.sent.clear()
        return data

    def fileno(self) -> int:
        return 1023

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *args: object) -> None:
        pass

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        pass

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 5000)


class FakeReactor:
    """
    The reactor as C{tcp.Server} sees it: readers and writers in sets (the
    epoll calls are the kernel's), everything else the real reactor's.
    """

    def __init__(self) -> None:
        self.readers: set[Any] = set()
        self.writers: set[Any] = set()
        self.callLater = reactor.callLater
        self.seconds = reactor.seconds

    def addReader(self, reader: Any) -> None:
        self.readers.add(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.discard(reader)

    def addWriter(self, writer: Any) -> None:
        self.writers.add(writer)

    def removeWriter(self, writer: Any) -> None:
        self.writers.discard(writer)

    def run_writes(self) -> None:
        """What the reactor does for the sockets that can be written to."""
        while self.writers:
            for writer in list(self.writers):
                why = writer.doWrite()
                if why:
                    PosixReactorBase._disconnectSelectable(self, writer, why, False)  # type: ignore[arg-type]

    def read(self, transport: Any) -> None:
        """What the reactor does when C{transport}'s socket has bytes."""
        why = transport.doRead()
        if why:
            PosixReactorBase._disconnectSelectable(self, transport, why, True)  # type: ignore[arg-type]
        self.run_writes()
        reactor.runUntilCurrent()


class FakePort:
    """The listening port as C{tcp.Server} sees it."""

    _realPortNumber = 5000

    def __init__(self, factory: Any, fake: FakeReactor) -> None:
        self.factory = factory
        self.fake = fake
        self.sessionno = 0

    def accept(self, sock: FakeSocket, client_port: int) -> Any:
        """C{tcp.Port.doRead}'s work for one accepted connection."""
        addr = ("127.0.0.1", client_port)
        protocol = self.factory.buildProtocol(IPv4Address("TCP", *addr))
        if protocol is None:
            raise RuntimeError("connection refused")
        s = self.sessionno
        self.sessionno = s + 1
        transport = tcp.Server(sock, protocol, addr, self, s, self.fake)  # type: ignore[arg-type]
        protocol.makeConnection(transport)
        self.fake.run_writes()
        reactor.runUntilCurrent()
        return transport


def client_context(groups: str = "X25519") -> SSL.Context:
    """
    The client's context, offering C{groups} for the key exchange (an
    OpenSSL group list, or C{default} for this OpenSSL's own defaults).

    By default X25519 alone, which is what bench/run.py's clients (the
    system's OpenSSL 3.0: no hybrid, a key share for X25519 only) end up
    with: this OpenSSL's defaults also offer X25519MLKEM768,
    which costs a server 50 µs or more, and a server that does not take it
    (securemsg before 2026-12-07) would not be doing the same work as one
    that does.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_verify(SSL.VERIFY_NONE, lambda *a: True)
    if groups != "default" and not _openssl_lib.SSL_CTX_set1_curves_list(
        context._context, groups.encode("ascii")
    ):
        raise SystemExit(f"this OpenSSL cannot offer the groups {groups}")
    return context


class Meter:
    """
    Measures the server's share: its CPU time in ns (C{process_time_ns}),
    or, if L{COUNT_CALLS}, the Python and C functions it calls.
    """

    def __init__(self) -> None:
        self.total = 0
        self._t0 = 0
        if COUNT_CALLS:
            self.start, self.stop = self._start_count, self._stop_count  # type: ignore[method-assign]

    def start(self) -> None:
        self._t0 = time.process_time_ns()

    def stop(self) -> None:
        self.total += time.process_time_ns() - self._t0

    def _start_count(self) -> None:
        sys.setprofile(self._count)

    def _stop_count(self) -> None:
        sys.setprofile(None)

    def _count(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            self.total += 1


#: Count function calls instead of timing (--calls).
COUNT_CALLS = False


def drive(
    port: FakePort,
    context: SSL.Context,
    n: int,
    first_port: int = 20000,
    check: bool = False,
) -> float:
    """
    C{n} connections, one after the other, each a full handshake, the first
    line, and a close by the client; return the server's CPU ns in all.
    """
    meter = Meter()
    start, stop = meter.start, meter.stop
    fake = port.fake
    for i in range(n):
        client = SSL.Connection(context, None)
        client.set_connect_state()
        sock = FakeSocket()
        start()
        transport = port.accept(sock, first_port + i % 40000)
        stop()
        with contextlib.suppress(SSL.WantReadError):
            client.do_handshake()
        sock.inbox.append(client.bio_read(65536))
        start()
        fake.read(transport)
        stop()
        client.bio_write(sock.take())
        client.do_handshake()
        sock.inbox.append(client.bio_read(65536))
        start()
        fake.read(transport)
        stop()
        if check:
            client.bio_write(sock.take())
            line = client.recv(65536)
            assert b"elcome" in line, line
        with contextlib.suppress(SSL.Error):
            client.shutdown()
        sock.inbox.append(client.bio_read(65536))
        start()
        fake.read(transport)
        stop()
        if transport.connected:
            raise RuntimeError("the server did not close")
    return meter.total


# ----------------------------------------------------------------------
# The servers


def securemsg_port(
    fake: FakeReactor, cert: str, key: str, state_dir: str, idle_timeout: str = "300"
) -> tuple[FakePort, Any]:
    """
    What C{twistd securemsg} builds, with bench/run.py's options but the
    idle timeout (run.py turns it off; by default it is on, at 300 s).
    """
    options_given = list(harness.SECUREMSG_BENCH_OPTIONS)
    at = options_given.index("--idle-timeout")
    options_given[at + 1] = idle_timeout
    from securemsg import tap
    from securemsg.server.guard import GuardedTLSFactory

    options = tap.Options()
    options.parseOptions(
        [
            "--cert",
            cert,
            "--key",
            key,
            "--state",
            os.path.join(state_dir, "state.json"),
            "--listen",
            "tcp:0:interface=127.0.0.1",
            *options_given,
        ]
    )
    top = tap.make_service(reactor, options)
    chat = top.getServiceNamed("chat")
    ((_, endpoint),) = chat.endpoints
    guard = GuardedTLSFactory(endpoint.creator, chat.factory, reactor, endpoint.limits)
    guard.doStart()
    guard.creator_context = endpoint.creator.context  # type: ignore[attr-defined]
    return FakePort(guard, fake), chat.factory


def hub_port(fake: FakeReactor, cert: str, key: str) -> FakePort:
    """The naive hub on what Twisted's C{ssl:} endpoint makes."""
    from twisted.internet.endpoints import serverFromString

    endpoint = serverFromString(reactor, f"ssl:0:privateKey={key}:certKey={cert}")
    tls = TLSMemoryBIOFactory(
        endpoint._sslContextFactory,  # type: ignore[attr-defined]
        False,
        twisted_hub.make_factory(),
    )
    tls.doStart()
    tls.creator_context = endpoint._sslContextFactory.getContext()  # type: ignore[attr-defined]
    return FakePort(tls, fake)


class LeanTLS(Protocol):
    """
    A sketch, for measuring only: the hub's greeting over TLS with no layer
    between Twisted's TCP transport and OpenSSL's memory BIOs (no
    C{TLSMemoryBIOProtocol}, C{ProtocolWrapper} or C{LineReceiver}): what
    a server-side TLS layer of securemsg's own could cost at least.
    """

    def __init__(self, context: SSL.Context) -> None:
        self.tls = SSL.Connection(context, None)
        self.tls.set_accept_state()
        self.handshaken = False

    def dataReceived(self, data: bytes) -> None:
        tls = self.tls
        tls.bio_write(data)
        if not self.handshaken:
            try:
                tls.do_handshake()
            except SSL.WantReadError:
                self.send_out()
                return
            self.handshaken = True
            tls.send(b"welcome user\n")
        try:
            while tls.recv(65536):
                pass  # Lines: not in this exchange.
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            tls.shutdown()
            self.send_out()
            self.transport.loseConnection()
            return
        self.send_out()

    def send_out(self) -> None:
        try:  # noqa: SIM105 (timed: cheaper than suppress)
            self.transport.write(self.tls.bio_read(65536))
        except SSL.WantReadError:
            pass


def lean_port(fake: FakeReactor, context: SSL.Context) -> FakePort:
    """The L{LeanTLS} sketch, with the hub's context."""
    factory = Factory()
    factory.buildProtocol = lambda addr: LeanTLS(context)  # type: ignore[method-assign]
    return FakePort(factory, fake)


def openssl_only(context: SSL.Context, client_context: SSL.Context, n: int) -> float:
    """The OpenSSL floor: the same exchange with pyOpenSSL alone."""
    meter = Meter()
    greeting = b"Welcome to securemsg, guest1. Type /help for commands.\n"
    for _ in range(n):
        client = SSL.Connection(client_context, None)
        client.set_connect_state()
        with contextlib.suppress(SSL.WantReadError):
            client.do_handshake()
        hello = client.bio_read(65536)
        meter.start()
        server = SSL.Connection(context, None)
        server.set_accept_state()
        server.bio_write(hello)
        try:  # noqa: SIM105 (timed: cheaper than suppress)
            server.do_handshake()
        except SSL.WantReadError:
            pass
        flight = server.bio_read(65536)
        meter.stop()
        client.bio_write(flight)
        client.do_handshake()
        finished = client.bio_read(65536)
        meter.start()
        server.bio_write(finished)
        server.do_handshake()
        server.send(greeting)
        server.bio_read(65536)
        meter.stop()
        with contextlib.suppress(SSL.Error):
            client.shutdown()
        close = client.bio_read(65536)
        meter.start()
        server.bio_write(close)
        try:  # noqa: SIM105 (timed: cheaper than suppress)
            server.recv(65536)
        except SSL.ZeroReturnError:
            pass
        server.shutdown()
        server.bio_read(65536)
        meter.stop()
    return meter.total


def add_members(port: FakePort, m: int) -> list[Any]:
    """M clients that stay in the room (their output is thrown away)."""
    context = client_context()
    held = []
    for i in range(m):
        client = SSL.Connection(context, None)
        client.set_connect_state()
        sock = FakeSocket()
        transport = port.accept(sock, 60000 + i)
        with contextlib.suppress(SSL.WantReadError):
            client.do_handshake()
        sock.inbox.append(client.bio_read(65536))
        port.fake.read(transport)
        client.bio_write(sock.take())
        client.do_handshake()
        sock.inbox.append(client.bio_read(65536))
        port.fake.read(transport)
        sock.keep = False
        sock.sent.clear()
        held.append((client, transport))
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("-n", type=int, default=2000, help="connections per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--members", type=int, default=0)
    parser.add_argument(
        "--idle-timeout",
        default="300",
        help="securemsg's idle timeout (300, its default; bench/run.py uses 0)",
    )
    parser.add_argument(
        "--calls",
        action="store_true",
        help="count the server's function calls (Python and C) per connection"
        " instead of timing (one round)",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated rows (e.g. securemsg,hub)"
    )
    parser.add_argument(
        "--client-groups",
        default="X25519",
        help="key exchange groups the client offers (an OpenSSL list, or"
        " 'default' for this OpenSSL's, X25519MLKEM768 first)",
    )
    args = parser.parse_args()

    from cryptography.hazmat.primitives import serialization

    from securemsg.tls import certs

    work = tempfile.mkdtemp(prefix="hs-inprocess-")
    certificate, private = certs.generate_self_signed(["127.0.0.1"])
    cert = os.path.join(work, "certificate.pem")
    key = os.path.join(work, "private.key")
    Path(cert).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    Path(key).write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    # Events made before now are thrown away; none are kept from now on
    # unless an observer is added.
    globalLogBeginner.beginLoggingTo([], redirectStandardIO=False)
    log_file = open(os.path.join(work, "twistd.log"), "a")  # noqa: SIM115
    twistd_observer = textFileLogObserver(log_file)

    fake = FakeReactor()
    secure, chat_factory = securemsg_port(fake, cert, key, work, args.idle_timeout)
    # securemsg with the hub's session settings (Twisted's defaults): no
    # TLS 1.3 tickets its clients could resume with, no session cache.
    no_tickets_dir = os.path.join(work, "no-tickets")
    os.mkdir(no_tickets_dir)
    no_tickets, _ = securemsg_port(fake, cert, key, no_tickets_dir, args.idle_timeout)
    no_tickets_context = no_tickets.factory.creator_context
    no_tickets_context.set_options(SSL.OP_NO_TICKET)
    no_tickets_context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    hub = hub_port(fake, cert, key)
    ctx = client_context(args.client_groups)
    if args.members:
        add_members(secure, args.members)
        add_members(no_tickets, args.members)
        add_members(hub, args.members)
    # Once each, checking that the greeting arrives.
    drive(secure, ctx, 3, first_port=1000, check=True)
    drive(no_tickets, ctx, 3, first_port=1000, check=True)
    drive(hub, ctx, 3, first_port=1000, check=True)
    server_context = secure.factory.creator_context
    hub_context = hub.factory.creator_context
    lean = lean_port(fake, hub_context)
    drive(lean, ctx, 3, first_port=1000, check=True)

    def logged(run: Callable[[], float], observer: Any) -> Callable[[], float]:
        def wrapped() -> float:
            if observer is not None:
                globalLogPublisher.addObserver(observer)
            try:
                return run()
            finally:
                if observer is not None:
                    globalLogPublisher.removeObserver(observer)
                    log_file.flush()

        return wrapped

    n = args.n
    rows: dict[str, Callable[[], float]] = {
        "securemsg, no log observer": logged(lambda: drive(secure, ctx, n), None),
        "securemsg, twistd's log file": logged(
            lambda: drive(secure, ctx, n), twistd_observer
        ),
        "securemsg without session tickets, no log observer": logged(
            lambda: drive(no_tickets, ctx, n), None
        ),
        "naive Twisted hub, no log observer": logged(lambda: drive(hub, ctx, n), None),
        "naive Twisted hub, twistd's log file": logged(
            lambda: drive(hub, ctx, n), twistd_observer
        ),
        "sketch: no TLS layer, the hub's context": lambda: drive(lean, ctx, n),
        "OpenSSL alone, securemsg's context": lambda: openssl_only(
            server_context, ctx, n
        ),
        "OpenSSL alone, securemsg's context without tickets": lambda: openssl_only(
            no_tickets_context, ctx, n
        ),
        "OpenSSL alone, the hub's context": lambda: openssl_only(hub_context, ctx, n),
    }
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        rows = {k: v for k, v in rows.items() if any(w in k for w in wanted)}
    if args.calls:
        global COUNT_CALLS
        COUNT_CALLS = True
        print(f"server function calls per connection (members: {args.members})")
        width = max(map(len, rows))
        for name, run in rows.items():
            print(f"  {name:<{width}}  {run() / n:7.1f}")
        return
    results: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, run in rows.items():
            gc.collect()
            results[name].append(run() / n / 1000)
    print(
        f"server CPU µs per connection, best of {args.rounds} rounds of {n}"
        f" (members in the room: {args.members}, idle timeout"
        f" {args.idle_timeout})"
    )
    width = max(map(len, results))
    for name, values in results.items():
        values.sort()
        median = values[len(values) // 2]
        print(f"  {name:<{width}}  {values[0]:7.1f}   (median {median:.1f})")
    del chat_factory


if __name__ == "__main__":
    main()
