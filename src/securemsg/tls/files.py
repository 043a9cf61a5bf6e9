# -*- test-case-name: tests.test_files -*-
"""
The one reader of the server's TLS files: the certificate (chain), its
private key, the client CA file and its CRL.

Each reader adds L{Finding}s to a L{Findings} list, one per thing it
checked: C{ok}, C{info}, C{warning} or C{error}, each with one line of
text.  Two callers read the same findings:

  - the server (L{securemsg.tls.policy.load_tls} at start and at each
    reload, and L{securemsg.tls.policy.load_credentials}) raises
    L{TLSConfigError} with the first error and logs the warnings;
  - C{securemsg check} (L{securemsg.tls.inspect.run_check}) prints every
    finding, then the checks only it makes (the chain's order, key
    strength, signature hash, extendedKeyUsage).

So the server refuses to start with exactly what C{check} calls a C{FAIL},
in the same words, and warns about what C{check} calls a C{warn}.

Errors: a file that is missing, unreadable or holds no usable PEM data; a
key encrypted without a passphrase, with a wrong one, of an unsupported
type, or not matching the certificate; a server certificate that has
expired, is not valid yet, or names no DNS name or IP address in a
subjectAltName (clients refuse all of these); a client CA that is not a CA,
may not sign certificates, has expired or is not valid yet; a CRL given
without a client CA, not signed by the client CA, not valid yet or past its
nextUpdate (OpenSSL would then refuse every client certificate).

Warnings: a certificate (or client CA) that expires within
L{CERTIFICATE_WARNING_DAYS} days; a CRL within L{CRL_WARNING_DAYS} days of
its nextUpdate, or without one; a key file its group or others can read or
write; a client CA without a CRL (revoking a certificate would do nothing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from securemsg.tls import certs
from securemsg.tls.certs import PROGRAM, describe_os_error, format_date, format_days

__all__ = [
    "CERTIFICATE_WARNING_DAYS",
    "CRL_WARNING_DAYS",
    "PASSPHRASE_ENVIRONMENT_VARIABLE",
    "Finding",
    "Findings",
    "Passphrases",
    "TLSConfigError",
    "check_dates",
    "check_key_matches",
    "check_revocation",
    "check_server_certificate",
    "client_ca_name",
    "is_ca",
    "key_kind",
    "read_certificates",
    "read_client_cas",
    "read_crl",
    "read_private_key",
]

CERTIFICATE_WARNING_DAYS: Final = 14
"""A certificate expiring within this many days is warned about."""

CRL_WARNING_DAYS: Final = 7
"""A CRL whose nextUpdate is within this many days is warned about."""

PASSPHRASE_ENVIRONMENT_VARIABLE: Final = "SECUREMSG_KEY_PASSPHRASE"  # noqa: S105
"""Where a server finds its key's passphrase when no file names it."""

_CURVES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

Level = Literal["ok", "info", "warning", "error"]


class TLSConfigError(Exception):
    """
    The TLS configuration cannot be used.  The message is one line that says
    what is wrong and how to fix it, fit to show an operator as it is.
    """


@dataclass(frozen=True)
class Finding:
    """
    One thing a reader checked.

    @ivar level: C{"ok"}: it is fine; C{"info"}: neither good nor bad news;
        C{"warning"}: worth fixing, but the server serves; C{"error"}: the
        server refuses to serve with it.
    @ivar message: one line for a person.
    """

    level: Level
    message: str


@dataclass
class Findings:
    """The findings of one or more readers, in the order they were made."""

    items: list[Finding] = field(default_factory=list)

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.items)

    def ok(self, message: str) -> None:
        """Record a check that passed."""
        self.items.append(Finding("ok", message))

    def info(self, message: str) -> None:
        """Record a line that is neither good nor bad news."""
        self.items.append(Finding("info", message))

    def warn(self, message: str) -> None:
        """Record a warning."""
        self.items.append(Finding("warning", message))

    def error(self, message: str) -> None:
        """Record a problem that stops the server."""
        self.items.append(Finding("error", message))

    def messages(self, level: Level) -> list[str]:
        """The messages of the findings of C{level}."""
        return [finding.message for finding in self.items if finding.level == level]

    def raise_first_error(self) -> None:
        """
        @raise TLSConfigError: with the first error's message, if any.
        """
        errors = self.messages("error")
        if errors:
            raise TLSConfigError(errors[0])


class Passphrases(Protocol):
    """Where an encrypted key's passphrase comes from (C{PassphraseSource})."""

    def get(self, key_path: str) -> bytes | None:
        """
        The passphrase, or L{None} if there is none.

        @raise TLSConfigError: if its source cannot be used.
        """


def _count(number: int, noun: str) -> str:
    if number == 0:
        return f"no {noun}s"
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _name(name: x509.Name) -> str:
    return name.rfc4514_string() or "(empty name)"


def key_kind(key: CertificatePublicKeyTypes) -> str:
    """What kind of key C{key} is: C{ECDSA P-256}, C{RSA 2048-bit}..."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}-bit"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {_CURVES.get(key.curve.name, key.curve.name)}"
    return type(key).__name__.removeprefix("_").removesuffix("PublicKey")


# ---------------------------------------------------------------------------
# The certificate and its key


def read_certificates(path: str, findings: Findings) -> list[x509.Certificate]:
    """
    The certificates in the certificate file, server certificate first.

    @return: them, or an empty list after an error.
    """
    try:
        chain = certs.load_certificates(path)
    except FileNotFoundError:
        findings.error(
            f"certificate file {path} not found (make one with: {PROGRAM} gencert)"
        )
        return []
    except OSError as error:
        findings.error(
            f"cannot read certificate file {path}: {describe_os_error(error)}"
        )
        return []
    except ValueError as error:  # load_certificates names the file
        findings.error(str(error))
        return []
    findings.ok(f"certificate file {path}: {_count(len(chain), 'certificate')}")
    return chain


def _key_name(key_path: str, cert_path: str | None) -> str:
    """How messages name the key: in its own file, or in the certificate's."""
    if key_path == cert_path:
        return f"private key (in {key_path})"
    return f"private key {key_path}"


def read_private_key(
    path: str,
    passphrases: Passphrases,
    findings: Findings,
    *,
    not_found_hint: str = "",
    cert_path: str | None = None,
) -> certs.PrivateKey | None:
    """
    Load a PEM private key, asking for its passphrase only if it has one,
    and look at its file's permissions.

    @param not_found_hint: added in brackets if the file does not exist.
    @param cert_path: the certificate file, to say so when the key is in it.
    @return: the key, or L{None} after an error.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        shown = f" ({not_found_hint})" if not_found_hint else ""
        findings.error(f"private key file {path} not found{shown}")
        return None
    except OSError as error:
        findings.error(
            f"cannot read private key file {path}: {describe_os_error(error)}"
        )
        return None
    encrypted_message = (
        f"private key {path} is encrypted: give its passphrase with "
        f"--key-passphrase-file or {PASSPHRASE_ENVIRONMENT_VARIABLE}"
    )
    passphrase = None
    encrypted = b"ENCRYPTED" in data
    if encrypted:
        try:
            passphrase = passphrases.get(path)
        except TLSConfigError as error:
            findings.error(str(error))
            return None
        if passphrase is None:
            findings.error(encrypted_message)
            return None
    try:
        key = load_pem_private_key(data, passphrase)
    except TypeError:
        findings.error(encrypted_message)
        return None
    except ValueError:
        if passphrase is not None:
            # Now and then a wrong passphrase decrypts to data with valid
            # padding, and cryptography then reports unreadable key data.
            findings.error(
                f"wrong passphrase for private key {path} (or the file is damaged)"
            )
        else:
            findings.error(f"{path} does not hold a usable PEM private key")
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        findings.error(
            f"private key {path} is of an unsupported type; use ECDSA or RSA"
        )
        return None
    protection = "encrypted, passphrase accepted" if encrypted else "not encrypted"
    findings.ok(
        f"{_key_name(path, cert_path)}: {key_kind(key.public_key())}, {protection}"
    )
    try:
        permission_warnings = certs.key_file_warnings(path)
    except OSError as error:  # pragma: no cover - it was just read
        findings.warn(f"cannot examine {path}: {describe_os_error(error)}")
    else:
        for warning in permission_warnings:
            findings.warn(warning)
        if not permission_warnings and os.name != "nt":
            mode = os.stat(path).st_mode & 0o777
            findings.ok(f"private key file mode {mode:04o} (owner only)")
    return key


def check_key_matches(
    key: certs.PrivateKey,
    key_path: str,
    cert_path: str,
    chain: Sequence[x509.Certificate],
    findings: Findings,
) -> int | None:
    """
    The key must belong to the first certificate of the file.

    @return: the index in C{chain} of the certificate the key belongs to
        (the first, or another when the file is in the wrong order), or
        L{None}.
    """
    shown = _key_name(key_path, cert_path)
    if certs.key_matches_certificate(key, chain[0]):
        findings.ok(f"{shown} matches the certificate")
        return 0
    other = next(
        (
            index
            for index, cert in enumerate(chain)
            if certs.key_matches_certificate(key, cert)
        ),
        None,
    )
    if other is None:
        findings.error(f"{shown} does not match certificate {cert_path}")
        return None
    findings.error(
        f"{shown} matches certificate {other + 1} in {cert_path}"
        f" ({_name(chain[other].subject)}), not the first: the server"
        " certificate must come first in the file"
    )
    return other


def check_dates(
    cert: x509.Certificate,
    what: str,
    now: datetime,
    findings: Findings,
    *,
    quiet: bool = False,
) -> None:
    """
    An error if C{cert} has expired or is not valid yet, a warning if it
    expires within L{CERTIFICATE_WARNING_DAYS}; with C{quiet}, nothing when
    all is well.

    @param what: how to name the certificate, first words of each message.
    """
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        findings.error(
            f"{what} expired on {format_date(not_after)}"
            f" ({format_days(now - not_after)} ago)"
        )
    elif not_before > now:
        findings.error(
            f"{what} is not valid until {format_date(not_before)};"
            " check the system clock, or wait"
        )
    elif not_after - now <= timedelta(days=CERTIFICATE_WARNING_DAYS):
        findings.warn(
            f"{what} expires in {format_days(not_after - now)},"
            f" on {format_date(not_after)};"
            " renew it"
        )
    elif not quiet:
        findings.ok(
            f"{what} valid until {format_date(not_after)}"
            f" ({format_days(not_after - now)} left)"
        )


def check_server_certificate(
    cert: x509.Certificate, cert_path: str, now: datetime, findings: Findings
) -> None:
    """The server's certificate must be valid now and name a host."""
    what = f"certificate {cert_path}"
    check_dates(cert, what, now, findings)
    names = certs.subject_alt_names(cert)
    if names:
        findings.ok(f"certificate names (subjectAltName): {', '.join(names)}")
        return
    try:
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        findings.error(
            f"{what} has no subjectAltName; modern TLS clients ignore the"
            " common name and refuse it for every host name (make one with:"
            f" {PROGRAM} gencert --host NAME)"
        )
    else:
        findings.error(
            f"{what}'s subjectAltName holds no DNS name or IP address;"
            " clients refuse it for every host name"
        )


# ---------------------------------------------------------------------------
# Mutual TLS: the client CA and its CRL


def is_ca(cert: x509.Certificate) -> bool:
    """Whether C{cert} has basicConstraints C{CA:TRUE}."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def client_ca_name(path: str, cas: Sequence[x509.Certificate], index: int) -> str:
    """How messages name the client CA certificate C{cas[index]} of C{path}."""
    which = f"client CA {path}" if len(cas) == 1 else f"client CA {path} #{index + 1}"
    return f"{which} ({_name(cas[index].subject)})"


def read_client_cas(
    path: str, now: datetime, findings: Findings
) -> list[x509.Certificate]:
    """
    Every certificate in the client CA file must be a CA that may sign
    certificates, and be valid now.

    @return: the certificates that are CAs allowed to sign, to check the
        CRL against.
    """
    try:
        cas = certs.load_certificates(path)
    except FileNotFoundError:
        findings.error(f"client CA file {path} not found")
        return []
    except OSError as error:
        findings.error(f"cannot read client CA file {path}: {describe_os_error(error)}")
        return []
    except ValueError as error:  # load_certificates names the file
        findings.error(f"client CA {error}")
        return []
    usable: list[x509.Certificate] = []
    for index, cert in enumerate(cas):
        what = client_ca_name(path, cas, index)
        if not is_ca(cert):
            findings.error(
                f"{what} is not a CA (no basicConstraints CA:TRUE): give the"
                " certificate of the CA that issues client certificates (made"
                f" with: {PROGRAM} ca init DIR, which writes DIR/ca.pem)"
            )
            continue
        try:
            key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            key_usage = None  # RFC 5280 allows it; OpenSSL accepts it
        if key_usage is not None and not key_usage.key_cert_sign:
            findings.error(
                f"{what} may not sign certificates (its keyUsage lacks keyCertSign)"
            )
            continue
        usable.append(cert)
        before = len(findings.items)
        check_dates(cert, what, now, findings, quiet=True)
        if len(findings.items) == before:
            left = format_days(cert.not_valid_after_utc - now)
            findings.ok(
                f"{what}: a CA, valid until {format_date(cert.not_valid_after_utc)}"
                f" ({left} left)"
            )
    return usable


def _crl_signer(
    crl: x509.CertificateRevocationList, cas: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for ca in cas:
        key = ca.public_key()
        if (
            crl.issuer == ca.subject
            and isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
            and crl.is_signature_valid(key)
        ):
            return ca
    return None


def read_crl(
    path: str,
    client_ca_path: str | None,
    cas: Sequence[x509.Certificate],
    now: datetime,
    findings: Findings,
) -> x509.CertificateRevocationList | None:
    """
    The CRL must parse, be signed by a client CA, and be in date.

    @param client_ca_path: the client CA file (L{None} if none was given).
    @param cas: its usable CAs (L{read_client_cas}).
    @return: the CRL, or L{None} if it cannot be read.
    """
    if client_ca_path is None:
        findings.error(
            f"CRL {path} given without the client CA that signed it (--client-ca)"
        )
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        findings.error(f"CRL file {path} not found")
        return None
    except OSError as error:
        findings.error(f"cannot read CRL file {path}: {describe_os_error(error)}")
        return None
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError as error:
        detail = " ".join((str(error) or type(error).__name__).split())
        findings.error(f"cannot parse the CRL {path}: {detail}")
        return None
    refresh = f"re-sign it with: {PROGRAM} ca crl DIR"
    signer = _crl_signer(crl, cas)
    if client_ca_path is not None and not cas:
        findings.info(
            f"CRL {path} not checked against the client CA, which is unusable"
        )
    elif client_ca_path is not None and signer is None:
        if any(ca.subject == crl.issuer for ca in cas):
            findings.error(
                f"CRL {path} names {_name(crl.issuer)} as its issuer, but that"
                f" CA's key in {client_ca_path} did not sign it (was the CA made"
                " again?)"
            )
        else:
            findings.error(
                f"CRL {path} is issued by {_name(crl.issuer)}, not by the client"
                f" CA in {client_ca_path}"
            )
    last_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if last_update > now:
        findings.error(
            f"CRL {path} is not valid until {format_date(last_update)}; every client"
            " certificate would be refused until then: check the system clock"
        )
    elif next_update is None:
        findings.warn(f"CRL {path} has no nextUpdate, so nothing says when it is stale")
    elif next_update <= now:
        findings.error(
            f"CRL {path} expired on {format_date(next_update)}; every client"
            f" certificate would be refused: {refresh}"
        )
    elif next_update - now <= timedelta(days=CRL_WARNING_DAYS):
        findings.warn(
            f"CRL {path} expires in {format_days(next_update - now)}, on"
            f" {format_date(next_update)}: {refresh}"
        )
    else:
        signed = "" if signer is None else f"signed by {_name(signer.subject)}, "
        findings.ok(
            f"CRL {path}: {signed}{_count(len(crl), 'revoked certificate')},"
            f" next update {format_date(next_update)}"
            f" ({format_days(next_update - now)} left)"
        )
    return crl


def check_revocation(
    client_ca_path: str | None, crl_path: str | None, findings: Findings
) -> None:
    """A warning when client certificates are checked without a CRL."""
    if client_ca_path is not None and crl_path is None:
        findings.warn(
            f"client CA {client_ca_path} given without a CRL (--crl): the"
            " server would accept revoked client certificates (give the CA's"
            " crl.pem with --crl)"
        )
