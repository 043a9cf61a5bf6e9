"""
Tests for L{securemsg.protocol.wire}: parsing client lines, formatting server lines,
names and sanitising.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from securemsg.protocol import wire

names = st.from_regex(wire.NAME_PATTERN, fullmatch=True)
free_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"),
)

#: Format characters a terminal must never get as they are, written out
#: here rather than taken from L{wire}, so that dropping one there fails:
#: the Arabic letter mark, the left-to-right and right-to-left marks, the
#: bidi embeddings and overrides (U+202A-U+202E), the bidi isolates
#: (U+2066-U+2069), and the line and paragraph separators, which some
#: terminals take for newlines.
INVISIBLE_DANGER = (
    "\u061c\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e"
    "\u2066\u2067\u2068\u2069"
    "\u2028\u2029"
)

#: Free text in which those characters, and C0/C1 controls, are common
#: (random code points would almost never hit one).  A list joined, since
#: C{st.text} over such a C{one_of} was seen never to draw from the
#: C{sampled_from}.
dangerous_text = st.lists(
    st.one_of(
        st.sampled_from(
            INVISIBLE_DANGER
            + "".join(map(chr, range(0x20))).replace("\n", "")
            + "".join(map(chr, range(0x7F, 0xA0)))
        ),
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"),
    ),
).map("".join)


def unsafe_characters(text: str) -> list[str]:
    """
    The characters of C{text} a terminal must not get: controls (C0, DEL,
    C1) and L{INVISIBLE_DANGER}; an independent statement of what
    L{wire.sanitize} promises.
    """
    return [
        character
        for character in text
        if ord(character) < 0x20
        or 0x7F <= ord(character) <= 0x9F
        or character in INVISIBLE_DANGER
    ]


def shown_as(character: str) -> str:
    """
    How L{wire.sanitize} documents that it shows C{character}: a tab as a
    space, other C0 controls in caret notation (ESC as C{^[}), DEL as
    C{^?}, C1 controls and L{INVISIBLE_DANGER} as C{<U+XXXX>}, anything
    else as it is.
    """
    code = ord(character)
    if character == "\t":
        return " "
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    if unsafe_characters(character):
        return f"<U+{code:04X}>"
    return character


class ParseCommandTests(SynchronousTestCase):
    """
    L{wire.parse_command} turns one client line into a command.
    """

    def test_plain_text_is_said(self) -> None:
        """A line that does not start with / is chat text, kept as it is."""
        self.assertEqual(wire.parse_command("hello  there "), wire.Say("hello  there "))

    def test_blank_line_is_nothing(self) -> None:
        """An empty or all-blank line sends nothing."""
        self.assertIsNone(wire.parse_command(""))
        self.assertIsNone(wire.parse_command("   "))

    def test_double_slash_sends_a_literal_slash(self) -> None:
        """// at the start of a line sends the rest with one /."""
        self.assertEqual(wire.parse_command("//etc/passwd"), wire.Say("/etc/passwd"))

    def test_commands(self) -> None:
        """Each command parses to its own type with its arguments."""
        cases = {
            "/nick alice": wire.Nick("alice"),
            "/NICK alice": wire.Nick("alice"),
            "/who": wire.Who(),
            "/whoami": wire.WhoAmI(),
            "/ping": wire.Ping(),
            "/msg bob hi there": wire.Private("bob", "hi there"),
            "/m bob hi": wire.Private("bob", "hi"),
            "/me waves": wire.Me("waves"),
            "/help": wire.Help(),
            "/quit": wire.Quit(""),
            "/quit see you": wire.Quit("see you"),
        }
        for line, command in cases.items():
            self.assertEqual(wire.parse_command(line), command, line)

    def test_missing_arguments(self) -> None:
        """A command without what it needs is invalid, with its usage."""
        self.assertEqual(wire.parse_command("/nick"), wire.Invalid("usage: /nick NAME"))
        self.assertEqual(
            wire.parse_command("/nick two words"), wire.Invalid("usage: /nick NAME")
        )
        self.assertEqual(
            wire.parse_command("/msg bob"), wire.Invalid("usage: /msg NAME TEXT")
        )
        self.assertEqual(wire.parse_command("/me"), wire.Invalid("usage: /me TEXT"))

    def test_history_count_bounds(self) -> None:
        """
        /history takes 1 to MAX_HISTORY_REQUEST (500) messages; 0 or 501 is
        refused with the range, with or without a target.
        """
        self.assertEqual(wire.MAX_HISTORY_REQUEST, 500)
        self.assertEqual(
            wire.parse_command("/history 500"), wire.HistoryRequest(None, 500)
        )
        self.assertEqual(
            wire.parse_command("/history #dev 1"), wire.HistoryRequest("#dev", 1)
        )
        refused = wire.Invalid("/history takes 1 to 500 messages")
        for line in ["/history 501", "/history #dev 501", "/history 0"]:
            self.assertEqual(wire.parse_command(line), refused, line)

    def test_unknown_command_is_named(self) -> None:
        """An unknown command gets an error that names it."""
        self.assertEqual(
            wire.parse_command("/frobnicate now"),
            wire.Invalid("unknown command /frobnicate; type /help for the list"),
        )

    def test_unknown_command_name_is_sanitised(self) -> None:
        """The echoed command name cannot carry control characters."""
        command = wire.parse_command("/\x1b[2Jx")
        assert isinstance(command, wire.Invalid)
        self.assertNotIn("\x1b", command.problem)
        self.assertIn("^[", command.problem)


class NameTests(SynchronousTestCase):
    """
    Name rules: ASCII, a letter first, 24 characters at most.
    """

    def test_valid(self) -> None:
        """Ordinary names are accepted."""
        for name in ["a", "alice", "Bob_2", "x-y", "a" * 24]:
            self.assertIsNone(wire.name_problem(name), name)

    def test_invalid(self) -> None:
        """Names that could confuse a reader or the wire are refused."""
        for name in ["", "a" * 25, "1abc", "_x", "al ice", "[x]", "é", "a>b", "bob]"]:
            self.assertIsNotNone(wire.name_problem(name), name)

    def test_key_ignores_case(self) -> None:
        """Two names that differ only in case have the same key."""
        self.assertEqual(wire.name_key("Alice"), wire.name_key("aLICE"))


class SanitizeTests(SynchronousTestCase):
    """
    L{wire.sanitize} keeps text readable and makes control characters
    visible.
    """

    def test_printable_unchanged(self) -> None:
        """Ordinary text, including non-ASCII, passes unchanged."""
        text = "héllo wörld ✓ 日本語 [brackets] * stars"
        self.assertEqual(wire.sanitize(text), text)

    def test_controls_made_visible(self) -> None:
        """ESC, CR, NUL, backspace and DEL show in caret notation."""
        self.assertEqual(
            wire.sanitize("a\x1b[31mred\rb\x00c\x08d\x7f"), "a^[[31mred^Mb^@c^Hd^?"
        )

    def test_c1_and_bidi_made_visible(self) -> None:
        """C1 controls and bidi overrides show as code points."""
        self.assertEqual(wire.sanitize("x\u202eevil\x9b"), "x<U+202E>evil<U+009B>")

    def test_tab_becomes_space(self) -> None:
        """A tab is shown as a space."""
        self.assertEqual(wire.sanitize("a\tb"), "a b")

    def test_invisible_made_visible(self) -> None:
        """
        Each bidi mark, embedding, override and isolate, and the line and
        paragraph separators, shows as its code point.
        """
        self.assertEqual(len(INVISIBLE_DANGER), 14)
        for character in INVISIBLE_DANGER:
            expected = f"a<U+{ord(character):04X}>b"
            self.assertEqual(wire.sanitize(f"a{character}b"), expected, expected)

    @given(dangerous_text)
    def test_never_leaves_a_control(self, text: str) -> None:
        """
        Whatever goes in, no control, bidi or separator character comes out,
        each is shown as documented, and everything else stays as it was.
        """
        cleaned = wire.sanitize(text)
        self.assertEqual(unsafe_characters(cleaned), [], repr(cleaned))
        self.assertEqual(cleaned, "".join(map(shown_as, text)))


class EventTests(SynchronousTestCase):
    """
    Server lines: each kind formats in its own way and parses back.
    """

    def test_formats(self) -> None:
        """Each event kind has its documented line form."""
        self.assertEqual(wire.Message("alice", "hi").format(), "[alice] hi")
        self.assertEqual(wire.Action("alice", "waves").format(), "* alice waves")
        self.assertEqual(
            wire.PrivateMessage("alice", "bob", "psst").format(), "[alice -> bob] psst"
        )
        self.assertEqual(wire.Notice("bob joined").format(), "*** bob joined")
        self.assertEqual(wire.Error("no").format(), "!!! no")
        self.assertEqual(wire.encode(wire.Message("a", "é")), "[a] é\n".encode())

    def test_notices(self) -> None:
        """Join, leave, rename and who notices read naturally."""
        self.assertEqual(wire.Joined("bob", "#lobby").format(), "*** bob joined")
        self.assertEqual(wire.Joined("bob", "#dev").format(), "*** bob joined #dev")
        self.assertEqual(wire.Parted("bob", "#dev").format(), "*** bob left #dev")
        self.assertEqual(wire.Departed("bob").format(), "*** bob left")
        self.assertEqual(wire.Departed("bob", "bye").format(), "*** bob left (bye)")
        self.assertEqual(
            wire.Renamed("guest-1", "bob").format(),
            "*** guest-1 is now known as bob",
        )
        self.assertEqual(
            wire.Renamed("guest-1", "bob", you=True).format(), "*** you are now bob"
        )
        self.assertEqual(wire.Identity("bob").format(), "*** you are bob")
        self.assertEqual(
            wire.WhoList("#lobby", ("a", "b")).format(), "*** 2 here: a, b"
        )
        self.assertEqual(wire.WhoList("#dev", ("a",)).format(), "*** 1 in #dev: a")
        self.assertEqual(
            wire.RoomList(
                (wire.RoomInfo("#lobby", 3), wire.RoomInfo("#dev", 1, "x"))
            ).format(),
            "*** rooms: #lobby (3), #dev (1)",
        )
        self.assertEqual(
            wire.TopicInfo("#dev", "ship it", "alice").format(),
            "*** topic of #dev: ship it (set by alice)",
        )
        self.assertEqual(wire.TopicInfo("#dev", "").format(), "*** #dev has no topic")

    def test_rooms_in_lines(self) -> None:
        """Lines from the default room carry no room; others name theirs."""
        self.assertEqual(wire.Message("a", "hi", "#lobby").format(), "[a] hi")
        self.assertEqual(wire.Message("a", "hi", "#dev").format(), "#dev [a] hi")
        self.assertEqual(wire.Action("a", "waves", "#dev").format(), "#dev * a waves")
        self.assertEqual(
            wire.Message("a", "hi", "#dev").format(default_room="#dev"), "[a] hi"
        )

    def test_history_lines(self) -> None:
        """
        Past messages are marked with their time (UTC) between a header and
        a footer, so they cannot pass for live ones.
        """
        history = wire.PastMessages(
            "#dev",
            (
                wire.Message("a", "hi", "#dev", 1764248722.0, True),
                wire.Action("b", "waves", "#dev", 1764248782.5, True),
            ),
        )
        self.assertEqual(
            history.format().split("\n"),
            [
                "*** history of #dev: 2 message(s)",
                "~ 2025-11-27T13:05:22Z #dev [a] hi",
                "~ 2025-11-27T13:06:22Z #dev * b waves",
                "*** end of history of #dev",
            ],
        )
        self.assertEqual(
            wire.PastMessages("#dev", ()).format(), "*** no history for #dev"
        )

    def test_cut_short_replies(self) -> None:
        """Replies cut short to stay bounded say how much they left out."""
        self.assertEqual(
            wire.WhoList("#lobby", ("a", "b"), more=3).format(),
            "*** 5 here: a, b, ... and 3 more",
        )
        self.assertEqual(
            wire.RoomList((wire.RoomInfo("#lobby", 3),), more=2).format(),
            "*** rooms: #lobby (3), ... and 2 more",
        )
        message = wire.Message("a", "hi", "#dev", 1764248722.0, True)
        self.assertEqual(
            wire.PastMessages("#dev", (message,), more=4).format().split("\n"),
            [
                "*** history of #dev: 1 message(s)"
                " (4 older not shown: too long for one reply)",
                "~ 2025-11-27T13:05:22Z #dev [a] hi",
                "*** end of history of #dev",
            ],
        )

    def test_parse_history_and_room_lines(self) -> None:
        """The client parser reads rooms and history marks back."""
        self.assertEqual(
            wire.parse_event("~ 2025-11-27T13:05:22Z #dev [a] hi"),
            wire.Message("a", "hi", "#dev", 1764248722.0, True),
        )
        self.assertEqual(
            wire.parse_event("#dev * a waves"), wire.Action("a", "waves", "#dev")
        )
        self.assertEqual(
            wire.parse_event("~ 2025-11-27T13:05:22Z [a -> b] x"),
            wire.PrivateMessage("a", "b", "x", 1764248722.0, True),
        )

    def test_room_names(self) -> None:
        """Room names are '#' and a name."""
        self.assertIsNone(wire.room_problem("#dev-ops_2"))
        for bad in ["dev", "#", "#9", "#a b", "##x", "#" + "a" * 25]:
            self.assertIsNotNone(wire.room_problem(bad), bad)

    def test_room_commands(self) -> None:
        """The room and history commands parse with their arguments."""
        cases = {
            "/join #dev": wire.Join("#dev"),
            "/part": wire.Part(),
            "/part #dev": wire.Part("#dev"),
            "/say #dev hi there": wire.Say("hi there", "#dev"),
            "/rooms": wire.Rooms(),
            "/who #dev": wire.Who("#dev"),
            "/topic": wire.Topic(),
            "/topic ship it": wire.Topic("ship it"),
            "/history": wire.HistoryRequest(),
            "/history 20": wire.HistoryRequest(None, 20),
            "/history #dev 20": wire.HistoryRequest("#dev", 20),
            "/history bob": wire.HistoryRequest("bob"),
            "/format JSON": wire.Format("json"),
            "/history 0": wire.Invalid("/history takes 1 to 500 messages"),
            "/history a b": wire.Invalid("usage: /history [#ROOM|NAME] [N]"),
            "/say #dev": wire.Invalid("usage: /say #ROOM TEXT"),
            "/format xml": wire.Invalid("usage: /format json|text"),
        }
        for line, command in cases.items():
            self.assertEqual(wire.parse_command(line), command, line)

    def test_help_lists_every_command(self) -> None:
        """/help names every command the parser knows."""
        text = "\n".join(line.format() for line in wire.help_lines())
        for verb in [
            "/nick",
            "/whoami",
            "/msg",
            "/me",
            "/ping",
            "/help",
            "/quit",
            "//",
        ]:
            self.assertIn(verb, text)

    @given(names, free_text)
    def test_message_round_trip(self, sender: str, text: str) -> None:
        """A chat line parses back to the same event."""
        event = wire.Message(sender, text)
        self.assertEqual(wire.parse_event(event.format()), event)

    @given(names, names, free_text)
    def test_private_round_trip(self, sender: str, recipient: str, text: str) -> None:
        """A private line parses back to the same event."""
        event = wire.PrivateMessage(sender, recipient, text)
        self.assertEqual(wire.parse_event(event.format()), event)

    @given(names, free_text)
    def test_action_round_trip(self, sender: str, text: str) -> None:
        """An action parses back to the same event."""
        event = wire.Action(sender, text)
        self.assertEqual(wire.parse_event(event.format()), event)

    @given(free_text)
    def test_notice_and_error_round_trip(self, text: str) -> None:
        """Notices and errors parse back, whatever their text."""
        for event in (wire.Notice(text), wire.Error(text)):
            self.assertEqual(wire.parse_event(event.format()), event)

    def test_unknown_line_is_a_notice(self) -> None:
        """A line of no known kind is kept as a notice."""
        self.assertEqual(wire.parse_event("hello"), wire.Notice("hello"))
