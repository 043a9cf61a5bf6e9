# -*- test-case-name: tests.test_wire -*-
"""
The securemsg text wire protocol, with no I/O.

Clients send UTF-8 lines; a line is either chat text or a C{/command}.
The server sends UTF-8 lines whose first characters say what kind of line
each is (see C{docs/PROTOCOL.md})::

    [alice] hello              a chat line from alice
    * alice waves              an action (/me) from alice
    [alice -> bob] psst        a private line from alice to bob
    *** bob joined             a notice from the server
    !!! unknown command /foo   an error, in reply to something you sent

Everything that turns a line into a command, or an event into a line, lives
here, so that the server's formatter and the client's parser agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

#: Names are ASCII so that two different-looking names can never be the
#: same person to a reader (no homoglyphs), and so that they never contain
#: the characters that delimit a name on the wire (space, "]", ">").
NAME_PATTERN: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,23}")
MAX_NAME_LENGTH: Final = 24

NAME_RULES: Final = (
    "names are 1 to 24 characters: a letter, then letters, digits, '_' or '-'"
)

#: Server line prefixes, one per kind of line.
NOTICE_PREFIX: Final = "*** "
ERROR_PREFIX: Final = "!!! "
ACTION_PREFIX: Final = "* "


# ---------------------------------------------------------------------------
# Names


def name_key(name: str) -> str:
    """
    The key under which a name is unique: names differ only if they differ
    ignoring case.
    """
    return name.casefold()


def name_problem(name: str) -> str | None:
    """
    Say what is wrong with a proposed name, or return L{None} if it is valid.
    """
    if not name:
        return "a name cannot be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"that name is too long; {NAME_RULES}"
    if NAME_PATTERN.fullmatch(name) is None:
        return f"that name is not allowed; {NAME_RULES}"
    return None


# ---------------------------------------------------------------------------
# Making untrusted text safe to show on a terminal

#: Format characters that reorder or hide text (bidi overrides and
#: isolates, which can make a line read differently than it is), and line
#: and paragraph separators, which some terminals treat as newlines.
_INVISIBLE_DANGER: Final = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2066\u2067\u2068\u2069\u2028\u2029"
)


def _visible(character: str) -> str:
    code = ord(character)
    if code < 0x20:
        # Caret notation, as terminals show control keys: ESC is ^[.
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    return f"<U+{code:04X}>"


# C0 controls, DEL and C1 controls (Unicode category Cc), plus the above.
_NEEDS_CLEANING: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f" + "".join(sorted(_INVISIBLE_DANGER)) + "]"
)


def sanitize(text: str) -> str:
    """
    Make text safe to relay to other people's terminals.

    Control characters (ANSI escapes, carriage returns, NUL, backspace,
    C1 controls) and invisible characters that reorder or break a line
    (bidi overrides, line separators) are made visible instead of being
    interpreted: ESC becomes C{^[}, U+202E becomes C{<U+202E>}.  A tab becomes
    a space.  Everything else, including all printable Unicode, is kept.
    """
    if _NEEDS_CLEANING.search(text) is None:
        return text
    return _NEEDS_CLEANING.sub(
        lambda match: " " if match.group() == "\t" else _visible(match.group()),
        text,
    )


# ---------------------------------------------------------------------------
# Client to server: commands


@dataclass(frozen=True, slots=True)
class Say:
    """Plain chat text for everyone else."""

    text: str


@dataclass(frozen=True, slots=True)
class Me:
    """An action, shown as C{* name text}."""

    text: str


@dataclass(frozen=True, slots=True)
class Nick:
    """Ask for a new name."""

    name: str


@dataclass(frozen=True, slots=True)
class Private:
    """A private line to one user."""

    recipient: str
    text: str


@dataclass(frozen=True, slots=True)
class Who:
    """List who is connected."""


@dataclass(frozen=True, slots=True)
class WhoAmI:
    """Ask for one's own name; the server answers C{*** you are NAME}."""


@dataclass(frozen=True, slots=True)
class Ping:
    """Check the connection; the server answers C{*** pong}."""


@dataclass(frozen=True, slots=True)
class Help:
    """Ask for the list of commands."""


@dataclass(frozen=True, slots=True)
class Quit:
    """Leave, with an optional parting message."""

    reason: str


@dataclass(frozen=True, slots=True)
class Invalid:
    """A line that could not be understood; C{problem} says why."""

    problem: str


Command = Say | Me | Nick | Private | Who | WhoAmI | Ping | Help | Quit | Invalid

#: Each command with its arguments and what it does, for /help.
COMMANDS: Final = (
    ("/nick NAME", "change your name"),
    ("/who", "list who is here"),
    ("/whoami", "show your own name"),
    ("/msg NAME TEXT", "send TEXT to NAME only"),
    ("/me TEXT", "act: others see * yourname TEXT"),
    ("/ping", "check the connection (the server answers pong)"),
    ("/help", "show this list"),
    ("/quit [MESSAGE]", "leave"),
    ("//TEXT", "send a line that starts with /"),
)


def parse_command(line: str) -> Command | None:
    """
    Turn one decoded client line (without its line ending) into a command.

    @return: the command, or L{None} for a line with nothing to send.
    """
    if not line.startswith("/"):
        return Say(line) if line.strip() else None
    if line.startswith("//"):
        return Say(line[1:])
    verb, _, rest = line[1:].partition(" ")
    verb = verb.lower()
    rest = rest.strip()
    if verb == "me":
        return Me(rest) if rest else Invalid("usage: /me TEXT")
    if verb == "nick":
        if not rest or " " in rest:
            return Invalid("usage: /nick NAME")
        return Nick(rest)
    if verb in ("msg", "m"):
        recipient, _, text = rest.partition(" ")
        text = text.strip()
        if not recipient or not text:
            return Invalid("usage: /msg NAME TEXT")
        return Private(recipient, text)
    if verb == "who":
        return Who()
    if verb == "whoami":
        return WhoAmI()
    if verb == "ping":
        return Ping()
    if verb == "help":
        return Help()
    if verb == "quit":
        return Quit(rest)
    shown = sanitize(verb)[:MAX_NAME_LENGTH] or ""
    return Invalid(f"unknown command /{shown}; type /help for the list")


# ---------------------------------------------------------------------------
# Server to client: events


@dataclass(frozen=True, slots=True)
class Message:
    """A chat line from C{sender} to everyone else."""

    sender: str
    text: str

    def format(self) -> str:
        return f"[{self.sender}] {self.text}"


@dataclass(frozen=True, slots=True)
class Action:
    """An action (/me) by C{sender}."""

    sender: str
    text: str

    def format(self) -> str:
        return f"{ACTION_PREFIX}{self.sender} {self.text}"


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """
    A private line.  The recipient sees it, and the sender gets the same line
    back as confirmation that it was delivered.
    """

    sender: str
    recipient: str
    text: str

    def format(self) -> str:
        return f"[{self.sender} -> {self.recipient}] {self.text}"


@dataclass(frozen=True, slots=True)
class Notice:
    """Information from the server."""

    text: str

    def format(self) -> str:
        return NOTICE_PREFIX + self.text


@dataclass(frozen=True, slots=True)
class Error:
    """An error in reply to something the client sent."""

    text: str

    def format(self) -> str:
        return ERROR_PREFIX + self.text


Event = Message | Action | PrivateMessage | Notice | Error


def joined(name: str) -> Notice:
    """The notice others see when C{name} arrives."""
    return Notice(f"{name} joined")


def left(name: str, reason: str = "") -> Notice:
    """The notice others see when C{name} leaves."""
    return Notice(f"{name} left ({reason})" if reason else f"{name} left")


def renamed(old: str, new: str) -> Notice:
    """The notice everyone sees when C{old} becomes C{new}."""
    return Notice(f"{old} is now known as {new}")


def you_are(name: str) -> Notice:
    """Tells a client its own name after a successful /nick."""
    return Notice(f"you are now {name}")


def you_are_called(name: str) -> Notice:
    """The reply to /whoami."""
    return Notice(f"you are {name}")


def who_list(names: list[str]) -> Notice:
    """The reply to /who."""
    return Notice(f"{len(names)} here: {', '.join(names)}")


def help_lines() -> list[Notice]:
    """The reply to /help, one notice per command."""
    width = max(len(usage) for usage, _ in COMMANDS)
    return [Notice("commands:")] + [
        Notice(f"  {usage.ljust(width)}  {what}") for usage, what in COMMANDS
    ]


def encode(event: Event) -> bytes:
    """The bytes of one server line, with its line ending."""
    return event.format().encode("utf-8") + b"\n"


_PRIVATE_LINE: Final = re.compile(
    r"\[(?P<sender>[A-Za-z][A-Za-z0-9_-]*) -> (?P<recipient>[A-Za-z][A-Za-z0-9_-]*)\] "
    r"(?P<text>.*)",
    re.DOTALL,
)
_MESSAGE_LINE: Final = re.compile(
    r"\[(?P<sender>[A-Za-z][A-Za-z0-9_-]*)\] (?P<text>.*)", re.DOTALL
)
_ACTION_LINE: Final = re.compile(
    r"\* (?P<sender>[A-Za-z][A-Za-z0-9_-]*) (?P<text>.*)", re.DOTALL
)


def parse_event(line: str) -> Event:
    """
    Turn one server line (without its line ending) back into an event.

    This is the inverse of C{format} for every event kind; a line that fits
    no kind is returned as a L{Notice} so that nothing is lost.
    """
    if line.startswith(NOTICE_PREFIX):
        return Notice(line[len(NOTICE_PREFIX) :])
    if line.startswith(ERROR_PREFIX):
        return Error(line[len(ERROR_PREFIX) :])
    if match := _PRIVATE_LINE.fullmatch(line):
        return PrivateMessage(
            match.group("sender"), match.group("recipient"), match.group("text")
        )
    if match := _MESSAGE_LINE.fullmatch(line):
        return Message(match.group("sender"), match.group("text"))
    if match := _ACTION_LINE.fullmatch(line):
        return Action(match.group("sender"), match.group("text"))
    return Notice(line)
