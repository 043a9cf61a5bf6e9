# -*- test-case-name: tests.test_cli -*-
"""
What every C{securemsg} subcommand shares: its option parser base class and
how it reports failure.  L{securemsg.admin.cli} puts the subcommands together.
"""

from __future__ import annotations

import getopt
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import ClassVar, TextIO

from twisted.python import usage

from securemsg._version import __version__
from securemsg.tls import certs

# Re-exported for the commands: the TLS checks need them without admin.
from securemsg.tls.certs import PROGRAM as PROGRAM
from securemsg.tls.certs import describe_os_error as describe_os_error


class CommandError(Exception):
    """
    A failure a subcommand reports as one line on stderr.

    @ivar message: The line to print (without the C{securemsg command:}
        prefix, which L{main} adds).
    @ivar exit_code: The process exit status to return.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ShowText(Exception):
    """Raised by C{--help} and C{--version}: print C{text} and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class CommandOptions(usage.Options):
    """
    Base class for securemsg's option parsers, top level and subcommands.

    Compared with L{usage.Options}: C{--help} and C{--version} hand their
    text to L{main} (which prints it to the stream it was given) instead of
    printing to C{sys.stdout} and exiting; C{--version} reports securemsg's
    version, not Twisted's; and an empty C{longdesc} stops C{--help} from
    falling back to the docstring of whatever C{__main__} module is running.
    """

    longdesc: ClassVar[str] = ""

    #: Where a command writes what is not its output (descriptions,
    #: diagnostics): the standard error stream L{securemsg.admin.cli.main} was
    #: given, which it sets before L{run}.
    stderr: TextIO

    def __init__(self) -> None:
        super().__init__()
        self.stderr = sys.stderr

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options} (default: C{sys.argv[1:]}), as L{usage.Options}
        does, except that a command without subcommands also takes options
        after its arguments (C{securemsg chat HOST --ca FILE}), as most
        tools do; C{--} still ends the options.
        """
        if options is not None and not getattr(self, "subCommands", None):
            options = self._options_first(list(options))
        super().parseOptions(options)

    def _options_first(self, arguments: list[str]) -> list[str]:
        # usage.Options stops at the first argument (getopt); gnu_getopt
        # does not.  Put the options it finds first, then the arguments.
        try:
            found, rest = getopt.gnu_getopt(arguments, self.shortOpt, self.longOpt)
        except getopt.GetoptError as error:
            raise usage.UsageError(str(error)) from None
        takes_value = {f"--{name[:-1]}" for name in self.longOpt if name.endswith("=")}
        short = self.shortOpt
        takes_value |= {
            f"-{letter}"
            for index, letter in enumerate(short)
            if letter != ":" and short[index + 1 : index + 2] == ":"
        }
        ordered: list[str] = []
        for option, value in found:
            ordered += [option, value] if option in takes_value else [option]
        return [*ordered, "--", *rest]

    def opt_help(self) -> None:
        """Display this help and exit."""
        raise ShowText(str(self).rstrip("\n"))

    def opt_version(self) -> None:
        """Display the securemsg version and exit."""
        raise ShowText(f"{PROGRAM} {__version__}")

    def run(self, stdout: TextIO) -> int:
        """
        Do the subcommand's work after its options were parsed.

        @param stdout: Where normal output goes (anything else goes to
            L{stderr}).
        @return: The exit status, normally 0.
        @raise CommandError: For anything that went wrong.
        """
        raise NotImplementedError(f"{type(self).__name__} has no run()")


def one_argument(arguments: Sequence[str], name: str, wanted: str) -> str:
    """
    The one positional argument of a command that takes exactly one, or a
    usage error worded as for C{securemsg ca}'s commands: C{missing HOST
    (expected HOST[:PORT])}, C{unexpected argument 'x' (expected ...)}.

    @param name: what the argument is, for the "missing" message.
    @param wanted: the argument as the synopsis writes it.
    @raise usage.UsageError: for none, or more than one.
    """
    if not arguments:
        raise usage.UsageError(f"missing {name} (expected {wanted})")
    if len(arguments) > 1:
        raise usage.UsageError(
            f"unexpected argument {arguments[1]!r} (expected {wanted})"
        )
    return arguments[0]


def read_passphrase_file(path: str) -> bytes:
    """
    L{securemsg.tls.certs.read_passphrase_file}, which is also how the server
    reads C{--key-passphrase-file}, so one file serves every option.

    @raise CommandError: If the file cannot be used.
    """
    try:
        return certs.read_passphrase_file(path)
    except certs.PassphraseFileError as error:
        raise CommandError(str(error)) from None


def parse_days(option: str, value: str) -> int:
    """
    Parse C{--OPTION DAYS}: a whole number greater than 0 that still gives
    a date X.509 can hold.

    @raise usage.UsageError: otherwise, naming the option.
    """
    try:
        days = int(value)
    except ValueError:
        days = 0
    if days < 1:
        raise usage.UsageError(
            f"--{option} must be a whole number greater than 0, not {value!r}"
        )
    try:
        datetime.now(UTC) + timedelta(days=days)
    except OverflowError:
        raise usage.UsageError(f"--{option} {value} is too far in the future") from None
    return days
