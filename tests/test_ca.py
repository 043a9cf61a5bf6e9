"""
Tests for L{securemsg.admin.ca} and C{securemsg ca}.

Every CA is made at run time in a fresh temporary directory.  Certificates
are checked three ways: their extensions one by one; with
C{cryptography.x509.verification}'s client verifier; and in real TLS
handshakes in memory, where a Twisted server that requires a client
certificate from the CA (OpenSSL doing the checking) accepts an issued
certificate, refuses one from another CA, and, with the CRL loaded, refuses
a revoked one.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from securemsg.admin import ca
from securemsg.tls import certs

from . import _certs
from ._cli import Result
from ._cli import mode as _mode
from ._cli import run as _run

PASSPHRASE = b"correct horse battery staple"

#: OpenSSL's verify result for a certificate listed in a CRL (x509_vfy.h).
X509_V_ERR_CERT_REVOKED = 23


def _load_pem(path: str | Path) -> x509.Certificate:
    """The first certificate in the PEM file at C{path}."""
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def _extension(cert: x509.Certificate, kind: type[Any]) -> x509.Extension[Any]:
    """C{cert}'s extension of class C{kind}."""
    return cert.extensions.get_extension_for_class(kind)


def _extension_crl(crl: x509.CertificateRevocationList, kind: type[Any]) -> Any:
    """The value of C{crl}'s extension of class C{kind}."""
    return crl.extensions.get_extension_for_class(kind).value


def _index(directory: str) -> dict[str, Any]:
    """The parsed C{index.json} of the CA in C{directory}."""
    result: dict[str, Any] = json.loads(
        Path(directory, "index.json").read_text("utf-8")
    )
    return result


def _snapshot(directory: str) -> dict[str, bytes]:
    """Every regular file under C{directory} (but the lock) and its bytes."""
    files = {}
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and path.name != ".lock":
            files[str(path.relative_to(directory))] = path.read_bytes()
    return files


def _certificate_with_san(*names: x509.GeneralName) -> x509.Certificate:
    """A throwaway self-signed certificate with these subjectAltNames."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(names)), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def shown(serial: int) -> str:
    """
    A serial number as C{securemsg ca} shows it: lower-case hex in whole
    bytes, without leading zero bytes (as openssl shows it), so not always
    40 digits: one serial in 256 starts with a zero byte.
    """
    text = f"{serial:x}"
    return text if len(text) % 2 == 0 else "0" + text


class _CATestCase(SynchronousTestCase):
    """A fresh, not yet existing CA directory per test."""

    def setUp(self) -> None:
        """Name a CA directory inside this test's temporary directory."""
        self.base = Path(self.mktemp())
        self.base.mkdir()
        self.directory = str(self.base / "ca")

    def init(self, **kwargs: Any) -> x509.Certificate:
        """Make the CA and return its certificate."""
        ca.init_ca(self.directory, **kwargs)
        return ca.load_ca_certificate(self.directory)


class IdentityTests(SynchronousTestCase):
    """Tests for L{ca.identity_from_certificate}."""

    def test_uri(self) -> None:
        """The name comes from the C{securemsg:user:} URI."""
        cert = _certificate_with_san(
            x509.UniformResourceIdentifier("securemsg:user:Bo-b")
        )
        self.assertEqual(ca.identity_from_certificate(cert), "Bo-b")

    def test_none(self) -> None:
        """
        No name without a subjectAltName, from DNS names or other URIs, from
        the common name, from a name securemsg would refuse, or when two
        URIs name different people.
        """
        uri = x509.UniformResourceIdentifier
        cases = [
            _certificate_with_san(),
            _certificate_with_san(x509.DNSName("alice")),
            _certificate_with_san(uri("https://example.org/alice")),
            _certificate_with_san(uri("securemsg:user:")),
            _certificate_with_san(uri("securemsg:user:not a name")),
            _certificate_with_san(uri("securemsg:user:../etc")),
            _certificate_with_san(uri("SECUREMSG:USER:alice")),
            _certificate_with_san(
                uri("securemsg:user:alice"), uri("securemsg:user:bob")
            ),
            _certs.default_ca_and_server()[1].certificate,
        ]
        for cert in cases:
            self.assertIsNone(ca.identity_from_certificate(cert), cert.extensions)

    def test_same_name_twice(self) -> None:
        """The same URI twice still names one person."""
        uri = x509.UniformResourceIdentifier("securemsg:user:alice")
        cert = _certificate_with_san(uri, x509.DNSName("example.org"), uri)
        self.assertEqual(ca.identity_from_certificate(cert), "alice")


class InitTests(_CATestCase):
    """Tests for L{ca.init_ca}."""

    def test_files_and_modes(self) -> None:
        """
        init makes the directory and C{issued/} (0700), C{ca.key} (0600),
        C{ca.pem}, C{crl.pem} and an empty C{index.json}; nothing else.
        """
        self.init()
        names = sorted(os.listdir(self.directory))
        self.assertEqual(
            names, [".lock", "ca.key", "ca.pem", "crl.pem", "index.json", "issued"]
        )
        self.assertEqual(_mode(self.directory), 0o700)
        self.assertEqual(_mode(os.path.join(self.directory, "issued")), 0o700)
        self.assertEqual(_mode(os.path.join(self.directory, "ca.key")), 0o600)
        self.assertFalse(_mode(os.path.join(self.directory, "ca.pem")) & 0o022)
        self.assertEqual(os.listdir(os.path.join(self.directory, "issued")), [])
        index = _index(self.directory)
        self.assertEqual(index["certificates"], [])
        self.assertEqual(index["crl_days"], ca.DEFAULT_CRL_DAYS)
        self.assertFalse(ca.ca_key_is_encrypted(self.directory))

    def test_ca_certificate(self) -> None:
        """
        The CA certificate is ECDSA P-256 and self-signed, CN "securemsg CA"
        for 10 years, with critical BasicConstraints CA:TRUE pathlen 0,
        critical KeyUsage keyCertSign and cRLSign only, and matching subject
        and authority key identifiers; its key matches it.
        """
        before = datetime.now(UTC)
        cert = self.init()
        key = serialization.load_pem_private_key(
            Path(self.directory, "ca.key").read_bytes(), None
        )
        self.assertIsInstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.assertIsInstance(key.curve, ec.SECP256R1)
        self.assertTrue(certs.key_matches_certificate(key, cert))
        cert.verify_directly_issued_by(cert)
        self.assertEqual(certs.common_name(cert), "securemsg CA")
        self.assertEqual(cert.issuer, cert.subject)
        lifetime = cert.not_valid_after_utc - before
        self.assertTrue(timedelta(days=3649) < lifetime <= timedelta(days=3650))
        self.assertLess(cert.not_valid_before_utc, before)

        basic = _extension(cert, x509.BasicConstraints)
        self.assertTrue(basic.critical)
        self.assertEqual(basic.value, x509.BasicConstraints(ca=True, path_length=0))
        usage = _extension(cert, x509.KeyUsage)
        self.assertTrue(usage.critical)
        self.assertTrue(usage.value.key_cert_sign)
        self.assertTrue(usage.value.crl_sign)
        self.assertFalse(usage.value.digital_signature)
        ski = _extension(cert, x509.SubjectKeyIdentifier).value
        aki = _extension(cert, x509.AuthorityKeyIdentifier).value
        self.assertEqual(aki.key_identifier, ski.digest)

    def test_name_and_days(self) -> None:
        """C{name} and C{days} set the common name and the lifetime."""
        cert = self.init(name="Example chat CA", days=30)
        self.assertEqual(certs.common_name(cert), "Example chat CA")
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        self.assertEqual(lifetime, timedelta(days=30) + certs.CLOCK_SKEW)

    def test_empty_crl(self) -> None:
        """
        C{crl.pem} is a PEM CRL with no entries, signed by the CA, number 1,
        valid from a little in the past for C{crl_days} days.
        """
        now = datetime.now(UTC).replace(microsecond=0)
        cert = self.init(crl_days=7, now=now)
        data = Path(self.directory, "crl.pem").read_bytes()
        self.assertTrue(data.startswith(b"-----BEGIN X509 CRL-----\n"))
        crl = ca.load_crl(Path(self.directory, "crl.pem"), issuer=cert)
        self.assertEqual(len(crl), 0)
        self.assertEqual(crl.issuer, cert.subject)
        self.assertEqual(crl.last_update_utc, now - certs.CLOCK_SKEW)
        self.assertEqual(crl.next_update_utc, now + timedelta(days=7))
        self.assertEqual(_extension_crl(crl, x509.CRLNumber).crl_number, 1)

    def test_existing_ca_refused(self) -> None:
        """A second init fails with one line and changes nothing."""
        self.init()
        before = _snapshot(self.directory)
        error = self.assertRaises(ca.CAError, ca.init_ca, self.directory)
        self.assertEqual(
            str(error),
            f"{self.directory} already holds a CA (ca.pem exists);"
            " use --force to replace it",
        )
        self.assertEqual(_snapshot(self.directory), before)

    def test_force(self) -> None:
        """C{force} makes a new CA key and certificate and empties the index."""
        old = self.init()
        ca.issue(self.directory, "alice")
        new = self.init(force=True)
        self.assertNotEqual(certs.fingerprint(old), certs.fingerprint(new))
        self.assertEqual(_index(self.directory)["certificates"], [])
        self.assertEqual(_mode(os.path.join(self.directory, "ca.key")), 0o600)

    def test_encrypted_key(self) -> None:
        """With a passphrase the CA key is encrypted PKCS#8, still 0600."""
        self.init(passphrase=PASSPHRASE)
        key_path = Path(self.directory, "ca.key")
        self.assertTrue(
            key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        )
        self.assertEqual(_mode(key_path), 0o600)
        self.assertTrue(ca.ca_key_is_encrypted(self.directory))
        serialization.load_pem_private_key(key_path.read_bytes(), PASSPHRASE)

    def test_bad_arguments(self) -> None:
        """Bad arguments are one-line errors, and nothing is created."""
        cases: list[dict[str, Any]] = [
            {"days": 0},
            {"crl_days": -1},
            {"name": ""},
            {"name": "x" * 65},
            {"passphrase": b""},
        ]
        for kwargs in cases:
            error = self.assertRaises(ca.CAError, ca.init_ca, self.directory, **kwargs)
            self.assertNotIn("\n", str(error))
            self.assertFalse(os.path.exists(self.directory), kwargs)

    def test_failure_leaves_nothing(self) -> None:
        """If a file cannot be written, init removes what it wrote."""
        real_write = ca.store._write

        def failing(path: str, data: bytes, mode: int, **kwargs: Any) -> None:
            if path.endswith("crl.pem"):
                raise ca.CAError(f"cannot write {path}: disk full")
            real_write(path, data, mode, **kwargs)

        self.patch(ca.store, "_write", failing)
        error = self.assertRaises(ca.CAError, ca.init_ca, self.directory)
        self.assertEqual(
            str(error), f"cannot write {self.directory}/crl.pem: disk full"
        )
        self.assertEqual(sorted(os.listdir(self.directory)), [".lock", "issued"])

    def test_not_a_directory(self) -> None:
        """A file where the directory should be is an error."""
        Path(self.directory).write_text("x")
        error = self.assertRaises(ca.CAError, ca.init_ca, self.directory)
        self.assertEqual(str(error), f"{self.directory} exists and is not a directory")


class IssueTests(_CATestCase):
    """Tests for L{ca.issue}."""

    def setUp(self) -> None:
        """Every test starts with a CA."""
        super().setUp()
        self.ca_cert = self.init()

    def test_files_and_modes(self) -> None:
        """
        issue writes C{issued/NAME.pem} and C{issued/NAME.key} (0600, a
        matching unencrypted ECDSA P-256 key) and no PKCS#12, and reports
        their paths and the certificate's fingerprint.
        """
        issued = ca.issue(self.directory, "alice")
        issued_dir = os.path.join(self.directory, "issued")
        self.assertEqual(sorted(os.listdir(issued_dir)), ["alice.key", "alice.pem"])
        self.assertEqual(issued.cert_path, os.path.join(issued_dir, "alice.pem"))
        self.assertEqual(issued.key_path, os.path.join(issued_dir, "alice.key"))
        self.assertIsNone(issued.p12_path)
        self.assertEqual(_mode(issued.key_path), 0o600)
        cert = _load_pem(issued.cert_path)
        self.assertEqual(cert, issued.certificate)
        self.assertEqual(issued.fingerprint, certs.fingerprint(cert))
        self.assertEqual(issued.serial, cert.serial_number)
        key = serialization.load_pem_private_key(
            Path(issued.key_path).read_bytes(), None
        )
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.assertIsInstance(key.curve, ec.SECP256R1)
        self.assertTrue(certs.key_matches_certificate(key, cert))

    def test_certificate_profile(self) -> None:
        """
        The certificate is issued by the CA to CN=NAME with the URI
        C{securemsg:user:NAME} as its only subjectAltName, clientAuth,
        critical digitalSignature and CA:FALSE, a subject key identifier
        and the CA's key identifier, for 365 days.
        """
        before = datetime.now(UTC)
        cert = ca.issue(self.directory, "alice").certificate
        cert.verify_directly_issued_by(self.ca_cert)
        self.assertEqual(cert.issuer, self.ca_cert.subject)
        self.assertEqual(certs.common_name(cert), "alice")
        san = _extension(cert, x509.SubjectAlternativeName)
        self.assertEqual(
            list(san.value), [x509.UniformResourceIdentifier("securemsg:user:alice")]
        )
        self.assertFalse(san.critical)
        self.assertEqual(
            list(_extension(cert, x509.ExtendedKeyUsage).value),
            [ExtendedKeyUsageOID.CLIENT_AUTH],
        )
        usage = _extension(cert, x509.KeyUsage)
        self.assertTrue(usage.critical)
        self.assertTrue(usage.value.digital_signature)
        self.assertFalse(usage.value.key_cert_sign)
        basic = _extension(cert, x509.BasicConstraints)
        self.assertTrue(basic.critical)
        self.assertFalse(basic.value.ca)
        _extension(cert, x509.SubjectKeyIdentifier)
        self.assertEqual(
            _extension(cert, x509.AuthorityKeyIdentifier).value.key_identifier,
            _extension(self.ca_cert, x509.SubjectKeyIdentifier).value.digest,
        )
        lifetime = cert.not_valid_after_utc - before
        self.assertTrue(timedelta(days=364) < lifetime <= timedelta(days=365))
        self.assertGreater(cert.serial_number, 0)

    def test_client_verifier(self) -> None:
        """
        C{cryptography}'s client verifier, trusting only the CA, accepts the
        certificate and reports its URI; the name comes back from
        L{ca.identity_from_certificate}.
        """
        issued = ca.issue(self.directory, "alice", days=3)
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store([self.ca_cert]))
            .build_client_verifier()
        )
        verified = verifier.verify(issued.certificate, [])
        self.assertEqual(verified.chain, [issued.certificate, self.ca_cert])
        self.assertEqual(
            verified.subjects,
            [x509.UniformResourceIdentifier("securemsg:user:alice")],
        )
        self.assertEqual(ca.identity_from_certificate(issued.certificate), "alice")

    def test_client_verifier_other_ca(self) -> None:
        """A verifier trusting another CA refuses the certificate."""
        issued = ca.issue(self.directory, "alice")
        other = _certs.make_ca()
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store([other.certificate]))
            .build_client_verifier()
        )
        self.assertRaises(
            verification.VerificationError, verifier.verify, issued.certificate, []
        )

    def test_p12(self) -> None:
        """
        With a PKCS#12 password, C{issued/NAME.p12} (0600) holds the key, the
        certificate and the CA certificate, and opens with that password
        only.
        """
        issued = ca.issue(self.directory, "alice", p12_passphrase=b"p12 secret")
        self.assertEqual(
            issued.p12_path, os.path.join(self.directory, "issued", "alice.p12")
        )
        assert issued.p12_path is not None
        self.assertEqual(_mode(issued.p12_path), 0o600)
        data = Path(issued.p12_path).read_bytes()
        key, cert, extra = pkcs12.load_key_and_certificates(data, b"p12 secret")
        self.assertEqual(cert, issued.certificate)
        self.assertEqual(extra, [self.ca_cert])
        assert key is not None
        self.assertTrue(certs.key_matches_certificate(key, issued.certificate))
        bundle = pkcs12.load_pkcs12(data, b"p12 secret")
        assert bundle.cert is not None
        self.assertEqual(bundle.cert.friendly_name, b"alice")
        self.assertRaises(ValueError, pkcs12.load_key_and_certificates, data, b"wrong")

    def test_encrypted_client_key(self) -> None:
        """With C{key_passphrase} the client key is encrypted with it."""
        issued = ca.issue(self.directory, "alice", key_passphrase=b"mine")
        data = Path(issued.key_path).read_bytes()
        self.assertTrue(data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"))
        self.assertRaises(TypeError, serialization.load_pem_private_key, data, None)
        serialization.load_pem_private_key(data, b"mine")

    def test_index_record(self) -> None:
        """C{index.json} records serial (hex), name, fingerprint and dates."""
        issued = ca.issue(self.directory, "alice")
        (entry,) = _index(self.directory)["certificates"]
        self.assertEqual(int(entry["serial"], 16), issued.serial)
        self.assertEqual(entry["name"], "alice")
        self.assertEqual(entry["fingerprint"], issued.fingerprint)
        self.assertEqual(datetime.fromisoformat(entry["not_after"]), issued.not_after)
        self.assertIsNone(entry["revoked_at"])
        (record,) = ca.list_certificates(self.directory)
        self.assertEqual(record.serial, issued.serial)
        self.assertEqual(record.status(), "valid")

    def test_invalid_names(self) -> None:
        """
        Names securemsg would refuse are refused here too, in one line, and
        nothing is written.
        """
        before = _snapshot(self.directory)
        for name in ["", "1alice", "al ice", "a" * 25, "../evil", "al/ice", "é"]:
            error = self.assertRaises(ca.CAError, ca.issue, self.directory, name)
            self.assertIn("cannot issue a certificate to", str(error))
            self.assertNotIn("\n", str(error))
        self.assertEqual(_snapshot(self.directory), before)

    def test_second_issue_refused(self) -> None:
        """
        A name with a valid certificate (compared ignoring case, as the
        server does) gets no second one without C{force} or C{replace}.
        """
        first = ca.issue(self.directory, "alice")
        before = _snapshot(self.directory)
        for name in ["alice", "ALICE"]:
            error = self.assertRaises(ca.CAError, ca.issue, self.directory, name)
            self.assertIn(
                f"alice already has a valid certificate (serial {shown(first.serial)}",
                str(error),
            )
            self.assertIn("use --replace", str(error))
        self.assertEqual(_snapshot(self.directory), before)

    def test_force(self) -> None:
        """
        C{force} issues a second certificate and leaves the first valid:
        not revoked, not in the CRL, and reported as still valid.
        """
        first = ca.issue(self.directory, "alice")
        second = ca.issue(self.directory, "alice", force=True)
        self.assertEqual(second.still_valid, (first.serial,))
        self.assertEqual(second.revoked, ())
        statuses = [r.status() for r in ca.list_certificates(self.directory)]
        self.assertEqual(statuses, ["valid", "valid"])
        self.assertEqual(len(ca.load_crl(Path(self.directory, "crl.pem"))), 0)
        self.assertEqual(_load_pem(second.cert_path), second.certificate)

    def test_replace(self) -> None:
        """
        C{replace} revokes the old certificate (reason superseded) and
        writes a CRL listing it, along with the new certificate.
        """
        first = ca.issue(self.directory, "alice")
        second = ca.issue(self.directory, "alice", replace=True)
        self.assertEqual(second.revoked, (first.serial,))
        self.assertEqual(second.still_valid, ())
        old, new = ca.list_certificates(self.directory)
        self.assertEqual((old.status(), old.reason), ("revoked", "superseded"))
        self.assertEqual(new.status(), "valid")
        crl = ca.load_crl(Path(self.directory, "crl.pem"), issuer=self.ca_cert)
        entry = crl.get_revoked_certificate_by_serial_number(first.serial)
        assert entry is not None
        self.assertEqual(
            entry.extensions.get_extension_for_class(x509.CRLReason).value.reason,
            x509.ReasonFlags.superseded,
        )
        self.assertIsNone(crl.get_revoked_certificate_by_serial_number(second.serial))

    def test_after_revoke_or_expiry(self) -> None:
        """A name whose certificates are revoked or expired needs no C{force}."""
        ca.issue(self.directory, "alice")
        ca.revoke(self.directory, "alice")
        ca.issue(self.directory, "alice")
        later = datetime.now(UTC) + timedelta(days=366)
        ca.issue(self.directory, "alice", now=later)
        statuses = [r.status(later) for r in ca.list_certificates(self.directory)]
        self.assertEqual(statuses, ["revoked", "expired", "valid"])

    def test_outlasting_the_ca(self) -> None:
        """A certificate may not outlive the CA certificate."""
        self.init(force=True, days=30)
        error = self.assertRaises(ca.CAError, ca.issue, self.directory, "alice")
        self.assertIn("would outlast the CA certificate", str(error))
        ca.issue(self.directory, "alice", days=29)

    def test_not_a_ca(self) -> None:
        """Issuing from a directory without a CA says how to make one."""
        empty = str(self.base / "empty dir")
        os.mkdir(empty)
        error = self.assertRaises(ca.CAError, ca.issue, empty, "alice")
        self.assertEqual(
            str(error),
            f"{empty} is not a securemsg CA (no ca.pem); create one with:"
            f" securemsg ca init '{empty}'",
        )

    def test_encrypted_ca_key(self) -> None:
        """
        An encrypted CA key needs its passphrase: none or a wrong one is a
        one-line error that writes nothing; the right one works.
        """
        self.init(force=True, passphrase=PASSPHRASE)
        before = _snapshot(self.directory)
        key_path = os.path.join(self.directory, "ca.key")
        error = self.assertRaises(ca.CAError, ca.issue, self.directory, "alice")
        self.assertEqual(
            str(error), f"the CA key {key_path} is encrypted; its passphrase is needed"
        )
        error = self.assertRaises(
            ca.CAError, ca.issue, self.directory, "alice", ca_passphrase=b"wrong"
        )
        self.assertEqual(str(error), f"wrong passphrase for the CA key {key_path}")
        self.assertEqual(_snapshot(self.directory), before)
        ca.issue(self.directory, "alice", ca_passphrase=PASSPHRASE)

    def test_key_from_another_ca(self) -> None:
        """A CA key that does not match C{ca.pem} is refused."""
        other = str(self.base / "other")
        ca.init_ca(other)
        os.replace(
            os.path.join(other, "ca.key"), os.path.join(self.directory, "ca.key")
        )
        error = self.assertRaises(ca.CAError, ca.issue, self.directory, "alice")
        self.assertIn("does not belong to", str(error))

    def test_damaged_index(self) -> None:
        """A damaged C{index.json} is a one-line error."""
        Path(self.directory, "index.json").write_text("{not json")
        error = self.assertRaises(ca.CAError, ca.issue, self.directory, "alice")
        self.assertTrue(
            str(error).startswith(f"{self.directory}/index.json is damaged")
        )
        self.assertNotIn("\n", str(error))

    def test_write_failure_rolls_back(self) -> None:
        """
        If a file cannot be written, the index is left as it was and the
        files this issue created are removed.
        """
        os.mkdir(os.path.join(self.directory, "issued", "alice.pem"))
        index_before = Path(self.directory, "index.json").read_bytes()
        error = self.assertRaises(ca.CAError, ca.issue, self.directory, "alice")
        self.assertIn("alice.pem", str(error))
        self.assertEqual(Path(self.directory, "index.json").read_bytes(), index_before)
        self.assertEqual(
            os.listdir(os.path.join(self.directory, "issued")), ["alice.pem"]
        )

    def test_damaged_or_missing_ca_key(self) -> None:
        """A CA key that cannot be parsed, or is missing, is a one-line error."""
        key_path = Path(self.directory, "ca.key")
        key_path.write_text(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        error = self.assertRaises(ca.CAError, ca.issue, self.directory, "alice")
        self.assertTrue(str(error).startswith(f"cannot read the CA key {key_path}: "))
        self.assertNotIn("\n", str(error))
        key_path.unlink()
        error = self.assertRaises(ca.CAError, ca.issue, self.directory, "alice")
        self.assertEqual(str(error), f"CA key {key_path} is missing")
        self.assertEqual(ca.list_certificates(self.directory), [])

    def test_locked(self) -> None:
        """While another command holds the lock, issue fails at once."""
        fd = os.open(os.path.join(self.directory, ".lock"), os.O_RDWR)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        error = self.assertRaises(ca.CAError, ca.issue, self.directory, "alice")
        self.assertIn("is being changed by another securemsg ca command", str(error))


class RevokeTests(_CATestCase):
    """Tests for L{ca.revoke}, L{ca.refresh_crl} and L{ca.load_crl}."""

    def setUp(self) -> None:
        """Every test starts with a CA that issued alice and bob."""
        super().setUp()
        self.ca_cert = self.init()
        self.alice = ca.issue(self.directory, "alice")
        self.bob = ca.issue(self.directory, "bob")
        self.crl_path = os.path.join(self.directory, "crl.pem")

    def test_revoke_name(self) -> None:
        """
        Revoking a name puts its serial into a new PEM CRL, numbered one
        higher, whose signature verifies with the CA's public key; the
        index records when.
        """
        self.assertEqual(ca.revoke(self.directory, "alice"), [self.alice.serial])
        data = Path(self.crl_path).read_bytes()
        self.assertTrue(data.startswith(b"-----BEGIN X509 CRL-----\n"))
        crl = x509.load_pem_x509_crl(data)
        public_key = self.ca_cert.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        self.assertTrue(crl.is_signature_valid(public_key))
        self.assertEqual(crl.issuer, self.ca_cert.subject)
        self.assertEqual([r.serial_number for r in crl], [self.alice.serial])
        self.assertEqual(_extension_crl(crl, x509.CRLNumber).crl_number, 2)
        alice, bob = ca.list_certificates(self.directory)
        self.assertEqual(alice.status(), "revoked")
        self.assertIsNone(alice.reason)
        self.assertEqual(bob.status(), "valid")

    def test_every_valid_certificate_of_the_name(self) -> None:
        """All of a name's valid certificates are revoked, whatever the case."""
        extra = ca.issue(self.directory, "alice", force=True)
        revoked = ca.revoke(self.directory, "ALICE")
        self.assertEqual(sorted(revoked), sorted([self.alice.serial, extra.serial]))
        crl = ca.load_crl(self.crl_path, issuer=self.ca_cert)
        self.assertEqual(len(crl), 2)

    def test_serial_and_reason(self) -> None:
        """
        C{serial} revokes just that certificate, and a reason goes into its
        CRL entry.
        """
        extra = ca.issue(self.directory, "alice", force=True)
        revoked = ca.revoke(
            self.directory,
            serial=extra.serial,
            reason=x509.ReasonFlags.key_compromise,
        )
        self.assertEqual(revoked, [extra.serial])
        crl = ca.load_crl(self.crl_path, issuer=self.ca_cert)
        entry = crl.get_revoked_certificate_by_serial_number(extra.serial)
        assert entry is not None
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value
        self.assertEqual(reason.reason, x509.ReasonFlags.key_compromise)
        self.assertEqual(
            [r.status() for r in ca.list_certificates(self.directory)],
            ["valid", "valid", "revoked"],
        )

    def test_errors(self) -> None:
        """
        Unknown names and serials, a name with nothing left to revoke, a
        serial already revoked and a wrong argument mix are one-line errors
        that change nothing.
        """
        ca.revoke(self.directory, "bob")
        before = _snapshot(self.directory)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"name": "carol"}, "no certificate was ever issued to 'carol'; see:"),
            ({"name": "bob"}, "bob has no valid certificate to revoke"),
            ({"serial": 12345}, "no certificate with serial 3039; see:"),
            ({"serial": self.bob.serial}, "was already revoked on"),
            ({}, "give either a name or a serial number to revoke"),
            ({"name": "alice", "serial": 1}, "give either a name or a serial"),
        ]
        for kwargs, message in cases:
            error = self.assertRaises(ca.CAError, ca.revoke, self.directory, **kwargs)
            self.assertIn(message, str(error))
            self.assertNotIn("\n", str(error))
        self.assertEqual(_snapshot(self.directory), before)

    def test_encrypted_ca_key(self) -> None:
        """Revoking with an encrypted CA key needs the right passphrase."""
        self.init(force=True, passphrase=PASSPHRASE)
        alice = ca.issue(self.directory, "alice", ca_passphrase=PASSPHRASE)
        before = _snapshot(self.directory)
        error = self.assertRaises(
            ca.CAError, ca.revoke, self.directory, "alice", ca_passphrase=b"nope"
        )
        self.assertIn("wrong passphrase for the CA key", str(error))
        self.assertEqual(_snapshot(self.directory), before)
        self.assertEqual(
            ca.revoke(self.directory, "alice", ca_passphrase=PASSPHRASE), [alice.serial]
        )

    def test_refresh(self) -> None:
        """
        L{ca.refresh_crl} re-signs the same revocations with a later
        nextUpdate and the next number.
        """
        ca.revoke(self.directory, "alice")
        old = ca.load_crl(self.crl_path)
        later = datetime.now(UTC) + timedelta(days=20)
        new = ca.refresh_crl(self.directory, now=later)
        self.assertEqual(ca.load_crl(self.crl_path, issuer=self.ca_cert), new)
        self.assertEqual([r.serial_number for r in new], [self.alice.serial])
        assert old.next_update_utc is not None and new.next_update_utc is not None
        self.assertGreater(new.next_update_utc, old.next_update_utc)
        self.assertEqual(_extension_crl(new, x509.CRLNumber).crl_number, 3)

    def test_crl_write_failure(self) -> None:
        """
        If the CRL cannot be written, the revocation stays recorded and the
        error says how to write the CRL again.
        """
        os.unlink(self.crl_path)
        os.mkdir(self.crl_path)
        error = self.assertRaises(ca.CAError, ca.revoke, self.directory, "alice")
        self.assertIn(f"cannot write {self.crl_path}: ", str(error))
        self.assertIn(
            "(the revocation is recorded in index.json; write the CRL again with:"
            f" securemsg ca crl {self.directory})",
            str(error),
        )
        self.assertEqual(ca.list_certificates(self.directory)[0].status(), "revoked")
        os.rmdir(self.crl_path)
        crl = ca.refresh_crl(self.directory)
        self.assertEqual([r.serial_number for r in crl], [self.alice.serial])

    def test_load_crl_errors(self) -> None:
        """
        L{ca.load_crl} refuses a missing file, something that is not a CRL,
        and a CRL another CA signed.
        """
        missing = str(self.base / "missing.pem")
        self.assertEqual(
            str(self.assertRaises(ca.CAError, ca.load_crl, missing)),
            f"CRL file {missing} is missing",
        )
        garbage = self.base / "garbage.pem"
        garbage.write_text("hello\n")
        error = self.assertRaises(ca.CAError, ca.load_crl, garbage)
        self.assertTrue(str(error).startswith(f"cannot parse the CRL {garbage}"))
        other = _certs.make_ca("another CA")
        error = self.assertRaises(
            ca.CAError, ca.load_crl, self.crl_path, issuer=other.certificate
        )
        self.assertEqual(
            str(error), f"the CRL {self.crl_path} is not signed by CN=another CA"
        )


# ---------------------------------------------------------------------------
# Mutual TLS with OpenSSL


@implementer(IHandshakeListener)
class _Peer(Protocol):
    """One end of a connection: did its handshake finish, how did it end."""

    def __init__(self) -> None:
        self.handshake_done = False
        self.lost: Failure | None = None

    def handshakeCompleted(self) -> None:
        self.handshake_done = True

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason


def _handshake(
    server_options: Any, client_options: Any
) -> tuple[_Peer, SSL.Connection]:
    """
    Run a TLS handshake in memory between a server and a client with these
    options.

    @return: The server's protocol and its OpenSSL connection (kept from
        before the handshake, since Twisted lets go of it when the
        connection fails).
    """
    clock = Clock()
    server = _Peer()
    client = _Peer()
    server_factory = TLSMemoryBIOFactory(
        server_options, False, ServerFactory.forProtocol(lambda: server), clock=clock
    )
    client_factory = TLSMemoryBIOFactory(
        client_options, True, ClientFactory.forProtocol(lambda: client), clock=clock
    )
    address = IPv4Address("TCP", "127.0.0.1", 50000)
    _, server_tls, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(address),
        lambda: client_factory.buildProtocol(address),
        greet=False,
        clock=clock,
    )
    assert isinstance(server_tls, TLSMemoryBIOProtocol)
    connection = server_tls.getHandle()
    pump.flush()
    return server, connection


class MutualTLSTests(_CATestCase):
    """
    Issued certificates work for mutual TLS where OpenSSL does the checks:
    a Twisted server whose trust root is the CA.
    """

    def setUp(self) -> None:
        """A CA, and the server's own certificate from the test CA."""
        super().setUp()
        self.init()
        self.server_ca, self.server_pair = _certs.default_ca_and_server()

    def server_options(self) -> CertificateOptions:
        """
        Server options that require a client certificate from our CA
        (C{trustRoot} implies C{verify} and C{requireCertificate}; Twisted
        refuses them together).
        """
        ca_pem = Path(self.directory, "ca.pem").read_bytes()
        return CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(self.server_pair.key),
            certificate=crypto.X509.from_cryptography(self.server_pair.certificate),
            trustRoot=Certificate.loadPEM(ca_pem),
        )

    def client_options(self, issued: ca.IssuedCertificate) -> Any:
        """Client options presenting C{issued} and trusting the server."""
        pem = Path(issued.cert_path).read_bytes() + Path(issued.key_path).read_bytes()
        return optionsForClientTLS(
            "localhost",
            trustRoot=Certificate.loadPEM(self.server_ca.cert_pem()),
            clientCertificate=PrivateCertificate.loadPEM(pem),
        )

    def test_accepted(self) -> None:
        """
        The server accepts the issued certificate, and the name it carries
        comes back from the certificate OpenSSL verified.
        """
        issued = ca.issue(self.directory, "alice")
        server, connection = _handshake(
            self.server_options(), self.client_options(issued)
        )
        self.assertTrue(server.handshake_done)
        self.assertIsNone(server.lost)
        peer = connection.get_peer_certificate()
        assert peer is not None
        self.assertEqual(ca.identity_from_certificate(peer.to_cryptography()), "alice")

    def test_other_ca_refused(self) -> None:
        """A certificate from another securemsg CA is refused."""
        other = str(self.base / "other")
        ca.init_ca(other)
        issued = ca.issue(other, "mallory")
        server, _ = _handshake(self.server_options(), self.client_options(issued))
        self.assertFalse(server.handshake_done)
        assert server.lost is not None
        self.assertTrue(server.lost.check(SSL.Error))

    def test_revoked_refused_with_crl(self) -> None:
        """
        A server that loads C{crl.pem} and checks it refuses a revoked
        certificate and still accepts a valid one (so OpenSSL takes the CRL
        itself: signature, issuer, dates).
        """
        alice = ca.issue(self.directory, "alice")
        bob = ca.issue(self.directory, "bob")
        ca.revoke(self.directory, "bob")

        errors: list[int] = []

        def record(
            connection: SSL.Connection, cert: Any, error: int, depth: int, ok: int
        ) -> bool:
            # OpenSSL's own verdict stands; only note why.
            if not ok:
                errors.append(error)
            return bool(ok)

        def checking() -> CertificateOptions:
            options = self.server_options()
            context = options.getContext()
            store = context.get_cert_store()
            assert store is not None
            store.add_crl(ca.load_crl(Path(self.directory, "crl.pem")))
            store.set_flags(crypto.X509StoreFlags.CRL_CHECK)
            context.set_verify(context.get_verify_mode(), record)
            return options

        server, _ = _handshake(checking(), self.client_options(bob))
        self.assertFalse(server.handshake_done)
        assert server.lost is not None
        self.assertTrue(server.lost.check(SSL.Error))
        self.assertEqual(errors, [X509_V_ERR_CERT_REVOKED])
        server, _ = _handshake(checking(), self.client_options(alice))
        self.assertTrue(server.handshake_done)
        self.assertEqual(errors, [X509_V_ERR_CERT_REVOKED])


# ---------------------------------------------------------------------------
# The command


class CommandTests(_CATestCase):
    """Tests for C{securemsg ca} through L{main}."""

    def setUp(self) -> None:
        """No CA passphrase in the environment, no terminal to prompt on."""
        super().setUp()
        self.environment(None)
        self.patch(ca.command, "_terminal_prompt", lambda: None)
        self.pass_file = self.base / "pass.txt"
        self.pass_file.write_text(PASSPHRASE.decode() + "\n")
        self.p12_file = self.base / "p12.txt"
        self.p12_file.write_text("p12 secret\n")

    def environment(self, value: str | None) -> None:
        """Set C{$SECUREMSG_CA_PASSPHRASE} (or unset it) for this test."""
        name = ca.CA_PASSPHRASE_ENVIRONMENT_VARIABLE
        environ = {key: v for key, v in os.environ.items() if key != name}
        if value is not None:
            environ[name] = value
        self.patch(os, "environ", environ)

    def assertSucceeded(self, result: Result) -> None:
        """Exit 0 and nothing on stderr."""
        self.assertEqual((result.code, result.stderr), (0, ""), result.stdout)

    def assertError(self, result: Result, code: int, message: str) -> None:
        """
        Exit C{code}, nothing on stdout, and exactly one line on stderr that
        starts with C{securemsg ca} (and the command) and contains
        C{message}.
        """
        self.assertEqual(result.code, code, result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertTrue(result.stderr.startswith("securemsg ca"), result.stderr)
        self.assertIn(message, result.stderr)

    def test_help(self) -> None:
        """C{ca --help} lists the commands; C{ca issue --help} its options."""
        result = _run("ca", "--help")
        self.assertSucceeded(result)
        self.assertTrue(result.stdout.startswith("Usage: securemsg ca <command> DIR"))
        for command in ["init", "issue", "revoke", "list", "crl"]:
            self.assertIn(f"    {command} ", result.stdout)
        result = _run("ca", "issue", "--help")
        self.assertSucceeded(result)
        self.assertTrue(
            result.stdout.startswith("Usage: securemsg ca issue DIR NAME [options]")
        )
        for option in ["--p12", "--replace", "--force", "--ca-passphrase-file"]:
            self.assertIn(option, result.stdout)

    def test_usage_errors(self) -> None:
        """Command-line mistakes are exit 2 and one line naming the command."""
        cases = [
            (("ca",), "no ca command given; choose one of: init, issue"),
            (("ca", "sign"), "Unknown command: sign"),
            (
                ("ca", "issue", self.directory),
                "securemsg ca issue: missing NAME (expected DIR NAME)",
            ),
            (("ca", "list"), "securemsg ca list: missing DIR"),
            (("ca", "list", "a", "b"), "securemsg ca list: unexpected argument 'b'"),
            (("ca", "issue", self.directory, "no good"), "that name is not allowed"),
            (("ca", "issue", self.directory, "bob", "--p12"), "--p12 needs"),
            (("ca", "issue", "d", "bob", "--force", "--replace"), "not both"),
            (("ca", "init", self.directory, "--days", "0"), "--days must be a whole"),
            (("ca", "revoke", self.directory), "give either NAME or --serial HEX"),
            (("ca", "revoke", "d", "bob", "--serial", "1"), "either NAME or --serial"),
            (("ca", "revoke", "d", "--serial", "xyz"), "--serial must be hexadecimal"),
            (("ca", "revoke", "d", "bob", "--reason", "boredom"), "--reason must be"),
        ]
        for argv, message in cases:
            result = _run(*argv)
            self.assertError(result, 2, message)
            known = ("init", "issue", "revoke", "list", "crl")
            command = " ".join(argv[:2]) if argv[1:2] and argv[1] in known else "ca"
            self.assertIn(f"run 'securemsg {command} --help' for usage", result.stderr)
        self.assertFalse(os.path.exists(self.directory))

    def test_init(self) -> None:
        """
        C{ca init} makes the CA and says where everything is; a second one
        is refused without C{--force}.
        """
        result = _run("ca", "init", self.directory, "--name", "Team CA")
        self.assertSucceeded(result)
        cert = ca.load_ca_certificate(self.directory)
        self.assertEqual(certs.common_name(cert), "Team CA")
        self.assertIn(f"CA certificate:  {self.directory}/ca.pem", result.stdout)
        self.assertIn("ECDSA P-256, not encrypted, mode 0600", result.stdout)
        self.assertIn(certs.fingerprint(cert), result.stdout)
        self.assertIn(f"securemsg ca issue {self.directory} NAME", result.stdout)
        self.assertError(_run("ca", "init", self.directory), 1, "already holds a CA")
        self.assertSucceeded(_run("ca", "init", self.directory, "--force"))

    def test_not_a_ca(self) -> None:
        """Every command on a directory without a CA says how to make one."""
        for command in [("issue", "alice"), ("revoke", "alice"), ("list",), ("crl",)]:
            result = _run("ca", command[0], self.directory, *command[1:])
            self.assertError(
                result,
                1,
                f"{self.directory} is not a securemsg CA (no ca.pem); create one"
                f" with: securemsg ca init {self.directory}",
            )

    def test_issue_revoke_list(self) -> None:
        """
        The whole cycle: issue with a PKCS#12 bundle, refuse a second
        certificate, replace it, revoke by name, list the statuses.
        """
        self.assertSucceeded(_run("ca", "init", self.directory))
        result = _run(
            "ca",
            "issue",
            self.directory,
            "alice",
            "--p12",
            "--p12-passphrase-file",
            str(self.p12_file),
        )
        self.assertSucceeded(result)
        issued = self.directory + "/issued/"
        self.assertIn(f"Certificate:  {issued}alice.pem", result.stdout)
        self.assertIn("securemsg:user:alice", result.stdout)
        self.assertIn(f"PKCS#12:      {issued}alice.p12", result.stdout)
        self.assertIn(
            f"--cert {issued}alice.pem --key {issued}alice.key", result.stdout
        )
        first = ca.list_certificates(self.directory)[0]
        pkcs12.load_key_and_certificates(
            Path(issued, "alice.p12").read_bytes(), b"p12 secret"
        )

        self.assertError(
            _run("ca", "issue", self.directory, "alice"),
            1,
            "alice already has a valid certificate",
        )
        result = _run("ca", "issue", self.directory, "alice", "--force")
        self.assertSucceeded(result)
        self.assertIn(
            f"Note: alice's certificate {shown(first.serial)} is still valid;"
            f" revoke it with: securemsg ca revoke {self.directory} --serial",
            result.stdout,
        )
        result = _run("ca", "issue", self.directory, "alice", "--replace")
        self.assertSucceeded(result)
        self.assertIn("Revoked:", result.stdout)

        result = _run(
            "ca", "revoke", self.directory, "alice", "--reason", "keycompromise"
        )
        self.assertSucceeded(result)
        self.assertIn("Revoked:  alice (serial", result.stdout)
        self.assertIn(
            "CRL:      " + self.directory + "/crl.pem (3 revoked", result.stdout
        )
        # What the operator must do for the revocation to bite.
        self.assertIn(
            "Servers still accept it until they load this CRL: give it to each"
            f" server with --crl {self.directory}/crl.pem (a copy, on another"
            " host), then reload it there with SIGHUP or an operator's /reload;"
            " connected holders of a revoked certificate are then disconnected\n",
            result.stdout,
        )
        self.assertError(
            _run("ca", "revoke", self.directory, "alice"),
            1,
            "alice has no valid certificate to revoke",
        )

        self.assertSucceeded(_run("ca", "issue", self.directory, "bob", "--days", "10"))
        result = _run("ca", "list", self.directory)
        self.assertSucceeded(result)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "STATUS", "EXPIRES", "SERIAL"])
        self.assertEqual(
            [line.split()[:2] for line in lines[1:4]],
            [["alice", "revoked"]] * 3,
        )
        self.assertEqual(lines[4].split()[:2], ["bob", "valid"])
        self.assertIn(f"{shown(first.serial)}", lines[1])
        self.assertTrue(
            lines[5].startswith(f"CRL: {self.directory}/crl.pem (3 revoked), valid")
        )
        self.assertEqual(len(lines), 6)

    def test_revoke_by_serial(self) -> None:
        """C{--serial} takes hex in any case, with or without colons."""
        self.assertSucceeded(_run("ca", "init", self.directory))
        issued = ca.issue(self.directory, "alice")
        text = f"{issued.serial:040X}"
        colons = ":".join(text[i : i + 2] for i in range(0, len(text), 2))
        self.assertSucceeded(_run("ca", "revoke", self.directory, "--serial", colons))
        self.assertEqual(ca.list_certificates(self.directory)[0].status(), "revoked")

    def test_list_empty_and_expired_crl(self) -> None:
        """
        An empty CA says how to issue; a CRL past its nextUpdate is flagged
        with the command that re-signs it, and C{ca crl} does.
        """
        ca.init_ca(self.directory, now=datetime.now(UTC) - timedelta(days=40))
        result = _run("ca", "list", self.directory)
        self.assertSucceeded(result)
        self.assertIn("No certificates issued yet", result.stdout)
        self.assertIn("EXPIRED", result.stdout)
        self.assertIn(
            f"re-sign it with: securemsg ca crl {self.directory}", result.stdout
        )
        result = _run("ca", "crl", self.directory)
        self.assertSucceeded(result)
        self.assertIn("(0 revoked, valid until", result.stdout)
        self.assertNotIn("EXPIRED", _run("ca", "list", self.directory).stdout)

    def test_ca_passphrase_sources(self) -> None:
        """
        An encrypted CA key's passphrase comes from C{--ca-passphrase-file},
        else C{$SECUREMSG_CA_PASSPHRASE}, else a terminal prompt; without
        any, and with a wrong one, the command fails in one line.  Nobody
        is asked for it when the command would fail anyway.
        """
        self.assertSucceeded(
            _run("ca", "init", self.directory, "--passphrase-file", str(self.pass_file))
        )
        self.assertTrue(ca.ca_key_is_encrypted(self.directory))
        self.assertError(
            _run("ca", "issue", self.directory, "alice"),
            1,
            "is encrypted; give its passphrase with --ca-passphrase-file FILE or the"
            " SECUREMSG_CA_PASSPHRASE environment variable",
        )
        wrong = self.base / "wrong.txt"
        wrong.write_text("nope\n")
        self.assertError(
            _run(
                "ca",
                "issue",
                self.directory,
                "alice",
                "--ca-passphrase-file",
                str(wrong),
            ),
            1,
            "wrong passphrase for the CA key",
        )
        self.assertSucceeded(
            _run(
                "ca",
                "issue",
                self.directory,
                "alice",
                "--ca-passphrase-file",
                str(self.pass_file),
            )
        )
        self.environment(PASSPHRASE.decode())
        self.assertSucceeded(_run("ca", "issue", self.directory, "bob"))
        self.environment(None)
        prompts: list[str] = []

        def prompt(text: str) -> str:
            prompts.append(text)
            return PASSPHRASE.decode()

        self.patch(ca.command, "_terminal_prompt", lambda: prompt)
        self.assertError(
            _run("ca", "issue", self.directory, "alice"),
            1,
            "alice already has a valid certificate",
        )
        self.assertEqual(prompts, [])  # not asked in vain
        self.assertSucceeded(_run("ca", "revoke", self.directory, "bob"))
        self.assertEqual(
            prompts, [f"Passphrase for the CA key {self.directory}/ca.key: "]
        )
        self.assertEqual(
            [r.status() for r in ca.list_certificates(self.directory)],
            ["valid", "revoked"],
        )

    def test_more_usage_and_passphrase_errors(self) -> None:
        """
        C{--p12-passphrase-file} without C{--p12}, an empty
        C{$SECUREMSG_CA_PASSPHRASE} and an empty answer at the prompt are
        one-line errors.
        """
        self.assertError(
            _run("ca", "issue", "d", "bob", "--p12-passphrase-file", "f"),
            2,
            "--p12-passphrase-file is only used with --p12",
        )
        ca.init_ca(self.directory, passphrase=PASSPHRASE)
        self.environment("")
        self.assertError(
            _run("ca", "crl", self.directory), 1, "SECUREMSG_CA_PASSPHRASE is empty"
        )
        self.environment(None)
        self.patch(ca.command, "_terminal_prompt", lambda: lambda text: "")
        self.assertError(_run("ca", "crl", self.directory), 1, "no passphrase given")

    def test_init_into_a_directory_others_can_write(self) -> None:
        """
        C{init} into an existing directory that others (or its group) may
        write to warns, with the command that fixes it; it leaves the mode
        alone (it may be shared on purpose).  A directory it makes is
        0700, and then nothing is said.
        """
        os.mkdir(self.directory)
        os.chmod(self.directory, 0o777)  # noqa: S103 (the case under test)
        result = _run("ca", "init", self.directory)
        self.assertSucceeded(result)
        self.assertIn(
            f"Warning: {self.directory} is writable by its group and others"
            " (mode 0777): they can replace the CA's certificate or CRL; make it"
            f" yours alone with: chmod 700 {self.directory}\n",
            result.stdout,
        )
        self.assertEqual(_mode(self.directory), 0o777)
        os.chmod(self.directory, 0o702)  # noqa: S103
        self.assertEqual(
            ca.directory_warnings(self.directory),
            [
                f"{self.directory} is writable by others (mode 0702): they can"
                " replace the CA's certificate or CRL; make it yours alone with:"
                f" chmod 700 {self.directory}"
            ],
        )
        os.chmod(self.directory, 0o700)
        other = str(self.base / "new-ca")
        result = _run("ca", "init", other)
        self.assertSucceeded(result)
        self.assertNotIn("Warning", result.stdout)
        self.assertEqual(ca.directory_warnings(other), [])

    def test_init_force_note_and_crl_warning(self) -> None:
        """
        C{init --force} over a CA that issued certificates says they no
        longer verify; C{list} warns a week before the CRL expires.
        """
        ca.init_ca(self.directory)
        ca.issue(self.directory, "alice")
        result = _run("ca", "init", self.directory, "--force")
        self.assertSucceeded(result)
        self.assertIn(
            f"Note: the files in {self.directory}/issued belong to the old CA",
            result.stdout,
        )
        ca.refresh_crl(self.directory, now=datetime.now(UTC) - timedelta(days=25))
        result = _run("ca", "list", self.directory)
        self.assertSucceeded(result)
        self.assertIn(f"CRL: {self.directory}/crl.pem expires on ", result.stdout)
        self.assertIn(
            f"re-sign it with: securemsg ca crl {self.directory}", result.stdout
        )

    def test_passphrase_file_problems(self) -> None:
        """A missing or empty passphrase file is a one-line error."""
        empty = self.base / "empty.txt"
        empty.write_text("\n")
        self.assertError(
            _run("ca", "init", self.directory, "--passphrase-file", str(empty)),
            1,
            "has an empty first line",
        )
        self.assertError(
            _run("ca", "init", self.directory, "--passphrase-file", "/nonexistent"),
            1,
            "cannot read passphrase file /nonexistent",
        )
        self.assertFalse(os.path.exists(self.directory))

    def test_encrypted_client_key_hint(self) -> None:
        """
        C{--passphrase-file} encrypts the client key, and the chat hint
        passes the same file on.
        """
        self.assertSucceeded(_run("ca", "init", self.directory))
        result = _run(
            "ca",
            "issue",
            self.directory,
            "alice",
            "--passphrase-file",
            str(self.pass_file),
        )
        self.assertSucceeded(result)
        self.assertIn("ECDSA P-256, encrypted, mode 0600", result.stdout)
        self.assertIn(f"--key-passphrase-file {self.pass_file}", result.stdout)
        key = Path(self.directory, "issued", "alice.key").read_bytes()
        serialization.load_pem_private_key(key, PASSPHRASE)
