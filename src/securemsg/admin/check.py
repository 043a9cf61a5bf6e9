# -*- test-case-name: tests.test_check -*-
"""
C{securemsg check}: the command line of the pre-flight report on the
server's TLS files, made by L{securemsg.tls.inspect.run_check}.
"""

from __future__ import annotations

from typing import ClassVar, TextIO

from twisted.python import usage

from securemsg.admin.command import CommandOptions
from securemsg.tls import policy as tls
from securemsg.tls.inspect import run_check

__all__ = ["CheckOptions"]


# ---------------------------------------------------------------------------
# The command


class CheckOptions(CommandOptions):
    """
    C{securemsg check}: the pre-flight report of L{run_check}.
    """

    synopsis = "[--cert FILE] [--key FILE] [options]"
    longdesc = (
        "Check the server's certificate, key and (for mutual TLS) client CA"
        " and CRL before serving them, and print one line per check: ok, warn"
        " or FAIL, then a summary. The key and its passphrase are found as the"
        " server finds them: --key, else the certificate file if it holds a"
        " key, else private.key beside the certificate; the passphrase from"
        " --key-passphrase-file, else SECUREMSG_KEY_PASSPHRASE, else a prompt"
        " on a terminal. Exit status: 0 when there is no FAIL (warnings are"
        " allowed), 1 otherwise, 2 for a bad command line."
    )
    optParameters: ClassVar[list[list[str | None]]] = [
        ["cert", "c", "certificate.pem", "PEM certificate (chain) file."],
        [
            "key",
            "k",
            None,
            "PEM private key file [default: the certificate file if it holds"
            " a key, else private.key beside the certificate].",
        ],
        [
            "key-passphrase-file",
            None,
            None,
            "File whose first line is the private key's passphrase.",
        ],
        [
            "client-ca",
            None,
            None,
            "PEM file of the CA(s) whose client certificates the server accepts.",
        ],
        ["crl", None, None, "PEM revocation list of that CA (needs --client-ca)."],
    ]

    def parseArgs(self, *args: str) -> None:
        """Refuse positional arguments: everything is an option."""
        if args:
            raise usage.UsageError(f"unexpected argument {args[0]!r}")

    def postOptions(self) -> None:
        """Refuse empty file names, and a CRL without its CA."""
        for option in ("cert", "key", "key-passphrase-file", "client-ca", "crl"):
            if self[option] is not None and not self[option]:
                raise usage.UsageError(
                    f"--{option} needs a file name, not an empty string"
                )
        if self["crl"] is not None and self["client-ca"] is None:
            raise usage.UsageError(
                "--crl needs --client-ca, the CA the CRL is checked against"
            )

    def run(self, stdout: TextIO) -> int:
        """Print the report; 0 without problems, else 1."""
        report = run_check(
            self["cert"],
            self["key"],
            passphrases=tls.PassphraseSource.from_process(self["key-passphrase-file"]),
            client_ca=self["client-ca"],
            crl=self["crl"],
        )
        stdout.write(report.text())
        return report.exit_code
