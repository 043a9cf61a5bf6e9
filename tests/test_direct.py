"""
Tests for L{securemsg.server.direct}: TLS records sent at once over real loopback
TCP, and everything else left to Twisted's transport.
"""

from __future__ import annotations

import socket
from typing import Any, cast

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols import tls as twisted_tls
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import directlyProvidedBy, directlyProvides, providedBy

from securemsg.protocol import wire
from securemsg.server import direct
from securemsg.server.direct import DirectTLSProtocol, can_send_now, send_now
from securemsg.server.factory import ChatServerFactory
from securemsg.tls import policy as tls

from ._certs import default_ca_and_server
from ._loopback import bounded, reactor


class Receiver(Protocol):
    """Keeps what it is sent; fires C{got} once it has C{expected} bytes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.expected = -1
        self.made: Deferred[None] = Deferred()
        self.got: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) == self.expected:
            self.got.callback(None)

    def connectionLost(self, reason: object = None) -> None:
        self.ended.callback(None)


class Recording(Protocol):
    """Keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)


class SendNowTests(TestCase):
    """
    L{send_now} over a real TCP connection on loopback.
    """

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        self.server: Deferred[Protocol] = Deferred()
        self.server_ended: Deferred[None] = Deferred()
        test = self

        class Server(Protocol):
            def connectionMade(self) -> None:
                test.server.callback(self)

            def connectionLost(self, reason: object = None) -> None:
                test.server_ended.callback(None)

        self.port = reactor.listenTCP(
            0, Factory.forProtocol(Server), interface="127.0.0.1"
        )
        # Also when setUp fails before tearDown would run.
        self.addCleanup(self.port.stopListening)
        self.client = Receiver()
        reactor.connectTCP(
            "127.0.0.1",
            self.port.getHost().port,
            ClientFactory.forProtocol(lambda: self.client),
        )
        made = bounded(self.client.made, "the client connection")
        server = made.addCallback(
            lambda _: bounded(self.server, "the server connection")
        )
        return server.addCallback(self._got)

    def _got(self, protocol: Protocol) -> None:
        self.transport: Any = protocol.transport
        self.assertTrue(can_send_now(self.transport))

    def tearDown(self) -> Deferred[Any]:  # type: ignore[override]
        self.transport.abortConnection()
        ended = bounded(self.server_ended, "the server side to close")
        ended.addCallback(lambda _: bounded(self.client.ended, "the client to close"))
        return ended

    def test_sent_without_waiting_a_turn(self) -> Deferred[None]:
        """
        With nothing queued, the bytes go to the socket at once: nothing is
        left in the transport's buffer and it does not wait to write.
        """
        data = b"x" * 1000
        self.client.expected = len(data)
        send_now(self.transport, data)
        self.assertEqual(self.transport.dataBuffer, b"")
        self.assertEqual(self.transport._tempDataBuffer, [])
        self.assertNotIn(self.transport, reactor.getWriters())
        return bounded(self.client.got, "the bytes").addCallback(
            lambda _: self.assertEqual(bytes(self.client.data), data)
        )

    def test_what_the_socket_refuses_waits_in_order(self) -> Deferred[None]:
        """
        What the socket does not take is buffered by the transport, and
        what is sent later waits behind it: the peer gets it all in order.
        """
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.client.transport.pauseProducing()  # type: ignore[union-attr]
        first = bytes(range(256)) * 16384  # 4 MiB, more than the socket holds
        send_now(self.transport, first)
        self.assertIn(self.transport, reactor.getWriters())
        send_now(self.transport, b"tail")
        self.client.expected = len(first) + 4
        self.client.transport.resumeProducing()  # type: ignore[union-attr]
        return bounded(self.client.got, "every byte").addCallback(
            lambda _: self.assertEqual(bytes(self.client.data), first + b"tail")
        )

    def test_closing_connection_left_to_the_transport(self) -> None:
        """
        Once the connection is closing, bytes go through the transport's
        write (which drops them once it is closed), never to the socket.
        """
        self.transport.loseConnection()
        writes: list[bytes] = []
        self.patch(self.transport, "write", writes.append)
        send_now(self.transport, b"late")
        self.assertEqual(writes, [b"late"])


class DirectTLSProtocolTests(SynchronousTestCase):
    """
    L{DirectTLSProtocol} on a transport that is not Twisted's TCP.
    """

    def handshake(
        self, wrapped: Factory | None = None
    ) -> tuple[DirectTLSProtocol, StringTransport, SSL.Connection]:
        """
        A L{DirectTLSProtocol} on a L{StringTransport}, its handshake done,
        wrapping a protocol of C{wrapped} (a L{Recording} if not given).
        """
        _, server = default_ca_and_server()
        context = tls.make_server_context(
            tls.ServerCredentials([server.certificate], server.key, "", "")
        )
        factory = TLSMemoryBIOFactory(
            tls.ServerTLS(context), False, wrapped or Factory.forProtocol(Recording)
        )
        factory.protocol = DirectTLSProtocol
        protocol = factory.buildProtocol(None)
        assert isinstance(protocol, DirectTLSProtocol)
        transport = StringTransport()
        protocol.makeConnection(transport)
        client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        client.set_connect_state()
        with self.assertRaises(SSL.WantReadError):
            client.do_handshake()
        protocol.dataReceived(client.bio_read(65536))
        client.bio_write(transport.value())
        transport.clear()
        client.do_handshake()
        protocol.dataReceived(client.bio_read(65536))
        client.bio_write(transport.value())  # The session tickets.
        transport.clear()
        return protocol, transport, client

    def test_one_record_written_directly(self) -> None:
        """
        A write that fits one TLS record (16 KiB) is made and read out of
        OpenSSL without pyOpenSSL's C{send} and C{bio_read} (nor Twisted's
        layers around them), and sent with one call; the client reads it,
        in order with a longer write, which takes the usual path.
        """
        protocol, _, client = self.handshake()
        sent: list[bytes] = []
        self.patch(direct, "send_now", lambda transport, data: sent.append(data))
        connection = protocol._tlsConnection
        send, bio_read = connection.send, connection.bio_read
        used: list[str] = []

        def sending(data: bytes) -> int:
            used.append("send")
            return send(data)

        def reading(size: int) -> bytes:
            used.append("bio_read")
            return bio_read(size)

        self.patch(connection, "send", sending)
        self.patch(connection, "bio_read", reading)
        protocol._send_now = True
        short, record, longer = b"hello\n", b"r" * 16384, b"l" * 20000
        protocol.write(short)
        protocol.write(record)
        self.assertEqual((len(sent), used), (2, []))
        protocol.write(longer)
        self.assertEqual(len(sent), 3)
        self.assertIn("send", used)
        for data in sent:
            client.bio_write(data)
        received = b""
        while len(received) < len(short + record + longer):
            received += client.recv(65536)
        self.assertEqual(received, short + record + longer)

    def test_records_of_one_read_in_one_batch(self) -> None:
        """
        The TLS records of one read (here three of a line each, as a client
        that writes line by line sends them) are given to the chat within
        one batch: each member of the room gets the three lines in one
        delivery, not one per record.
        """
        clock = MemoryReactorClock()
        chat = ChatServerFactory.standalone(clock, greeting="")
        member = chat.buildProtocol(None)
        member.makeConnection(StringTransport())
        _, _, client = self.handshake(chat)
        deliveries: list[tuple[wire.Event, ...]] = []
        self.patch(member, "deliver", lambda event: deliveries.append((event,)))
        self.patch(member, "deliver_all", deliveries.append)
        for line in (b"one\n", b"two\n", b"three\n"):
            client.send(line)
        records = client.bio_read(65536)
        protocol = chat.open_connections - {member}
        self.assertEqual(len(protocol), 1)
        protocol.pop().transport.dataReceived(records)
        self.assertEqual(
            [
                [cast(wire.Message, event).text for event in delivery]
                for delivery in deliveries
            ],
            [["one", "two", "three"]],
        )

    def connected(self, protocol_class: type[TLSMemoryBIOProtocol]) -> Any:
        """A C{protocol_class} TLS protocol made and connected to a transport."""
        _, server = default_ca_and_server()
        context = tls.make_server_context(
            tls.ServerCredentials([server.certificate], server.key, "", "")
        )
        factory = TLSMemoryBIOFactory(
            tls.ServerTLS(context), False, Factory.forProtocol(Protocol)
        )
        factory.protocol = protocol_class
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        return protocol

    def test_interfaces_declared_once(self) -> None:
        """
        The protocol ends up providing what Twisted's own does on the same
        transport, with one C{directlyProvides} instead of one per
        interface of the transport (each replaces the one before, and costs
        a few microseconds of every connection).
        """
        twisted_own = self.connected(TLSMemoryBIOProtocol)
        calls: list[object] = []

        def counting(ob: object, *interfaces: Any) -> None:
            calls.append(interfaces)
            directlyProvides(ob, *interfaces)

        self.patch(direct, "directlyProvides", counting)
        self.patch(twisted_tls, "directlyProvides", counting)
        ours = self.connected(DirectTLSProtocol)
        self.assertEqual(len(calls), 1)
        self.assertEqual(list(providedBy(ours)), list(providedBy(twisted_own)))
        self.assertEqual(
            list(directlyProvidedBy(ours)), list(directlyProvidedBy(twisted_own))
        )
        self.assertIs(ours.getHandle(), ours._tlsConnection)
        self.assertEqual(ours._appSendBuffer, [])
        self.assertIn(ours, ours.factory.protocols)

    def test_memory_bios_renewed_after_handshake(self) -> None:
        """
        Once the handshake is done, the connection's memory BIOs (grown to
        the handshake's size) are replaced by new ones, and TLS goes on
        through the new ones both ways.
        """
        handshake_bios: list[tuple[object, object]] = []
        renew = direct.renew_bios

        def renewing(connection: SSL.Connection) -> bool:
            handshake_bios.append((connection._into_ssl, connection._from_ssl))
            return renew(connection)

        self.patch(direct, "renew_bios", renewing)
        protocol, transport, client = self.handshake()
        self.assertEqual(len(handshake_bios), 1)
        connection = protocol._tlsConnection
        self.assertTrue(protocol._bios_renewed)
        self.assertNotEqual(
            (connection._into_ssl, connection._from_ssl), handshake_bios[0]
        )
        client.send(b"hello server\n")
        protocol.dataReceived(client.bio_read(65536))
        wrapped = protocol.wrappedProtocol
        assert isinstance(wrapped, Recording)
        self.assertEqual(wrapped.received, [b"hello server\n"])
        protocol.write(b"hello client")
        client.bio_write(transport.value())
        self.assertEqual(client.recv(100), b"hello client")
        # Once is enough.
        self.assertEqual(len(handshake_bios), 1)

    def test_memory_bios_kept_while_bytes_wait(self) -> None:
        """
        BIOs with bytes in them are not replaced (the bytes would be lost).
        """
        protocol, _, client = self.handshake()
        connection = protocol._tlsConnection
        client.send(b"unread")
        connection.bio_write(client.bio_read(65536))
        before = (connection._into_ssl, connection._from_ssl)
        self.assertFalse(direct.renew_bios(connection))
        self.assertEqual((connection._into_ssl, connection._from_ssl), before)
        self.assertEqual(connection.recv(100), b"unread")

    def test_other_transports_written_as_usual(self) -> None:
        """
        On any other transport (here a L{StringTransport}) TLS output goes
        through the transport's write, as in Twisted's protocol.
        """
        self.assertFalse(can_send_now(StringTransport()))
        protocol, transport, client = self.handshake()
        self.assertIsNotNone(client.get_peer_certificate())
        protocol.write(b"hello")
        client.bio_write(transport.value())
        self.assertEqual(client.recv(100), b"hello")

    def test_records_of_one_write_sent_together(self) -> None:
        """
        A write longer than one TLS record (16 KiB) is sent with one call,
        records in order; each record is read out of OpenSSL as soon as it
        is made, so OpenSSL never buffers more than one.
        """
        protocol, _, client = self.handshake()
        sent: list[bytes] = []
        self.patch(direct, "send_now", lambda transport, data: sent.append(data))
        read: list[int] = []
        bio_read = protocol._tlsConnection.bio_read

        def reading(size: int) -> bytes:
            data = bio_read(size)
            read.append(len(data))
            return data

        self.patch(protocol._tlsConnection, "bio_read", reading)
        protocol._send_now = True
        data = bytes(range(256)) * 160  # 40 KiB: three records
        protocol.write(data)
        self.assertEqual(len(sent), 1)
        self.assertEqual(len(read), 3)
        self.assertLess(max(read), 17 * 1024)
        client.bio_write(sent[0])
        received = b""
        while len(received) < len(data):
            received += client.recv(65536)
        self.assertEqual(received, data)
