"""
Tests for L{securemsg.protocol.jsonwire}: the JSON form of every event and command,
and what is wrong with JSON lines that are no command.
"""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from securemsg.protocol import jsonwire, wire

names = st.from_regex(wire.NAME_PATTERN, fullmatch=True)
rooms = st.from_regex(wire.ROOM_PATTERN, fullmatch=True)
#: Any text at all but lone surrogates, which are not text (and cannot be
#: encoded as UTF-8); newlines included, since JSON escapes them.
any_text = st.text(st.characters(blacklist_categories=["Cs"]))
times = st.none() | st.floats(allow_nan=False, allow_infinity=False)

T = 1764248722.5

#: One event of every type, with the JSON object the server sends for it
#: (in a server whose default room is #lobby).
EVENTS: list[tuple[wire.Event, jsonwire.JSONObject]] = [
    (
        wire.Message("alice", "hello", "#dev", T),
        {
            "type": "message",
            "room": "#dev",
            "from": "alice",
            "text": "hello",
            "time": T,
            "history": False,
        },
    ),
    (
        wire.Action("alice", "waves", "#lobby", T),
        {
            "type": "action",
            "room": "#lobby",
            "from": "alice",
            "text": "waves",
            "time": T,
            "history": False,
        },
    ),
    (
        wire.PrivateMessage("alice", "bob", "psst", T),
        {
            "type": "private",
            "from": "alice",
            "to": "bob",
            "text": "psst",
            "time": T,
            "history": False,
        },
    ),
    (wire.Notice("pong"), {"type": "notice", "text": "pong"}),
    (wire.Error("no such room"), {"type": "error", "text": "no such room"}),
    (wire.Joined("bob", "#dev"), {"type": "join", "room": "#dev", "name": "bob"}),
    (wire.Parted("bob", "#dev"), {"type": "part", "room": "#dev", "name": "bob"}),
    (
        wire.Departed("bob", "kicked by alice"),
        {"type": "quit", "name": "bob", "reason": "kicked by alice", "message": ""},
    ),
    (
        wire.Departed("bob", message="see you"),
        {"type": "quit", "name": "bob", "reason": "", "message": "see you"},
    ),
    (
        wire.Departed("bob"),
        {"type": "quit", "name": "bob", "reason": "", "message": ""},
    ),
    (
        wire.Renamed("guest-1", "alice"),
        {"type": "nick", "old": "guest-1", "new": "alice", "you": False},
    ),
    (
        wire.Renamed("guest-1", "alice", you=True),
        {"type": "nick", "old": "guest-1", "new": "alice", "you": True},
    ),
    (
        wire.Identity("alice"),
        {"type": "whoami", "name": "alice", "verified": None, "fingerprint": None},
    ),
    (
        wire.Identity("alice", True, "SHA256:ab:cd"),
        {
            "type": "whoami",
            "name": "alice",
            "verified": True,
            "fingerprint": "SHA256:ab:cd",
        },
    ),
    (
        wire.WhoList("#dev", ("alice", "bob")),
        {"type": "who", "room": "#dev", "names": ["alice", "bob"]},
    ),
    (wire.WhoList("#empty", ()), {"type": "who", "room": "#empty", "names": []}),
    (
        wire.RoomList(
            (wire.RoomInfo("#lobby", 3), wire.RoomInfo("#dev", 1, "ship it"))
        ),
        {
            "type": "rooms",
            "rooms": [
                {"name": "#lobby", "members": 3, "topic": ""},
                {"name": "#dev", "members": 1, "topic": "ship it"},
            ],
        },
    ),
    (
        wire.TopicInfo("#dev", "ship it", "alice"),
        {"type": "topic", "room": "#dev", "topic": "ship it", "setter": "alice"},
    ),
    (
        wire.TopicInfo("#dev", ""),
        {"type": "topic", "room": "#dev", "topic": "", "setter": None},
    ),
    (
        wire.PastMessages("#dev", ()),
        {"type": "history", "target": "#dev", "messages": []},
    ),
    # Replies cut short to stay bounded say how much they left out.
    (
        wire.WhoList("#dev", ("alice",), more=2),
        {"type": "who", "room": "#dev", "names": ["alice"], "more": 2},
    ),
    (
        wire.RoomList((wire.RoomInfo("#lobby", 3),), more=5),
        {
            "type": "rooms",
            "rooms": [{"name": "#lobby", "members": 3, "topic": ""}],
            "more": 5,
        },
    ),
    (
        wire.PastMessages("#dev", (), more=7),
        {"type": "history", "target": "#dev", "messages": [], "more": 7},
    ),
]

#: A history holding each kind of message.
HISTORY = wire.PastMessages(
    "#dev",
    (
        wire.Message("alice", "one", "#dev", T, True),
        wire.Action("bob", "nods", "#dev", T + 1, True),
        wire.PrivateMessage("alice", "bob", "two", T + 2, True),
    ),
)
HISTORY_JSON: jsonwire.JSONObject = {
    "type": "history",
    "target": "#dev",
    "messages": [
        {
            "type": "message",
            "room": "#dev",
            "from": "alice",
            "text": "one",
            "time": T,
            "history": True,
        },
        {
            "type": "action",
            "room": "#dev",
            "from": "bob",
            "text": "nods",
            "time": T + 1,
            "history": True,
        },
        {
            "type": "private",
            "from": "alice",
            "to": "bob",
            "text": "two",
            "time": T + 2,
            "history": True,
        },
    ],
}


class EventTests(SynchronousTestCase):
    """
    L{jsonwire.event_to_json} gives every event its documented JSON object,
    and L{jsonwire.json_to_event} reads it back.
    """

    def test_every_event_type(self) -> None:
        """Each event type has exactly its JSON object."""
        for event, expected in [*EVENTS, (HISTORY, HISTORY_JSON)]:
            self.assertEqual(jsonwire.event_to_json(event), expected, event)
        kinds = {type(event) for event, _ in EVENTS}
        self.assertEqual(kinds, set(wire.Event.__args__), "an event type is untested")

    def test_round_trip(self) -> None:
        """Every event comes back as itself, also through a JSON line."""
        for event, _ in [*EVENTS, (HISTORY, None)]:
            self.assertEqual(
                jsonwire.json_to_event(jsonwire.event_to_json(event)), event
            )
            line = jsonwire.encode(event).decode("utf-8")
            self.assertEqual(jsonwire.parse_event(line.rstrip("\n")), event)

    def test_history_messages_are_marked(self) -> None:
        """
        Messages in a history are sent (and read back) as history, even if
        the event was made from live ones.
        """
        live = wire.PastMessages(
            "#dev", tuple(replace(m, replayed=False) for m in HISTORY.messages)
        )
        self.assertEqual(jsonwire.event_to_json(live), HISTORY_JSON)
        self.assertEqual(jsonwire.json_to_event(HISTORY_JSON), HISTORY)

    def test_default_room(self) -> None:
        """A message with no room is in the server's default room."""
        self.assertEqual(
            jsonwire.event_to_json(wire.Message("a", "hi"))["room"], wire.DEFAULT_ROOM
        )
        self.assertEqual(
            jsonwire.event_to_json(wire.Action("a", "waves"), "#main")["room"],
            "#main",
        )
        replayed = jsonwire.event_to_json(
            wire.PastMessages("#main", (wire.Message("a", "hi", None, T),)), "#main"
        )
        self.assertEqual(replayed["messages"][0]["room"], "#main")

    def test_encode_is_one_utf8_line(self) -> None:
        """
        An event is one line of UTF-8 JSON: newlines in text are escaped,
        and other characters are kept as they are.
        """
        data = jsonwire.encode(wire.Message("a", "line\none \u00e9\U0001f600", "#x"))
        self.assertEqual(data.count(b"\n"), 1)
        self.assertTrue(data.endswith(b"\n"))
        self.assertIn("\u00e9\U0001f600".encode(), data)
        self.assertEqual(json.loads(data)["text"], "line\none \u00e9\U0001f600")

    def test_unknown_event(self) -> None:
        """Something that is no event has no JSON form."""
        self.assertRaises(TypeError, jsonwire.event_to_json, object())

    def test_malformed_events(self) -> None:
        """
        A client reading something that is no event gets L{ValueError}
        saying so, never another exception.
        """
        cases = [
            "not json",
            "[1, 2]",
            '"message"',
            '{"type": "message"}',
            '{"type": "dance"}',
            '{"type": "who", "room": "#a", "names": 5}',
            '{"type": "rooms", "rooms": ["#a"]}',
            '{"type": "history", "target": "#a", "messages": [[1]]}',
            '{"type": "history", "target": "#a", "messages": ["x"]}',
            '{"type": "history", "target": "#a", "messages": [{"type": "notice",'
            ' "text": "not a message"}]}',
            "[" * 100_000,
        ]
        for line in cases:
            self.assertRaises(ValueError, jsonwire.parse_event, line)

    @given(names, any_text, rooms, times)
    def test_message_round_trip(
        self, sender: str, text: str, room: str, time: float | None
    ) -> None:
        """A chat line of any text comes back as itself through a JSON line."""
        for make in (wire.Message, wire.Action):
            event = make(sender, text, room, time)
            line = jsonwire.encode(event).decode("utf-8")
            self.assertEqual(line.count("\n"), 1)
            self.assertEqual(jsonwire.parse_event(line[:-1]), event)

    @given(names, names, any_text, times)
    def test_private_round_trip(
        self, sender: str, recipient: str, text: str, time: float | None
    ) -> None:
        """A private line of any text comes back as itself."""
        event = wire.PrivateMessage(sender, recipient, text, time)
        line = jsonwire.encode(event).decode("utf-8")
        self.assertEqual(line.count("\n"), 1)
        self.assertEqual(jsonwire.parse_event(line[:-1]), event)


#: Each command with the JSON object a client sends for it.
COMMANDS: list[tuple[jsonwire.JSONObject, wire.Command]] = [
    ({"type": "say", "text": "hello"}, wire.Say("hello")),
    ({"type": "say", "text": "hi", "room": "#dev"}, wire.Say("hi", "#dev")),
    ({"type": "me", "text": "waves"}, wire.Me("waves")),
    ({"type": "nick", "name": "alice"}, wire.Nick("alice")),
    ({"type": "msg", "to": "bob", "text": "psst"}, wire.Private("bob", "psst")),
    ({"type": "join", "room": "#dev"}, wire.Join("#dev")),
    ({"type": "part"}, wire.Part()),
    ({"type": "part", "room": "#dev"}, wire.Part("#dev")),
    ({"type": "rooms"}, wire.Rooms()),
    ({"type": "who"}, wire.Who()),
    ({"type": "who", "room": "#dev"}, wire.Who("#dev")),
    ({"type": "topic"}, wire.Topic()),
    ({"type": "topic", "text": "ship it"}, wire.Topic("ship it")),
    ({"type": "history"}, wire.HistoryRequest()),
    ({"type": "history", "count": 20}, wire.HistoryRequest(None, 20)),
    (
        {"type": "history", "target": "#dev", "count": 500},
        wire.HistoryRequest("#dev", 500),
    ),
    ({"type": "history", "target": "bob"}, wire.HistoryRequest("bob")),
    ({"type": "format", "format": "json"}, wire.Format("json")),
    ({"type": "format", "format": "text"}, wire.Format("text")),
    ({"type": "whoami"}, wire.WhoAmI()),
    ({"type": "kick", "name": "bob"}, wire.Kick("bob")),
    ({"type": "kick", "name": "bob", "reason": "spam"}, wire.Kick("bob", "spam")),
    ({"type": "ban", "name": "bob"}, wire.Ban("bob")),
    ({"type": "unban", "target": "10.0.0.1"}, wire.Unban("10.0.0.1")),
    ({"type": "motd"}, wire.Motd()),
    ({"type": "motd", "text": "welcome"}, wire.Motd("welcome")),
    ({"type": "motd", "text": ""}, wire.Motd("")),
    ({"type": "reload"}, wire.Reload()),
    ({"type": "ping"}, wire.Ping()),
    ({"type": "help"}, wire.Help()),
    ({"type": "quit"}, wire.Quit("")),
    ({"type": "quit", "message": "bye"}, wire.Quit("bye")),
]


class CommandTests(SynchronousTestCase):
    """
    L{jsonwire.parse_command} reads a client's JSON line as a command, and
    L{jsonwire.command_to_json} writes one.
    """

    def test_every_command(self) -> None:
        """Each command type is read from its JSON object."""
        for data, command in COMMANDS:
            self.assertEqual(jsonwire.parse_command(json.dumps(data)), command, data)
        kinds = {type(command) for _, command in COMMANDS} | {wire.Invalid}
        self.assertEqual(kinds, set(wire.Command.__args__), "a command is untested")

    def test_command_to_json(self) -> None:
        """
        What a client sends for a command is its JSON object, which the
        server reads back as the same command.
        """
        for data, command in COMMANDS:
            self.assertEqual(jsonwire.command_to_json(command), data)
            line = json.dumps(jsonwire.command_to_json(command))
            self.assertEqual(jsonwire.parse_command(line), command)

    def test_invalid_is_not_sent(self) -> None:
        """There is no JSON for a line that was not understood."""
        self.assertRaises(TypeError, jsonwire.command_to_json, wire.Invalid("x"))

    def test_extra_fields_ignored(self) -> None:
        """Fields a command does not use are ignored."""
        self.assertEqual(
            jsonwire.parse_command('{"type": "ping", "id": 7}'), wire.Ping()
        )

    def test_nothing_to_send(self) -> None:
        """A blank line, or a say with only blanks, sends nothing."""
        for line in ["", "   ", '{"type": "say", "text": "  "}']:
            self.assertIsNone(jsonwire.parse_command(line), line)

    def test_not_json(self) -> None:
        """A line that is not JSON is invalid, and says why."""
        for line in ["hello", "/join #dev", '{"type": "say"', "{'type': 'say'}"]:
            command = jsonwire.parse_command(line)
            assert isinstance(command, wire.Invalid), line
            self.assertTrue(command.problem.startswith("invalid JSON: "), command)

    def test_too_deeply_nested(self) -> None:
        """
        JSON nested deeper than the decoder's stack is invalid like any other
        bad JSON, not an exception that would drop the connection.
        """
        for line in ["[" * 4000, '{"a":' * 4000]:
            command = jsonwire.parse_command(line)
            assert isinstance(command, wire.Invalid)
            self.assertTrue(command.problem.startswith("invalid JSON: "), command)

    def test_not_an_object(self) -> None:
        """A JSON value that is not an object is not a command."""
        for line in ["[1, 2]", '"say"', "42", "null", "true"]:
            self.assertEqual(
                jsonwire.parse_command(line),
                wire.Invalid("a command must be a JSON object with a 'type'"),
                line,
            )

    def test_unknown_type(self) -> None:
        """An object of no known type is invalid, naming the type (made safe)."""
        cases = {
            '{"type": "dance"}': "unknown command type 'dance'",
            '{"type": 5}': "unknown command type '5'",
            '{"type": "SAY", "text": "hi"}': "unknown command type 'SAY'",
            '{"type": "\\u001b[2J"}': "unknown command type '^[[2J'",
            '{"type": "' + "x" * 100 + '"}': f"unknown command type '{'x' * 24}'",
        }
        for line, problem in cases.items():
            self.assertEqual(jsonwire.parse_command(line), wire.Invalid(problem))
        missing = jsonwire.parse_command('{"text": "hi"}')
        assert isinstance(missing, wire.Invalid)
        self.assertIn("unknown command type", missing.problem)

    def test_wrong_fields(self) -> None:
        """A missing field or one of the wrong type is named."""
        cases = {
            '{"type": "say"}': "say: field 'text' must be a string",
            '{"type": "say", "text": 5}': "say: field 'text' must be a string",
            '{"type": "say", "text": ["hi"]}': "say: field 'text' must be a string",
            '{"type": "say", "text": "hi", "room": 5}': (
                "say: field 'room' must be a string"
            ),
            '{"type": "me", "text": null}': "me: field 'text' must be a string",
            '{"type": "nick", "name": {}}': "nick: field 'name' must be a string",
            '{"type": "msg", "to": "bob"}': "msg: field 'text' must be a string",
            '{"type": "msg", "text": "hi"}': "msg: field 'to' must be a string",
            '{"type": "join"}': "join: field 'room' must be a string",
            '{"type": "part", "room": false}': "part: field 'room' must be a string",
            '{"type": "who", "room": 1}': "who: field 'room' must be a string",
            '{"type": "topic", "text": 1}': "topic: field 'text' must be a string",
            '{"type": "history", "target": 3}': (
                "history: field 'target' must be a string"
            ),
            '{"type": "format"}': "format: field 'format' must be a string",
            '{"type": "format", "format": "xml"}': (
                "format: field 'format' must be 'json' or 'text'"
            ),
            '{"type": "quit", "message": 1}': "quit: field 'message' must be a string",
        }
        for line, problem in cases.items():
            self.assertEqual(jsonwire.parse_command(line), wire.Invalid(problem), line)

    def test_count_out_of_range(self) -> None:
        """A history count must be a whole number from 1 to 500."""
        problem = "history: field 'count' must be a whole number from 1 to 500"
        for count in ["0", "-1", "501", "1e9", "2.0", "true", '"5"', "[5]"]:
            line = f'{{"type": "history", "count": {count}}}'
            self.assertEqual(jsonwire.parse_command(line), wire.Invalid(problem), line)
        self.assertEqual(
            jsonwire.parse_command('{"type": "history", "count": 1}'),
            wire.HistoryRequest(None, 1),
        )

    def test_lone_surrogates(self) -> None:
        """
        JSON escapes can spell lone surrogates, which are not text and could
        never be sent on as UTF-8: any field holding one is invalid.  A
        proper surrogate pair is just a character.
        """
        cases = {
            '{"type": "say", "text": "a\\ud800b"}': "say",
            '{"type": "topic", "text": "\\udfff"}': "topic",
            '{"type": "quit", "message": "\\ud83d"}': "quit",
            '{"type": "msg", "to": "bob", "text": "\\udc00"}': "msg",
            '{"type": "join", "room": "#\\ud800"}': "join",
        }
        for line, kind in cases.items():
            command = jsonwire.parse_command(line)
            assert isinstance(command, wire.Invalid), line
            self.assertIn(f"{kind}: field", command.problem)
            self.assertIn("lone surrogate", command.problem)
            # The problem itself can be sent back.
            wire.encode(wire.Error(command.problem))
        self.assertEqual(
            jsonwire.parse_command('{"type": "say", "text": "\\ud83d\\ude00"}'),
            wire.Say("\U0001f600"),
        )

    @given(any_text.filter(str.strip), st.none() | rooms)
    def test_say_round_trip(self, text: str, room: str | None) -> None:
        """Chat text of any kind is sent and read back as it was."""
        command = wire.Say(text, room)
        line = json.dumps(jsonwire.command_to_json(command), ensure_ascii=False)
        self.assertNotIn("\n", line)
        self.assertEqual(jsonwire.parse_command(line), command)

    @given(names, any_text)
    def test_private_round_trip(self, recipient: str, text: str) -> None:
        """A private line of any text is sent and read back as it was."""
        command = wire.Private(recipient, text)
        line = json.dumps(jsonwire.command_to_json(command))
        self.assertEqual(jsonwire.parse_command(line), command)
