"""
Tests for L{securemsg.wire}: parsing client lines, formatting server lines,
names and sanitising.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from securemsg import wire

names = st.from_regex(wire.NAME_PATTERN, fullmatch=True)
free_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"),
)


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

    @given(free_text)
    def test_never_leaves_a_control(self, text: str) -> None:
        """Whatever goes in, no control or bidi character comes out."""
        cleaned = wire.sanitize(text)
        for character in cleaned:
            self.assertFalse(
                character < " " or "\x7f" <= character <= "\x9f", repr(cleaned)
            )
            self.assertNotIn(
                character, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
            )


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
        self.assertEqual(wire.joined("bob").format(), "*** bob joined")
        self.assertEqual(wire.left("bob").format(), "*** bob left")
        self.assertEqual(wire.left("bob", "bye").format(), "*** bob left (bye)")
        self.assertEqual(
            wire.renamed("guest-1", "bob").format(),
            "*** guest-1 is now known as bob",
        )
        self.assertEqual(wire.who_list(["a", "b"]).format(), "*** 2 here: a, b")

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
