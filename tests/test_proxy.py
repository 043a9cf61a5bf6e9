"""
The PROXY protocol (L{securemsg.server.proxy}): the header's parsing, its layer
over a fake transport, and the server behind it over real TLS on loopback,
where the client's real address (from a v1 or v2 header sent before the
TLS ClientHello) is the one the limit per address, bans and logs see; and,
if C{haproxy} is installed, the real haproxy in front.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTCP,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from securemsg.core.limits import Limits
from securemsg.core.records import BanRecord
from securemsg.server.endpoint import tls_server_endpoint
from securemsg.server.guard import GuardedTLSFactory
from securemsg.server.proxy import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeaderError,
    ProxyHeaderFactory,
    parse_header,
)
from securemsg.tap import Options, make_service
from securemsg.tls import policy as tls

from . import _certs
from ._haproxy import HAPROXY, NO_HAPROXY, start_haproxy
from ._logs import log_lines
from ._loopback import (
    TIMEOUT,
    LineClient,
    LoopbackServerTestCase,
    bounded,
    port_of,
    reactor,
    tls_transport,
)
from ._tls import server_context


def v1_header(source: str, port: int = 40000, destination: str = "") -> bytes:
    """A PROXY v1 header for a client at C{source}:C{port}."""
    kind = "TCP6" if ":" in source else "TCP4"
    destination = destination or ("::1" if ":" in source else "127.0.0.1")
    return f"PROXY {kind} {source} {destination} {port} 50000\r\n".encode("ascii")


def v2_header(
    source: str, port: int = 40000, destination: str = "", command: int = 1
) -> bytes:
    """A PROXY v2 header (C{command} 1: PROXY, 0: LOCAL) for C{source}:C{port}."""
    address = ipaddress.ip_address(source)
    other = ipaddress.ip_address(
        destination or ("::1" if address.version == 6 else "127.0.0.1")
    )
    family = 0x21 if address.version == 6 else 0x11
    body = address.packed + other.packed + struct.pack("!HH", port, 50000)
    return (
        V2_SIGNATURE
        + bytes([0x20 | command, family])
        + struct.pack("!H", len(body))
        + body
    )


class ParseTests(SynchronousTestCase):
    """L{parse_header} reads v1 and v2 headers and refuses anything else."""

    def test_v1(self) -> None:
        """A v1 header gives the client's address; what follows is kept."""
        parsed = parse_header(v1_header("192.0.2.7") + b"\x16\x03\x01")
        assert parsed is not None
        info, rest = parsed
        self.assertEqual(info.source, IPv4Address("TCP", "192.0.2.7", 40000))
        self.assertEqual(info.destination, IPv4Address("TCP", "127.0.0.1", 50000))
        self.assertEqual(rest, b"\x16\x03\x01")

    def test_v2_ipv6(self) -> None:
        """A v2 header for an IPv6 client."""
        parsed = parse_header(v2_header("2001:db8::5", 4242) + b"more")
        assert parsed is not None
        info, rest = parsed
        self.assertEqual(info.source, IPv6Address("TCP", "2001:db8:0:0:0:0:0:5", 4242))
        self.assertEqual(rest, b"more")

    def test_v2_local(self) -> None:
        """A v2 LOCAL header (a balancer's health check) names no client."""
        parsed = parse_header(v2_header("192.0.2.7", command=0))
        assert parsed is not None
        self.assertIsNone(parsed[0].source)

    def test_partial(self) -> None:
        """Each prefix of a header is not yet a header, nor an error."""
        for header in (v1_header("192.0.2.7"), v2_header("192.0.2.7")):
            for end in range(1, len(header)):
                self.assertIsNone(parse_header(header[:end]), header[:end])

    def test_missing(self) -> None:
        """A TLS ClientHello (or anything else) where the header should be."""
        for data in (b"\x16\x03\x01\x02\x00", b"GET / HTTP/1.0\r\n", b"PROXX"):
            error = self.assertRaises(ProxyHeaderError, parse_header, data)
            self.assertIn("missing", str(error))

    def test_malformed(self) -> None:
        """Headers that cannot be read, or name no IP address, are refused."""
        for data in (
            b"PROXY TCP4 192.0.2.7\r\n",
            b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 one 2\r\n",
            b"PROXY SCTP 192.0.2.7 127.0.0.1 1 2\r\n",
            v2_header("192.0.2.7")[:12] + b"\x31\x11\x00\x0c" + bytes(12),
            v2_header("192.0.2.7")[:14] + b"\x00\x04" + bytes(4),
        ):
            error = self.assertRaises(ProxyHeaderError, parse_header, data)
            self.assertIn("malformed", str(error))

    def test_oversized(self) -> None:
        """A v1 line past 107 bytes, or a v2 header past the limit."""
        error = self.assertRaises(
            ProxyHeaderError, parse_header, b"PROXY TCP4 " + b"1" * V1_MAX_LENGTH
        )
        self.assertIn("oversized", str(error))
        error = self.assertRaises(
            ProxyHeaderError,
            parse_header,
            v2_header("192.0.2.7")[:14] + struct.pack("!H", 60000),
        )
        self.assertIn("oversized", str(error))


class Inner(Protocol):
    """The protocol behind the PROXY layer: records what reaches it."""

    def __init__(self) -> None:
        self.received = b""
        self.peer: object = None
        self.lost = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.peer = self.transport.getPeer()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost = True


class FakeGuard(WrappingFactory):
    """
    What the PROXY layer needs of the guard: a total limit, the protocols
    it holds, refusals; it refuses any address in C{refuse_hosts}.
    """

    def __init__(self, max_connections: int = 10) -> None:
        super().__init__(Factory.forProtocol(Inner))
        self.limits = Limits(max_connections=max_connections)
        self.addresses: list[object] = []
        self.refused: Counter[str] = Counter()
        self.refuse_hosts: set[str] = set()

    def buildProtocol(self, addr: Any) -> Any:
        self.addresses.append(addr)
        if addr.host in self.refuse_hosts:
            return None
        inner = Inner()
        self.protocols[inner] = 1
        return inner

    def refuse(self, host: str, limit: str, reason: str) -> None:
        self.refused[reason] += 1


class LayerTests(SynchronousTestCase):
    """L{ProxyHeaderFactory} over a fake transport, with a fake clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.guard = FakeGuard(max_connections=2)
        self.factory = ProxyHeaderFactory(self.guard, self.clock, timeout=10.0)
        self.logged = log_lines(self, "securemsg.server.proxy.ProxyHeaderProtocol")

    def connect(self) -> tuple[Any, StringTransport]:
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "10.1.1.1", 5555))
        assert protocol is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.1.1.1", 5555))
        protocol.makeConnection(transport)
        return protocol, transport

    def test_header_in_pieces(self) -> None:
        """
        A header that comes a byte at a time is read whole; the wrapped
        factory is asked for a protocol under the client's address, which
        its protocol sees as the peer, and gets what followed.
        """
        protocol, transport = self.connect()
        for byte in v1_header("192.0.2.7"):
            protocol.dataReceived(bytes([byte]))
        protocol.dataReceived(b"hello")
        self.assertEqual(self.guard.addresses, [IPv4Address("TCP", "192.0.2.7", 40000)])
        inner = protocol.wrappedProtocol
        self.assertEqual(inner.peer, IPv4Address("TCP", "192.0.2.7", 40000))
        self.assertEqual(inner.received, b"hello")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.logged, [])
        self.assertEqual(protocol.logPrefix(), "FakeGuard (PROXY)")

    def test_local_header_is_the_balancer(self) -> None:
        """A LOCAL header (a health check) leaves the balancer's address."""
        protocol, _ = self.connect()
        protocol.dataReceived(v2_header("192.0.2.7", command=0))
        self.assertEqual(self.guard.addresses, [IPv4Address("TCP", "10.1.1.1", 5555)])

    def test_bad_headers_closed_with_one_line(self) -> None:
        """
        A missing, malformed or oversized header closes the connection, with
        one log line naming the balancer's side and the problem, and counts
        as a refusal.
        """
        for data, problem in (
            (b"\x16\x03\x01\x00\x10", "missing"),
            (b"PROXY TCP4 nowhere 127.0.0.1 1 2\r\n", "malformed"),
            (b"PROXY " + b"x" * 200, "oversized"),
        ):
            self.logged.clear()
            protocol, transport = self.connect()
            protocol.dataReceived(data)
            self.assertTrue(transport.disconnecting, data)
            protocol.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(len(self.logged), 1, self.logged)
            self.assertIn(f"10.1.1.1:5555: PROXY header {problem}", self.logged[0])
        self.assertEqual(self.guard.addresses, [])
        self.assertEqual(self.guard.refused, {"proxy_header": 3})

    def test_header_timeout(self) -> None:
        """No header within the timeout: closed, with one line."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"PROXY TCP4 ")
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.logged), 1)
        self.assertIn("missing (none within 10 s)", self.logged[0])

    def test_silent_close_is_not_logged(self) -> None:
        """A connection that closes without a byte (a TCP check) logs nothing."""
        protocol, _ = self.connect()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.logged, [])
        self.assertEqual(self.factory.pending, 0)

    def test_total_limit_before_the_header(self) -> None:
        """
        Connections waiting for their header count towards the total limit,
        which refuses more before they send anything.
        """
        self.connect()
        self.connect()
        self.assertIsNone(
            self.factory.buildProtocol(IPv4Address("TCP", "10.1.1.1", 5556))
        )
        self.assertEqual(self.guard.refused, {"max_connections": 1})

    def test_total_limit_of_the_real_guard(self) -> None:
        """
        In front of the real guard, the PROXY layer finds its total limit
        and refuses over it before any header, counted as the guard counts.
        """
        guard = GuardedTLSFactory(
            tls.ServerTLS(server_context()),
            Factory.forProtocol(Inner),
            self.clock,
            Limits(max_connections=1),
        )
        factory = ProxyHeaderFactory(guard, self.clock, timeout=10.0)
        self.assertIsNotNone(
            factory.buildProtocol(IPv4Address("TCP", "10.1.1.1", 5555))
        )
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "10.1.1.1", 5556)))
        self.assertEqual(guard.refused, {"max_connections": 1})

    def test_refused_by_the_guard(self) -> None:
        """A client the guard refuses (over its limit) is cut off at once."""
        self.guard.refuse_hosts.add("192.0.2.7")
        protocol, transport = self.connect()
        protocol.dataReceived(v1_header("192.0.2.7"))
        self.assertTrue(transport.disconnected)
        self.assertIsNone(protocol.wrappedProtocol)


class _HeaderFirst(ProtocolWrapper):
    """Sends the factory's PROXY header, then lets TLS start."""

    def makeConnection(self, transport: Any) -> None:
        transport.write(self.factory.header)
        super().makeConnection(transport)


class _HeaderFirstFactory(WrappingFactory):
    protocol = _HeaderFirst

    def __init__(self, wrapped: Any, header: bytes) -> None:
        super().__init__(wrapped)
        self.header = header


@implementer(IStreamClientEndpoint)
class HeaderFirstEndpoint:
    """A TCP client endpoint that starts each connection with C{header}."""

    def __init__(self, port: int, header: bytes) -> None:
        tcp: IReactorTCP = reactor
        self.tcp = TCP4ClientEndpoint(tcp, "127.0.0.1", port, timeout=TIMEOUT)
        self.header = header

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        def unwrapped(wrapper: IProtocol) -> IProtocol:
            assert isinstance(wrapper, _HeaderFirst), wrapper
            wrapped: IProtocol = wrapper.wrappedProtocol
            return wrapped

        connecting = self.tcp.connect(_HeaderFirstFactory(factory, self.header))
        return connecting.addCallback(unwrapped)


class ProxiedServerCase(LoopbackServerTestCase):
    """The server on C{haproxy:tcp:0}, over real TLS."""

    async def setUp(self) -> None:  # type: ignore[override]
        super().setUp()
        _, server = _certs.default_ca_and_server()
        self.ca_pem = _certs.default_ca_and_server()[0].cert_pem()
        self.cert_path, self.key_path = server.write(self.directory)
        self.logged = log_lines(self)

    async def serve_proxied(self, limits: Limits | None = None) -> None:
        credentials = tls.load_credentials(self.cert_path, self.key_path)
        endpoint = tls_server_endpoint(
            reactor,
            "haproxy:tcp:0:interface=127.0.0.1",
            tls.ServerTLS(tls.make_server_context(credentials)),
            limits,
        )
        self.listening = await bounded(endpoint.listen(self.factory), "listening")
        self.port = port_of(self.listening.getHost())

    async def connect_as(self, header: bytes) -> LineClient:
        options = optionsForClientTLS(
            "localhost", trustRoot=Certificate.loadPEM(self.ca_pem)
        )
        endpoint = wrapClientTLS(options, HeaderFirstEndpoint(self.port, header))
        client = await bounded(
            endpoint.connect(Factory.forProtocol(LineClient)), "connect"
        )
        assert isinstance(client, LineClient)
        self.clients.append(client)
        return client


class ProxiedServerTests(ProxiedServerCase):
    """
    Clients that send a PROXY header (as a load balancer would for them)
    before their ClientHello.
    """

    async def test_real_address_v1_and_v2(self) -> None:
        """
        The server sees the address of each header, v1 and v2, IPv4 and
        IPv6: as the peer of the connection, in its log lines, and for
        /whois-style identity (the client key it joined with).
        """
        await self.serve_proxied()
        first = await self.connect_as(v1_header("192.0.2.7", 40001))
        await first.next_lines(1)
        second = await self.connect_as(v2_header("2001:db8::5", 40002))
        await second.next_lines(1)
        one, two = self.factory.connections
        self.assertEqual(one.peer, "192.0.2.7:40001")
        self.assertEqual(two.peer, "[2001:db8:0:0:0:0:0:5]:40002")
        membership = self.factory.chat._members
        self.assertEqual(
            sorted(m.address for m in membership.values()),
            ["192.0.2.7", "2001:db8::/64"],
        )
        # Each connection's one log line (when it ends) names the address.
        await bounded(self.factory.shut_down(), "shut down")
        for peer, name in [
            ("192.0.2.7:40001", "guest-1"),
            ("[2001:db8:0:0:0:0:0:5]:40002", "guest-2"),
        ]:
            line = f"{peer} ({name}) disconnected"
            self.assertTrue(
                any(logged.startswith(line) for logged in self.logged), self.logged
            )

    async def test_per_address_limit(self) -> None:
        """
        --max-per-ip counts each client's real address: a second connection
        from one address is refused before TLS, one from another is not.
        """
        await self.serve_proxied(Limits(max_per_address=1))
        first = await self.connect_as(v1_header("192.0.2.7", 1))
        await first.next_lines(1)
        refused = await self.connect_as(v2_header("192.0.2.7", 2))
        await refused.wait_closed()
        self.assertFalse(refused.handshake.fired)
        other = await self.connect_as(v2_header("192.0.2.8", 3))
        await other.next_lines(1)
        self.assertTrue(
            any(
                line.startswith("refusing connections from 192.0.2.7")
                for line in self.logged
            ),
            self.logged,
        )

    async def test_ban(self) -> None:
        """A guest banned by address is refused under its real address only."""
        await self.serve_proxied()
        self.factory.chat.state.addresses["192.0.2.66"] = BanRecord(
            "mallory", "op", 0.0
        )
        banned = await self.connect_as(v1_header("192.0.2.66"))
        self.assertEqual(
            await banned.next_lines(1), ["!!! you are banned from this server"]
        )
        await banned.wait_closed()
        self.assertIn(
            "192.0.2.66:40000 refused: banned by op (as mallory)", self.logged
        )
        allowed = await self.connect_as(v1_header("192.0.2.67"))
        await allowed.next_lines(1)

    async def test_no_header_closed_with_a_log_line(self) -> None:
        """
        A TLS client that sends no PROXY header is closed before any TLS
        work, with one log line.
        """
        await self.serve_proxied()
        options = optionsForClientTLS(
            "localhost", trustRoot=Certificate.loadPEM(self.ca_pem)
        )
        endpoint = wrapClientTLS(options, self.tcp_endpoint())
        client = await bounded(
            endpoint.connect(Factory.forProtocol(LineClient)), "connect"
        )
        assert isinstance(client, LineClient)
        self.clients.append(client)
        await client.wait_closed()
        self.assertFalse(client.handshake.fired)
        lines = [line for line in self.logged if "PROXY header" in line]
        self.assertEqual(len(lines), 1, self.logged)
        self.assertRegex(
            lines[0],
            r"127\.0\.0\.1:\d+: PROXY header missing \(the first bytes are not a"
            r" PROXY header\); closing",
        )
        self.assertEqual(self.factory.connections, [])


class RealHaproxyTests(ProxiedServerCase):
    """The real haproxy in front, sending PROXY v2 headers."""

    if HAPROXY is None:
        skip = NO_HAPROXY

    async def test_real_address_through_haproxy(self) -> None:
        """
        Through haproxy (send-proxy-v2), the server sees the client's own
        port, not haproxy's, and chat works over TLS end to end.
        """
        await self.serve_proxied()
        self.port = await start_haproxy(
            self, Path(self.directory), self.port, server="send-proxy-v2"
        )
        alice = await self.connect(self.ca_pem)
        await alice.next_lines(1)
        bob = await self.connect(self.ca_pem)
        await bob.next_lines(1)
        await alice.next_lines(1)  # bob's arrival
        bob.send(b"hello through haproxy")
        self.assertEqual(await alice.next_lines(1), ["[guest-2] hello through haproxy"])
        ports = [port_of(tls_transport(client).getHost()) for client in (alice, bob)]
        # The server also saw the probe that found haproxy up, and haproxy
        # may open that one's backend connection after alice's: compare as
        # sets.  Without the header, the peers would be haproxy's own ports.
        peers = {server.peer for server in self.factory.connections}
        self.assertLessEqual(
            {f"127.0.0.1:{port}" for port in ports}, peers, self.logged
        )


class ServiceTests(SynchronousTestCase):
    """C{twistd securemsg --listen haproxy:...} builds the layers in order."""

    def test_layers(self) -> None:
        """
        TCP, then the PROXY header (with the handshake timeout), then the
        guard and TLS, then the chat; a plain listener reads no header.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        _, server = _certs.default_ca_and_server()
        cert_path, key_path = server.write(directory)
        options = Options()
        options.parseOptions(
            [
                "--cert", cert_path,
                "--key", key_path,
                "--history-db", ":memory:",
                "--handshake-timeout", "3",
                "--listen", "haproxy:tcp:1234",
                "--listen", "tcp:1235",
            ]
        )  # fmt: skip
        memory = MemoryReactorClock()
        top = make_service(memory, options)
        top.privilegedStartService()
        self.addCleanup(top.stopService)
        [(_, proxied, _, _), (_, plain, _, _)] = memory.tcpServers
        assert isinstance(proxied, ProxyHeaderFactory), proxied
        self.assertEqual(proxied.timeout, 3)
        assert isinstance(proxied.wrappedFactory, GuardedTLSFactory), proxied
        assert isinstance(plain, GuardedTLSFactory), plain
        self.assertIs(proxied.wrappedFactory.wrappedFactory, plain.wrappedFactory)
