# -*- test-case-name: tests.test_cluster -*-
"""
A cluster's history: each room's messages in one capped stream shared by
every node (in Redis: C{NAME:history:ROOM}, C{XADD MAXLEN ~}, read back
newest first with C{XREVRANGE}), so that a user joining a room on any node
gets the same replay and C{/history}.  Private messages stay where they are
kept today (C{--store-private}: the node's own history).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from securemsg.cluster.interface import IClusterLink
from securemsg.core.history import HistoryStore
from securemsg.protocol import wire


def encode(event: wire.Message | wire.Action) -> str:
    """One room message as it is kept in a stream."""
    kind = "a" if isinstance(event, wire.Action) else "m"
    return json.dumps(
        {
            "k": kind,
            "s": event.sender,
            "t": event.text,
            "r": event.room,
            "w": event.time,
        },
        separators=(",", ":"),
    )


def decode(data: str) -> wire.Message | wire.Action:
    """The message L{encode} made C{data} of."""
    fields = json.loads(data)
    kind = wire.Action if fields["k"] == "a" else wire.Message
    return kind(fields["s"], fields["t"], fields["r"], fields["w"])


class StreamHistory:
    """
    L{HistoryStore} with the rooms' messages in the cluster's streams, and the
    last C{per_room} of each room this node knows in memory (for the
    replay on joining, which must not wait).

    @ivar private: the node's own history, for private messages.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        link: IClusterLink,
        private: HistoryStore,
        *,
        per_room: int = 50,
        max_count: int = 10_000,
        max_age: float | None = None,
    ) -> None:
        self.clock = clock
        self.link = link
        self.private = private
        self.per_room = max(per_room, 1)
        self.max_count = max_count
        self.max_age = max_age
        self._rooms: dict[str, deque[wire.Replayable]] = {}
        # The rooms read from their stream (or being read), and who waits
        # for those being read.
        self._loaded: set[str] = set()
        self._reading: dict[str, list[Deferred[None]]] = {}

    def _fresh(self, events: Iterable[wire.Replayable]) -> list[wire.Replayable]:
        if self.max_age is None:
            return list(events)
        oldest = self.clock.seconds() - self.max_age
        return [event for event in events if (event.time or 0) >= oldest]

    def remember(self, event: wire.Replayable) -> None:
        """
        Keep a room message in memory only: one another node said (and
        put in the stream itself).
        """
        if isinstance(event, wire.PrivateMessage) or event.room is None:
            return
        key = wire.name_key(event.room)
        kept = self._rooms.get(key)
        if kept is None:
            kept = self._rooms[key] = deque(maxlen=self.per_room)
        kept.append(event)

    def record(self, event: wire.Replayable) -> None:
        if isinstance(event, wire.PrivateMessage):
            self.private.record(event)
            return
        self.remember(event)
        if event.room is not None:
            self.link.append_history(
                wire.name_key(event.room), encode(event), self.max_count
            )

    def recent(self, room: str) -> list[wire.Replayable]:
        return self._fresh(self._rooms.get(wire.name_key(room), ()))

    def _read(self, room: str, count: int) -> Deferred[list[wire.Replayable]]:
        def decoded(entries: list[str]) -> list[wire.Replayable]:
            events: list[wire.Replayable] = []
            for data in entries:
                try:
                    events.append(decode(data))
                except (KeyError, TypeError, ValueError):
                    self.log.warn(
                        "a history entry of {room} is not understood", room=room
                    )
            return self._fresh(events)

        return self.link.read_history(wire.name_key(room), count).addCallback(decoded)

    def load(self, room: str) -> Deferred[None] | None:
        key = wire.name_key(room)
        waiting = self._reading.get(key)
        if waiting is not None:
            waiter: Deferred[None] = Deferred()
            waiting.append(waiter)
            return waiter
        if key in self._loaded or not self.link.up:
            # Read already; or Redis cannot say more now than memory has.
            return None
        self._loaded.add(key)
        self._reading[key] = []
        heard = self._rooms.setdefault(key, deque(maxlen=self.per_room))

        def loaded(events: list[wire.Replayable]) -> None:
            if key in self._loaded:
                # What was heard while reading and is not in the stream
                # yet comes after it.
                known = set(events)
                merged = events + [event for event in heard if event not in known]
                self._rooms[key] = deque(merged, maxlen=self.per_room)
            for waiter in self._reading.pop(key, []):
                waiter.callback(None)

        return self._read(room, self.per_room).addCallback(loaded)

    def forget(self, room: str) -> None:
        self._rooms.pop(wire.name_key(room), None)
        self._loaded.discard(wire.name_key(room))

    def fetch(self, room: str, count: int) -> Deferred[list[wire.Replayable]]:
        if not self.link.up:
            return succeed(self.recent(room)[-count:])
        return self._read(room, count)

    def fetch_private(
        self, one: str, other: str, count: int
    ) -> Deferred[list[wire.Replayable]]:
        return self.private.fetch_private(one, other, count)

    def close(self) -> Deferred[None]:
        return self.private.close()
