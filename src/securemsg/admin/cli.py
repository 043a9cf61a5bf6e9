# -*- test-case-name: tests.test_cli -*-
"""
The C{securemsg} command line: C{securemsg <command> [options]}.

The top-level L{SecuremsgOptions} holds one entry per subcommand in its
C{subCommands}.  To add a subcommand, subclass L{CommandOptions}, implement
L{CommandOptions.run}, and add a C{(name, None, YourOptions, description)}
entry there.  L{main} does the rest the same way for every subcommand: it
prints help and version text to stdout, turns L{usage.UsageError} into a
one-line message and exit status 2, and turns L{CommandError} (raised by
C{run}) into a one-line message and the error's exit status.  No error ever
reaches the user as a traceback.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import ClassVar, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.python import usage

from securemsg.admin.ca import CAOptions
from securemsg.admin.chat import ChatOptions
from securemsg.admin.check import CheckOptions
from securemsg.admin.command import (
    PROGRAM,
    CommandError,
    CommandOptions,
    ShowText,
    describe_os_error,
    parse_days,
    read_passphrase_file,
)
from securemsg.admin.fingerprint import FingerprintOptions
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

        expires = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
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
        expires = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
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
            expired = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
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


class SecuremsgOptions(CommandOptions):
    """The top level of the C{securemsg} command: pick a subcommand."""

    synopsis = f"Usage: {PROGRAM} [--version] [--help] <command> [options]"
    longdesc = f"Run '{PROGRAM} <command> --help' for the options of each command."
    subCommands: ClassVar[list[tuple[str, str | None, type[CommandOptions], str]]] = [
        (
            "gencert",
            None,
            GencertOptions,
            "Make a private key and a self-signed certificate for the server.",
        ),
        ("chat", None, ChatOptions, "Chat with a securemsg server."),
        (
            "fingerprint",
            None,
            FingerprintOptions,
            "Print the SHA-256 fingerprint of a certificate file or a server.",
        ),
        ("ca", None, CAOptions, "Run a certificate authority for client certificates."),
        (
            "check",
            None,
            CheckOptions,
            "Check the server's certificate, key, client CA and CRL before use.",
        ),
    ]

    def getSynopsis(self) -> str:
        """
        Usage line; once a subcommand is chosen, just C{Usage: securemsg}, to
        which L{usage.Options} appends the subcommand's own synopsis.
        """
        if self.subCommand is not None:
            return f"Usage: {PROGRAM}"
        return super().getSynopsis()

    def postOptions(self) -> None:
        """Insist on a subcommand."""
        if self.subCommand is None:
            names = ", ".join(command[0] for command in self.subCommands)
            raise usage.UsageError(f"no command given; choose one of: {names}")


def _command_name(options: usage.Options) -> str:
    """
    C{securemsg}, C{securemsg gencert} or C{securemsg ca issue}: the
    command as far as it was parsed, for message prefixes.
    """
    words = [PROGRAM]
    while (name := getattr(options, "subCommand", None)) is not None:
        words.append(name)
        options = options.subOptions
    return " ".join(words)


def _one_line(text: str) -> str:
    """C{text} with any line breaks folded into spaces."""
    return " ".join(text.split())


def _usage_message(error: usage.UsageError) -> str:
    """
    The message of a usage error as one line without a closing full stop,
    since L{main} goes on after it (C{...; run 'securemsg chat --help' for
    usage}); some of L{usage.Options}'s own messages end with one.
    """
    text = _one_line(str(error))
    return text[:-1] if text.endswith(".") and not text.endswith("..") else text


def main(
    argv: list[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Run the C{securemsg} command and return its exit status.

    The C{securemsg} console script calls this and exits with the result.

    @param argv: The arguments after the program name; defaults to
        C{sys.argv[1:]}.
    @param stdout: Where normal output and C{--help} go; defaults to
        C{sys.stdout}.
    @param stderr: Where one-line error messages go; defaults to
        C{sys.stderr}.
    @return: 0 on success, 2 for a usage error, otherwise the failing
        command's exit status (1 unless it says otherwise).
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    arguments = sys.argv[1:] if argv is None else argv

    options = SecuremsgOptions()
    try:
        options.parseOptions(arguments)
    except ShowText as shown:
        out.write(shown.text + "\n")
        return 0
    except usage.UsageError as e:
        name = _command_name(options)
        err.write(f"{name}: {_usage_message(e)}; run '{name} --help' for usage\n")
        return 2

    name = _command_name(options)
    # Every level gets the streams (a group such as "ca" runs its own
    # subcommand).
    level: usage.Options | None = options
    while level is not None:
        if isinstance(level, CommandOptions):
            level.stderr = err
        level = getattr(level, "subOptions", None)
    command: CommandOptions = options.subOptions
    try:
        return command.run(out)
    except CommandError as e:
        err.write(f"{name}: {_one_line(e.message)}\n")
        return e.exit_code
    except KeyboardInterrupt:
        err.write(f"{name}: interrupted\n")
        return 130
    except Exception as e:
        # Never a traceback, but never a silent failure either.
        detail = _one_line(str(e))
        err.write(f"{name}: unexpected error: {type(e).__name__}: {detail}\n")
        return 1
