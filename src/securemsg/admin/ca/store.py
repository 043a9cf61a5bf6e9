# -*- test-case-name: tests.test_ca -*-
"""
The CA's directory on disk: where each file lives, the index of every
certificate issued (C{index.json}), reading the CA certificate and key,
and writing files so that a failed command leaves the directory as it was
(the lock, atomic replacement, and putting things back on failure).

Names with an underscore are private to L{securemsg.admin.ca}; its other
modules share them.
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
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from securemsg.admin.command import PROGRAM, describe_os_error
from securemsg.tls import certs, identity

__all__ = [
    "CAError",
    "CAPaths",
    "CertificateRecord",
    "Passphrase",
    "ca_key_is_encrypted",
    "ca_paths",
    "directory_warnings",
    "list_certificates",
    "load_ca_certificate",
    "load_crl",
]

_INDEX_FORMAT: Final = "securemsg-ca-index"
_INDEX_VERSION: Final = 1

#: An encrypted PKCS#8 key, or a traditional one with a Proc-Type header.
_ENCRYPTED_PEM: Final = re.compile(
    rb"^(?:-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4, *ENCRYPTED)",
    re.MULTILINE,
)

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
# Writing


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


def _write_new_ca(files: Sequence[tuple[str, bytes, int]], *, force: bool) -> None:
    """
    Write a new CA's files, as (path, data, mode), in that order.

    Without C{force} each is created exclusively, so a CA that appeared
    meanwhile is never overwritten, and if one cannot be written those
    written before it are removed.
    """
    written: list[str] = []
    try:
        for path, data, mode in files:
            _write(path, data, mode, exclusive=not force)
            written.append(path)
    except BaseException:
        if not force:
            _remove(written)
        raise


def _write_issued(
    paths: CAPaths, index: _Index, files: Sequence[tuple[str, bytes, int]]
) -> None:
    """
    Record C{index}, then write an issued certificate's files, as (path,
    data, mode).

    The index first, so that every certificate that leaves L{issue} is on
    record and can be revoked.  If a file then cannot be written, the old
    index is put back and the files this call created are removed (files it
    replaced, of certificates that are no longer valid or with force, stay
    replaced).
    """
    old_index = _read(paths.index, "the CA index")
    _write(paths.index, index.to_bytes(), 0o644)
    created: list[str] = []
    try:
        if not os.path.isdir(paths.issued):
            os.makedirs(paths.issued, mode=0o700, exist_ok=True)
        for path, data, mode in files:
            existed = os.path.lexists(path)
            _write(path, data, mode)
            if not existed:
                created.append(path)
    except BaseException as error:
        _remove(created)
        _restore(paths.index, old_index, 0o644)
        if isinstance(error, OSError):
            raise _os_problem(error, "create", paths.issued) from None
        raise


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
