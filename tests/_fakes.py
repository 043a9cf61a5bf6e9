"""
A stand-in for a connection, for tests of the chat logic alone.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport
from zope.interface import implementer

from securemsg.core.participant import IChatParticipant
from securemsg.protocol import wire


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


class PausingTransport(StringTransport):
    """
    A L{StringTransport} that pauses its streaming producer as Twisted's TCP
    transport does: after a write that leaves it holding more than
    C{buffer_size} bytes.  L{drain} stands for the client reading it all.
    """

    def __init__(self, buffer_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.buffer_size = buffer_size
        self.paused = False
        #: The most this transport ever held.
        self.most_held = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        held = len(self.value())
        self.most_held = max(self.most_held, held)
        if self.producer is not None and not self.paused and held > self.buffer_size:
            self.paused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """Take everything written, and resume the producer if it was paused."""
        data: bytes = self.value()
        self.clear()
        if self.paused and self.producer is not None:
            self.paused = False
            self.producer.resumeProducing()
        return data
