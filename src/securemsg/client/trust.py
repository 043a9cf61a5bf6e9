# -*- test-case-name: tests.test_trust -*-
"""
How the securemsg client decides to trust a server.

Either the server's certificate chains to a trusted root (a CA file given
with C{--ca}, such as the server's own self-signed certificate, or the
system's trust store) and names the host we asked for; or its SHA-256
fingerprint equals a pin (C{--pin}).  There is no way to turn checking off.
A pin does not make an expired certificate acceptable: that takes
C{--allow-expired} as well, and is reported as a warning.

Twisted's C{optionsForClientTLS} builds the connection; this module replaces
its per-connection verify callback with one that also refuses a certificate
without a SubjectAltName (Twisted's check only logs that case and goes on)
and that records why a check failed and what fingerprint it saw, so the
user can be told in one line.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _openssl_lib
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import extract_patterns
from service_identity.hazmat import (
    DNS_ID,
    IPAddress_ID,
    ServiceID,
    verify_service_identity,
)
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from securemsg.tls import certs
from securemsg.tls import policy as tls


class TrustError(Exception):
    """A trust setting cannot be used; the message is one line."""


@dataclass
class VerificationReport:
    """
    What the verify callback saw on one connection.

    @ivar fingerprint: the SHA-256 fingerprint of the server's certificate,
        in C{sha256:} form, once it has been seen.
    @ivar problem: why the certificate was refused, if it was.
    @ivar warning: what the user should know about a certificate that was
        accepted all the same (an expired one, pinned with
        C{allow_expired}).
    """

    fingerprint: str | None = None
    problem: str | None = None
    names: list[str] = field(default_factory=list)
    warning: str | None = None


# OpenSSL's X509_V_ERR codes the user can act on, in plain words.
_X509_PROBLEMS = {
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "unknown issuer (self-signed certificate not trusted; use --ca or --pin)",
    19: "unknown issuer (self-signed certificate in chain not trusted)",
    20: "unknown issuer (no trusted certificate issued it; use --ca or --pin)",
    21: "unknown issuer (unable to verify the first certificate)",
}


def _x509_problem(errno: int) -> str:
    known = _X509_PROBLEMS.get(errno)
    if known is not None:
        return known
    text = _ffi.string(_openssl_lib.X509_verify_cert_error_string(errno))
    return f"certificate refused: {text.decode('ascii', 'replace')}"


def _service_id(hostname: str) -> ServiceID:
    if isIPAddress(hostname) or isIPv6Address(hostname):
        return IPAddress_ID(hostname)
    return DNS_ID(hostname)


def load_client_certificate(
    cert_path: str,
    key_path: str | None,
    passphrases: tls.PassphraseSource | None = None,
) -> PrivateCertificate:
    """
    Load a client certificate and key to present to servers that ask for
    one, with the same key rules and passphrase sources as the server.

    @raise TrustError: if they cannot be used.
    """
    try:
        credentials = tls.load_credentials(cert_path, key_path, passphrases)
    except tls.TLSConfigError as error:
        raise TrustError(str(error)) from None
    client_certificate: PrivateCertificate = (
        PrivateCertificate.fromCertificateAndKeyPair(
            Certificate(crypto.X509.from_cryptography(credentials.certificate)),
            KeyPair(crypto.PKey.from_cryptography_key(credentials.key)),
        )
    )
    return client_certificate


def _load_roots(ca_path: str) -> list[Certificate]:
    try:
        data = Path(ca_path).read_bytes()
    except OSError as error:
        raise TrustError(f"cannot read CA file {ca_path}: {error.strerror}") from None
    try:
        roots = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TrustError(f"{ca_path} holds no PEM certificate") from None
    return [Certificate(crypto.X509.from_cryptography(root)) for root in roots]


@implementer(IOpenSSLClientConnectionCreator)
class ServerVerifier:
    """
    Client-side TLS that verifies the server, by CA and name or by pin.

    @ivar report: what the last connection's check saw.
    """

    def __init__(
        self,
        hostname: str,
        *,
        ca_path: str | None = None,
        pin: str | None = None,
        client_certificate: PrivateCertificate | None = None,
        allow_expired: bool = False,
    ) -> None:
        """
        @param hostname: the name the server's certificate must carry (not
            checked when pinned).
        @param ca_path: PEM file of trusted roots; L{None} for the system's.
        @param pin: C{sha256:HEX} fingerprint the server's certificate must
            have; replaces CA and name checks, but not the expiry date.
        @param allow_expired: with C{pin}, accept the pinned certificate
            even after it has expired, with a L{VerificationReport.warning}.
        @raise TrustError: for an unusable CA file or pin, or
            C{allow_expired} without a pin.
        """
        if allow_expired and pin is None:
            raise TrustError("--allow-expired needs --pin")
        self.hostname = hostname
        self.report = VerificationReport()
        self._allow_expired = allow_expired
        self._pin: bytes | None = None
        self._make_connection: Callable[[TLSMemoryBIOProtocol], SSL.Connection]
        if pin is not None:
            try:
                self._pin = certs.parse_fingerprint(pin)
            except ValueError as error:
                raise TrustError(f"--pin: {error}") from None
            options = CertificateOptions(
                privateKey=client_certificate.privateKey.original
                if client_certificate
                else None,
                certificate=client_certificate.original if client_certificate else None,
                raiseMinimumTo=TLSVersion.TLSv1_2,
            )
            self._make_connection = options.clientConnectionForTLS
            self._send_server_name = not (
                isIPAddress(hostname) or isIPv6Address(hostname)
            )
        else:
            trust_root = (
                trustRootFromCertificates(_load_roots(ca_path))
                if ca_path is not None
                else platformTrust()
            )
            creator = optionsForClientTLS(
                hostname, trustRoot=trust_root, clientCertificate=client_certificate
            )
            self._make_connection = creator.clientConnectionForTLS
            self._send_server_name = False  # optionsForClientTLS does it.
        self._service_id = _service_id(hostname)

    def clientConnectionForTLS(
        self, tlsProtocol: TLSMemoryBIOProtocol
    ) -> SSL.Connection:
        connection = self._make_connection(tlsProtocol)
        if self._send_server_name:
            connection.set_tlsext_host_name(self.hostname.encode("idna"))
        report = self.report = VerificationReport()
        callback = self._check_pin if self._pin is not None else self._check_chain

        def verify(
            conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
        ) -> bool:
            # An exception escaping an OpenSSL callback is lost; never raise.
            try:
                if report.fingerprint is None:
                    # Failures deeper in the chain come before the leaf is
                    # seen; take it from the chain so it can be reported.
                    chain = conn.get_peer_cert_chain()
                    if chain:
                        self._see(report, chain[0])
                return callback(report, cert, errno, depth, bool(ok))
            except Exception as error:
                report.problem = f"certificate check failed: {error}"
                return False

        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection

    def _see(self, report: VerificationReport, cert: crypto.X509) -> x509.Certificate:
        leaf = cert.to_cryptography()
        report.fingerprint = certs.fingerprint(leaf)
        report.names = certs.subject_alt_names(leaf)
        return leaf

    def _check_pin(
        self,
        report: VerificationReport,
        cert: crypto.X509,
        errno: int,
        depth: int,
        ok: bool,
    ) -> bool:
        if depth != 0:
            return True  # Only the pinned certificate matters, not its chain.
        leaf = self._see(report, cert)
        assert self._pin is not None
        if not hmac.compare_digest(leaf.fingerprint(hashes.SHA256()), self._pin):
            report.problem = (
                "pin mismatch: the server's certificate is not the pinned one"
            )
            return False
        # OpenSSL's own date check is among the errors a pin overrides (the
        # certificate chains to nothing trusted), so check the date here.
        expired = leaf.not_valid_after_utc
        if expired < datetime.now(UTC):
            when = certs.format_date(expired)
            if not self._allow_expired:
                report.problem = (
                    f"certificate has expired (on {when}); a pin accepts an"
                    " expired certificate only with --allow-expired"
                )
                return False
            report.warning = (
                f"the server's certificate expired on {when};"
                " accepted because of --allow-expired"
            )
        return True

    def _check_chain(
        self,
        report: VerificationReport,
        cert: crypto.X509,
        errno: int,
        depth: int,
        ok: bool,
    ) -> bool:
        if not ok:
            if report.problem is None:
                report.problem = _x509_problem(errno)
            return False
        if depth != 0:
            return True
        leaf = self._see(report, cert)
        if not report.names:
            # Twisted (with service-identity) only logs this case and lets
            # the handshake go on, for any hostname.
            report.problem = (
                "certificate has no SubjectAltName, so it names no host; "
                "use --pin to trust it anyway"
            )
            return False
        try:
            verify_service_identity(extract_patterns(leaf), [self._service_id], [])
        except (VerificationError, CertificateError):
            report.problem = (
                f"name mismatch: the certificate is for {', '.join(report.names)}, "
                f"not {self.hostname}"
            )
            return False
        return True
