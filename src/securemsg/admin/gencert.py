# -*- test-case-name: tests.test_cli -*-
"""
C{securemsg gencert}: a self-signed server certificate and its key, made
with L{securemsg.tls.certs}.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import ClassVar, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.python import usage

from securemsg.admin.command import (
    CommandError,
    CommandOptions,
    describe_os_error,
    parse_days,
    read_passphrase_file,
)
from securemsg.tls import certs


def _check_path(option: str, value: str) -> str:
    """Reject an empty path for C{--option}."""
    if not value:
        raise usage.UsageError(f"--{option} needs a file name, not an empty string")
    return value


def _check_rsa(value: str | None) -> int | None:
    """Parse C{--rsa}: L{None}, or one of L{certs.ALLOWED_RSA_BITS}."""
    if value is None:
        return None
    allowed = ", ".join(str(bits) for bits in certs.ALLOWED_RSA_BITS)
    try:
        bits = int(value)
    except ValueError:
        bits = None
    if bits not in certs.ALLOWED_RSA_BITS:
        raise usage.UsageError(f"--rsa must be one of {allowed}, not {value!r}")
    return bits


def _key_description(key: certs.PrivateKey, encrypted: bool) -> str:
    """A short description of a key: C{ECDSA P-256, not encrypted}."""
    if isinstance(key, rsa.RSAPrivateKey):
        kind = f"RSA {key.key_size}-bit"
    else:
        kind = "ECDSA P-256"
    protection = "encrypted with the passphrase" if encrypted else "not encrypted"
    return f"{kind}, {protection}"


def _server_hint(cert_path: str, key_path: str, passphrase_file: str | None) -> str:
    """
    The C{twistd} command that serves this pair.

    C{--key} is left out when the key is C{private.key} beside the
    certificate, which is where the server looks when it is not told.  For
    an encrypted key the same passphrase file is passed on.
    """
    command = ["twistd", "-n", "securemsg", "--cert", cert_path]
    beside = os.path.join(os.path.dirname(cert_path), "private.key")
    if os.path.abspath(key_path) != os.path.abspath(beside):
        command += ["--key", key_path]
    if passphrase_file is not None:
        command += ["--key-passphrase-file", passphrase_file]
    return shlex.join(command)


class GencertOptions(CommandOptions):
    """
    C{securemsg gencert}: make a private key and a self-signed certificate.
    """

    synopsis = "[options]"
    longdesc = (
        "Make a new private key and a self-signed certificate for the securemsg"
        " server, valid for localhost, 127.0.0.1 and ::1 plus any --host names."
        " The key is ECDSA P-256 unless --rsa is given, and its file is created"
        " readable by you only (mode 0600). Existing files are never replaced"
        " without --force: if both exist and the key matches the certificate"
        " (and it is unexpired, valid for every --host, of the --rsa size),"
        " they are kept and the command succeeds, so it can run again before"
        " every start; otherwise it stops and says why."
    )
    optFlags: ClassVar[list[list[str | None]]] = [
        ["force", None, "Replace the certificate and key files if they exist."],
    ]
    optParameters: ClassVar[list[list[str | None]]] = [
        ["cert", None, "certificate.pem", "Write the certificate (PEM) to this file."],
        [
            "key",
            None,
            None,
            "Write the private key (PEM) to this file [default: private.key"
            " beside the certificate, where the server looks for it].",
        ],
        [
            "rsa",
            None,
            None,
            "Make an RSA key of this many bits (2048, 3072 or 4096) instead of"
            " ECDSA P-256.",
        ],
        ["days", None, "365", "Number of days the certificate stays valid."],
        [
            "passphrase-file",
            None,
            None,
            "Encrypt the private key with the first line of this file.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["host"] = []

    def opt_host(self, name: str) -> None:
        """Also make the certificate valid for this host name or IP (repeatable)."""
        self["host"].append(name)

    def parseArgs(self, *args: str) -> None:
        """Refuse positional arguments: everything is an option."""
        if args:
            raise usage.UsageError(f"unexpected argument {args[0]!r}")

    def postOptions(self) -> None:
        """Check and convert the option values; see L{run} for their use."""
        _check_path("cert", self["cert"])
        if self["key"] is None:
            self["key"] = os.path.join(os.path.dirname(self["cert"]), "private.key")
        _check_path("key", self["key"])
        if self["passphrase-file"] is not None:
            _check_path("passphrase-file", self["passphrase-file"])
        if os.path.abspath(self["cert"]) == os.path.abspath(self["key"]):
            raise usage.UsageError("--cert and --key must name different files")
        self["rsa"] = _check_rsa(self["rsa"])
        self["days"] = parse_days("days", self["days"])
        for host in self["host"]:
            try:
                certs.general_name_for_host(host)
            except ValueError as e:
                raise usage.UsageError(f"--host: {e}") from None

    def run(self, stdout: TextIO) -> int:
        """
        Generate the pair, write it and print a summary.

        Both paths are checked before anything is generated or written, so
        without C{--force} an existing file is never touched and no half
        pair is left behind.
        """
        cert_path: str = self["cert"]
        key_path: str = self["key"]
        force: bool = bool(self["force"])
        passphrase_file: str | None = self["passphrase-file"]

        passphrase = None
        if passphrase_file is not None:
            passphrase = read_passphrase_file(passphrase_file)
        if not force:
            existing = [p for p in (cert_path, key_path) if os.path.lexists(p)]
            if len(existing) == 1:
                raise CommandError(
                    f"{existing[0]} already exists; use --force to replace it"
                )
            if existing:
                return self._keep(cert_path, key_path, passphrase, stdout)
        for path in (cert_path, key_path):
            directory = os.path.dirname(path) or os.curdir
            if not os.path.isdir(directory):
                raise CommandError(
                    f"cannot write {path}: there is no directory {directory}"
                )
        try:
            cert, key = certs.generate_self_signed(
                self["host"], rsa_bits=self["rsa"], days=self["days"]
            )
        except ValueError as e:
            raise CommandError(str(e)) from None

        self._write(key_path, cert_path, cert, key, passphrase, force)

        expires = certs.format_date(cert.not_valid_after_utc)
        hint = _server_hint(cert_path, key_path, passphrase_file)
        stdout.write(
            f"Certificate:  {cert_path}\n"
            f"Private key:  {key_path}"
            f" ({_key_description(key, passphrase is not None)}, mode 0600)\n"
            f"Valid for:    {', '.join(certs.subject_alt_names(cert))}\n"
            f"Expires:      {expires} ({self['days']} days)\n"
            f"Fingerprint:  {certs.fingerprint(cert)}\n"
            f"Start the server with: {hint}\n"
        )
        return 0

    def _keep(
        self, cert_path: str, key_path: str, passphrase: bytes | None, stdout: TextIO
    ) -> int:
        """
        Both files exist: keep them, in one line, if they are a pair this
        command could have made as asked.  Running the README's first
        command again then starts the server with the certificate clients
        already trust, where replacing it would break their trust.

        @raise CommandError: saying why the files are not such a pair.
        """
        cert = self._existing_pair(cert_path, key_path, passphrase)
        expires = certs.format_date(cert.not_valid_after_utc)
        stdout.write(
            f"Kept {cert_path} and {key_path}: they already exist and match"
            f" ({certs.fingerprint(cert)}, expires {expires}); --force makes a"
            " new pair\n"
        )
        return 0

    def _existing_pair(
        self, cert_path: str, key_path: str, passphrase: bytes | None
    ) -> x509.Certificate:
        """
        The certificate in C{cert_path}, if C{key_path} holds its key, it is
        valid now and it fits the options.

        @raise CommandError: otherwise, saying why.
        """

        def refuse(problem: str) -> CommandError:
            return CommandError(
                f"{cert_path} and {key_path} already exist, but {problem};"
                " use --force to replace them"
            )

        try:
            cert = certs.load_certificates(cert_path)[0]
            data = Path(key_path).read_bytes()
        except ValueError as e:  # load_certificates names the file
            raise refuse(str(e)) from None
        except OSError as e:
            raise refuse(f"cannot read {e.filename}: {describe_os_error(e)}") from None
        encrypted = b"ENCRYPTED" in data
        if encrypted and passphrase is None:
            raise refuse(
                f"{key_path} is encrypted: give its --passphrase-file to check it"
            )
        if passphrase is not None and not encrypted:
            raise refuse(f"{key_path} is not encrypted")
        try:
            key = serialization.load_pem_private_key(data, passphrase)
        except (ValueError, TypeError):
            opened = " with that passphrase" if passphrase is not None else ""
            raise refuse(
                f"{key_path} cannot be read as a PEM private key{opened}"
            ) from None
        if not certs.key_matches_certificate(key, cert):
            raise refuse(f"{key_path} is not the key of {cert_path}")
        if cert.not_valid_after_utc <= certs.as_utc(None):
            expired = certs.format_date(cert.not_valid_after_utc)
            raise refuse(f"{cert_path} expired on {expired}")
        bits = self["rsa"]
        if bits is not None and not (
            isinstance(key, rsa.RSAPrivateKey) and key.key_size == bits
        ):
            raise refuse(f"{key_path} is not an RSA {bits}-bit key")
        try:
            names = list(
                cert.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName
                ).value
            )
        except x509.ExtensionNotFound:
            names = []
        missing = [
            host
            for host in self["host"]
            if certs.general_name_for_host(host) not in names
        ]
        if missing:
            raise refuse(f"{cert_path} is not valid for {', '.join(missing)}")
        return cert

    @staticmethod
    def _write(
        key_path: str,
        cert_path: str,
        cert: x509.Certificate,
        key: certs.PrivateKey,
        passphrase: bytes | None,
        force: bool,
    ) -> None:
        """
        Write the key, then the certificate.  If the certificate cannot be
        written, a key file this call created is removed again.
        """
        key_existed = os.path.lexists(key_path)
        try:
            certs.write_private_key(key_path, key, passphrase, force=force)
        except FileExistsError:
            raise CommandError(
                f"{key_path} already exists; use --force to replace it"
            ) from None
        except OSError as e:
            raise CommandError(
                f"cannot write {key_path}: {describe_os_error(e)}"
            ) from None
        try:
            certs.write_certificate(cert_path, cert, force=force)
        except OSError as e:
            if key_existed:
                note = f" ({key_path} was already replaced with a new key)"
            else:
                note = ""
                try:
                    os.unlink(key_path)
                except OSError:  # pragma: no cover
                    note = f" ({key_path} was written and could not be removed)"
            if isinstance(e, FileExistsError):
                reason = f"{cert_path} already exists; use --force to replace it"
            else:
                reason = f"cannot write {cert_path}: {describe_os_error(e)}"
            raise CommandError(reason + note) from None


__all__ = ["GencertOptions"]
