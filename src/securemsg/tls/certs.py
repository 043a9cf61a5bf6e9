# -*- test-case-name: tests.test_certs -*-
"""
Certificates and keys for securemsg, made and checked with C{cryptography}.

Everything here is pure Python on top of the C{cryptography} package; nothing
shells out to C{openssl}.  The functions fall into three groups:

  - making a self-signed server certificate: L{generate_self_signed}, and
    writing it and its key safely: L{write_certificate},
    L{write_private_key};
  - reading what an operator gives us: L{load_certificates},
    L{pem_has_private_key}, L{key_matches_certificate};
  - telling people about it: L{fingerprint} (and L{parse_fingerprint} for
    the pinned form clients type in), L{subject_alt_names},
    L{common_name}, L{describe_certificate} and L{key_file_warnings} (what
    is wrong with the server's files is L{securemsg.tls.files}'s to say).

Why the self-signed certificate carries exactly the extensions it does is
explained in L{generate_self_signed}.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shlex
import stat
import string
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias

import idna
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PROGRAM: str = "securemsg"
"""The name the command is installed as, used in every message."""


def describe_os_error(error: OSError) -> str:
    """The reason part of an C{OSError}, without the C{[Errno N]} noise."""
    return error.strerror or str(error)


class PassphraseFileError(Exception):
    """A passphrase file cannot be used; the message is one line."""


def read_passphrase_file(path: StrPath) -> bytes:
    """
    The passphrase in the file at C{path}: its first line, without the line
    ending, encoded as UTF-8.  Every C{--...passphrase-file} option of the
    server and of the commands reads its file this way.

    @raise PassphraseFileError: if the file cannot be read, is not UTF-8
        text, or its first line is empty.
    """
    try:
        with open(path, encoding="utf-8") as file:
            first = file.readline()
    except OSError as error:
        raise PassphraseFileError(
            f"cannot read passphrase file {path}: {error.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise PassphraseFileError(f"passphrase file {path} is not UTF-8 text") from None
    passphrase = first.rstrip("\r\n")
    if not passphrase:
        raise PassphraseFileError(
            f"passphrase file {path} has an empty first line;"
            " put the passphrase on the first line"
        )
    return passphrase.encode("utf-8")


__all__ = [
    "ALLOWED_RSA_BITS",
    "CLOCK_SKEW",
    "DEFAULT_HOSTS",
    "FINGERPRINT_PREFIX",
    "PROGRAM",
    "PrivateKey",
    "StrPath",
    "as_utc",
    "common_name",
    "describe_certificate",
    "describe_os_error",
    "fingerprint",
    "general_name_for_host",
    "generate_self_signed",
    "key_file_warnings",
    "key_matches_certificate",
    "key_usage",
    "load_certificates",
    "parse_fingerprint",
    "pem_has_private_key",
    "subject_alt_names",
    "write_certificate",
    "write_private_key",
]

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""The kinds of private key L{generate_self_signed} makes."""

StrPath: TypeAlias = str | os.PathLike[str]
"""A file system path, as a string or a path object."""

ALLOWED_RSA_BITS: Final[tuple[int, ...]] = (2048, 3072, 4096)
"""The RSA key sizes L{generate_self_signed} accepts."""

DEFAULT_HOSTS: Final[tuple[str, ...]] = ("localhost", "127.0.0.1", "::1")
"""Names every generated certificate is valid for, whatever else is asked."""

CLOCK_SKEW: Final = timedelta(minutes=5)
"""How far before "now" a new certificate starts being valid."""

FINGERPRINT_PREFIX: Final = "sha256:"
"""What every securemsg fingerprint starts with; see L{fingerprint}."""

_FINGERPRINT_HEX_DIGITS: Final = 64
_HEX_DIGITS: Final = frozenset(string.hexdigits)
_DNS_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_PEM_CERTIFICATE: Final = re.compile(rb"-----BEGIN CERTIFICATE-----")
_PEM_PRIVATE_KEY: Final = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_GROUP_OTHER_RW: Final = (
    stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH
)  # 0o066
_MAX_COMMON_NAME: Final = 64  # ub-common-name in RFC 5280


def as_utc(now: datetime | None) -> datetime:
    """C{now} as an aware UTC datetime; naive values are taken to be UTC."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC)
    return now.astimezone(UTC)


def format_date(when: datetime) -> str:
    """A date and time as people read it in messages: C{2026-05-09 07:35 UTC}."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_days(span: timedelta) -> str:
    """Whole days in C{span}, as people say it: C{less than a day}, C{1 day}."""
    days = span.days
    if days < 1:
        return "less than a day"
    return "1 day" if days == 1 else f"{days} days"


def _dns_name(host: str) -> str:
    """
    Validate a DNS name and return its canonical (lower-case A-label) form.

    A leftmost C{*} label is allowed, for wildcard certificates.  Names in
    Unicode are converted to their C{xn--} form.

    @raise ValueError: If C{host} is not a valid host name.
    """
    name = host[:-1] if host.endswith(".") else host
    if not name:
        raise ValueError(f"{host!r} is not a valid host name or IP address")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as e:
            raise ValueError(
                f"{host!r} is not a valid host name or IP address ({e})"
            ) from None
    name = name.lower()
    if len(name) > 253:
        raise ValueError(f"host name {host!r} is longer than 253 characters")
    labels = name.split(".")
    for index, label in enumerate(labels):
        if label == "*" and index == 0 and len(labels) > 2:
            continue
        if not _DNS_LABEL.match(label):
            raise ValueError(
                f"{host!r} is not a valid host name or IP address: each dot-separated"
                " part must be 1-63 letters, digits or inner hyphens"
            )
    if labels[-1].isdigit():
        # RFC 3696 section 2: a top-level domain is never all-numeric, so
        # this is a mistyped IP address such as 10.0.0 or 1.2.3.456.
        raise ValueError(f"{host!r} is neither a valid IP address nor a host name")
    return name


def general_name_for_host(host: str) -> x509.DNSName | x509.IPAddress:
    """
    The subjectAltName entry for one host: an IP address if C{host} parses
    as one (IPv6 may be given in brackets), otherwise a validated DNS name.

    @param host: A host name such as C{chat.example.org}, C{*.example.org} or
        C{bücher.example}, or an IP address such as C{192.0.2.7} or
        C{[2001:db8::1]}.

    @raise ValueError: With a one-line message, if C{host} is neither.
    """
    text = host.strip()
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return x509.DNSName(_dns_name(text))
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise ValueError(
            f"{host!r}: an IPv6 address with a zone (%{address.scope_id})"
            " cannot go in a certificate"
        )
    return x509.IPAddress(address)


def _general_names(hosts: Sequence[str]) -> list[x509.DNSName | x509.IPAddress]:
    """The de-duplicated SAN entries for C{hosts} followed by L{DEFAULT_HOSTS}."""
    if isinstance(hosts, str):
        raise TypeError("hosts must be a sequence of host names, not one string")
    names: list[x509.DNSName | x509.IPAddress] = []
    for host in (*hosts, *DEFAULT_HOSTS):
        name = general_name_for_host(host)
        if name not in names:
            names.append(name)
    return names


def _new_private_key(rsa_bits: int | None) -> PrivateKey:
    """An ECDSA P-256 key, or an RSA key of C{rsa_bits} bits when given."""
    if rsa_bits is None:
        return ec.generate_private_key(ec.SECP256R1())
    if isinstance(rsa_bits, bool) or rsa_bits not in ALLOWED_RSA_BITS:
        allowed = ", ".join(str(bits) for bits in ALLOWED_RSA_BITS)
        raise ValueError(f"RSA key size must be one of {allowed} bits, not {rsa_bits}")
    return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)


def generate_self_signed(
    hosts: Sequence[str] = (),
    *,
    rsa_bits: int | None = None,
    days: int = 365,
    now: datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """
    Make a new private key and a self-signed server certificate for it.

    The certificate is meant to be its own trust anchor: clients pin it (or
    its L{fingerprint}).  Its subjectAltName always holds C{localhost},
    C{127.0.0.1} and C{::1}, after any C{hosts} given; each host that parses
    as an IP address goes in as an IP address, anything else as a DNS name.
    The subject common name is the first of C{hosts} (if it fits in the
    64-character limit), else C{localhost}.

    The extension set was chosen by trying every combination against both
    Python's C{ssl} (OpenSSL 3.0) and pyOpenSSL's OpenSSL 4.0, each with and
    without C{X509_STRICT}, and C{cryptography.x509.verification}:

      - OpenSSL accepts a self-signed certificate it was told to trust with
        almost any extensions (it does not apply CA checks to the anchor);
      - C{cryptography}'s verifier applies the CA/Browser-Forum end-entity
        profile even when the leaf is itself the anchor.  It rejects the
        certificate when C{basicConstraints} says C{cA=TRUE}, when
        C{keyUsage} asserts C{keyCertSign}, and when there is no
        C{authorityKeyIdentifier}.

    So the certificate is an end-entity one: C{basicConstraints cA=FALSE}
    (critical), C{keyUsage digitalSignature} (plus C{keyEncipherment} for
    RSA, for TLS 1.2 clients using RSA key exchange; critical),
    C{extendedKeyUsage serverAuth}, a C{subjectKeyIdentifier} and an
    C{authorityKeyIdentifier} whose key ID is that same identifier.

    @param hosts: Extra host names or IP addresses; see
        L{general_name_for_host}.  Duplicates are dropped.
    @param rsa_bits: L{None} for an ECDSA P-256 key (the default), or one of
        L{ALLOWED_RSA_BITS} for an RSA key.
    @param days: How many days from C{now} the certificate stays valid.
    @param now: The time to issue at; defaults to the current time.  A naive
        datetime is taken to be UTC.

    @return: The certificate (signed with SHA-256) and its private key.

    @raise ValueError: For a bad host, key size or number of days.
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be a whole number of at least 1, not {days!r}")
    issued = as_utc(now)
    try:
        not_after = issued + timedelta(days=days)
    except OverflowError:
        raise ValueError(f"{days} days is too far in the future") from None
    names = _general_names(hosts)
    key = _new_private_key(rsa_bits)

    # The caller's hosts come first in names, in canonical form.
    cn = str(names[0].value) if hosts else "localhost"
    if len(cn) > _MAX_COMMON_NAME:
        cn = "localhost"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    public_key = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(issued - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage(digital_signature=True, key_encipherment=is_rsa),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
    )
    return builder.sign(key, hashes.SHA256()), key


def key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    """A KeyUsage extension with just the named uses; the rest are off."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def fingerprint(cert: x509.Certificate) -> str:
    """
    The SHA-256 fingerprint of C{cert}'s DER encoding, in securemsg's form:
    C{sha256:} followed by 64 lower-case hex digits, no separators.
    """
    return FINGERPRINT_PREFIX + cert.fingerprint(hashes.SHA256()).hex()


def parse_fingerprint(text: str) -> bytes:
    """
    Parse a fingerprint as typed by a person.

    Accepts C{sha256:} (in any case) followed by 64 hex digits in any case,
    either run together or as 32 colon-separated pairs (the
    C{AB:CD:...} form other tools print).  Surrounding white space is
    ignored.

    @return: The 32 raw bytes of the SHA-256 digest.

    @raise ValueError: With a one-line message, for anything else.
    """
    stripped = text.strip()
    expected = (
        f"expected {FINGERPRINT_PREFIX!r} followed by 64 hex digits"
        " (optionally as colon-separated pairs)"
    )
    if not stripped.lower().startswith(FINGERPRINT_PREFIX):
        raise ValueError(f"invalid fingerprint {text!r}: {expected}")
    body = stripped[len(FINGERPRINT_PREFIX) :]
    if ":" in body:
        pairs = body.split(":")
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(
                f"invalid fingerprint {text!r}: colons must separate pairs of hex"
                f" digits; {expected}"
            )
        body = "".join(pairs)
    if not body or not set(body) <= _HEX_DIGITS:
        raise ValueError(f"invalid fingerprint {text!r}: {expected}")
    if len(body) != _FINGERPRINT_HEX_DIGITS:
        raise ValueError(
            f"invalid fingerprint {text!r}: it has {len(body)} hex digits; {expected}"
        )
    return bytes.fromhex(body)


def load_certificates(path: StrPath) -> list[x509.Certificate]:
    """
    All PEM certificates in the file at C{path}, in file order.

    A server certificate file should hold the server's own certificate first
    and then any intermediates (the "full chain" file an ACME client writes).
    Other PEM blocks, such as a private key, are ignored.

    @raise ValueError: With a one-line message, when the file holds no PEM
        certificate or one cannot be parsed.
    @raise OSError: When the file cannot be read.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not _PEM_CERTIFICATE.search(data):
        raise ValueError(
            f"{os.fspath(path)}: no PEM certificate found"
            " (expected a '-----BEGIN CERTIFICATE-----' block)"
        )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"{os.fspath(path)}: cannot parse certificate: {detail}"
        ) from None


def pem_has_private_key(data: bytes) -> bool:
    """
    Whether PEM C{data} contains a private key block of any kind (PKCS#8,
    encrypted PKCS#8, or the traditional C{RSA}/C{EC} forms).
    """
    return _PEM_PRIVATE_KEY.search(data) is not None


def subject_alt_names(cert: x509.Certificate) -> list[str]:
    """
    The DNS names and IP addresses in C{cert}'s subjectAltName, as strings,
    in certificate order; an empty list when it has no such extension.
    """
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names: list[str] = []
    for general_name in extension.value:
        if isinstance(general_name, x509.DNSName | x509.IPAddress):
            names.append(str(general_name.value))
    return names


def common_name(cert: x509.Certificate) -> str | None:
    """C{cert}'s first subject common name, or L{None} if it has none."""
    attributes = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def describe_certificate(cert: x509.Certificate) -> str:
    """
    One line about C{cert} for logs: subject, names, expiry and fingerprint.
    """
    names = subject_alt_names(cert)
    valid_for = f"valid for {', '.join(names)}" if names else "no subjectAltName"
    subject = cert.subject.rfc4514_string() or "(empty subject)"
    return (
        f"subject {subject}; {valid_for};"
        f" expires {format_date(cert.not_valid_after_utc)}; {fingerprint(cert)}"
    )


def key_matches_certificate(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    """Whether C{key} is the private half of C{cert}'s public key."""
    # cryptography compares public keys by value (False across key types).
    return bool(key.public_key() == cert.public_key())


def key_file_warnings(path: StrPath) -> list[str]:
    """
    Warnings about a private key file's permissions: one line if the file
    can be read or written by its group or by others.

    Always empty on Windows, where POSIX mode bits mean little.

    @raise OSError: When the file cannot be examined.
    """
    if os.name == "nt":  # pragma: no cover
        return []
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if not mode & _GROUP_OTHER_RW:
        return []
    shown = os.fspath(path)
    return [
        f"private key file {shown} is accessible by group or others"
        f" (mode {mode:04o}); run: chmod 600 {shlex.quote(shown)}"
    ]


def _write_new(path: StrPath, data: bytes, mode: int) -> None:
    """
    Create C{path} (which must not exist) with C{mode} and write C{data}.

    The mode is given to C{open(2)} itself, so the file never exists with
    looser permissions, not even for a moment.

    @raise FileExistsError: If C{path} already exists (even as a dangling
        symbolic link).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, mode)
    try:
        with open(fd, "wb", closefd=True) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(path)
        raise


def _replace(path: StrPath, data: bytes, mode: int) -> None:
    """
    Atomically put C{data} at C{path}, whether or not it exists.

    The data goes into a new temporary file beside C{path}, created with
    C{mode} (see L{_write_new}), which then replaces C{path} with
    C{os.replace}: readers see either the old file or the new one, and a
    symbolic link at C{path} is replaced rather than followed.
    """
    target = os.fspath(path)
    directory, base = os.path.split(target)
    for _ in range(100):
        temporary = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            _write_new(temporary, data, mode)
        except FileExistsError:  # pragma: no cover
            continue
        break
    else:  # pragma: no cover
        raise FileExistsError(f"cannot create a temporary file beside {target}")
    try:
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


def _write(path: StrPath, data: bytes, mode: int, force: bool) -> None:
    """Write C{data} to C{path} with L{_replace} or, without C{force}, L{_write_new}."""
    if force:
        _replace(path, data, mode)
    else:
        _write_new(path, data, mode)


def write_private_key(
    path: StrPath,
    key: PrivateKeyTypes,
    passphrase: bytes | None,
    *,
    force: bool,
) -> None:
    """
    Write C{key} to C{path} as PKCS#8 PEM, readable by its owner only (0600).

    @param passphrase: When not L{None}, encrypt the key with it
        (C{BestAvailableEncryption}); it must not be empty.
    @param force: Replace an existing file (atomically, through a 0600
        temporary file in the same directory).  Without it an existing file
        is an error.

    @raise FileExistsError: If C{path} exists and C{force} is false.
    @raise ValueError: If C{passphrase} is empty.
    """
    encryption: serialization.KeySerializationEncryption
    if passphrase is None:
        encryption = serialization.NoEncryption()
    elif not passphrase:
        raise ValueError("the passphrase must not be empty")
    else:
        encryption = serialization.BestAvailableEncryption(passphrase)
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    _write(path, data, 0o600, force)


def write_certificate(path: StrPath, cert: x509.Certificate, *, force: bool) -> None:
    """
    Write C{cert} to C{path} as PEM (mode 0644 less the umask).

    @param force: Replace an existing file atomically; without it an existing
        file is an error.

    @raise FileExistsError: If C{path} exists and C{force} is false.
    """
    _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644, force)
