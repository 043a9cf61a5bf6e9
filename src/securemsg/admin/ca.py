# -*- test-case-name: tests.test_ca -*-
"""
A small certificate authority for securemsg client certificates.

C{securemsg ca init DIR} makes the authority, C{securemsg ca issue DIR NAME}
gives one person a client certificate, and C{securemsg ca revoke DIR NAME}
takes it back by publishing a new certificate revocation list (CRL).  The
server, configured for mutual TLS, trusts C{DIR/ca.pem}, checks
C{DIR/crl.pem}, and learns who a client is with
L{identity_from_certificate}.  C{docs/ca.md} describes the directory and
every command; this module is both the Python API and the command.

The directory::

    DIR/ca.pem            the CA certificate (give it to the server)
    DIR/ca.key            its private key, mode 0600, optionally encrypted
    DIR/crl.pem           the current CRL, re-signed on every revocation
    DIR/index.json        every certificate ever issued, and its status
    DIR/issued/NAME.pem   NAME's certificate
    DIR/issued/NAME.key   its private key, mode 0600
    DIR/issued/NAME.p12   optionally, both in a password-protected PKCS#12
    DIR/.lock             taken while a command changes the directory

Everything is made with C{cryptography}; nothing runs the C{openssl}
binary.  A client certificate names its holder twice: C{CN=NAME} for people
reading it, and the URI C{securemsg:user:NAME} in its subjectAltName, which
is what L{identity_from_certificate} reads (see there for why not a DNS
name).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shlex
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from getpass import getpass
from typing import Any, ClassVar, Final, TextIO, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.python import usage

from securemsg.admin.command import (
    PROGRAM,
    CommandError,
    CommandOptions,
    describe_os_error,
    parse_days,
    read_passphrase_file,
)
from securemsg.protocol import wire
from securemsg.tls import certs, identity
from securemsg.tls.identity import (
    IDENTITY_URI_PREFIX,
    identity_from_certificate,
    identity_uri,
)

__all__ = [
    "CA_PASSPHRASE_ENVIRONMENT_VARIABLE",
    "DEFAULT_CA_DAYS",
    "DEFAULT_CA_NAME",
    "DEFAULT_CLIENT_DAYS",
    "DEFAULT_CRL_DAYS",
    "IDENTITY_URI_PREFIX",
    "REVOCATION_REASONS",
    "CAError",
    "CAOptions",
    "CAPaths",
    "CertificateRecord",
    "IssuedCertificate",
    "Passphrase",
    "ca_key_is_encrypted",
    "ca_paths",
    "identity_from_certificate",
    "identity_uri",
    "init_ca",
    "issue",
    "list_certificates",
    "load_ca_certificate",
    "load_crl",
    "refresh_crl",
    "revoke",
]

DEFAULT_CA_NAME: Final = "securemsg CA"
"""The CA certificate's common name unless another is given."""

DEFAULT_CA_DAYS: Final = 3650
"""How long a new CA certificate is valid, in days."""

DEFAULT_CLIENT_DAYS: Final = 365
"""How long a client certificate is valid, in days."""

DEFAULT_CRL_DAYS: Final = 30
"""How long each CRL is valid (its nextUpdate), in days."""

CA_PASSPHRASE_ENVIRONMENT_VARIABLE: Final = "SECUREMSG_CA_PASSPHRASE"  # noqa: S105
"""Where C{securemsg ca} looks for the CA key's passphrase after the file."""

_INDEX_FORMAT: Final = "securemsg-ca-index"
_INDEX_VERSION: Final = 1
_MAX_COMMON_NAME: Final = 64  # ub-common-name in RFC 5280

#: An encrypted PKCS#8 key, or a traditional one with a Proc-Type header.
_ENCRYPTED_PEM: Final = re.compile(
    rb"^(?:-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4, *ENCRYPTED)",
    re.MULTILINE,
)

#: Revocation reasons C{revoke} takes, by their RFC 5280 names.
REVOCATION_REASONS: Final[dict[str, x509.ReasonFlags]] = {
    flag.value: flag
    for flag in (
        x509.ReasonFlags.unspecified,
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.cessation_of_operation,
        x509.ReasonFlags.privilege_withdrawn,
    )
}


Passphrase: TypeAlias = bytes | Callable[[], bytes | None] | None
"""
The CA key's passphrase: the bytes, or L{None} for a key that is not
encrypted, or a function that returns it.  The function is called only if
the key is encrypted, and only once the request has passed every other
check, so a command can ask for it on a terminal without asking in vain.
"""


class CAError(Exception):
    """
    Something the CA cannot do, with a one-line message for a person (it
    never holds a line break).
    """


# ---------------------------------------------------------------------------
# The directory


@dataclass(frozen=True)
class CAPaths:
    """
    Where each file of the CA in C{directory} lives (L{ca_paths} makes one).

    @ivar certificate: C{ca.pem}, the CA certificate: the server's trust
        root for client certificates.
    @ivar crl: C{crl.pem}, the current revocation list.
    """

    directory: str
    certificate: str
    key: str
    crl: str
    index: str
    issued: str
    lock: str

    def issued_files(self, name: str) -> tuple[str, str, str]:
        """The certificate, key and PKCS#12 paths for C{name}."""
        stem = os.path.join(self.issued, name)
        return f"{stem}.pem", f"{stem}.key", f"{stem}.p12"


def ca_paths(directory: certs.StrPath) -> CAPaths:
    """The paths of the CA files in C{directory} (nothing is checked)."""
    top = os.fspath(directory)
    return CAPaths(
        directory=top,
        certificate=os.path.join(top, "ca.pem"),
        key=os.path.join(top, "ca.key"),
        crl=os.path.join(top, "crl.pem"),
        index=os.path.join(top, "index.json"),
        issued=os.path.join(top, "issued"),
        lock=os.path.join(top, ".lock"),
    )


@dataclass(frozen=True)
class CertificateRecord:
    """
    One certificate in C{index.json}.

    @ivar revoked_at: When it was revoked, or L{None}.
    @ivar reason: The RFC 5280 revocation reason (C{keyCompromise} ...),
        or L{None} when none was given.
    """

    serial: int
    name: str
    fingerprint: str
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    reason: str | None = None

    def status(self, now: datetime | None = None) -> str:
        """C{"revoked"}, C{"expired"} or C{"valid"}, in that order of precedence."""
        if self.revoked_at is not None:
            return "revoked"
        if self.not_after <= certs.as_utc(now):
            return "expired"
        return "valid"

    def revoked(self, when: datetime, reason: str | None) -> CertificateRecord:
        """A copy of this record, revoked at C{when} for C{reason}."""
        return dataclasses.replace(self, revoked_at=when, reason=reason)

    def to_json(self) -> dict[str, Any]:
        """The record as C{index.json} stores it; the serial as hex."""
        return {
            "serial": f"{self.serial:x}",
            "name": self.name,
            "fingerprint": self.fingerprint,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "revoked_at": None if self.revoked_at is None else _iso(self.revoked_at),
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Any) -> CertificateRecord:
        """
        Read one record.

        @raise ValueError: If it is malformed.
        """
        if not isinstance(data, dict):
            raise ValueError("a certificate entry is not an object")
        revoked_at = data.get("revoked_at")
        reason = data.get("reason")
        name = data["name"]
        fingerprint = data["fingerprint"]
        if not isinstance(name, str) or not isinstance(fingerprint, str):
            raise ValueError("name and fingerprint must be strings")
        if reason is not None and not isinstance(reason, str):
            raise ValueError("reason must be a string")
        return cls(
            serial=int(data["serial"], 16),
            name=name,
            fingerprint=fingerprint,
            not_before=_parse_iso(data["not_before"]),
            not_after=_parse_iso(data["not_after"]),
            revoked_at=None if revoked_at is None else _parse_iso(revoked_at),
            reason=reason,
        )


@dataclass
class _Index:
    """The contents of C{index.json}."""

    crl_days: int
    crl_number: int = 0
    records: list[CertificateRecord] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        document = {
            "format": _INDEX_FORMAT,
            "version": _INDEX_VERSION,
            "crl_days": self.crl_days,
            "crl_number": self.crl_number,
            "certificates": [record.to_json() for record in self.records],
        }
        return (json.dumps(document, indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> _Index:
        """@raise ValueError: If C{data} is not a securemsg CA index."""
        document = json.loads(data.decode("utf-8"))
        if not isinstance(document, dict) or document.get("format") != _INDEX_FORMAT:
            raise ValueError("not a securemsg CA index")
        if document.get("version") != _INDEX_VERSION:
            raise ValueError(f"unknown index version {document.get('version')!r}")
        crl_days = document["crl_days"]
        crl_number = document["crl_number"]
        entries = document["certificates"]
        if not isinstance(crl_days, int) or not isinstance(crl_number, int):
            raise ValueError("crl_days and crl_number must be whole numbers")
        if not isinstance(entries, list):
            raise ValueError("certificates must be a list")
        return cls(
            crl_days, crl_number, [CertificateRecord.from_json(e) for e in entries]
        )


# ---------------------------------------------------------------------------
# Small helpers


def _iso(when: datetime) -> str:
    """C{2026-05-09T07:35:00Z}."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a date")
    return certs.as_utc(datetime.fromisoformat(text))


def _format_date(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _serial(serial: int) -> str:
    """A serial number as C{securemsg ca} shows it: lower-case hex."""
    text = f"{serial:x}"
    return text if len(text) % 2 == 0 else "0" + text  # whole bytes, as openssl


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _os_problem(error: OSError, action: str, path: str) -> CAError:
    return CAError(f"cannot {action} {path}: {describe_os_error(error)}")


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CAError(f"{what} {path} is missing") from None
    except OSError as error:
        raise _os_problem(error, "read", path) from None


def _write(path: str, data: bytes, mode: int, *, exclusive: bool = False) -> None:
    """
    Put C{data} at C{path} with permission bits C{mode} (less the umask).

    The file is created with its mode by C{open(2)} itself, so a key is never
    readable by others, not even for a moment.  Unless C{exclusive}, the
    data goes to a temporary file beside C{path} that then replaces it, so
    readers (such as a server reloading C{crl.pem}) see the old file or the
    new one, never half of one.  (L{securemsg.tls.certs} does the same for
    gencert's files; this copy also serves the CRL, index and PKCS#12.)

    @raise CAError: If it cannot be written, or if C{exclusive} and C{path}
        exists.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    directory, base = os.path.split(path)
    target = (
        path
        if exclusive
        else os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
    )
    try:
        fd = os.open(target, flags, mode)
    except FileExistsError:
        if exclusive:
            raise CAError(f"{path} already exists") from None
        raise CAError(f"cannot write {path}: temporary file clash") from None
    except OSError as error:
        raise _os_problem(error, "write", path) from None
    try:
        with open(fd, "wb", closefd=True) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not exclusive:
            os.replace(target, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(target)
        if isinstance(error, OSError):
            raise _os_problem(error, "write", path) from None
        raise


def _remove(paths: Sequence[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _restore(path: str, data: bytes | None, mode: int) -> None:
    """Put back C{data} at C{path}, or remove C{path} if it did not exist."""
    with contextlib.suppress(CAError):
        if data is None:
            _remove([path])
        else:
            _write(path, data, mode)


@contextlib.contextmanager
def _locked(paths: CAPaths) -> Iterator[None]:
    """
    Hold C{DIR/.lock} so that two commands never change the CA at once (the
    second one fails at once rather than waiting).  On systems without
    C{fcntl} there is no lock.
    """
    if sys.platform == "win32":  # pragma: no cover
        yield
        return
    import fcntl

    try:
        fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise _os_problem(error, "lock", paths.directory) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CAError(
                f"{paths.directory} is being changed by another securemsg ca"
                " command; try again when it has finished"
            ) from None
        yield
    finally:
        os.close(fd)


def _check_days(days: int, what: str) -> None:
    if not isinstance(days, int) or days < 1:
        raise CAError(f"{what} must be a whole number of days greater than 0")
    try:
        datetime.now(UTC) + timedelta(days=days)
    except OverflowError:
        raise CAError(f"{what} of {days} days is too far in the future") from None


def _check_passphrase(passphrase: bytes | None, what: str) -> None:
    if passphrase is not None and not passphrase:
        raise CAError(f"the {what} passphrase must not be empty")


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    """C{cert}'s subject key identifier, computed if it carries none."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


# ---------------------------------------------------------------------------
# Loading the CA


def _not_a_ca(paths: CAPaths) -> CAError:
    directory = shlex.quote(paths.directory)
    return CAError(
        f"{paths.directory} is not a securemsg CA (no ca.pem); create one with:"
        f" {PROGRAM} ca init {directory}"
    )


def load_ca_certificate(directory: certs.StrPath) -> x509.Certificate:
    """
    The CA certificate, C{DIR/ca.pem}: what a server trusts for client
    certificates.

    @raise CAError: If C{directory} holds no CA or the file is unreadable.
    """
    paths = ca_paths(directory)
    if not os.path.lexists(paths.certificate):
        raise _not_a_ca(paths)
    data = _read(paths.certificate, "CA certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as error:
        raise CAError(
            f"cannot parse the CA certificate {paths.certificate}: "
            + _one_line(str(error) or type(error).__name__)
        ) from None


def ca_key_is_encrypted(directory: certs.StrPath) -> bool:
    """
    Whether C{DIR/ca.key} is encrypted, that is, whether L{issue},
    L{revoke} and L{refresh_crl} need C{ca_passphrase}.

    @raise CAError: If there is no CA or the key cannot be read.
    """
    paths = ca_paths(directory)
    if not os.path.lexists(paths.certificate):
        raise _not_a_ca(paths)
    data = _read(paths.key, "CA key")
    return _ENCRYPTED_PEM.search(data) is not None


def _load_ca_key(
    paths: CAPaths, cert: x509.Certificate, ca_passphrase: Passphrase
) -> certs.PrivateKey:
    data = _read(paths.key, "CA key")
    encrypted = _ENCRYPTED_PEM.search(data) is not None
    passphrase = ca_passphrase
    if callable(passphrase):
        passphrase = passphrase() if encrypted else None
    if encrypted and passphrase is None:
        raise CAError(f"the CA key {paths.key} is encrypted; its passphrase is needed")
    try:
        key = serialization.load_pem_private_key(
            data, passphrase if encrypted else None
        )
    except ValueError as error:
        if encrypted:
            raise CAError(f"wrong passphrase for the CA key {paths.key}") from None
        detail = _one_line(str(error) or type(error).__name__)
        raise CAError(f"cannot read the CA key {paths.key}: {detail}") from None
    except TypeError as error:  # pragma: no cover - marker/format disagreement
        raise CAError(f"cannot read the CA key {paths.key}: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CAError(f"the CA key {paths.key} is neither an ECDSA nor an RSA key")
    if not certs.key_matches_certificate(key, cert):
        raise CAError(f"the CA key {paths.key} does not belong to {paths.certificate}")
    return key


def _read_index(paths: CAPaths) -> _Index:
    data = _read(paths.index, "the CA index")
    try:
        return _Index.from_bytes(data)
    except (ValueError, KeyError, TypeError) as error:
        raise CAError(
            f"{paths.index} is damaged: {_one_line(str(error)) or type(error).__name__}"
        ) from None


# ---------------------------------------------------------------------------
# Making certificates and CRLs


def _build_ca_certificate(
    key: ec.EllipticCurvePrivateKey, name: str, days: int, now: datetime
) -> x509.Certificate:
    """
    A self-signed CA that can sign client certificates and CRLs only:
    C{pathlen:0} means it cannot make intermediate CAs.
    """
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - certs.CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            certs.key_usage(key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def _build_client_certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: certs.PrivateKey,
    serial: int,
    not_after: datetime,
    now: datetime,
) -> x509.Certificate:
    """
    A client certificate for C{name}.  Both verifiers we test with accept
    it: OpenSSL (the server's TLS) and C{cryptography}'s stricter client
    verifier, which refuses a leaf without a subjectAltName or an authority
    key identifier, or whose extended key usage leaves out clientAuth.
    OpenSSL also checks clientAuth (purpose C{sslclient}) when the server
    asks for a client certificate.
    """
    return (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - certs.CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            certs.key_usage(digital_signature=True),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(identity_uri(name))]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                _ski(ca_cert)
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _build_crl(
    ca_cert: x509.Certificate,
    ca_key: certs.PrivateKey,
    index: _Index,
    now: datetime,
) -> x509.CertificateRevocationList:
    """
    A CRL listing every revoked certificate in C{index}, numbered
    C{index.crl_number}.

    Its thisUpdate is L{certs.CLOCK_SKEW} in the past: OpenSSL refuses a
    CRL that is "not yet valid", and with revocation checks on that would
    lock every client out of a server whose clock is a little behind.
    """
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - certs.CLOCK_SKEW)
        .next_update(now + timedelta(days=index.crl_days))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                _ski(ca_cert)
            ),
            critical=False,
        )
        .add_extension(x509.CRLNumber(index.crl_number), critical=False)
    )
    for record in index.records:
        if record.revoked_at is None:
            continue
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(record.serial)
            .revocation_date(record.revoked_at)
        )
        if record.reason is not None and record.reason in REVOCATION_REASONS:
            entry = entry.add_extension(
                x509.CRLReason(REVOCATION_REASONS[record.reason]), critical=False
            )
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca_key, hashes.SHA256())


def _crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: certs.PrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


# ---------------------------------------------------------------------------
# The API


def init_ca(
    directory: certs.StrPath,
    *,
    name: str = DEFAULT_CA_NAME,
    days: int = DEFAULT_CA_DAYS,
    passphrase: bytes | None = None,
    crl_days: int = DEFAULT_CRL_DAYS,
    force: bool = False,
    now: datetime | None = None,
) -> None:
    """
    Make a new certificate authority in C{directory}: C{ca.pem},
    C{ca.key} (mode 0600, encrypted with C{passphrase} if given), an empty
    C{crl.pem}, an empty C{index.json} and the C{issued} folder.

    C{directory} is created (mode 0700) if it does not exist.

    @param name: The CA certificate's common name.
    @param days: How long the CA certificate is valid.
    @param crl_days: How long each CRL this CA signs is valid (its
        nextUpdate); re-sign it before then with L{refresh_crl}.
    @param force: Replace an existing CA.  Its certificates no longer
        verify against the new one; files already in C{issued/} are left
        alone, and the index starts empty.
    @param now: The time to use; defaults to the current time.

    @raise CAError: If C{directory} already holds a CA and not C{force},
        if an argument is invalid, or if a file cannot be written.
    """
    paths = ca_paths(directory)
    when = certs.as_utc(now)
    if not name or len(name) > _MAX_COMMON_NAME:
        raise CAError(f"the CA name must be 1 to {_MAX_COMMON_NAME} characters")
    _check_days(days, "the CA's validity")
    _check_days(crl_days, "the CRL's validity")
    _check_passphrase(passphrase, "CA key")
    if os.path.lexists(paths.directory) and not os.path.isdir(paths.directory):
        raise CAError(f"{paths.directory} exists and is not a directory")
    existing = [
        p
        for p in (paths.certificate, paths.key, paths.crl, paths.index)
        if os.path.lexists(p)
    ]
    if existing and not force:
        raise CAError(
            f"{paths.directory} already holds a CA ({os.path.basename(existing[0])}"
            " exists); use --force to replace it"
        )
    try:
        os.makedirs(paths.directory, mode=0o700, exist_ok=True)
        os.makedirs(paths.issued, mode=0o700, exist_ok=True)
    except OSError as error:
        raise _os_problem(error, "create", paths.issued) from None

    with _locked(paths):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _build_ca_certificate(key, name, days, when)
        index = _Index(crl_days=crl_days, crl_number=1)
        crl = _build_crl(cert, key, index, when)
        # The key first: if it cannot be written, nothing else is.  Without
        # force the key is created exclusively, so a CA that appeared
        # meanwhile is never overwritten.
        written: list[str] = []
        try:
            for path, data, mode in (
                (paths.key, _key_pem(key, passphrase), 0o600),
                (
                    paths.certificate,
                    cert.public_bytes(serialization.Encoding.PEM),
                    0o644,
                ),
                (paths.crl, _crl_pem(crl), 0o644),
                (paths.index, index.to_bytes(), 0o644),
            ):
                _write(path, data, mode, exclusive=not force)
                written.append(path)
        except BaseException:
            if not force:
                _remove(written)
            raise


def directory_warnings(directory: certs.StrPath) -> list[str]:
    """
    What is wrong with the permissions of the CA directory: other users
    who can write to it can replace C{ca.pem} or C{crl.pem} (what servers
    trust) by files of their own.  (L{init_ca} makes a new directory 0700,
    but leaves the mode of an existing one alone.)
    """
    paths = ca_paths(directory)
    try:
        mode = stat.S_IMODE(os.stat(paths.directory).st_mode)
    except OSError:
        return []
    who = [
        name for bit, name in ((0o020, "its group"), (0o002, "others")) if mode & bit
    ]
    if not who:
        return []
    return [
        f"{paths.directory} is writable by {' and '.join(who)} (mode"
        f" {mode:04o}): they can replace the CA's certificate or CRL; make it"
        f" yours alone with: chmod 700 {shlex.quote(paths.directory)}"
    ]


@dataclass(frozen=True)
class IssuedCertificate:
    """
    What L{issue} made.

    @ivar p12_path: The PKCS#12 bundle, or L{None} if none was asked for.
    @ivar revoked: Serial numbers of older certificates of the same name
        that were revoked because of C{replace=True}.
    @ivar still_valid: Serial numbers of older certificates of the same
        name that stay valid (issued with C{force=True}).
    """

    name: str
    serial: int
    fingerprint: str
    certificate: x509.Certificate
    cert_path: str
    key_path: str
    p12_path: str | None = None
    revoked: tuple[int, ...] = ()
    still_valid: tuple[int, ...] = ()

    @property
    def not_after(self) -> datetime:
        """When the certificate expires."""
        return self.certificate.not_valid_after_utc


def issue(
    directory: certs.StrPath,
    name: str,
    *,
    days: int = DEFAULT_CLIENT_DAYS,
    ca_passphrase: Passphrase = None,
    key_passphrase: bytes | None = None,
    p12_passphrase: bytes | None = None,
    force: bool = False,
    replace: bool = False,
    now: datetime | None = None,
) -> IssuedCertificate:
    """
    Issue a client certificate for C{name} and record it in C{index.json}.

    Writes C{issued/NAME.pem} and C{issued/NAME.key} (mode 0600, encrypted
    with C{key_passphrase} if given), and with C{p12_passphrase} also
    C{issued/NAME.p12} (mode 0600): key, certificate and CA certificate in
    PKCS#12, encrypted with that password.  Existing files of that name are
    replaced.

    Names are compared ignoring case, as the chat server compares them.  If
    C{name} already has a valid certificate (neither revoked nor expired)
    this fails, unless:
      - C{replace}: the old ones are revoked and a new CRL written, in the
        same step; or
      - C{force}: the new one is issued beside them and they stay valid
        (they are listed in the result's C{still_valid}).

    @param days: How long the certificate is valid; it may not outlast the
        CA certificate.
    @param ca_passphrase: The CA key's passphrase, if it is encrypted (see
        L{Passphrase}).

    @raise CAError: For a name securemsg would refuse, an existing valid
        certificate, a missing or wrong CA passphrase, or a file problem.
    """
    paths = ca_paths(directory)
    when = certs.as_utc(now)
    problem = wire.name_problem(name)
    if problem is not None:
        raise CAError(f"cannot issue a certificate to {name!r}: {problem}")
    _check_days(days, "the certificate's validity")
    _check_passphrase(key_passphrase, "key")
    _check_passphrase(p12_passphrase, "PKCS#12")
    ca_cert = load_ca_certificate(paths.directory)

    with _locked(paths):
        index = _read_index(paths)
        key_of = wire.name_key(name)
        current = [
            r
            for r in index.records
            if wire.name_key(r.name) == key_of and r.status(when) == "valid"
        ]
        if current and not (force or replace):
            newest = current[-1]
            raise CAError(
                f"{newest.name} already has a valid certificate (serial"
                f" {_serial(newest.serial)}, expires {_format_date(newest.not_after)});"
                " use --replace to revoke it and issue a new one, or --force to"
                " issue another one beside it"
            )
        not_after = when + timedelta(days=days)
        if not_after > ca_cert.not_valid_after_utc:
            raise CAError(
                f"a certificate valid for {days} days would outlast the CA"
                f" certificate, which expires on"
                f" {_format_date(ca_cert.not_valid_after_utc)}; use fewer days"
            )
        ca_key = _load_ca_key(paths, ca_cert, ca_passphrase)

        known = {r.serial for r in index.records}
        serial = x509.random_serial_number()
        while serial in known:  # pragma: no cover - 159 random bits
            serial = x509.random_serial_number()
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _build_client_certificate(
            name, key, ca_cert, ca_key, serial, not_after, when
        )
        record = CertificateRecord(
            serial=serial,
            name=name,
            fingerprint=certs.fingerprint(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

        superseded = {r.serial for r in current} if replace else set()
        new_index = _Index(
            crl_days=index.crl_days,
            crl_number=index.crl_number + (1 if superseded else 0),
            records=[
                r.revoked(when, "superseded") if r.serial in superseded else r
                for r in index.records
            ]
            + [record],
        )
        crl = _build_crl(ca_cert, ca_key, new_index, when) if superseded else None

        cert_path, key_path, p12_path = paths.issued_files(name)
        files: list[tuple[str, bytes]] = [
            (key_path, _key_pem(key, key_passphrase)),
            (cert_path, cert.public_bytes(serialization.Encoding.PEM)),
        ]
        if p12_passphrase is not None:
            bundle = pkcs12.serialize_key_and_certificates(
                name.encode("utf-8"),
                key,
                cert,
                [ca_cert],
                serialization.BestAvailableEncryption(p12_passphrase),
            )
            files.append((p12_path, bundle))

        # The index first, so that every certificate that leaves this
        # function is on record and can be revoked.  If a file then cannot
        # be written, the old index is put back and the files this call
        # created are removed (files it replaced, of certificates that are
        # no longer valid or with force, stay replaced).
        old_index = _read(paths.index, "the CA index")
        _write(paths.index, new_index.to_bytes(), 0o644)
        created: list[str] = []
        try:
            if not os.path.isdir(paths.issued):
                os.makedirs(paths.issued, mode=0o700, exist_ok=True)
            for path, data in files:
                existed = os.path.lexists(path)
                _write(path, data, 0o644 if path == cert_path else 0o600)
                if not existed:
                    created.append(path)
        except BaseException as error:
            _remove(created)
            _restore(paths.index, old_index, 0o644)
            if isinstance(error, OSError):
                raise _os_problem(error, "create", paths.issued) from None
            raise
        if crl is not None:
            _write_crl_after_index(paths, crl)

    return IssuedCertificate(
        name=name,
        serial=serial,
        fingerprint=record.fingerprint,
        certificate=cert,
        cert_path=cert_path,
        key_path=key_path,
        p12_path=p12_path if p12_passphrase is not None else None,
        revoked=tuple(sorted(superseded)),
        still_valid=() if replace else tuple(r.serial for r in current),
    )


def _write_crl_after_index(paths: CAPaths, crl: x509.CertificateRevocationList) -> None:
    """
    Write the CRL once the index records the revocations it lists; if that
    fails, say how to write it again (the index is already right).
    """
    try:
        _write(paths.crl, _crl_pem(crl), 0o644)
    except CAError as error:
        directory = shlex.quote(paths.directory)
        raise CAError(
            f"{error} (the revocation is recorded in index.json; write the CRL"
            f" again with: {PROGRAM} ca crl {directory})"
        ) from None


def revoke(
    directory: certs.StrPath,
    name: str | None = None,
    serial: int | None = None,
    *,
    ca_passphrase: Passphrase = None,
    reason: x509.ReasonFlags | None = None,
    now: datetime | None = None,
) -> list[int]:
    """
    Revoke C{name}'s valid certificates, or the one with C{serial}, and
    write a new C{crl.pem} signed by the CA.

    Give exactly one of C{name} (every certificate of that name that is
    neither revoked nor expired; names compare ignoring case) and
    C{serial} (that certificate, even if it has expired).

    @param reason: Put into the CRL entries (C{keyCompromise} ...); one of
        L{REVOCATION_REASONS}.
    @return: The serial numbers revoked.
    @raise CAError: For an unknown name or serial, nothing left to revoke,
        a missing or wrong CA passphrase, or a file problem.
    """
    if (name is None) == (serial is None):
        raise CAError("give either a name or a serial number to revoke")
    if reason is not None and reason.value not in REVOCATION_REASONS:
        raise CAError(f"{reason.value} is not a reason securemsg ca revokes for")
    paths = ca_paths(directory)
    when = certs.as_utc(now)
    ca_cert = load_ca_certificate(paths.directory)
    with _locked(paths):
        index = _read_index(paths)
        listing = f"{PROGRAM} ca list {shlex.quote(paths.directory)}"
        if name is not None:
            matching = [
                r for r in index.records if wire.name_key(r.name) == wire.name_key(name)
            ]
            if not matching:
                raise CAError(
                    f"no certificate was ever issued to {name!r}; see: {listing}"
                )
            targets = [r for r in matching if r.status(when) == "valid"]
            if not targets:
                raise CAError(
                    f"{name} has no valid certificate to revoke (each is revoked"
                    f" or expired); see: {listing}"
                )
        else:
            found = [r for r in index.records if r.serial == serial]
            if not found:
                raise CAError(
                    f"no certificate with serial {_serial(serial or 0)}; see: {listing}"
                )
            if found[0].revoked_at is not None:
                raise CAError(
                    f"certificate {_serial(found[0].serial)} ({found[0].name}) was"
                    f" already revoked on {_format_date(found[0].revoked_at)}"
                )
            targets = found
        ca_key = _load_ca_key(paths, ca_cert, ca_passphrase)
        chosen = {r.serial for r in targets}
        new_index = _Index(
            crl_days=index.crl_days,
            crl_number=index.crl_number + 1,
            records=[
                r.revoked(when, None if reason is None else reason.value)
                if r.serial in chosen
                else r
                for r in index.records
            ],
        )
        crl = _build_crl(ca_cert, ca_key, new_index, when)
        _write(paths.index, new_index.to_bytes(), 0o644)
        _write_crl_after_index(paths, crl)
    return [r.serial for r in targets]


def refresh_crl(
    directory: certs.StrPath,
    *,
    ca_passphrase: Passphrase = None,
    now: datetime | None = None,
) -> x509.CertificateRevocationList:
    """
    Sign C{crl.pem} again with the same revocations and a new nextUpdate.

    Run it (C{securemsg ca crl DIR}) before the current CRL's nextUpdate:
    a TLS server that checks revocation refuses every client once its CRL
    has expired.

    @return: The new CRL.
    """
    paths = ca_paths(directory)
    when = certs.as_utc(now)
    ca_cert = load_ca_certificate(paths.directory)
    with _locked(paths):
        index = _read_index(paths)
        ca_key = _load_ca_key(paths, ca_cert, ca_passphrase)
        new_index = dataclasses.replace(index, crl_number=index.crl_number + 1)
        crl = _build_crl(ca_cert, ca_key, new_index, when)
        _write(paths.index, new_index.to_bytes(), 0o644)
        _write_crl_after_index(paths, crl)
    return crl


def list_certificates(directory: certs.StrPath) -> list[CertificateRecord]:
    """Every certificate the CA in C{directory} has issued, oldest first."""
    paths = ca_paths(directory)
    load_ca_certificate(paths.directory)
    return list(_read_index(paths).records)


def load_crl(
    path: certs.StrPath, issuer: x509.Certificate | None = None
) -> x509.CertificateRevocationList:
    """
    Read a PEM CRL, such as C{DIR/crl.pem} (L{securemsg.tls.identity.load_crl}).

    @param issuer: If given, the CRL must be signed by this certificate's
        key and name it as its issuer (pass the CA certificate).
    @raise CAError: If the file cannot be read or parsed, or C{issuer} did
        not sign it.
    """
    try:
        return identity.load_crl(path, issuer)
    except identity.CRLError as error:
        raise CAError(str(error)) from None


# ---------------------------------------------------------------------------
# The command: securemsg ca init|issue|revoke|list|crl


def _terminal_prompt() -> Callable[[str], str] | None:
    """C{getpass} when standard input is a terminal, else L{None}."""
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass
    return None


class _CACommand(CommandOptions):
    """A C{securemsg ca} subcommand: the first argument is always DIR."""

    #: The positional arguments: these are required ...
    required_arguments: ClassVar[tuple[str, ...]] = ("DIR",)
    #: ... and these may follow.
    optional_arguments: ClassVar[tuple[str, ...]] = ()

    directory: str
    arguments: tuple[str, ...]
    """The positional arguments after DIR."""

    def parseArgs(self, *args: str) -> None:
        """Take DIR and the command's other arguments, or say what is wrong."""
        required, optional = self.required_arguments, self.optional_arguments
        wanted = " ".join([*required, *(f"[{name}]" for name in optional)])
        if len(args) < len(required):
            raise usage.UsageError(f"missing {required[len(args)]} (expected {wanted})")
        if len(args) > len(required) + len(optional):
            extra = args[len(required) + len(optional)]
            raise usage.UsageError(f"unexpected argument {extra!r} (expected {wanted})")
        if not args[0]:
            raise usage.UsageError("DIR must not be empty")
        self.directory, self.arguments = args[0], args[1:]

    def _optional_passphrase(self, option: str) -> bytes | None:
        path: str | None = self[option]
        return None if path is None else read_passphrase_file(path)

    def _ca_passphrase(self) -> bytes:
        """
        The encrypted CA key's passphrase: from C{--ca-passphrase-file},
        else C{$SECUREMSG_CA_PASSPHRASE}, else a prompt when standard input
        is a terminal.  The API calls this only when it needs it.
        """
        if self["ca-passphrase-file"] is not None:
            return read_passphrase_file(self["ca-passphrase-file"])
        from_environment = os.environ.get(CA_PASSPHRASE_ENVIRONMENT_VARIABLE)
        if from_environment is not None:
            if not from_environment:
                raise CommandError(f"{CA_PASSPHRASE_ENVIRONMENT_VARIABLE} is empty")
            return from_environment.encode("utf-8")
        prompt = _terminal_prompt()
        key_path = ca_paths(self.directory).key
        if prompt is not None:
            typed = prompt(f"Passphrase for the CA key {key_path}: ")
            if not typed:
                raise CommandError("no passphrase given")
            return typed.encode("utf-8")
        raise CommandError(
            f"the CA key {key_path} is encrypted; give its passphrase with"
            f" --ca-passphrase-file FILE or the {CA_PASSPHRASE_ENVIRONMENT_VARIABLE}"
            " environment variable"
        )


_CA_PASSPHRASE_OPTION: Final[list[str | None]] = [
    "ca-passphrase-file",
    None,
    None,
    "The CA key's passphrase is the first line of this file [default:"
    f" ${CA_PASSPHRASE_ENVIRONMENT_VARIABLE}, else ask on the terminal]; only"
    " read if the CA key is encrypted.",
]


class CAInitOptions(_CACommand):
    """C{securemsg ca init DIR}: make a certificate authority."""

    synopsis = "DIR [options]"
    longdesc = (
        "Make a certificate authority for client certificates in DIR (created"
        " if missing): ca.pem (ECDSA P-256, give it to the server), ca.key"
        " (mode 0600), an empty crl.pem, index.json and issued/. An existing"
        " CA is never replaced without --force. An existing DIR keeps its"
        " mode; init warns if others can write to it."
    )
    optFlags: ClassVar[list[list[str | None]]] = [
        [
            "force",
            None,
            "Replace an existing CA; certificates it issued stop verifying.",
        ],
    ]
    optParameters: ClassVar[list[list[str | None]]] = [
        ["name", None, DEFAULT_CA_NAME, "The CA certificate's common name."],
        ["days", None, str(DEFAULT_CA_DAYS), "Days the CA certificate stays valid."],
        [
            "crl-days",
            None,
            str(DEFAULT_CRL_DAYS),
            "Days each CRL stays valid; re-sign it sooner with 'securemsg ca crl'.",
        ],
        [
            "passphrase-file",
            None,
            None,
            "Encrypt the CA key with the first line of this file.",
        ],
    ]

    def postOptions(self) -> None:
        self["days"] = parse_days("days", self["days"])
        self["crl-days"] = parse_days("crl-days", self["crl-days"])
        if not self["name"] or len(self["name"]) > _MAX_COMMON_NAME:
            raise usage.UsageError(f"--name must be 1 to {_MAX_COMMON_NAME} characters")

    def run(self, stdout: TextIO) -> int:
        passphrase = self._optional_passphrase("passphrase-file")
        paths = ca_paths(self.directory)
        had_issued = os.path.isdir(paths.issued) and bool(os.listdir(paths.issued))
        init_ca(
            self.directory,
            name=self["name"],
            days=self["days"],
            passphrase=passphrase,
            crl_days=self["crl-days"],
            force=bool(self["force"]),
        )
        cert = load_ca_certificate(self.directory)
        protection = "encrypted" if passphrase is not None else "not encrypted"
        directory = shlex.quote(self.directory)
        stdout.write(
            f"CA certificate:  {paths.certificate} (CN={self['name']}, expires"
            f" {_format_date(cert.not_valid_after_utc)})\n"
            f"CA key:          {paths.key} (ECDSA P-256, {protection}, mode 0600)\n"
            f"CRL:             {paths.crl} (empty, valid {self['crl-days']} days)\n"
            f"Fingerprint:     {certs.fingerprint(cert)}\n"
        )
        for warning in directory_warnings(self.directory):
            stdout.write(f"Warning: {warning}\n")
        if self["force"] and had_issued:
            stdout.write(
                f"Note: the files in {paths.issued} belong to the old CA and no"
                " longer verify\n"
            )
        stdout.write(
            f"Issue a client certificate with: {PROGRAM} ca issue {directory} NAME\n"
        )
        return 0


class CAIssueOptions(_CACommand):
    """C{securemsg ca issue DIR NAME}: a client certificate for NAME."""

    synopsis = "DIR NAME [options]"
    longdesc = (
        "Issue a client certificate for the securemsg name NAME: issued/NAME.pem"
        " and issued/NAME.key (mode 0600), and with --p12 also issued/NAME.p12."
        " The certificate names NAME as CN=NAME and as the subjectAltName URI"
        " securemsg:user:NAME. If NAME already has a valid certificate, use"
        " --replace to revoke it (writing a new CRL) or --force to keep it"
        " valid beside the new one."
    )
    optFlags: ClassVar[list[list[str | None]]] = [
        ["p12", None, "Also write issued/NAME.p12 (needs --p12-passphrase-file)."],
        [
            "replace",
            None,
            "Revoke NAME's valid certificates and write a new CRL.",
        ],
        [
            "force",
            None,
            "Issue even if NAME has a valid certificate, which stays valid.",
        ],
    ]
    optParameters: ClassVar[list[list[str | None]]] = [
        [
            "days",
            None,
            str(DEFAULT_CLIENT_DAYS),
            "Days the certificate stays valid.",
        ],
        [
            "passphrase-file",
            None,
            None,
            "Encrypt NAME's key with the first line of this file.",
        ],
        [
            "p12-passphrase-file",
            None,
            None,
            "The PKCS#12 password is the first line of this file.",
        ],
        _CA_PASSPHRASE_OPTION,
    ]

    required_arguments = ("DIR", "NAME")

    def postOptions(self) -> None:
        self.name = self.arguments[0]
        self["days"] = parse_days("days", self["days"])
        if self["force"] and self["replace"]:
            raise usage.UsageError("give --force or --replace, not both")
        if self["p12"] and self["p12-passphrase-file"] is None:
            raise usage.UsageError(
                "--p12 needs --p12-passphrase-file (many clients refuse a"
                " PKCS#12 file without a password)"
            )
        if self["p12-passphrase-file"] is not None and not self["p12"]:
            raise usage.UsageError("--p12-passphrase-file is only used with --p12")
        problem = wire.name_problem(self.name)
        if problem is not None:
            raise usage.UsageError(f"NAME {self.name!r}: {problem}")

    def run(self, stdout: TextIO) -> int:
        key_passphrase = self._optional_passphrase("passphrase-file")
        p12_passphrase = self._optional_passphrase("p12-passphrase-file")
        issued = issue(
            self.directory,
            self.name,
            days=self["days"],
            ca_passphrase=self._ca_passphrase,
            key_passphrase=key_passphrase,
            p12_passphrase=p12_passphrase,
            force=bool(self["force"]),
            replace=bool(self["replace"]),
        )
        protection = "encrypted" if key_passphrase is not None else "not encrypted"
        lines = [
            f"Certificate:  {issued.cert_path}"
            f" (CN={issued.name}, {identity_uri(issued.name)})",
            f"Private key:  {issued.key_path} (ECDSA P-256, {protection}, mode 0600)",
        ]
        if issued.p12_path is not None:
            lines.append(
                f"PKCS#12:      {issued.p12_path} (key, certificate and CA"
                " certificate; password-protected, mode 0600)"
            )
        lines += [
            f"Serial:       {_serial(issued.serial)}",
            f"Expires:      {_format_date(issued.not_after)} ({self['days']} days)",
            f"Fingerprint:  {issued.fingerprint}",
        ]
        directory = shlex.quote(self.directory)
        if issued.revoked:
            revoked = ", ".join(_serial(s) for s in issued.revoked)
            lines.append(f"Revoked:      {revoked} (the CRL is updated)")
        for serial in issued.still_valid:
            lines.append(
                f"Note: {issued.name}'s certificate {_serial(serial)} is still valid;"
                f" revoke it with: {PROGRAM} ca revoke {directory} --serial"
                f" {_serial(serial)}"
            )
        command = [
            PROGRAM,
            "chat",
            "HOST",
            "--cert",
            issued.cert_path,
            "--key",
            issued.key_path,
        ]
        if self["passphrase-file"] is not None:
            command += ["--key-passphrase-file", self["passphrase-file"]]
        lines.append(f"Connect with: {shlex.join(command)}")
        stdout.write("\n".join(lines) + "\n")
        return 0


class CARevokeOptions(_CACommand):
    """C{securemsg ca revoke DIR NAME}: revoke and write a new CRL."""

    synopsis = "DIR (NAME | --serial HEX) [options]"
    longdesc = (
        "Revoke every valid certificate of NAME (or the one certificate with"
        " --serial) and write a new crl.pem signed by the CA. Servers refuse"
        " it only once they load that CRL: give it to them with --crl, then"
        " reload it (SIGHUP or an operator's /reload), which also disconnects"
        " a connected holder."
    )
    optParameters: ClassVar[list[list[str | None]]] = [
        ["serial", None, None, "Revoke the certificate with this serial (hex)."],
        [
            "reason",
            None,
            None,
            "Record this reason in the CRL: " + ", ".join(REVOCATION_REASONS) + ".",
        ],
        _CA_PASSPHRASE_OPTION,
    ]

    optional_arguments = ("NAME",)

    def postOptions(self) -> None:
        self.name: str | None = self.arguments[0] if self.arguments else None
        if (self.name is None) == (self["serial"] is None):
            raise usage.UsageError("give either NAME or --serial HEX")
        if self["serial"] is not None:
            text = self["serial"].lower().replace(":", "").removeprefix("0x")
            try:
                self["serial"] = int(text, 16)
            except ValueError:
                raise usage.UsageError(
                    f"--serial must be hexadecimal, not {self['serial']!r}"
                ) from None
        if self["reason"] is not None:
            by_lower = {k.lower(): v for k, v in REVOCATION_REASONS.items()}
            reason = by_lower.get(self["reason"].lower())
            if reason is None:
                raise usage.UsageError(
                    "--reason must be one of " + ", ".join(REVOCATION_REASONS)
                )
            self["reason"] = reason

    def run(self, stdout: TextIO) -> int:
        serials = revoke(
            self.directory,
            self.name,
            self["serial"],
            ca_passphrase=self._ca_passphrase,
            reason=self["reason"],
        )
        paths = ca_paths(self.directory)
        crl = load_crl(paths.crl)
        names = {r.serial: r.name for r in list_certificates(self.directory)}
        for serial in serials:
            stdout.write(f"Revoked:  {names[serial]} (serial {_serial(serial)})\n")
        next_update = crl.next_update_utc
        until = (
            "" if next_update is None else f", valid until {_format_date(next_update)}"
        )
        stdout.write(
            f"CRL:      {paths.crl} ({len(crl)} revoked{until})\n"
            "Servers still accept it until they load this CRL: give it to each"
            f" server with --crl {shlex.quote(paths.crl)} (a copy, on another"
            " host), then reload it there with SIGHUP or an operator's /reload;"
            " connected holders of a revoked certificate are then disconnected\n"
        )
        return 0


class CAListOptions(_CACommand):
    """C{securemsg ca list DIR}: every issued certificate and its status."""

    synopsis = "DIR"
    longdesc = (
        "List every certificate the CA in DIR has issued, oldest first, with"
        " its status (valid, expired or revoked), expiry date and serial, and"
        " say when the CRL must be re-signed."
    )

    def run(self, stdout: TextIO) -> int:
        now = datetime.now(UTC)
        records = list_certificates(self.directory)
        directory = shlex.quote(self.directory)
        if not records:
            stdout.write(
                "No certificates issued yet; issue one with:"
                f" {PROGRAM} ca issue {directory} NAME\n"
            )
        else:
            rows = [("NAME", "STATUS", "EXPIRES", "SERIAL")]
            for record in records:
                status = record.status(now)
                if record.revoked_at is not None:
                    status += " " + record.revoked_at.strftime("%Y-%m-%d")
                rows.append(
                    (
                        record.name,
                        status,
                        record.not_after.strftime("%Y-%m-%d"),
                        _serial(record.serial),
                    )
                )
            widths = [max(len(row[i]) for row in rows) for i in range(3)]
            for row in rows:
                cells = [
                    cell.ljust(width)
                    for cell, width in zip(row[:3], widths, strict=True)
                ]
                stdout.write("  ".join([*cells, row[3]]) + "\n")
        paths = ca_paths(self.directory)
        try:
            crl = load_crl(paths.crl)
        except CAError as error:
            stdout.write(f"CRL: {error}\n")
            return 0
        next_update = crl.next_update_utc
        if next_update is None:  # pragma: no cover - we always set it
            return 0
        refresh = f"re-sign it with: {PROGRAM} ca crl {directory}"
        if next_update <= now:
            stdout.write(
                f"CRL: {paths.crl} EXPIRED on {_format_date(next_update)};"
                f" servers that check it refuse every client; {refresh}\n"
            )
        elif next_update - now <= timedelta(days=7):
            stdout.write(
                f"CRL: {paths.crl} expires on {_format_date(next_update)}; {refresh}\n"
            )
        else:
            stdout.write(
                f"CRL: {paths.crl} ({len(crl)} revoked), valid until"
                f" {_format_date(next_update)}\n"
            )
        return 0


class CACRLOptions(_CACommand):
    """C{securemsg ca crl DIR}: re-sign the CRL with a new nextUpdate."""

    synopsis = "DIR [options]"
    longdesc = (
        "Sign crl.pem again, with the same revocations and a new validity"
        " period. Run it before the CRL expires (for example from cron, with"
        f" ${CA_PASSPHRASE_ENVIRONMENT_VARIABLE} for an encrypted CA key): a"
        " server that checks an expired CRL refuses every client."
    )
    optParameters: ClassVar[list[list[str | None]]] = [_CA_PASSPHRASE_OPTION]

    def run(self, stdout: TextIO) -> int:
        crl = refresh_crl(self.directory, ca_passphrase=self._ca_passphrase)
        next_update = crl.next_update_utc
        until = (
            "" if next_update is None else f", valid until {_format_date(next_update)}"
        )
        stdout.write(
            f"CRL: {ca_paths(self.directory).crl} ({len(crl)} revoked{until})\n"
        )
        return 0


class CAOptions(CommandOptions):
    """C{securemsg ca}: the certificate authority for client certificates."""

    synopsis = "<command> DIR [options]"
    longdesc = (
        "A small certificate authority for client certificates (mutual TLS)."
        f" Run '{PROGRAM} ca <command> --help' for the options of each command;"
        " docs/ca.md describes the CA directory."
    )
    subCommands: ClassVar[list[tuple[str, str | None, type[CommandOptions], str]]] = [
        ("init", None, CAInitOptions, "Make a certificate authority in DIR."),
        ("issue", None, CAIssueOptions, "Issue a client certificate for NAME."),
        ("revoke", None, CARevokeOptions, "Revoke NAME's certificates; write a CRL."),
        ("list", None, CAListOptions, "List issued certificates and their status."),
        ("crl", None, CACRLOptions, "Re-sign the CRL before it expires."),
    ]

    def getSynopsis(self) -> str:
        """
        Once a command is chosen, just C{Usage: securemsg ca}, to which
        L{usage.Options} appends the command's own synopsis.
        """
        if self.subCommand is not None:
            parent = getattr(self, "parent", None)
            if parent is None:
                return f"Usage: {PROGRAM} ca"
            return f"{parent.getSynopsis()} {parent.subCommand}"
        return str(super().getSynopsis())  # type: ignore[no-untyped-call]

    def postOptions(self) -> None:
        if self.subCommand is None:
            names = ", ".join(command[0] for command in self.subCommands)
            raise usage.UsageError(f"no ca command given; choose one of: {names}")

    def run(self, stdout: TextIO) -> int:
        """Run the chosen command; L{CAError}s become one-line errors."""
        command: CommandOptions = self.subOptions
        try:
            return command.run(stdout)
        except CAError as error:
            raise CommandError(_one_line(str(error))) from None
