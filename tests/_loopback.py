"""
Shared pieces for tests over real loopback TLS: a securemsg server on an
ephemeral port whose connections a test can wait for, line clients that
let a test wait for the next lines, and bounded waits.

Each wait is bounded, and L{LoopbackServerTestCase.tearDown} waits until
both ends of every connection have seen C{connectionLost} before it stops
listening, so that trial's reactor is clean (STYLE.md, pitfall 9).
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import isawaitable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import reactor as _global_reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IListeningPort,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineReceiver
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from securemsg import ChatServerFactory, ChatServerProtocol
from securemsg.core.hub import ChatHub
from securemsg.core.limits import Limits
from securemsg.server.endpoint import tls_server_endpoint
from securemsg.tls import policy as tls

# The global reactor, typed for what these tests use of it.
reactor: Any = _global_reactor

#: How long any single wait may take.  Everything here happens on loopback
#: in milliseconds; this only stops a bug from hanging the suite.
TIMEOUT = 10.0

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


def bounded(deferred: Deferred[T], what: str, timeout: float = TIMEOUT) -> Deferred[T]:
    """
    Fail C{deferred} with an L{AssertionError} naming C{what} if it has not
    fired within C{timeout} seconds.
    """

    def timed_out(result: object, seconds: float) -> Failure:
        return Failure(AssertionError(f"timed out after {seconds}s waiting for {what}"))

    return deferred.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)


async def eventually(
    read: Callable[[], Any],
    done: Callable[[Any], bool] = bool,
    what: str = "a condition",
    timeout: float = TIMEOUT,
    interval: float = 0.05,
) -> Any:
    """
    What C{read()} gives (awaited, if it gives an awaitable) once C{done}
    says it is what the test waits for, asked again every C{interval}
    seconds until C{timeout} seconds have passed (by the reactor's clock,
    however slowly a loaded machine goes round); then an L{AssertionError}
    naming C{what} and the last value seen.
    """
    deadline = reactor.seconds() + timeout
    while True:
        found = read()
        if isawaitable(found):
            found = await found
        if done(found):
            return found
        if reactor.seconds() >= deadline:
            raise AssertionError(
                f"waited {timeout} s for {what}; the last seen: {found!r}"
            )
        await deferLater(reactor, interval)


def failure_of(test: TestCase, deferred: Deferred[Any], kind: type[E]) -> Deferred[E]:
    """
    C{test.assertFailure(deferred, kind)}, typed as what it fires with: the
    exception (Twisted types it as C{deferred}'s result).
    """
    failed: Deferred[Any] = test.assertFailure(deferred, kind)
    return failed


def port_of(address: IAddress) -> int:
    """The port of C{address}, which the test knows to be an IP address."""
    assert isinstance(address, (IPv4Address, IPv6Address)), address
    return address.port


def tls_transport(protocol: Protocol) -> TLSMemoryBIOProtocol:
    """
    The transport of C{protocol}, which the test knows is connected over
    TLS: the TLS layer, which can also pause, resume and abort.
    """
    transport = protocol.transport
    assert isinstance(transport, TLSMemoryBIOProtocol), transport
    return transport


class Waiters:
    """
    Deferreds waiting for one event.  They fire with L{None}; what the event
    brought (such as a L{Failure} saying why a connection ended, which a
    Deferred would take as an error) is kept in C{value}.
    """

    def __init__(self) -> None:
        self.fired = False
        self.value: Any = None
        self._waiting: list[Deferred[None]] = []

    def wait(self) -> Deferred[None]:
        if self.fired:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def fire(self, value: object = None) -> None:
        self.fired, self.value = True, value
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)


# ---------------------------------------------------------------------------
# The server side, observed


class ObservedServerProtocol(ChatServerProtocol):
    """
    The real server protocol, which also lets a test wait for its
    C{connectionLost}.
    """

    factory: ObservedChatServerFactory

    def __init__(self, factory: ChatServerFactory) -> None:
        super().__init__(factory)
        self.ended = Waiters()
        self.was_joined = False

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.was_joined = self._joined
        try:
            super().connectionLost(reason)
        finally:
            self.ended.fire(reason)


class ObservedChatServerFactory(ChatServerFactory):
    """
    L{ChatServerFactory} as it is, except that it keeps every protocol it
    builds so that a test can wait for connections to come and go.
    """

    protocol = ObservedServerProtocol  # type: ignore[assignment]

    def __init__(self, clock: IReactorTime) -> None:
        super().__init__(clock, ChatHub(clock))
        self.connections: list[ObservedServerProtocol] = []
        self._arrivals: list[tuple[int, Deferred[ObservedServerProtocol]]] = []

    def buildProtocol(self, addr: Any) -> ObservedServerProtocol:  # type: ignore[override]
        protocol = ObservedServerProtocol(self)
        self.connections.append(protocol)
        arrivals, self._arrivals = self._arrivals, []
        for index, waiter in arrivals:
            if index < len(self.connections):
                waiter.callback(self.connections[index])
            else:
                self._arrivals.append((index, waiter))
        return protocol

    def connection(self, index: int) -> Deferred[ObservedServerProtocol]:
        """The C{index}th connection (from 0), once the server accepted it."""
        if index < len(self.connections):
            return succeed(self.connections[index])
        waiter: Deferred[ObservedServerProtocol] = Deferred()
        self._arrivals.append((index, waiter))
        return bounded(waiter, f"server connection #{index}")


# ---------------------------------------------------------------------------
# Clients


@implementer(IHandshakeListener)
class LineClient(LineReceiver):
    """
    A TLS chat client that keeps the lines it has not read yet and lets a
    test wait for the next few.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1_000_000

    def __init__(self) -> None:
        self.unread: list[str] = []
        self.handshake = Waiters()
        self.ended = Waiters()
        self._wanted: tuple[int, Deferred[list[str]]] | None = None

    def handshakeCompleted(self) -> None:
        self.handshake.fire()

    def lineReceived(self, line: bytes) -> None:
        self.unread.append(line.decode("utf-8"))
        self._hand_over()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.ended.fire(reason)
        self._give_up()

    def _give_up(self) -> None:
        """Fail a wait for lines that can no longer come."""
        if self._wanted is not None:
            count, waiter = self._wanted
            self._wanted = None
            reason = self.ended.value
            waiter.errback(
                AssertionError(
                    f"connection lost ({reason and reason.getErrorMessage()})"
                    f" while waiting for {count} lines; got {self.unread!r}"
                )
            )

    def _hand_over(self) -> None:
        if self._wanted is not None and len(self.unread) >= self._wanted[0]:
            count, waiter = self._wanted
            self._wanted = None
            lines, self.unread = self.unread[:count], self.unread[count:]
            waiter.callback(lines)

    def next_lines(self, count: int = 1) -> Deferred[list[str]]:
        """The next C{count} lines received, once they are all here."""
        assert self._wanted is None, "already waiting"

        def forget(waiter: Deferred[list[str]]) -> None:
            self._wanted = None

        waiter: Deferred[list[str]] = Deferred(forget)
        self._wanted = (count, waiter)
        self._hand_over()
        if self.ended.fired:
            self._give_up()

        def timed_out(result: object, seconds: float) -> Failure:
            return Failure(
                AssertionError(
                    f"timed out after {seconds}s waiting for {count} lines;"
                    f" got only {self.unread!r}"
                )
            )

        return waiter.addTimeout(TIMEOUT, reactor, onTimeoutCancel=timed_out)

    def send(self, *lines: bytes) -> None:
        """Send each of C{lines} followed by a newline."""
        assert self.transport is not None
        self.transport.write(b"".join(line + b"\n" for line in lines))

    def wait_closed(self) -> Deferred[None]:
        """Fires once this end saw C{connectionLost}; C{ended.value} says why."""
        return bounded(self.ended.wait(), "the client's connectionLost")

    def abort(self) -> Deferred[None]:
        """
        Close the connection at once if it is open (no TLS close_notify
        exchange to wait for); fires once this end saw C{connectionLost}.
        """
        if not self.ended.fired:
            tls_transport(self).abortConnection()
        return self.wait_closed()


async def connect_line_client(
    port: int, trust_pem: bytes, certificate: Any = None
) -> LineClient:
    """
    A L{LineClient} connected over TLS to C{127.0.0.1:port}, trusting
    C{trust_pem} and checking the name C{localhost}; with C{certificate} (a
    L{twisted.internet.ssl.PrivateCertificate}) it presents that.
    """
    options = optionsForClientTLS(
        "localhost",
        trustRoot=Certificate.loadPEM(trust_pem),
        clientCertificate=certificate,
    )
    tcp: IReactorTCP = reactor
    endpoint = wrapClientTLS(
        options, TCP4ClientEndpoint(tcp, "127.0.0.1", port, timeout=TIMEOUT)
    )
    client = await bounded(endpoint.connect(Factory.forProtocol(LineClient)), "connect")
    assert isinstance(client, LineClient)
    return client


def greeting(name: str) -> str:
    """The default greeting line for a client called C{name}."""
    return f"*** Welcome to securemsg, {name}. Type /help for commands."


class LoopbackServerTestCase(TestCase):
    """
    Serves securemsg over real TLS on an ephemeral loopback port; tracks
    every client so that tearDown can close everything cleanly.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.clients: list[LineClient] = []
        self.factory = ObservedChatServerFactory(reactor)
        self.listening: IListeningPort | None = None

    async def serve(
        self, cert_path: str, key_path: str, limits: Limits | None = None
    ) -> None:
        """
        Listen with the certificate and key in these files (and the
        connection limits of C{limits}, if given).
        """
        credentials = tls.load_credentials(cert_path, key_path)
        endpoint = tls_server_endpoint(
            reactor,
            "tcp:0:interface=127.0.0.1",
            tls.ServerTLS(tls.make_server_context(credentials)),
            limits,
        )
        self.listening = await bounded(endpoint.listen(self.factory), "listening")
        self.port = port_of(self.listening.getHost())

    def tcp_endpoint(self) -> TCP4ClientEndpoint:
        tcp: IReactorTCP = reactor
        return TCP4ClientEndpoint(tcp, "127.0.0.1", self.port, timeout=TIMEOUT)

    async def connect(
        self, trust_pem: bytes, make: Callable[[], LineClient] = LineClient
    ) -> LineClient:
        """A TLS client that trusts C{trust_pem} and checks C{localhost}."""
        options = optionsForClientTLS(
            "localhost", trustRoot=Certificate.loadPEM(trust_pem)
        )
        endpoint = wrapClientTLS(options, self.tcp_endpoint())
        client = await bounded(endpoint.connect(Factory.forProtocol(make)), "connect")
        assert isinstance(client, LineClient)
        self.clients.append(client)
        return client

    async def connect_plain(self, protocol: Protocol) -> None:
        """Connect C{protocol} to the server over plain TCP (no TLS)."""
        connected = await bounded(
            self.tcp_endpoint().connect(Factory.forProtocol(lambda: protocol)),
            "connect",
        )
        self.assertIs(connected, protocol)

    async def tearDown(self) -> None:  # type: ignore[override]
        """
        Close every client (with a TLS close), wait until both ends of every
        connection have seen C{connectionLost}, then stop listening.
        """
        try:
            for client in self.clients:
                if not client.ended.fired:
                    assert client.transport is not None
                    client.transport.loseConnection()
            await gatherResults(
                [client.wait_closed() for client in self.clients]
                + [
                    bounded(server.ended.wait(), "the server's connectionLost")
                    for server in self.factory.connections
                ],
                consumeErrors=True,
            )
        finally:
            if self.listening is not None:
                await bounded(
                    maybeDeferred(self.listening.stopListening), "stopListening"
                )
