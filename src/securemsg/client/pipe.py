# -*- test-case-name: tests.test_session -*-
"""
The front end of C{securemsg chat} for scripts: lines in from standard input,
lines out to standard output, used when either is not a terminal.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from securemsg.client.session import ChatSession
from securemsg.protocol import wire


@implementer(IHalfCloseableProtocol)
class _LineInput(LineReceiver):
    """Standard input as lines for the session; standard output for lines."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, front: PipeFrontEnd) -> None:
        self.front = front

    def lineReceived(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if self.front.session is not None:
            self.front.session.send_line(line.decode("utf-8", "replace"))

    def lineLengthExceeded(self, line: bytes) -> None:
        self.front.status(f"input line longer than {self.MAX_LENGTH} bytes not sent")
        self.clearLineBuffer()

    def readConnectionLost(self) -> None:
        if self._buffer:
            self.lineReceived(self._buffer)
            self._buffer = b""
        if self.front.session is not None:
            self.front.session.finish()

    def writeConnectionLost(self) -> None:
        # Nobody reads our output any more (e.g. "| head"): we are done.
        if self.front.session is not None:
            self.front.session.finish()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.front._input_closed()


class PipeFrontEnd:
    """
    For scripts: lines from standard input are sent; each line from the
    server goes to standard output as it arrives; diagnostics go to
    standard error.
    """

    def __init__(self, stderr: TextIO | None = None, stdio: Any = None) -> None:
        """
        @param stdio: a factory C{(protocol) -> transport} for the standard
            streams; by default L{twisted.internet.stdio.StandardIO}.
        """
        self.stderr = stderr or sys.stderr
        self.session: ChatSession | None = None
        self._stdio_factory = stdio
        self._input: _LineInput | None = None
        self._stopped: Deferred[None] | None = None

    def start(self, session: ChatSession) -> None:
        self.session = session
        self._input = _LineInput(self)
        if self._stdio_factory is None:
            from twisted.internet.stdio import StandardIO

            StandardIO(self._input, reactor=session.reactor)
        else:
            self._stdio_factory(self._input)

    def show(self, event: wire.Event) -> None:
        if self._input is not None and self._input.transport is not None:
            self._input.transport.write(event.format().encode("utf-8") + b"\n")

    def status(self, text: str) -> None:
        self.stderr.write(f"securemsg chat: {text}\n")
        self.stderr.flush()

    def sent(self, line: str, name: str | None) -> None:
        pass  # Standard output carries only what the server sent.

    def stop(self) -> Deferred[None]:
        if self._stopped is None:
            self._stopped = Deferred()
            if self._input is not None and self._input.transport is not None:
                # Flushes what is still to be written to standard output.
                self._input.transport.loseConnection()
            else:
                self._stopped.callback(None)
        return self._stopped

    def _input_closed(self) -> None:
        if self._stopped is not None and not self._stopped.called:
            self._stopped.callback(None)


__all__ = [
    "PipeFrontEnd",
]
