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

Bans and the message of the day are also kept by the link, and merged
when it comes up (L{securemsg.cluster.settings}); so is presence, who is on
which node, with the numbering that orders the bus against it
(L{securemsg.cluster.presence}).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from securemsg.cluster.guests import GuestNumbers
from securemsg.cluster.history import StreamHistory
from securemsg.cluster.interface import ClusterMessage, IClusterHandler, IClusterLink
from securemsg.cluster.presence import PresenceKeeper, user_entry
from securemsg.cluster.settings import SharedSettings
from securemsg.core.hub import RELAYED
from securemsg.core.participant import IChatParticipant
from securemsg.protocol import wire

if TYPE_CHECKING:
    from securemsg.core.hub import ChatHub, Room
    from securemsg.core.records import BanRecord

#: What local users are told when the other servers go out of reach, and
#: when they are back.
OUT_OF_REACH = (
    "the other servers of this chat are out of reach; you see only the people"
    " on this one until they are back"
)
BACK_IN_REACH = "the other servers of this chat are within reach again"


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
    @ivar settings: the bans and the motd shared with the cluster.
    @ivar presence: the local users kept in the link, the others' read.
    @ivar guests: the guest numbers reserved for this node's chat.
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
        self.settings = SharedSettings(chat, link, clock)
        self.presence = PresenceKeeper(
            chat, link, clock, is_remote=self.is_remote, mirror=self._take_users
        )
        self.guests = GuestNumbers(link)
        chat.guest_numbers = self.guests.take
        chat.cluster = self
        # What each kind of message does (the _on_* methods), found once,
        # not by name for each message the bus brings.
        self._handlers: dict[str, Callable[[str, ClusterMessage], None]] = {
            name.removeprefix("_on_"): getattr(self, name)
            for name in dir(type(self))
            if name.startswith("_on_")
        }
        # A room line another node's user said: kept here too, where a
        # shared history (StreamHistory) has it in Redis already.
        history = chat.history
        self._remember: Callable[[wire.Replayable], None] = (
            history.remember if isinstance(history, StreamHistory) else history.record
        )

    # What the metrics read (securemsg.server.metrics.ClusterState)

    @property
    def link_is_up(self) -> bool:
        """Whether the other nodes are within reach now."""
        return bool(self.link.up)

    @property
    def publish_backlog(self) -> int:
        """Messages and commands waiting to be sent to Redis or answered."""
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
        self.presence.start()
        self.link.start(self)

    def stop(self) -> None:
        """
        Tell the others this node is going, stop beating, and let the
        link forget its users.
        """
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        self.presence.stop()

    def beat(self) -> None:
        """
        Say this node is alive, renew the claims of its users' names, and
        let go of the nodes not heard for a claim's lifetime.
        """
        if self.link.up:
            self.link.publish({"t": "beat"})
            self._renew()
            self.presence.beat()
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
        self.chat.flush()
        if self._up is False:
            self.log.info("the other nodes are within reach again")
            for participant in self.chat.local_participants():
                participant.deliver(wire.Notice(BACK_IN_REACH))
        else:
            self.log.info("cluster node {node} joined", node=self.link.node_id)
        self._up = True
        self.presence.publish(self._hello(reply=True))
        self.presence.link_up()
        self._renew()
        self.guests.refill()
        self.settings.share()

    def link_down(self, reason: str) -> None:
        if self._up is False:
            return
        self.chat.flush()
        self._up = False
        self.log.warn("the other nodes are out of reach: {reason}", reason=reason)
        for participant in self.chat.local_participants():
            participant.deliver(wire.Notice(OUT_OF_REACH))
        # Nobody can tell what happens there meanwhile: their users are
        # announced again (quietly) when the link is back.
        for origin in list(self.remote):
            self._drop(origin, "", announce=False)
        self.presence.link_down()

    @contextmanager
    def receiving(self) -> Iterator[None]:
        """
        The lines of one read of the bus reach the members here in as few
        deliveries as the chat allows (see L{ChatHub.relay}).
        """
        with self.chat.batch(RELAYED):
            yield

    def received(self, message: ClusterMessage) -> None:
        origin = message.get("n")
        kind = message.get("t")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if (
            not isinstance(origin, str)
            or origin == self.link.node_id
            or handler is None
        ):
            return
        self.last_seen[origin] = self.clock.seconds()
        if kind != "say":
            # Whatever this does comes after the lines held; a line is
            # held after them (ChatHub.relay).
            self.chat.flush()
        if self.presence.shown_already(origin, message):
            # What the users taken from the link show already; but a
            # hello's topics (not kept there) and the reply it asks for
            # still count.
            if kind != "hello":
                return
            handler = self._late_hello
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
        self.presence.changed(participant.name)
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
            self.presence.changed(participant.name)
            self.presence.publish(
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
            self.presence.changed(participant.name)
            self.presence.publish(
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
        self.presence.changed(participant.name)
        self.presence.publish(
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
        self.presence.changed(old_name)
        self.presence.changed(participant.name)
        self.presence.publish(
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
        self.settings.banned(kind, value, entry)

    def unbanned(self, target: str, lifted: list[str]) -> None:
        """Bans were lifted here: on every node, and in the link."""
        self.settings.unbanned(target, lifted)

    def motd_set(self, text: str) -> None:
        """An operator here set the message of the day: for every node."""
        self.settings.motd_set(text)

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

    # What this node is

    def _hello(self, reply: bool) -> ClusterMessage:
        users = []
        topics: dict[str, list[Any]] = {}
        for participant in self.chat.local_participants():
            entry = user_entry(self.chat, participant)
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

    def _take_users(self, origin: str, users: list[dict[str, Any]]) -> None:
        """
        Node C{origin}'s users, all of them, as the link keeps them (newer
        than what was heard on the bus): take them; the node is alive.
        """
        self._mirror(origin, users)
        self.last_seen[origin] = self.clock.seconds()

    def _on_hello(self, origin: str, message: ClusterMessage) -> None:
        self._mirror(origin, message["users"])
        self.presence.synced(origin)
        self._late_hello(origin, message)

    def _late_hello(self, origin: str, message: ClusterMessage) -> None:
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
            self.presence.publish(self._hello(reply=False))

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
        self.chat.relay(room, event)
        self._remember(event)

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
        self.settings.heard_ban(message)

    def _on_unban(self, origin: str, message: ClusterMessage) -> None:
        self.settings.heard_unban(message)

    def _on_motd(self, origin: str, message: ClusterMessage) -> None:
        self.settings.heard_motd(message)

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
