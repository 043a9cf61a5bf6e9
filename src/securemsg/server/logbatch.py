# -*- test-case-name: tests.test_logbatch -*-
"""
The line each connection logs as it ends, given to the log observers in
batches.

Twisted's text observer formats and writes each event on its own: the
time, the C{[namespace#level]} prefix, a C{write} and a C{flush}.  Between
two TLS handshakes, whose cryptography leaves the processor's caches cold,
that one line cost 53 to 76 us of a connection's 490; handed over one
after another, 15 to 30 (C{bench/README.md}, issue 15).  So the lines of
connections that end within L{DELAY} of each other are held and handed
over together, each with the time it was made: the observers get the
same events, in order, at most L{DELAY} later (and so after any other
event of those milliseconds).
"""

from __future__ import annotations

from time import time
from typing import Any, Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

#: The longest a line is held.
DELAY: Final = 0.1

#: The most lines held: this many are handed over at once.
MOST: Final = 64


class LogBatch:
    """
    Info-level log events held for up to L{DELAY} and handed to their
    loggers' observers together.

    It holds nothing until L{start} and after L{stop}: a factory starts it
    when a port listens with it, and stops it when the last port closes or
    the server shuts down, so that no line waits for a timer that will not
    run.
    """

    def __init__(
        self, clock: IReactorTime, delay: float = DELAY, most: int = MOST
    ) -> None:
        self._clock = clock
        self._delay = delay
        self._most = most
        self._held: list[dict[str, Any]] = []
        self._timer: IDelayedCall | None = None
        self._holding = False

    def start(self) -> None:
        """Hold lines from now on."""
        self._holding = True

    def stop(self) -> None:
        """Hand over what is held, and hold nothing from now on."""
        self._holding = False
        self.flush()

    def info(self, log: Logger, format: str, **fields: object) -> None:
        """
        What C{log.info(format, **fields)} does, the event made now (its
        time too) and handed to C{log}'s observer with the next batch.
        """
        if not self._holding:
            log.info(format, **fields)
            return
        fields.update(
            log_logger=log,
            log_level=LogLevel.info,
            log_namespace=log.namespace,
            log_source=log.source,
            log_format=format,
            log_time=time(),
        )
        self._held.append(fields)
        if len(self._held) >= self._most:
            self.flush()
        elif self._timer is None:
            self._timer = self._clock.callLater(self._delay, self.flush)

    def flush(self) -> None:
        """Hand every held event to its logger's observer, in order, now."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        held, self._held = self._held, []
        for event in held:
            event["log_logger"].observer(event)
