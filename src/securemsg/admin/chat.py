# -*- test-case-name: tests.test_session -*-
"""
C{securemsg chat HOST[:PORT]}: the chat client for people and scripts.

This is the command line: it builds a L{securemsg.client.session.ChatSession}
with L{securemsg.client.pipe.PipeFrontEnd} when standard input or output is
not a terminal (lines in, lines out, nothing else on standard output), or the
terminal front end in L{securemsg.client.terminal}, and runs it.
"""

from __future__ import annotations

import sys
from contextlib import suppress
from typing import Any, ClassVar, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.python import usage

from securemsg.admin.command import CommandError, CommandOptions, one_argument
from securemsg.client.api import (
    split_address,
)
from securemsg.client.pipe import PipeFrontEnd
from securemsg.client.session import EXIT_OK, EXIT_USAGE, ChatSession, FrontEnd
from securemsg.client.trust import ServerVerifier, TrustError, load_client_certificate
from securemsg.protocol import wire
from securemsg.tls import policy as tls


class ChatOptions(CommandOptions):
    """
    C{securemsg chat HOST[:PORT]}: chat with a securemsg server.
    """

    synopsis = "HOST[:PORT] [options]"
    longdesc = (
        "Chat with a securemsg server (port 50000 unless given). The server's "
        "certificate is always verified: against --ca FILE (a CA, or the "
        "server's own certificate.pem), else the system's trust store; or "
        "with --pin, by its SHA-256 fingerprint (an expired certificate is "
        "refused even when pinned, unless --allow-expired). On a terminal "
        "you get a line editor; with a pipe, lines from standard input are "
        "sent and the server's lines are printed to standard output. Exit "
        "status: 0 done, 1 error, 2 usage, 3 server unreachable, 4 server not "
        "verified, 5 server closed the connection."
    )
    optFlags: ClassVar[list[list[str | None]]] = [
        [
            "allow-expired",
            None,
            "With --pin, accept the pinned certificate after it has expired"
            " (with a warning).",
        ],
        [
            "reconnect",
            None,
            "Keep reconnecting (with backoff) after a lost connection; a server"
            " that fails verification still ends the session (status 4).",
        ],
    ]
    optParameters: ClassVar[list[list[str | None]]] = [
        [
            "ca",
            None,
            None,
            "Trust servers whose certificate this PEM file vouches for.",
        ],
        ["pin", None, None, "Trust only the server certificate with this sha256:HEX."],
        ["name", "n", None, "Ask for this name on joining."],
        ["cert", None, None, "Client certificate (PEM) for servers that ask for one."],
        ["key", None, None, "Key of --cert (default: as for the server)."],
        [
            "key-passphrase-file",
            None,
            None,
            "File whose first line is --key's passphrase.",
        ],
    ]

    host: str
    port: int

    def parseArgs(self, *arguments: str) -> None:
        """Take C{HOST[:PORT]}, or say what is wrong."""
        address = one_argument(arguments, "HOST", "HOST[:PORT]")
        try:
            self.host, self.port = split_address(address)
        except ValueError as error:
            raise usage.UsageError(str(error)) from None

    def postOptions(self) -> None:
        if self["ca"] is not None and self["pin"] is not None:
            raise usage.UsageError("give --ca or --pin, not both")
        if self["name"] is not None:
            problem = wire.name_problem(self["name"])
            if problem is not None:
                raise usage.UsageError(f"--name: {problem}")
        if self["key"] is not None and self["cert"] is None:
            raise usage.UsageError("--key needs --cert")
        if self["allow-expired"] and self["pin"] is None:
            raise usage.UsageError("--allow-expired needs --pin")

    def run(self, stdout: TextIO) -> int:
        interactive = sys.stdin.isatty() and stdout.isatty()
        if interactive:
            from securemsg.client import terminal

            terminal.install_reactor()
        from twisted.internet import reactor

        client_certificate = None
        if self["cert"] is not None:
            try:
                client_certificate = load_client_certificate(
                    self["cert"],
                    self["key"],
                    tls.PassphraseSource.from_process(self["key-passphrase-file"]),
                )
            except TrustError as error:
                raise CommandError(str(error)) from None
        front: FrontEnd = (
            terminal.TerminalFrontEnd(self.host) if interactive else PipeFrontEnd()
        )
        try:
            # Check --ca and --pin now, to fail before anything starts.
            ServerVerifier(
                self.host,
                ca_path=self["ca"],
                pin=self["pin"],
                allow_expired=bool(self["allow-expired"]),
            )
            session = ChatSession(
                reactor,
                front,
                self.host,
                self.port,
                ca=self["ca"],
                pin=self["pin"],
                client_certificate=client_certificate,
                name=self["name"],
                reconnect=bool(self["reconnect"]),
                learn_name=interactive,
                allow_expired=bool(self["allow-expired"]),
            )
        except TrustError as error:
            raise CommandError(str(error), EXIT_USAGE) from None
        return run_session(reactor, session)


def run_session(reactor: Any, session: ChatSession) -> int:
    """
    Run the reactor until C{session} is over, and return its exit status.
    Ctrl-C (SIGINT) and SIGTERM finish the session cleanly first.
    """
    status: list[int] = []

    def over(code: int) -> None:
        status.append(code)
        with suppress(ReactorNotRunning):
            reactor.stop()

    def finish_before_shutdown() -> Deferred[int] | None:
        if session.done.called:
            return None
        session.interrupt()
        return session.done

    reactor.addSystemEventTrigger("before", "shutdown", finish_before_shutdown)
    reactor.callWhenRunning(lambda: session.start().addCallback(over))
    reactor.run()
    return status[0] if status else EXIT_OK


__all__ = [
    "ChatOptions",
    "run_session",
]
