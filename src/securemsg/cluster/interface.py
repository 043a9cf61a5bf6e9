# -*- test-case-name: tests.test_cluster -*-
"""
What the chat state needs from the other nodes of a cluster, and what they
tell it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

#: One message between nodes: a JSON object (see L{securemsg.cluster.node}).
ClusterMessage = dict[str, Any]

#: What one node keeps of its users in the link (see
#: L{IClusterLink.store_presence}): the mark it was written with, and one
#: JSON object per user.
Presence = tuple[int, list[str]]


class IClusterHandler(Interface):
    """
    What a link calls: the node's side.
    """

    def received(message: ClusterMessage) -> None:
        """
        A message another node published (never one of this node's own).
        """

    def receiving() -> AbstractContextManager[None]:
        """
        A context around the messages of one read of the bus (the link
        enters it, then calls L{received} for each): what they say may be
        held until it is left, and reach the users together.
        """

    def link_up() -> None:
        """
        The link (re)joined the other nodes: announce everything again and
        renew the claims.
        """

    def link_down(reason: str) -> None:
        """
        The other nodes are out of reach (until L{link_up}).
        """


class IClusterLink(Interface):
    """
    How one node reaches the others: a bus every node hears (in the order
    each node published), and name claims that expire unless renewed.
    """

    node_id = Attribute("This node's unique id (a string).")
    claim_ttl = Attribute("Seconds a claim lasts unless it is renewed.")
    up = Attribute("Whether the other nodes are within reach now.")
    dropped = Attribute("How many messages were not published (an int).")
    backlog = Attribute(
        "How many messages and commands wait to be sent or answered now (an int)."
    )

    def start(handler: IClusterHandler) -> None:
        """
        Start reaching the others; C{handler} hears what they publish, and
        L{IClusterHandler.link_up} when the bus is usable.
        """

    def stop() -> Deferred[None]:
        """
        Stop; what was published before is sent first if it can be.
        """

    def publish(message: ClusterMessage) -> bool:
        """
        Send C{message} to every other node, after what this node sent
        before (perhaps at the end of the reactor turn, with the others of
        the turn).  Never blocks: while the others are out of reach, or too
        much waits to be sent, it is dropped (counted, logged) and this
        returns C{False}.
        """

    def claim(key: str, force: bool) -> Deferred[bool]:
        """
        Claim the name key C{key} for this node, for L{claim_ttl} seconds.

        @param force: take it even if another node holds it (a certificate
            holder's own name).
        @return: whether this node holds it now (C{False} also when the
            others cannot be reached: nobody can tell whether it is free);
            it fails if Redis did not answer (it may have made the claim).
        """

    def release(key: str) -> None:
        """
        Let the claim of C{key} go, if this node still holds it.
        """

    def renew(keys: list[str]) -> Deferred[list[str]]:
        """
        Renew (or make again, after Redis lost them) this node's claims of
        C{keys}.

        @return: the keys another node holds now (lost to it).
        """

    def reserve_guests(count: int) -> Deferred[int]:
        """
        Reserve C{count} guest numbers for this node: numbers no node was
        given before (unless Redis lost its data).

        @return: the first of them (the others follow it); it fails if
            the others are out of reach or did not answer.
        """

    def append_history(room_key: str, data: str, max_count: int) -> None:
        """
        Add C{data} (one message) to the shared history of the room with
        C{room_key}, keeping about its last C{max_count}.  Dropped if the
        others are out of reach.
        """

    def read_history(room_key: str, count: int) -> Deferred[list[str]]:
        """
        The last C{count} messages of a room's shared history, oldest
        first (none if it cannot be read now).
        """

    def store_ban(value: str, data: str) -> bool:
        """
        Keep C{data} (a ban, or the lifting of one: see
        L{securemsg.cluster.settings}) under the banned certificate fingerprint
        or address C{value}, in place of what was kept there, for every
        node to read, now and after restarts.

        @return: C{False} if it was not sent (the others are out of reach,
            or too much waits to be sent): the caller keeps it to send
            later; it is not counted as a dropped message.
        """

    def read_bans() -> Deferred[dict[str, str]]:
        """
        Everything L{store_ban} kept, by value; it fails if it cannot be
        read now.
        """

    def store_motd(text: str) -> bool:
        """
        Keep C{text} as the cluster's message of the day (C{""}: none).

        @return: C{False} if it was not sent, as L{store_ban}.
        """

    def read_motd() -> Deferred[str | None]:
        """
        The message of the day L{store_motd} kept (L{None} if none ever
        was); it fails if it cannot be read now.
        """

    def store_presence(
        users: dict[str, str | None], mark: int, whole: bool
    ) -> Deferred[bool]:
        """
        Keep this node's users where every node (and an operator) can read
        them, for L{claim_ttl} seconds from now, and count this node among
        the live ones as long: C{users} maps a name key to the user (a
        JSON object), or to L{None} for a user gone.  Called with nothing
        to change, it only renews them.

        @param mark: the number of the last message this node published
            (see L{securemsg.cluster.presence}), kept with the users.
        @param whole: C{users} are all of them (those kept before go).
        @return: whether it was written; C{False} if it was not sent (the
            others are out of reach, or too much waits to be sent) or
            failed: the caller sends all its users next time.
        """

    def read_presence() -> Deferred[dict[str, Presence]]:
        """
        What the other live nodes keep of their users (L{store_presence}),
        by node id; a node not live (stopped, or not renewed for a claim's
        lifetime) is left out.  It fails if it cannot be read now.
        """

    def clear_presence() -> None:
        """
        This node is stopping: its users, and itself, are no longer live.
        """
