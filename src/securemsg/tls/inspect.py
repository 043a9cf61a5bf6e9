# -*- test-case-name: tests.test_check -*-
"""
The checks behind C{securemsg check} (L{securemsg.admin.check}) and
C{twistd securemsg --check}: a pre-flight report on the server's TLS files
before they are served.

L{run_check} reads the certificate file, the private key and, for mutual
TLS, the client CA file and its CRL with the server's own reader
(L{securemsg.tls.files}, with L{securemsg.tls.policy.key_path_for} and
L{securemsg.tls.policy.PassphraseSource}), and returns a L{CheckReport}: one
line per finding, each starting with C{ok}, C{warn}, C{FAIL} or C{info}, and
a summary line.  Any C{FAIL} makes the report fail.

Every error the server would stop at is a C{FAIL} line here, in the same
words, and every warning it would log a C{warn} line (L{securemsg.tls.files}
lists them).  Only the check also looks at what clients would refuse but
the server does not read: an extendedKeyUsage without C{serverAuth}, an RSA
key under 2048 bits, an elliptic curve other than P-256 or P-384, a SHA-1 or
MD5 signature, a chain in the wrong order or holding certificates that do
not belong to it, an issuer in the chain that is not a CA or has expired
(all C{FAIL}); a root certificate served with a CA-issued certificate
(C{warn}).

The chain is checked as served: the server certificate first, then each
certificate must have been signed by the next one, verified with
C{cryptography}.  Where it ends is reported, not judged: at a self-signed
root ("complete up to the root"), or at an issuer that is not in the file,
which is normal for a CA-issued certificate (clients hold the root) but
which can also mean an intermediate is missing; only the clients' trust
store can tell which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from securemsg.tls import certs, files
from securemsg.tls import policy as tls
from securemsg.tls.certs import PROGRAM
from securemsg.tls.files import CERTIFICATE_WARNING_DAYS, CRL_WARNING_DAYS

__all__ = [
    "CERTIFICATE_WARNING_DAYS",
    "CRL_WARNING_DAYS",
    "CheckReport",
    "run_check",
]

MINIMUM_RSA_BITS: Final = 2048
"""Smaller RSA keys are a problem: browsers and OpenSSL 3 refuse them."""

#: The curves clients accept in certificates, by cryptography's names.
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

    def add(self, findings: files.Findings) -> None:
        """Record each of C{findings}, in order, at its level."""
        record = {
            "ok": self.passed,
            "info": self.info,
            "warning": self.warn,
            "error": self.fail,
        }
        for finding in findings:
            record[finding.level](finding.message)

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


def _name(name: x509.Name) -> str:
    return name.rfc4514_string() or "(empty name)"


# ---------------------------------------------------------------------------
# Looking at one certificate


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
    kind = files.key_kind(key)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MINIMUM_RSA_BITS:
            return kind, (
                f"an RSA key of {key.key_size} bits is too weak (clients refuse"
                f" keys under {MINIMUM_RSA_BITS} bits)"
            )
        return kind, None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _GOOD_CURVES:
            return kind, (
                f"an {kind} key is not widely supported in certificates;"
                " use P-256 or P-384"
            )
        return kind, None
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
            f" valid until {certs.format_date(cert.not_valid_after_utc)}{extra}"
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
        if not files.is_ca(issuer):
            report.fail(
                f"certificate {order[position] + 1} ({_name(issuer.subject)})"
                f" signed certificate {order[position - 1] + 1} but is not a CA"
                " (no basicConstraints CA:TRUE); clients refuse the chain"
            )
        what = f"chain certificate {order[position] + 1} ({_name(issuer.subject)})"
        dates = files.Findings()
        files.check_dates(issuer, what, now, dates, quiet=True)
        report.add(dates)
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
    read = files.Findings()
    chain = files.read_certificates(cert_path, read)
    report.add(read)
    resolved_key = tls.key_path_for(cert_path, key_path)

    # The key is read first (its lines are added later) so that the chain
    # can start from the certificate the key belongs to.
    key_findings = files.Findings()
    key = files.read_private_key(
        resolved_key,
        passphrases,
        key_findings,
        not_found_hint=tls.GUESSED_KEY_HINT if key_path is None else "",
        cert_path=cert_path,
    )
    key_index = None
    if key is not None and chain:
        key_index = files.check_key_matches(
            key, resolved_key, cert_path, chain, key_findings
        )

    if chain:
        # The server certificate: the first, unless the key belongs to
        # another (a chain in the wrong order, reported as such).
        start = key_index or 0
        leaf = chain[start]
        _check_chain(report, chain, cert_path, start, when)
        leaf_findings = files.Findings()
        files.check_server_certificate(leaf, cert_path, when, leaf_findings)
        report.add(leaf_findings)
        _check_usage(report, leaf)
        _check_strength(report, leaf, "certificate", quiet=False)
    report.add(key_findings)

    mutual = files.Findings()
    cas: list[x509.Certificate] = []
    if client_ca is not None:
        cas = files.read_client_cas(client_ca, when, mutual)
        report.add(mutual)
        for index, cert in enumerate(cas):
            _, key_problem = _key_description(cert.public_key())
            if key_problem is not None:
                report.fail(
                    f"{files.client_ca_name(client_ca, cas, index)} has {key_problem}"
                )
        mutual = files.Findings()
    if crl is not None:
        files.read_crl(crl, client_ca, cas, when, mutual)
    files.check_revocation(client_ca, crl, mutual)
    report.add(mutual)
    report.summarize()
    return report
