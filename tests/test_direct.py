"""
Tests for L{securemsg.server.direct}: TLS records sent at once over real loopback
TCP, and everything else left to Twisted's transport.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.protocols.policies import TimeoutFactory, TimeoutProtocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase

from securemsg.server.direct import (
    can_send_now,
    send_now,
    socket_transport,
    tcp_held,
)
from securemsg.server.proxy import ProxyHeaderFactory, ProxyHeaderProtocol
from securemsg.server.tlsserver import TLSServerProtocol, held_bytes
from securemsg.tls.policy import ServerTLS

from ._loopback import bounded, reactor
from ._tls import server_context


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

    def test_behind_a_proxy_header_reader(self) -> None:
        """
        Behind the PROXY header reader (a wrapper that passes writes on as
        they are), the TLS layer finds the TCP transport for sending at
        once, and counts what that transport's buffer holds.
        """
        wrapper = ProxyHeaderProtocol(ProxyHeaderFactory(Factory(), reactor, 5.0))
        wrapper.transport = self.transport
        self.assertIs(socket_transport(wrapper), self.transport)
        tls = TLSServerProtocol(
            TLSMemoryBIOFactory(ServerTLS(server_context()), False, Factory()),
            Protocol(),
        )
        tls.transport = wrapper
        self.assertEqual(held_bytes(tls), 0)
        # Buffered by the TCP transport until the reactor's next turn.
        self.transport.write(b"x" * 1000)
        self.assertEqual(tcp_held(self.transport), 1000)
        self.assertEqual(held_bytes(tls), 1000)

    def test_wrapper_that_writes_not_looked_through(self) -> None:
        """
        A wrapper with a C{write} of its own (here Twisted's timeout
        wrapper, which restarts its timer on each write) is the transport
        written to.
        """
        wrapper = TimeoutProtocol(
            TimeoutFactory(Factory(), timeoutPeriod=60), Protocol(), 60
        )
        self.addCleanup(wrapper.cancelTimeout)
        wrapper.transport = self.transport
        self.assertIs(socket_transport(wrapper), wrapper)
        self.assertFalse(can_send_now(socket_transport(wrapper)))
