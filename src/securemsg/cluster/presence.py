# -*- test-case-name: tests.test_cluster -*-
"""
Presence kept by the link: who is on which node.  No I/O: the link does
it, time comes from the clock given.

Presence is kept by the link (in Redis, with the claims' expiry), so that a
node whose link comes up sees the others' users at once, even if a reply
to its C{hello} is lost: each node writes what changed about its users
once per reactor turn (L{PresenceKeeper.store}) and renews it with its
claims; a node whose link comes up reads the other live nodes' users and
mirrors them.  The bus and Redis are two roads that may be crossed in any
order, so each node numbers the messages that change who is where (C{s}:
hello, join, part, leave, nick, bye) and keeps with its users the number of
the last one it published before writing them (the mark).  Users read with
a mark below a message already heard from that node are older than what
this node knows: they are not taken (read again at the next beat, unless a
C{hello} told everything meanwhile); taken, they stand for every message up
to the mark, which is not applied again if it comes late (but a late
C{hello}'s topics, which the link does not keep, are taken).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from securemsg.cluster.interface import ClusterMessage, IClusterLink, Presence
from securemsg.core.participant import IChatParticipant
from securemsg.protocol import wire

if TYPE_CHECKING:
    from securemsg.core.hub import ChatHub

#: The messages that change who is where, numbered by their node (C{s}).
PRESENCE_KINDS = frozenset({"hello", "join", "part", "leave", "nick", "bye"})


def user_entry(chat: ChatHub, participant: IChatParticipant) -> dict[str, Any]:
    """A local user, as the others learn of them (on the bus, in the link)."""
    return {
        "name": participant.name,
        "v": chat.is_verified(participant),
        "rooms": chat.rooms_of(participant),
    }


class PresenceKeeper:
    """
    Keeps the local users of C{chat} in C{link}, numbers the messages that
    change who is where, and takes the other nodes' users from the link
    when they are newer than what was heard on the bus.

    @ivar is_remote: whether a participant of C{chat} is another node's.
    @ivar mirror: called with a node's id and all its users (as
        L{user_entry} makes them), read from the link, to take them; it
        raises C{KeyError}, C{TypeError}, C{ValueError} or
        C{AttributeError} for users it does not understand.
    """

    log = Logger()

    def __init__(
        self,
        chat: ChatHub,
        link: IClusterLink,
        clock: IReactorTime,
        *,
        is_remote: Callable[[IChatParticipant], bool],
        mirror: Callable[[str, list[dict[str, Any]]], None],
    ) -> None:
        self.chat = chat
        self.link = link
        self.clock = clock
        self.is_remote = is_remote
        self.mirror = mirror
        # The number of the last presence message published; the name keys
        # of local users changed since the last write, or all of them
        # (after a write was lost).
        self._seq = 0
        self._dirty: set[str] = set()
        self._whole = True
        self._write: IDelayedCall | None = None
        self._running = False
        # For each other node, the number of its last presence message
        # applied here, and the mark of its users taken from the link.
        self._heard: dict[str, int] = {}
        self._floor: dict[str, int] = {}
        # The nodes whose users this node knows all of (from a hello or the
        # link) since its link came up, and whether the link must be read
        # again at the next beat.
        self._synced: set[str] = set()
        self._read_again = False

    # Running

    def start(self) -> None:
        """Write the local users' changes from now on."""
        self._running = True

    def stop(self) -> None:
        """
        This node is going: write no more, say C{bye}, and let the link
        forget its users.
        """
        self._running = False
        if self._write is not None and self._write.active():
            self._write.cancel()
        self._write = None
        self.publish({"t": "bye"})
        self.link.clear_presence()

    def link_up(self) -> None:
        """
        The link came up (the hello published): write all the local users
        (the link may have lost them), and read the other nodes'.
        """
        self._whole = True
        self.store()
        self._read()

    def link_down(self) -> None:
        """The link is down: what was heard of the others no longer counts."""
        self._heard.clear()
        self._floor.clear()
        self._synced.clear()
        self._read_again = False

    def beat(self) -> None:
        """
        Renew the local users in the link, and read the others' again if a
        read was older than the bus, or failed.
        """
        self.store()
        if self._read_again:
            self._read()

    # This node's users

    def publish(self, message: ClusterMessage) -> None:
        """Publish a message that changes who is where, numbered."""
        self._seq += 1
        self.link.publish(dict(message, s=self._seq))

    def changed(self, name: str) -> None:
        """What the link keeps of the local user called C{name} changed."""
        self._dirty.add(wire.name_key(name))
        if self._write is None and self._running and self.link.up:
            # Once per reactor turn, however many changes it makes.
            self._write = self.clock.callLater(0, self.store)

    def store(self) -> None:
        """
        Write what changed about the local users to the link (all of them
        after a write was lost), and renew it.
        """
        if self._write is not None and self._write.active():
            self._write.cancel()
        self._write = None
        if not self.link.up:
            # Written whole when the link comes up.
            self._dirty.clear()
            return
        whole, self._whole = self._whole, False
        dirty, self._dirty = self._dirty, set()
        users: dict[str, str | None] = {}
        if whole:
            participants = self.chat.local_participants()
        else:
            participants = []
            for key in dirty:
                found = self.chat.find(key)
                if found is None or self.is_remote(found):
                    users[key] = None
                else:
                    participants.append(found)
        for participant in participants:
            users[wire.name_key(participant.name)] = json.dumps(
                user_entry(self.chat, participant), separators=(",", ":")
            )

        def stored(done: bool) -> None:
            if not done:
                # What Redis has is not known: all of it, next time.
                self._whole = True

        self.link.store_presence(users, self._seq, whole).addCallback(stored)

    # The other nodes' users

    def shown_already(self, origin: str, message: ClusterMessage) -> bool:
        """
        Whether the users of node C{origin} taken from the link show
        C{message} (one of its numbered messages) already; if not, it is
        noted as heard.
        """
        seq = message.get("s") if message.get("t") in PRESENCE_KINDS else None
        if not isinstance(seq, int):
            return False
        if seq <= self._floor.get(origin, 0):
            return True
        self._heard[origin] = max(seq, self._heard.get(origin, 0))
        return False

    def synced(self, origin: str) -> None:
        """Node C{origin} told all its users (in a hello)."""
        self._synced.add(origin)

    def _read(self) -> None:
        """Read the other live nodes' users from the link, and take them."""
        self._read_again = False

        def failed(reason: Failure) -> None:
            self._read_again = True
            self.log.warn(
                "the other nodes' users could not be read (again at the next"
                " beat): {error}",
                error=reason.getErrorMessage(),
            )

        self.link.read_presence().addCallbacks(self._take, failed)

    def _take(self, found: dict[str, Presence]) -> None:
        """
        Mirror the users of the other live nodes, unless what was heard on
        the bus is newer (see the module's docstring).
        """
        if not self.link.up:
            return
        for origin, (mark, entries) in found.items():
            if origin == self.link.node_id or mark <= self._floor.get(origin, 0):
                continue
            if mark < self._heard.get(origin, 0):
                # Older than what this node heard; if no hello told all
                # since, read again at the next beat.
                if origin not in self._synced:
                    self._read_again = True
                continue
            try:
                users = [json.loads(entry) for entry in entries]
                self.mirror(origin, users)
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                self.log.warn(
                    "the users of node {node} kept in the cluster were not"
                    " understood: {error!r}",
                    node=origin,
                    error=error,
                )
                continue
            self._floor[origin] = mark
            self._heard[origin] = max(mark, self._heard.get(origin, 0))
            self._synced.add(origin)
