"""
Certificates made at test time: a small CA, certificates it signs, and
odd ones (expired, no SubjectAltName) that real life produces.

Keys are ECDSA P-256, which is fast to generate, unless a test gives its
own (an RSA key, say).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Pair:
    """A certificate and its key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def write(
        self, directory: Path, stem: str = "server", passphrase: bytes | None = None
    ) -> tuple[str, str]:
        """Write C{stem}.pem and C{stem}.key; return their paths."""
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem())
        key_path.write_bytes(self.key_pem(passphrase))
        key_path.chmod(0o600)
        return str(cert_path), str(key_path)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _general_name(name: str) -> x509.GeneralName:
    if name.startswith("securemsg:user:"):
        # The name a client certificate gives (securemsg.ca).
        return x509.UniformResourceIdentifier(name)
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_ca(common_name: str = "securemsg test CA") -> Pair:
    """A self-signed certificate authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return Pair(certificate, key)


def issue(
    ca: Pair,
    names: list[str] | None = None,
    *,
    common_name: str | None = None,
    days_valid: tuple[int, int] = (-1, 30),
    client: bool = False,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
) -> Pair:
    """
    A certificate signed by C{ca} for C{names} (DNS names or IPs) in its
    SubjectAltName; C{names=[]} leaves the SubjectAltName out.

    @param days_valid: not-before and not-after, in days from now.
    @param key: the certificate's key; a new P-256 key if not given.
    """
    if names is None:
        names = ["localhost", "127.0.0.1", "::1"]
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    start, end = days_valid
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name or (names[0] if names else "localhost")))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + datetime.timedelta(days=start))
        .not_valid_after(NOW + datetime.timedelta(days=end))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [
                    ExtendedKeyUsageOID.CLIENT_AUTH
                    if client
                    else ExtendedKeyUsageOID.SERVER_AUTH
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]),
            critical=False,
        )
    return Pair(builder.sign(ca.key, hashes.SHA256()), key)


_default: tuple[Pair, Pair] | None = None


def default_ca_and_server() -> tuple[Pair, Pair]:
    """One CA and a localhost server certificate, shared by all tests."""
    global _default
    if _default is None:
        ca = make_ca()
        _default = (ca, issue(ca))
    return _default
