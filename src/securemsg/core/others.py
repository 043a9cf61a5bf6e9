# -*- test-case-name: tests.test_cluster -*-
"""
What the chat needs from the other nodes of a cluster.

The hub (L{securemsg.core.hub.ChatHub}) tells the other nodes what its
users do through this interface, and never learns how: one process has no
other nodes (the hub's C{cluster} is L{None}), and with C{--cluster}
L{securemsg.cluster.node.ClusterNode} implements it over Redis.  Keeping it
here keeps the chat rules free of I/O and of the cluster's code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from securemsg.core.participant import IChatParticipant
from securemsg.protocol import wire

if TYPE_CHECKING:
    from securemsg.core.hub import Room
    from securemsg.core.records import BanRecord


class OtherNodes(Protocol):
    """The other nodes of a cluster, as the hub sees them."""

    def is_remote(self, participant: IChatParticipant) -> bool:
        """Whether C{participant} is another node's user (mirrored here)."""

    def joined(self, participant: IChatParticipant, identity: bool) -> None:
        """A local user arrived (a certificate holder if C{identity})."""

    def left(
        self, participant: IChatParticipant, event: wire.Departed, announced: bool
    ) -> None:
        """A user left the chat."""

    def entered(
        self, participant: IChatParticipant, room: Room, announced: bool
    ) -> None:
        """A local user joined C{room}."""

    def parted(
        self, participant: IChatParticipant, room: Room, announced: bool
    ) -> None:
        """A local user left C{room}."""

    def said(self, event: wire.Message | wire.Action) -> None:
        """A local user said C{event} to a room."""

    def topic_set(self, room: Room) -> None:
        """A local user set C{room}'s topic."""

    def rename(self, participant: IChatParticipant, new_name: str) -> None:
        """A local user asks for C{new_name}: claim it for the cluster first."""

    def renamed(self, participant: IChatParticipant, old_name: str) -> None:
        """A local user is now known by a new name."""

    def ban(self, operator: IChatParticipant, target: IChatParticipant) -> None:
        """An operator here bans another node's user: their node does it."""

    def banned(self, kind: str, value: str, entry: BanRecord) -> None:
        """A ban was made here: every node keeps it."""

    def unbanned(self, target: str, lifted: list[str]) -> None:
        """
        Bans were lifted here (those of the fingerprints and addresses
        C{lifted}): on every node.
        """

    def motd_set(self, text: str) -> None:
        """An operator here set the message of the day: for every node."""
