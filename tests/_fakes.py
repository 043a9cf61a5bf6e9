"""
A stand-in for a connection, for tests of the chat logic alone.
"""

from __future__ import annotations

from zope.interface import implementer

from securemsg import wire
from securemsg.interfaces import IChatParticipant


@implementer(IChatParticipant)
class Recorder:
    """A participant that keeps every event it is given, as server lines."""

    def __init__(self) -> None:
        self.name = ""
        self.lines: list[str] = []
        self.disconnected: tuple[str, str] | None = None

    def deliver(self, event: wire.Event) -> None:
        self.lines.extend(event.format().split("\n"))

    def deliver_all(self, events: tuple[wire.Event, ...]) -> None:
        for event in events:
            self.deliver(event)

    def disconnect(self, error: str, farewell: str) -> None:
        self.disconnected = (error, farewell)
        self.lines.append(f"(disconnected: {error})")

    def take(self) -> list[str]:
        """The lines given since the last call."""
        lines, self.lines = self.lines, []
        return lines
