"""
Tests for L{securemsg.tls}: loading credentials, and the TLS policy checked
with real handshakes in memory.
"""

from __future__ import annotations

from pathlib import Path

from OpenSSL import SSL
from OpenSSL._util import lib as openssl_lib
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import TLSVersion
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from securemsg import tls
from securemsg.direct import DirectTLSProtocol
from securemsg.guard import GuardedTLSFactory
from securemsg.limits import Limits
from securemsg.server import ChatServerFactory

from . import _certs
from ._tls import client_options, tls_pair


def server_context(minimum: TLSVersion = TLSVersion.TLSv1_2) -> SSL.Context:
    """A server context with the default test certificate."""
    _, server = _certs.default_ca_and_server()
    credentials = tls.ServerCredentials([server.certificate], server.key, "c", "k")
    return tls.make_server_context(credentials, minimum)


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


class HandshakeTests(SynchronousTestCase):
    """
    The server's TLS policy, seen from clients that offer different things.
    """

    def test_verified_handshake_and_greeting(self) -> None:
        """
        A client that verifies the server's name and CA completes the
        handshake, joins, and receives the greeting.
        """
        client, server_tls, _, chat = tls_pair(server_context())
        self.assertTrue(client.handshake_done)
        self.assertEqual(
            client.take(),
            ["*** Welcome to securemsg, guest-1. Type /help for commands."],
        )
        self.assertEqual(len(chat.chat), 1)
        self.assertEqual(server_tls.getHandle().get_protocol_version_name(), "TLSv1.3")

    def test_wrong_hostname_refused(self) -> None:
        """A client expecting another name refuses the server."""
        client, _, _, chat = tls_pair(
            server_context(), client_options(hostname="example.com")
        )
        self.assertFalse(client.handshake_done)
        self.assertIsNotNone(client.lost)
        self.assertEqual(len(chat.chat), 0)

    def test_untrusted_refused(self) -> None:
        """A client that trusts another CA refuses the server."""
        client, _, _, _ = tls_pair(server_context(), client_options(_certs.make_ca()))
        self.assertFalse(client.handshake_done)

    def test_no_join_before_handshake(self) -> None:
        """
        A connection whose handshake has not finished is not in the room
        (Twisted calls connectionMade before the handshake).
        """
        chat = ChatServerFactory(Clock())
        factory = TLSMemoryBIOFactory(tls.ServerTLS(server_context()), False, chat)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        protocol.makeConnection(StringTransport())
        self.assertEqual(len(chat.chat), 0)

    def test_tls12_allowed_by_default(self) -> None:
        """A TLS 1.2 client with a modern cipher suite connects."""
        client, server_tls, _, _ = tls_pair(
            server_context(), raw_client(SSL.TLS1_2_VERSION)
        )
        self.assertTrue(client.handshake_done)
        self.assertEqual(server_tls.getHandle().get_protocol_version_name(), "TLSv1.2")
        self.assertIn("GCM", server_tls.getHandle().get_cipher_name() or "")

    def test_tls13_minimum(self) -> None:
        """With a TLS 1.3 floor, a TLS 1.2 client is refused."""
        client, _, _, _ = tls_pair(
            server_context(TLSVersion.TLSv1_3), raw_client(SSL.TLS1_2_VERSION)
        )
        self.assertFalse(client.handshake_done)

    def test_tls11_refused(self) -> None:
        """TLS 1.1 is never accepted."""
        client, _, _, _ = tls_pair(server_context(), raw_client(SSL.TLS1_1_VERSION))
        self.assertFalse(client.handshake_done)

    def test_cbc_and_static_rsa_refused(self) -> None:
        """A TLS 1.2 client offering only CBC or static-RSA suites is refused."""
        for suites in (
            b"ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA",
            b"AES128-GCM-SHA256:AES256-GCM-SHA384",
        ):
            client, _, _, _ = tls_pair(
                server_context(), raw_client(SSL.TLS1_2_VERSION, ciphers=suites)
            )
            self.assertFalse(client.handshake_done, suites)

    def test_client_cipher_order_wins(self) -> None:
        """
        A TLS 1.2 client that prefers ChaCha20 gets it, as Mozilla's profiles
        ask (the server does not impose its own order).
        """
        for preferred in (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
        ):
            suites = f"{preferred}:ECDHE-ECDSA-AES128-GCM-SHA256".encode()
            _, server_tls, _, _ = tls_pair(
                server_context(), raw_client(SSL.TLS1_2_VERSION, ciphers=suites)
            )
            self.assertEqual(server_tls.getHandle().get_cipher_name(), preferred)

    def test_groups(self) -> None:
        """Only X25519, P-256 and P-384 are accepted for key exchange."""
        for group, accepted in [
            (b"X25519", True),
            (b"P-256", True),
            (b"P-384", True),
            (b"X448", False),
            (b"P-521", False),
        ]:
            client, _, _, _ = tls_pair(server_context(), raw_client(groups=group))
            self.assertEqual(client.handshake_done, accepted, group)

    def test_no_compression_no_renegotiation(self) -> None:
        """The context refuses compression and renegotiation."""
        options = server_context().set_options(0)
        self.assertTrue(options & SSL.OP_NO_COMPRESSION)
        self.assertTrue(options & SSL.OP_NO_RENEGOTIATION)
        self.assertFalse(options & SSL.OP_NO_TICKET)

    def test_session_resumption(self) -> None:
        """A returning client resumes its session instead of a full handshake."""
        context = server_context()
        first = raw_client()
        client, _, _, _ = tls_pair(context, first)
        self.assertTrue(client.handshake_done)
        session = first.connections[0].get_session()
        # A session can only be offered again from the context that made it.
        second = RawClientTLS(first.context, session)
        client, server_tls, _, _ = tls_pair(context, second)
        self.assertTrue(client.handshake_done)
        # pyOpenSSL has no public call for this; ask OpenSSL directly.
        self.assertTrue(openssl_lib.SSL_session_reused(server_tls.getHandle()._ssl))
        self.assertFalse(openssl_lib.SSL_session_reused(first.connections[0]._ssl))


class CredentialsTests(SynchronousTestCase):
    """
    L{tls.load_credentials} loads a certificate and key, or says in one line
    why it cannot.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.ca, self.server = _certs.default_ca_and_server()

    def assertConfigError(self, expected: str, *args: object, **kwargs: object) -> str:
        error = self.assertRaises(
            tls.TLSConfigError, tls.load_credentials, *args, **kwargs
        )
        message = str(error)
        self.assertIn(expected, message)
        self.assertNotIn("\n", message)
        return message

    def test_loads_pair(self) -> None:
        """A matching certificate and key load."""
        cert, key = self.server.write(self.directory)
        credentials = tls.load_credentials(cert, key)
        self.assertEqual(credentials.certificate, self.server.certificate)
        self.assertEqual(credentials.key_path, key)

    def test_default_key_beside_cert(self) -> None:
        """Without --key, private.key beside the certificate is used."""
        cert, key = self.server.write(self.directory)
        Path(key).rename(self.directory / "private.key")
        credentials = tls.load_credentials(cert)
        self.assertEqual(credentials.key_path, str(self.directory / "private.key"))

    def test_key_inside_cert_file(self) -> None:
        """Without --key, a key inside the certificate file is used."""
        combined = self.directory / "combined.pem"
        combined.write_bytes(self.server.key_pem() + self.server.cert_pem())
        credentials = tls.load_credentials(str(combined))
        self.assertEqual(credentials.key_path, str(combined))

    def test_chain(self) -> None:
        """Intermediates after the server certificate are kept, in order."""
        cert_file = self.directory / "chain.pem"
        cert_file.write_bytes(self.server.cert_pem() + self.ca.cert_pem())
        _, key = self.server.write(self.directory)
        credentials = tls.load_credentials(str(cert_file), key)
        self.assertEqual(
            credentials.chain, [self.server.certificate, self.ca.certificate]
        )

    def test_missing_cert(self) -> None:
        """A missing certificate names the command that makes one."""
        self.assertConfigError("securemsg gencert", str(self.directory / "nope.pem"))

    def test_not_a_cert(self) -> None:
        """A file without a certificate is refused."""
        junk = self.directory / "junk.pem"
        junk.write_text("hello")
        self.assertConfigError("holds no PEM certificate", str(junk))

    def test_missing_key(self) -> None:
        """A missing key is named."""
        cert, _ = self.server.write(self.directory)
        self.assertConfigError("not found", cert, str(self.directory / "nokey"))

    def test_mismatch(self) -> None:
        """A key of another certificate is refused."""
        cert, _ = self.server.write(self.directory)
        other = _certs.issue(self.ca)
        _, other_key = other.write(self.directory, "other")
        self.assertConfigError("does not match", cert, other_key)

    def test_encrypted_key_sources(self) -> None:
        """
        An encrypted key opens with its passphrase from a file, the
        environment, or a prompt, in that order.
        """
        cert, key = self.server.write(self.directory, passphrase=b"s3cret")
        secret_file = self.directory / "pass"
        secret_file.write_text("s3cret\n")
        sources = [
            tls.PassphraseSource(
                str(secret_file), {tls.PASSPHRASE_ENVIRONMENT_VARIABLE: "wrong"}
            ),
            tls.PassphraseSource(
                environ={tls.PASSPHRASE_ENVIRONMENT_VARIABLE: "s3cret"}
            ),
            tls.PassphraseSource(prompt=lambda prompt: "s3cret"),
        ]
        for source in sources:
            credentials = tls.load_credentials(cert, key, source)
            self.assertEqual(credentials.certificate, self.server.certificate)

    def test_encrypted_key_errors(self) -> None:
        """A wrong or missing passphrase is one clear line."""
        cert, key = self.server.write(self.directory, passphrase=b"s3cret")
        self.assertConfigError(
            "wrong passphrase", cert, key, tls.PassphraseSource(prompt=lambda p: "nope")
        )
        self.assertConfigError("is encrypted", cert, key, tls.PassphraseSource())
        self.assertConfigError(
            "cannot read passphrase file",
            cert,
            key,
            tls.PassphraseSource(str(self.directory / "missing")),
        )
        for content, problem in (
            (b"\xff\xfe not text\n", "is not UTF-8 text"),
            (b"\nthe passphrase on line 2\n", "has an empty first line"),
        ):
            bad = self.directory / "bad-passphrase"
            bad.write_bytes(content)
            self.assertConfigError(problem, cert, key, tls.PassphraseSource(str(bad)))

    def test_from_process(self) -> None:
        """
        A real process reads the environment, and prompts only when standard
        input is a terminal (it is not under trial).
        """
        source = tls.PassphraseSource.from_process("some-file")
        self.assertEqual(source.path, "some-file")
        self.assertIsNotNone(source.environ)
        self.assertIsNone(source.prompt)


class EndpointTests(SynchronousTestCase):
    """
    L{tls.tls_server_endpoint} wraps plain endpoints and refuses TLS ones.
    """

    def test_refuses_tls_descriptions(self) -> None:
        """ssl: and tls: descriptions would bypass the policy and are refused."""
        creator = tls.ServerTLS(server_context())
        for description in ("ssl:50000", "TLS:50000"):
            error = self.assertRaises(
                tls.TLSConfigError,
                tls.tls_server_endpoint,
                MemoryReactor(),
                description,
                creator,
            )
            self.assertIn("plain endpoint", str(error))

    def test_invalid_description(self) -> None:
        """A description Twisted cannot parse is one clear error."""
        self.assertRaises(
            tls.TLSConfigError,
            tls.tls_server_endpoint,
            MemoryReactor(),
            "nosuchthing:1",
            tls.ServerTLS(server_context()),
        )

    def test_listens_with_tls(self) -> None:
        """A tcp: description listens through a TLS-wrapping factory."""
        reactor = MemoryReactor()
        endpoint = tls.tls_server_endpoint(
            reactor, "tcp:0:interface=127.0.0.1", tls.ServerTLS(server_context())
        )
        endpoint.listen(ChatServerFactory(reactor))
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (0, "127.0.0.1"))
        self.assertIsInstance(factory, TLSMemoryBIOFactory)

    def test_default_limits_and_direct_sends(self) -> None:
        """
        Without limits given, L{Limits}' connection limits apply, and each
        connection's TLS records are sent at once (L{DirectTLSProtocol}).
        """
        reactor = MemoryReactor()
        endpoint = tls.tls_server_endpoint(
            reactor, "tcp:0:interface=127.0.0.1", tls.ServerTLS(server_context())
        )
        endpoint.listen(ChatServerFactory(reactor))
        [(_, factory, _, _)] = reactor.tcpServers
        assert isinstance(factory, GuardedTLSFactory)
        self.assertEqual(
            (factory.max_connections, factory.max_per_address),
            (Limits().max_connections, Limits().max_per_address),
        )
        self.assertIs(factory.protocol, DirectTLSProtocol)

    def test_connect_rate_from_limits(self) -> None:
        """The limits' rate of new connections per address reaches the guard."""
        reactor = MemoryReactor()
        endpoint = tls.tls_server_endpoint(
            reactor,
            "tcp:0:interface=127.0.0.1",
            tls.ServerTLS(server_context()),
            Limits(connect_burst=3, connect_rate=0.5),
        )
        endpoint.listen(ChatServerFactory(reactor))
        [(_, factory, _, _)] = reactor.tcpServers
        assert isinstance(factory, GuardedTLSFactory)
        self.assertEqual((factory.connect_burst, factory.connect_rate), (3, 0.5))
