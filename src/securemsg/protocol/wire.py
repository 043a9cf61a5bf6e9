# -*- test-case-name: tests.test_wire -*-
"""
The securemsg text wire protocol, with no I/O.

Clients send UTF-8 lines; a line is either chat text or a C{/command}.
The server sends UTF-8 lines whose first characters say what kind of line
each is (see C{docs/PROTOCOL.md})::

    [alice] hello              a chat line from alice in the default room
    #dev [alice] hello         the same in room #dev
    * alice waves              an action (/me) from alice
    [alice -> bob] psst        a private line from alice to bob
    *** bob joined             a notice from the server
    !!! unknown command /foo   an error, in reply to something you sent
    ~ 2026-11-27T13:05:22Z [alice] hello    a message from the history

Everything that turns a line into a command, or an event into a line, lives
here, so that the server's formatter and the client's parser agree; the
JSON form of both is in L{securemsg.protocol.jsonwire}.
"""

from __future__ import annotations

import calendar
import re
import time as _time
from dataclasses import dataclass, replace
from typing import Final

#: Names are ASCII so that two different-looking names can never be the
#: same person to a reader (no homoglyphs), and so that they never contain
#: the characters that delimit a name on the wire (space, "]", ">").
NAME_PATTERN: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,23}")
MAX_NAME_LENGTH: Final = 24

NAME_RULES: Final = (
    "names are 1 to 24 characters: a letter, then letters, digits, '_' or '-'"
)

#: Room names: C{#} and a name.
ROOM_PATTERN: Final = re.compile(r"#[A-Za-z][A-Za-z0-9_-]{0,23}")
ROOM_RULES: Final = "room names are '#' and a name: " + NAME_RULES

#: The room everyone starts in, unless the server says otherwise.
DEFAULT_ROOM: Final = "#lobby"
#: The TCP port a server listens on, and a client connects to, by default.
DEFAULT_PORT: Final = 50000

#: Server line prefixes, one per kind of line.
NOTICE_PREFIX: Final = "*** "
ERROR_PREFIX: Final = "!!! "
ACTION_PREFIX: Final = "* "
HISTORY_PREFIX: Final = "~ "


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


def room_problem(room: str) -> str | None:
    """Say what is wrong with a room name, or return L{None} if it is valid."""
    if ROOM_PATTERN.fullmatch(room) is None:
        shown = sanitize(room)[: MAX_NAME_LENGTH + 1]
        return f"{shown} is not a room name; {ROOM_RULES}"
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
    """Chat text for the current room, or for C{room} if given (/say)."""

    text: str
    room: str | None = None


@dataclass(frozen=True, slots=True)
class Me:
    """An action in the current room, shown as C{* name text}."""

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
class Join:
    """Join a room (creating it if new) and make it the current one."""

    room: str


@dataclass(frozen=True, slots=True)
class Part:
    """Leave a room, or the current one."""

    room: str | None = None


@dataclass(frozen=True, slots=True)
class Rooms:
    """List the rooms and how many are in each."""


@dataclass(frozen=True, slots=True)
class Who:
    """List who is in a room, or the current one."""

    room: str | None = None


@dataclass(frozen=True, slots=True)
class Topic:
    """Show the current room's topic, or set it to C{text}."""

    text: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """
    Ask for past messages of a room (or of the private conversation with a
    user), C{count} at most.
    """

    target: str | None = None
    count: int | None = None


@dataclass(frozen=True, slots=True)
class Format:
    """Switch this connection to C{text} or C{json} lines."""

    kind: str


@dataclass(frozen=True, slots=True)
class Kick:
    """(Operators) disconnect C{name}, telling everyone C{reason}."""

    name: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ban:
    """(Operators) keep C{name} out: by certificate, or by address for guests."""

    name: str


@dataclass(frozen=True, slots=True)
class Unban:
    """(Operators) lift the bans on a name, fingerprint or address."""

    target: str


@dataclass(frozen=True, slots=True)
class Motd:
    """Show the message of the day, or (operators) set it; C{""} clears it."""

    text: str | None = None


@dataclass(frozen=True, slots=True)
class Reload:
    """(Operators) reload the server's certificates."""


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


Command = (
    Say
    | Me
    | Nick
    | Private
    | Join
    | Part
    | Rooms
    | Who
    | Topic
    | HistoryRequest
    | Format
    | Kick
    | Ban
    | Unban
    | Motd
    | Reload
    | WhoAmI
    | Ping
    | Help
    | Quit
    | Invalid
)

#: The most messages one /history may ask for.
MAX_HISTORY_REQUEST: Final = 500

#: Each command with its arguments and what it does, for /help.
COMMANDS: Final = (
    ("/join #ROOM", "join a room (made if new); plain lines go there"),
    ("/part [#ROOM]", "leave a room (default: the current one)"),
    ("/say #ROOM TEXT", "send TEXT to one of your rooms"),
    ("/rooms", "list the rooms"),
    ("/who [#ROOM]", "list who is in one of your rooms"),
    ("/topic [TEXT]", "show or set the current room's topic"),
    ("/history [#ROOM|NAME] [N]", "show past messages"),
    ("/msg NAME TEXT", "send TEXT to NAME only"),
    ("/me TEXT", "act: others see * yourname TEXT"),
    ("/nick NAME", "change your name"),
    ("/whoami", "show your name and how the server knows you"),
    ("/motd", "show the message of the day"),
    ("/kick NAME [REASON]", "(operators) disconnect someone"),
    ("/ban NAME", "(operators) keep someone out (certificate or address)"),
    ("/unban NAME|FINGERPRINT|ADDRESS", "(operators) lift a ban"),
    ("/motd TEXT", "(operators) set the message of the day ('/motd -' clears)"),
    ("/reload", "(operators) reload the server's certificates"),
    ("/format json|text", "switch this connection's line format"),
    ("/ping", "check the connection (the server answers pong)"),
    ("/help", "show this list"),
    ("/quit [MESSAGE]", "leave"),
    ("//TEXT", "send a line that starts with /"),
)


def _parse_history(rest: str) -> Command:
    target: str | None = None
    count: int | None = None
    for word in rest.split():
        if word.isascii() and word.isdigit() and count is None:
            count = int(word)
        elif target is None and not word.isdigit():
            target = word
        else:
            return Invalid("usage: /history [#ROOM|NAME] [N]")
    if count is not None and not 1 <= count <= MAX_HISTORY_REQUEST:
        return Invalid(f"/history takes 1 to {MAX_HISTORY_REQUEST} messages")
    return HistoryRequest(target, count)


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
    first, _, after = rest.partition(" ")
    after = after.strip()
    match verb:
        case "me":
            return Me(rest) if rest else Invalid("usage: /me TEXT")
        case "nick":
            if not rest or " " in rest:
                return Invalid("usage: /nick NAME")
            return Nick(rest)
        case "msg" | "m":
            if not first or not after:
                return Invalid("usage: /msg NAME TEXT")
            return Private(first, after)
        case "join" | "j":
            if not rest or " " in rest:
                return Invalid("usage: /join #ROOM")
            return Join(rest)
        case "part":
            if " " in rest:
                return Invalid("usage: /part [#ROOM]")
            return Part(rest or None)
        case "say":
            if not first or not after:
                return Invalid("usage: /say #ROOM TEXT")
            return Say(after, first)
        case "rooms":
            return Rooms()
        case "who":
            if " " in rest:
                return Invalid("usage: /who [#ROOM]")
            return Who(rest or None)
        case "topic":
            return Topic(rest or None)
        case "history":
            return _parse_history(rest)
        case "format":
            if rest.lower() not in ("json", "text"):
                return Invalid("usage: /format json|text")
            return Format(rest.lower())
        case "whoami":
            return WhoAmI()
        case "kick":
            if not first or " " in first:
                return Invalid("usage: /kick NAME [REASON]")
            return Kick(first, after)
        case "ban":
            if not rest or " " in rest:
                return Invalid("usage: /ban NAME")
            return Ban(rest)
        case "unban":
            if not rest or " " in rest:
                return Invalid("usage: /unban NAME|FINGERPRINT|ADDRESS")
            return Unban(rest)
        case "motd":
            if rest == "-":
                return Motd("")
            return Motd(rest or None)
        case "reload":
            return Reload()
        case "ping":
            return Ping()
        case "help":
            return Help()
        case "quit":
            return Quit(rest)
    shown = sanitize(verb)[:MAX_NAME_LENGTH] or ""
    return Invalid(f"unknown command /{shown}; type /help for the list")


def command_to_text(command: Command) -> str:
    """The line a client sends for a command (the inverse of L{parse_command})."""
    match command:
        case Say(text, None):
            return "/" + text if text.startswith("/") else text
        case Say(text, room):
            return f"/say {room} {text}"
        case Me(text):
            return f"/me {text}"
        case Nick(name):
            return f"/nick {name}"
        case Private(recipient, text):
            return f"/msg {recipient} {text}"
        case Join(room):
            return f"/join {room}"
        case Part(room):
            return f"/part {room or ''}".rstrip()
        case Rooms():
            return "/rooms"
        case Who(room):
            return f"/who {room or ''}".rstrip()
        case Topic(text):
            return "/topic" if text is None else f"/topic {text}"
        case HistoryRequest(target, count):
            words = ["/history", target or "", "" if count is None else str(count)]
            return " ".join(word for word in words if word)
        case Format(kind):
            return f"/format {kind}"
        case WhoAmI():
            return "/whoami"
        case Kick(name, reason):
            return f"/kick {name} {reason}".rstrip()
        case Ban(name):
            return f"/ban {name}"
        case Unban(target):
            return f"/unban {target}"
        case Motd(text):
            if text is None:
                return "/motd"
            return f"/motd {text}" if text else "/motd -"
        case Reload():
            return "/reload"
        case Ping():
            return "/ping"
        case Help():
            return "/help"
        case Quit(reason):
            return f"/quit {reason}".rstrip()
    raise ValueError(f"cannot send {command!r}")


# ---------------------------------------------------------------------------
# Server to client: events
#
# Each event formats itself as text with format(default_room); in the
# default room, room names are left out so that a plain client sees the
# tutorial's "[alice] hello".


def _in_room(room: str | None, default_room: str | None) -> str:
    """The prefix that places a line in a room other than the default."""
    return "" if room is None or room == default_room else f"{room} "


def format_time(seconds: float) -> str:
    """A time as the history shows it: C{2026-11-27T13:05:22Z} (UTC)."""
    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(seconds))


def _replayed(time: float | None, line: str) -> str:
    return f"{HISTORY_PREFIX}{format_time(time or 0)} {line}"


@dataclass(frozen=True, slots=True)
class Message:
    """A chat line from C{sender} in C{room}."""

    sender: str
    text: str
    room: str | None = None
    time: float | None = None
    replayed: bool = False

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        line = f"{_in_room(self.room, default_room)}[{self.sender}] {self.text}"
        return _replayed(self.time, line) if self.replayed else line


@dataclass(frozen=True, slots=True)
class Action:
    """An action (/me) by C{sender} in C{room}."""

    sender: str
    text: str
    room: str | None = None
    time: float | None = None
    replayed: bool = False

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        where = _in_room(self.room, default_room)
        line = f"{where}{ACTION_PREFIX}{self.sender} {self.text}"
        return _replayed(self.time, line) if self.replayed else line


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """
    A private line.  The recipient sees it, and the sender gets the same line
    back as confirmation that it was delivered.
    """

    sender: str
    recipient: str
    text: str
    time: float | None = None
    replayed: bool = False

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        line = f"[{self.sender} -> {self.recipient}] {self.text}"
        return _replayed(self.time, line) if self.replayed else line


@dataclass(frozen=True, slots=True)
class Notice:
    """Information from the server."""

    text: str

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        return NOTICE_PREFIX + self.text


@dataclass(frozen=True, slots=True)
class Error:
    """An error in reply to something the client sent."""

    text: str

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        return ERROR_PREFIX + self.text


@dataclass(frozen=True, slots=True)
class Joined:
    """C{name} joined C{room}."""

    name: str
    room: str

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        where = "" if self.room == default_room else f" {self.room}"
        return f"{NOTICE_PREFIX}{self.name} joined{where}"


@dataclass(frozen=True, slots=True)
class Parted:
    """C{name} left C{room} (but is still connected)."""

    name: str
    room: str

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        return f"{NOTICE_PREFIX}{self.name} left {self.room}"


@dataclass(frozen=True, slots=True)
class Departed:
    """
    C{name} disconnected: C{reason} is the server's word for why (it dropped
    them, or the connection broke), C{message} their own C{/quit} message.

    The two look different, so that nobody's parting words can pass for
    the server's (C{/quit kicked by alice} is not a kick).
    """

    name: str
    reason: str = ""
    message: str = ""

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        why = f" ({self.reason})" if self.reason else ""
        said = f', saying "{self.message}"' if self.message else ""
        return f"{NOTICE_PREFIX}{self.name} left{why}{said}"


@dataclass(frozen=True, slots=True)
class Renamed:
    """C{old} is now called C{new}; C{you} when it is the receiver."""

    old: str
    new: str
    you: bool = False

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        if self.you:
            return f"{NOTICE_PREFIX}you are now {self.new}"
        return f"{NOTICE_PREFIX}{self.old} is now known as {self.new}"


@dataclass(frozen=True, slots=True)
class Identity:
    """
    The reply to /whoami: the name, and whether a client certificate vouches
    for it (L{None} when the server does not check client certificates).
    """

    name: str
    verified: bool | None = None
    fingerprint: str | None = None

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        if self.verified is None:
            how = ""
        elif self.verified:
            how = f" (verified by client certificate {self.fingerprint})"
        else:
            how = " (guest: no client certificate)"
        return f"{NOTICE_PREFIX}you are {self.name}{how}"


def _and_more(more: int) -> str:
    """What ends a list that was cut short (see L{Limits.list_max})."""
    return f", ... and {more} more" if more else ""


@dataclass(frozen=True, slots=True)
class WhoList:
    """
    Who is in C{room}, in order of arrival; C{more} were left out to keep
    the reply bounded.
    """

    room: str
    names: tuple[str, ...]
    more: int = 0

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        where = "here" if self.room == default_room else f"in {self.room}"
        count = len(self.names) + self.more
        listed = ", ".join(self.names) + _and_more(self.more)
        return f"{NOTICE_PREFIX}{count} {where}: {listed}"


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """
    One room in a L{RoomList}: its topic only for a room the asker is in
    (L{None} for the others).
    """

    name: str
    members: int
    topic: str | None = ""


@dataclass(frozen=True, slots=True)
class RoomList:
    """The reply to /rooms; C{more} rooms were left out to keep it bounded."""

    rooms: tuple[RoomInfo, ...]
    more: int = 0

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        listed = ", ".join(f"{room.name} ({room.members})" for room in self.rooms)
        return f"{NOTICE_PREFIX}rooms: {listed}{_and_more(self.more)}"


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """The topic of C{room}, as set by C{setter} (or none)."""

    room: str
    topic: str
    setter: str | None = None

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        if not self.topic:
            return f"{NOTICE_PREFIX}{self.room} has no topic"
        by = f" (set by {self.setter})" if self.setter else ""
        return f"{NOTICE_PREFIX}topic of {self.room}: {self.topic}{by}"


Replayable = Message | Action | PrivateMessage


@dataclass(frozen=True, slots=True)
class PastMessages:
    """
    Past messages of a room (or a private conversation), oldest first,
    each marked with its time so it cannot pass for a live one; C{more}
    older ones were left out to keep the reply bounded.
    """

    target: str
    messages: tuple[Replayable, ...]
    more: int = 0

    def format(self, default_room: str | None = DEFAULT_ROOM) -> str:
        more = f" ({self.more} older not shown: too long for one reply)"
        if not self.messages:
            return f"{NOTICE_PREFIX}no history for {self.target}" + (
                more if self.more else ""
            )
        count = len(self.messages)
        header = f"{NOTICE_PREFIX}history of {self.target}: {count} message(s)"
        lines = [header + (more if self.more else "")]
        lines += [
            replace(message, replayed=True).format(default_room)
            for message in self.messages
        ]
        lines.append(f"{NOTICE_PREFIX}end of history of {self.target}")
        return "\n".join(lines)


Event = (
    Message
    | Action
    | PrivateMessage
    | Notice
    | Error
    | Joined
    | Parted
    | Departed
    | Renamed
    | Identity
    | WhoList
    | RoomList
    | TopicInfo
    | PastMessages
)


def help_lines() -> list[Notice]:
    """The reply to /help, one notice per command."""
    width = max(len(usage) for usage, _ in COMMANDS)
    return [Notice("commands:")] + [
        Notice(f"  {usage.ljust(width)}  {what}") for usage, what in COMMANDS
    ]


def encode(event: Event, default_room: str | None = DEFAULT_ROOM) -> bytes:
    """The bytes of an event as text lines, with their line endings."""
    return event.format(default_room).encode("utf-8") + b"\n"


# ---------------------------------------------------------------------------
# Reading server lines back (for clients)

# A name as others see it: "~" marks a guest where certificates are checked.
_NAME: Final = r"~?[A-Za-z][A-Za-z0-9_-]*"
_ROOM: Final = r"(?:(?P<room>#[A-Za-z][A-Za-z0-9_-]*) )?"
_PRIVATE_LINE: Final = re.compile(
    rf"\[(?P<sender>{_NAME}) -> (?P<recipient>{_NAME})\] (?P<text>.*)", re.DOTALL
)
_MESSAGE_LINE: Final = re.compile(
    rf"{_ROOM}\[(?P<sender>{_NAME})\] (?P<text>.*)", re.DOTALL
)
_ACTION_LINE: Final = re.compile(
    rf"{_ROOM}\* (?P<sender>{_NAME}) (?P<text>.*)", re.DOTALL
)
_HISTORY_LINE: Final = re.compile(
    r"~ (?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (?P<line>.*)", re.DOTALL
)


def _parse_time(text: str) -> float:
    return float(calendar.timegm(_time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def parse_event(line: str) -> Event:
    """
    Turn one server text line (without its line ending) back into an event.

    Chat, action and private lines (live or from the history) come back as
    L{Message}, L{Action} and L{PrivateMessage}; in the default room their
    C{room} is L{None}.  Notices and errors come back as L{Notice} and
    L{Error} (the structured kinds are only told apart in JSON mode); a line
    that fits no kind is returned as a L{Notice}, so nothing is lost.
    """
    if line.startswith(NOTICE_PREFIX):
        return Notice(line[len(NOTICE_PREFIX) :])
    if line.startswith(ERROR_PREFIX):
        return Error(line[len(ERROR_PREFIX) :])
    replayed, time = False, None
    if match := _HISTORY_LINE.fullmatch(line):
        replayed, time, line = True, _parse_time(match["time"]), match["line"]
    if match := _PRIVATE_LINE.fullmatch(line):
        return PrivateMessage(
            match["sender"], match["recipient"], match["text"], time, replayed
        )
    if match := _MESSAGE_LINE.fullmatch(line):
        return Message(match["sender"], match["text"], match["room"], time, replayed)
    if match := _ACTION_LINE.fullmatch(line):
        return Action(match["sender"], match["text"], match["room"], time, replayed)
    return Notice(line)
