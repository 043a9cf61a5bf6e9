"""
Rooms, history and the JSON line format end to end: real TLS clients on
loopback talk to a real securemsg server, and the real C{twistd securemsg}
keeps its history in SQLite across a restart.

Whether a client got nothing it should not have is checked with a barrier:
it sends C{/ping} after the others saw the event, and the server, which
handles lines in order, must answer with nothing before its C{pong}.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from securemsg.core.history import SCHEMA_VERSION
from securemsg.core.hub import ChatHub
from securemsg.core.limits import Limits
from securemsg.protocol import wire

from . import _certs
from ._loopback import (
    LineClient,
    LoopbackServerTestCase,
    ObservedChatServerFactory,
    connect_line_client,
    greeting,
    reactor,
    tls_transport,
)
from ._twistd import Twistd, listening_port, start_twistd, stop_with_sigterm

#: 2025-11-27T13:05:22Z: the time of the fake clock rooms tests chat by.
START = 1764248722.0

#: Far more lines than any test sends: flood control is tested elsewhere.
LIMITS = Limits(flood_burst=10_000)


class RoomsFactory(ObservedChatServerFactory):
    """The observed factory serving a given L{ChatHub}, with loose flood limits."""

    def __init__(self, clock: IReactorTime, chat: ChatHub) -> None:
        super().__init__(clock)
        self.chat = chat
        self.limits = LIMITS


class ChatTestCase(LoopbackServerTestCase):
    """A loopback server for a chat of named people."""

    def make_chat(self) -> ChatHub:
        return ChatHub(reactor)

    def setUp(self) -> None:
        super().setUp()
        self.factory = RoomsFactory(reactor, self.make_chat())

    async def people(self, *names: str) -> list[LineClient]:
        """
        Start serving, connect one client for each name and give it that
        name, checking every line each receives on the way; returns with
        nothing unread.
        """
        ca, server = _certs.default_ca_and_server()
        self.ca_pem = ca.cert_pem()
        await self.serve(*server.write(self.directory))
        clients: list[LineClient] = []
        for number, name in enumerate(names, 1):
            client = await self.connect(self.ca_pem)
            await self.expect(client, greeting(f"guest-{number}"))
            for other in clients:
                await self.expect(other, f"*** guest-{number} joined")
            client.send(f"/nick {name}".encode())
            await self.expect(client, f"*** you are now {name}")
            for other in clients:
                await self.expect(other, f"*** guest-{number} is now known as {name}")
            clients.append(client)
        return clients

    async def expect(self, client: LineClient, *lines: str) -> None:
        """The client's next lines are exactly C{lines}."""
        self.assertEqual(await client.next_lines(len(lines)), list(lines))

    async def nothing_more(self, *clients: LineClient) -> None:
        """Each client got nothing since its last expected line."""
        for client in clients:
            client.send(b"/ping")
            await self.expect(client, "*** pong")


class RoomsTests(ChatTestCase):
    """
    Three people in rooms, with plain text lines: notices go only to the
    room they are about, lines are marked with their room, and a newcomer
    to a room gets its history.
    """

    def make_chat(self) -> ChatHub:
        # Message times come from this clock, so history lines are exact.
        self.clock = Clock()
        self.clock.advance(START)
        return ChatHub(self.clock)

    async def test_rooms(self) -> None:
        """
        Joining and leaving a room is told to that room only; someone in
        two rooms sees lines from the one not shown by default marked with
        its name; /say sends to a room, /join of a room one is in makes it
        current, and leaving the current room makes the last joined one
        current.  /rooms, /who and /topic describe the rooms.
        """
        alice, bob, carol = await self.people("alice", "bob", "carol")

        alice.send(b"/join #dev")
        await self.expect(alice, "*** alice joined #dev")
        bob.send(b"/join #DEV")
        await self.expect(bob, "*** bob joined #dev")
        await self.expect(alice, "*** bob joined #dev")
        await self.nothing_more(carol)

        # Plain lines go to the current room, marked with it.
        alice.send(b"hi dev")
        await self.expect(bob, "#dev [alice] hi dev")
        await self.nothing_more(carol, alice)

        # /say reaches a room one is in but not the current one.
        alice.send(b"/say #lobby hi lobby")
        await self.expect(bob, "[alice] hi lobby")
        await self.expect(carol, "[alice] hi lobby")
        carol.send(b"/say #dev let me in")
        await self.expect(carol, "!!! you are not in #dev; /join it first")
        await self.nothing_more(alice, bob)

        # Joining a room one is in makes it current.
        alice.send(b"/join #lobby", b"plain", b"/me waves")
        await self.expect(alice, "*** #lobby is now your current room")
        await self.expect(bob, "[alice] plain", "* alice waves")
        await self.expect(carol, "[alice] plain", "* alice waves")
        alice.send(b"/join #dev", b"/me nods")
        await self.expect(alice, "*** #dev is now your current room")
        await self.expect(bob, "#dev * alice nods")
        await self.nothing_more(carol)

        alice.send(b"/rooms", b"/who", b"/who #lobby", b"/who #nowhere")
        await self.expect(
            alice,
            "*** rooms: #lobby (3), #dev (2)",
            "*** 2 in #dev: alice, bob",
            "*** 3 here: alice, bob, carol",
            "!!! you are not in #nowhere; /join it first",
        )
        carol.send(b"/who", b"/who #dev")
        await self.expect(
            carol,
            "*** 3 here: alice, bob, carol",
            "!!! you are not in #dev; /join it first",
        )

        # The topic is told to the room it belongs to.
        alice.send(b"/topic ship it")
        await self.expect(alice, "*** topic of #dev: ship it (set by alice)")
        await self.expect(bob, "*** topic of #dev: ship it (set by alice)")
        await self.nothing_more(carol)
        bob.send(b"/topic")
        await self.expect(bob, "*** topic of #dev: ship it (set by alice)")
        carol.send(b"/topic", b"/rooms")
        await self.expect(
            carol, "*** #lobby has no topic", "*** rooms: #lobby (3), #dev (2)"
        )

        # Leaving the current room: the last joined one becomes current.
        bob.send(b"/part")
        await self.expect(bob, "*** bob left #dev")
        await self.expect(alice, "*** bob left #dev")
        await self.nothing_more(carol)
        bob.send(b"back in the lobby", b"/part #dev")
        await self.expect(alice, "[bob] back in the lobby")
        await self.expect(carol, "[bob] back in the lobby")
        await self.expect(bob, "!!! you are not in #dev")

        # Someone in no room at all.
        carol.send(b"/part", b"anyone?", b"/who")
        await self.expect(alice, "*** carol left #lobby")
        await self.expect(bob, "*** carol left #lobby")
        await self.expect(
            carol,
            "*** carol left #lobby",
            "!!! you are in no room; /join one, e.g. /join #lobby",
            "!!! you are in no room; /join one, e.g. /join #lobby",
        )
        # A quit is told to those who share a room, once each.
        carol.send(b"/join #ops")
        await self.expect(carol, "*** carol joined #ops")
        alice.send(b"/join #ops")
        await self.expect(alice, "*** alice joined #ops")
        await self.expect(carol, "*** alice joined #ops")
        carol.send(b"/quit bye")
        await self.expect(carol, "*** goodbye")
        await self.expect(alice, '*** carol left, saying "bye"')
        await self.nothing_more(alice, bob)
        await carol.wait_closed()

    async def test_history_on_join(self) -> None:
        """
        Whoever joins a room gets its last messages, oldest first, each
        marked with its time, between a header and a footer, after the
        topic and before anything live; /history asks for them again.
        """
        alice, bob, carol = await self.people("alice", "bob", "carol")
        alice.send(b"/join #dev", b"/topic ship it")
        await self.expect(
            alice, "*** alice joined #dev", "*** topic of #dev: ship it (set by alice)"
        )
        for line in [b"one", b"/me two", b"three"]:
            self.clock.advance(60)
            alice.send(line)
            await self.nothing_more(alice)
        bob.send(b"/msg alice not kept", b"lobby line")
        await self.expect(bob, "[bob -> alice] not kept")
        await self.expect(alice, "[bob -> alice] not kept", "[bob] lobby line")
        await self.expect(carol, "[bob] lobby line")

        bob.send(b"/join #dev")
        await self.expect(
            bob,
            "*** bob joined #dev",
            "*** topic of #dev: ship it (set by alice)",
            "*** history of #dev: 3 message(s)",
            "~ 2025-11-27T13:06:22Z #dev [alice] one",
            "~ 2025-11-27T13:07:22Z #dev * alice two",
            "~ 2025-11-27T13:08:22Z #dev [alice] three",
            "*** end of history of #dev",
        )
        await self.expect(alice, "*** bob joined #dev")
        alice.send(b"live")
        await self.expect(bob, "#dev [alice] live")

        bob.send(b"/history 2", b"/history #lobby", b"/history alice")
        await self.expect(
            bob,
            "*** history of #dev: 2 message(s)",
            "~ 2025-11-27T13:08:22Z #dev [alice] three",
            "~ 2025-11-27T13:08:22Z #dev [alice] live",
            "*** end of history of #dev",
            "*** history of #lobby: 1 message(s)",
            "~ 2025-11-27T13:08:22Z [bob] lobby line",
            "*** end of history of #lobby",
            "!!! private history is kept only between holders of client"
            " certificates; a guest's name can be taken by others, so guests"
            " have none",
        )
        carol.send(b"/history #dev")
        await self.expect(carol, "!!! you are not in #dev; /join it first")
        # The marked lines read back as history, not as live lines.
        parsed = wire.parse_event("~ 2025-11-27T13:06:22Z #dev [alice] one")
        self.assertEqual(parsed, wire.Message("alice", "one", "#dev", START + 60, True))


class JSONTests(ChatTestCase):
    """
    A client that switched to C{/format json} gets every event as one JSON
    object per line, and may send its commands as JSON.
    """

    def setUp(self) -> None:
        super().setUp()
        self.began = reactor.seconds()

    async def json(self, client: LineClient, count: int = 1) -> list[Any]:
        """
        The client's next C{count} lines, each of which must be one JSON
        object; a chat line's time must be a number from this test, and is
        then left out (also in a history's messages).
        """
        objects = []
        for line in await client.next_lines(count):
            data = json.loads(line)
            self.assertIsInstance(data, dict, line)
            for message in [data, *data.get("messages", [])]:
                if message["type"] in ("message", "action", "private"):
                    self.check_time(message.pop("time"))
            objects.append(data)
        return objects

    def check_time(self, time: object) -> None:
        self.assertIsInstance(time, float)
        assert isinstance(time, float)
        self.assertTrue(self.began <= time <= reactor.seconds(), time)

    async def expect_json(self, client: LineClient, *objects: dict[str, Any]) -> None:
        """The client's next lines are exactly these JSON objects (timeless)."""
        self.assertEqual(await self.json(client, len(objects)), list(objects))

    def send_json(self, client: LineClient, *objects: dict[str, Any]) -> None:
        client.send(*(json.dumps(data).encode() for data in objects))

    async def test_every_event_as_json(self) -> None:
        """
        After C{/format json}, one client gets each kind of event as its JSON
        object (message, action, private, notice, error, join, part, quit,
        nick, whoami, who, rooms, topic, history), while the others go on
        with text; its JSON commands work, and C{format text} switches back.
        """
        alice, bob, carol = await self.people("alice", "bob", "carol")
        alice.send(b"/format json")
        await self.expect_json(alice, {"type": "notice", "text": "format is now json"})

        self.send_json(alice, {"type": "whoami"}, {"type": "ping"})
        await self.expect_json(
            alice,
            {
                "type": "whoami",
                "name": "alice",
                "verified": None,
                "fingerprint": None,
            },
            {"type": "notice", "text": "pong"},
        )

        bob.send(b"hello", b"/me waves", b"/msg alice psst")
        await self.expect_json(
            alice,
            message("message", "#lobby", "bob", "hello"),
            message("action", "#lobby", "bob", "waves"),
            private("bob", "alice", "psst"),
        )
        await self.expect(bob, "[bob -> alice] psst")
        await self.expect(carol, "[bob] hello", "* bob waves")
        self.send_json(alice, {"type": "msg", "to": "bob", "text": "hi bob"})
        await self.expect_json(alice, private("alice", "bob", "hi bob"))
        await self.expect(bob, "[alice -> bob] hi bob")
        self.send_json(
            alice,
            {"type": "say", "text": "hello all"},
            {"type": "me", "text": "smiles"},
        )
        for other in (bob, carol):
            await self.expect(other, "[alice] hello all", "* alice smiles")

        # Rooms: joins, a topic, a room's line, who, rooms, parts.
        self.send_json(alice, {"type": "join", "room": "#dev"})
        await self.expect_json(alice, {"type": "join", "room": "#dev", "name": "alice"})
        bob.send(b"/join #dev", b"in dev")
        await self.expect(bob, "*** bob joined #dev")
        await self.expect_json(
            alice,
            {"type": "join", "room": "#dev", "name": "bob"},
            message("message", "#dev", "bob", "in dev"),
        )
        self.send_json(
            alice,
            {"type": "topic", "text": "ship it"},
            {"type": "topic"},
            {"type": "who"},
            {"type": "who", "room": "#lobby"},
            {"type": "rooms"},
        )
        topic = {"type": "topic", "room": "#dev", "topic": "ship it", "setter": "alice"}
        await self.expect_json(
            alice,
            topic,
            topic,
            {"type": "who", "room": "#dev", "names": ["alice", "bob"]},
            {"type": "who", "room": "#lobby", "names": ["alice", "bob", "carol"]},
            {
                "type": "rooms",
                "rooms": [
                    {"name": "#lobby", "members": 3, "topic": ""},
                    {"name": "#dev", "members": 2, "topic": "ship it"},
                ],
            },
        )
        await self.expect(bob, "*** topic of #dev: ship it (set by alice)")

        # History: asked for, and given on joining a room.
        self.send_json(alice, {"type": "history", "target": "#lobby", "count": 3})
        await self.expect_json(
            alice,
            {
                "type": "history",
                "target": "#lobby",
                "messages": [
                    message("action", "#lobby", "bob", "waves", history=True),
                    message("message", "#lobby", "alice", "hello all", history=True),
                    message("action", "#lobby", "alice", "smiles", history=True),
                ],
            },
        )
        self.send_json(alice, {"type": "part"}, {"type": "join", "room": "#dev"})
        await self.expect_json(
            alice,
            {"type": "part", "room": "#dev", "name": "alice"},
            {"type": "join", "room": "#dev", "name": "alice"},
            topic,
            {
                "type": "history",
                "target": "#dev",
                "messages": [message("message", "#dev", "bob", "in dev", history=True)],
            },
        )
        await self.expect(bob, "*** alice left #dev", "*** alice joined #dev")
        bob.send(b"/part #dev")
        await self.expect(bob, "*** bob left #dev")
        await self.expect_json(alice, {"type": "part", "room": "#dev", "name": "bob"})

        # Names, and someone leaving.
        carol.send(b"/nick carla")
        await self.expect(carol, "*** you are now carla")
        await self.expect(bob, "*** carol is now known as carla")
        await self.expect_json(
            alice, {"type": "nick", "old": "carol", "new": "carla", "you": False}
        )
        self.send_json(alice, {"type": "nick", "name": "alicia"})
        await self.expect_json(
            alice, {"type": "nick", "old": "alice", "new": "alicia", "you": True}
        )
        for other in (bob, carol):
            await self.expect(other, "*** alice is now known as alicia")
        carol.send(b"/quit bye")
        await self.expect(carol, "*** goodbye")
        await self.expect(bob, '*** carla left, saying "bye"')
        await self.expect_json(
            alice, {"type": "quit", "name": "carla", "reason": "", "message": "bye"}
        )
        await carol.wait_closed()

        # Errors, from the chat and from JSON that is no command.
        self.send_json(
            alice,
            {"type": "join", "room": "dev"},
            {"type": "msg", "to": "nobody", "text": "hi"},
            {"type": "dance"},
            {"type": "history", "count": 0},
        )
        await self.expect_json(
            alice,
            error(f"dev is not a room name; {wire.ROOM_RULES}"),
            error("nobody here is called nobody"),
            error("unknown command type 'dance'"),
            error("history: field 'count' must be a whole number from 1 to 500"),
        )

        # Back to text lines.
        self.send_json(alice, {"type": "format", "format": "text"})
        await self.expect(alice, "*** format is now text")
        alice.send(b"/whoami")
        await self.expect(alice, "*** you are alicia")
        await self.nothing_more(alice, bob)

    async def test_quit_message_in_json(self) -> None:
        """
        A JSON quit's message reaches the others as the user's message, not
        as the server's reason: C{/quit kicked by alice} is no kick.
        """
        alice, bob = await self.people("alice", "bob")
        alice.send(b"/format json")
        await self.expect_json(alice, {"type": "notice", "text": "format is now json"})
        bob.send(b"/format json")
        await self.expect_json(bob, {"type": "notice", "text": "format is now json"})
        self.send_json(bob, {"type": "quit", "message": "kicked by alice: spam"})
        await self.expect_json(bob, {"type": "notice", "text": "goodbye"})
        await self.expect_json(
            alice,
            {
                "type": "quit",
                "name": "bob",
                "reason": "",
                "message": "kicked by alice: spam",
            },
        )
        await bob.wait_closed()

    async def test_invalid_json(self) -> None:
        """
        Lines that are not a JSON command get an error event each, and the
        connection stays: JSON that is not an object, nested too deeply,
        or holding a lone surrogate (which no one could be sent) included.
        """
        alice, bob = await self.people("alice", "bob")
        alice.send(b"/format json")
        await self.expect_json(alice, {"type": "notice", "text": "format is now json"})
        alice.send(
            b"hello",
            b"[1, 2]",
            b"[" * 3000,
            b'{"type": "say", "text": "\\ud800"}',
            b'{"type": "topic", "text": "\\udc00"}',
            "\u00e9t\u00e9".encode("latin-1"),
        )
        errors = await self.json(alice, 6)
        self.assertEqual(
            errors[0], error("invalid JSON: Expecting value: line 1 column 1 (char 0)")
        )
        self.assertEqual(
            errors[1], error("a command must be a JSON object with a 'type'")
        )
        self.assertEqual(errors[2]["type"], "error")
        self.assertTrue(errors[2]["text"].startswith("invalid JSON: "), errors[2])
        self.assertEqual(
            errors[3:],
            [
                error("say: field 'text' is not valid Unicode (a lone surrogate)"),
                error("topic: field 'text' is not valid Unicode (a lone surrogate)"),
                error("that line was not valid UTF-8; it was not sent"),
            ],
        )
        # Still connected and understood; bob got none of it.
        self.send_json(alice, {"type": "say", "text": "still here \U0001f600"})
        await self.expect(bob, "[alice] still here \U0001f600")
        self.send_json(alice, {"type": "topic"})
        await self.expect_json(
            alice, {"type": "topic", "room": "#lobby", "topic": "", "setter": None}
        )
        await self.nothing_more(bob)


def message(
    kind: str, room: str, sender: str, text: str, *, history: bool = False
) -> dict[str, Any]:
    """A chat line's JSON object, without its time."""
    return {
        "type": kind,
        "room": room,
        "from": sender,
        "text": text,
        "history": history,
    }


def private(sender: str, recipient: str, text: str) -> dict[str, Any]:
    """A private line's JSON object, without its time."""
    return {
        "type": "private",
        "from": sender,
        "to": recipient,
        "text": text,
        "history": False,
    }


def error(text: str) -> dict[str, Any]:
    return {"type": "error", "text": text}


class RestartTests(TestCase):
    """
    The real C{twistd securemsg} keeps its history in an SQLite file: what
    was said is replayed after a restart, and a bad file stops the start
    with one line.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.ca, self.server = _certs.default_ca_and_server()
        self.cert_path, self.key_path = self.server.write(self.directory)
        self.database = str(self.directory / "history.sqlite3")

    def start(self, *arguments: str) -> Twistd:
        """
        Start C{twistd -n securemsg} on an ephemeral port with our
        certificate and database.
        """
        return start_twistd(
            self,
            self.directory,
            "--cert", self.cert_path,
            "--key", self.key_path,
            "--listen", "tcp:0:interface=127.0.0.1",
            "--history-db", self.database,
            "--flood-burst", "1000",
            *arguments,
        )  # fmt: skip

    async def port(self, twistd: Twistd) -> int:
        return await listening_port(twistd)

    async def connect(self, port: int, name: str, number: int) -> LineClient:
        """A TLS client, greeted as guest-C{number}, renamed C{name}."""
        client = await connect_line_client(port, self.ca.cert_pem())
        self.addCleanup(self.close_client, client)
        self.assertEqual(await client.next_lines(1), [greeting(f"guest-{number}")])
        client.send(f"/nick {name}".encode())
        await self.expect(client, f"*** you are now {name}")
        return client

    async def close_client(self, client: LineClient) -> None:
        if not client.ended.fired:
            tls_transport(client).abortConnection()
        await client.wait_closed()

    async def expect(self, client: LineClient, *lines: str) -> None:
        self.assertEqual(await client.next_lines(len(lines)), list(lines))

    def assertReplayed(
        self,
        lines: list[str],
        expected: list[wire.Replayable],
        began: float,
        ended: float,
    ) -> None:
        """
        C{lines} are the history lines of C{expected}, in order, each marked
        with a time (to the second) between C{began} and C{ended}.
        """
        events = []
        for line in lines:
            self.assertTrue(line.startswith(wire.HISTORY_PREFIX), line)
            event = wire.parse_event(line)
            assert isinstance(event, wire.Message | wire.Action), line
            assert event.time is not None
            self.assertTrue(math.floor(began) <= event.time <= ended, line)
            events.append(replace(event, time=None))
        self.assertEqual(events, expected)

    async def test_history_survives_restart(self) -> None:
        """
        Chat in two rooms, stop the server with SIGTERM, start it again on
        the same file: a newcomer gets exactly what was said in each room,
        in order and marked as history, and private lines were not kept.
        Under a umask of 022 the database and its WAL files are made
        readable by the server's user only.
        """
        began = reactor.seconds()
        old_umask = os.umask(0o022)
        self.addCleanup(os.umask, old_umask)
        twistd = self.start()
        port = await self.port(twistd)
        alice = await self.connect(port, "alice", 1)
        bob = await self.connect(port, "bob", 2)
        await self.expect(
            alice, "*** guest-2 joined", "*** guest-2 is now known as bob"
        )
        alice.send(b"/join #dev")
        await self.expect(alice, "*** alice joined #dev")
        bob.send(b"/join #dev")
        await self.expect(bob, "*** bob joined #dev")
        await self.expect(alice, "*** bob joined #dev")
        alice.send(b"first in dev", b"/me waves in dev", b"/say #lobby first in lobby")
        await self.expect(
            bob, "#dev [alice] first in dev", "#dev * alice waves in dev",
            "[alice] first in lobby",
        )  # fmt: skip
        bob.send(b"/msg alice secret", b"second in dev", b"/say #lobby second")
        await self.expect(
            alice, "[bob -> alice] secret", "#dev [bob] second in dev", "[bob] second"
        )
        await self.expect(bob, "[bob -> alice] secret")
        for name in (self.database, self.database + "-wal", self.database + "-shm"):
            self.assertEqual(os.stat(name).st_mode & 0o777, 0o600, name)
        ended = reactor.seconds()
        await stop_with_sigterm(self, twistd)
        await alice.wait_closed()
        await bob.wait_closed()
        # Written by the server, with its schema version.
        database = sqlite3.connect(self.database)
        self.addCleanup(database.close)
        self.assertEqual(
            database.execute("PRAGMA user_version").fetchall(), [(SCHEMA_VERSION,)]
        )
        self.assertEqual(
            database.execute("SELECT COUNT(*) FROM messages").fetchall(), [(5,)]
        )

        twistd = self.start()
        port = await self.port(twistd)
        # The default room's history comes right after the greeting.
        carol = await self.connect_raw(port)
        lines = await carol.next_lines(5)
        self.assertEqual(
            [lines[0], lines[1], lines[4]],
            [
                greeting("guest-1"),
                "*** history of #lobby: 2 message(s)",
                "*** end of history of #lobby",
            ],
        )
        self.assertReplayed(
            lines[2:4],
            [
                wire.Message("alice", "first in lobby", None, None, True),
                wire.Message("bob", "second", None, None, True),
            ],
            began,
            ended,
        )
        carol.send(b"/join #dev")
        lines = await carol.next_lines(6)
        self.assertEqual(
            [lines[0], lines[1], lines[5]],
            [
                "*** guest-1 joined #dev",
                "*** history of #dev: 3 message(s)",
                "*** end of history of #dev",
            ],
        )
        self.assertReplayed(
            lines[2:5],
            [
                wire.Message("alice", "first in dev", "#dev", None, True),
                wire.Action("alice", "waves in dev", "#dev", None, True),
                wire.Message("bob", "second in dev", "#dev", None, True),
            ],
            began,
            ended,
        )
        carol.send(b"/nick bob", b"/history alice", b"/history #dev 1")
        await self.expect(
            carol,
            "*** you are now bob",
            "!!! private history is kept only between holders of client certificates;"
            " a guest's name can be taken by others, so guests have none",
        )
        lines = await carol.next_lines(3)
        self.assertEqual(
            [lines[0], lines[2]],
            ["*** history of #dev: 1 message(s)", "*** end of history of #dev"],
        )
        self.assertReplayed(
            lines[1:2],
            [wire.Message("bob", "second in dev", "#dev", None, True)],
            began,
            ended,
        )
        await stop_with_sigterm(self, twistd)
        await carol.wait_closed()

    async def connect_raw(self, port: int) -> LineClient:
        """A TLS client that has read nothing yet."""
        client = await connect_line_client(port, self.ca.cert_pem())
        self.addCleanup(self.close_client, client)
        return client

    async def run_to_exit(self) -> Twistd:
        twistd = self.start()
        await twistd.wait_ended()
        return twistd

    def assertOneLineFailure(self, twistd: Twistd, line: str) -> None:
        """twistd exited with status 1 and said exactly C{line}, nothing else."""
        status = twistd.ended.value
        self.assertIsInstance(status, ProcessTerminated, twistd.output())
        self.assertEqual((status.exitCode, status.signal), (1, None), twistd.output())
        self.assertEqual(twistd.err.decode(), line + "\n")
        self.assertEqual(twistd.out, b"")

    async def test_corrupt_database(self) -> None:
        """
        A history file that is not a database stops the start with exactly
        one line on standard error, naming it, and exit status 1; the file
        is left as it was.
        """
        junk = bytes(range(256)) * 16
        Path(self.database).write_bytes(junk)
        twistd = await self.run_to_exit()
        self.assertOneLineFailure(
            twistd,
            f"securemsg: history database {self.database} is not a usable SQLite"
            " database (file is not a database); move it away to start afresh",
        )
        self.assertEqual(Path(self.database).read_bytes(), junk)

    async def test_locked_database(self) -> None:
        """
        A history file another program holds locked stops the start with
        one line saying so, and exit status 1.
        """
        other = sqlite3.connect(self.database, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("CREATE TABLE other (x)")
        other.execute("BEGIN EXCLUSIVE")
        twistd = await self.run_to_exit()
        self.assertOneLineFailure(
            twistd,
            f"securemsg: history database {self.database} is locked by another"
            " program (is another securemsg using it?)",
        )
