# -*- test-case-name: tests.test_logbatch -*-
"""
The line each connection logs as it ends, given to the log observers in
batches.

Twisted's text observer formats and writes each event on its own: the
time, the C{[namespace#level]} prefix, a C{write} and a C{flush}.  Between
two TLS handshakes, whose cryptography leaves the processor's caches cold,
that one line cost 53 to 76 us of a connection's 490; handed over one
after another, 15 to 30 (C{bench/README.md}, issue 15).  So a L{LogBatch}
is the observer of the loggers of those lines: the events Twisted's
L{Logger} makes (their time included) are held while connections end
within L{DELAY} of each other, and handed on together, in order, at most
L{DELAY} later (and so after any other event of those milliseconds).
"""

from __future__ import annotations

from typing import Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer

#: The longest an event is held.
DELAY: Final = 0.1

#: The most events held: this many are handed on at once.
MOST: Final = 64


@implementer(ILogObserver)
class LogBatch:
    """
    A log observer that holds events for up to L{DELAY} and hands them on
    to C{observer} together.

    It holds nothing until L{start} and after L{stop}: a factory starts it
    when a port listens with it, and stops it when the last port closes or
    the server shuts down, so that no event waits for a timer that will not
    run.
    """

    def __init__(
        self,
        clock: IReactorTime,
        observer: ILogObserver = globalLogPublisher,
        delay: float = DELAY,
        most: int = MOST,
    ) -> None:
        self._clock = clock
        self._observer = observer
        self._delay = delay
        self._most = most
        self._held: list[LogEvent] = []
        self._timer: IDelayedCall | None = None
        self._holding = False

    def start(self) -> None:
        """Hold events from now on."""
        self._holding = True

    def stop(self) -> None:
        """Hand on what is held, and hold nothing from now on."""
        self._holding = False
        self.flush()

    def __call__(self, event: LogEvent) -> None:
        if not self._holding:
            self._observer(event)
            return
        self._held.append(event)
        if len(self._held) >= self._most:
            self.flush()
        elif self._timer is None:
            self._timer = self._clock.callLater(self._delay, self.flush)

    def flush(self) -> None:
        """Hand every held event on, in order, now."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        held, self._held = self._held, []
        for event in held:
            self._observer(event)
