"""
Tests for L{securemsg.tls.inspect} and C{securemsg check} (L{securemsg.admin.check}).

Most tests run the command through L{securemsg.admin.cli.main} with C{StringIO}
streams, on certificates made at test time (L{tests._certs},
L{securemsg.tls.certs.generate_self_signed} and L{securemsg.admin.ca}) in a fresh
temporary directory.  No passphrase comes from the environment or a terminal
unless a test puts it there.
"""

from __future__ import annotations

import datetime
import io
import os
import sys
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from securemsg.admin import ca
from securemsg.tls import certs
from securemsg.tls import policy as tls
from securemsg.tls.inspect import run_check

from . import _certs
from ._cli import Result
from ._cli import run as _run

PASSPHRASE = "correct horse battery staple"

LEVELS = ("ok   ", "warn ", "FAIL ", "info ")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(*chain: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def _builder(
    subject: str,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    days_valid: tuple[int, int] = (-1, 30),
) -> x509.CertificateBuilder:
    start, end = days_valid
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_certs.NOW + datetime.timedelta(days=start))
        .not_valid_after(_certs.NOW + datetime.timedelta(days=end))
    )


def _key_usage(*, key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_intermediate(
    root: _certs.Pair,
    common_name: str = "securemsg test intermediate",
    *,
    days_valid: tuple[int, int] = (-1, 30),
) -> _certs.Pair:
    """An intermediate CA signed by C{root}."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        _builder(common_name, root.certificate.subject, key.public_key(), days_valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    return _certs.Pair(certificate, key)


def leaf_with_key(
    issuer_name: x509.Name,
    signing_key: CertificateIssuerPrivateKeyTypes | None,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
) -> x509.Certificate:
    """
    A server certificate for C{localhost} with C{key}, signed by
    C{signing_key} (self-signed when it is L{None}).
    """
    return (
        _builder("localhost", issuer_name, key.public_key())
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
        .sign(key if signing_key is None else signing_key, hashes.SHA256())
    )


class _CheckTestCase(SynchronousTestCase):
    """A temporary directory, and no passphrase from the environment or a tty."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.environment(None)
        self.patch(sys, "stdin", io.StringIO())

    def environment(self, value: str | None) -> None:
        """Set C{$SECUREMSG_KEY_PASSPHRASE} (or unset it) for this test."""
        name = tls.PASSPHRASE_ENVIRONMENT_VARIABLE
        environ = {key: v for key, v in os.environ.items() if key != name}
        if value is not None:
            environ[name] = value
        self.patch(os, "environ", environ)

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def write(self, name: str, data: bytes, mode: int = 0o600) -> str:
        """Write C{data} to C{name} in the test's directory; return its path."""
        path = self.directory / name
        path.write_bytes(data)
        path.chmod(mode)
        return str(path)

    def write_pair(
        self,
        chain: list[x509.Certificate],
        key: PrivateKeyTypes,
        stem: str = "server",
    ) -> tuple[str, str]:
        """Write C{chain} to C{stem}.pem and C{key} to C{stem}.key (0600)."""
        return (
            self.write(f"{stem}.pem", _cert_pem(*chain), 0o644),
            self.write(f"{stem}.key", _key_pem(key)),
        )

    def check(self, cert: str, key: str | None = None, *extra: str) -> Result:
        """Run C{securemsg check --cert CERT [--key KEY] EXTRA}."""
        arguments = ["check", "--cert", cert]
        if key is not None:
            arguments += ["--key", key]
        return _run(*arguments, *extra)

    def assertLine(self, result: Result, level: str, fragment: str) -> str:
        """One line of C{result} has C{level} and contains C{fragment}."""
        prefix = f"{level:<4} "
        for line in result.lines:
            if line.startswith(prefix) and fragment in line:
                return line
        self.fail(f"no {level!r} line with {fragment!r} in:\n{result.stdout}")

    def assertNoLevel(self, result: Result, level: str) -> None:
        """No line of C{result} has C{level}."""
        found = [line for line in result.lines if line.startswith(f"{level:<4} ")]
        self.assertEqual(found, [], result.stdout)

    def assertPassed(self, result: Result, warnings: int = 0) -> None:
        """Exit 0, nothing on stderr, no FAIL, and C{warnings} warnings."""
        self.assertEqual((result.code, result.stderr), (0, ""), result)
        self.assertNoLevel(result, "FAIL")
        shown = "no warnings" if not warnings else f"{warnings} warning"
        self.assertIn(f"check passed: no problems, {shown}", result.lines[-1])

    def assertFailed(self, result: Result, fragment: str) -> str:
        """Exit 1, nothing on stderr, and a FAIL line containing C{fragment}."""
        self.assertEqual((result.code, result.stderr), (1, ""), result)
        self.assertTrue(result.lines[-1].startswith("check FAILED: "), result)
        return self.assertLine(result, "FAIL", fragment)


class SelfSignedTests(_CheckTestCase):
    """A self-signed pair as C{securemsg gencert} makes it."""

    def setUp(self) -> None:
        super().setUp()
        cert, key = certs.generate_self_signed(["chat.example.org"])
        self.cert = self.path("certificate.pem")
        self.key = self.path("private.key")
        certs.write_certificate(self.cert, cert, force=False)
        certs.write_private_key(self.key, key, None, force=False)
        self.certificate = cert

    def test_good_pair(self) -> None:
        """A fresh gencert pair passes with no warnings, one line per check."""
        result = self.check(self.cert, self.key)
        self.assertPassed(result)
        self.assertLine(result, "ok", f"certificate {self.cert} valid until")
        self.assertLine(result, "ok", "days left)")
        self.assertLine(result, "ok", "chat.example.org, localhost, 127.0.0.1, ::1")
        self.assertLine(result, "ok", "chain: one self-signed certificate")
        self.assertLine(result, "ok", "matches the certificate")
        self.assertLine(result, "ok", "ECDSA P-256, not encrypted")
        self.assertLine(result, "ok", "mode 0600")
        self.assertLine(result, "info", certs.fingerprint(self.certificate))
        for line in result.lines[:-1]:
            self.assertTrue(line.startswith(LEVELS), line)

    def test_days_left(self) -> None:
        """The ok line for the dates gives the expiry and the days left."""
        now = self.certificate.not_valid_after_utc - datetime.timedelta(
            days=100, hours=1
        )
        report = run_check(self.cert, passphrases=tls.PassphraseSource(), now=now)
        expiry = self.certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
        self.assertIn(
            f"ok   certificate {self.cert} valid until {expiry} (100 days left)",
            report.lines,
        )

    def test_key_beside_certificate(self) -> None:
        """Without --key the key is private.key beside the certificate."""
        result = self.check(self.cert)
        self.assertPassed(result)
        self.assertLine(result, "ok", f"private key {self.key} matches")

    def test_key_in_certificate_file(self) -> None:
        """Without --key, a key inside the certificate file is used."""
        combined = self.write(
            "combined.pem",
            Path(self.key).read_bytes() + Path(self.cert).read_bytes(),
        )
        result = self.check(combined)
        self.assertPassed(result)
        self.assertLine(result, "ok", f"private key (in {combined}) matches")

    def test_world_readable_key(self) -> None:
        """A key file others can read is a warning, not a failure."""
        os.chmod(self.key, 0o644)
        result = self.check(self.cert, self.key)
        self.assertPassed(result, warnings=1)
        line = self.assertLine(result, "warn", "accessible by group or others")
        self.assertIn("mode 0644", line)

    def test_mismatched_key(self) -> None:
        """A key that belongs to another certificate fails."""
        _, other = certs.generate_self_signed()
        certs.write_private_key(self.path("other.key"), other, None, force=False)
        result = self.check(self.cert, self.path("other.key"))
        self.assertFailed(result, "does not match certificate")

    def test_missing_key(self) -> None:
        """A key file that is not there is a FAIL line."""
        result = self.check(self.cert, self.path("nope.key"))
        line = self.assertFailed(result, "not found")
        self.assertTrue(
            line.endswith(f"private key file {self.path('nope.key')} not found"), line
        )

    def test_missing_default_key(self) -> None:
        """
        When no --key is given and there is no private.key beside the
        certificate, the FAIL line says how to name the key file.
        """
        os.unlink(self.key)
        result = self.check(self.cert)
        line = self.assertFailed(result, "not found")
        self.assertTrue(
            line.endswith(
                f"private key file {self.key} not found (give its path with --key)"
            ),
            line,
        )


class PassphraseTests(_CheckTestCase):
    """An encrypted key, and the passphrase sources the server has."""

    def setUp(self) -> None:
        super().setUp()
        cert, key = certs.generate_self_signed()
        self.cert = self.path("certificate.pem")
        self.key = self.path("private.key")
        certs.write_certificate(self.cert, cert, force=False)
        certs.write_private_key(self.key, key, PASSPHRASE.encode(), force=False)
        self.right = self.write("right.txt", f"{PASSPHRASE}\n".encode())
        self.wrong = self.write("wrong.txt", b"not it\n")

    def test_right_passphrase_file(self) -> None:
        """The right --key-passphrase-file opens the key."""
        result = self.check(self.cert, self.key, "--key-passphrase-file", self.right)
        self.assertPassed(result)
        self.assertLine(result, "ok", "encrypted, passphrase accepted")

    def test_right_passphrase_environment(self) -> None:
        """SECUREMSG_KEY_PASSPHRASE opens the key too."""
        self.environment(PASSPHRASE)
        result = self.check(self.cert, self.key)
        self.assertPassed(result)
        self.assertLine(result, "ok", "encrypted, passphrase accepted")

    def test_prompt_on_terminal(self) -> None:
        """On a terminal the passphrase is asked for, as the server does."""
        asked: list[str] = []

        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        def getpass(prompt: str) -> str:
            asked.append(prompt)
            return PASSPHRASE

        self.patch(sys, "stdin", Terminal())
        self.patch(tls, "getpass", getpass)
        result = self.check(self.cert, self.key)
        self.assertPassed(result)
        self.assertEqual(asked, [f"Passphrase for {self.key}: "])

    def test_wrong_passphrase(self) -> None:
        """A wrong passphrase is a FAIL line."""
        result = self.check(self.cert, self.key, "--key-passphrase-file", self.wrong)
        self.assertFailed(result, "wrong passphrase for private key")

    def test_missing_passphrase(self) -> None:
        """No passphrase from anywhere is a FAIL line saying where to give one."""
        result = self.check(self.cert, self.key)
        line = self.assertFailed(result, "is encrypted")
        self.assertIn("--key-passphrase-file", line)

    def test_unreadable_passphrase_file(self) -> None:
        """A passphrase file that is not there is a FAIL line."""
        result = self.check(
            self.cert, self.key, "--key-passphrase-file", self.path("nope.txt")
        )
        self.assertFailed(result, "cannot read passphrase file")


class DatesAndContentTests(_CheckTestCase):
    """What is inside the server certificate."""

    def setUp(self) -> None:
        super().setUp()
        self.ca = _certs.make_ca()

    def pair(self, pair: _certs.Pair) -> Result:
        """Check C{pair}, served alone."""
        return self.check(*pair.write(self.directory))

    def test_expired(self) -> None:
        """An expired certificate fails, as it stops the server."""
        result = self.pair(_certs.issue(self.ca, days_valid=(-30, -1)))
        self.assertFailed(result, "server.pem expired on")

    def test_not_yet_valid(self) -> None:
        """A certificate from the future fails, pointing at the clock."""
        result = self.pair(_certs.issue(self.ca, days_valid=(2, 30)))
        line = self.assertFailed(result, "server.pem is not valid until")
        self.assertIn("check the system clock", line)

    def test_expiring_soon(self) -> None:
        """Expiry within 14 days is a warning; the check still passes."""
        result = self.pair(_certs.issue(self.ca, days_valid=(-1, 5)))
        self.assertPassed(result, warnings=1)
        self.assertLine(result, "warn", "server.pem expires in 4 days")

    def test_no_subject_alt_name(self) -> None:
        """A certificate without subjectAltName fails."""
        result = self.pair(_certs.issue(self.ca, []))
        self.assertFailed(result, "server.pem has no subjectAltName")

    def test_client_certificate(self) -> None:
        """An extendedKeyUsage without serverAuth fails."""
        result = self.pair(_certs.issue(self.ca, client=True))
        line = self.assertFailed(result, "does not include serverAuth")
        self.assertIn("clientAuth", line)

    def test_small_rsa_key(self) -> None:
        """An RSA key under 2048 bits fails."""
        weak = 1024  # the point of the test
        key = rsa.generate_private_key(public_exponent=65537, key_size=weak)
        cert = leaf_with_key(self.ca.certificate.subject, self.ca.key, key)
        result = self.check(*self.write_pair([cert], key))
        self.assertFailed(result, "RSA key of 1024 bits is too weak")

    def test_rsa_2048(self) -> None:
        """An RSA key of 2048 bits is fine."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = leaf_with_key(self.ca.certificate.subject, self.ca.key, key)
        result = self.check(*self.write_pair([cert], key))
        self.assertPassed(result)
        self.assertLine(result, "ok", "certificate key RSA 2048-bit")

    def test_p521_key(self) -> None:
        """An elliptic curve other than P-256 and P-384 fails."""
        key = ec.generate_private_key(ec.SECP521R1())
        cert = leaf_with_key(self.ca.certificate.subject, self.ca.key, key)
        result = self.check(*self.write_pair([cert], key))
        self.assertFailed(result, "ECDSA P-521 key")

    def test_p384_key(self) -> None:
        """P-384 is fine."""
        key = ec.generate_private_key(ec.SECP384R1())
        cert = leaf_with_key(self.ca.certificate.subject, self.ca.key, key)
        result = self.check(*self.write_pair([cert], key))
        self.assertPassed(result)

    def test_sha1_signature(self) -> None:
        """
        A SHA-1 signature fails.  C{cryptography} no longer makes or verifies
        them, so pyOpenSSL makes one, and the chain is still understood.
        """
        from OpenSSL import crypto

        key = ec.generate_private_key(ec.SECP256R1())
        pkey = crypto.PKey.from_cryptography_key(key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            legacy = crypto.X509()
            legacy.get_subject().CN = "localhost"
            legacy.set_issuer(legacy.get_subject())
            legacy.set_pubkey(pkey)
            legacy.set_serial_number(1)
            legacy.gmtime_adj_notBefore(-3600)
            legacy.gmtime_adj_notAfter(86400 * 30)
            legacy.sign(pkey, "sha1")
        cert = legacy.to_cryptography()
        result = self.check(*self.write_pair([cert], key))
        self.assertFailed(result, "certificate is signed with SHA-1")
        self.assertLine(result, "ok", "chain: one self-signed certificate")

    def test_control_characters(self) -> None:
        """Names from a certificate cannot put control characters on the screen."""
        result = self.pair(_certs.issue(self.ca, common_name="evil\x1b[2J\nname"))
        self.assertPassed(result)
        self.assertNotIn("\x1b", result.stdout)
        self.assertLine(result, "info", "CN=evil\\x1b[2J\\nname")


class ChainTests(_CheckTestCase):
    """The certificate file's chain: order, completeness, where it ends."""

    def setUp(self) -> None:
        super().setUp()
        self.root = _certs.make_ca("securemsg test root")
        self.intermediate = make_intermediate(self.root)
        self.leaf = _certs.issue(self.intermediate)

    def serve(self, *chain: _certs.Pair, key: _certs.Pair | None = None) -> Result:
        """Check a file holding C{chain}, with the key of C{key} (or C{chain[0]})."""
        return self.check(
            *self.write_pair(
                [pair.certificate for pair in chain], (key or chain[0]).key
            )
        )

    def test_leaf_and_intermediate(self) -> None:
        """
        Leaf then intermediate passes; each certificate is listed, and the
        chain ends at the root, which clients must trust.
        """
        result = self.serve(self.leaf, self.intermediate)
        self.assertPassed(result)
        self.assertLine(
            result,
            "info",
            "1. CN=localhost, issued by CN=securemsg test intermediate",
        )
        self.assertLine(
            result,
            "info",
            "2. CN=securemsg test intermediate, issued by CN=securemsg test root",
        )
        self.assertLine(result, "ok", "chain order: each certificate is signed by")
        self.assertIn(
            "info chain ends at CN=securemsg test root; clients must trust that issuer",
            result.lines,
        )

    def test_root_served(self) -> None:
        """A chain up to its root passes, with a warning that the root is extra."""
        result = self.serve(self.leaf, self.intermediate, self.root)
        self.assertPassed(result, warnings=1)
        self.assertLine(result, "ok", "chain complete up to the root")
        self.assertLine(result, "warn", "includes the root certificate")

    def test_leaf_alone(self) -> None:
        """
        A CA-issued certificate alone passes; the report says where the chain
        ends and that an intermediate may be missing.
        """
        result = self.serve(self.leaf)
        self.assertPassed(result)
        line = self.assertLine(result, "info", "chain ends at CN=securemsg test")
        self.assertIn("add its certificate after the server certificate", line)

    def test_wrong_order(self) -> None:
        """Intermediate first, then the leaf, fails and gives the right order."""
        result = self.serve(self.intermediate, self.leaf, key=self.leaf)
        self.assertFailed(result, "wrong order")
        self.assertLine(result, "FAIL", "put them in the order 2, 1")
        self.assertLine(result, "FAIL", "matches certificate 2")
        # The rest of the checks are about the server certificate, wherever
        # it is in the file.
        self.assertLine(result, "ok", "certificate names (subjectAltName): localhost")
        line = self.assertLine(result, "info", "2. CN=localhost")
        self.assertIn(certs.fingerprint(self.leaf.certificate), line)

    def test_root_in_the_middle(self) -> None:
        """Leaf, root, intermediate: the right order is 1, 3, 2."""
        result = self.serve(self.leaf, self.root, self.intermediate)
        self.assertFailed(result, "put them in the order 1, 3, 2")

    def test_unrelated_certificate(self) -> None:
        """A certificate that signed nothing in the chain fails."""
        stranger = make_intermediate(_certs.make_ca("other root"), "other intermediate")
        result = self.serve(self.leaf, stranger)
        line = self.assertFailed(result, "certificate 2 (CN=other intermediate)")
        self.assertIn("signed none of the certificates", line)

    def test_duplicate(self) -> None:
        """The same intermediate twice fails as a copy."""
        result = self.serve(self.leaf, self.intermediate, self.intermediate)
        self.assertFailed(result, "certificate 3 is a copy of certificate 2")

    def test_issuer_not_a_ca(self) -> None:
        """A certificate signed by a non-CA certificate fails."""
        not_ca = _certs.issue(self.root, common_name="not a CA")
        leaf = _certs.issue(not_ca)
        result = self.serve(leaf, not_ca)
        self.assertFailed(result, "is not a CA")

    def test_expired_intermediate(self) -> None:
        """An expired intermediate fails even when the leaf is fine."""
        old = make_intermediate(self.root, "old intermediate", days_valid=(-30, -1))
        leaf = _certs.issue(old, days_valid=(-1, 30))
        result = self.serve(leaf, old)
        self.assertFailed(result, "chain certificate 2 (CN=old intermediate) expired")


class ClientCATests(_CheckTestCase):
    """--client-ca and --crl, with CAs made by L{securemsg.admin.ca}."""

    def setUp(self) -> None:
        super().setUp()
        cert, key = certs.generate_self_signed()
        self.cert = self.path("certificate.pem")
        certs.write_certificate(self.cert, cert, force=False)
        certs.write_private_key(self.path("private.key"), key, None, force=False)
        self.ca_dir = self.path("ca")
        ca.init_ca(self.ca_dir)
        self.paths = ca.ca_paths(self.ca_dir)

    def with_ca(self, client_ca: str, crl: str | None = None) -> Result:
        extra = ["--client-ca", client_ca]
        if crl is not None:
            extra += ["--crl", crl]
        return self.check(self.cert, None, *extra)

    def test_good_ca_and_crl(self) -> None:
        """A CA from C{securemsg ca init} and its CRL pass."""
        result = self.with_ca(self.paths.certificate, self.paths.crl)
        self.assertPassed(result)
        self.assertLine(result, "ok", "(CN=securemsg CA): a CA, valid until")
        self.assertLine(result, "ok", "signed by CN=securemsg CA, no revoked")

    def test_client_ca_without_crl(self) -> None:
        """
        A client CA without a CRL passes with a warning: the server would
        accept revoked certificates.
        """
        result = self.with_ca(self.paths.certificate)
        self.assertPassed(result, warnings=1)
        self.assertLine(
            result,
            "warn",
            f"client CA {self.paths.certificate} given without a CRL (--crl): the"
            " server would accept revoked client certificates (give the CA's"
            " crl.pem with --crl)",
        )

    def test_not_a_ca(self) -> None:
        """A server certificate given as the client CA fails."""
        result = self.with_ca(self.cert)
        self.assertFailed(result, "is not a CA")

    def test_no_key_cert_sign(self) -> None:
        """A CA:TRUE certificate whose keyUsage lacks keyCertSign fails."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder("half a CA", _name("half a CA"), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(_key_usage(key_cert_sign=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        result = self.with_ca(self.write("half.pem", _cert_pem(cert)))
        self.assertFailed(result, "lacks keyCertSign")

    def test_missing_client_ca(self) -> None:
        """A client CA file that is not there is a FAIL line."""
        result = self.with_ca(self.path("nope.pem"))
        self.assertFailed(result, "client CA file")

    def test_crl_expired(self) -> None:
        """A CRL past its nextUpdate fails."""
        ca.init_ca(
            self.ca_dir,
            force=True,
            crl_days=1,
            now=_certs.NOW - datetime.timedelta(days=10),
        )
        result = self.with_ca(self.paths.certificate, self.paths.crl)
        line = self.assertFailed(result, "expired on")
        self.assertIn("securemsg ca crl DIR", line)

    def test_crl_expiring_soon(self) -> None:
        """A CRL that expires within 7 days is a warning."""
        ca.init_ca(
            self.ca_dir,
            force=True,
            crl_days=30,
            now=_certs.NOW - datetime.timedelta(days=25),
        )
        result = self.with_ca(self.paths.certificate, self.paths.crl)
        self.assertPassed(result, warnings=1)
        self.assertLine(result, "warn", "expires in 4 days")

    def test_crl_from_ca_made_again(self) -> None:
        """A CRL from another CA of the same name fails: its key did not sign it."""
        other = ca.ca_paths(self.path("other"))
        ca.init_ca(other.directory)
        result = self.with_ca(self.paths.certificate, other.crl)
        self.assertFailed(result, "did not sign it")

    def test_crl_from_other_ca(self) -> None:
        """A CRL from a differently named CA fails."""
        other = ca.ca_paths(self.path("other"))
        ca.init_ca(other.directory, name="other CA")
        result = self.with_ca(self.paths.certificate, other.crl)
        self.assertFailed(result, "is issued by CN=other CA, not by the client CA")

    def test_crl_garbage(self) -> None:
        """A file that is not a CRL fails."""
        result = self.with_ca(self.paths.certificate, self.write("crl.pem", b"junk"))
        self.assertFailed(result, "cannot parse the CRL")

    def test_crl_without_client_ca(self) -> None:
        """--crl without --client-ca is a usage error."""
        result = _run("check", "--cert", self.cert, "--crl", self.paths.crl)
        self.assertEqual((result.code, result.stdout), (2, ""))
        self.assertIn("--crl needs --client-ca", result.stderr)

    def test_run_check_crl_without_client_ca(self) -> None:
        """Through the API, a CRL without a client CA is a problem."""
        report = run_check(
            self.cert, passphrases=tls.PassphraseSource(), crl=self.paths.crl
        )
        self.assertFalse(report.ok)
        self.assertIn("without the client CA", report.problems[0])


class FileAndUsageTests(_CheckTestCase):
    """Missing files, bad command lines, and the L{run_check} API."""

    def test_missing_certificate(self) -> None:
        """A missing certificate file is a FAIL line and exit 1, no traceback."""
        result = self.check(self.path("nope.pem"))
        self.assertFailed(result, "certificate file")
        self.assertLine(result, "FAIL", "not found (make one with: securemsg gencert)")
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_not_a_certificate(self) -> None:
        """A file with no PEM certificate is a FAIL line."""
        result = self.check(self.write("junk.pem", b"hello\n"))
        self.assertFailed(result, "no PEM certificate found")

    def test_unreadable_certificate(self) -> None:
        """A directory given as the certificate is a FAIL line."""
        result = self.check(str(self.directory))
        self.assertFailed(result, "cannot read certificate file")

    def test_unexpected_argument(self) -> None:
        """A positional argument is a usage error."""
        result = _run("check", "certificate.pem")
        self.assertEqual(result.code, 2)
        self.assertIn("unexpected argument", result.stderr)

    def test_empty_path(self) -> None:
        """An empty file name is a usage error."""
        result = _run("check", "--cert", "")
        self.assertEqual(result.code, 2)
        self.assertIn("--cert needs a file name", result.stderr)

    def test_help(self) -> None:
        """--help lists the options; the command is in the top-level help."""
        result = _run("check", "--help")
        self.assertEqual(result.code, 0)
        for option in ("--cert", "--key", "--key-passphrase-file", "--client-ca"):
            self.assertIn(option, result.stdout)
        self.assertIn("check", _run("--help").stdout)

    def test_run_check_report(self) -> None:
        """L{run_check} returns problems, warnings and lines, and takes a time."""
        cert, key = certs.generate_self_signed(days=30)
        cert_path = self.path("certificate.pem")
        certs.write_certificate(cert_path, cert, force=False)
        certs.write_private_key(self.path("private.key"), key, None, force=False)
        passphrases = tls.PassphraseSource()

        soon = run_check(
            cert_path,
            passphrases=passphrases,
            now=_certs.NOW + datetime.timedelta(days=20),
        )
        self.assertTrue(soon.ok)
        self.assertEqual(soon.exit_code, 0)
        self.assertEqual(soon.problems, [])
        self.assertEqual(len(soon.warnings), 1)
        self.assertTrue(
            soon.warnings[0].startswith(f"certificate {cert_path} expires in")
        )
        self.assertEqual(soon.lines[-1], "check passed: no problems, 1 warning")
        self.assertEqual(soon.text(), "".join(f"{line}\n" for line in soon.lines))

        later = run_check(
            cert_path,
            self.path("private.key"),
            passphrases=passphrases,
            now=_certs.NOW + datetime.timedelta(days=40),
        )
        self.assertFalse(later.ok)
        self.assertEqual(later.exit_code, 1)
        self.assertEqual(len(later.problems), 1)
        self.assertTrue(
            later.problems[0].startswith(f"certificate {cert_path} expired on")
        )
        self.assertIn(f"FAIL {later.problems[0]}", later.lines)
        self.assertEqual(later.lines[-1], "check FAILED: 1 problem, no warnings")
