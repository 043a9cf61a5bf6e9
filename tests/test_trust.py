"""
Tests for L{securemsg.client.trust}: L{ServerVerifier} over real TLS handshakes in
memory, against certificates made at test time, and client certificates.

Every handshake case checks three things: whether the handshake finished
(and the client joined the room), the problem the verifier recorded, and
that it recorded the fingerprint of the certificate the server showed, which
is what the user is told so that they can decide to pin it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from service_identity import CertificateError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from securemsg.client.trust import ServerVerifier, TrustError, load_client_certificate
from securemsg.tls import certs
from securemsg.tls import policy as tls

from . import _certs
from ._tls import LineCollector, client_options, tls_pair

# Key generation is most of the cost; share what can be shared.
CA = _certs.make_ca()
SERVER = _certs.issue(CA)
OTHER_CA = _certs.make_ca("some other CA")
SELF_SIGNED, SELF_SIGNED_KEY = certs.generate_self_signed()

NO_SAN = (
    "certificate has no SubjectAltName, so it names no host;"
    " use --pin to trust it anyway"
)
UNKNOWN_ISSUER = "unknown issuer (no trusted certificate issued it; use --ca or --pin)"
PIN_MISMATCH = "pin mismatch: the server's certificate is not the pinned one"


def context_for(certificate: x509.Certificate, key: certs.PrivateKey) -> SSL.Context:
    """The securemsg server's own TLS context, serving C{certificate}."""
    credentials = tls.ServerCredentials([certificate], key, "cert.pem", "key.pem")
    return tls.make_server_context(credentials)


class HandshakeCase(SynchronousTestCase):
    """Runs handshakes between a securemsg server and a L{ServerVerifier}."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def write_pem(self, name: str, *certificates: x509.Certificate) -> str:
        """Write C{certificates} to one PEM file; return its path."""
        path = self.directory / name
        path.write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
        )
        return str(path)

    def handshake(
        self,
        pair: _certs.Pair,
        creator: IOpenSSLClientConnectionCreator,
    ) -> tuple[LineCollector, Any]:
        """
        Connect C{creator} to a server that shows C{pair} and run the
        handshake; return the client protocol and the chat factory.
        """
        client, _, _, chat = tls_pair(context_for(pair.certificate, pair.key), creator)
        return client, chat

    def assertAccepted(
        self, pair: _certs.Pair, verifier: ServerVerifier
    ) -> LineCollector:
        """
        The handshake with C{verifier} succeeds: the client is greeted, no
        problem is recorded, and the server's fingerprint was seen.
        """
        client, chat = self.handshake(pair, verifier)
        self.assertTrue(client.handshake_done, verifier.report.problem)
        self.assertIsNone(client.lost)
        self.assertEqual(len(chat.chat), 1)
        self.assertEqual(
            client.take(),
            ["*** Welcome to securemsg, guest-1. Type /help for commands."],
        )
        self.assertIsNone(verifier.report.problem)
        self.assertEqual(
            verifier.report.fingerprint, certs.fingerprint(pair.certificate)
        )
        return client

    def assertRefused(
        self, pair: _certs.Pair, verifier: ServerVerifier, problem: str
    ) -> None:
        """
        The handshake with C{verifier} fails before anything is exchanged,
        with C{problem} recorded next to the fingerprint of C{pair}.
        """
        client, chat = self.handshake(pair, verifier)
        self.assertFalse(client.handshake_done)
        self.assertIsNotNone(client.lost)
        assert client.lost is not None
        self.assertTrue(client.lost.check(SSL.Error), client.lost)
        self.assertEqual(client.take(), [])
        self.assertEqual(len(chat.chat), 0)
        self.assertEqual(verifier.report.problem, problem)
        self.assertEqual(
            verifier.report.fingerprint, certs.fingerprint(pair.certificate)
        )


class CATrustTests(HandshakeCase):
    """Trust by a CA file and the host name the certificate names."""

    def test_trusted_by_ca_file(self) -> None:
        """
        A certificate issued by the CA in the CA file, for the host asked
        for, is accepted.
        """
        ca_file = self.write_pem("ca.pem", CA.certificate)
        self.assertAccepted(SERVER, ServerVerifier("localhost", ca_path=ca_file))

    def test_self_signed_as_its_own_ca(self) -> None:
        """
        As the tutorial does it: the server's own certificate from
        C{generate_self_signed} (as C{securemsg gencert} writes it) serves
        as the CA file.
        """
        ca_file = self.write_pem("certificate.pem", SELF_SIGNED)
        pair = _certs.Pair(SELF_SIGNED, SELF_SIGNED_KEY)
        self.assertAccepted(pair, ServerVerifier("localhost", ca_path=ca_file))

    def test_one_of_several_roots(self) -> None:
        """A CA file may hold several roots; any of them vouches."""
        ca_file = self.write_pem("cas.pem", OTHER_CA.certificate, CA.certificate)
        self.assertAccepted(SERVER, ServerVerifier("localhost", ca_path=ca_file))

    def test_system_trust(self) -> None:
        """
        Without a CA file, the system's trust store is used, and it does
        not know the test CA.
        """
        self.assertRefused(SERVER, ServerVerifier("localhost"), UNKNOWN_ISSUER)

    def test_unknown_issuer(self) -> None:
        """A certificate from a CA that is not in the CA file is refused."""
        ca_file = self.write_pem("other.pem", OTHER_CA.certificate)
        self.assertRefused(
            SERVER, ServerVerifier("localhost", ca_path=ca_file), UNKNOWN_ISSUER
        )

    def test_untrusted_self_signed(self) -> None:
        """
        A self-signed server certificate that is not in the CA file is
        refused as self-signed, with a hint.
        """
        ca_file = self.write_pem("ca.pem", CA.certificate)
        pair = _certs.Pair(SELF_SIGNED, SELF_SIGNED_KEY)
        self.assertRefused(
            pair,
            ServerVerifier("localhost", ca_path=ca_file),
            "unknown issuer (self-signed certificate not trusted; use --ca or --pin)",
        )

    def test_wrong_hostname(self) -> None:
        """
        A trusted certificate for other names is refused, and the problem
        names the names it is for.
        """
        ca_file = self.write_pem("ca.pem", CA.certificate)
        self.assertRefused(
            SERVER,
            ServerVerifier("chat.example.org", ca_path=ca_file),
            "name mismatch: the certificate is for localhost, 127.0.0.1, ::1,"
            " not chat.example.org",
        )

    def test_ip_address_in_san(self) -> None:
        """
        An IP address is checked against the certificate's IP addresses
        (IPv4 and IPv6), not as a DNS name.
        """
        ca_file = self.write_pem("ca.pem", CA.certificate)
        for address in ("127.0.0.1", "::1"):
            self.assertAccepted(SERVER, ServerVerifier(address, ca_path=ca_file))

    def test_ip_address_not_in_san(self) -> None:
        """An IP address the certificate does not carry is refused."""
        ca_file = self.write_pem("ca.pem", CA.certificate)
        self.assertRefused(
            SERVER,
            ServerVerifier("10.0.0.1", ca_path=ca_file),
            "name mismatch: the certificate is for localhost, 127.0.0.1, ::1,"
            " not 10.0.0.1",
        )

    def test_expired(self) -> None:
        """An expired certificate is refused as expired."""
        ca_file = self.write_pem("ca.pem", CA.certificate)
        expired = _certs.issue(CA, days_valid=(-30, -1))
        self.assertRefused(
            expired,
            ServerVerifier("localhost", ca_path=ca_file),
            "certificate has expired",
        )

    def test_not_yet_valid(self) -> None:
        """A certificate whose validity starts tomorrow is refused."""
        ca_file = self.write_pem("ca.pem", CA.certificate)
        early = _certs.issue(CA, days_valid=(1, 30))
        self.assertRefused(
            early,
            ServerVerifier("localhost", ca_path=ca_file),
            "certificate is not yet valid",
        )


class NoSubjectAltNameTests(HandshakeCase):
    """
    A certificate with only a common name and no SubjectAltName names no
    host.  Twisted's own check logs that and lets the handshake go on, for
    any host name; L{ServerVerifier} refuses it.
    """

    def setUp(self) -> None:
        super().setUp()
        self.cn_only = _certs.issue(CA, [], common_name="localhost")
        self.ca_file = self.write_pem("ca.pem", CA.certificate)

    def test_twisted_alone_accepts_it_for_any_name(self) -> None:
        """
        The hole being closed: Twisted's C{optionsForClientTLS} with the same
        trusted CA completes the handshake with a CN-only certificate for a
        host name it does not even carry.  (Skipped if Twisted has closed
        the hole itself.)
        """
        client, _ = self.handshake(
            self.cn_only, client_options(CA, hostname="chat.example.org")
        )
        self.flushLoggedErrors(CertificateError)
        if not client.handshake_done:
            raise SkipTest("this Twisted refuses a SubjectAltName-less certificate")

    def test_refused_for_its_common_name(self) -> None:
        """Even for the name in its common name, it is refused."""
        self.assertRefused(
            self.cn_only, ServerVerifier("localhost", ca_path=self.ca_file), NO_SAN
        )

    def test_refused_for_another_name(self) -> None:
        """For any other name it is refused the same way."""
        self.assertRefused(
            self.cn_only,
            ServerVerifier("chat.example.org", ca_path=self.ca_file),
            NO_SAN,
        )

    def test_accepted_when_pinned(self) -> None:
        """Pinning it is how to trust it anyway, as the problem says."""
        pin = certs.fingerprint(self.cn_only.certificate)
        self.assertAccepted(self.cn_only, ServerVerifier("localhost", pin=pin))


class PinTests(HandshakeCase):
    """Trust by the SHA-256 fingerprint of the server's certificate."""

    def test_correct_pin(self) -> None:
        """
        The pinned certificate is accepted with no CA at all (it chains to
        nothing trusted) and whatever the host name: the pin replaces both
        checks.
        """
        pin = certs.fingerprint(SERVER.certificate)
        for hostname in ("localhost", "chat.example.org", "10.0.0.1"):
            self.assertAccepted(SERVER, ServerVerifier(hostname, pin=pin))

    def test_pin_forms(self) -> None:
        """
        The pin may be typed in upper case or as colon-separated pairs, as
        other tools print fingerprints.
        """
        digest = certs.fingerprint(SERVER.certificate).removeprefix("sha256:")
        pairs = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
        for pin in (f"SHA256:{digest.upper()}", f"sha256:{pairs}"):
            self.assertAccepted(SERVER, ServerVerifier("localhost", pin=pin))

    def test_self_signed_pinned(self) -> None:
        """A self-signed certificate from gencert is accepted by its pin."""
        pair = _certs.Pair(SELF_SIGNED, SELF_SIGNED_KEY)
        pin = certs.fingerprint(SELF_SIGNED)
        self.assertAccepted(pair, ServerVerifier("localhost", pin=pin))

    def test_wrong_pin(self) -> None:
        """
        Another certificate is refused, even one from a CA the system might
        trust and with the right name.
        """
        pin = certs.fingerprint(SELF_SIGNED)
        self.assertRefused(SERVER, ServerVerifier("localhost", pin=pin), PIN_MISMATCH)

    def test_expired_refused(self) -> None:
        """
        A pin does not make an expired certificate acceptable: it is
        refused as expired, with the date, and how to accept it anyway.
        """
        expired = _certs.issue(CA, days_valid=(-30, -1))
        when = expired.certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
        pin = certs.fingerprint(expired.certificate)
        self.assertRefused(
            expired,
            ServerVerifier("localhost", pin=pin),
            f"certificate has expired (on {when}); a pin accepts an expired"
            " certificate only with --allow-expired",
        )

    def test_expired_allowed(self) -> None:
        """
        With C{allow_expired}, the expired pinned certificate is accepted,
        and the report carries a warning that says so; a certificate that
        has not expired carries none.
        """
        expired = _certs.issue(CA, days_valid=(-30, -1))
        when = expired.certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
        verifier = ServerVerifier(
            "localhost", pin=certs.fingerprint(expired.certificate), allow_expired=True
        )
        self.assertAccepted(expired, verifier)
        self.assertEqual(
            verifier.report.warning,
            f"the server's certificate expired on {when};"
            " accepted because of --allow-expired",
        )
        current = ServerVerifier(
            "localhost", pin=certs.fingerprint(SERVER.certificate), allow_expired=True
        )
        self.assertAccepted(SERVER, current)
        self.assertIsNone(current.report.warning)

    def test_expired_other_certificate(self) -> None:
        """
        C{allow_expired} accepts only the pinned certificate: another one,
        expired or not, is still a pin mismatch.
        """
        expired = _certs.issue(CA, days_valid=(-30, -1))
        verifier = ServerVerifier(
            "localhost", pin=certs.fingerprint(SERVER.certificate), allow_expired=True
        )
        self.assertRefused(expired, verifier, PIN_MISMATCH)

    def test_report_is_per_connection(self) -> None:
        """
        Each connection starts a new report: a refusal is not carried over
        to a later connection that succeeds.
        """
        verifier = ServerVerifier(
            "localhost", pin=certs.fingerprint(SERVER.certificate)
        )
        other = _certs.issue(CA)
        self.assertRefused(other, verifier, PIN_MISMATCH)
        self.assertAccepted(SERVER, verifier)


class FailClosedTests(HandshakeCase):
    """
    The verify callback fails closed: whatever goes wrong inside it refuses
    the certificate (an exception escaping an OpenSSL callback would be
    lost, and whatever it returned would decide).
    """

    def raising(self, *args: object) -> bool:
        raise RuntimeError("the check broke")

    def test_chain_check_raises(self) -> None:
        """A certificate the CA check would accept is refused if it raises."""
        verifier = ServerVerifier(
            "localhost", ca_path=self.write_pem("ca.pem", CA.certificate)
        )
        self.patch(verifier, "_check_chain", self.raising)
        self.assertRefused(
            SERVER, verifier, "certificate check failed: the check broke"
        )

    def test_pin_check_raises(self) -> None:
        """The right pin does not help if its check raises."""
        verifier = ServerVerifier(
            "localhost", pin=certs.fingerprint(SERVER.certificate)
        )
        self.patch(verifier, "_check_pin", self.raising)
        self.assertRefused(
            SERVER, verifier, "certificate check failed: the check broke"
        )


class SettingsTests(SynchronousTestCase):
    """Unusable trust settings fail at once, in one line."""

    def assertOneLine(self, error: Exception) -> str:
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertNotIn("Traceback", message)
        return message

    def test_bad_pin(self) -> None:
        """A pin that is not a SHA-256 fingerprint is refused, saying so."""
        for pin in ("", "sha256:abc", "md5:" + "00" * 16, "sha256:" + "zz" * 32):
            error = self.assertRaises(TrustError, ServerVerifier, "localhost", pin=pin)
            message = self.assertOneLine(error)
            self.assertTrue(message.startswith("--pin: invalid fingerprint"), message)

    def test_allow_expired_without_pin(self) -> None:
        """C{allow_expired} is about pins; without one it is refused."""
        with self.assertRaises(TrustError) as caught:
            ServerVerifier("localhost", allow_expired=True)
        self.assertEqual(str(caught.exception), "--allow-expired needs --pin")

    def test_missing_ca_file(self) -> None:
        """A CA file that does not exist is named, with the reason."""
        path = self.mktemp()
        error = self.assertRaises(TrustError, ServerVerifier, "localhost", ca_path=path)
        self.assertEqual(
            self.assertOneLine(error),
            f"cannot read CA file {path}: No such file or directory",
        )

    def test_unreadable_ca_file(self) -> None:
        """A CA path that cannot be read (here, a folder) is refused."""
        path = self.mktemp()
        Path(path).mkdir()
        error = self.assertRaises(TrustError, ServerVerifier, "localhost", ca_path=path)
        self.assertEqual(
            self.assertOneLine(error), f"cannot read CA file {path}: Is a directory"
        )

    def test_ca_file_without_certificate(self) -> None:
        """A CA file with no PEM certificate in it is refused."""
        path = Path(self.mktemp())
        path.write_bytes(b"not a certificate\n")
        error = self.assertRaises(
            TrustError, ServerVerifier, "localhost", ca_path=str(path)
        )
        self.assertEqual(self.assertOneLine(error), f"{path} holds no PEM certificate")


class ClientCertificateTests(HandshakeCase):
    """
    L{load_client_certificate} loads a certificate and key to present to
    servers that ask for one.
    """

    def setUp(self) -> None:
        super().setUp()
        self.client_pair = _certs.issue(CA, ["alice"], client=True)

    def presented(self, verifier: ServerVerifier) -> x509.Certificate | None:
        """
        Run a handshake with a server that asks for a client certificate;
        return the one the client presented.
        """
        context = context_for(SERVER.certificate, SERVER.key)
        context.set_verify(SSL.VERIFY_PEER, lambda *args: True)
        client, server_tls, _, _ = tls_pair(context, verifier)
        self.assertTrue(client.handshake_done, verifier.report.problem)
        peer: crypto.X509 | None = server_tls.getHandle().get_peer_certificate()
        return peer.to_cryptography() if peer is not None else None

    def test_cert_and_key(self) -> None:
        """
        A certificate and its key in two files load, and are presented in
        both trust modes.
        """
        cert_path, key_path = self.client_pair.write(self.directory, "client")
        loaded = load_client_certificate(cert_path, key_path)
        self.assertEqual(
            loaded.original.to_cryptography(), self.client_pair.certificate
        )
        ca_file = self.write_pem("ca.pem", CA.certificate)
        pin = certs.fingerprint(SERVER.certificate)
        for verifier in (
            ServerVerifier("localhost", ca_path=ca_file, client_certificate=loaded),
            ServerVerifier("localhost", pin=pin, client_certificate=loaded),
        ):
            self.assertEqual(self.presented(verifier), self.client_pair.certificate)

    def test_none_presented_without_one(self) -> None:
        """Without a client certificate, none is presented."""
        ca_file = self.write_pem("ca.pem", CA.certificate)
        self.assertIsNone(self.presented(ServerVerifier("localhost", ca_path=ca_file)))

    def test_encrypted_key(self) -> None:
        """
        An encrypted key is decrypted with the passphrase from its source
        (here, the first line of a file).
        """
        cert_path, key_path = self.client_pair.write(
            self.directory, "client", passphrase=b"s3cret"
        )
        passphrase_file = self.directory / "passphrase"
        passphrase_file.write_text("s3cret\n")
        loaded = load_client_certificate(
            cert_path, key_path, tls.PassphraseSource(str(passphrase_file))
        )
        self.assertEqual(
            loaded.original.to_cryptography(), self.client_pair.certificate
        )
        self.assertTrue(
            certs.key_matches_certificate(
                loaded.privateKey.original.to_cryptography_key(),
                self.client_pair.certificate,
            )
        )

    def test_encrypted_key_problems(self) -> None:
        """
        An encrypted key without a passphrase, or with the wrong one, is a
        one-line L{TrustError}.
        """
        cert_path, key_path = self.client_pair.write(
            self.directory, "client", passphrase=b"s3cret"
        )
        error = self.assertRaises(
            TrustError,
            load_client_certificate,
            cert_path,
            key_path,
            tls.PassphraseSource(),
        )
        self.assertIn(f"private key {key_path} is encrypted", str(error))
        error = self.assertRaises(
            TrustError,
            load_client_certificate,
            cert_path,
            key_path,
            tls.PassphraseSource(environ={tls.PASSPHRASE_ENVIRONMENT_VARIABLE: "no"}),
        )
        self.assertIn(f"passphrase for private key {key_path}", str(error))
        self.assertNotIn("\n", str(error))

    def test_key_of_another_certificate(self) -> None:
        """A key that does not belong to the certificate is refused."""
        cert_path, _ = self.client_pair.write(self.directory, "client")
        _, other_key = SERVER.write(self.directory, "other")
        error = self.assertRaises(
            TrustError, load_client_certificate, cert_path, other_key
        )
        self.assertEqual(
            str(error),
            f"private key {other_key} does not match certificate {cert_path}",
        )
