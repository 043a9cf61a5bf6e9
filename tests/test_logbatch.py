"""
Tests for L{securemsg.server.logbatch}: the lines of connections that end
about the same time, handed to the log observers together.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    capturedLogs,
    formatEvent,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securemsg.server.factory import ChatServerFactory
from securemsg.server.logbatch import DELAY, LogBatch


class LogBatchTests(SynchronousTestCase):
    """
    L{LogBatch} holds info-level events for up to L{DELAY}, or until it
    holds its most, and hands them to their loggers' observers in order.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.events: list[LogEvent] = []
        # Any callable taking an event observes (Twisted's own tests do so).
        observer = cast(ILogObserver, self.events.append)
        self.log = Logger(namespace="test.batch", observer=observer)
        self.batch = LogBatch(self.clock, most=3)

    def test_held_until_the_delay(self) -> None:
        """
        Once started, an event reaches the observer L{DELAY} after the first
        of its batch, as the event C{Logger.info} makes, with the time it
        was made.
        """
        self.batch.start()
        self.clock.advance(5)
        self.batch.info(self.log, "{who} left", who="alice")
        self.clock.advance(DELAY / 2)
        self.batch.info(self.log, "{who} left", who="bob")
        self.assertEqual(self.events, [])
        self.clock.advance(DELAY / 2)
        self.assertEqual(
            [formatEvent(e) for e in self.events], ["alice left", "bob left"]
        )
        [first, _] = self.events
        self.assertEqual(first["log_level"], LogLevel.info)
        self.assertEqual(first["log_namespace"], "test.batch")
        self.assertIs(first["log_logger"], self.log)
        self.assertEqual(first["who"], "alice")
        self.assertLessEqual(first["log_time"], self.events[1]["log_time"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_handed_over_when_full(self) -> None:
        """
        Its most held, the batch goes at once, and its timer with it; the
        next event starts a new one.
        """
        self.batch.start()
        for who in ("a", "b", "c"):
            self.batch.info(self.log, "{who}", who=who)
        self.assertEqual([e["who"] for e in self.events], ["a", "b", "c"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.batch.info(self.log, "{who}", who="d")
        self.assertEqual(len(self.events), 3)
        self.clock.advance(DELAY)
        self.assertEqual([e["who"] for e in self.events], ["a", "b", "c", "d"])

    def test_not_started_or_stopped_logs_at_once(self) -> None:
        """
        Before L{LogBatch.start} and after L{LogBatch.stop} each event goes
        to the observer as it is made; stopping hands over what is held.
        """
        self.batch.info(self.log, "before")
        self.assertEqual(len(self.events), 1)
        self.batch.start()
        self.batch.info(self.log, "held")
        self.assertEqual(len(self.events), 1)
        self.batch.stop()
        self.assertEqual([formatEvent(e) for e in self.events], ["before", "held"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.batch.info(self.log, "after")
        self.assertEqual(len(self.events), 3)


class FactoryLogBatchTests(SynchronousTestCase):
    """
    A L{ChatServerFactory} holds its connections' last lines while a port
    listens with it, and writes them when the last port closes or the
    server shuts down.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = ChatServerFactory.standalone(self.clock, greeting="")
        captured = capturedLogs()
        self.events = captured.__enter__()
        self.addCleanup(captured.__exit__, None, None, None)

    def ended(self) -> None:
        """A connection made and lost."""
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.connectionLost(Failure(ConnectionDone()))

    def lines(self) -> list[str]:
        return [
            str(formatEvent(e)) for e in self.events if "disconnected" in formatEvent(e)
        ]

    def test_held_while_listening(self) -> None:
        """
        The disconnection line waits for its batch while a port listens,
        and is written when the port stops.
        """
        self.factory.doStart()
        self.ended()
        self.assertEqual(self.lines(), [])
        self.factory.doStop()
        self.assertEqual(len(self.lines()), 1)
        self.ended()
        self.assertEqual(len(self.lines()), 2)

    def test_written_at_shutdown(self) -> None:
        """Shutting down writes the held lines, and holds no more."""
        self.factory.doStart()
        self.ended()
        self.factory.shut_down()
        self.assertEqual(len(self.lines()), 1)
        self.ended()
        self.assertEqual(len(self.lines()), 2)
