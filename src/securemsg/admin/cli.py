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

import sys
from typing import ClassVar, TextIO

from twisted.python import usage

from securemsg.admin.ca import CAOptions
from securemsg.admin.chat import ChatOptions
from securemsg.admin.check import CheckOptions
from securemsg.admin.command import (
    PROGRAM,
    CommandError,
    CommandOptions,
    ShowText,
)
from securemsg.admin.fingerprint import FingerprintOptions
from securemsg.admin.gencert import GencertOptions


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
