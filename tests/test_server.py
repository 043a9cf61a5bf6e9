"""
Tests for L{securemsg.server.protocol}: one protocol over L{StringTransport}, several
sharing one factory.
"""

import json
from typing import cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.base import DelayedCall
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securemsg.core.limits import Limits
from securemsg.protocol import wire
from securemsg.server.factory import ChatServerFactory
from securemsg.server.outbox import ANNOUNCEMENT_DELAY
from securemsg.server.protocol import ChatServerProtocol, describe_peer


class Client:
    """One connection to the factory over a L{StringTransport}."""

    def __init__(self, factory: ChatServerFactory, port: int) -> None:
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", port)
        )
        self.factory = factory
        protocol = factory.buildProtocol(self.transport.getPeer())
        assert isinstance(protocol, ChatServerProtocol)
        self.protocol = protocol
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def lines(self) -> list[str]:
        """
        What the server sent since the last call, as lines (after the end
        of the reactor turn, when the server writes).
        """
        self.factory.outbox.flush()
        self.factory.outbox.flush_announcements()
        data: bytes = self.transport.value()
        self.transport.clear()
        return data.decode("utf-8").splitlines()

    def close(self, reason: Failure | None = None) -> None:
        self.transport.loseConnection()
        self.protocol.connectionLost(reason or Failure(ConnectionDone()))


class ServerProtocolTests(SynchronousTestCase):
    """
    L{ChatServerProtocol} speaks the documented line protocol.
    """

    def setUp(self) -> None:
        self.factory = ChatServerFactory.standalone(
            MemoryReactorClock(), limits=Limits(max_line_length=64)
        )
        self.clients: list[Client] = []

    def connect(self) -> Client:
        client = Client(self.factory, 40000 + len(self.clients))
        self.clients.append(client)
        return client

    def pair(self) -> tuple[Client, Client]:
        """Two clients named alice and bob, with nothing left to read."""
        alice, bob = self.connect(), self.connect()
        alice.send(b"/nick alice\n")
        bob.send(b"/nick bob\n")
        alice.lines()
        bob.lines()
        return alice, bob

    def test_history_count_refused_in_both_formats(self) -> None:
        """
        Asking for more than the most messages one /history may carry (500)
        is refused, with the range, in text mode and in JSON mode alike.
        """
        client = self.connect()
        client.lines()
        client.send(b"/history 501\n/history 500\n")
        self.assertEqual(
            client.lines(),
            ["!!! /history takes 1 to 500 messages", "*** no history for #lobby"],
        )
        client.send(b"/format json\n")
        client.lines()
        client.send(
            b'{"type": "history", "count": 501}\n{"type": "history", "count": 500}\n'
        )
        self.assertEqual(
            [json.loads(line) for line in client.lines()],
            [
                {
                    "type": "error",
                    "text": "history: field 'count' must be a whole number"
                    " from 1 to 500",
                },
                {"type": "history", "target": "#lobby", "messages": []},
            ],
        )

    def test_greeting_names_the_client(self) -> None:
        """On connect the client is told its name and how to get help."""
        client = self.connect()
        self.assertEqual(
            client.lines(),
            ["*** Welcome to securemsg, guest-1. Type /help for commands."],
        )

    def test_custom_and_empty_greeting(self) -> None:
        """The greeting can be changed, span lines, or be left out."""
        self.factory.greeting = "hi {name}\nbe nice"
        self.assertEqual(self.connect().lines(), ["*** hi guest-1", "*** be nice"])
        self.factory.greeting = ""
        self.assertEqual(self.connect().lines(), [])

    def test_broadcast(self) -> None:
        """A line goes to the others with the sender's name, not to the sender."""
        alice, bob = self.pair()
        alice.send(b"hello\n")
        self.assertEqual(bob.lines(), ["[alice] hello"])
        self.assertEqual(alice.lines(), [])

    def test_crlf_and_split_reads(self) -> None:
        """CRLF endings are accepted and lines may arrive in pieces."""
        alice, bob = self.pair()
        for piece in (b"hel", b"lo\r", b"\nwor", b"ld\r\n"):
            alice.send(piece)
        self.assertEqual(bob.lines(), ["[alice] hello", "[alice] world"])

    def test_join_and_leave_notices(self) -> None:
        """Others hear of arrivals and departures."""
        alice, bob = self.pair()
        carol = self.connect()
        self.assertEqual(alice.lines(), ["*** guest-3 joined"])
        carol.close()
        self.assertEqual(alice.lines(), ["*** guest-3 left"])
        bob.close(Failure(ConnectionLost()))
        self.assertEqual(alice.lines(), ["*** bob left (connection lost)"])

    def test_quit(self) -> None:
        """/quit says goodbye, closes, and tells the others the message."""
        alice, bob = self.pair()
        bob.send(b"/quit off to lunch\n")
        self.assertEqual(bob.lines(), ["*** goodbye"])
        self.assertTrue(bob.transport.disconnecting)
        bob.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(alice.lines(), ['*** bob left, saying "off to lunch"'])

    def test_quit_like_a_kick(self) -> None:
        """
        A /quit message that reads like a kick is shown quoted, as the
        quitter's words; even when the connection then breaks, no
        "connection lost" is added to it.
        """
        alice, bob = self.pair()
        bob.send(b"/quit kicked by alice: spamming\n")
        bob.protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(
            alice.lines(), ['*** bob left, saying "kicked by alice: spamming"']
        )

    def test_invalid_utf8(self) -> None:
        """Invalid UTF-8 gets an error; the connection carries on."""
        alice, bob = self.pair()
        alice.send(b"\xff\xfe bad\nok\n")
        self.assertEqual(
            alice.lines(), ["!!! that line was not valid UTF-8; it was not sent"]
        )
        self.assertEqual(bob.lines(), ["[alice] ok"])
        self.assertFalse(alice.transport.disconnecting)

    def test_over_long_line_in_one_read(self) -> None:
        """An over-long line is refused and what follows it still counts."""
        alice, bob = self.pair()
        alice.send(b"x" * 65 + b"\nafter\n")
        self.assertEqual(
            alice.lines(), ["!!! line longer than 64 bytes; it was not sent"]
        )
        self.assertEqual(bob.lines(), ["[alice] after"])
        self.assertFalse(alice.transport.disconnecting)

    def test_over_long_line_streamed(self) -> None:
        """
        An over-long line arriving in pieces is thrown away as it comes,
        never buffered whole, and the line after it is delivered.
        """
        alice, bob = self.pair()
        alice.send(b"y" * 100)
        self.assertEqual(len(alice.lines()), 1)
        for _ in range(1000):
            alice.send(b"y" * 1000)
            self.assertLessEqual(len(alice.protocol._buffer), 64)
        alice.send(b"yyy\nnext\n")
        self.assertEqual(alice.lines(), [])
        self.assertEqual(bob.lines(), ["[alice] next"])

    def test_line_at_the_limit(self) -> None:
        """A line of exactly the limit is delivered."""
        alice, bob = self.pair()
        alice.send(b"z" * 64 + b"\n")
        self.assertEqual(bob.lines(), ["[alice] " + "z" * 64])

    def test_last_line_without_newline(self) -> None:
        """A last line without a newline is delivered when the client closes."""
        alice, bob = self.pair()
        alice.send(b"first\nlast words")
        self.assertEqual(bob.lines(), ["[alice] first"])
        alice.close()
        self.assertEqual(bob.lines(), ["[alice] last words", "*** alice left"])

    def test_last_line_quits(self) -> None:
        """
        A last line without a newline that closes the connection (/quit)
        gives its farewell and leaves no timer behind for the dead
        connection.
        """
        alice, bob = self.pair()
        alice.send(b"/quit off to lunch")
        alice.close()
        self.assertEqual(bob.lines(), ['*** alice left, saying "off to lunch"'])
        clock = self.factory.clock
        assert isinstance(clock, MemoryReactorClock)
        calls = cast("list[DelayedCall]", clock.getDelayedCalls())
        pending = [call.func for call in calls if call.active()]
        self.assertNotIn(alice.transport.abortConnection, pending)

    def test_control_characters_never_relayed(self) -> None:
        """Escapes and other controls reach others only in visible form."""
        alice, bob = self.pair()
        alice.send(b"\x1b]0;pwned\x07\x1b[31mred\x00\x08\xe2\x80\xae\n")
        self.assertEqual(bob.lines(), ["[alice] ^[]0;pwned^G^[[31mred^@^H<U+202E>"])

    def test_private_and_who(self) -> None:
        """/msg reaches one user; /who lists everyone."""
        alice, bob = self.pair()
        carol = self.connect()
        for client in (alice, bob, carol):
            client.lines()
        alice.send(b"/msg bob secret\n/who\n")
        self.assertEqual(bob.lines(), ["[alice -> bob] secret"])
        self.assertEqual(carol.lines(), [])
        self.assertEqual(
            alice.lines(), ["[alice -> bob] secret", "*** 3 here: alice, bob, guest-3"]
        )

    def test_nick_clash(self) -> None:
        """A taken name, in any case, is refused."""
        _, bob = self.pair()
        bob.send(b"/nick ALICE\n")
        self.assertEqual(bob.lines(), ["!!! the name alice is taken"])

    def test_unknown_command(self) -> None:
        """An unknown command gets an error naming it."""
        alice, _ = self.pair()
        alice.send(b"/dance\n")
        self.assertEqual(
            alice.lines(), ["!!! unknown command /dance; type /help for the list"]
        )

    def test_tcp_nodelay(self) -> None:
        """Nagle's algorithm is turned off on TCP connections."""
        transport = StringTransport()
        transport.setTcpNoDelay = lambda enabled: setattr(transport, "nodelay", enabled)  # type: ignore[attr-defined]
        from twisted.internet.interfaces import ITCPTransport
        from zope.interface import alsoProvides

        alsoProvides(transport, ITCPTransport)
        protocol = self.factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        self.assertTrue(getattr(transport, "nodelay", False))

    def test_message_text_not_logged(self) -> None:
        """Message text stays out of the log unless asked for."""
        alice, _ = self.pair()
        with capturedLogs() as events:
            alice.send(b"my secret plan\n")
        self.assertNotIn("my secret plan", repr(events))
        self.factory.chat.log_messages = True
        with capturedLogs() as events:
            alice.send(b"my secret plan\n")
        self.assertIn("my secret plan", repr(events))

    def test_connections_logged(self) -> None:
        """
        A guest's connection is logged in one line, when it ends, with the
        peer, the name and the reason.
        """
        with capturedLogs() as events:
            client = self.connect()
            client.close(Failure(ConnectionLost("boom")))
        text = [
            e["log_format"].format(**e)
            for e in events
            if e["log_level"] >= LogLevel.info
        ]
        self.assertEqual(len(text), 1, text)
        self.assertTrue(
            text[0].startswith("127.0.0.1:40000 (guest-1) disconnected: Connection"),
            text,
        )

    def test_disconnection_line_preformatted(self) -> None:
        """
        The disconnection line (one per connection) comes formatted: the log
        observer only copies it, and what it says and the fields it has
        (C{peer}, C{name}, C{reason}) are as before.
        """
        with capturedLogs() as events:
            client = self.connect()
            client.close(Failure(ConnectionDone()))
        [event] = [e for e in events if e["log_level"] >= LogLevel.info]
        self.assertEqual(event["log_format"], "{line}")
        self.assertEqual(
            (event["line"], event["peer"], event["name"], event["reason"]),
            (
                "127.0.0.1:40000 (guest-1) disconnected: closed cleanly",
                "127.0.0.1:40000",
                "guest-1",
                "closed cleanly",
            ),
        )
        self.assertEqual(
            formatEvent(event),
            "127.0.0.1:40000 (guest-1) disconnected: closed cleanly",
        )


class DescribePeerTests(SynchronousTestCase):
    """
    L{describe_peer} writes addresses the usual way.
    """

    def test_forms(self) -> None:
        """IPv4 as host:port, IPv6 in brackets."""
        self.assertEqual(describe_peer(IPv4Address("TCP", "10.0.0.1", 5)), "10.0.0.1:5")
        self.assertEqual(describe_peer(IPv6Address("TCP", "::1", 5)), "[::1]:5")


class EncodingTests(SynchronousTestCase):
    """
    L{Outbox.encode} formats each event once, whoever gets it.
    """

    def test_same_event_encoded_once(self) -> None:
        """
        The same event handed to many receivers is formatted once per
        format; a new event is formatted anew.
        """
        factory = ChatServerFactory.standalone(MemoryReactorClock())
        event = wire.Message("alice", "hi", "#lobby")
        first = factory.outbox.encode(event, json=False)
        self.assertEqual(first, b"[alice] hi\n")
        self.assertIs(factory.outbox.encode(event, json=False), first)
        as_json = factory.outbox.encode(event, json=True)
        self.assertIs(factory.outbox.encode(event, json=True), as_json)
        self.assertIn(b'"from": "alice"', as_json)
        self.assertEqual(
            factory.outbox.encode(wire.Message("bob", "yo", "#dev"), json=False),
            b"#dev [bob] yo\n",
        )

    def test_events_encoded_once_together(self) -> None:
        """
        L{Outbox.encode_all} gives what L{encode} gives for each
        event, joined, and formats the same events once per format.
        """
        factory = ChatServerFactory.standalone(MemoryReactorClock())
        events = (wire.Message("alice", "hi", "#lobby"), wire.Action("alice", "waves"))
        text = factory.outbox.encode_all(events, json=False)
        self.assertEqual(text, b"[alice] hi\n* alice waves\n")
        self.assertIs(factory.outbox.encode_all(events, json=False), text)
        as_json = factory.outbox.encode_all(events, json=True)
        self.assertEqual(
            as_json,
            b"".join(
                ChatServerFactory.standalone(MemoryReactorClock()).outbox.encode(
                    e, True
                )
                for e in events
            ),
        )
        self.assertIs(factory.outbox.encode_all(events, json=True), as_json)


class WriteBatchingTests(SynchronousTestCase):
    """
    What a reactor turn produces for a client is written at once.
    """

    def test_one_write_per_turn(self) -> None:
        """
        Lines for a client within one turn are joined into one write, made
        when the turn ends; the next turn writes again.
        """
        clock = MemoryReactorClock()
        factory = ChatServerFactory.standalone(clock, greeting="")
        writes: list[bytes] = []
        receiver = StringTransport()
        receiver.write = writes.append  # type: ignore[method-assign]
        protocol = factory.buildProtocol(receiver.getPeer())
        protocol.makeConnection(receiver)
        sender = Client(factory, 5)
        factory.outbox.flush()
        factory.outbox.flush_announcements()
        writes.clear()
        sender.send(b"one\ntwo\nthree\n")
        self.assertEqual(writes, [])
        clock.advance(0)
        self.assertEqual(writes, [b"[guest-2] one\n[guest-2] two\n[guest-2] three\n"])
        sender.send(b"four\n")
        clock.advance(0)
        self.assertEqual(writes[1:], [b"[guest-2] four\n"])

    def test_lines_of_one_read_delivered_together(self) -> None:
        """
        The lines of one read reach each receiver in one delivery, formatted
        once for the room, in text or JSON as each receiver asked.
        """
        clock = MemoryReactorClock()
        factory = ChatServerFactory.standalone(clock, greeting="")
        text, as_json, sender = (
            Client(factory, 1),
            Client(factory, 2),
            Client(factory, 3),
        )
        as_json.send(b"/format json\n")
        for client in (text, as_json, sender):
            client.lines()
        calls: list[tuple[wire.Event, ...]] = []
        encode_all = factory.outbox.encode_all

        def counting(events: tuple[wire.Event, ...], json: bool) -> bytes:
            calls.append(events)
            return encode_all(events, json)

        factory.outbox.encode_all = counting  # type: ignore[method-assign]
        sender.send(b"one\ntwo\n/me waves\n")
        self.assertEqual(len(calls), 2)
        self.assertIs(calls[0], calls[1])
        self.assertEqual(
            text.lines(), ["[guest-3] one", "[guest-3] two", "* guest-3 waves"]
        )
        self.assertEqual(
            [json.loads(line)["text"] for line in as_json.lines()],
            ["one", "two", "waves"],
        )
        self.assertEqual(sender.lines(), [])


class AnnouncementTests(SynchronousTestCase):
    """
    Others' arrivals and departures wait up to L{ANNOUNCEMENT_DELAY} to
    share a write; anything else for the same client takes them along.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = ChatServerFactory.standalone(self.clock, greeting="")
        self.writes: list[bytes] = []
        transport = StringTransport()
        transport.write = self.writes.append  # type: ignore[method-assign]
        self.member = self.factory.buildProtocol(transport.getPeer())
        self.member.makeConnection(transport)
        self.clock.advance(ANNOUNCEMENT_DELAY)

    def test_burst_of_arrivals_shares_one_write(self) -> None:
        """
        Arrivals and departures within the delay reach a member in one
        write, made when the delay is over, not at the end of the turn.
        """
        first = Client(self.factory, 1)
        self.clock.advance(0)
        second = Client(self.factory, 2)
        first.close()
        self.clock.advance(0)
        self.assertEqual(self.writes, [])
        self.clock.advance(ANNOUNCEMENT_DELAY)
        self.assertEqual(
            self.writes,
            [b"*** guest-2 joined\n*** guest-3 joined\n*** guest-2 left\n"],
        )
        second.close()

    def test_anything_else_takes_them_along_in_order(self) -> None:
        """
        A line for the member writes the waiting arrival with it, before
        it, at the end of that turn.
        """
        speaker = Client(self.factory, 1)
        speaker.send(b"hello\n")
        self.clock.advance(0)
        self.assertEqual(self.writes, [b"*** guest-2 joined\n[guest-2] hello\n"])
        self.clock.advance(ANNOUNCEMENT_DELAY)
        self.assertEqual(len(self.writes), 1)

    def test_own_arrival_in_a_room_not_delayed(self) -> None:
        """What a client is told of its own /join is written that turn."""
        self.member.dataReceived(b"/join #dev\n")
        self.clock.advance(0)
        self.assertEqual(self.writes, [b"*** guest-1 joined #dev\n"])

    def test_guests_own_arrival_not_delayed(self) -> None:
        """
        Nor is a guest's, told with the guest mark C{~} where client
        certificates are checked: it is still its own.
        """
        self.factory.chat.certificates = True
        self.member.dataReceived(b"/join #dev\n")
        self.clock.advance(0)
        self.assertEqual(self.writes, [b"*** ~guest-1 joined #dev\n"])

    def test_stopping_writes_what_waits(self) -> None:
        """When the factory stops, waiting announcements are written."""
        self.factory.doStart()
        Client(self.factory, 1)
        self.clock.advance(0)
        self.factory.doStop()
        self.assertEqual(self.writes, [b"*** guest-2 joined\n"])
        calls = cast("list[DelayedCall]", self.clock.getDelayedCalls())
        pending = [call.func for call in calls]
        self.assertNotIn(self.factory.outbox.flush_announcements, pending)


class UnterminatedLineTests(SynchronousTestCase):
    """
    Text without a newline that is followed by nothing for the quiet period
    (L{Limits.line_flush}) is a whole line, as clients written like the
    socket tutorial's expect: they send each message without a newline and
    stay connected.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.quiet = Limits().line_flush
        self.factory = ChatServerFactory.standalone(
            self.clock, limits=Limits(max_line_length=64)
        )
        self.alice, self.bob = Client(self.factory, 1), Client(self.factory, 2)
        self.alice.send(b"/nick alice\n")
        self.alice.lines()
        self.bob.lines()

    def line_timers(self) -> list[DelayedCall]:
        """The quiet-period timers still pending on the clock."""
        return [
            call
            for call in cast("list[DelayedCall]", self.clock.getDelayedCalls())
            if getattr(call.func, "__name__", "") == "_line_end"
        ]

    def test_pause_ends_the_line(self) -> None:
        """
        Text without a newline reaches the others once the quiet period has
        passed, not before, and the connection stays open.
        """
        self.alice.send(b"[alice] hi")
        self.clock.advance(self.quiet * 0.9)
        self.assertEqual(self.bob.lines(), [])
        self.clock.advance(self.quiet * 0.1)
        self.assertEqual(self.bob.lines(), ["[alice] [alice] hi"])
        self.assertFalse(self.alice.transport.disconnecting)
        self.assertEqual(self.line_timers(), [])

    def test_pieces_in_quick_succession_are_one_line(self) -> None:
        """
        Each piece restarts the quiet period, so a line arriving in pieces,
        each within the period of the last, is still one line.
        """
        for piece in (b"hel", b"lo wo", b"rld"):
            self.alice.send(piece)
            self.clock.advance(self.quiet * 0.75)
            self.assertEqual(self.bob.lines(), [])
        self.clock.advance(self.quiet * 0.25)
        self.assertEqual(self.bob.lines(), ["[alice] hello world"])

    def test_rest_read_after_the_due_timer_joins_the_line(self) -> None:
        """
        A busy reactor runs the timers that are due before it reads: when
        the quiet period is over by the clock while the rest of the line is
        waiting to be read, the server reads once more before it decides,
        and the line stays whole.
        """
        self.alice.send(b"hel")
        # The reactor was busy: time passed, then it runs the due timer ...
        self.clock.rightNow += self.quiet * 2
        [due] = self.line_timers()
        self.clock.calls.remove(due)
        due.func()
        self.assertEqual(self.bob.lines(), [])
        # ... and only then reads what came in the meantime.
        self.alice.send(b"lo\n")
        self.clock.advance(self.quiet * 2)
        self.assertEqual(self.bob.lines(), ["[alice] hello"])
        self.assertEqual(self.line_timers(), [])

    def test_messages_apart_are_separate_lines(self) -> None:
        """
        Two messages without newlines, a quiet period apart, are two lines,
        never glued into one.
        """
        self.alice.send(b"[alice] hi")
        self.clock.advance(1)
        self.alice.send(b"[alice] there")
        self.clock.advance(1)
        self.assertEqual(
            self.bob.lines(), ["[alice] [alice] hi", "[alice] [alice] there"]
        )

    def test_newline_ends_the_line_at_once(self) -> None:
        """
        A newline still ends a line at once and stops the timer; only the
        unterminated rest of a read waits.
        """
        self.alice.send(b"one\ntw")
        self.assertEqual(self.bob.lines(), ["[alice] one"])
        self.assertEqual(len(self.line_timers()), 1)
        self.alice.send(b"o\n")
        self.assertEqual(self.bob.lines(), ["[alice] two"])
        self.assertEqual(self.line_timers(), [])

    def test_commands_without_newline(self) -> None:
        """A command without a newline works once the quiet period has passed."""
        self.bob.send(b"/nick bob")
        self.clock.advance(self.quiet)
        self.assertEqual(self.bob.lines(), ["*** you are now bob"])

    def test_line_at_the_limit(self) -> None:
        """Unterminated text of exactly the limit is delivered whole."""
        self.alice.send(b"z" * 64)
        self.clock.advance(self.quiet)
        self.assertEqual(self.bob.lines(), ["[alice] " + "z" * 64])

    def test_over_long_text_is_still_refused(self) -> None:
        """
        Unterminated text over the limit, even in pieces that each fit, is
        refused as an over-long line (one error, nothing sent, the
        connection kept) and thrown away up to its newline, pauses or not;
        what follows counts as usual, quiet period included.
        """
        self.alice.send(b"x" * 40)
        self.alice.send(b"x" * 40)
        self.assertEqual(
            self.alice.lines(), ["!!! line longer than 64 bytes; it was not sent"]
        )
        self.alice.send(b"x" * 1000)
        self.clock.advance(self.quiet * 5)
        self.assertEqual(self.line_timers(), [])
        self.alice.send(b"tail\nafter")
        self.clock.advance(self.quiet)
        self.assertEqual(self.bob.lines(), ["[alice] after"])
        self.assertEqual(self.alice.lines(), [])
        self.assertFalse(self.alice.transport.disconnecting)

    def test_zero_turns_it_off(self) -> None:
        """
        With a quiet period of 0, unterminated text waits for its newline
        (or the end of the connection) however long it takes; no timer.
        """
        factory = ChatServerFactory.standalone(self.clock, limits=Limits(line_flush=0))
        alice, bob = Client(factory, 1), Client(factory, 2)
        alice.lines()
        bob.lines()
        alice.send(b"[alice] hi")
        self.assertEqual(self.line_timers(), [])
        self.clock.advance(60)
        self.assertEqual(bob.lines(), [])
        alice.send(b" there\n")
        self.assertEqual(bob.lines(), ["[guest-1] [alice] hi there"])

    def test_timer_cancelled_on_connection_lost(self) -> None:
        """
        A connection lost while text waits delivers it as its last line, as
        before, and leaves no timer behind.
        """
        self.alice.send(b"last words")
        self.assertEqual(len(self.line_timers()), 1)
        self.alice.close()
        self.assertEqual(self.bob.lines(), ["[alice] last words", "*** alice left"])
        self.assertEqual(self.line_timers(), [])
        self.clock.advance(self.quiet)
        self.assertEqual(self.bob.lines(), [])

    def test_no_timer_while_closing(self) -> None:
        """What a closing client sends after its /quit starts no timer."""
        self.alice.send(b"/quit bye\nmore")
        self.assertTrue(self.alice.transport.disconnecting)
        self.assertEqual(self.line_timers(), [])


class DeliveryCountTests(SynchronousTestCase):
    """
    The outbox counts lines handed to clients by event class (for the
    metrics) once per run of receivers of one event, not per receiver, and
    exactly: the counts equal the deliveries once the turn's output is
    written.
    """

    def test_counts_equal_deliveries(self) -> None:
        """
        One event to three receivers, another to two, the first again to
        one, and several events at once to two: each class is counted once
        per receiver, whether or not its events came one after another.
        """
        factory = ChatServerFactory.standalone(MemoryReactorClock(), greeting="")
        outbox = factory.outbox
        queues = [
            outbox.queue(ChatServerProtocol(factory), 1 << 20, False) for _ in range(3)
        ]
        for queue in queues:
            queue.transport = StringTransport()
        said = wire.Message("alice", "hi", None, 0.0)
        notice = wire.Notice("hello")
        for queue in queues:
            queue.put(said)
        for queue in queues[:2]:
            queue.put(notice)
        queues[2].put(said)
        both = (wire.Message("bob", "a", None, 0.0), wire.Notice("b"))
        for queue in queues[:2]:
            queue.put_all(both)
        outbox.flush()
        self.assertEqual(
            dict(outbox.delivered), {wire.Message: 4 + 2, wire.Notice: 2 + 2}
        )
        outbox.flush()
        self.assertEqual(dict(outbox.delivered), {wire.Message: 6, wire.Notice: 4})
