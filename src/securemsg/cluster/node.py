# -*- test-case-name: tests.test_cluster -*-
"""
One node of a cluster: what the chat state tells the other nodes, and what
it makes of what they tell it.  No I/O: messages go through an
L{IClusterLink}, time comes from the clock given.

Each node publishes what happens to its own users (they joined, said
something, changed their name...); the others mirror those users as
L{RemoteParticipant}s in their own L{ChatHub}, so that C{/who}, C{/rooms},
C{/msg} and name checks see the whole cluster, and hand what is said to
their own users.  A node that stops being heard for a claim's lifetime is
gone: its users leave, and their names (claims in Redis that it no longer
renews) are free.

Messages are JSON objects: C{n} the sending node, C{t} the kind (the
C{_on_*} methods below), and the kind's fields.

Bans and the message of the day are also kept by the link (in Redis), so
that a node that was stopped or cut off when they changed learns them: it
reads them whenever its link comes up (L{ClusterNode.link_up}) and merges
them into its own state file.  A ban is kept under the banned fingerprint
or address as C{{"kind", "name", "by", "time"}}; an C{/unban} replaces it
with C{{"lifted": true, "time"}}, so that a node whose state file still has
the ban drops it instead of bringing it back.  Of a ban and its lifting,
the later one wins; a ban this node has and the cluster has never heard of
(made before the node joined, or while it was cut off) is given to the
cluster.  What an operator changes while the link is down is written when
it comes up, before reading.

Presence is kept by the link too (in Redis, with the claims' expiry), so
that a node whose link comes up sees the others' users at once, even if a
reply to its C{hello} is lost: each node writes what changed about its
users once per reactor turn (L{ClusterNode.store_presence}) and renews it
with its claims; a node whose link comes up reads the other live nodes'
users and mirrors them.  The bus and Redis are two roads that may be
crossed in any order, so each node numbers the messages that change who is
where (C{s}: hello, join, part, leave, nick, bye) and keeps with its users
the number of the last one it published before writing them (the mark).
Users read with a mark below a message already heard from that node are
older than what this node knows: they are not taken (read again at the next
beat, unless a C{hello} told everything meanwhile); taken, they stand for
every message up to the mark, which is not applied again if it comes late
(but a late C{hello}'s topics, which the link does not keep, are taken).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from securemsg.cluster.interface import (
    ClusterMessage,
    IClusterHandler,
    IClusterLink,
    Presence,
)
from securemsg.core.participant import IChatParticipant
from securemsg.core.records import BanRecord, ServerRecords
from securemsg.protocol import wire

if TYPE_CHECKING:
    from securemsg.core.hub import ChatHub, Room

#: What local users are told when the other servers go out of reach, and
#: when they are back.
OUT_OF_REACH = (
    "the other servers of this chat are out of reach; you see only the people"
    " on this one until they are back"
)
BACK_IN_REACH = "the other servers of this chat are within reach again"

#: The messages that change who is where, numbered by their node (C{s}).
PRESENCE_KINDS = frozenset({"hello", "join", "part", "leave", "nick", "bye"})


@implementer(IChatParticipant)
class RemoteParticipant:
    """
    A user of another node, as this node's chat sees them.  Room lines are
    not handed to them one by one (their node got the line once, on the
    bus); a private line and a kick are sent to their node.
    """

    def __init__(self, node: ClusterNode, origin: str, name: str) -> None:
        self.node = node
        self.origin = origin
        self.name = name

    def __repr__(self) -> str:
        return f"<RemoteParticipant {self.name!r} on {self.origin}>"

    def deliver(self, event: wire.Event) -> None:
        if isinstance(event, wire.PrivateMessage):
            self.node.forward_private(self, event)

    def deliver_all(self, events: tuple[wire.Event, ...]) -> None:
        for event in events:
            self.deliver(event)

    def disconnect(self, error: str, farewell: str) -> None:
        self.node.forward_disconnect(self, error, farewell)


@implementer(IClusterHandler)
class ClusterNode:
    """
    Joins one L{ChatHub} to the other nodes through C{link}.

    @ivar remote: for each other node, its users by name key.
    """

    log = Logger()

    def __init__(self, chat: ChatHub, link: IClusterLink, clock: IReactorTime) -> None:
        self.chat = chat
        self.link = link
        self.clock = clock
        self.remote: dict[str, dict[str, RemoteParticipant]] = {}
        self.last_seen: dict[str, float] = {}
        self._up: bool | None = None
        self._beat: LoopingCall | None = None
        # Bans (by value) and the motd changed here while the link could
        # not keep them: written when it comes up.
        self._unsaved_bans: dict[str, dict[str, Any]] = {}
        self._unsaved_motd: str | None = None
        # Presence (see the module's docstring): the number of the last
        # presence message published; the name keys of local users changed
        # since the last write, or all of them (after a write was lost).
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
        chat.cluster = self

    # What the metrics read (securemsg.server.metrics.ClusterState)

    @property
    def link_is_up(self) -> bool:
        """Whether the other nodes are within reach now."""
        return bool(self.link.up)

    @property
    def publish_backlog(self) -> int:
        """Commands sent to the others and not answered yet."""
        return int(self.link.backlog)

    @property
    def dropped(self) -> int:
        """Messages for the others not published."""
        return int(self.link.dropped)

    @property
    def nodes_known(self) -> int:
        """
        The other nodes heard from and not let go (none while they are out
        of reach: nothing is heard from them then).
        """
        return len(self.last_seen) if self.link.up else 0

    # Running

    def start(self) -> None:
        """Reach the other nodes, and beat (renewing claims) from now on."""
        self._beat = LoopingCall(self.beat)
        self._beat.clock = self.clock
        self._beat.start(self.link.claim_ttl / 3, now=False)
        self._running = True
        self.link.start(self)

    def stop(self) -> None:
        """
        Tell the others this node is going, stop beating, and let the
        link forget its users.
        """
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        self._running = False
        if self._write is not None and self._write.active():
            self._write.cancel()
        self._write = None
        self._publish_presence({"t": "bye"})
        self.link.clear_presence()

    def beat(self) -> None:
        """
        Say this node is alive, renew the claims of its users' names, and
        let go of the nodes not heard for a claim's lifetime.
        """
        if self.link.up:
            self.link.publish({"t": "beat"})
            self._renew()
            self.store_presence()
            if self._read_again:
                self._read_presence()
        now = self.clock.seconds()
        for origin, seen in list(self.last_seen.items()):
            if now - seen > self.link.claim_ttl:
                self.log.warn("node {node} is not heard any more", node=origin)
                self._drop(origin, "their server is out of reach")

    def _renew(self) -> None:
        keys = {wire.name_key(p.name): p for p in self.chat.local_participants()}

        def renewed(lost: list[str]) -> None:
            for key in lost:
                participant = keys.get(key)
                if participant is None or wire.name_key(participant.name) != key:
                    continue
                if participant in self.chat and not isinstance(
                    participant, RemoteParticipant
                ):
                    self._lost_name(participant)

        self.link.renew(list(keys)).addCallback(renewed)

    def _lost_name(self, participant: IChatParticipant) -> None:
        """Another node holds a local user's name now."""
        if self.chat.is_verified(participant):
            # A certificate holder's name is theirs.
            self.link.claim(wire.name_key(participant.name), True).addErrback(
                _renewed_later
            )
            self.link.publish({"t": "takeover", "name": participant.name})
            return
        self._rename_guest(
            participant,
            f"the name {participant.name} was taken on another server;"
            " you have a new one",
        )

    def _rename_guest(self, participant: IChatParticipant, why: str) -> None:
        self.chat.rename_guest(participant, why)
        self._claim_guest(participant)

    def _claim_guest(self, participant: IChatParticipant) -> None:
        name = participant.name

        def claimed(won: bool) -> None:
            if won or not self.link.up:
                # Not reachable: the claim is made again on reconnecting.
                return
            if participant in self.chat and participant.name == name:
                self._rename_guest(
                    participant, f"the name {name} is taken on another server"
                )

        self.link.claim(wire.name_key(name), False).addCallbacks(
            claimed, _renewed_later
        )

    # The link

    def link_up(self) -> None:
        if self._up is False:
            self.log.info("the other nodes are within reach again")
            for participant in self.chat.local_participants():
                participant.deliver(wire.Notice(BACK_IN_REACH))
        else:
            self.log.info("cluster node {node} joined", node=self.link.node_id)
        self._up = True
        self._publish_presence(self._hello(reply=True))
        self._whole = True
        self.store_presence()
        self._read_presence()
        self._renew()
        self._share_settings()

    def link_down(self, reason: str) -> None:
        if self._up is False:
            return
        self._up = False
        self.log.warn("the other nodes are out of reach: {reason}", reason=reason)
        for participant in self.chat.local_participants():
            participant.deliver(wire.Notice(OUT_OF_REACH))
        # Nobody can tell what happens there meanwhile: their users are
        # announced again (quietly) when the link is back.
        for origin in list(self.remote):
            self._drop(origin, "", announce=False)
        self._heard.clear()
        self._floor.clear()
        self._synced.clear()
        self._read_again = False

    def received(self, message: ClusterMessage) -> None:
        origin = message.get("n")
        kind = message.get("t")
        handler = getattr(self, f"_on_{kind}", None)
        if (
            not isinstance(origin, str)
            or origin == self.link.node_id
            or handler is None
        ):
            return
        self.last_seen[origin] = self.clock.seconds()
        self.chat.flush()
        seq = message.get("s") if kind in PRESENCE_KINDS else None
        if isinstance(seq, int):
            if seq <= self._floor.get(origin, 0):
                # What the users taken from the link show already; but a
                # hello's topics (not kept there) and the reply it asks for
                # still count.
                if kind != "hello":
                    return
                handler = self._on_late_hello
            else:
                self._heard[origin] = max(seq, self._heard.get(origin, 0))
        try:
            handler(origin, message)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            self.log.warn(
                "a message from node {node} was not understood: {error!r}",
                node=origin,
                error=error,
            )

    # What the chat tells the others (called by ChatHub, for its own users)

    def joined(self, participant: IChatParticipant, identity: bool) -> None:
        """A local user arrived (a certificate holder if C{identity})."""
        self._changed(participant.name)
        if identity:
            self.link.publish({"t": "takeover", "name": participant.name})
            self.link.claim(wire.name_key(participant.name), True).addErrback(
                _renewed_later
            )
        else:
            self._claim_guest(participant)

    def entered(
        self, participant: IChatParticipant, room: Room, announced: bool
    ) -> None:
        """A local user joined C{room}."""
        if not isinstance(participant, RemoteParticipant):
            self._changed(participant.name)
            self._publish_presence(
                {
                    "t": "join",
                    "name": participant.name,
                    "v": self.chat.is_verified(participant),
                    "room": room.name,
                    "a": announced,
                }
            )

    def parted(
        self, participant: IChatParticipant, room: Room, announced: bool
    ) -> None:
        """A local user left C{room}."""
        if not isinstance(participant, RemoteParticipant):
            self._changed(participant.name)
            self._publish_presence(
                {
                    "t": "part",
                    "name": participant.name,
                    "room": room.name,
                    "a": announced,
                }
            )

    def left(
        self, participant: IChatParticipant, event: wire.Departed, announced: bool
    ) -> None:
        """A user left the chat (a local one, or one this node let go)."""
        key = wire.name_key(participant.name)
        if isinstance(participant, RemoteParticipant):
            users = self.remote.get(participant.origin, {})
            if users.get(key) is participant:
                del users[key]
            return
        self._changed(participant.name)
        self._publish_presence(
            {
                "t": "leave",
                "name": participant.name,
                "reason": event.reason,
                "message": event.message,
                "a": announced,
            }
        )
        self.link.release(key)

    def said(self, event: wire.Message | wire.Action) -> None:
        """A local user said C{event} to a room."""
        self.link.publish(
            {
                "t": "say",
                "k": "a" if isinstance(event, wire.Action) else "m",
                "room": event.room,
                "sender": event.sender,
                "text": event.text,
                "time": event.time,
            }
        )

    def renamed(self, participant: IChatParticipant, old_name: str) -> None:
        """A local user is now known by a new name."""
        if isinstance(participant, RemoteParticipant):
            return
        self._changed(old_name)
        self._changed(participant.name)
        self._publish_presence(
            {
                "t": "nick",
                "old": old_name,
                "new": participant.name,
                "v": self.chat.is_verified(participant),
                "rooms": self.chat.rooms_of(participant),
            }
        )
        if wire.name_key(old_name) != wire.name_key(participant.name):
            self.link.release(wire.name_key(old_name))

    def topic_set(self, room: Room) -> None:
        """A local user set C{room}'s topic."""
        self.link.publish(
            {
                "t": "topic",
                "room": room.name,
                "topic": room.topic,
                "setter": room.topic_setter,
                "time": room.topic_time,
            }
        )

    def rename(self, participant: IChatParticipant, new_name: str) -> None:
        """
        A local user asks for C{new_name} (free here): claim it for the
        cluster first, then rename them, or tell them it is taken.
        """
        if not self.link.up:
            participant.deliver(
                wire.Error(
                    "names cannot change while the other servers are out of reach"
                )
            )
            return
        key = wire.name_key(new_name)
        old_name = participant.name

        def claimed(won: bool) -> None:
            if participant not in self.chat:
                if won and key != wire.name_key(old_name):
                    self.link.release(key)
                return
            holder = self.chat.find(new_name)
            if (
                not won
                or holder not in (None, participant)
                or participant.name != old_name
            ):
                if won and key != wire.name_key(participant.name):
                    self.link.release(key)
                shown = holder.name if holder is not None else new_name
                participant.deliver(wire.Error(f"the name {shown} is taken"))
                return
            self.chat.rename_now(participant, new_name)

        def failed(reason: Failure) -> None:
            # Redis did not answer: it may hold the claim for us; let it go.
            self.link.release(key)
            if participant in self.chat:
                participant.deliver(
                    wire.Error(
                        f"the name {new_name} cannot be checked right now; try again"
                    )
                )

        self.link.claim(key, False).addCallbacks(claimed, failed)

    def ban(self, operator: IChatParticipant, target: IChatParticipant) -> None:
        """An operator here bans a user of another node: their node does it."""
        assert isinstance(target, RemoteParticipant)
        self.link.publish(
            {
                "t": "ban",
                "to": target.origin,
                "key": wire.name_key(target.name),
                "by": operator.name,
            }
        )

    def banned(self, kind: str, value: str, entry: BanRecord) -> None:
        """
        A ban was made here: every node keeps it, and so does the link, for
        the nodes that hear of it later.
        """
        self._store_ban(value, {"kind": kind, **entry.as_json()})
        self.link.publish(
            {"t": "banned", "kind": kind, "value": value, **entry.as_json()}
        )

    def unbanned(self, target: str, lifted: list[str]) -> None:
        """Bans were lifted here: on every node, and in the link."""
        now = self.clock.seconds()
        for value in lifted:
            self._store_ban(value, {"lifted": True, "time": now})
        self.link.publish({"t": "unban", "target": target})

    def motd_set(self, text: str) -> None:
        """An operator here set the message of the day: for every node."""
        if not self.link.store_motd(text):
            self._unsaved_motd = text
        self.link.publish({"t": "motd", "text": text})

    def is_remote(self, participant: IChatParticipant) -> bool:
        """Whether C{participant} is another node's user."""
        return isinstance(participant, RemoteParticipant)

    def forward_private(
        self, recipient: RemoteParticipant, event: wire.PrivateMessage
    ) -> None:
        """Send a private line to the node of its recipient."""
        self.link.publish(
            {
                "t": "priv",
                "to": recipient.origin,
                "key": wire.name_key(recipient.name),
                "sender": event.sender,
                "recipient": event.recipient,
                "text": event.text,
                "time": event.time,
            }
        )

    def forward_disconnect(
        self, target: RemoteParticipant, error: str, farewell: str
    ) -> None:
        """Ask the node of C{target} to close their connection (a kick)."""
        self.link.publish(
            {
                "t": "kick",
                "to": target.origin,
                "key": wire.name_key(target.name),
                "error": error,
                "farewell": farewell,
            }
        )

    # Bans and the motd kept by the link

    def _store_ban(self, value: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, sort_keys=True, separators=(",", ":"))
        if not self.link.store_ban(value, data):
            self._unsaved_bans[value] = record

    def _share_settings(self) -> None:
        """
        Write what changed here while the link was down, then read the
        cluster's bans and motd and merge them with this node's.
        """
        # Told on the bus again too: the nodes that are up now did not
        # hear of them either.
        unsaved, self._unsaved_bans = self._unsaved_bans, {}
        for value, record in unsaved.items():
            if record.get("lifted"):
                self._store_ban(value, record)
                self.link.publish({"t": "unban", "target": value})
            else:
                entry = BanRecord(record["name"], record["by"], record["time"])
                self.banned(record["kind"], value, entry)
        motd, self._unsaved_motd = self._unsaved_motd, None
        if motd is not None:
            self.motd_set(motd)

        def read_motd(bans: dict[str, str]) -> Deferred[None]:
            return self.link.read_motd().addCallback(
                lambda motd: self._merge_settings(bans, motd)
            )

        def failed(reason: Failure) -> None:
            self.log.warn(
                "the cluster's bans and motd could not be read (next time the"
                " link comes up): {error}",
                error=reason.getErrorMessage(),
            )

        self.link.read_bans().addCallback(read_motd).addErrback(failed)

    def _merge_settings(self, bans: dict[str, str], motd: str | None) -> None:
        """
        Take the cluster's bans and motd into this node's state (see the
        module's docstring for the rule), disconnecting the local users a
        ban learned now keeps out; give it the bans it never heard of.
        """
        state = self.chat.state
        shared: dict[str, dict[str, Any]] = {}
        for value, data in bans.items():
            try:
                record = json.loads(data)
                record["time"] = float(record["time"])
                if not record.get("lifted"):
                    record["name"] = str(record["name"])
                    record["by"] = str(record["by"])
            except (ValueError, TypeError, KeyError) as error:
                self.log.warn(
                    "the cluster's ban of {value} was not understood: {error!r}",
                    value=value,
                    error=error,
                )
                continue
            shared[value] = record
        learned = ServerRecords()
        changed = False
        lifted = given = 0
        for value, record in shared.items():
            local = state.fingerprints.get(value) or state.addresses.get(value)
            if record.get("lifted"):
                # Lifted after (or as) it was made: gone here too.
                if local is not None and local.time <= record["time"]:
                    state.fingerprints.pop(value, None)
                    state.addresses.pop(value, None)
                    changed = True
                    lifted += 1
                continue
            if local is not None and local.time >= record["time"]:
                continue
            entry = BanRecord(record["name"], record["by"], record["time"])
            fingerprint = record.get("kind") == "fingerprint"
            for kept in (
                (state.fingerprints, learned.fingerprints)
                if fingerprint
                else (state.addresses, learned.addresses)
            ):
                kept[value] = entry
            changed = True
        for kind, kept in (
            ("fingerprint", state.fingerprints),
            ("address", state.addresses),
        ):
            for value, entry in list(kept.items()):
                if value in shared and shared[value]["time"] >= entry.time:
                    continue
                # Never heard of by the cluster (or newer than what it
                # has): every node gets it.
                self.banned(kind, value, entry)
                given += 1
        motd_news = ""
        if motd is None:
            if state.motd:
                if self.link.store_motd(state.motd):
                    # Not an operator's news: users who have it already
                    # (every node's, after Redis lost its data) are not
                    # told it again.
                    self.link.publish({"t": "motd", "text": state.motd, "again": True})
                motd_news = "; the motd given to the cluster"
        elif motd != state.motd:
            self._take_motd(motd)
            changed = True
            motd_news = "; the motd taken from the cluster"
        if changed:
            state.keep()
        count = len(learned.fingerprints) + len(learned.addresses)
        if count or lifted or given or motd_news:
            self.log.info(
                "bans merged with the cluster's: {count} learned, {lifted}"
                " lifted, {given} given to the cluster{motd}",
                count=count,
                lifted=lifted,
                given=given,
                motd=motd_news,
            )
        if learned.fingerprints or learned.addresses:
            self.chat.turn_away(learned)

    def _take_motd(self, text: str) -> None:
        """Another node's message of the day: take it, and tell local users."""
        self.chat.state.motd = text
        event = wire.Notice(f"motd: {text or '(none)'}")
        for participant in self.chat.local_participants():
            participant.deliver(event)

    # What this node is

    def _entry(self, participant: IChatParticipant) -> dict[str, Any]:
        """A local user, as the others learn of them."""
        return {
            "name": participant.name,
            "v": self.chat.is_verified(participant),
            "rooms": self.chat.rooms_of(participant),
        }

    def _hello(self, reply: bool) -> ClusterMessage:
        users = []
        topics: dict[str, list[Any]] = {}
        for participant in self.chat.local_participants():
            entry = self._entry(participant)
            users.append(entry)
            for name in entry["rooms"]:
                room = self.chat.room(name)
                # A topic cleared is told too: it is newer than the old one.
                if room is not None and (room.topic or room.topic_time):
                    topics[room.name] = [
                        room.topic,
                        room.topic_setter,
                        room.topic_time,
                    ]
        return {"t": "hello", "reply": reply, "users": users, "topics": topics}

    def _publish_presence(self, message: ClusterMessage) -> None:
        """Publish a message that changes who is where, numbered."""
        self._seq += 1
        self.link.publish(dict(message, s=self._seq))

    # Presence kept by the link

    def _changed(self, name: str) -> None:
        """What the link keeps of the local user called C{name} changed."""
        self._dirty.add(wire.name_key(name))
        if self._write is None and self._running and self.link.up:
            # Once per reactor turn, however many changes it makes.
            self._write = self.clock.callLater(0, self.store_presence)

    def store_presence(self) -> None:
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
                if found is None or isinstance(found, RemoteParticipant):
                    users[key] = None
                else:
                    participants.append(found)
        for participant in participants:
            users[wire.name_key(participant.name)] = json.dumps(
                self._entry(participant), separators=(",", ":")
            )

        def stored(done: bool) -> None:
            if not done:
                # What Redis has is not known: all of it, next time.
                self._whole = True

        self.link.store_presence(users, self._seq, whole).addCallback(stored)

    def _read_presence(self) -> None:
        """Read the other live nodes' users from the link, and take them."""
        self._read_again = False

        def failed(reason: Failure) -> None:
            self._read_again = True
            self.log.warn(
                "the other nodes' users could not be read (again at the next"
                " beat): {error}",
                error=reason.getErrorMessage(),
            )

        self.link.read_presence().addCallbacks(self._take_presence, failed)

    def _take_presence(self, found: dict[str, Presence]) -> None:
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
                self._mirror(origin, users)
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
            self.last_seen[origin] = self.clock.seconds()

    # What the others tell this node

    def _user(self, origin: str, name: str, verified: bool) -> RemoteParticipant | None:
        """
        The user called C{name} on node C{origin}, known from now on.  The
        newest news of a name wins over an older node's; a local user's
        name is never shadowed (the claims sort that out).
        """
        key = wire.name_key(name)
        users = self.remote.setdefault(origin, {})
        known = users.get(key)
        if known is not None:
            return known
        holder = self.chat.find(name)
        if holder is not None:
            if not isinstance(holder, RemoteParticipant):
                self.log.warn(
                    "node {node} has a user called {name}, as this one does",
                    node=origin,
                    name=name,
                )
                return None
            self.chat.leave(holder, announce=False)
        participant = RemoteParticipant(self, origin, name)
        self.chat.add_remote(participant, verified)
        users[key] = participant
        return participant

    def _known(self, origin: str, name: str) -> RemoteParticipant | None:
        return self.remote.get(origin, {}).get(wire.name_key(name))

    def _drop(self, origin: str, reason: str, *, announce: bool = True) -> None:
        """Let every user of node C{origin} go."""
        self.last_seen.pop(origin, None)
        for participant in list(self.remote.pop(origin, {}).values()):
            self.chat.leave(participant, reason, announce=announce)

    def _mirror(self, origin: str, users: list[dict[str, Any]]) -> None:
        """
        Node C{origin}'s users are C{users} (all of them, where they are
        now): take them, quietly.
        """
        listed: set[str] = set()
        for user in users:
            participant = self._user(origin, str(user["name"]), bool(user["v"]))
            if participant is None:
                continue
            listed.add(wire.name_key(participant.name))
            rooms = set(self.chat.rooms_of(participant))
            wanted = {wire.name_key(name) for name in user["rooms"]}
            for room_name in user["rooms"]:
                if room_name not in rooms:
                    self.chat.enter_remote(participant, room_name)
            for room_name in rooms:
                if wire.name_key(room_name) not in wanted:
                    self.chat.part_remote(participant, room_name)
        for key, participant in list(self.remote.get(origin, {}).items()):
            if key not in listed:
                self.chat.leave(participant, announce=False)

    def _on_hello(self, origin: str, message: ClusterMessage) -> None:
        self._mirror(origin, message["users"])
        self._synced.add(origin)
        self._on_late_hello(origin, message)

    def _on_late_hello(self, origin: str, message: ClusterMessage) -> None:
        """
        A hello whose users this node knows (or newer ones, from the
        link): take its topics, and reply if asked.
        """
        for room_name, (topic, setter, *when) in message["topics"].items():
            room = self.chat.room(room_name)
            # The newer topic wins: a node that was cut off must not bring
            # back the topic it knew then (an older node sends no time).
            time = float(when[0]) if when else 0.0
            if room is None or time < room.topic_time:
                continue
            told = (topic, setter) != (room.topic, room.topic_setter)
            room.topic, room.topic_setter, room.topic_time = topic, setter, time
            if told:
                room.broadcast(wire.TopicInfo(room.name, topic, setter))
        if message["reply"]:
            self._publish_presence(self._hello(reply=False))

    def _on_beat(self, origin: str, message: ClusterMessage) -> None:
        pass

    def _on_bye(self, origin: str, message: ClusterMessage) -> None:
        self._drop(origin, "their server stopped")

    def _on_join(self, origin: str, message: ClusterMessage) -> None:
        participant = self._user(origin, message["name"], bool(message["v"]))
        if participant is None:
            return
        room = self.chat.enter_remote(participant, message["room"])
        if message["a"]:
            room.broadcast(
                wire.Joined(self.chat.label(participant), room.name),
                exclude=participant,
            )

    def _on_part(self, origin: str, message: ClusterMessage) -> None:
        participant = self._known(origin, message["name"])
        if participant is None:
            return
        room = self.chat.part_remote(participant, message["room"])
        if room is not None and message["a"]:
            room.broadcast(wire.Parted(self.chat.label(participant), room.name))

    def _on_leave(self, origin: str, message: ClusterMessage) -> None:
        participant = self._known(origin, message["name"])
        if participant is not None:
            self.chat.leave(
                participant,
                message["reason"],
                announce=bool(message["a"]),
                message=message["message"],
            )

    def _on_say(self, origin: str, message: ClusterMessage) -> None:
        room = self.chat.room(message["room"])
        if room is None:
            return
        kind = wire.Action if message["k"] == "a" else wire.Message
        event = kind(message["sender"], message["text"], room.name, message["time"])
        room.broadcast(event)
        # Kept here too; a shared history (StreamHistory) has it already.
        remember = getattr(self.chat.history, "remember", self.chat.history.record)
        remember(event)

    def _on_nick(self, origin: str, message: ClusterMessage) -> None:
        participant = self._known(origin, message["old"])
        if participant is None:
            # Not seen yet (or let go): known from now on, quietly.
            participant = self._user(origin, message["new"], bool(message["v"]))
            if participant is not None:
                for room_name in message["rooms"]:
                    self.chat.enter_remote(participant, room_name)
            return
        new_key = wire.name_key(message["new"])
        holder = self.chat.find(message["new"])
        if holder is not None and holder is not participant:
            if not isinstance(holder, RemoteParticipant):
                return
            self.chat.leave(holder, announce=False)
        users = self.remote[origin]
        del users[wire.name_key(participant.name)]
        users[new_key] = participant
        self.chat.rename_now(participant, message["new"])

    def _on_topic(self, origin: str, message: ClusterMessage) -> None:
        room = self.chat.room(message["room"])
        if room is None:
            return
        room.topic, room.topic_setter = message["topic"], message["setter"]
        room.topic_time = float(message.get("time", self.clock.seconds()))
        room.broadcast(wire.TopicInfo(room.name, room.topic, room.topic_setter))

    def _local(self, message: ClusterMessage) -> IChatParticipant | None:
        """The local user a message is for, if it is for this node."""
        if message["to"] != self.link.node_id:
            return None
        participant = self.chat.find(message["key"])
        if participant is None or isinstance(participant, RemoteParticipant):
            return None
        return participant

    def _on_priv(self, origin: str, message: ClusterMessage) -> None:
        recipient = self._local(message)
        if recipient is None:
            return
        event = wire.PrivateMessage(
            message["sender"], message["recipient"], message["text"], message["time"]
        )
        recipient.deliver(event)
        sender = self._known(origin, message["sender"])
        if (
            sender is not None
            and self.chat.is_verified(sender)
            and self.chat.is_verified(recipient)
        ):
            # Between certificate holders, kept on both sides' nodes (if
            # --store-private), as the sender's node keeps it.
            self.chat.history.record(event)

    def _on_kick(self, origin: str, message: ClusterMessage) -> None:
        target = self._local(message)
        if target is not None:
            self.chat.leave(target, message["farewell"])
            target.disconnect(message["error"], message["farewell"])

    def _on_ban(self, origin: str, message: ClusterMessage) -> None:
        target = self._local(message)
        operator = self._known(origin, message["by"])
        if target is not None and operator is not None:
            # Checked by the operator's node; the ban is done (and announced
            # to the cluster) as if made here.
            self.chat.ban_for(operator, target)

    def _on_banned(self, origin: str, message: ClusterMessage) -> None:
        entry = BanRecord(
            str(message["name"]), str(message["by"]), float(message["time"])
        )
        kept = (
            self.chat.state.fingerprints
            if message["kind"] == "fingerprint"
            else self.chat.state.addresses
        )
        kept[str(message["value"])] = entry
        self.chat.state.keep()

    def _on_unban(self, origin: str, message: ClusterMessage) -> None:
        if self.chat.state.unban(str(message["target"])):
            self.chat.state.keep()

    def _on_motd(self, origin: str, message: ClusterMessage) -> None:
        text = str(message["text"])
        if message.get("again") and text == self.chat.state.motd:
            return
        self._take_motd(text)
        self.chat.state.keep()

    def _on_takeover(self, origin: str, message: ClusterMessage) -> None:
        # A certificate holder's name: no guest may take it here either.
        if self.chat.state.add_holder(message["name"]):
            self.chat.state.keep()
        holder = self.chat.find(message["name"])
        if holder is None:
            return
        if isinstance(holder, RemoteParticipant):
            if holder.origin != origin:
                self.chat.leave(holder, announce=False)
            return
        if self.chat.is_verified(holder):
            self.log.info(
                "{name} connected again elsewhere; closing the older connection",
                name=holder.name,
            )
            self.chat.leave(holder, "connected again")
            holder.disconnect(
                "you connected again from elsewhere; this connection is closed",
                "connected again",
            )
        else:
            self._rename_guest(
                holder, f"the name {holder.name} belongs to a certificate holder"
            )


def _renewed_later(reason: Failure) -> None:
    """
    A claim Redis did not answer: the next renewal makes it again, or
    finds it lost.
    """


def local_only(participants: Iterable[IChatParticipant]) -> list[IChatParticipant]:
    """The participants of this node (not another node's)."""
    return [p for p in participants if not isinstance(p, RemoteParticipant)]
