# -*- test-case-name: tests.test_ca -*-
"""
What the CA does: make its own certificate, issue client certificates,
revoke them, and sign the certificate revocation lists (CRLs) that say so.
Each operation checks its request, builds what it signs with
C{cryptography}, and records it through L{securemsg.admin.ca.store}.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securemsg.admin.ca.store import (
    CAError,
    CertificateRecord,
    Passphrase,
    _crl_pem,
    _Index,
    _key_pem,
    _load_ca_key,
    _locked,
    _os_problem,
    _read_index,
    _serial,
    _write,
    _write_crl_after_index,
    _write_issued,
    _write_new_ca,
    ca_paths,
    load_ca_certificate,
)
from securemsg.admin.command import PROGRAM
from securemsg.protocol import wire
from securemsg.tls import certs
from securemsg.tls.certs import format_date
from securemsg.tls.identity import identity_uri

__all__ = [
    "DEFAULT_CA_DAYS",
    "DEFAULT_CA_NAME",
    "DEFAULT_CLIENT_DAYS",
    "DEFAULT_CRL_DAYS",
    "REVOCATION_REASONS",
    "IssuedCertificate",
    "init_ca",
    "issue",
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

_MAX_COMMON_NAME: Final = 64  # ub-common-name in RFC 5280

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


# ---------------------------------------------------------------------------
# The operations


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
        # The key first: if it cannot be written, nothing else is.
        _write_new_ca(
            [
                (paths.key, _key_pem(key, passphrase), 0o600),
                (
                    paths.certificate,
                    cert.public_bytes(serialization.Encoding.PEM),
                    0o644,
                ),
                (paths.crl, _crl_pem(crl), 0o644),
                (paths.index, index.to_bytes(), 0o644),
            ],
            force=force,
        )


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
                f" {_serial(newest.serial)}, expires {format_date(newest.not_after)});"
                " use --replace to revoke it and issue a new one, or --force to"
                " issue another one beside it"
            )
        not_after = when + timedelta(days=days)
        if not_after > ca_cert.not_valid_after_utc:
            raise CAError(
                f"a certificate valid for {days} days would outlast the CA"
                f" certificate, which expires on"
                f" {format_date(ca_cert.not_valid_after_utc)}; use fewer days"
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
        files: list[tuple[str, bytes, int]] = [
            (key_path, _key_pem(key, key_passphrase), 0o600),
            (cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644),
        ]
        if p12_passphrase is not None:
            bundle = pkcs12.serialize_key_and_certificates(
                name.encode("utf-8"),
                key,
                cert,
                [ca_cert],
                serialization.BestAvailableEncryption(p12_passphrase),
            )
            files.append((p12_path, bundle, 0o600))
        _write_issued(paths, new_index, files)
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
                    f" already revoked on {format_date(found[0].revoked_at)}"
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
