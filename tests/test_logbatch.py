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
    formatEvent,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securemsg.server.factory import ChatServerFactory
from securemsg.server.logbatch import DELAY, LogBatch

from ._logs import log_lines


class LogBatchTests(SynchronousTestCase):
    """
    L{LogBatch}, the observer of a L{Logger}, holds its events for up to
    L{DELAY}, or until it holds its most, and hands them on in order.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.events: list[LogEvent] = []
        # Any callable taking an event observes (Twisted's own tests do so).
        observer = cast(ILogObserver, self.events.append)
        self.batch = LogBatch(self.clock, observer, most=3)
        self.log = Logger(namespace="test.batch", observer=self.batch)

    def test_held_until_the_delay(self) -> None:
        """
        Once started, an event reaches the observer L{DELAY} after the first
        of its batch, as the event C{Logger.info} makes, with the time it
        was made.
        """
        self.batch.start()
        self.clock.advance(5)
        self.log.info("{who} left", who="alice")
        self.clock.advance(DELAY / 2)
        self.log.info("{who} left", who="bob")
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
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Handed on as made: its time is when it was logged, not handed on.
        made = {"log_time": 1.0, "log_format": "made at 1.0"}
        self.batch(made)
        self.clock.advance(DELAY)
        self.assertIs(self.events[-1], made)
        self.assertEqual(made["log_time"], 1.0)

    def test_handed_over_when_full(self) -> None:
        """
        Its most held, the batch goes at once, and its timer with it; the
        next event starts a new one.
        """
        self.batch.start()
        for who in ("a", "b", "c"):
            self.log.info("{who}", who=who)
        self.assertEqual([e["who"] for e in self.events], ["a", "b", "c"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.log.info("{who}", who="d")
        self.assertEqual(len(self.events), 3)
        self.clock.advance(DELAY)
        self.assertEqual([e["who"] for e in self.events], ["a", "b", "c", "d"])

    def test_not_started_or_stopped_logs_at_once(self) -> None:
        """
        Before L{LogBatch.start} and after L{LogBatch.stop} each event goes
        to the observer as it is made; stopping hands over what is held.
        """
        self.log.info("before")
        self.assertEqual(len(self.events), 1)
        self.batch.start()
        self.log.info("held")
        self.assertEqual(len(self.events), 1)
        self.batch.stop()
        self.assertEqual([formatEvent(e) for e in self.events], ["before", "held"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.log.info("after")
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
        self.logged = log_lines(self)

    def ended(self) -> None:
        """A connection made and lost."""
        protocol = self.factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.connectionLost(Failure(ConnectionDone()))

    def lines(self) -> list[str]:
        """The disconnection lines written so far."""
        return [line for line in self.logged if "disconnected" in line]

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

    def test_two_ports(self) -> None:
        """
        With two ports listening, the lines are held until the last of them
        stops.
        """
        self.factory.doStart()
        self.factory.doStart()
        self.ended()
        self.factory.doStop()
        self.assertEqual(self.lines(), [])
        self.clock.advance(DELAY)
        self.assertEqual(len(self.lines()), 1)
        self.ended()
        self.assertEqual(len(self.lines()), 1)
        self.factory.doStop()
        self.assertEqual(len(self.lines()), 2)
