# -*- test-case-name: tests.test_jsonwire -*-
"""
The JSON form of the securemsg protocol, for programs (C{/format json}).

Each line is one JSON object with a C{"type"}.  Clients send commands such
as C{{"type": "say", "text": "hello"}}; the server sends events such as
C{{"type": "message", "room": "#lobby", "from": "alice", "text": "hello",
"time": 1764248722.5}}.  C{docs/PROTOCOL.md} lists every type.  No I/O here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from securemsg.protocol import wire

JSONObject = dict[str, Any]


# ---------------------------------------------------------------------------
# Events, server to client


def _message(kind: str, event: wire.Message | wire.Action, room: str) -> JSONObject:
    return {
        "type": kind,
        "room": event.room or room,
        "from": event.sender,
        "text": event.text,
        "time": event.time,
        "history": event.replayed,
    }


def _more(more: int) -> JSONObject:
    """C{"more"}: how many entries a reply left out, present only if some."""
    return {"more": more} if more else {}


def event_to_json(
    event: wire.Event, default_room: str = wire.DEFAULT_ROOM
) -> JSONObject:
    """The JSON object for one event."""
    match event:
        case wire.Message():
            return _message("message", event, default_room)
        case wire.Action():
            return _message("action", event, default_room)
        case wire.PrivateMessage():
            return {
                "type": "private",
                "from": event.sender,
                "to": event.recipient,
                "text": event.text,
                "time": event.time,
                "history": event.replayed,
            }
        case wire.Notice():
            return {"type": "notice", "text": event.text}
        case wire.Error():
            return {"type": "error", "text": event.text}
        case wire.Joined():
            return {"type": "join", "room": event.room, "name": event.name}
        case wire.Parted():
            return {"type": "part", "room": event.room, "name": event.name}
        case wire.Departed():
            return {
                "type": "quit",
                "name": event.name,
                "reason": event.reason,
                "message": event.message,
            }
        case wire.Renamed():
            return {
                "type": "nick",
                "old": event.old,
                "new": event.new,
                "you": event.you,
            }
        case wire.Identity():
            return {
                "type": "whoami",
                "name": event.name,
                "verified": event.verified,
                "fingerprint": event.fingerprint,
            }
        case wire.WhoList():
            return {
                "type": "who",
                "room": event.room,
                "names": list(event.names),
            } | _more(event.more)
        case wire.RoomList():
            return {
                "type": "rooms",
                "rooms": [
                    {"name": r.name, "members": r.members, "topic": r.topic}
                    for r in event.rooms
                ],
            } | _more(event.more)
        case wire.TopicInfo():
            return {
                "type": "topic",
                "room": event.room,
                "topic": event.topic,
                "setter": event.setter,
            }
        case wire.PastMessages():
            return {
                "type": "history",
                "target": event.target,
                "messages": [
                    event_to_json(replace(m, replayed=True), default_room)
                    for m in event.messages
                ],
            } | _more(event.more)
    raise TypeError(f"no JSON form for {event!r}")


def encode(event: wire.Event, default_room: str = wire.DEFAULT_ROOM) -> bytes:
    """One event as a JSON line, with its line ending."""
    return (
        json.dumps(event_to_json(event, default_room), ensure_ascii=False).encode(
            "utf-8"
        )
        + b"\n"
    )


def _replayable(data: JSONObject) -> wire.Replayable:
    event = json_to_event(data)
    if not isinstance(event, wire.Message | wire.Action | wire.PrivateMessage):
        raise ValueError(f"not a message: {data!r}")
    return event


def json_to_event(data: JSONObject) -> wire.Event:
    """
    The event a JSON object from the server stands for (for clients).

    @raise ValueError: for an object that is no known event.
    """
    if not isinstance(data, dict):
        # A history's messages are objects too; anything else is no event.
        raise ValueError(f"not a JSON object: {type(data).__name__}")
    kind = data.get("type")
    try:
        match kind:
            case "message" | "action":
                make = wire.Message if kind == "message" else wire.Action
                return make(
                    data["from"],
                    data["text"],
                    data["room"],
                    data.get("time"),
                    bool(data.get("history")),
                )
            case "private":
                return wire.PrivateMessage(
                    data["from"],
                    data["to"],
                    data["text"],
                    data.get("time"),
                    bool(data.get("history")),
                )
            case "notice":
                return wire.Notice(data["text"])
            case "error":
                return wire.Error(data["text"])
            case "join":
                return wire.Joined(data["name"], data["room"])
            case "part":
                return wire.Parted(data["name"], data["room"])
            case "quit":
                return wire.Departed(
                    data["name"], data.get("reason", ""), data.get("message", "")
                )
            case "nick":
                return wire.Renamed(data["old"], data["new"], bool(data.get("you")))
            case "whoami":
                return wire.Identity(
                    data["name"], data.get("verified"), data.get("fingerprint")
                )
            case "who":
                return wire.WhoList(
                    data["room"], tuple(data["names"]), int(data.get("more", 0))
                )
            case "rooms":
                return wire.RoomList(
                    tuple(
                        wire.RoomInfo(r["name"], r["members"], r.get("topic", ""))
                        for r in data["rooms"]
                    ),
                    int(data.get("more", 0)),
                )
            case "topic":
                return wire.TopicInfo(data["room"], data["topic"], data.get("setter"))
            case "history":
                return wire.PastMessages(
                    data["target"],
                    tuple(_replayable(m) for m in data["messages"]),
                    int(data.get("more", 0)),
                )
    except (KeyError, TypeError) as error:
        raise ValueError(f"malformed {kind} event: {error}") from None
    raise ValueError(f"unknown event type {kind!r}")


def parse_event(line: str) -> wire.Event:
    """
    One JSON line from the server as an event.

    @raise ValueError: if it is not JSON or no known event.
    """
    try:
        data = json.loads(line)
    except RecursionError:
        # Deeply nested arrays or objects exhaust the decoder's stack.
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return json_to_event(data)


# ---------------------------------------------------------------------------
# Commands, client to server


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _text(data: JSONObject, field: str, optional: bool = False) -> str | None:
    value = data.get(field)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} must be a string")
    if _SURROGATE.search(value):
        # JSON's \uD800 escapes can make lone surrogates, which are not
        # text: no line with one in it could be encoded as UTF-8 for anyone.
        raise ValueError(f"field {field!r} is not valid Unicode (a lone surrogate)")
    return value


def _required(data: JSONObject, field: str) -> str:
    value = _text(data, field)
    assert value is not None
    return value


def _history(data: JSONObject) -> wire.Command:
    count = data.get("count")
    if count is not None and (
        not isinstance(count, int)
        or isinstance(count, bool)
        or not 1 <= count <= wire.MAX_HISTORY_REQUEST
    ):
        raise ValueError(
            f"field 'count' must be a whole number from 1 to {wire.MAX_HISTORY_REQUEST}"
        )
    return wire.HistoryRequest(_text(data, "target", optional=True), count)


def _format(data: JSONObject) -> wire.Command:
    kind = _required(data, "format")
    if kind not in ("json", "text"):
        raise ValueError("field 'format' must be 'json' or 'text'")
    return wire.Format(kind)


_COMMANDS: Final[dict[str, Callable[[JSONObject], wire.Command]]] = {
    "say": lambda d: wire.Say(_required(d, "text"), _text(d, "room", optional=True)),
    "me": lambda d: wire.Me(_required(d, "text")),
    "nick": lambda d: wire.Nick(_required(d, "name")),
    "msg": lambda d: wire.Private(_required(d, "to"), _required(d, "text")),
    "join": lambda d: wire.Join(_required(d, "room")),
    "part": lambda d: wire.Part(_text(d, "room", optional=True)),
    "rooms": lambda d: wire.Rooms(),
    "who": lambda d: wire.Who(_text(d, "room", optional=True)),
    "topic": lambda d: wire.Topic(_text(d, "text", optional=True)),
    "history": _history,
    "format": _format,
    "whoami": lambda d: wire.WhoAmI(),
    "kick": lambda d: wire.Kick(_required(d, "name"), _text(d, "reason", True) or ""),
    "ban": lambda d: wire.Ban(_required(d, "name")),
    "unban": lambda d: wire.Unban(_required(d, "target")),
    "motd": lambda d: wire.Motd(_text(d, "text", optional=True)),
    "reload": lambda d: wire.Reload(),
    "ping": lambda d: wire.Ping(),
    "help": lambda d: wire.Help(),
    "quit": lambda d: wire.Quit(_text(d, "message", optional=True) or ""),
}


def parse_command(line: str) -> wire.Command | None:
    """
    One JSON line from a client as a command; anything wrong with it comes
    back as L{wire.Invalid} saying what.

    @return: the command, or L{None} for a blank line.
    """
    if not line.strip():
        return None
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as error:
        # RecursionError: arrays or objects nested deeper than the stack.
        return wire.Invalid(f"invalid JSON: {error}")
    if not isinstance(data, dict):
        return wire.Invalid("a command must be a JSON object with a 'type'")
    kind = data.get("type")
    make = _COMMANDS.get(kind) if isinstance(kind, str) else None
    if make is None:
        shown = wire.sanitize(str(kind))[: wire.MAX_NAME_LENGTH]
        return wire.Invalid(f"unknown command type {shown!r}")
    try:
        command = make(data)
    except ValueError as error:
        return wire.Invalid(f"{kind}: {error}")
    if isinstance(command, wire.Say) and not command.text.strip():
        return None
    return command


def command_to_json(command: wire.Command) -> JSONObject:
    """The JSON object a client sends for a command (for clients)."""
    match command:
        case wire.Say(text, room):
            return {"type": "say", "text": text} | ({"room": room} if room else {})
        case wire.Me(text):
            return {"type": "me", "text": text}
        case wire.Nick(name):
            return {"type": "nick", "name": name}
        case wire.Private(recipient, text):
            return {"type": "msg", "to": recipient, "text": text}
        case wire.Join(room):
            return {"type": "join", "room": room}
        case wire.Part(room):
            return {"type": "part"} | ({"room": room} if room else {})
        case wire.Rooms():
            return {"type": "rooms"}
        case wire.Who(room):
            return {"type": "who"} | ({"room": room} if room else {})
        case wire.Topic(text):
            return {"type": "topic"} | ({"text": text} if text is not None else {})
        case wire.HistoryRequest(target, count):
            found: JSONObject = {"type": "history"}
            if target is not None:
                found["target"] = target
            if count is not None:
                found["count"] = count
            return found
        case wire.Format(kind):
            return {"type": "format", "format": kind}
        case wire.WhoAmI():
            return {"type": "whoami"}
        case wire.Kick(name, reason):
            return {"type": "kick", "name": name} | (
                {"reason": reason} if reason else {}
            )
        case wire.Ban(name):
            return {"type": "ban", "name": name}
        case wire.Unban(target):
            return {"type": "unban", "target": target}
        case wire.Motd(text):
            return {"type": "motd"} | ({"text": text} if text is not None else {})
        case wire.Reload():
            return {"type": "reload"}
        case wire.Ping():
            return {"type": "ping"}
        case wire.Help():
            return {"type": "help"}
        case wire.Quit(reason):
            return {"type": "quit"} | ({"message": reason} if reason else {})
    raise TypeError(f"cannot send {command!r}")
