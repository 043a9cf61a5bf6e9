"""
Tests for L{securemsg.tls.certs}.

Every certificate is made at run time.  Whether a generated certificate is
acceptable as its own trust anchor is checked with both verifiers the brief
names: C{cryptography.x509.verification} and Python's C{ssl}, the latter in
a real TLS handshake between two C{ssl.SSLObject}s joined by memory BIOs
(no sockets, no threads, so it is fast and cannot hang).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.trial.unittest import SynchronousTestCase

from securemsg.tls import certs

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# Key generation dominates the run time: make one key of each kind per
# module and reuse it where a test does not need a fresh one.
_EC_PAIR = certs.generate_self_signed()
_RSA_PAIR = certs.generate_self_signed(rsa_bits=2048)


def _pem(cert: x509.Certificate) -> bytes:
    """C{cert} as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: certs.PrivateKey) -> bytes:
    """C{key} as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _build_certificate(
    not_before: datetime,
    not_after: datetime,
    *,
    san: bool = True,
    cn: str | None = "legacy.example",
) -> x509.Certificate:
    """
    A self-signed certificate built directly with C{cryptography}, for the
    shapes L{certs.generate_self_signed} never makes (expired, SAN-less...).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [] if cn is None else [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    name = x509.Name(attributes)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("legacy.example")]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256())


def _verify_with_cryptography(
    cert: x509.Certificate, name: x509.DNSName | x509.IPAddress
) -> None:
    """
    Verify C{cert} for C{name} with C{cryptography}'s strict verifier,
    trusting C{cert} itself.

    @raise verification.VerificationError: If it is not acceptable.
    """
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([cert]))
        .build_server_verifier(name)
    )
    verifier.verify(cert, [])


def _ssl_handshake(
    directory: Path,
    cert: x509.Certificate,
    key: certs.PrivateKey,
    server_hostname: str,
) -> None:
    """
    Run a real TLS handshake with Python's C{ssl}: the server presents
    C{cert}; the client trusts only C{cert}, loaded with
    C{load_verify_locations}, and checks C{server_hostname}.

    @raise ssl.SSLError: If the handshake fails, for example because the
        client rejects the certificate.
    """
    cert_path = directory / "handshake-cert.pem"
    key_path = directory / "handshake-key.pem"
    cert_path.write_bytes(_pem(cert))
    key_path.write_bytes(_key_pem(key))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_path, key_path)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(cert_path)

    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(
        client_in, client_out, server_hostname=server_hostname
    )
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, tls in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    tls.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                else:
                    done[side] = True
            server_in.write(client_out.read())
            client_in.write(server_out.read())
        if all(done.values()):
            return
    raise AssertionError("TLS handshake did not finish")  # pragma: no cover


class GenerateSelfSignedTests(SynchronousTestCase):
    """Tests for L{certs.generate_self_signed}."""

    def test_ecdsa_by_default(self) -> None:
        """
        Without C{rsa_bits} the key is ECDSA on P-256 and the certificate is
        signed with ECDSA over SHA-256.
        """
        cert, key = _EC_PAIR
        self.assertIsInstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.assertIsInstance(key.curve, ec.SECP256R1)
        self.assertIsInstance(cert.signature_hash_algorithm, hashes.SHA256)
        self.assertTrue(certs.key_matches_certificate(key, cert))

    def test_rsa(self) -> None:
        """
        With C{rsa_bits} the key is RSA of that size, the signature is
        SHA-256, and key usage allows key encipherment as well.
        """
        cert, key = _RSA_PAIR
        self.assertIsInstance(key, rsa.RSAPrivateKey)
        self.assertEqual(key.key_size, 2048)
        self.assertIsInstance(cert.signature_hash_algorithm, hashes.SHA256)
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(usage.key_encipherment)
        self.assertTrue(certs.key_matches_certificate(key, cert))

    def test_bad_rsa_bits(self) -> None:
        """
        RSA sizes other than 2048, 3072 and 4096 raise L{ValueError} naming
        the allowed sizes.
        """
        for bits in (0, 1024, 2047, 8192, -2048, True):
            with self.assertRaises(ValueError) as raised:
                certs.generate_self_signed(rsa_bits=bits)
            self.assertIn("2048, 3072, 4096", str(raised.exception))

    def test_bad_days(self) -> None:
        """A lifetime of less than one day, or an absurd one, is refused."""
        for days in (0, -1, 10**9):
            self.assertRaises(ValueError, certs.generate_self_signed, days=days)

    def test_validity_window(self) -> None:
        """
        The certificate is valid from five minutes before C{now} (allowing
        for clock skew) until C{days} after it; the serial is random.
        """
        cert, _ = certs.generate_self_signed(days=30, now=NOW)
        self.assertEqual(cert.not_valid_before_utc, NOW - timedelta(minutes=5))
        self.assertEqual(cert.not_valid_after_utc, NOW + timedelta(days=30))
        other, _ = certs.generate_self_signed(days=30, now=NOW)
        self.assertNotEqual(cert.serial_number, other.serial_number)
        self.assertGreater(cert.serial_number, 0)

    def test_naive_now_is_utc(self) -> None:
        """A naive C{now} is taken to be UTC."""
        cert, _ = certs.generate_self_signed(days=1, now=NOW.replace(tzinfo=None))
        self.assertEqual(cert.not_valid_after_utc, NOW + timedelta(days=1))

    def test_default_names(self) -> None:
        """
        Without extra hosts the certificate is for C{localhost},
        C{127.0.0.1} and C{::1}, and its common name is C{localhost}.
        """
        cert, _ = _EC_PAIR
        self.assertEqual(
            certs.subject_alt_names(cert), ["localhost", "127.0.0.1", "::1"]
        )
        self.assertEqual(certs.common_name(cert), "localhost")
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(san.value.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual(
            san.value.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
        )

    def test_extra_hosts(self) -> None:
        """
        Extra hosts come first, in order: IP addresses (IPv6 also in
        brackets) as IP entries, everything else as canonical DNS names;
        duplicates, including of the default names, are dropped; the first
        extra host is the common name.
        """
        cert, _ = certs.generate_self_signed(
            [
                "Chat.Example.ORG.",
                "192.0.2.7",
                "[2001:db8::1]",
                "chat.example.org",
                "LOCALHOST",
                "127.0.0.1",
                "*.example.net",
                "bücher.example",
            ]
        )
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(
            san.get_values_for_type(x509.DNSName),
            ["chat.example.org", "localhost", "*.example.net", "xn--bcher-kva.example"],
        )
        self.assertEqual(
            san.get_values_for_type(x509.IPAddress),
            [
                ipaddress.ip_address("192.0.2.7"),
                ipaddress.ip_address("2001:db8::1"),
                ipaddress.ip_address("127.0.0.1"),
                ipaddress.ip_address("::1"),
            ],
        )
        self.assertEqual(certs.common_name(cert), "chat.example.org")

    def test_ip_common_name(self) -> None:
        """When the first extra host is an IP address, so is the common name."""
        cert, _ = certs.generate_self_signed(["192.0.2.7"])
        self.assertEqual(certs.common_name(cert), "192.0.2.7")

    def test_bad_hosts(self) -> None:
        """
        Strings that are neither an IP address nor a valid DNS name raise
        L{ValueError} with a one-line message quoting the input.
        """
        bad = [
            "",
            "foo bar",
            "-lead.example",
            "trail-.example",
            "a..b",
            "under_score.example",
            "x" * 64 + ".example",
            ".".join(["a" * 60] * 5),
            "1.2.3",
            "256.1.1.1",
            "*.com",
            "a.*.example",
            "fe80::1%eth0",
            "http://example.org/",
            "\N{SNOWMAN}.example",
        ]
        for host in bad:
            with self.assertRaises(ValueError, msg=host) as raised:
                certs.generate_self_signed([host])
            message = str(raised.exception)
            self.assertNotIn("\n", message)
            self.assertIn(repr(host)[:20], message)

    def test_long_first_host(self) -> None:
        """
        A first host too long for the 64-character common name limit still
        goes into the subjectAltName; the common name falls back to
        C{localhost}.
        """
        host = "a" * 60 + ".example.org"
        cert, _ = certs.generate_self_signed([host])
        self.assertEqual(certs.common_name(cert), "localhost")
        self.assertEqual(certs.subject_alt_names(cert)[0], host)

    def test_hosts_must_be_a_sequence(self) -> None:
        """
        A single string is refused rather than read as one host per
        character.
        """
        self.assertRaises(TypeError, certs.generate_self_signed, "example.org")

    def test_extensions(self) -> None:
        """
        The certificate is an end-entity certificate with a subject key
        identifier and a matching authority key identifier; key usage is
        digital signature only (for ECDSA) and extended key usage is
        serverAuth.
        """
        cert, _ = _EC_PAIR
        extensions = cert.extensions
        ski = extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        self.assertEqual(aki.value.key_identifier, ski.value.digest)
        self.assertEqual(
            ski.value.digest,
            x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest,
        )
        constraints = extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(constraints.critical)
        self.assertFalse(constraints.value.ca)
        usage = extensions.get_extension_for_class(x509.KeyUsage)
        self.assertTrue(usage.critical)
        self.assertTrue(usage.value.digital_signature)
        self.assertFalse(usage.value.key_cert_sign)
        self.assertFalse(usage.value.key_encipherment)
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.SERVER_AUTH])
        self.assertEqual(cert.issuer, cert.subject)

    def test_cryptography_verifier_accepts(self) -> None:
        """
        C{cryptography.x509.verification}, trusting only the certificate,
        accepts it for C{localhost} and for each extra name, ECDSA and RSA.
        """
        _verify_with_cryptography(_EC_PAIR[0], x509.DNSName("localhost"))
        _verify_with_cryptography(_RSA_PAIR[0], x509.DNSName("localhost"))
        cert, _ = certs.generate_self_signed(["chat.example.org", "192.0.2.7"])
        _verify_with_cryptography(cert, x509.DNSName("chat.example.org"))
        _verify_with_cryptography(
            cert, x509.IPAddress(ipaddress.ip_address("192.0.2.7"))
        )
        _verify_with_cryptography(
            cert, x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        )

    def test_cryptography_verifier_checks_the_name(self) -> None:
        """
        The verifier used above really checks names: it rejects the
        certificate for a name it does not hold.
        """
        self.assertRaises(
            verification.VerificationError,
            _verify_with_cryptography,
            _EC_PAIR[0],
            x509.DNSName("other.example"),
        )

    def test_python_ssl_accepts(self) -> None:
        """
        Python's C{ssl}, trusting the certificate file through
        C{load_verify_locations} and checking C{server_hostname='localhost'},
        completes a handshake with a server using it, ECDSA and RSA.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        for cert, key in (_EC_PAIR, _RSA_PAIR):
            _ssl_handshake(directory, cert, key, "localhost")

    def test_python_ssl_checks_the_name(self) -> None:
        """
        The handshake above really verifies: the client refuses the same
        certificate for a host name it does not hold.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        cert, key = _EC_PAIR
        with self.assertRaises(ssl.SSLCertVerificationError):
            _ssl_handshake(directory, cert, key, "other.example")


class FingerprintTests(SynchronousTestCase):
    """Tests for L{certs.fingerprint} and L{certs.parse_fingerprint}."""

    def test_format(self) -> None:
        """
        The fingerprint is C{sha256:} and 64 lower-case hex digits of the
        SHA-256 of the DER certificate.
        """
        cert, _ = _EC_PAIR
        text = certs.fingerprint(cert)
        self.assertTrue(re.fullmatch(r"sha256:[0-9a-f]{64}", text), text)
        der = cert.public_bytes(serialization.Encoding.DER)
        self.assertEqual(text, "sha256:" + hashlib.sha256(der).hexdigest())

    def test_round_trip(self) -> None:
        """L{certs.parse_fingerprint} turns a fingerprint back into the digest."""
        cert, _ = _EC_PAIR
        digest = cert.fingerprint(hashes.SHA256())
        self.assertEqual(certs.parse_fingerprint(certs.fingerprint(cert)), digest)

    def test_parse_variants(self) -> None:
        """
        Any case, colon-separated pairs and surrounding white space are
        accepted.
        """
        digest = bytes(range(32))
        plain = digest.hex()
        paired = ":".join(f"{b:02X}" for b in digest)
        for text in (
            "sha256:" + plain,
            "SHA256:" + plain.upper(),
            "sha256:" + paired,
            "Sha256:" + paired.lower(),
            "  sha256:" + plain + "\n",
        ):
            self.assertEqual(certs.parse_fingerprint(text), digest, text)

    def test_parse_bad(self) -> None:
        """
        Missing or wrong prefixes, wrong lengths, non-hex digits and ragged
        colon groups raise L{ValueError} with a one-line message.
        """
        plain = "ab" * 32
        for text in (
            "",
            plain,
            "sha1:" + "ab" * 20,
            "sha256:",
            "sha256:" + plain[:-2],
            "sha256:" + plain + "ab",
            "sha256:" + plain[:-1] + "g",
            "sha256:" + "a:bc" + plain[4:],
            "sha256:" + ":".join(["ab"] * 31) + ":",
            "sha256:" + " ".join(["ab"] * 32),
            "sha256:" + "ab-" * 31 + "ab",
        ):
            with self.assertRaises(ValueError, msg=text) as raised:
                certs.parse_fingerprint(text)
            message = str(raised.exception)
            self.assertNotIn("\n", message)
            self.assertIn("sha256:", message)


class LoadCertificatesTests(SynchronousTestCase):
    """Tests for L{certs.load_certificates} and L{certs.pem_has_private_key}."""

    def _write(self, data: bytes) -> Path:
        """Write C{data} to a new temporary file and return its path."""
        path = Path(self.mktemp())
        path.write_bytes(data)
        return path

    def test_chain_in_order(self) -> None:
        """All certificates are returned, in file order."""
        leaf, _ = _EC_PAIR
        other, _ = _RSA_PAIR
        path = self._write(_pem(leaf) + _pem(other))
        self.assertEqual(certs.load_certificates(path), [leaf, other])
        self.assertEqual(certs.load_certificates(str(path)), [leaf, other])

    def test_key_and_certificate(self) -> None:
        """A combined key-and-certificate file yields just the certificate."""
        cert, key = _EC_PAIR
        path = self._write(_key_pem(key) + _pem(cert))
        self.assertEqual(certs.load_certificates(path), [cert])

    def test_no_certificate(self) -> None:
        """
        A file without a PEM certificate raises L{ValueError} naming the
        file.
        """
        for data in (b"", _key_pem(_EC_PAIR[1]), b"\x30\x82\x01\x00"):
            path = self._write(data)
            with self.assertRaises(ValueError) as raised:
                certs.load_certificates(path)
            self.assertIn(str(path), str(raised.exception))
            self.assertIn("no PEM certificate", str(raised.exception))

    def test_corrupt_certificate(self) -> None:
        """A damaged certificate block raises a one-line L{ValueError}."""
        path = self._write(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        with self.assertRaises(ValueError) as raised:
            certs.load_certificates(path)
        self.assertIn("cannot parse certificate", str(raised.exception))
        self.assertNotIn("\n", str(raised.exception))

    def test_missing_file(self) -> None:
        """A missing file raises L{OSError}."""
        self.assertRaises(OSError, certs.load_certificates, self.mktemp())

    def test_pem_has_private_key(self) -> None:
        """
        Private keys are found in plain, encrypted and traditional PEM forms,
        and not in a certificate.
        """
        cert, key = _EC_PAIR
        self.assertTrue(certs.pem_has_private_key(_pem(cert) + _key_pem(key)))
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
        self.assertTrue(certs.pem_has_private_key(encrypted))
        traditional = _RSA_PAIR[1].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        self.assertIn(b"BEGIN RSA PRIVATE KEY", traditional)
        self.assertTrue(certs.pem_has_private_key(traditional))
        self.assertFalse(certs.pem_has_private_key(_pem(cert)))
        self.assertFalse(certs.pem_has_private_key(b""))


class DescriptionTests(SynchronousTestCase):
    """
    Tests for L{certs.subject_alt_names}, L{certs.common_name} and
    L{certs.describe_certificate}.
    """

    def test_no_san_no_cn(self) -> None:
        """
        A certificate without subjectAltName or common name gives an empty
        name list and L{None}.
        """
        cert = _build_certificate(NOW, NOW + timedelta(days=1), san=False, cn=None)
        self.assertEqual(certs.subject_alt_names(cert), [])
        self.assertIsNone(certs.common_name(cert))

    def test_other_name_types_ignored(self) -> None:
        """
        Only DNS names and IP addresses are listed, not e-mail addresses or
        URIs.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(NOW)
            .not_valid_after(NOW + timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.RFC822Name("ops@example.org"),
                        x509.DNSName("chat.example.org"),
                        x509.UniformResourceIdentifier("https://example.org/"),
                        x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
                    ]
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        self.assertEqual(
            certs.subject_alt_names(cert), ["chat.example.org", "192.0.2.7"]
        )

    def test_describe(self) -> None:
        """
        The description is one line with the subject, names, expiry and
        fingerprint.
        """
        cert, _ = certs.generate_self_signed(["chat.example.org"], now=NOW, days=10)
        line = certs.describe_certificate(cert)
        self.assertNotIn("\n", line)
        self.assertIn("CN=chat.example.org", line)
        self.assertIn("; valid for chat.example.org, localhost, 127.0.0.1, ::1;", line)
        self.assertIn("2026-03-11", line)
        self.assertIn(certs.fingerprint(cert), line)

    def test_describe_without_names(self) -> None:
        """
        A certificate without a subjectAltName is described as having none,
        not as valid for a list that is not there.
        """
        cert = _build_certificate(NOW, NOW + timedelta(days=1), san=False)
        line = certs.describe_certificate(cert)
        self.assertIn("; no subjectAltName; expires ", line)
        self.assertNotIn("valid for", line)


class KeyTests(SynchronousTestCase):
    """
    Tests for L{certs.key_matches_certificate}, L{certs.write_private_key},
    L{certs.write_certificate} and L{certs.key_file_warnings}.
    """

    def setUp(self) -> None:
        """Give each test an empty directory."""
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def _mode(self, path: Path) -> int:
        """The permission bits of C{path}."""
        return stat.S_IMODE(os.stat(path).st_mode)

    def test_key_matches(self) -> None:
        """Only the certificate's own key matches it."""
        cert, key = _EC_PAIR
        self.assertTrue(certs.key_matches_certificate(key, cert))
        self.assertFalse(certs.key_matches_certificate(_RSA_PAIR[1], cert))
        other = ec.generate_private_key(ec.SECP256R1())
        self.assertFalse(certs.key_matches_certificate(other, cert))

    def test_new_key_file_mode(self) -> None:
        """
        A new key file is created with mode 0600 even when the umask would
        allow more, and holds the key in unencrypted PKCS#8 PEM.
        """
        old_umask = os.umask(0)
        self.addCleanup(os.umask, old_umask)
        path = self.directory / "private.key"
        cert, key = _EC_PAIR
        certs.write_private_key(path, key, None, force=False)
        self.assertEqual(self._mode(path), 0o600)
        data = path.read_bytes()
        self.assertTrue(data.startswith(b"-----BEGIN PRIVATE KEY-----"))
        loaded = serialization.load_pem_private_key(data, password=None)
        self.assertTrue(certs.key_matches_certificate(loaded, cert))

    def test_existing_file_refused(self) -> None:
        """
        Without C{force} an existing key or certificate file raises
        L{FileExistsError} and is left as it was.
        """
        cert, key = _EC_PAIR
        for name in ("private.key", "certificate.pem"):
            path = self.directory / name
            path.write_bytes(b"precious")
            with self.assertRaises(FileExistsError):
                if name == "private.key":
                    certs.write_private_key(path, key, None, force=False)
                else:
                    certs.write_certificate(path, cert, force=False)
            self.assertEqual(path.read_bytes(), b"precious")

    def test_dangling_symlink_refused(self) -> None:
        """
        Without C{force} even a dangling symbolic link is not followed: the
        key is not written to wherever it points.
        """
        target = self.directory / "elsewhere"
        path = self.directory / "private.key"
        path.symlink_to(target)
        self.assertRaises(
            FileExistsError,
            certs.write_private_key,
            path,
            _EC_PAIR[1],
            None,
            force=False,
        )
        self.assertFalse(target.exists())

    def test_force_replaces_with_mode_0600(self) -> None:
        """
        With C{force} an existing, world-readable key file is replaced by a
        0600 file with the new key, and no temporary file is left behind.
        """
        path = self.directory / "private.key"
        path.write_bytes(b"old")
        os.chmod(path, 0o644)
        cert, key = _EC_PAIR
        certs.write_private_key(path, key, None, force=True)
        self.assertEqual(self._mode(path), 0o600)
        loaded = serialization.load_pem_private_key(path.read_bytes(), None)
        self.assertTrue(certs.key_matches_certificate(loaded, cert))
        self.assertEqual(os.listdir(self.directory), ["private.key"])

    def test_force_creates(self) -> None:
        """With C{force} a missing file is simply created."""
        path = self.directory / "certificate.pem"
        cert, _ = _EC_PAIR
        certs.write_certificate(path, cert, force=True)
        self.assertEqual(certs.load_certificates(path), [cert])
        self.assertEqual(os.listdir(self.directory), ["certificate.pem"])

    def test_certificate_round_trip(self) -> None:
        """A written certificate loads back unchanged."""
        path = self.directory / "certificate.pem"
        cert, _ = _RSA_PAIR
        certs.write_certificate(str(path), cert, force=False)
        self.assertEqual(certs.load_certificates(path), [cert])

    def test_encrypted_key(self) -> None:
        """
        With a passphrase the key is written encrypted and loads only with
        that passphrase.
        """
        path = self.directory / "private.key"
        cert, key = _EC_PAIR
        certs.write_private_key(path, key, b"correct horse", force=False)
        data = path.read_bytes()
        self.assertTrue(data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"))
        self.assertEqual(self._mode(path), 0o600)
        self.assertRaises(TypeError, serialization.load_pem_private_key, data, None)
        self.assertRaises(
            ValueError, serialization.load_pem_private_key, data, b"wrong"
        )
        loaded = serialization.load_pem_private_key(data, b"correct horse")
        self.assertTrue(certs.key_matches_certificate(loaded, cert))

    def test_empty_passphrase(self) -> None:
        """An empty passphrase is refused and nothing is written."""
        path = self.directory / "private.key"
        self.assertRaises(
            ValueError, certs.write_private_key, path, _EC_PAIR[1], b"", force=False
        )
        self.assertFalse(path.exists())

    def test_key_file_warnings(self) -> None:
        """
        A key file others or the group may read or write gets a warning
        that suggests C{chmod 600}; a 0600 file gets none.
        """
        path = self.directory / "private.key"
        certs.write_private_key(path, _EC_PAIR[1], None, force=False)
        self.assertEqual(certs.key_file_warnings(path), [])
        for mode in (0o640, 0o604, 0o620, 0o644):
            os.chmod(path, mode)
            warnings = certs.key_file_warnings(path)
            self.assertEqual(len(warnings), 1, oct(mode))
            self.assertIn(f"chmod 600 {path}", warnings[0])
            self.assertIn(f"{mode:04o}", warnings[0])

    def test_failed_new_write_leaves_nothing(self) -> None:
        """
        If writing a new file fails half-way, the partial file is removed
        and the error propagates.
        """

        def broken_fsync(fd: int) -> None:
            raise OSError(28, "No space left on device")

        self.patch(os, "fsync", broken_fsync)
        path = self.directory / "private.key"
        self.assertRaises(
            OSError, certs.write_private_key, path, _EC_PAIR[1], None, force=False
        )
        self.assertEqual(os.listdir(self.directory), [])

    def test_failed_replace_keeps_old_file(self) -> None:
        """
        If the final rename of a forced write fails, the old file is left
        as it was and the temporary file is removed.
        """

        def broken_replace(source: str, destination: str) -> None:
            raise OSError(13, "Permission denied")

        path = self.directory / "certificate.pem"
        path.write_bytes(b"old")
        self.patch(os, "replace", broken_replace)
        self.assertRaises(
            OSError, certs.write_certificate, path, _EC_PAIR[0], force=True
        )
        self.assertEqual(path.read_bytes(), b"old")
        self.assertEqual(os.listdir(self.directory), ["certificate.pem"])
