"""
Tests for L{securemsg.server.tlsserver}: the server's TLS layer, driven in
memory against a pyOpenSSL client (the integration tests run it over real
sockets, through twistd, haproxy and browsers).
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

from OpenSSL import SSL
from OpenSSL._util import lib as openssl
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IHandshakeListener,
    INegotiated,
    IPushProducer,
    ISSLTransport,
    ISystemHandle,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvidedBy, implementer

from securemsg.protocol import wire
from securemsg.server import tlsserver
from securemsg.server.factory import ChatServerFactory
from securemsg.server.tlsserver import TLSServerProtocol, held_bytes
from securemsg.tls import policy as tls

from ._tls import server_context


@implementer(IHandshakeListener)
class Recording(Protocol):
    """Keeps what happens to it, and writes what it is told to."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.handshakes = 0
        self.lost: list[Failure] = []
        self.write_on_handshake = b""

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def handshakeCompleted(self) -> None:
        self.handshakes += 1
        if self.write_on_handshake:
            self.transport.write(self.write_on_handshake)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.append(reason)


@implementer(IPushProducer)
class Producer:
    """A push producer that does nothing."""

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def connected(
    wrapped: Factory | None = None,
) -> tuple[TLSServerProtocol, StringTransport, SSL.Connection]:
    """
    A L{TLSServerProtocol} (made by Twisted's TLS factory, as the guard
    does) on a L{StringTransport}, wrapping a protocol of C{wrapped} (a
    L{Recording} if not given), and a client that has not begun.
    """
    factory = TLSMemoryBIOFactory(
        tls.ServerTLS(server_context()),
        False,
        wrapped or Factory.forProtocol(Recording),
    )
    factory.protocol = TLSServerProtocol  # type: ignore[assignment]
    protocol = factory.buildProtocol(None)
    assert isinstance(protocol, TLSServerProtocol)
    transport = StringTransport()
    protocol.makeConnection(transport)
    client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    client.set_connect_state()
    return protocol, transport, client


def to_client(transport: StringTransport, client: SSL.Connection) -> None:
    """Give C{client} what the server has sent so far, and empty C{transport}."""
    client.bio_write(transport.value())
    transport.clear()


def finish_handshake(
    protocol: TLSServerProtocol, transport: StringTransport, client: SSL.Connection
) -> None:
    """Run the handshake between C{client} and C{protocol}."""
    with contextlib.suppress(SSL.WantReadError):
        client.do_handshake()
    protocol.dataReceived(client.bio_read(65536))
    to_client(transport, client)
    client.do_handshake()
    protocol.dataReceived(client.bio_read(65536))
    to_client(transport, client)  # The session tickets.


def handshaken(
    wrapped: Factory | None = None,
) -> tuple[TLSServerProtocol, StringTransport, SSL.Connection]:
    """L{connected}, its handshake done."""
    protocol, transport, client = connected(wrapped)
    finish_handshake(protocol, transport, client)
    return protocol, transport, client


def recording(protocol: TLSServerProtocol) -> Recording:
    wrapped = protocol.wrappedProtocol
    assert isinstance(wrapped, Recording)
    return wrapped


def read_all(client: SSL.Connection, data: bytes, size: int) -> bytes:
    """Give C{client} C{data} and read C{size} bytes of plain text."""
    client.bio_write(data)
    received = b""
    while len(received) < size:
        received += client.recv(65536)
    return received


class HandshakeTests(SynchronousTestCase):
    """
    The handshake: the wrapped protocol is told, writes wait for it, and a
    failed one ends the connection with OpenSSL's error.
    """

    def test_handshake_listener_told(self) -> None:
        """
        A wrapped L{IHandshakeListener} hears of the handshake once, when it
        is done, and can write from there.
        """
        protocol, transport, client = connected()
        wrapped = recording(protocol)
        wrapped.write_on_handshake = b"welcome"
        with self.assertRaises(SSL.WantReadError):
            client.do_handshake()
        protocol.dataReceived(client.bio_read(65536))
        self.assertEqual(wrapped.handshakes, 0)
        to_client(transport, client)
        client.do_handshake()
        protocol.dataReceived(client.bio_read(65536))
        self.assertEqual(wrapped.handshakes, 1)
        self.assertEqual(read_all(client, transport.value(), 7), b"welcome")

    def test_writes_before_the_handshake_wait(self) -> None:
        """
        What the wrapped protocol writes before the handshake is done is
        sent after it, before what it writes when told of the handshake.
        """
        protocol, transport, client = connected()
        wrapped = recording(protocol)
        wrapped.write_on_handshake = b"second"
        protocol.write(b"first ")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(held_bytes(protocol), 6)
        finish_handshake(protocol, transport, client)
        # finish_handshake gave the client the records already.
        self.assertEqual(client.recv(100) + client.recv(100), b"first second")
        self.assertEqual(held_bytes(protocol), 0)

    def test_failed_handshake(self) -> None:
        """
        A client whose handshake fails (here: no protocol version in common)
        is sent OpenSSL's alert, the transport is closed, and the wrapped
        protocol's connectionLost gets the L{SSL.Error}.
        """
        protocol, transport, _ = connected()
        old = SSL.Context(SSL.TLS_METHOD)
        old.set_max_proto_version(SSL.TLS1_1_VERSION)
        client = SSL.Connection(old, None)
        client.set_connect_state()
        with self.assertRaises(SSL.Error):
            client.do_handshake()
        protocol.dataReceived(client.bio_read(65536))
        self.assertTrue(transport.disconnecting)
        # An alert record (content type 21).
        self.assertEqual(transport.value()[:1], b"\x15")
        wrapped = recording(protocol)
        protocol.connectionLost(Failure(ConnectionDone()))
        [reason] = wrapped.lost
        self.assertTrue(reason.check(SSL.Error))
        self.assertEqual(wrapped.handshakes, 0)
        # Nothing left on OpenSSL's error queue for a later call to find.
        self.assertEqual(openssl.ERR_peek_error(), 0)

    def test_lose_connection_during_handshake_aborts(self) -> None:
        """
        Before the handshake is done, OpenSSL cannot send close_notify:
        C{loseConnection} aborts (as Twisted's layer does).
        """
        protocol, transport, client = connected()
        client_hello = b""
        try:
            client.do_handshake()
        except SSL.WantReadError:
            client_hello = client.bio_read(65536)
        protocol.dataReceived(client_hello)
        transport.clear()
        protocol.loseConnection()
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")


class ReceivingTests(SynchronousTestCase):
    """Records in, plain text out to the wrapped protocol."""

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
        _, _, client = handshaken(chat)
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

    def test_memory_bios_renewed_after_handshake(self) -> None:
        """
        Once the handshake is done, the connection's memory BIOs (grown to
        the handshake's size) are replaced by new ones, and TLS goes on
        through the new ones both ways.
        """
        handshake_bios: list[tuple[object, object]] = []
        renew = tlsserver.renew_bios

        def renewing(connection: SSL.Connection) -> bool:
            handshake_bios.append((connection._into_ssl, connection._from_ssl))
            return renew(connection)

        self.patch(tlsserver, "renew_bios", renewing)
        protocol, transport, client = handshaken()
        self.assertEqual(len(handshake_bios), 1)
        connection = protocol.getHandle()
        assert connection is not None
        self.assertTrue(protocol._bios_renewed)
        self.assertNotEqual(
            (connection._into_ssl, connection._from_ssl), handshake_bios[0]
        )
        client.send(b"hello server\n")
        protocol.dataReceived(client.bio_read(65536))
        self.assertEqual(recording(protocol).received, [b"hello server\n"])
        protocol.write(b"hello client")
        to_client(transport, client)
        self.assertEqual(client.recv(100), b"hello client")
        # Once is enough.
        self.assertEqual(len(handshake_bios), 1)

    def test_memory_bios_kept_while_bytes_wait(self) -> None:
        """
        BIOs with bytes in them are not replaced (the bytes would be lost).
        """
        protocol, _, client = handshaken()
        connection = protocol.getHandle()
        assert connection is not None
        client.send(b"unread")
        connection.bio_write(client.bio_read(65536))
        before = (connection._into_ssl, connection._from_ssl)
        self.assertFalse(tlsserver.renew_bios(connection))
        self.assertEqual((connection._into_ssl, connection._from_ssl), before)
        self.assertEqual(connection.recv(100), b"unread")

    def test_bad_record_ends_the_connection(self) -> None:
        """
        A record that does not decrypt ends the connection with OpenSSL's
        error (and its alert); nothing of it reaches the wrapped protocol.
        """
        protocol, transport, client = handshaken()
        client.send(b"hello\n")
        record = bytearray(client.bio_read(65536))
        record[-1] ^= 1
        protocol.dataReceived(bytes(record))
        self.assertTrue(transport.disconnecting)
        # The alert (TLS 1.3 encrypts it).
        self.assertTrue(transport.value())
        wrapped = recording(protocol)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(wrapped.received, [])
        [reason] = wrapped.lost
        self.assertTrue(reason.check(SSL.Error))
        self.assertEqual(openssl.ERR_peek_error(), 0)

    def test_bytes_openssl_cannot_take_end_the_connection(self) -> None:
        """
        If OpenSSL cannot take what was read (it is out of memory), the
        connection ends: the stream lost bytes.
        """
        protocol, transport, client = handshaken()

        def failing(bio: object, data: bytes, size: int) -> int:
            openssl.ERR_put_error(32, 0, 65, b"", 0)  # As OpenSSL would.
            return -1

        self.patch(tlsserver, "_bio_write", failing)
        client.send(b"lost\n")
        protocol.dataReceived(client.bio_read(65536))
        self.assertTrue(transport.disconnecting)
        wrapped = recording(protocol)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(wrapped.received, [])
        [reason] = wrapped.lost
        self.assertTrue(reason.check(MemoryError))
        self.assertEqual(openssl.ERR_peek_error(), 0)


class Failing(Recording):
    """Raises on each line it is given, as a protocol with a bug would."""

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        raise RuntimeError("a bug")


class FailingProtocolTests(SynchronousTestCase):
    """
    A wrapped protocol that raises: Twisted logs it and ends the connection;
    the wrapped protocol still gets its end, and the factory its
    unregister (the guard counts connections per address with it).
    """

    def test_rest_of_the_read_not_given(self) -> None:
        """
        The records that followed the one the protocol raised on are not
        given to it again when the connection ends.
        """
        protocol, _, client = handshaken(Factory.forProtocol(Failing))
        client.send(b"one\n")
        client.send(b"two\n")
        with self.assertRaises(RuntimeError):
            protocol.dataReceived(client.bio_read(65536))
        factory = protocol.factory
        wrapped = recording(protocol)
        protocol.connectionLost(Failure(RuntimeError("a bug")))
        self.assertEqual(wrapped.received, [b"one\n"])
        self.assertEqual(len(wrapped.lost), 1)
        self.assertEqual(factory.protocols, {})

    def test_raise_at_the_end(self) -> None:
        """
        If the protocol raises on what OpenSSL still held when the TCP
        connection ended, it still gets its connectionLost, once, and the
        factory its unregister; the error goes on to Twisted, which logs it.
        """
        protocol, _, client = handshaken(Factory.forProtocol(Failing))
        client.send(b"last\n")
        records = client.bio_read(65536)
        # Bytes OpenSSL holds but has not handed out (as after a read cut
        # short), then the end of the TCP connection.
        handle = protocol.getHandle()
        assert handle is not None
        handle.bio_write(records)
        factory = protocol.factory
        wrapped = recording(protocol)
        with self.assertRaises(RuntimeError):
            protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(wrapped.received, [b"last\n"])
        self.assertEqual(len(wrapped.lost), 1)
        self.assertEqual(factory.protocols, {})


class ClosingTests(SynchronousTestCase):
    """close_notify both ways, aborts, and a TCP end without close_notify."""

    def test_client_close_notify_answered(self) -> None:
        """
        The client's close_notify is answered with the server's, handed to
        the transport (which sends it with the end of the connection, not
        at once), the transport is closed, and the wrapped protocol gets the
        transport's reason (a clean close).
        """
        protocol, transport, client = handshaken()
        sent_at_once: list[bytes] = []
        self.patch(tlsserver, "send_now", lambda t, data: sent_at_once.append(data))
        protocol._direct = protocol.transport
        # Sent; the server's answer is not yet received.
        self.assertFalse(client.shutdown())
        protocol.dataReceived(client.bio_read(65536))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(sent_at_once, [])
        to_client(transport, client)
        with self.assertRaises(SSL.ZeroReturnError):
            client.recv(100)
        wrapped = recording(protocol)
        protocol.connectionLost(Failure(ConnectionDone()))
        [reason] = wrapped.lost
        self.assertTrue(reason.check(ConnectionDone))
        self.assertIsNone(protocol.getHandle())

    def test_lose_connection_sends_close_notify(self) -> None:
        """
        C{loseConnection} after the handshake sends close_notify and closes
        the transport once the client answers.
        """
        protocol, transport, client = handshaken()
        protocol.write(b"last words")
        protocol.loseConnection()
        protocol.write(b"dropped: written after loseConnection")
        self.assertFalse(transport.disconnecting)
        to_client(transport, client)
        self.assertEqual(client.recv(100), b"last words")
        with self.assertRaises(SSL.ZeroReturnError):
            client.recv(100)
        client.shutdown()
        protocol.dataReceived(client.bio_read(65536))
        self.assertTrue(transport.disconnecting)

    def test_close_notify_waits_for_the_producer(self) -> None:
        """
        With a producer registered, close_notify is sent only once it is
        unregistered (it may still write until then).
        """
        protocol, transport, client = handshaken()
        producer = Producer()
        protocol.registerProducer(producer, True)
        self.assertIs(transport.producer, producer)
        protocol.loseConnection()
        protocol.write(b"still producing")
        to_client(transport, client)
        self.assertEqual(client.recv(100), b"still producing")
        with self.assertRaises(SSL.WantReadError):
            client.recv(100)
        protocol.unregisterProducer()
        self.assertIsNone(transport.producer)
        to_client(transport, client)
        with self.assertRaises(SSL.ZeroReturnError):
            client.recv(100)

    def test_abort_sends_nothing(self) -> None:
        """
        C{abortConnection} aborts the transport without close_notify, and
        the wrapped protocol gets the transport's reason.
        """
        protocol, transport, _ = handshaken()
        protocol.abortConnection()
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")
        protocol.write(b"dropped")
        self.assertEqual(transport.value(), b"")
        wrapped = recording(protocol)
        protocol.connectionLost(Failure(ConnectionAborted()))
        [reason] = wrapped.lost
        self.assertTrue(reason.check(ConnectionAborted))

    def test_nothing_sent_after_an_abort(self) -> None:
        """
        Once aborted, nothing more is sent, not even the close_notify that
        unregistering a producer would send (it would tell the client that
        the stream ended cleanly).
        """
        protocol, transport, _ = handshaken()
        sent: list[bytes] = []
        self.patch(tlsserver, "send_now", lambda t, data: sent.append(data))
        protocol._direct = protocol.transport
        protocol.registerProducer(Producer(), True)
        protocol.abortConnection()
        protocol.unregisterProducer()
        protocol.loseConnection()
        self.assertEqual((sent, transport.value()), ([], b""))

    def test_tcp_end_without_close_notify(self) -> None:
        """
        A TCP connection that ends without the client's close_notify is
        reported as L{ConnectionLost}, after what OpenSSL still held is
        handed over.
        """
        protocol, _, client = handshaken()
        client.send(b"before the end")
        records = client.bio_read(65536)
        # The record arrives whole, but its last byte only with the end.
        protocol.dataReceived(records[:-1])
        connection = protocol.getHandle()
        assert connection is not None
        connection.bio_write(records[-1:])
        wrapped = recording(protocol)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(wrapped.received, [b"before the end"])
        [reason] = wrapped.lost
        self.assertTrue(reason.check(ConnectionLost))


class WritingTests(SynchronousTestCase):
    """Writes: encrypted and sent at once, records of one write together."""

    def test_writes_sent_in_one_call_each(self) -> None:
        """
        On Twisted's TCP transport each write is sent with one call, what
        fits a record and what does not; the client reads them in order.
        """
        protocol, _, client = handshaken()
        sent: list[bytes] = []
        self.patch(tlsserver, "send_now", lambda transport, data: sent.append(data))
        protocol._direct = protocol.transport
        short, record, longer = b"hello\n", b"r" * 16384, b"l" * 40000
        for data in (short, record, longer):
            protocol.write(data)
        protocol.writeSequence([b"a", b"b"])
        self.assertEqual(len(sent), 4)
        everything = short + record + longer + b"ab"
        self.assertEqual(read_all(client, b"".join(sent), len(everything)), everything)

    def test_records_read_out_one_by_one(self) -> None:
        """
        A write longer than one record is handed to OpenSSL a record at a
        time, and each is read out before the next is made: OpenSSL's
        memory BIO (which keeps the room of the most it ever held) never
        holds more than one.
        """
        protocol, transport, client = handshaken()
        read: list[int] = []
        read_out = TLSServerProtocol._read_out

        def reading(self: TLSServerProtocol, connection: SSL.Connection) -> bytes:
            data = read_out(self, connection)
            read.append(len(data))
            return data

        self.patch(TLSServerProtocol, "_read_out", reading)
        data = bytes(range(256)) * 160  # 40 KiB: three records
        protocol.write(data)
        self.assertEqual(len(read), 3)
        self.assertLess(max(read), 17 * 1024)
        self.assertEqual(read_all(client, transport.value(), len(data)), data)

    def want_read_once(self, after: int = 0) -> None:
        """
        Make one of the next calls to C{SSL_write}, the one after C{after}
        others, find OpenSSL wanting to read first.
        """
        calls: list[int] = []
        ssl_write = tlsserver._ssl_write
        ssl_get_error = tlsserver._ssl_get_error

        def writing(ssl: object, data: object, size: int) -> int:
            calls.append(size)
            if len(calls) == after + 1:
                return -1
            return int(ssl_write(ssl, data, size))

        def error(ssl: object, result: int) -> int:
            if len(calls) == after + 1 and result == -1:
                return int(openssl.SSL_ERROR_WANT_READ)
            return int(ssl_get_error(ssl, result))

        self.patch(tlsserver, "_ssl_write", writing)
        self.patch(tlsserver, "_ssl_get_error", error)

    def test_long_write_waits_from_where_openssl_stopped(self) -> None:
        """
        A long write OpenSSL stops taking halfway (it must read first)
        sends the records it made, keeps only the rest, and sends that in
        order after the next read.
        """
        protocol, transport, client = handshaken()
        self.want_read_once(after=1)
        data = bytes(range(256)) * 160  # 40 KiB: three records
        protocol.write(data)
        self.assertEqual(held_bytes(protocol), len(data) - 16384)
        sent = transport.value()
        transport.clear()
        client.send(b"hello\n")
        protocol.dataReceived(client.bio_read(65536))
        self.assertEqual(read_all(client, sent + transport.value(), len(data)), data)

    def test_partial_writes_completed(self) -> None:
        """
        When OpenSSL takes part of a write (a client that asked for records
        of 512 bytes, RFC 6066, gets one per call: pyOpenSSL's contexts
        allow partial writes), the rest is written too, in order.
        """
        protocol, transport, client = handshaken()
        ssl_write = tlsserver._ssl_write
        self.patch(
            tlsserver,
            "_ssl_write",
            lambda ssl, data, size: ssl_write(ssl, data, min(size, 512)),
        )
        for size in (100, 2000, 16384, 40000):
            data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            protocol.write(data)
            self.assertEqual(read_all(client, transport.value(), size), data)
            transport.clear()

    def test_writes_wait_while_openssl_must_read(self) -> None:
        """
        A write OpenSSL cannot make before it reads waits, with the writes
        after it, until the next read; they are then sent in order, and a
        loseConnection meanwhile sends close_notify after them.
        """
        protocol, transport, client = handshaken()
        self.want_read_once()
        protocol.write(b"first ")
        protocol.write(b"second")
        protocol.loseConnection()
        self.assertEqual(transport.value(), b"")
        self.assertEqual(held_bytes(protocol), 12)
        client.send(b"hello\n")
        protocol.dataReceived(client.bio_read(65536))
        self.assertEqual(held_bytes(protocol), 0)
        self.assertEqual(recording(protocol).received, [b"hello\n"])
        self.assertEqual(read_all(client, transport.value(), 12), b"first second")
        with self.assertRaises(SSL.ZeroReturnError):
            client.recv(100)

    def test_buffers_written(self) -> None:
        """A bytearray or memoryview is written as bytes are."""
        protocol, transport, client = handshaken()
        protocol.write(bytearray(b"array "))  # type: ignore[arg-type]
        protocol.write(memoryview(b"view"))  # type: ignore[arg-type]
        self.assertEqual(read_all(client, transport.value(), 10), b"array view")

    def test_other_transports_written_as_usual(self) -> None:
        """
        On any other transport (here a L{StringTransport}) TLS output goes
        through the transport's write.
        """
        protocol, transport, client = handshaken()
        self.assertIsNone(protocol._direct)
        protocol.write(b"hello")
        to_client(transport, client)
        self.assertEqual(client.recv(100), b"hello")


class TransportTests(SynchronousTestCase):
    """What the wrapped protocol sees of its transport."""

    def test_interfaces(self) -> None:
        """
        The layer is an SSL transport (so twisted.web calls its requests
        secure), a TCP one, a consumer and has a handle, all declared by its
        class: nothing is declared per connection.
        """
        protocol, _, _ = connected()
        for interface in (
            ISSLTransport,
            ITCPTransport,
            ISystemHandle,
            INegotiated,
            IConsumer,
            IPushProducer,
        ):
            self.assertTrue(interface.providedBy(protocol), interface)
        self.assertEqual(list(directlyProvidedBy(protocol)), [])
        self.assertIn(protocol, protocol.factory.protocols)

    def test_peer_certificate_and_handle(self) -> None:
        """
        Without a client certificate, C{getPeerCertificate} is L{None};
        C{getHandle} is the C{SSL.Connection}; without ALPN no protocol was
        negotiated; addresses are the transport's.
        """
        protocol, transport, _ = handshaken()
        self.assertIsNone(protocol.getPeerCertificate())
        self.assertIsInstance(protocol.getHandle(), SSL.Connection)
        self.assertIsNone(protocol.negotiatedProtocol)
        self.assertEqual(protocol.getPeer(), transport.getPeer())
        self.assertEqual(protocol.getHost(), transport.getHost())
        self.assertEqual(protocol.logPrefix(), "Recording (TLS)")

    def test_reading_paused(self) -> None:
        """
        As a producer (twisted.web's HTTP channel uses it so), the layer
        pauses and resumes the TCP transport's reading; stopping it closes
        with close_notify.
        """
        protocol, transport, client = handshaken()
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        protocol.stopProducing()
        to_client(transport, client)
        with self.assertRaises(SSL.ZeroReturnError):
            client.recv(100)

    def test_web_channel_flow_control(self) -> None:
        """
        twisted.web's HTTP channel takes the layer for the producer of its
        bytes (to stop reading while it answers) and registers with it; its
        TCP_NODELAY is let go where the transport has no TCP options (here
        a L{StringTransport}; a UNIX socket).
        """
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        protocol, transport, _ = connected(
            cast(Factory, Site(Resource(), timeout=None))
        )
        channel = cast(Any, protocol.wrappedProtocol)._channel
        self.assertIs(channel._networkProducer, protocol)
        self.assertIs(transport.producer, channel)

    def test_tcp_options(self) -> None:
        """
        The TCP options are the TCP transport's; a transport without them
        (a UNIX socket's) has none, and setting one is not an error.
        """
        protocol, transport, _ = connected()
        protocol.setTcpNoDelay(True)
        self.assertFalse(protocol.getTcpNoDelay())
        options: dict[str, bool] = {}
        transport.setTcpNoDelay = lambda on: options.update(nodelay=on)  # type: ignore[attr-defined]
        transport.getTcpKeepAlive = lambda: 1  # type: ignore[attr-defined]
        protocol.setTcpNoDelay(True)
        self.assertEqual(options, {"nodelay": True})
        self.assertIs(protocol.getTcpKeepAlive(), True)

    def test_pull_producer_pushed(self) -> None:
        """
        A pull producer is registered with the TCP transport as a push one
        (the transport may never ask it for more: writes are sent at once),
        and stopped when unregistered.
        """
        protocol, transport, _ = handshaken()

        class Pull:
            def resumeProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                pass

        pull = Pull()
        protocol.registerProducer(pull, False)
        pusher = cast(Any, transport.producer)
        self.assertTrue(transport.streaming)
        self.assertIs(pusher._producer, pull)
        protocol.unregisterProducer()
        self.assertIsNone(transport.producer)
        self.assertTrue(pusher._finished)

    def test_producer_after_the_end_stopped(self) -> None:
        """A producer registered once TLS is over is stopped at once."""
        protocol, transport, _ = handshaken()
        protocol.abortConnection()
        stopped: list[bool] = []
        producer = Producer()
        self.patch(producer, "stopProducing", lambda: stopped.append(True))
        protocol.registerProducer(producer, True)
        self.assertEqual(stopped, [True])
        self.assertIsNone(transport.producer)
