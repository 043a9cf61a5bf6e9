# -*- test-case-name: tests.test_cluster -*-
"""
Several nodes in one process, joined by a bus in memory: what the tests of
the cluster logic use instead of Redis, with the same rules (claims that
expire on the given clock, messages in the order each node sent them).
"""

from __future__ import annotations

import json
from collections import deque
from contextlib import ExitStack

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from securemsg.cluster.interface import (
    ClusterMessage,
    IClusterHandler,
    IClusterLink,
    Presence,
)


class MemoryBus:
    """
    What Redis holds for a cluster, in memory: the name claims (with their
    expiry) and the links that hear the bus.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.links: list[MemoryLink] = []
        # Name key -> (node id, expiry time).
        self.claims: dict[str, tuple[str, float]] = {}
        # Room key -> its messages, oldest first.
        self.streams: dict[str, list[str]] = {}
        # Banned value -> a ban or its lifting (NAME:bans).
        self.bans: dict[str, str] = {}
        # The message of the day (NAME:motd), if one was ever set.
        self.motd: str | None = None
        # Node id -> (mark, its users by name key, expiry time): the
        # NAME:presence:NODE hashes and the NAME:nodes sorted set.
        self.presence: dict[str, tuple[int, dict[str, str], float]] = {}
        #: How many times each node wrote its presence.
        self.presence_writes: dict[str, int] = {}
        #: The last guest number given out (NAME:guests).
        self.guests = 0
        #: While false, no guest numbers can be reserved (Redis failing).
        self.guests_reservable = True
        self._queue: deque[tuple[MemoryLink, ClusterMessage]] = deque()
        self._delivering = False
        #: While true, what is published waits (as in a slow network), to
        #: make two nodes act before either hears of the other.
        self.paused = False

    def holder(self, key: str) -> str | None:
        """The node that holds the claim of C{key} now, if any."""
        held = self.claims.get(key)
        if held is None or held[1] <= self.clock.seconds():
            return None
        return held[0]

    def users_of(self, node_id: str) -> dict[str, str] | None:
        """The users node C{node_id} keeps, by name key, if it is live."""
        kept = self.presence.get(node_id)
        if kept is None or kept[2] <= self.clock.seconds():
            return None
        return kept[1]

    def send(self, sender: MemoryLink, message: ClusterMessage) -> None:
        """Queue C{message} for every other link that is up, in order."""
        # Through JSON, as over Redis: nothing but plain data crosses.
        self._queue.append((sender, json.loads(json.dumps(message))))
        self.deliver()

    def deliver(self) -> None:
        """
        Hand out what waits, unless paused: to each link, as one read of
        the bus (L{IClusterHandler.receiving}).
        """
        if self._delivering or self.paused:
            return
        self._delivering = True
        try:
            with ExitStack() as reading:
                entered: set[int] = set()
                while self._queue and not self.paused:
                    origin, queued = self._queue.popleft()
                    for link in list(self.links):
                        handler = link.handler
                        if link is origin or not link.up or handler is None:
                            continue
                        if id(handler) not in entered:
                            entered.add(id(handler))
                            reading.enter_context(handler.receiving())
                        handler.received(queued)
        finally:
            self._delivering = False


@implementer(IClusterLink)
class MemoryLink:
    """
    One node's link to a L{MemoryBus}.  L{cut} and L{mend} stand for Redis
    lost and found again.
    """

    def __init__(self, bus: MemoryBus, node_id: str, claim_ttl: float = 15.0) -> None:
        self.bus = bus
        self.node_id = node_id
        self.claim_ttl = claim_ttl
        self.up = False
        self.handler: IClusterHandler | None = None
        self.dropped = 0
        # The bus delivers at once: nothing ever waits.
        self.backlog = 0

    def start(self, handler: IClusterHandler) -> None:
        self.handler = handler
        self.bus.links.append(self)
        self.mend()

    def stop(self) -> Deferred[None]:
        self.up = False
        if self in self.bus.links:
            self.bus.links.remove(self)
        return succeed(None)

    def cut(self) -> None:
        """Lose the bus (as when Redis goes away)."""
        self.up = False
        if self.handler is not None:
            self.handler.link_down("lost")

    def mend(self) -> None:
        """Reach the bus again."""
        self.up = True
        if self.handler is not None:
            self.handler.link_up()

    def publish(self, message: ClusterMessage) -> bool:
        if not self.up:
            self.dropped += 1
            return False
        self.bus.send(self, dict(message, n=self.node_id))
        return True

    def claim(self, key: str, force: bool) -> Deferred[bool]:
        if not self.up:
            return succeed(False)
        holder = self.bus.holder(key)
        if holder not in (None, self.node_id) and not force:
            return succeed(False)
        self.bus.claims[key] = (self.node_id, self.bus.clock.seconds() + self.claim_ttl)
        return succeed(True)

    def release(self, key: str) -> None:
        if self.up and self.bus.holder(key) == self.node_id:
            del self.bus.claims[key]

    def renew(self, keys: list[str]) -> Deferred[list[str]]:
        lost = []
        if self.up:
            for key in keys:
                if self.bus.holder(key) in (None, self.node_id):
                    self.bus.claims[key] = (
                        self.node_id,
                        self.bus.clock.seconds() + self.claim_ttl,
                    )
                else:
                    lost.append(key)
        return succeed(lost)

    def reserve_guests(self, count: int) -> Deferred[int]:
        if not self.up or not self.bus.guests_reservable:
            return fail(ConnectionError("out of reach"))
        self.bus.guests += count
        return succeed(self.bus.guests - count + 1)

    def append_history(self, room_key: str, data: str, max_count: int) -> None:
        if not self.up:
            self.dropped += 1
            return
        stream = self.bus.streams.setdefault(room_key, [])
        stream.append(data)
        del stream[:-max_count]

    def read_history(self, room_key: str, count: int) -> Deferred[list[str]]:
        if not self.up:
            return succeed([])
        return succeed(self.bus.streams.get(room_key, [])[-count:])

    def store_ban(self, value: str, data: str) -> bool:
        if not self.up:
            return False
        self.bus.bans[value] = data
        return True

    def read_bans(self) -> Deferred[dict[str, str]]:
        if not self.up:
            return fail(ConnectionError("out of reach"))
        return succeed(dict(self.bus.bans))

    def store_motd(self, text: str) -> bool:
        if not self.up:
            return False
        self.bus.motd = text
        return True

    def read_motd(self) -> Deferred[str | None]:
        if not self.up:
            return fail(ConnectionError("out of reach"))
        return succeed(self.bus.motd)

    def store_presence(
        self, users: dict[str, str | None], mark: int, whole: bool
    ) -> Deferred[bool]:
        if not self.up:
            return succeed(False)
        kept = {} if whole else dict(self.bus.users_of(self.node_id) or {})
        for key, data in users.items():
            if data is None:
                kept.pop(key, None)
            else:
                kept[key] = data
        expires = self.bus.clock.seconds() + self.claim_ttl
        self.bus.presence[self.node_id] = (mark, kept, expires)
        writes = self.bus.presence_writes
        writes[self.node_id] = writes.get(self.node_id, 0) + 1
        return succeed(True)

    def read_presence(self) -> Deferred[dict[str, Presence]]:
        if not self.up:
            return fail(ConnectionError("out of reach"))
        found: dict[str, Presence] = {}
        for node_id, (mark, users, _) in self.bus.presence.items():
            if node_id != self.node_id and self.bus.users_of(node_id) is not None:
                found[node_id] = (mark, list(users.values()))
        return succeed(found)

    def clear_presence(self) -> None:
        if self.up:
            self.bus.presence.pop(self.node_id, None)
