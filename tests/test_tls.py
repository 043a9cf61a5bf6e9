"""
Tests for L{securemsg.tls.policy}: loading credentials, and the TLS policy checked
with real handshakes in memory.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL
from OpenSSL._util import lib as openssl_lib
from twisted.internet.address import IPv4Address
from twisted.internet.ssl import TLSVersion
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from securemsg.admin import ca
from securemsg.core.limits import Limits
from securemsg.server.endpoint import tls_server_endpoint
from securemsg.server.factory import ChatServerFactory
from securemsg.server.guard import GuardedTLSFactory, TLSOnlyProtocol
from securemsg.server.tlsserver import TLSServerProtocol
from securemsg.tls import policy as tls

from . import _certs
from ._tls import RawClientTLS, client_options, raw_client, tls_pair


def _has_hybrid() -> bool:
    """Whether this OpenSSL has the post-quantum hybrid X25519MLKEM768."""
    context = SSL.Context(SSL.TLS_METHOD)
    found = bool(
        openssl_lib.SSL_CTX_set1_curves_list(context._context, b"X25519MLKEM768")
    )
    openssl_lib.ERR_clear_error()
    return found


#: Whether the tests of the hybrid can run here (OpenSSL 3.5 and later).
HYBRID = _has_hybrid()


def server_context(
    minimum: TLSVersion = TLSVersion.TLSv1_2, server: _certs.Pair | None = None
) -> SSL.Context:
    """A server context with C{server} (the default test certificate)."""
    if server is None:
        _, server = _certs.default_ca_and_server()
    credentials = tls.ServerCredentials([server.certificate], server.key, "c", "k")
    return tls.make_server_context(credentials, minimum)


_rsa_server: _certs.Pair | None = None


def rsa_server() -> _certs.Pair:
    """
    A localhost certificate with an RSA 2048 key, from the default test CA;
    made once for the module (an RSA key takes a while to generate).
    """
    global _rsa_server
    if _rsa_server is None:
        ca, _ = _certs.default_ca_and_server()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _rsa_server = _certs.issue(ca, key=key)
    return _rsa_server


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
        chat = ChatServerFactory.standalone(Clock())
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

    def test_version_floor_is_ours(self) -> None:
        """
        TLS 1.0 and 1.1 are refused by the context's own version floor, not
        only by OpenSSL's default security level or by our cipher list
        (whose suites need TLS 1.2 anyway): with both lowered, at
        C{@SECLEVEL=0} and with a CBC suite TLS 1.1 can use, a TLS 1.2
        client gets in and a TLS 1.1 client is still refused, for the
        protocol version.
        """
        options = server_context().set_options(0)
        for flag in (SSL.OP_NO_SSLv3, SSL.OP_NO_TLSv1, SSL.OP_NO_TLSv1_1):
            self.assertTrue(options & flag, flag)
        self.assertFalse(options & SSL.OP_NO_TLSv1_2)
        self.assertTrue(
            server_context(TLSVersion.TLSv1_3).set_options(0) & SSL.OP_NO_TLSv1_2
        )
        legacy = b"ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"
        for maximum, accepted in (
            (SSL.TLS1_2_VERSION, True),
            (SSL.TLS1_1_VERSION, False),
            (SSL.TLS1_VERSION, False),
        ):
            context = server_context()
            context.set_cipher_list(tls.INTERMEDIATE_CIPHERS.encode() + b":" + legacy)
            client, _, _, _ = tls_pair(context, raw_client(maximum, ciphers=legacy))
            self.assertEqual(client.handshake_done, accepted, maximum)
            if not accepted:
                assert client.lost is not None
                self.assertIn("protocol version", str(client.lost.value))

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

    def test_rsa_key_refuses_cbc_and_static_rsa(self) -> None:
        """
        A server with an RSA key (with which static-RSA key exchange would
        be possible, unlike with an ECDSA key) refuses a TLS 1.2 client that
        offers only static-RSA or CBC suites, and accepts ECDHE with
        AES-GCM.
        """
        context = server_context(server=rsa_server())
        for suites in (
            b"AES128-SHA",
            b"AES128-GCM-SHA256",
            b"AES256-GCM-SHA384",
            b"ECDHE-RSA-AES128-SHA",
            b"ECDHE-RSA-AES256-SHA384",
            b"AES128-SHA:AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA",
        ):
            client, _, _, _ = tls_pair(
                context, raw_client(SSL.TLS1_2_VERSION, ciphers=suites)
            )
            self.assertFalse(client.handshake_done, suites)
        client, server_tls, _, _ = tls_pair(
            context,
            raw_client(SSL.TLS1_2_VERSION, ciphers=b"ECDHE-RSA-AES128-GCM-SHA256"),
        )
        self.assertTrue(client.handshake_done)
        self.assertEqual(
            server_tls.getHandle().get_cipher_name(), "ECDHE-RSA-AES128-GCM-SHA256"
        )

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
        """
        Only X25519MLKEM768 (where this OpenSSL has it), X25519, P-256 and
        P-384 are accepted for key exchange.
        """
        cases = [
            (b"X25519", True),
            (b"P-256", True),
            (b"P-384", True),
            (b"X448", False),
            (b"P-521", False),
        ]
        if HYBRID:
            cases.append((b"X25519MLKEM768", True))
        for group, accepted in cases:
            client, _, _, _ = tls_pair(server_context(), raw_client(groups=group))
            self.assertEqual(client.handshake_done, accepted, group)

    def test_post_quantum_hybrid_preferred(self) -> None:
        """
        Every client that supports the post-quantum hybrid gets it, even
        one that prefers X25519; among the classical groups the client's
        order wins.
        """
        if not HYBRID:
            raise SkipTest("this OpenSSL has no X25519MLKEM768 (3.5 and later have it)")
        for groups, expected in [
            (None, "X25519MLKEM768"),  # OpenSSL's defaults, as browsers'.
            (b"X25519MLKEM768:X25519", "X25519MLKEM768"),
            (b"X25519:X25519MLKEM768", "X25519MLKEM768"),
            (b"X25519:P-256", "x25519"),
            (b"P-256:X25519", "secp256r1"),
        ]:
            client, server_tls, _, _ = tls_pair(
                server_context(), raw_client(groups=groups)
            )
            self.assertTrue(client.handshake_done, groups)
            self.assertEqual(server_tls.getHandle().get_group_name(), expected, groups)

    def test_groups_without_the_hybrid(self) -> None:
        """
        On an OpenSSL that does not know a group of the first list (one
        older than 3.5 and X25519MLKEM768), the next list is used.
        """
        context = server_context()
        chosen = tls.set_groups(context, [b"NO-SUCH-GROUP:X25519", b"P-256"])
        self.assertEqual(chosen, b"P-256")
        for group, accepted in [(b"X25519", False), (b"P-256", True)]:
            client, _, _, _ = tls_pair(context, raw_client(groups=group))
            self.assertEqual(client.handshake_done, accepted, group)

    def test_refused_list_error_cleared(self) -> None:
        """
        When OpenSSL refuses a list, whatever it queued for it is cleared,
        so that it is not taken for the error of a later call (some
        versions queue one for an unknown group, others do not).
        """
        calls: list[object] = []

        class Binding:
            def SSL_CTX_set1_curves_list(self, context: object, groups: bytes) -> int:
                calls.append(groups)
                return int(groups == b"P-256")

            def ERR_clear_error(self) -> None:
                calls.append("cleared")

        self.patch(tls, "_openssl_lib", Binding())
        chosen = tls.set_groups(SSL.Context(SSL.TLS_METHOD), [b"NO-SUCH", b"P-256"])
        self.assertEqual(chosen, b"P-256")
        self.assertEqual(calls, [b"NO-SUCH", "cleared", b"P-256"])

    def test_without_the_hybrid_said(self) -> None:
        """
        A server context made without the post-quantum hybrid says so in
        the log, as a warning; one made with it says nothing.
        """
        if HYBRID:
            with capturedLogs() as events:
                server_context()
            self.assertEqual(events, [])
        self.patch(tls, "set_groups", lambda context: tls.CLASSICAL_GROUPS)
        with capturedLogs() as events:
            server_context()
        self.assertEqual(
            [(event["log_level"], formatEvent(event)) for event in events],
            [
                (
                    LogLevel.warn,
                    "this OpenSSL has no X25519MLKEM768 (OpenSSL 3.5 and later"
                    " have it): key exchange without the post-quantum hybrid",
                )
            ],
        )

    def test_no_group_list_usable(self) -> None:
        """
        An OpenSSL that can use none of the lists: an error of one line
        (which the server prints instead of starting).
        """
        context = SSL.Context(SSL.TLS_METHOD)
        error = self.assertRaises(
            tls.TLSConfigError, tls.set_groups, context, [b"NO-SUCH-GROUP"]
        )
        self.assertEqual(
            str(error), "this OpenSSL cannot limit the key exchange groups"
        )

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
        self.assertConfigError("no PEM certificate found", str(junk))

    def test_missing_key(self) -> None:
        """A missing key is named."""
        cert, _ = self.server.write(self.directory)
        missing = str(self.directory / "nokey")
        self.assertEqual(
            self.assertConfigError("not found", cert, missing),
            f"private key file {missing} not found",
        )

    def test_missing_guessed_key(self) -> None:
        """
        When no key path was given and neither the certificate file nor
        private.key beside it holds the key, the message says to give its
        path with --key.
        """
        cert, _ = self.server.write(self.directory)
        self.assertEqual(
            self.assertConfigError("not found", cert),
            f"private key file {self.directory / 'private.key'} not found"
            " (give its path with --key)",
        )

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
    L{tls_server_endpoint} wraps plain endpoints and refuses TLS ones.
    """

    def test_refuses_tls_descriptions(self) -> None:
        """ssl: and tls: descriptions would bypass the policy and are refused."""
        creator = tls.ServerTLS(server_context())
        for description in ("ssl:50000", "TLS:50000"):
            error = self.assertRaises(
                tls.TLSConfigError,
                tls_server_endpoint,
                MemoryReactorClock(),
                description,
                creator,
            )
            self.assertIn("plain endpoint", str(error))

    def test_invalid_description(self) -> None:
        """A description Twisted cannot parse is one clear error."""
        self.assertRaises(
            tls.TLSConfigError,
            tls_server_endpoint,
            MemoryReactorClock(),
            "nosuchthing:1",
            tls.ServerTLS(server_context()),
        )

    def test_listens_with_tls(self) -> None:
        """A tcp: description listens through a TLS-wrapping factory."""
        reactor = MemoryReactorClock()
        endpoint = tls_server_endpoint(
            reactor, "tcp:0:interface=127.0.0.1", tls.ServerTLS(server_context())
        )
        endpoint.listen(ChatServerFactory.standalone(reactor))
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (0, "127.0.0.1"))
        self.assertIsInstance(factory, TLSMemoryBIOFactory)

    def test_default_limits_and_direct_sends(self) -> None:
        """
        Without limits given, L{Limits}' connection limits apply, each
        connection's TLS is securemsg's layer (L{TLSServerProtocol}),
        and a client that does not speak TLS is told how to connect
        (L{TLSOnlyProtocol}).
        """
        reactor = MemoryReactorClock()
        endpoint = tls_server_endpoint(
            reactor, "tcp:0:interface=127.0.0.1", tls.ServerTLS(server_context())
        )
        endpoint.listen(ChatServerFactory.standalone(reactor))
        [(_, factory, _, _)] = reactor.tcpServers
        assert isinstance(factory, GuardedTLSFactory)
        self.assertEqual(
            (factory.limits.max_connections, factory.limits.max_per_address),
            (Limits().max_connections, Limits().max_per_address),
        )
        self.assertIs(factory.protocol, TLSOnlyProtocol)
        self.assertTrue(issubclass(TLSOnlyProtocol, TLSServerProtocol))

    def test_connect_rate_from_limits(self) -> None:
        """The limits' rate of new connections per address reaches the guard."""
        reactor = MemoryReactorClock()
        endpoint = tls_server_endpoint(
            reactor,
            "tcp:0:interface=127.0.0.1",
            tls.ServerTLS(server_context()),
            Limits(connect_burst=3, connect_rate=0.5),
        )
        endpoint.listen(ChatServerFactory.standalone(reactor))
        [(_, factory, _, _)] = reactor.tcpServers
        assert isinstance(factory, GuardedTLSFactory)
        self.assertEqual(
            (factory.limits.connect_burst, factory.limits.connect_rate), (3, 0.5)
        )


class ClientCALoadingTests(SynchronousTestCase):
    """
    L{tls.load_tls} refuses a client CA file or a CRL that would not do
    what the operator meant, in one line, at start (and so at a reload,
    which loads the same way).
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        _, server = _certs.default_ca_and_server()
        self.cert_path, self.key_path = server.write(self.directory)
        self.ca_directory = self.directory / "ca"
        ca.init_ca(self.ca_directory)
        self.paths = ca.ca_paths(self.ca_directory)

    def settings(self, client_ca: str, crl: str | None = None) -> tls.TLSSettings:
        return tls.TLSSettings(
            self.cert_path, self.key_path, client_ca_path=client_ca, crl_path=crl
        )

    def assertRefused(self, settings: tls.TLSSettings, problem: str) -> None:
        error = self.assertRaises(tls.TLSConfigError, tls.load_tls, settings)
        self.assertEqual(str(error), problem)

    def test_good_ca_and_crl(self) -> None:
        """A CA made by C{securemsg ca init} and its own CRL load."""
        loaded = tls.load_tls(self.settings(self.paths.certificate, self.paths.crl))
        self.assertEqual(loaded.client_cas, [ca.load_ca_certificate(self.ca_directory)])
        self.assertIsNotNone(loaded.crl)

    def test_client_ca_not_a_ca(self) -> None:
        """
        A client CA file holding a certificate that is not a CA (here the
        server's own, or a client's) is refused.
        """
        alice = ca.issue(self.ca_directory, "alice")
        advice = (
            "is not a CA (no basicConstraints CA:TRUE): give the certificate of"
            " the CA that issues client certificates (made with: securemsg ca"
            " init DIR, which writes DIR/ca.pem)"
        )
        for path, name in ((self.cert_path, "localhost"), (alice.cert_path, "alice")):
            self.assertRefused(
                self.settings(path), f"client CA {path} (CN={name}) {advice}"
            )
        both = self.directory / "both.pem"
        both.write_bytes(
            Path(self.paths.certificate).read_bytes()
            + Path(alice.cert_path).read_bytes()
        )
        self.assertRefused(
            self.settings(str(both)), f"client CA {both} #2 (CN=alice) {advice}"
        )

    def test_crl_not_signed_by_the_client_ca(self) -> None:
        """
        A CRL signed by another CA is refused, whether that CA has another
        name or the same name (a CA made again, with a new key).
        """
        client_ca = self.paths.certificate
        for name, problem in (
            (
                "some other CA",
                f"is issued by CN=some other CA, not by the client CA in {client_ca}",
            ),
            (
                ca.DEFAULT_CA_NAME,
                f"names CN={ca.DEFAULT_CA_NAME} as its issuer, but that CA's key"
                f" in {client_ca} did not sign it (was the CA made again?)",
            ),
        ):
            other = ca.ca_paths(self.directory / name.replace(" ", "-"))
            ca.init_ca(other.directory, name=name)
            self.assertRefused(
                self.settings(client_ca, other.crl), f"CRL {other.crl} {problem}"
            )

    def test_client_certificate_check(self) -> None:
        """
        L{tls.LoadedTLS.client_certificate_check} judges a client
        certificate as a handshake with that material would: a good one
        passes; a revoked one, another CA's, or an expired one does not.
        Without client CAs there is nothing to check.
        """
        alice = ca.issue(self.ca_directory, "alice")
        bob = ca.issue(self.ca_directory, "bob")
        ca.revoke(self.ca_directory, "bob")
        old = ca.issue(
            self.ca_directory, "carol", days=30, now=_certs.NOW - timedelta(days=40)
        )
        other = self.directory / "other"
        ca.init_ca(other)
        forged = ca.issue(other, "alice")

        def chain(issued: ca.IssuedCertificate) -> list[x509.Certificate]:
            pem = Path(issued.cert_path).read_bytes()
            return [x509.load_pem_x509_certificate(pem)]

        loaded = tls.load_tls(self.settings(self.paths.certificate, self.paths.crl))
        check = loaded.client_certificate_check()
        assert check is not None
        self.assertIsNone(check(chain(alice)))
        self.assertEqual(check(chain(bob)), "certificate revoked")
        self.assertEqual(check(chain(old)), "certificate has expired")
        self.assertEqual(check(chain(forged)), "unable to get local issuer certificate")
        self.assertEqual(check([]), "no certificate")
        without = tls.load_tls(tls.TLSSettings(self.cert_path, self.key_path))
        self.assertIsNone(without.client_certificate_check())
