"""
Tests for the server's protections against abusive clients, each on a fake
clock: handshake and idle timeouts, flood control, the bounded send queue,
connection limits, and graceful shutdown.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any
from unittest.mock import patch

from OpenSSL import SSL
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, LogLevel, capturedLogs
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securemsg.core.hub import ChatHub
from securemsg.core.limits import Limits, client_key, covering_key
from securemsg.core.records import BanRecord, ServerRecords
from securemsg.protocol import wire
from securemsg.server import logbatch, tlsserver
from securemsg.server.factory import ChatServerFactory
from securemsg.server.guard import (
    REFUSAL_LOG_INTERVAL,
    GuardedTLSFactory,
    TLSOnlyProtocol,
    how_to_connect,
    looks_like_tls,
)
from securemsg.server.outbox import WRITE_CHUNK
from securemsg.server.protocol import ChatServerProtocol
from securemsg.server.tlsserver import TLSServerProtocol
from securemsg.tls import policy as tls

from ._fakes import PausingTransport, Recorder
from ._tls import server_context, tls_pair


class Client:
    """One plain (non-TLS) connection to the factory over a StringTransport."""

    def __init__(
        self,
        factory: ChatServerFactory,
        port: int,
        transport: StringTransport | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.factory = factory
        kind = IPv6Address if ":" in host else IPv4Address
        self.transport = transport or StringTransport()
        self.transport.peerAddr = kind("TCP", host, port)
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)

    def send(self, *lines: bytes) -> None:
        self.protocol.dataReceived(b"".join(line + b"\n" for line in lines))

    def lines(self) -> list[str]:
        """What the server wrote (at the end of the turn), as lines."""
        self.factory.outbox.flush()
        self.factory.outbox.flush_announcements()
        data: bytes = self.transport.value()
        self.transport.clear()
        return data.decode("utf-8").splitlines()

    def lost(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def log_text(events: Sequence[LogEvent]) -> list[str]:
    """The formatted messages of captured log events."""
    return [
        str(event["log_format"]).format(**event)
        for event in events
        if event["log_level"] >= LogLevel.info
    ]


class ProtectionTests(SynchronousTestCase):
    """
    One connection at a time misbehaves; the others are not affected.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.limits = Limits(
            idle_timeout=60,
            flood_burst=3,
            flood_rate=1,
            flood_disconnect=5,
            send_queue=200,
            shutdown_grace=5,
        )
        self.factory = ChatServerFactory.standalone(
            self.clock, greeting="", limits=self.limits
        )
        self.clients: list[Client] = []

    def connect(self) -> Client:
        client = Client(self.factory, 40000 + len(self.clients))
        self.clients.append(client)
        return client

    def test_idle_timeout(self) -> None:
        """
        A client that sends no line for the idle timeout is told why and
        disconnected; any line, /ping included, restarts the wait.
        """
        idle, other = self.connect(), self.connect()
        idle.lines()
        self.clock.advance(59)
        idle.send(b"/ping")
        other.send(b"/ping")
        self.assertEqual(idle.lines(), ["*** pong"])
        self.assertEqual(other.lines(), ["*** pong"])
        self.clock.advance(59)
        other.send(b"others' lines do not count")
        self.assertFalse(idle.transport.disconnecting)
        self.assertEqual(idle.lines(), ["[guest-2] others' lines do not count"])
        with capturedLogs() as events:
            self.clock.advance(1)
        self.assertEqual(
            idle.lines(),
            [
                "!!! disconnected after 60 s without a line"
                " (send /ping to stay connected)"
            ],
        )
        self.assertTrue(idle.transport.disconnecting)
        self.assertFalse(other.transport.disconnecting)
        self.assertIn(
            "127.0.0.1:40000 (guest-1) disconnected: idle for 60 s", log_text(events)
        )
        idle.lost()
        self.assertEqual(other.lines(), ["*** guest-1 left (idle)"])

    def test_idle_timeout_off(self) -> None:
        """An idle timeout of 0 never disconnects."""
        self.factory.limits = Limits(idle_timeout=0)
        client = self.connect()
        self.clock.advance(10**6)
        self.assertFalse(client.transport.disconnecting)

    def test_flood(self) -> None:
        """
        Lines over the rate get one error and are dropped; a client that
        keeps flooding is disconnected; others get only the allowed lines.
        """
        flooder, other = self.connect(), self.connect()
        flooder.lines()
        flooder.send(b"1", b"2", b"3", b"4", b"5")
        self.assertEqual(other.lines(), ["[guest-1] 1", "[guest-1] 2", "[guest-1] 3"])
        self.assertEqual(
            flooder.lines(),
            [
                "!!! too many lines: at most 1 a second (bursts of 3);"
                " lines are being dropped"
            ],
        )
        self.clock.advance(1)
        flooder.send(b"6")
        self.assertEqual(other.lines(), ["[guest-1] 6"])
        with capturedLogs() as events:
            flooder.send(b"x", b"x", b"x", b"x", b"x")
        self.assertEqual(
            flooder.lines(),
            [
                "!!! too many lines: at most 1 a second (bursts of 3);"
                " lines are being dropped",
                "!!! disconnected for flooding",
            ],
        )
        self.assertTrue(flooder.transport.disconnecting)
        self.assertEqual(other.lines(), [])
        self.assertTrue(any("flooding" in line for line in log_text(events)))

    def test_send_queue(self) -> None:
        """
        While the transport is full (it paused us), lines wait in order and
        go out when it resumes.
        """
        reader, sender = self.connect(), self.connect()
        reader.lines()
        self.assertIs(reader.transport.producer, reader.protocol)
        reader.protocol.pauseProducing()
        sender.send(b"one", b"two")
        self.assertEqual(reader.lines(), [])
        reader.protocol.resumeProducing()
        self.assertEqual(reader.lines(), ["[guest-2] one", "[guest-2] two"])

    def test_send_queue_exceeded(self) -> None:
        """
        A client that does not read is disconnected once more than the
        send queue is waiting for it; the sender is not held up.
        """
        stuck, sender = self.connect(), self.connect()
        stuck.lines()
        stuck.protocol.pauseProducing()
        with capturedLogs() as events:
            for number in range(3):
                sender.send(b"line %d, long enough to need some queue space" % number)
                self.assertFalse(stuck.transport.disconnected)
            # Counted as they are queued, before the turn ends.
            self.clock.pump([1])  # Within the sender's flood limit.
            sender.send(b"line 3, long enough to need some queue space")
        self.assertTrue(stuck.transport.disconnected)  # aborted
        self.assertIn(
            "127.0.0.1:40000 (guest-1) disconnected: send queue over 200 bytes"
            " (the client does not read)",
            log_text(events),
        )
        self.assertFalse(sender.transport.disconnecting)
        stuck.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(sender.lines(), ["*** guest-1 left (not reading)"])

    def test_send_queue_count_restarts_when_the_client_reads(self) -> None:
        """
        Pause, resume, pause...: a client that reads slowly but keeps up is
        never dropped.  What went out when the transport resumed no longer
        counts, nor what the transports held when they paused.
        """
        # The transports hold 100 bytes whenever they pause us: 100 of the
        # 200 left for our queue while paused.
        self.patch(tlsserver, "held_bytes", lambda transport: 100)
        reader, sender = self.connect(), self.connect()
        reader.lines()
        line = b"x" * 60  # 71 bytes as [guest-2] ...
        for _ in range(5):
            reader.protocol.pauseProducing()
            sender.send(line)
            self.assertEqual(reader.lines(), [])
            reader.protocol.resumeProducing()
            self.assertEqual(reader.lines(), ["[guest-2] " + "x" * 60])
            # While it reads, two lines in one turn (142 bytes) fit.
            sender.send(line, line)
            self.assertEqual(len(reader.lines()), 2)
            self.clock.advance(3)  # Within the sender's flood limit.
        self.assertFalse(reader.transport.disconnecting)
        self.assertEqual(reader.protocol.held_bytes(), 0)

    def test_send_queue_counted_when_queued(self) -> None:
        """
        What a client is given counts against the send queue as it is
        queued, not at the end of the turn: a client whose transport is
        full, and that asks for more than the send queue in one read, is
        dropped within that read, and nothing more is made for it.
        """
        asker, other = self.connect(), self.connect()
        asker.lines()
        asker.protocol.pauseProducing()
        with capturedLogs() as events:
            asker.send(b"/help", b"/help")  # Some 1.4 kB of reply each.
        self.assertTrue(asker.transport.disconnected)
        self.assertEqual(asker.protocol.held_bytes(), 0)
        self.assertEqual(
            [line for line in log_text(events) if "send queue" in line],
            [
                "127.0.0.1:40000 (guest-1) disconnected: send queue over 200 bytes"
                " (the client does not read)"
            ],
        )
        self.factory.outbox.flush()
        self.assertEqual(asker.transport.value(), b"")
        asker.lost()
        self.assertEqual(other.lines(), ["*** guest-1 left (not reading)"])

    def test_large_turn_for_a_reader(self) -> None:
        """
        A client whose transport takes what it is given is not held to what
        one turn makes for it: past the early-write mark the output goes to
        the transport at once, and the client stays.
        """
        reader = Client(self.factory, 40000, PausingTransport(100_000))
        reader.lines()
        reader.send(b"/help")  # Some 1.4 kB, past the 200-byte send queue.
        self.assertFalse(reader.transport.disconnecting)
        lines = reader.lines()
        self.assertEqual(lines[0], "*** commands:")
        self.assertEqual(len(lines), len(wire.help_lines()))

    def test_close_aborts_after_grace(self) -> None:
        """A client that does not let a close finish is aborted after the grace."""
        client = self.connect()
        client.send(b"/quit")
        self.assertTrue(client.transport.disconnecting)
        self.assertFalse(client.transport.disconnected)
        self.clock.advance(5)
        self.assertTrue(client.transport.disconnected)

    def test_shutdown(self) -> None:
        """
        At shutdown every client is told, closed cleanly, and nobody hears
        of the others leaving; the Deferred fires when all are gone.
        """
        alice, bob = self.connect(), self.connect()
        alice.lines()
        stopped = self.factory.shut_down()
        self.assertNoResult(stopped)
        for client in (alice, bob):
            self.assertEqual(client.lines(), ["*** the server is shutting down"])
            self.assertTrue(client.transport.disconnecting)
            self.assertIsNone(client.transport.producer)
        alice.lost()
        bob.lost()
        self.assertEqual(alice.lines() + bob.lines(), [])
        self.successResultOf(stopped)
        self.assertEqual(self.factory.open_connections, set())

    def test_shutdown_flushes_queue_and_aborts_stragglers(self) -> None:
        """
        What was queued for a paused client is sent before the notice, and a
        client still open after the grace is aborted.
        """
        slow, other = self.connect(), self.connect()
        slow.lines()
        slow.protocol.pauseProducing()
        other.send(b"queued")
        stopped = self.factory.shut_down()
        self.assertEqual(
            slow.lines(), ["[guest-2] queued", "*** the server is shutting down"]
        )
        other.lost()
        self.clock.advance(5)
        self.assertTrue(slow.transport.disconnected)
        slow.lost()
        self.successResultOf(stopped)

    def test_no_join_during_shutdown(self) -> None:
        """A connection that arrives while the server stops does not join."""
        self.factory.shut_down()
        late = self.connect()
        self.assertEqual(len(self.factory.chat), 0)
        self.assertEqual(late.lines(), [])


class SendPathTests(SynchronousTestCase):
    """
    How a connection's output reaches a transport that pauses when its
    buffer fills, as Twisted's TCP transport does.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = ChatServerFactory.standalone(
            self.clock, greeting="", limits=Limits(send_queue=100_000)
        )

    def connect(self, port: int, buffer_size: int) -> Client:
        return Client(self.factory, port, PausingTransport(buffer_size))

    def test_large_output_in_pieces(self) -> None:
        """
        A turn's large output goes to the transport a piece at a time until
        the transport pauses; the rest waits, counted, in our queue, and
        goes out in order as the client reads.
        """
        client = self.connect(40000, buffer_size=1000)
        transport = client.transport
        assert isinstance(transport, PausingTransport)
        transport.drain()
        text = "x" * 1000
        for number in range(40):
            self.factory.chat.history.record(
                wire.Message("bob", f"{number} {text}", "#lobby", 0.0)
            )
        client.send(b"/history 40")
        self.factory.outbox.flush()
        self.assertTrue(transport.paused)
        self.assertLessEqual(transport.most_held, 1000 + WRITE_CHUNK)
        self.assertGreater(client.protocol.held_bytes(), 20_000)
        received = b""
        while transport.paused:
            received += transport.drain()
        received += transport.drain()
        self.assertEqual(client.protocol.held_bytes(), 0)
        lines = received.decode("utf-8").splitlines()
        self.assertEqual(len(lines), 42)
        self.assertEqual(
            [line.split("] ")[1].split()[0] for line in lines[1:-1]],
            [str(number) for number in range(40)],
        )
        self.assertLessEqual(transport.most_held, 1000 + WRITE_CHUNK)


class FloodWeightTests(SynchronousTestCase):
    """
    Flood control weighs a command by what it costs the server, not only
    by lines.
    """

    def test_history_costs_more_than_a_line(self) -> None:
        """
        With the default burst of 20, one read of five /history commands
        gets four answers and a flood error: each costs 5 tokens.
        """
        clock = MemoryReactorClock()
        factory = ChatServerFactory.standalone(clock, greeting="")
        client = Client(factory, 40000)
        client.lines()
        client.send(*[b"/history"] * 5)
        lines = client.lines()
        self.assertEqual(lines.count("*** no history for #lobby"), 4)
        self.assertEqual(
            lines[-1],
            "!!! too many lines: at most 5 a second (bursts of 20);"
            " lines are being dropped",
        )
        clock.advance(1)
        client.send(b"/history")
        self.assertEqual(client.lines(), ["*** no history for #lobby"])
        clock.advance(1)
        # Five tokens again: five plain lines (no error), where only one
        # /history would pass.
        client.send(b"plain", b"lines", b"cost", b"one", b"each")
        self.assertEqual(client.lines(), [])


class HandshakeTimeoutTests(SynchronousTestCase):
    """
    A TLS connection must finish its handshake within the timeout.
    """

    def test_stalled_handshake_aborted(self) -> None:
        """Nothing after connecting: aborted after the handshake timeout."""
        clock = MemoryReactorClock()
        chat = ChatServerFactory.standalone(clock, limits=Limits(handshake_timeout=10))
        factory = TLSMemoryBIOFactory(
            tls.ServerTLS(server_context()), False, chat, clock
        )
        transport = StringTransport()
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        protocol.makeConnection(transport)
        with capturedLogs() as events:
            clock.advance(9.9)
            self.assertFalse(transport.disconnected)
            clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.assertTrue(
            any("TLS handshake not done after 10" in line for line in log_text(events))
        )

    def test_completed_handshake_not_aborted(self) -> None:
        """
        A finished handshake ends the handshake timeout: from then on only
        the idle timeout counts, if there is one.
        """
        for idle in (60, 0):
            clock = MemoryReactorClock()
            chat = ChatServerFactory.standalone(
                clock, limits=Limits(handshake_timeout=10, idle_timeout=idle)
            )
            client, server_tls, _, _ = tls_pair(server_context(), chat=chat)
            self.assertTrue(client.handshake_done)
            clock.advance(59)
            self.assertFalse(server_tls.disconnecting, idle)
            self.assertEqual(len(chat.chat), 1)
            clock.advance(1)
            self.assertEqual(server_tls.disconnecting, bool(idle), idle)

    def test_one_timer_a_connection(self) -> None:
        """
        The handshake's timer goes on as the idle timer once the handshake
        is done: a connection makes one timer, not two (making and
        cancelling one is a few microseconds of every handshake).
        """
        clock = MemoryReactorClock()
        timers: list[IDelayedCall] = []
        call_later = clock.callLater

        def counting(delay: float, f: Any, *args: Any, **kwargs: Any) -> IDelayedCall:
            call = call_later(delay, f, *args, **kwargs)
            if getattr(f, "__name__", "").endswith("__timedOut"):
                timers.append(call)
            return call

        clock.callLater = counting  # type: ignore[method-assign, assignment]
        chat = ChatServerFactory.standalone(
            clock, limits=Limits(handshake_timeout=10, idle_timeout=60)
        )
        client, server_tls, _, _ = tls_pair(server_context(), chat=chat)
        self.assertTrue(client.handshake_done)
        self.assertEqual(len(timers), 1)
        [timer] = timers
        self.assertTrue(timer.active())
        self.assertEqual(timer.getTime(), clock.seconds() + 60)
        clock.advance(59)
        self.assertFalse(server_tls.disconnecting)
        clock.advance(1)
        self.assertTrue(server_tls.disconnecting)


class ConnectionLimitTests(SynchronousTestCase):
    """
    L{GuardedTLSFactory} holds at most so many connections, in total and
    per address, and refuses more before any TLS work.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = GuardedTLSFactory(
            tls.ServerTLS(server_context()),
            ChatServerFactory.standalone(self.clock),
            self.clock,
            Limits(max_connections=4, max_per_address=2),
        )
        self.factory.doStart()

    def connect(self, host: str) -> TLSServerProtocol | None:
        address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, 1)
        protocol = self.factory.buildProtocol(address)
        if protocol is not None:
            protocol.makeConnection(StringTransport())
        return protocol

    def test_per_address(self) -> None:
        """A third connection from one address is refused; others are not."""
        first = self.connect("10.0.0.1")
        self.assertIsNotNone(first)
        self.assertIsNotNone(self.connect("10.0.0.1"))
        self.assertIsNone(self.connect("10.0.0.1"))
        self.assertIsNotNone(self.connect("::1"))
        first.connectionLost(Failure(ConnectionDone()))  # type: ignore[union-attr]
        self.assertIsNotNone(self.connect("10.0.0.1"))

    def test_ipv6_64_is_one_client(self) -> None:
        """
        IPv6 addresses in one /64 are one client for the limit (a host
        given a /64 has all its addresses); the next /64 is another client.
        IPv4 addresses are each a client, however close.
        """
        self.assertIsNotNone(self.connect("2001:db8:1:2::1"))
        self.assertIsNotNone(self.connect("2001:db8:1:2:a:b:c:d"))
        with capturedLogs() as events:
            self.assertIsNone(self.connect("2001:db8:1:2::3"))
        self.assertIn(
            "refusing connections from 2001:db8:1:2::/64: at the limit of 2"
            " connections from 2001:db8:1:2::/64",
            log_text(events),
        )
        self.assertIsNotNone(self.connect("2001:db8:1:3::1"))
        self.assertEqual(
            dict(self.factory.per_address),
            {"2001:db8:1:2::/64": 2, "2001:db8:1:3::/64": 1},
        )

    def test_ipv4_addresses_apart(self) -> None:
        """
        Each IPv4 address is one client (also as a dual-stack socket shows
        it, mapped into IPv6).
        """
        for host in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
            self.assertIsNotNone(self.connect(host))
        self.assertIsNotNone(self.connect("::ffff:192.0.2.1"))
        self.assertIsNone(self.connect("::ffff:192.0.2.1"))
        self.assertEqual(self.factory.per_address["192.0.2.1"], 2)

    def test_other_prefix_lengths(self) -> None:
        """
        With other prefix lengths, the networks they say are one client:
        an IPv6 /128 (each address), an IPv4 /24.
        """
        factory = GuardedTLSFactory(
            tls.ServerTLS(server_context()),
            ChatServerFactory.standalone(self.clock),
            self.clock,
            Limits(
                max_connections=10, max_per_address=1, ipv6_prefix=128, ipv4_prefix=24
            ),
        )
        self.factory = factory
        self.assertIsNotNone(self.connect("2001:db8::1"))
        self.assertIsNotNone(self.connect("2001:db8::2"))
        self.assertIsNotNone(self.connect("192.0.2.1"))
        self.assertIsNone(self.connect("192.0.2.200"))
        self.assertIsNotNone(self.connect("192.0.3.1"))

    def test_total(self) -> None:
        """Past the total, everyone is refused until someone leaves."""
        held = [self.connect(f"10.0.0.{n}") for n in range(4)]
        self.assertIsNone(self.connect("10.0.0.9"))
        held[0].connectionLost(Failure(ConnectionDone()))  # type: ignore[union-attr]
        self.assertIsNotNone(self.connect("10.0.0.9"))

    def test_connect_rate(self) -> None:
        """
        One address may open C{connect_burst} connections at once, then
        C{connect_rate} a second, even if each closes at once (churn); the
        ones over are refused before any TLS work and logged; other
        addresses are not held up.
        """
        factory = GuardedTLSFactory(
            tls.ServerTLS(server_context()),
            ChatServerFactory.standalone(self.clock),
            self.clock,
            Limits(
                max_connections=100,
                max_per_address=100,
                connect_burst=3,
                connect_rate=2,
            ),
        )
        factory.doStart()
        self.factory = factory

        def churn(host: str) -> bool:
            protocol = self.connect(host)
            if protocol is None:
                return False
            protocol.connectionLost(Failure(ConnectionDone()))
            return True

        with capturedLogs() as events:
            self.assertEqual(
                [churn("10.0.0.1") for _ in range(5)], [True] * 3 + [False] * 2
            )
        self.assertIn(
            "refusing connections from 10.0.0.1: at the limit of 2 new"
            " connections a second from 10.0.0.1 (bursts of 3)",
            log_text(events),
        )
        self.assertTrue(churn("10.0.0.2"))
        self.clock.advance(0.5)
        self.assertEqual([churn("10.0.0.1") for _ in range(2)], [True, False])
        factory.doStop()

    def test_connect_buckets_forgotten(self) -> None:
        """
        The buckets of addresses that have not connected lately (full
        again) are forgotten once the table grows, so it stays bounded.
        """
        for number in range(1024):
            self.clock.advance(0.001)
            self.factory._connect_allowed(f"10.0.{number // 256}.{number % 256}")
        self.assertEqual(len(self.factory._connects), 1024)
        self.clock.advance(60)
        self.factory._connect_allowed("10.9.9.9")
        self.assertEqual(list(self.factory._connects), ["10.9.9.9"])

    def test_refusals_logged_once_per_burst(self) -> None:
        """
        The first refusal of a burst is logged at once; the rest are summed
        up in one line per interval.
        """
        for _ in range(2):
            self.connect("10.0.0.1")
        with capturedLogs() as events:
            for _ in range(50):
                self.connect("10.0.0.1")
            self.clock.advance(REFUSAL_LOG_INTERVAL)
            self.clock.advance(REFUSAL_LOG_INTERVAL)
        self.assertEqual(
            [line for line in log_text(events) if line.startswith("refus")],
            [
                "refusing connections from 10.0.0.1: at the limit of 2 connections"
                " from 10.0.0.1",
                "refused 49 more connections in the last 10 s (at the connection"
                " limits)",
            ],
        )
        self.assertEqual(self.factory._report, None)


class BanTests(SynchronousTestCase):
    """
    Bans are checked when a client joins: certificate holders by their
    certificate, guests by their address.
    """

    def setUp(self) -> None:
        self.factory = ChatServerFactory.standalone(MemoryReactorClock(), greeting="")
        self.factory.chat.state.addresses["127.0.0.1"] = BanRecord("guest-9", "op", 0.0)
        self.factory.chat.state.fingerprints["sha256:bad"] = BanRecord(
            "mallory", "op", 0.0
        )

    def join(self, certificate: tuple[str | None, str | None]) -> Client:
        """Connect with the client certificate C{(identity, fingerprint)}."""
        self.patch(ChatServerProtocol, "_client_certificate", lambda self: certificate)
        return Client(self.factory, 4000)

    def test_guest_banned_by_address(self) -> None:
        """A guest from a banned address is told and closed."""
        client = self.join((None, None))
        self.assertEqual(client.lines(), ["!!! you are banned from this server"])
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(len(self.factory.chat), 0)

    def test_holder_not_banned_by_address(self) -> None:
        """A certificate holder from that address is not a banned guest."""
        client = self.join(("alice", "sha256:good"))
        self.assertFalse(client.transport.disconnecting)
        self.assertEqual(self.factory.chat.names(), ["alice"])

    def test_holder_banned_by_certificate(self) -> None:
        """A banned certificate stays out from any address."""
        client = self.join(("mallory", "sha256:bad"))
        self.assertEqual(client.lines(), ["!!! you are banned from this server"])
        self.assertEqual(len(self.factory.chat), 0)


class GuestBanTests(SynchronousTestCase):
    """
    An operator's ban of a guest covers the client it connected as, the
    same one L{GuardedTLSFactory} counts for C{--max-per-ip}: its IPv6 /64
    (or what C{--ipv6-prefix} says), or its one IPv4 address.
    """

    def setUp(self) -> None:
        self.make_server(Limits())

    def make_server(self, limits: Limits) -> None:
        clock = MemoryReactorClock()
        self.state = ServerRecords()
        self.chat = ChatHub(
            clock,
            state=self.state,
            operators=["alice"],
            certificates=True,
            limits=limits,
        )
        self.factory = ChatServerFactory(clock, self.chat, greeting="")
        self.alice = Recorder()
        self.chat.join(self.alice, identity="alice", fingerprint="sha256:a1")

    def operator(self, line: str) -> list[str]:
        """alice types C{line}; what she is told."""
        self.alice.take()
        command = wire.parse_command(line)
        assert command is not None
        self.chat.handle(self.alice, command)
        return self.alice.take()

    def ban_guest_from(self, host: str) -> str:
        """A guest connects from C{host} and alice bans it; what she is told."""
        guest = Client(self.factory, 4000, host=host)
        told = self.operator(f"/ban {guest.protocol.name}")
        self.assertTrue(guest.transport.disconnecting)
        return told[0]

    def assertBanned(self, host: str, banned: bool = True) -> None:
        client = Client(self.factory, 4001, host=host)
        lines = client.lines()
        if banned:
            self.assertEqual(lines, ["!!! you are banned from this server"], host)
            self.assertNotIn(client.protocol, self.chat)
        else:
            self.assertNotIn("!!! you are banned from this server", lines, host)
            self.assertIn(client.protocol, self.chat)
            client.lost()

    def test_ipv6_guest_banned_by_64(self) -> None:
        """
        A guest banned from one IPv6 address cannot come back from another
        address in its /64; the next /64 is someone else.
        """
        told = self.ban_guest_from("2001:db8:1:2::5")
        self.assertEqual(told, "*** banned guest-1 (network 2001:db8:1:2::/64)")
        self.assertEqual(list(self.state.addresses), ["2001:db8:1:2::/64"])
        for host in ("2001:db8:1:2::5", "2001:db8:1:2::6", "2001:db8:1:2:ff::1"):
            self.assertBanned(host)
        for host in ("2001:db8:1:3::5", "2001:db8:1::5", "192.0.2.5"):
            self.assertBanned(host, banned=False)

    def test_ipv4_guest_banned_by_address(self) -> None:
        """
        A guest banned from an IPv4 address is banned from that address
        only (also when a dual-stack socket shows it mapped into IPv6).
        """
        told = self.ban_guest_from("192.0.2.3")
        self.assertEqual(told, "*** banned guest-1 (address 192.0.2.3)")
        self.assertBanned("192.0.2.3")
        self.assertBanned("::ffff:192.0.2.3")
        self.assertBanned("192.0.2.4", banned=False)

    def test_other_prefix_lengths(self) -> None:
        """The bans follow --ipv6-prefix and --ipv4-prefix."""
        self.make_server(Limits(ipv6_prefix=48, ipv4_prefix=24))
        told = self.ban_guest_from("2001:db8:1:2::5")
        self.assertEqual(told, "*** banned guest-1 (network 2001:db8:1::/48)")
        self.assertBanned("2001:db8:1:ffff::1")
        self.assertBanned("2001:db8:2::1", banned=False)
        told = self.ban_guest_from("192.0.2.3")
        self.assertEqual(told, "*** banned guest-3 (network 192.0.2.0/24)")
        self.assertBanned("192.0.2.200")
        self.assertBanned("192.0.3.1", banned=False)

    def test_older_exact_bans_still_hold(self) -> None:
        """
        A ban of one IPv6 address (from a state file written before bans
        covered a /64) keeps that address out, and only it.
        """
        self.state.addresses["2001:db8::5"] = BanRecord("guest-9", "op", 0.0)
        self.assertBanned("2001:db8::5")
        self.assertBanned("2001:db8::6", banned=False)

    def test_unban_by_an_address_in_the_network(self) -> None:
        """/unban of any address in a banned /64 lifts the /64's ban."""
        self.ban_guest_from("2001:db8:1:2::5")
        self.assertEqual(
            self.operator("/unban 2001:db8:1:2::77"),
            ["*** unbanned: 2001:db8:1:2::/64"],
        )
        self.assertBanned("2001:db8:1:2::5", banned=False)


class ClientKeyTests(SynchronousTestCase):
    """
    L{client_key} is the one rule for what one client is, used by the
    connection limit and by bans.
    """

    def test_keys(self) -> None:
        """
        An IPv6 address stands for its /64 (or the given prefix); an IPv4
        address for itself (or its network of the given prefix), also when
        mapped into IPv6; anything else for itself.
        """
        for host, prefixes, key in [
            ("2001:db8:1:2::5", (64, 32), "2001:db8:1:2::/64"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", (64, 32), "2001:db8:1:2::/64"),
            ("2001:db8:1:2::5", (48, 32), "2001:db8:1::/48"),
            ("2001:db8:1:2::5", (128, 32), "2001:db8:1:2::5"),
            ("fe80::1%eth0", (64, 32), "fe80::/64"),
            ("192.0.2.7", (64, 32), "192.0.2.7"),
            ("192.0.2.7", (64, 24), "192.0.2.0/24"),
            ("::ffff:192.0.2.7", (64, 32), "192.0.2.7"),
            ("local", (64, 32), "local"),
        ]:
            self.assertEqual(client_key(host, *prefixes), key, (host, prefixes))
        self.assertEqual(
            Limits(ipv6_prefix=56).client_key("2001:db8::1"), "2001:db8::/56"
        )

    def test_keys_cached(self) -> None:
        """
        An address seen again is not parsed again: every connection asks
        for its key twice (when accepted, and when it joins).
        """
        client_key("198.51.100.77")
        with patch.object(ipaddress, "ip_address") as parse:
            self.assertEqual(client_key("198.51.100.77"), "198.51.100.77")
            self.assertEqual(Limits().client_key("198.51.100.77"), "198.51.100.77")
        parse.assert_not_called()

    def test_covering_key_without_keys(self) -> None:
        """
        With no keys (no bans, as usual) the address is not even parsed:
        every client that joins is looked up.
        """
        with patch.object(ipaddress, "ip_address") as parse:
            self.assertIsNone(covering_key([], "198.51.100.78"))
        parse.assert_not_called()

    def test_covering_key(self) -> None:
        """
        The key an address belongs to: equal, or an address in its network
        of the same IP version.
        """
        keys = ["192.0.2.7", "2001:db8:1:2::/64", "198.51.100.0/24"]
        for host, key in [
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("192.0.2.8", None),
            ("2001:db8:1:2::99", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::99", None),
            ("198.51.100.42", "198.51.100.0/24"),
            ("::1", None),
            ("0.0.0.1", None),
            ("bob", None),
        ]:
            self.assertEqual(covering_key(keys, host), key, host)
        # The bits of an IPv4 address are not an IPv6 network's.
        self.assertIsNone(covering_key(["::/64"], "0.0.0.1"))


class PlainTextClientTests(SynchronousTestCase):
    """
    A client whose first bytes are not TLS is told in one plain line how to
    connect, and closed, without its bytes reaching OpenSSL; the guard's
    limits come first.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = GuardedTLSFactory(
            tls.ServerTLS(server_context()),
            ChatServerFactory.standalone(self.clock),
            self.clock,
            Limits(max_connections=4, max_per_address=1),
        )
        self.factory.doStart()
        self.openssl_input: list[bytes] = []

    def connect(self, port: int = 1) -> tuple[TLSOnlyProtocol, StringTransport]:
        """A connection from 127.0.0.1:C{port} to the server's port 50000."""
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        assert isinstance(protocol, TLSOnlyProtocol)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 50000),
            peerAddress=IPv4Address("TCP", "127.0.0.1", port),
        )
        protocol.makeConnection(transport)
        # What reaches OpenSSL: the TLS layer's writes into its memory BIO.
        bio_write = tlsserver._bio_write

        def recording(bio: object, data: bytes, size: int) -> int:
            self.openssl_input.append(data)
            return int(bio_write(bio, data, size))

        self.patch(tlsserver, "_bio_write", recording)
        return protocol, transport

    def test_plain_text_told_how_to_connect(self) -> None:
        """
        Plain text (C{nc}, C{telnet}) gets one line naming the port and the
        commands to connect with, then a close; nothing it sent reaches
        OpenSSL, and no TLS byte is sent.  The server logs the end once,
        with the reason, and the connection no longer counts.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"hello\n")
        protocol.dataReceived(b"anyone there?\n")
        self.assertEqual(
            transport.value(),
            b"securemsg: this is a TLS chat server and this connection is not"
            b" TLS; connect with TLS, e.g.: securemsg chat HOST:50000 or"
            b" openssl s_client -connect HOST:50000\r\n",
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.openssl_input, [])
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionDone()))
            # The line goes out with the batch of lines of its moment.
            self.clock.advance(logbatch.DELAY)
        self.assertEqual(
            [line for line in log_text(events) if "disconnected" in line],
            [
                "127.0.0.1:1 (not joined) disconnected:"
                " NotTLSError: not TLS; told how to connect"
            ],
        )
        self.assertEqual(self.factory.per_address, {})
        self.assertEqual(self.openssl_input, [])

    def test_http_request_gets_an_http_answer(self) -> None:
        """
        An HTTP request (a browser, C{curl}) gets the same line as the body
        of an HTTP error, which browsers show, and a close; no TLS byte.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"GET / HTTP/1.1\r\n")
        line = how_to_connect(50000).encode() + b"\r\n"
        self.assertEqual(
            transport.value(),
            b"HTTP/1.0 400 Bad Request\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (len(line), line),
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.openssl_input, [])

    def test_tls_goes_on_to_openssl(self) -> None:
        """
        A real ClientHello, even when its first read is a single byte, goes
        to OpenSSL, and the handshake completes.
        """
        protocol, transport = self.connect()
        client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        client.set_connect_state()
        with self.assertRaises(SSL.WantReadError):
            client.do_handshake()
        hello = client.bio_read(65536)
        protocol.dataReceived(hello[:1])
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(hello[1:])
        client.bio_write(transport.value())
        transport.clear()
        client.do_handshake()
        protocol.dataReceived(client.bio_read(65536))
        self.assertTrue(protocol._handshake_done)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.openssl_input[:2], [hello[:1], hello[1:]])

    def test_only_tls_records_pass(self) -> None:
        """
        The first two bytes are checked: a handshake record type of another
        major version is not TLS either; any other record start is left to
        OpenSSL to refuse.
        """
        self.assertTrue(looks_like_tls(b"\x16"))
        self.assertTrue(looks_like_tls(b"\x16\x03\x01\x00\x05"))
        self.assertFalse(looks_like_tls(b"\x16\x48"))
        self.assertFalse(looks_like_tls(b"G"))
        self.assertFalse(looks_like_tls(b"\x80\x2e\x01"))  # SSL 2.0's hello.

    def test_guard_refuses_first(self) -> None:
        """
        A plain-text client over the connection limits gets no protocol,
        so no answer: the guard's refusal comes before any look at its
        bytes.
        """
        self.connect(1)
        self.assertIsNone(
            self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2))
        )
