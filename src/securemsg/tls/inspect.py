# -*- test-case-name: tests.test_check -*-
"""
The checks behind C{securemsg check} (L{securemsg.admin.check}) and
C{twistd securemsg --check}: a pre-flight report on the server's TLS files
before they are served.

L{run_check} looks at the certificate file, the private key and, for mutual
TLS, the client CA file and its CRL, the same way the server reads them
(L{securemsg.tls.policy.key_path_for}, L{securemsg.tls.policy.PassphraseSource},
L{securemsg.tls.policy.load_private_key}), and returns a L{CheckReport}: one line
per check, each starting with C{ok}, C{warn}, C{FAIL} or C{info}, and a
summary line.  Any C{FAIL} makes the report fail.

What is a problem (C{FAIL}) and what only a warning:

  - problems: a file that cannot be read or parsed; a key that is missing,
    encrypted without a passphrase, or does not match the certificate; a
    certificate that has expired or is not yet valid, has no DNS name or IP
    address in its subjectAltName, has an extendedKeyUsage without
    C{serverAuth}, an RSA key under 2048 bits, an elliptic curve other than
    P-256 or P-384, or a SHA-1 or MD5 signature; a chain in the wrong order
    or holding certificates that do not belong to it; a client CA that is
    not a CA; a CRL that is not signed by the client CA, or is past its
    nextUpdate;
  - warnings: a certificate (or client CA) that expires within 14 days; a
    CRL that expires within 7 days; a client CA without a CRL (revoked
    client certificates would be accepted); a key file that its group or
    others can read or write; a root certificate served with a CA-issued
    certificate.

The chain is checked as served: the server certificate first, then each
certificate must have been signed by the next one, verified with
C{cryptography}.  Where it ends is reported, not judged: at a self-signed
root ("complete up to the root"), or at an issuer that is not in the file,
which is normal for a CA-issued certificate (clients hold the root) but
which can also mean an intermediate is missing; only the clients' trust
store can tell which.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from securemsg.tls import certs
from securemsg.tls import policy as tls
from securemsg.tls.certs import PROGRAM, describe_os_error
from securemsg.tls.identity import CRLError, load_crl

__all__ = [
    "CERTIFICATE_WARNING_DAYS",
    "CRL_WARNING_DAYS",
    "CheckReport",
    "run_check",
]

CERTIFICATE_WARNING_DAYS: Final = 14
"""A certificate expiring within this many days is warned about."""

CRL_WARNING_DAYS: Final = 7
"""A CRL whose nextUpdate is within this many days is warned about."""

MINIMUM_RSA_BITS: Final = 2048
"""Smaller RSA keys are a problem: browsers and OpenSSL 3 refuse them."""

#: The curves clients accept in certificates, by cryptography's names.
_CURVES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_GOOD_CURVES: Final = frozenset({"secp256r1", "secp384r1"})

#: Signature hashes clients refuse.
_BROKEN_HASHES: Final = (hashes.SHA1, hashes.MD5)
_HASH_NAMES: Final = {
    "md5": "MD5",
    "sha1": "SHA-1",
    "sha224": "SHA-224",
    "sha256": "SHA-256",
    "sha384": "SHA-384",
    "sha512": "SHA-512",
}

_OK: Final = "ok  "
_WARN: Final = "warn"
_FAIL: Final = "FAIL"
_INFO: Final = "info"


@dataclass
class CheckReport:
    """
    The outcome of L{run_check}.

    @ivar lines: Everything to show, in order: one line per check, each
        starting with C{ok}, C{warn}, C{FAIL} or C{info} and a space, and
        last a summary line.  No line holds a line break or a control
        character.
    @ivar problems: The text of each C{FAIL} line (without the C{FAIL}).
    @ivar warnings: The text of each C{warn} line (without the C{warn}).
    """

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether there is no problem (warnings are allowed)."""
        return not self.problems

    @property
    def exit_code(self) -> int:
        """The exit status for this report: 0 if L{ok}, else 1."""
        return 0 if self.ok else 1

    def text(self) -> str:
        """L{lines} as one string, each line ending in a newline."""
        return "".join(line + "\n" for line in self.lines)

    def passed(self, text: str) -> None:
        """Record a check that passed."""
        self._add(_OK, text)

    def warn(self, text: str) -> None:
        """Record a warning: worth fixing, but the server can serve."""
        self.warnings.append(_printable(text))
        self._add(_WARN, text)

    def fail(self, text: str) -> None:
        """Record a problem."""
        self.problems.append(_printable(text))
        self._add(_FAIL, text)

    def info(self, text: str) -> None:
        """Record a line that is neither good nor bad news."""
        self._add(_INFO, text)

    def _add(self, level: str, text: str) -> None:
        self.lines.append(f"{level} {_printable(text)}")

    def summarize(self) -> None:
        """Add the summary line; call it once, after the last check."""
        counts = (
            f"{_count(len(self.problems), 'problem')},"
            f" {_count(len(self.warnings), 'warning')}"
        )
        verdict = "check passed" if self.ok else "check FAILED"
        self.lines.append(f"{verdict}: {counts}")


def _count(number: int, noun: str) -> str:
    if number == 0:
        return f"no {noun}s"
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _printable(text: str) -> str:
    """
    C{text} on one line with every control character escaped: names in
    certificates come from whoever made them, and must not drive the
    terminal.
    """
    return "".join(
        char if char.isprintable() else repr(char)[1:-1].replace("'", "")
        for char in text
    )


def _date(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _days(span: timedelta) -> str:
    """Whole days in C{span}, as people say it: C{less than a day}, C{1 day}."""
    days = span.days
    if days < 1:
        return "less than a day"
    return "1 day" if days == 1 else f"{days} days"


def _name(name: x509.Name) -> str:
    return name.rfc4514_string() or "(empty name)"


# ---------------------------------------------------------------------------
# Looking at one certificate


def _is_ca(cert: x509.Certificate) -> bool:
    """Whether C{cert} has basicConstraints C{CA:TRUE}."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """
    Whether C{issuer} issued C{cert}: C{cert} names it as its issuer and
    C{issuer}'s key made C{cert}'s signature.

    C{cryptography} no longer verifies SHA-1 signatures; for those the
    signature is checked here by hand, so that a SHA-1 chain is judged by
    its order, and the SHA-1 itself reported as the problem it is.
    """
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, TypeError, UnsupportedAlgorithm):
        return False
    except ValueError:
        if cert.issuer != issuer.subject:
            return False
        return _legacy_signature_valid(cert, issuer.public_key())
    return True


def _legacy_signature_valid(
    cert: x509.Certificate, key: CertificatePublicKeyTypes
) -> bool:
    """Check a PKCS#1 v1.5 or ECDSA signature with any hash, even SHA-1."""
    try:
        algorithm = cert.signature_hash_algorithm
        if algorithm is None:
            return False
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                padding.PKCS1v15(),
                algorithm,
            )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _self_signed(cert: x509.Certificate) -> bool:
    return _signed_by(cert, cert)


def _key_description(key: CertificatePublicKeyTypes) -> tuple[str, str | None]:
    """
    What kind of key C{key} is (C{ECDSA P-256}, C{RSA 2048-bit}), and why
    clients would refuse it, or L{None} if they would not.
    """
    if isinstance(key, rsa.RSAPublicKey):
        kind = f"RSA {key.key_size}-bit"
        if key.key_size < MINIMUM_RSA_BITS:
            return kind, (
                f"an RSA key of {key.key_size} bits is too weak (clients refuse"
                f" keys under {MINIMUM_RSA_BITS} bits)"
            )
        return kind, None
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = key.curve.name
        kind = f"ECDSA {_CURVES.get(curve, curve)}"
        if curve not in _GOOD_CURVES:
            return kind, (
                f"an {kind} key is not widely supported in certificates;"
                " use P-256 or P-384"
            )
        return kind, None
    if isinstance(key, ed25519.Ed25519PublicKey):
        kind = "Ed25519"
    elif isinstance(key, ed448.Ed448PublicKey):
        kind = "Ed448"
    else:
        kind = type(key).__name__
    return kind, (
        f"an {kind} key is not supported by most TLS clients (nor by the"
        " securemsg server); use ECDSA P-256/P-384 or RSA"
    )


def _signature_hash(cert: x509.Certificate) -> tuple[str, bool]:
    """The name of the hash C{cert} is signed with, and whether it is broken."""
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return cert.signature_algorithm_oid.dotted_string, False
    if algorithm is None:  # Ed25519 and Ed448 have their hash built in
        return "no separate hash", False
    name = _HASH_NAMES.get(algorithm.name, algorithm.name.upper())
    return name, isinstance(algorithm, _BROKEN_HASHES)


def _check_dates(
    report: CheckReport,
    cert: x509.Certificate,
    what: str,
    now: datetime,
    *,
    quiet: bool = False,
) -> None:
    """
    Report whether C{cert} has expired, is not valid yet or expires within
    L{CERTIFICATE_WARNING_DAYS}; with C{quiet}, say nothing when all is well.
    """
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        report.fail(
            f"{what} expired on {_date(not_after)} ({_days(now - not_after)} ago)"
        )
    elif not_before > now:
        report.fail(
            f"{what} is not valid until {_date(not_before)};"
            " check the system clock, or wait"
        )
    elif not_after - now <= timedelta(days=CERTIFICATE_WARNING_DAYS):
        report.warn(
            f"{what} expires in {_days(not_after - now)}, on {_date(not_after)};"
            " renew it"
        )
    elif not quiet:
        report.passed(
            f"{what} valid until {_date(not_after)} ({_days(not_after - now)} left)"
        )


def _check_strength(
    report: CheckReport, cert: x509.Certificate, what: str, *, quiet: bool
) -> None:
    """
    Report a weak key or a SHA-1/MD5 signature on C{cert}; unless C{quiet},
    also say what key and signature it has when both are fine.
    """
    kind, key_problem = _key_description(cert.public_key())
    if key_problem is not None:
        report.fail(f"{what} has {key_problem}")
    digest, broken = _signature_hash(cert)
    if broken:
        report.fail(
            f"{what} is signed with {digest}, which clients refuse;"
            " have it issued again with SHA-256"
        )
    if not quiet and key_problem is None and not broken:
        report.passed(f"{what} key {kind}, signed with {digest}")


def _check_names(report: CheckReport, cert: x509.Certificate) -> None:
    names = certs.subject_alt_names(cert)
    if names:
        report.passed(f"certificate names (subjectAltName): {', '.join(names)}")
        return
    try:
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        report.fail(
            "certificate has no subjectAltName; modern TLS clients ignore the"
            " common name and refuse it for every host name (make one with:"
            f" {PROGRAM} gencert --host NAME)"
        )
    else:
        report.fail(
            "certificate's subjectAltName holds no DNS name or IP address;"
            " clients refuse it for every host name"
        )


def _check_usage(report: CheckReport, cert: x509.Certificate) -> None:
    """C{serverAuth} must be in the extendedKeyUsage, if there is one."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        report.passed("certificate has no extendedKeyUsage (any use allowed)")
        return
    allowed = (
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    )
    if any(usage in allowed for usage in usages):
        report.passed("certificate's extendedKeyUsage allows serverAuth")
        return
    found = ", ".join(getattr(u, "_name", u.dotted_string) for u in usages)
    report.fail(
        f"certificate's extendedKeyUsage ({found or 'empty'}) does not include"
        " serverAuth: clients refuse it for a server (is it a client certificate?)"
    )


# ---------------------------------------------------------------------------
# The chain


def _chain_order(chain: Sequence[x509.Certificate], start: int) -> list[int]:
    """
    The indexes of the chain that starts at C{chain[start]}: each next one
    is a certificate of C{chain} (not yet used) that signed the one before,
    until a self-signed one or one whose issuer is not in C{chain}.
    """
    order = [start]
    while not _self_signed(chain[order[-1]]):
        current = chain[order[-1]]
        issuer = next(
            (
                index
                for index, candidate in enumerate(chain)
                if index not in order and _signed_by(current, candidate)
            ),
            None,
        )
        if issuer is None:
            break
        order.append(issuer)
    return order


def _check_chain(
    report: CheckReport,
    chain: Sequence[x509.Certificate],
    cert_path: str,
    start: int,
    now: datetime,
) -> None:
    """
    List the chain as served, check its order, and say where it ends.

    @param start: The index of the server's certificate: the one the key
        belongs to, else the first.
    """
    for number, cert in enumerate(chain, 1):
        issued = (
            "self-signed"
            if cert.issuer == cert.subject
            else f"issued by {_name(cert.issuer)}"
        )
        extra = f", {certs.fingerprint(cert)}" if number == start + 1 else ""
        report.info(
            f"  {number}. {_name(cert.subject)}, {issued},"
            f" valid until {_date(cert.not_valid_after_utc)}{extra}"
        )

    order = _chain_order(chain, start)
    in_order = order == list(range(len(order)))
    if not in_order:
        wanted = ", ".join(str(index + 1) for index in order)
        report.fail(
            f"{cert_path}: certificates are in the wrong order; the server"
            " certificate must come first, then each certificate's issuer in"
            f" turn: put them in the order {wanted}"
        )
    last = chain[order[-1]]
    complete = _self_signed(last)
    for index, cert in enumerate(chain):
        if index in order:
            continue
        copy = next((i for i in order if chain[i] == cert), None)
        if copy is not None:
            report.fail(
                f"{cert_path}: certificate {index + 1} is a copy of certificate"
                f" {copy + 1}; remove it"
            )
            continue
        hint = (
            "" if complete else f", or replace it with the issuer {_name(last.issuer)}"
        )
        report.fail(
            f"{cert_path}: certificate {index + 1} ({_name(cert.subject)}) signed"
            f" none of the certificates of the chain; remove it{hint}"
        )
    if in_order and len(chain) > 1 and len(order) == len(chain):
        report.passed("chain order: each certificate is signed by the next")

    for position in range(1, len(order)):
        issuer = chain[order[position]]
        if not _is_ca(issuer):
            report.fail(
                f"certificate {order[position] + 1} ({_name(issuer.subject)})"
                f" signed certificate {order[position - 1] + 1} but is not a CA"
                " (no basicConstraints CA:TRUE); clients refuse the chain"
            )
        what = f"chain certificate {order[position] + 1} ({_name(issuer.subject)})"
        _check_dates(report, issuer, what, now, quiet=True)
        # A root's own signature is never checked by anyone.
        is_root = position == len(order) - 1 and complete
        if is_root:
            _, key_problem = _key_description(issuer.public_key())
            if key_problem is not None:
                report.fail(f"{what} has {key_problem}")
        else:
            _check_strength(report, issuer, what, quiet=True)

    if len(order) == 1 and complete:
        report.passed(
            "chain: one self-signed certificate; clients must trust this"
            f" certificate itself ({PROGRAM} chat --ca {cert_path}) or pin its"
            " fingerprint"
        )
    elif complete:
        report.passed(f"chain complete up to the root {_name(last.subject)}")
        report.warn(
            f"{cert_path} includes the root certificate {_name(last.subject)};"
            " clients must already trust it, so serving it only makes every"
            " handshake longer: remove it from the file"
        )
    elif len(order) == 1:
        report.info(
            f"chain ends at {_name(last.issuer)}; clients must trust that"
            " issuer (if it is an intermediate rather than a root, add its"
            " certificate after the server certificate)"
        )
    else:
        report.info(
            f"chain ends at {_name(last.issuer)}; clients must trust that issuer"
        )


# ---------------------------------------------------------------------------
# Files


def _read_chain(report: CheckReport, cert_path: str) -> list[x509.Certificate]:
    try:
        chain = certs.load_certificates(cert_path)
    except FileNotFoundError:
        report.fail(
            f"certificate file {cert_path} not found (make one with: {PROGRAM} gencert)"
        )
        return []
    except OSError as error:
        report.fail(
            f"cannot read certificate file {cert_path}: {describe_os_error(error)}"
        )
        return []
    except ValueError as error:  # load_certificates names the file
        report.fail(str(error))
        return []
    count = _count(len(chain), "certificate")
    report.passed(f"certificate file {cert_path}: {count}")
    return chain


def _check_key(
    report: CheckReport,
    key_path: str,
    cert_path: str,
    chain: Sequence[x509.Certificate],
    passphrases: tls.PassphraseSource,
    *,
    key_hint: str = "",
) -> int | None:
    """
    Load the key as the server does, check its file's permissions and that
    it matches the certificate.

    @param key_hint: what to add if the key file is missing.

    @return: The index in C{chain} of the certificate the key belongs to,
        or L{None}.
    """
    shown = "private key" + (
        f" (in {key_path})" if key_path == cert_path else f" {key_path}"
    )
    try:
        key = tls.load_private_key(key_path, passphrases, not_found_hint=key_hint)
    except tls.TLSConfigError as error:
        report.fail(str(error))
        return None
    try:
        encrypted = b"ENCRYPTED" in Path(key_path).read_bytes()
    except OSError:  # pragma: no cover - it was just read
        encrypted = False
    kind, _ = _key_description(key.public_key())
    protection = "encrypted, passphrase accepted" if encrypted else "not encrypted"
    report.passed(f"{shown}: {kind}, {protection}")

    try:
        permission_warnings = certs.key_file_warnings(key_path)
    except OSError as error:  # pragma: no cover - it was just read
        report.warn(f"cannot examine {key_path}: {describe_os_error(error)}")
    else:
        for warning in permission_warnings:
            report.warn(warning)
        if not permission_warnings and os.name != "nt":
            mode = os.stat(key_path).st_mode & 0o777
            report.passed(f"private key file mode {mode:04o} (owner only)")

    if not chain:
        return None
    if certs.key_matches_certificate(key, chain[0]):
        report.passed(f"{shown} matches the certificate")
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
        report.fail(f"{shown} does not match certificate {cert_path}")
        return None
    report.fail(
        f"{shown} matches certificate {other + 1} in {cert_path}"
        f" ({_name(chain[other].subject)}), not the first: the server"
        " certificate must come first in the file"
    )
    return other


def _check_client_ca(
    report: CheckReport, path: str, now: datetime
) -> list[x509.Certificate]:
    """
    Every certificate in the client CA file must be a CA that can sign
    certificates.

    @return: The certificates that are, to check the CRL against.
    """
    try:
        cas = certs.load_certificates(path)
    except FileNotFoundError:
        report.fail(f"client CA file {path} not found")
        return []
    except OSError as error:
        report.fail(f"cannot read client CA file {path}: {describe_os_error(error)}")
        return []
    except ValueError as error:
        report.fail(f"client CA {error}")
        return []
    usable: list[x509.Certificate] = []
    for number, cert in enumerate(cas, 1):
        which = f"client CA {path}" if len(cas) == 1 else f"client CA {path} #{number}"
        what = f"{which} ({_name(cert.subject)})"
        if not _is_ca(cert):
            report.fail(
                f"{what} is not a CA (no basicConstraints CA:TRUE): give the"
                f" certificate of the CA that issues client certificates (made"
                f" with: {PROGRAM} ca init DIR, which writes DIR/ca.pem)"
            )
            continue
        try:
            key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            key_usage = None  # RFC 5280 allows it; OpenSSL accepts it
        if key_usage is not None and not key_usage.key_cert_sign:
            report.fail(
                f"{what} may not sign certificates (its keyUsage lacks keyCertSign)"
            )
            continue
        usable.append(cert)
        _, key_problem = _key_description(cert.public_key())
        if key_problem is not None:
            report.fail(f"{what} has {key_problem}")
        before = len(report.problems) + len(report.warnings)
        _check_dates(report, cert, what, now, quiet=True)
        if len(report.problems) + len(report.warnings) == before:
            left = _days(cert.not_valid_after_utc - now)
            report.passed(
                f"{what}: a CA, valid until {_date(cert.not_valid_after_utc)}"
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


def _check_crl(
    report: CheckReport,
    path: str,
    client_ca: str | None,
    cas: Sequence[x509.Certificate],
    now: datetime,
) -> None:
    """The CRL must parse, be signed by a client CA, and not be out of date."""
    if client_ca is None:
        report.fail(
            f"CRL {path} given without the client CA that signed it (--client-ca)"
        )
    try:
        crl = load_crl(path)
    except CRLError as error:
        report.fail(str(error))
        return
    refresh = f"re-sign it with: {PROGRAM} ca crl DIR"
    signer = _crl_signer(crl, cas)
    if client_ca is not None and not cas:
        report.info(f"CRL {path} not checked against the client CA, which is unusable")
    elif client_ca is not None and signer is None:
        named = [ca for ca in cas if ca.subject == crl.issuer]
        if named:
            report.fail(
                f"CRL {path} names {_name(crl.issuer)} as its issuer, but that"
                f" CA's key in {client_ca} did not sign it (was the CA made"
                " again?)"
            )
        else:
            report.fail(
                f"CRL {path} is issued by {_name(crl.issuer)}, not by the client"
                f" CA in {client_ca}"
            )
    last_update = crl.last_update_utc
    next_update = crl.next_update_utc
    revoked = _count(len(crl), "revoked certificate")
    if last_update > now:
        report.fail(
            f"CRL {path} is not valid until {_date(last_update)}; servers refuse"
            " it until then: check the system clock"
        )
    elif next_update is None:
        report.warn(f"CRL {path} has no nextUpdate, so nothing says when it is stale")
    elif next_update <= now:
        report.fail(
            f"CRL {path} expired on {_date(next_update)}; a server checking it"
            f" refuses every client certificate: {refresh}"
        )
    elif next_update - now <= timedelta(days=CRL_WARNING_DAYS):
        report.warn(
            f"CRL {path} expires in {_days(next_update - now)}, on"
            f" {_date(next_update)}: {refresh}"
        )
    else:
        signed = "" if signer is None else f"signed by {_name(signer.subject)}, "
        report.passed(
            f"CRL {path}: {signed}{revoked}, next update {_date(next_update)}"
            f" ({_days(next_update - now)} left)"
        )


# ---------------------------------------------------------------------------
# The API


def run_check(
    cert_path: str,
    key_path: str | None = None,
    *,
    passphrases: tls.PassphraseSource,
    client_ca: str | None = None,
    crl: str | None = None,
    now: datetime | None = None,
) -> CheckReport:
    """
    Check the server's TLS files as the server would read them, and report.

    Nothing here raises for a bad file: every failure is a C{FAIL} line.

    @param cert_path: The certificate (chain) file, server certificate
        first (C{--cert}).
    @param key_path: The private key file (C{--key}); L{None} for the
        server's rule, L{tls.key_path_for}.
    @param passphrases: Where an encrypted key's passphrase comes from, as
        for the server: C{tls.PassphraseSource.from_process(path)}.
    @param client_ca: The PEM file of CAs whose client certificates the
        server accepts (mutual TLS), if any.
    @param crl: That CA's PEM revocation list, if any.
    @param now: The time to check against; defaults to the current time.

    @return: The report, summary line included.
    """
    when = certs.as_utc(now)
    report = CheckReport()
    chain = _read_chain(report, cert_path)
    resolved_key = tls.key_path_for(cert_path, key_path)

    # The key is loaded first (its lines are added later) so that the chain
    # can start from the certificate the key belongs to.
    key_report = CheckReport()
    key_index = _check_key(
        key_report,
        resolved_key,
        cert_path,
        chain,
        passphrases,
        key_hint=tls.GUESSED_KEY_HINT if key_path is None else "",
    )

    if chain:
        # The server certificate: the first, unless the key belongs to
        # another (a chain in the wrong order, reported as such).
        start = key_index or 0
        leaf = chain[start]
        _check_chain(report, chain, cert_path, start, when)
        _check_dates(report, leaf, "certificate", when)
        _check_names(report, leaf)
        _check_usage(report, leaf)
        _check_strength(report, leaf, "certificate", quiet=False)
    report.lines += key_report.lines
    report.problems += key_report.problems
    report.warnings += key_report.warnings

    cas: list[x509.Certificate] = []
    if client_ca is not None:
        cas = _check_client_ca(report, client_ca, when)
    if crl is not None:
        _check_crl(report, crl, client_ca, cas, when)
    elif client_ca is not None:
        report.warn(
            f"client CA {client_ca} given without a CRL (--crl): the server"
            " would accept revoked client certificates (give the CA's"
            " crl.pem with --crl)"
        )
    report.summarize()
    return report
