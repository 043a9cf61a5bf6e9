# -*- test-case-name: tests.test_ca -*-
"""
The command: C{securemsg ca init|issue|revoke|list|crl}, each a
L{usage.Options} that calls the CA's API and prints what it did.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from getpass import getpass
from typing import ClassVar, Final, TextIO

from twisted.python import usage

from securemsg.admin.ca.authority import (
    _MAX_COMMON_NAME,
    DEFAULT_CA_DAYS,
    DEFAULT_CA_NAME,
    DEFAULT_CLIENT_DAYS,
    DEFAULT_CRL_DAYS,
    REVOCATION_REASONS,
    init_ca,
    issue,
    refresh_crl,
    revoke,
)
from securemsg.admin.ca.store import (
    CAError,
    _one_line,
    _serial,
    ca_paths,
    directory_warnings,
    list_certificates,
    load_ca_certificate,
    load_crl,
)
from securemsg.admin.command import (
    PROGRAM,
    CommandError,
    CommandOptions,
    parse_days,
    read_passphrase_file,
)
from securemsg.protocol import wire
from securemsg.tls import certs
from securemsg.tls.certs import format_date
from securemsg.tls.identity import identity_uri

__all__ = [
    "CA_PASSPHRASE_ENVIRONMENT_VARIABLE",
    "CACRLOptions",
    "CAInitOptions",
    "CAIssueOptions",
    "CAListOptions",
    "CAOptions",
    "CARevokeOptions",
]

CA_PASSPHRASE_ENVIRONMENT_VARIABLE: Final = "SECUREMSG_CA_PASSPHRASE"  # noqa: S105
"""Where C{securemsg ca} looks for the CA key's passphrase after the file."""


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
            f" {format_date(cert.not_valid_after_utc)})\n"
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
            f"Expires:      {format_date(issued.not_after)} ({self['days']} days)",
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
            "" if next_update is None else f", valid until {format_date(next_update)}"
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
                f"CRL: {paths.crl} EXPIRED on {format_date(next_update)};"
                f" servers that check it refuse every client; {refresh}\n"
            )
        elif next_update - now <= timedelta(days=7):
            stdout.write(
                f"CRL: {paths.crl} expires on {format_date(next_update)}; {refresh}\n"
            )
        else:
            stdout.write(
                f"CRL: {paths.crl} ({len(crl)} revoked), valid until"
                f" {format_date(next_update)}\n"
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
            "" if next_update is None else f", valid until {format_date(next_update)}"
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
        return str(super().getSynopsis())

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
