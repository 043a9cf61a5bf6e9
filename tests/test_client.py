"""
Tests for L{securemsg.client.api}: the protocol and the L{ChatClient} API over
a L{StringTransport}, L{split_address}, and L{connect} against a real
securemsg server on loopback.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securemsg.client.api import (
    DEFAULT_PORT,
    MAX_LINE_LENGTH,
    ChatClient,
    ChatClientProtocol,
    ClientError,
    ConnectionFailed,
    ProtocolError,
    VerificationFailed,
    connect,
    split_address,
)
from securemsg.protocol import jsonwire, wire
from securemsg.server.endpoint import tls_server_endpoint
from securemsg.tls import certs
from securemsg.tls import policy as tls

from . import _certs
from ._loopback import (
    TIMEOUT,
    LoopbackServerTestCase,
    Waiters,
    bounded,
    failure_of,
    greeting,
    port_of,
    reactor,
)
from .test_wire import shown_as


def connected(
    clock: Clock | None = None,
) -> tuple[ChatClient, ChatClientProtocol, StringTransport, list[wire.Event]]:
    """
    A L{ChatClient} whose protocol is connected to a L{StringTransport} and
    has finished its (pretend) TLS handshake.
    """
    events: list[wire.Event] = []
    client = ChatClient(events.append, clock)
    protocol = ChatClientProtocol(client)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.handshakeCompleted()
    return client, protocol, transport, events


class ProtocolTests(SynchronousTestCase):
    """What the server sends becomes events."""

    def test_ready_after_handshake(self) -> None:
        """
        C{ready} fires with the client once the handshake is done, not when
        the TCP connection is made.
        """
        client = ChatClient()
        protocol = ChatClientProtocol(client)
        protocol.makeConnection(StringTransport())
        self.assertNoResult(client.ready)
        protocol.handshakeCompleted()
        self.assertIs(self.successResultOf(client.ready), client)

    def test_lost_before_handshake(self) -> None:
        """A connection lost before its handshake fails C{ready}."""
        client = ChatClient()
        protocol = ChatClientProtocol(client)
        protocol.makeConnection(StringTransport())
        protocol.connectionLost(Failure(ConnectionLost("reset")))
        self.failureResultOf(client.ready, ConnectionLost)
        self.assertNoResult(client.closed)

    def test_events(self) -> None:
        """
        Each kind of server line becomes its event; a CRLF line ending is
        taken as LF; a line of no known kind is kept as a notice.
        """
        _, protocol, _, events = connected()
        protocol.dataReceived(
            b"*** Welcome to securemsg, guest-1.\n"
            b"[alice] hello, w\xc3\xb6rld\n"
            b"* bob waves\r\n"
            b"[alice -> bob] psst\n"
            b"!!! unknown command /foo; type /help for the list\n"
            b"no prefix at all\n"
            b"[half"
        )
        self.assertEqual(
            events,
            [
                wire.Notice("Welcome to securemsg, guest-1."),
                wire.Message("alice", "hello, wörld"),
                wire.Action("bob", "waves"),
                wire.PrivateMessage("alice", "bob", "psst"),
                wire.Error("unknown command /foo; type /help for the list"),
                wire.Notice("no prefix at all"),
            ],
        )
        protocol.dataReceived(b"er] line\n")
        self.assertEqual(events[-1], wire.Message("halfer", "line"))

    def test_sanitized(self) -> None:
        """
        Control characters and invisible reordering characters from a
        misbehaving server are made visible, and bytes that are not UTF-8
        are replaced, so that an event is always safe to print.
        """
        _, protocol, _, events = connected()
        protocol.dataReceived(
            b"[mallory] \x1b[2J\x1b]0;owned\x07 \xe2\x80\xae!dlrow\n"
            b"*** bad \xff byte\rhidden\n"
        )
        self.assertEqual(
            events,
            [
                wire.Message("mallory", "^[[2J^[]0;owned^G <U+202E>!dlrow"),
                wire.Notice("bad \ufffd byte^Mhidden"),
            ],
        )

    def test_json_sanitized(self) -> None:
        """
        In JSON mode too, every text in every kind of event (names, rooms,
        topics, reasons, lists, the messages in a history) has its control
        and invisible characters made visible, as the text mode does; so
        has a JSON line that does not parse.  The expected text is worked
        out by test_wire's statement of the rule, not by L{wire.sanitize}.
        """
        evil = "a\x1b[2J\r\x9b\u202e\u2028\u200f\u061cz"
        shown = "".join(map(shown_as, evil))
        self.assertEqual(shown, "a^[[2J^M<U+009B><U+202E><U+2028><U+200F><U+061C>z")

        def every_event(text: str) -> list[wire.Event]:
            return [
                wire.Message(text, text, text, 1.0),
                wire.Action(text, text, text),
                wire.PrivateMessage(text, text, text, 2.0),
                wire.Notice(text),
                wire.Error(text),
                wire.Joined(text, text),
                wire.Parted(text, text),
                wire.Departed(text, text),
                wire.Renamed(text, text),
                wire.Identity(text, True, text),
                wire.WhoList(text, (text, text)),
                wire.RoomList((wire.RoomInfo(text, 3, text),)),
                wire.TopicInfo(text, text, text),
                wire.PastMessages(
                    text,
                    (
                        wire.Message(text, text, text, 3.0, True),
                        wire.PrivateMessage(text, text, text, 4.0, True),
                    ),
                ),
            ]

        events: list[wire.Event] = []
        client = ChatClient(events.append, json=True)
        protocol = ChatClientProtocol(client)
        protocol.makeConnection(StringTransport())
        protocol.handshakeCompleted()
        protocol.dataReceived(
            b"".join(jsonwire.encode(event) for event in every_event(evil))
            + f"{{{evil}\n".encode()
        )
        self.assertEqual(events, [*every_event(shown), wire.Notice(f"{{{shown}")])

    def test_name_tracked(self) -> None:
        """
        The client's name is the last one the server confirmed with
        C{*** you are now NAME}; others' renames do not change it.
        """
        client, protocol, _, _ = connected()
        self.assertIsNone(client.name)
        protocol.dataReceived(b"*** you are now alice\n")
        self.assertEqual(client.name, "alice")
        protocol.dataReceived(b"*** guest-2 is now known as bob\n[bob] hi\n")
        self.assertEqual(client.name, "alice")
        protocol.dataReceived(b"*** you are now Alice2\n")
        self.assertEqual(client.name, "Alice2")

    def test_name_from_whoami(self) -> None:
        """
        The answer to /whoami gives the name too, also when the server adds
        how it knows it (client certificates).
        """
        for line, name in (
            (b"*** you are carol\n", "carol"),
            (
                b"*** you are alice (verified by client certificate sha256:ab)\n",
                "alice",
            ),
            (b"*** you are guest-1 (guest: no client certificate)\n", "guest-1"),
        ):
            client, protocol, _, _ = connected()
            protocol.dataReceived(line)
            self.assertEqual(client.name, name)

    def test_closed(self) -> None:
        """
        C{closed} fires with the exception that ended the connection:
        L{ConnectionDone} for a clean end, L{ConnectionLost} for a lost one.
        """
        for reason in (ConnectionDone(), ConnectionLost()):
            client, protocol, _, _ = connected()
            protocol.connectionLost(Failure(reason))
            self.assertIs(self.successResultOf(client.closed), reason)


class LongLineTests(SynchronousTestCase):
    """
    Lines up to L{MAX_LINE_LENGTH} bytes arrive whole; a longer one ends the
    connection with a L{ProtocolError}, not as a clean close.
    """

    def feed(self, protocol: ChatClientProtocol, data: bytes) -> None:
        """Give the protocol C{data} in pieces, as TLS records come."""
        for start in range(0, len(data), 64 * 1024):
            protocol.dataReceived(data[start : start + 64 * 1024])

    def test_bound(self) -> None:
        """
        The bound is documented as 4 MiB, well above the 1 MiB a server
        puts on one line at most.
        """
        self.assertEqual(MAX_LINE_LENGTH, 4 * 1024 * 1024)
        self.assertEqual(ChatClientProtocol.MAX_LENGTH, MAX_LINE_LENGTH)

    def test_longest_line(self) -> None:
        """
        A line of exactly L{MAX_LINE_LENGTH} bytes (far over the old 1 MiB
        limit) is one event, and the connection goes on.
        """
        client, protocol, transport, events = connected()
        text = "x" * (MAX_LINE_LENGTH - len("*** "))
        self.feed(protocol, f"*** {text}\n[alice] after it\n".encode())
        # Compared without the long text, so that a failure prints briefly.
        self.assertEqual(len(events), 2)
        self.assertTrue(events[0] == wire.Notice(text), "the long line changed")
        self.assertEqual(events[1], wire.Message("alice", "after it"))
        self.assertFalse(transport.disconnecting)
        self.assertNoResult(client.closed)

    def test_too_long(self) -> None:
        """
        One byte more, and the client closes the connection as soon as it
        has that many bytes without a line ending; what follows is not
        read as lines; C{closed} fires with a L{ProtocolError} that names
        the bound, even though the TLS close itself is clean.
        """
        client, protocol, transport, events = connected()
        self.feed(protocol, b"*** before\n" + b"x" * (MAX_LINE_LENGTH + 1))
        self.assertEqual(events, [wire.Notice("before")])
        self.assertTrue(transport.disconnecting)
        self.feed(protocol, b"xxx\n[mallory] after it\n")
        self.assertEqual(events, [wire.Notice("before")])
        protocol.connectionLost(Failure(ConnectionDone()))
        reason = self.successResultOf(client.closed)
        self.assertIsInstance(reason, ProtocolError)
        self.assertEqual(
            str(reason), f"the server sent a line longer than {MAX_LINE_LENGTH} bytes"
        )


class SendingTests(SynchronousTestCase):
    """The API methods send the lines the protocol documents."""

    def test_send(self) -> None:
        """
        C{send} sends each line of its text as a chat line, escaping a
        leading C{/} as C{//} so that it is never taken as a command, and
        skipping blank lines.
        """
        client, _, transport, _ = connected()
        client.send("hello")
        client.send("/not a command")
        client.send("one\n\n  \ntwo\r\n/three\n")
        client.send("")
        client.send("//already doubled")
        self.assertEqual(
            transport.value(),
            b"hello\n//not a command\none\ntwo\n//three\n///already doubled\n",
        )
        self.assertEqual(
            wire.parse_command("///already doubled"), wire.Say("//already doubled")
        )

    def test_send_utf8(self) -> None:
        """Text is sent as UTF-8."""
        client, _, transport, _ = connected()
        client.send("grüße ✓")
        self.assertEqual(transport.value(), "grüße ✓\n".encode())

    def test_private(self) -> None:
        """C{private} sends C{/msg NAME TEXT}, one per line of text."""
        client, _, transport, _ = connected()
        client.private("bob", "psst")
        client.private("carol", "one\ntwo\n\n")
        self.assertEqual(
            transport.value(), b"/msg bob psst\n/msg carol one\n/msg carol two\n"
        )

    def test_nick_who_action_command(self) -> None:
        """
        C{nick}, C{who} and C{action} send their commands; an action is one
        line; C{command} sends the first line of any raw line.
        """
        client, _, transport, _ = connected()
        client.nick("alice")
        client.who()
        client.action("waves")
        client.action("juggles\nand drops everything")
        client.command("/help\n/quit")
        self.assertEqual(
            transport.value(),
            b"/nick alice\n/who\n/me waves\n/me juggles\n/help\n",
        )

    def test_blank_action(self) -> None:
        """An action with no text sends nothing, as C{send} does."""
        client, _, transport, _ = connected()
        client.action("")
        client.action("  \nlater line")
        self.assertEqual(transport.value(), b"")

    def test_not_connected(self) -> None:
        """
        Before the handshake, or after the connection ended, sending is a
        L{ClientError}.
        """
        client = ChatClient()
        self.assertRaises(ClientError, client.send, "hello")
        client, protocol, _, _ = connected()
        protocol.connectionLost(Failure(ConnectionDone()))
        error = self.assertRaises(ClientError, client.who)
        self.assertEqual(str(error), "not connected")


class CloseTests(SynchronousTestCase):
    """C{close} says C{/quit} and ends the connection cleanly."""

    def test_close_waits_for_server(self) -> None:
        """
        With a clock, C{close} sends C{/quit} and leaves the server to
        close the connection (after its last lines); when it does, C{closed}
        fires with L{ConnectionDone} and no timer is left behind.
        """
        clock = Clock()
        client, protocol, transport, events = connected(clock)
        closing = client.close("see you")
        self.assertEqual(transport.value(), b"/quit see you\n")
        self.assertFalse(transport.disconnecting)
        self.assertNoResult(closing)
        clock.advance(client.close_timeout - 0.1)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"*** goodbye\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(events, [wire.Notice("goodbye")])
        self.assertIsInstance(self.successResultOf(closing), ConnectionDone)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_close_timeout(self) -> None:
        """
        If the server does not close its end within C{close_timeout}, the
        client closes its own.
        """
        clock = Clock()
        client, protocol, transport, _ = connected(clock)
        closing = client.close()
        self.assertEqual(transport.value(), b"/quit\n")
        clock.advance(client.close_timeout)
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(closing)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsInstance(self.successResultOf(closing), ConnectionDone)
        self.assertTrue(client.closing)

    def test_close_without_clock(self) -> None:
        """Without a clock, C{close} closes the connection at once."""
        client, _, transport, _ = connected()
        closing = client.close()
        self.assertEqual(transport.value(), b"/quit\n")
        self.assertTrue(transport.disconnecting)
        self.assertIs(closing, client.closed)

    def test_close_not_connected(self) -> None:
        """Closing a client that is not connected sends nothing."""
        client = ChatClient(clock=Clock())
        self.assertIs(client.close(), client.closed)
        self.assertNoResult(client.closed)
        self.assertTrue(client.closing)

    def test_callbacks_see_the_reason(self) -> None:
        """
        Callbacks added to C{closed} after C{close} still get the reason
        the connection ended.
        """
        client, protocol, _, _ = connected(Clock())
        client.close()
        seen: list[object] = []
        client.closed.addCallback(seen.append)
        reason = ConnectionDone()
        protocol.connectionLost(Failure(reason))
        self.assertEqual(seen, [reason])


class SplitAddressTests(SynchronousTestCase):
    """L{split_address} reads C{HOST[:PORT]}."""

    def test_valid(self) -> None:
        """Host names, IPv4 and IPv6 addresses, with or without a port."""
        for address, expected in [
            ("chat.example.org", ("chat.example.org", DEFAULT_PORT)),
            ("chat.example.org:6000", ("chat.example.org", 6000)),
            ("localhost:1", ("localhost", 1)),
            ("127.0.0.1:65535", ("127.0.0.1", 65535)),
            ("[::1]:6000", ("::1", 6000)),
            ("[::1]", ("::1", DEFAULT_PORT)),
            ("::1", ("::1", DEFAULT_PORT)),
            ("fe80::1:2", ("fe80::1:2", DEFAULT_PORT)),
        ]:
            self.assertEqual(split_address(address), expected, address)

    def test_default_port(self) -> None:
        """The default port can be chosen."""
        self.assertEqual(split_address("example.org", 7), ("example.org", 7))
        self.assertEqual(split_address("[::1]", 7), ("::1", 7))

    def test_bad_port(self) -> None:
        """A port that is not a number from 1 to 65535 is refused, saying so."""
        for address in (
            "host:0",
            "host:65536",
            "host:http",
            "host:-1",
            "host:+80",
            "host: 80",
            "host:\uff18\uff10",  # fullwidth digits
            "host:\u00b2",  # superscript two
            "[::1]:0",
            "[::1]:x",
        ):
            error = self.assertRaises(ValueError, split_address, address)
            self.assertEqual(
                str(error),
                f"{address!r}: port must be a number from 1 to 65535",
                address,
            )

    def test_malformed(self) -> None:
        """No host, or broken brackets, are refused."""
        for address, problem in [
            (":6000", "no host"),
            ("", "no host"),
            ("[::1", "missing ']' after an IPv6 address"),
            ("[]:6000", "missing ']' after an IPv6 address"),
            ("[::1]6000", "expected ':PORT' after ']'"),
        ]:
            error = self.assertRaises(ValueError, split_address, address)
            self.assertEqual(str(error), f"{address!r}: {problem}", address)


def lines(events: list[wire.Event]) -> list[str]:
    """The server lines C{events} stand for."""
    return [event.format() for event in events]


class EventRecorder:
    """Keeps the events a client receives; lets a test wait for the next."""

    def __init__(self) -> None:
        self.unread: list[wire.Event] = []
        self._wanted: tuple[int, Deferred[list[wire.Event]]] | None = None

    def __call__(self, event: wire.Event) -> None:
        self.unread.append(event)
        self._hand_over()

    def _hand_over(self) -> None:
        if self._wanted is not None and len(self.unread) >= self._wanted[0]:
            count, waiter = self._wanted
            self._wanted = None
            events, self.unread = self.unread[:count], self.unread[count:]
            waiter.callback(events)

    def next(self, count: int = 1) -> Deferred[list[wire.Event]]:
        """The next C{count} events, once they are all here."""
        assert self._wanted is None, "already waiting"

        def forget(waiter: Deferred[list[wire.Event]]) -> None:
            self._wanted = None

        waiter: Deferred[list[wire.Event]] = Deferred(forget)
        self._wanted = (count, waiter)
        self._hand_over()
        return bounded(waiter, f"{count} events (have {self.unread!r})")


class ConnectTests(LoopbackServerTestCase):
    """L{connect} against a real securemsg server over loopback TLS."""

    async def setUp(self) -> None:  # type: ignore[override]
        super().setUp()
        self.ca, self.server = _certs.default_ca_and_server()
        cert_path, key_path = self.server.write(self.directory)
        self.ca_path = str(self.directory / "ca.pem")
        Path(self.ca_path).write_bytes(self.ca.cert_pem())
        await self.serve(cert_path, key_path)

    async def connect_client(
        self, host: str = "localhost"
    ) -> tuple[ChatClient, EventRecorder]:
        """Connect with the API, trusting the test CA."""
        events = EventRecorder()
        client = await bounded(
            connect(reactor, host, self.port, ca=self.ca_path, on_event=events),
            "connect()",
        )
        self.addCleanup(self.close_client, client)
        return client, events

    async def close_client(self, client: ChatClient) -> None:
        """Close C{client} if a test left it open, and wait until it is."""
        if not client.closed.called:
            client.close()
        await bounded(client.closed, "the client to close", TIMEOUT)

    async def test_events_parsed(self) -> None:
        """
        Events from the server arrive parsed, starting with the greeting;
        a C{/nick} answer updates the client's name; an error comes as an
        L{wire.Error}.  (Events are compared
        by the line they stand for, which holds whichever line format the
        client asked the server for.)
        """
        client, events = await self.connect_client()
        self.assertEqual(lines(await events.next(1)), [greeting("guest-1")])
        client.nick("alice")
        self.assertEqual(lines(await events.next(1)), ["*** you are now alice"])
        self.assertEqual(client.name, "alice")
        client.private("nobody", "hello?")
        [error] = await events.next(1)
        self.assertIsInstance(error, wire.Error)
        self.assertEqual(error.format(), "!!! nobody here is called nobody")

    async def test_two_clients_chat(self) -> None:
        """
        Two programs chat through the API: text (with a leading C{/}),
        actions, private lines and C{/who} all arrive as their events.
        """
        alice, alice_events = await self.connect_client()
        await alice_events.next(1)
        bob, bob_events = await self.connect_client("127.0.0.1")
        await bob_events.next(1)
        self.assertEqual(lines(await alice_events.next(1)), ["*** guest-2 joined"])
        alice.nick("alice")
        await alice_events.next(1)
        self.assertEqual(
            lines(await bob_events.next(1)), ["*** guest-1 is now known as alice"]
        )
        bob.nick("bob")
        await bob_events.next(1)
        await alice_events.next(1)

        alice.send("hello bob\n/etc/passwd is not a command")
        received = await bob_events.next(2)
        for event in received:
            self.assertIsInstance(event, wire.Message)
        self.assertEqual(
            lines(received),
            ["[alice] hello bob", "[alice] /etc/passwd is not a command"],
        )
        bob.action("waves")
        [action] = await alice_events.next(1)
        self.assertIsInstance(action, wire.Action)
        self.assertEqual(action.format(), "* bob waves")
        alice.private("bob", "psst")
        for events in (bob_events, alice_events):
            [private] = await events.next(1)
            self.assertIsInstance(private, wire.PrivateMessage)
            self.assertEqual(private.format(), "[alice -> bob] psst")
        bob.who()
        self.assertEqual(lines(await bob_events.next(1)), ["*** 2 here: alice, bob"])

        reason = await bounded(alice.close("lunch"), "alice to close")
        self.assertIsInstance(reason, ConnectionDone)
        self.assertEqual(lines(await alice_events.next(1)), ["*** goodbye"])
        self.assertEqual(
            lines(await bob_events.next(1)), ['*** alice left, saying "lunch"']
        )

    async def test_close(self) -> None:
        """
        C{close} waits for the server's goodbye and its clean close;
        C{closed} then fires with L{ConnectionDone}.
        """
        client, events = await self.connect_client()
        await events.next(1)
        closing = client.close()
        self.assertIs(closing, client.closed)
        reason = await bounded(closing, "close()")
        self.assertIsInstance(reason, ConnectionDone)
        self.assertEqual(lines(events.unread), ["*** goodbye"])
        server = await self.factory.connection(0)
        await bounded(server.ended.wait(), "the server's end")
        self.assertTrue(server.ended.value.check(ConnectionDone))

    async def test_verification_failed(self) -> None:
        """
        A server whose certificate is not trusted fails L{connect} with
        L{VerificationFailed}, which says why and carries the fingerprint
        the server showed; the server never sees a joined client.
        """
        other = _certs.make_ca("another CA")
        other_path = self.directory / "other.pem"
        other_path.write_bytes(other.cert_pem())
        error = await bounded(
            failure_of(
                self,
                connect(reactor, "localhost", self.port, ca=str(other_path)),
                VerificationFailed,
            ),
            "connect() to fail",
        )
        fingerprint = certs.fingerprint(self.server.certificate)
        self.assertEqual(error.fingerprint, fingerprint)
        self.assertEqual(
            error.problem,
            "unknown issuer (no trusted certificate issued it; use --ca or --pin)",
        )
        self.assertEqual(
            str(error), f"{error.problem} (server certificate {fingerprint})"
        )
        server = await self.factory.connection(0)
        await bounded(server.ended.wait(), "the server's end")
        self.assertFalse(server.was_joined)

    async def test_wrong_pin(self) -> None:
        """A wrong pin is a L{VerificationFailed} too; the right one connects."""
        wrong = "sha256:" + "00" * 32
        error = await bounded(
            failure_of(
                self,
                connect(reactor, "127.0.0.1", self.port, pin=wrong),
                VerificationFailed,
            ),
            "connect() to fail",
        )
        self.assertEqual(error.fingerprint, certs.fingerprint(self.server.certificate))
        self.assertTrue(error.problem.startswith("pin mismatch"), error.problem)
        client = await bounded(
            connect(
                reactor,
                "127.0.0.1",
                self.port,
                pin=certs.fingerprint(self.server.certificate),
            ),
            "connect() with the right pin",
        )
        self.addCleanup(self.close_client, client)

    async def test_connection_refused(self) -> None:
        """
        A port nobody listens on fails L{connect} with L{ConnectionFailed}
        saying the connection was refused.
        """
        assert self.listening is not None
        await bounded(maybeDeferred(self.listening.stopListening), "stopListening")
        self.listening = None
        for host in ("127.0.0.1", "localhost"):
            error = await bounded(
                failure_of(
                    self,
                    connect(reactor, host, self.port, ca=self.ca_path),
                    ConnectionFailed,
                ),
                "connect() to fail",
            )
            self.assertEqual(str(error), "connection refused", host)


class NotAChatServer(Protocol):
    """
    A plain TCP server that closes each connection at once, or first says
    something that is not TLS.
    """

    def __init__(self, says: bytes) -> None:
        self.says = says
        self.ended = Waiters()

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.says:
            self.transport.write(self.says)
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.ended.fire(reason)


class HandshakeFailureTests(LoopbackServerTestCase):
    """L{connect} to servers that do not complete a TLS handshake."""

    async def fail_against(self, says: bytes) -> ConnectionFailed:
        """Connect to a L{NotAChatServer}; return how L{connect} failed."""
        servers: list[NotAChatServer] = []

        def build() -> NotAChatServer:
            servers.append(NotAChatServer(says))
            return servers[-1]

        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await bounded(endpoint.listen(Factory.forProtocol(build)), "listen")
        self.addCleanup(port.stopListening)
        pin = "sha256:" + "00" * 32
        error = await bounded(
            failure_of(
                self,
                connect(reactor, "127.0.0.1", port.getHost().port, pin=pin),
                ConnectionFailed,
            ),
            "connect() to fail",
        )
        self.assertEqual(len(servers), 1)
        await bounded(servers[0].ended.wait(), "the server's end")
        return error

    async def test_closed_during_handshake(self) -> None:
        """A server that closes before the handshake is done says so."""
        error = await self.fail_against(b"")
        self.assertEqual(
            str(error), "the server closed the connection during the handshake"
        )

    async def test_not_tls(self) -> None:
        """
        A server that does not speak TLS fails the connection, and is not
        mistaken for an unverified one.
        """
        error = await self.fail_against(b"*** Welcome, in plain text\n")
        self.assertNotIsInstance(error, VerificationFailed)
        self.assertIn("wrong version number", str(error))


class LongLineServer(LineReceiver):
    """
    A TLS server that sends C{says} at once, and closes when it gets
    C{/quit}.
    """

    delimiter = b"\n"

    def __init__(self, says: bytes) -> None:
        self.says = says
        self.ended = Waiters()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.says)

    def lineReceived(self, line: bytes) -> None:
        if line.startswith(b"/quit"):
            assert self.transport is not None
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.ended.fire(reason)


class LongLineConnectTests(LoopbackServerTestCase):
    """L{connect} to a server that sends long lines, over real TLS."""

    async def connect_to_server_saying(
        self, says: bytes
    ) -> tuple[ChatClient, EventRecorder, LongLineServer]:
        """Serve C{says} over TLS and connect a client; return both ends."""
        ca, server = _certs.default_ca_and_server()
        cert_path, key_path = server.write(self.directory)
        ca_path = str(self.directory / "ca.pem")
        Path(ca_path).write_bytes(ca.cert_pem())
        servers: list[LongLineServer] = []

        def build() -> LongLineServer:
            servers.append(LongLineServer(says))
            return servers[-1]

        endpoint = tls_server_endpoint(
            reactor,
            "tcp:0:interface=127.0.0.1",
            tls.ServerTLS(
                tls.make_server_context(tls.load_credentials(cert_path, key_path))
            ),
        )
        port = await bounded(endpoint.listen(Factory.forProtocol(build)), "listen")
        self.addCleanup(port.stopListening)
        events = EventRecorder()
        client = await bounded(
            connect(
                reactor,
                "localhost",
                port_of(port.getHost()),
                ca=ca_path,
                on_event=events,
                json=False,
            ),
            "connect()",
        )
        self.addCleanup(lambda: bounded(servers[0].ended.wait(), "the server's end"))
        return client, events, servers[0]

    async def test_large_reply(self) -> None:
        """
        A 3 MiB line (a long reply, as a server bounds them well under 1
        MiB, with room to spare) arrives whole over TLS, and the connection
        goes on until the client closes it cleanly.
        """
        text = "y" * (3 * 1024 * 1024)
        client, events, _ = await self.connect_to_server_saying(
            f"*** hello\n*** {text}\n*** after\n".encode()
        )
        received = await events.next(3)
        self.assertEqual(received[0], wire.Notice("hello"))
        self.assertTrue(received[1] == wire.Notice(text), "the long line changed")
        self.assertEqual(received[2], wire.Notice("after"))
        self.assertNoResult(client.closed)
        reason = await bounded(client.close(), "close()")
        self.assertIsInstance(reason, ConnectionDone)

    async def test_over_the_bound(self) -> None:
        """
        A line over L{MAX_LINE_LENGTH} over TLS: the client closes the
        connection and C{closed} says it was a protocol error, not a clean
        close.
        """
        client, events, _ = await self.connect_to_server_saying(
            b"*** hello\n" + b"z" * (MAX_LINE_LENGTH + 1)
        )
        reason = await bounded(client.closed, "the client to close")
        self.assertIsInstance(reason, ProtocolError)
        self.assertEqual(events.unread, [wire.Notice("hello")])
