"""
Real TLS handshakes in memory: a securemsg server and a client, each behind
L{TLSMemoryBIOFactory}, joined by L{twisted.test.iosim}.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from OpenSSL._util import lib as openssl_lib
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
)
from twisted.internet.protocol import ClientFactory
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.protocols.basic import LineReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient
from zope.interface import implementer

from securemsg.server.factory import ChatServerFactory
from securemsg.tls.policy import ServerCredentials, ServerTLS, make_server_context

from . import _certs


@implementer(IHandshakeListener)
class LineCollector(LineReceiver):
    """A client that keeps the lines it receives and how it ended."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.received: list[str] = []
        self.handshake_done = False
        self.lost: Failure | None = None

    def handshakeCompleted(self) -> None:
        self.handshake_done = True

    def lineReceived(self, line: bytes) -> None:
        self.received.append(line.decode("utf-8"))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason

    def take(self) -> list[str]:
        lines, self.received = self.received, []
        return lines


def server_context() -> SSL.Context:
    """A server context (securemsg's TLS policy) with the default test certificate."""
    _, server = _certs.default_ca_and_server()
    return make_server_context(
        ServerCredentials([server.certificate], server.key, "c", "k")
    )


def client_options(ca: _certs.Pair | None = None, hostname: str = "localhost") -> Any:
    """Client TLS options trusting C{ca} (the default test CA)."""
    if ca is None:
        ca, _ = _certs.default_ca_and_server()
    return optionsForClientTLS(hostname, trustRoot=Certificate.loadPEM(ca.cert_pem()))


def tls_pair(
    server_context: SSL.Context,
    client_creator: IOpenSSLClientConnectionCreator | None = None,
    chat: ChatServerFactory | None = None,
) -> tuple[LineCollector, Any, IOPump, ChatServerFactory]:
    """
    Connect a L{LineCollector} over TLS to a chat server in memory and run
    the handshake.

    @return: the client protocol, the server's TLS protocol, the pump, and
        the chat factory.
    """
    clock = Clock()
    if chat is None:
        chat = ChatServerFactory.standalone(clock)
    # The TLS layer batches writes until the clock's next turn; the pump
    # advances this clock.
    server_factory = TLSMemoryBIOFactory(
        ServerTLS(server_context), False, chat, clock=clock
    )
    collector = LineCollector()
    client_factory = TLSMemoryBIOFactory(
        client_creator or client_options(),
        True,
        ClientFactory.forProtocol(lambda: collector),
        clock=clock,
    )
    address = IPv4Address("TCP", "127.0.0.1", 50000)
    _, server_tls, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(address),
        lambda: client_factory.buildProtocol(address),
        greet=False,
        clock=clock,
    )
    pump.flush()
    return collector, server_tls, pump, chat


@implementer(IOpenSSLClientConnectionCreator)
class RawClientTLS:
    """
    A client made straight from a pyOpenSSL context, to offer exactly the
    versions, ciphers and groups a test wants.
    """

    def __init__(self, context: SSL.Context, session: SSL.Session | None = None):
        self.context = context
        self.session = session
        self.connections: list[SSL.Connection] = []

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        connection.set_tlsext_host_name(b"localhost")
        if self.session is not None:
            connection.set_session(self.session)
        connection.set_connect_state()
        self.connections.append(connection)
        return connection


def raw_client(
    maximum: int | None = None,
    ciphers: bytes | None = None,
    groups: bytes | None = None,
) -> RawClientTLS:
    """A client context limited as asked (and verifying nothing)."""
    context = SSL.Context(SSL.TLS_METHOD)
    if maximum is not None:
        context.set_max_proto_version(maximum)
    if ciphers is not None:
        context.set_cipher_list(ciphers)
    if groups is not None:
        assert openssl_lib.SSL_CTX_set1_curves_list(context._context, groups)
    return RawClientTLS(context)
