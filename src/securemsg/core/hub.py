# -*- test-case-name: tests.test_hub -*-
"""
The chat itself: who is here under which names, which rooms they are in,
and who gets what.

No I/O happens here.  L{ChatHub} talks to participants only through
L{IChatParticipant.deliver}, so it can be tested with plain objects; what
was said is kept by a L{securemsg.core.history.HistoryStore}.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from securemsg.core.flood import TokenBucket
from securemsg.core.history import HistoryStore, MemoryHistory
from securemsg.core.limits import REPLY_ENTRY_OVERHEAD, Limits
from securemsg.core.participant import IChatParticipant
from securemsg.core.records import BanRecord, ServerRecords
from securemsg.protocol import wire

if TYPE_CHECKING:
    from securemsg.core.others import OtherNodes

_T = TypeVar("_T")

#: Arrivals and departures announced in one room at once ...
ANNOUNCE_BURST: Final = 20
#: ... and per second after that.  The rest are not announced (a client
#: that connects and closes over and over would otherwise send every member
#: of the default room hundreds of lines a second); the next one announced
#: is preceded by a notice of how many were not.
ANNOUNCE_RATE: Final = 5.0


class _Relayed:
    """The speaker of the lines relayed from other nodes (L{RELAYED})."""

    def __repr__(self) -> str:
        return "RELAYED"


#: Whom L{ChatHub.batch} is opened for to hold the lines other nodes relay
#: (L{ChatHub.relay}): a cluster node opens it for each read of the bus.
RELAYED: Final = _Relayed()


def _size(*texts: str) -> int:
    """What one entry of a reply counts against L{Limits.reply_bytes}."""
    return sum(len(text.encode("utf-8")) for text in texts) + REPLY_ENTRY_OVERHEAD


def _message_size(message: wire.Replayable) -> int:
    if isinstance(message, wire.PrivateMessage):
        return _size(message.text, message.sender, message.recipient)
    return _size(message.text, message.sender, message.room or "")


@dataclass(eq=False)
class Room:
    """
    One room: its members in order of arrival, and its topic.
    """

    name: str
    members: dict[IChatParticipant, None] = field(default_factory=dict)
    topic: str = ""
    topic_setter: str | None = None
    # When the topic was set (the clock's seconds): of two topics the nodes
    # of a cluster tell each other, the newer wins.
    topic_time: float = 0.0
    # Arrivals and departures: the rate they are announced at, and how many
    # were not announced since the last one that was.
    announcements: TokenBucket | None = None
    unannounced: int = 0
    # The members as a tuple, made again only when they change: a broadcast
    # must not see the room change under it, and copying the members for
    # every line would cost as much as the broadcast itself.
    _snapshot: tuple[IChatParticipant, ...] | None = None

    def add(self, member: IChatParticipant) -> None:
        """Take C{member} in."""
        self.members[member] = None
        self._snapshot = None

    def remove(self, member: IChatParticipant) -> None:
        """Let C{member} go."""
        del self.members[member]
        self._snapshot = None

    def broadcast(self, event: wire.Event, exclude: object = None) -> None:
        """Give C{event} to every member but C{exclude}."""
        for member in self._snapshot or self._take_snapshot():
            if member is not exclude:
                member.deliver(event)

    def broadcast_all(self, events: tuple[wire.Event, ...], exclude: object) -> None:
        """Give C{events}, in order, to every member but C{exclude}."""
        if len(events) == 1:
            self.broadcast(events[0], exclude)
            return
        for member in self._snapshot or self._take_snapshot():
            if member is not exclude:
                member.deliver_all(events)

    def _take_snapshot(self) -> tuple[IChatParticipant, ...]:
        self._snapshot = tuple(self.members)
        return self._snapshot

    def names(self) -> tuple[str, ...]:
        """The members' names, in order of arrival."""
        return tuple(member.name for member in self.members)


# One per connection: slots keep it small.
@dataclass(eq=False, slots=True)
class _Membership:
    """
    The rooms one participant is in (in order of joining), the current one,
    and how the server knows them.
    """

    rooms: dict[str, Room] = field(default_factory=dict)
    current: Room | None = None
    verified: bool = False
    fingerprint: str | None = None
    address: str | None = None


#: What a reload hook returns: whether it worked, and what to tell.
ReloadResult = tuple[bool, str]

#: Commands kept for a participant while they wait to join a room whose
#: history is being read; the flood limit makes more than a few rare.
MAX_WAITING_COMMANDS = 100


class ChatHub:
    """
    Everyone connected, their names, and the rooms.

    Everyone starts in the default room; C{/join} adds rooms and makes the
    joined one current, C{/part} leaves one.

    @ivar log_messages: if true, the text of chat lines is logged; it is off
        by default because this is a private messenger.
    @ivar limits: the L{Limits} the chat is held to, the server's
        connections too (L{securemsg.server.factory.ChatServerFactory}).
    @ivar guest_numbers: where guests' numbers come from, if set (a
        cluster node's numbers, unique across the cluster: see
        L{securemsg.cluster.guests}); when it is not set, or gives
        L{None}, guests are numbered here from 1.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        default_room: str = wire.DEFAULT_ROOM,
        history: HistoryStore | None = None,
        guest_prefix: str = "guest-",
        log_messages: bool = False,
        state: ServerRecords | None = None,
        operators: Iterable[str] = (),
        certificates: bool = False,
        reload: Callable[[], ReloadResult] | None = None,
        limits: Limits | None = None,
    ) -> None:
        """
        @param clock: the time source for message times.
        @param default_room: the room everyone starts in.
        @param history: where messages are kept; by default in memory.
        @param state: bans, the message of the day and the names of
            certificate holders, kept across restarts.
        @param operators: names that may use the operators' commands when
            a client certificate vouches for them.
        @param certificates: whether the server checks client certificates;
            then guests are marked C{~name} to others.
        @param reload: what C{/reload} calls.
        @param limits: what the chat is held to: the past messages replayed
            on joining (L{Limits.replay}), the rooms (L{Limits.max_rooms},
            L{Limits.max_rooms_per_address}), announcements
            (L{Limits.announce_max}) and the bounds of replies that can be
            large (L{Limits.reply_bytes}, L{Limits.list_max});
            L{Limits}' defaults if not given.
        """
        problem = wire.room_problem(default_room)
        if problem is not None:
            raise ValueError(problem)
        self.clock = clock
        self.default_room = default_room
        self.limits = limits if limits is not None else Limits()
        self.history: HistoryStore = (
            history if history is not None else MemoryHistory(clock, self.limits.replay)
        )
        self._guest_prefix = guest_prefix
        self._guest_numbers = itertools.count(1)
        self.guest_numbers: Callable[[], int | None] | None = None
        self.log_messages = log_messages
        # Everyone here in order of arrival, and the same people by name key.
        self._members: dict[IChatParticipant, _Membership] = {}
        self._by_name: dict[str, IChatParticipant] = {}
        self.rooms: dict[str, Room] = {}
        self.state = state if state is not None else ServerRecords()
        self.operators = frozenset(wire.name_key(name) for name in operators)
        self.certificates = certificates
        self.reload = reload
        # For each address, the rooms its participants are in (but the
        # default room), each with how many of them are in it.
        self._address_rooms: dict[str, dict[str, int]] = {}
        # Rooms whose history is being read, with how many wait for each;
        # and who waits, with the commands they sent meanwhile.
        self._loading: dict[str, int] = {}
        self._waiting: dict[IChatParticipant, list[wire.Command]] = {}
        # Whose batch is open (see batch()), and the lines they said to one
        # room in it that are not handed out yet.
        self._batch: IChatParticipant | _Relayed | None = None
        self._held: list[wire.Event] = []
        self._held_room: Room | None = None
        self._held_speaker: IChatParticipant | None = None
        # The other nodes of a cluster (--cluster), told what happens to
        # the users here; set by ClusterNode.  None: this is the only one.
        self.cluster: OtherNodes | None = None

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, participant: object) -> bool:
        return participant in self._members

    def names(self) -> list[str]:
        """The names of everyone here, in the order they arrived."""
        return [member.name for member in self._members]

    def find(self, name: str) -> IChatParticipant | None:
        """
        The participant called C{name} (ignoring case, and the C{~} that
        marks a guest), if any.
        """
        return self._by_name.get(wire.name_key(name.removeprefix("~")))

    def room(self, name: str) -> Room | None:
        """The room called C{name} (ignoring case), if it exists."""
        return self.rooms.get(wire.name_key(name))

    def rooms_of(self, participant: IChatParticipant) -> list[str]:
        """The rooms a participant is in, in the order they joined them."""
        membership = self._members.get(participant)
        return [room.name for room in membership.rooms.values()] if membership else []

    def current_room(self, participant: IChatParticipant) -> str | None:
        """Where a participant's plain lines go."""
        membership = self._members.get(participant)
        if membership is None or membership.current is None:
            return None
        return membership.current.name

    def label(self, participant: IChatParticipant) -> str:
        """
        The name as others see it: where client certificates are checked,
        a guest without one is marked C{~name}.
        """
        name: str = participant.name
        membership = self._members.get(participant)
        if self.certificates and membership is not None and not membership.verified:
            return "~" + name
        return name

    def is_operator(self, participant: IChatParticipant) -> bool:
        """Operators are the listed names, vouched for by a certificate."""
        membership = self._members.get(participant)
        return (
            membership is not None
            and membership.verified
            and wire.name_key(participant.name) in self.operators
        )

    def _next_guest_name(self) -> str:
        while True:
            number = self.guest_numbers() if self.guest_numbers is not None else None
            if number is None:
                number = next(self._guest_numbers)
            name = f"{self._guest_prefix}{number}"
            if wire.name_key(name) not in self._by_name:
                return name

    # Batches

    @contextmanager
    def batch(self, participant: IChatParticipant | _Relayed) -> Iterator[None]:
        """
        Within: the chat lines C{participant} says to a room one after the
        other are held, and each member gets all of them in one delivery,
        at the latest when the batch ends (even by an exception).

        The server opens one for each read of a client's input: a client
        that sends many lines at once then costs each member of the room
        one delivery per read instead of one per line, which is most of the
        cost of a busy room.  Nothing is reordered: before anything else is
        delivered (a private line, a line to another room, an arrival or a
        departure, another speaker's line...), what is held is handed out.
        A batch opened within another changes nothing: the outer one holds.

        A batch for L{RELAYED} holds the lines of other nodes' users instead
        (L{relay}): a cluster node opens one for each read of the bus.
        """
        if self._batch is not None:
            yield
            return
        self._batch = participant
        try:
            yield
        finally:
            self._batch = None
            self._hand_out_held()

    def _hand_out_held(self) -> None:
        """
        Hand out the lines held in the open batch; the hub's entry points
        (L{join}, L{leave}, L{handle} and L{_speak}) do this first unless
        they add to them.
        """
        room = self._held_room
        if room is None:
            return
        events = tuple(self._held)
        speaker = self._held_speaker
        self._held.clear()
        self._held_room = self._held_speaker = None
        room.broadcast_all(events, exclude=speaker)

    def _announces(
        self, room: Room, *, present: IChatParticipant | None = None
    ) -> bool:
        """
        Whether an arrival or departure is announced in C{room}: whether it
        has at most C{announce_max} members besides the one arriving or
        leaving (C{present}, if still counted among them), and the room's
        announcements are within L{ANNOUNCE_RATE}.
        """
        others = len(room.members) - (present in room.members)
        announce_max = self.limits.announce_max
        if announce_max and others > announce_max:
            return False
        return not others or self._within_announcement_rate(room, present)

    def _within_announcement_rate(
        self, room: Room, present: IChatParticipant | None
    ) -> bool:
        """
        Whether one more arrival or departure may be announced in C{room}
        now (see L{ANNOUNCE_RATE}); if so, first tell its members (but
        C{present}) how many were not.
        """
        bucket = room.announcements
        if bucket is None:
            bucket = room.announcements = TokenBucket(
                self.clock, ANNOUNCE_BURST, ANNOUNCE_RATE
            )
        if not bucket.allow():
            room.unannounced += 1
            return False
        if room.unannounced:
            room.broadcast(
                wire.Notice(
                    f"{room.unannounced} arrivals and departures in {room.name}"
                    " were not announced (too many at once)"
                ),
                exclude=present,
            )
            room.unannounced = 0
        return True

    def _neighbours(
        self, participant: IChatParticipant, *, arrivals_and_departures: bool = False
    ) -> list[IChatParticipant]:
        """
        Everyone who shares a room with C{participant}, each once (for an
        arrival or departure, only in rooms small enough to announce it).
        """
        seen: dict[IChatParticipant, None] = {}
        for room in self._members[participant].rooms.values():
            if arrivals_and_departures and not self._announces(
                room, present=participant
            ):
                continue
            for member in room.members:
                if member is not participant:
                    seen[member] = None
        return list(seen)

    # Arriving and leaving

    def join(
        self,
        participant: IChatParticipant,
        welcome: Callable[[str], Iterable[wire.Event]] | None = None,
        *,
        identity: str | None = None,
        fingerprint: str | None = None,
        address: str | None = None,
    ) -> str:
        """
        Let a participant in, welcome them, and take them into the default
        room (telling its members, and replaying its history).

        @param welcome: the events to give the newcomer first, given their
            name (the server's greeting).
        @param identity: the name a verified client certificate gives; it
            is theirs (a guest holding it is renamed, and an older
            connection of the same holder is closed).  Without one, the
            participant is a guest with a new unique name.
        @param fingerprint: the client certificate's fingerprint (for bans).
        @param address: the client's IP address, or the network that
            stands for its client (an IPv6 /64), by which a guest is banned.
        @return: the name given to the participant.
        """
        self._hand_out_held()
        if identity is not None:
            self._claim(identity)
            name = identity
            if self.state.add_holder(identity):
                self.state.keep()
        else:
            name = self._next_guest_name()
        participant.name = name
        self._members[participant] = _Membership(
            verified=identity is not None, fingerprint=fingerprint, address=address
        )
        self._by_name[wire.name_key(name)] = participant
        if self.cluster is not None:
            self.cluster.joined(participant, identity is not None)
        for event in welcome(name) if welcome is not None else ():
            participant.deliver(event)
        if self.state.motd:
            participant.deliver(wire.Notice(f"motd: {self.state.motd}"))
        self.enter(participant, self.default_room)
        return name

    def _claim(self, identity: str) -> None:
        """Free a certificate holder's name for them."""
        holder = self.find(identity)
        if holder is None:
            return
        if self.cluster is not None and self.cluster.is_remote(holder):
            # Its own node hears of the claim and lets them go.
            self.leave(holder, announce=False)
            return
        if self._members[holder].verified:
            self.log.info(
                "{name} connected again; closing the older connection", name=identity
            )
            self.leave(holder, "connected again")
            holder.disconnect(
                "you connected again from elsewhere; this connection is closed",
                "connected again",
            )
        else:
            holder.deliver(
                wire.Error(f"the name {holder.name} belongs to a certificate holder")
            )
            self._change_name(holder, self._next_guest_name())

    def leave(
        self,
        participant: IChatParticipant,
        reason: str = "",
        *,
        announce: bool = True,
        message: str = "",
    ) -> None:
        """
        Let a participant go and (unless C{announce} is false) tell those
        who share a room with them.  Leaving twice, or leaving without having
        joined, does nothing.

        @param reason: the server's reason (a kick, a timeout, a lost
            connection), if any.
        @param message: the participant's own parting words (C{/quit
            MESSAGE}), shown as theirs, never as a reason.
        """
        if participant not in self._members:
            return
        self._waiting.pop(participant, None)
        self._hand_out_held()
        neighbours = self._neighbours(participant, arrivals_and_departures=True)
        # Made only for someone to tell (most departures leave an empty room).
        event = (
            wire.Departed(
                self.label(participant), wire.sanitize(reason), wire.sanitize(message)
            )
            if (announce and neighbours) or self.cluster is not None
            else None
        )
        for room in list(self._members[participant].rooms.values()):
            self._remove(participant, room)
        del self._members[participant]
        del self._by_name[wire.name_key(participant.name)]
        if event is None:
            return
        if announce:
            for member in neighbours:
                member.deliver(event)
        if self.cluster is not None:
            self.cluster.left(participant, event, announce)

    def _remove(self, participant: IChatParticipant, room: Room) -> None:
        room.remove(participant)
        membership = self._members[participant]
        del membership.rooms[wire.name_key(room.name)]
        if membership.current is room:
            # The most recently joined room left becomes the current one.
            membership.current = next(reversed(membership.rooms.values()), None)
        self._count_room(membership.address, room, -1)
        if not room.members and room.name != self.default_room:
            del self.rooms[wire.name_key(room.name)]
            # Its past stays in the database (if any), not in memory.
            self.history.forget(room.name)

    def _count_room(self, address: str | None, room: Room, change: int) -> None:
        """Count one more or one fewer member from C{address} in C{room}."""
        if address is None or room.name == self.default_room:
            return
        key = wire.name_key(room.name)
        rooms = self._address_rooms.setdefault(address, {})
        count = rooms.get(key, 0) + change
        if count > 0:
            rooms[key] = count
            return
        rooms.pop(key, None)
        if not rooms:
            del self._address_rooms[address]

    def _room_refusal(self, membership: _Membership, key: str) -> str | None:
        """
        Why a participant may not join the room with C{key} (which they are
        not in), if they may not: there are C{max_rooms} rooms and it would
        be a new one, or their address is in C{max_rooms_per_address}
        rooms besides the default room already.
        """
        if key == wire.name_key(self.default_room):
            # Always there for everyone.
            return None
        new = key not in self.rooms and key not in self._loading
        existing = len(self.rooms) + len(self._loading)
        max_rooms = self.limits.max_rooms
        if new and max_rooms and existing >= max_rooms:
            return (
                f"there are too many rooms on this server ({max_rooms});"
                " join one that /rooms lists"
            )
        address = membership.address
        per_address = self.limits.max_rooms_per_address
        if address is not None and per_address:
            rooms = self._address_rooms.get(address, {})
            if key not in rooms and len(rooms) >= per_address:
                return (
                    f"your address is in too many rooms ({len(rooms)}); /part one first"
                )
        return None

    # Rooms

    def enter(self, participant: IChatParticipant, room_name: str) -> None:
        """
        Join a room (making it if new) and make it current; tell its members
        and give the newcomer its recent history.

        A new room's history may have to be read first (L{HistoryStore.load}):
        then the participant joins once it is read, and what they send
        meanwhile waits for it, in order (see L{handle}).  Nobody is in a
        room while it is read, so nothing said in it can come before its
        history.
        """
        # The default room's name was checked when the hub was made; every
        # join enters it.
        if room_name != self.default_room:
            problem = wire.room_problem(room_name)
            if problem is not None:
                participant.deliver(wire.Error(problem))
                return
        membership = self._members[participant]
        key = wire.name_key(room_name)
        room = self.rooms.get(key)
        if room is not None and key in membership.rooms:
            membership.current = room
            participant.deliver(wire.Notice(f"{room.name} is now your current room"))
            return
        refusal = self._room_refusal(membership, key)
        if refusal is not None:
            participant.deliver(wire.Error(refusal))
            return
        if room is None or self._unread_here(room):
            loading = self.history.load(room_name)
            if loading is not None:
                self._loading[key] = self._loading.get(key, 0) + 1
                self._waiting[participant] = []
                loading.addCallback(lambda _: self._loaded(participant, room_name, key))
                return
            if room is None:
                room = self.rooms[key] = Room(room_name)
        announced = self._announces(room)
        # Made only for someone to tell: most joins are to the default room,
        # which the newcomer is not told of.
        joined = (
            wire.Joined(self.label(participant), room.name)
            if (announced and room.members) or room.name != self.default_room
            else None
        )
        if announced and joined is not None and room.members:
            room.broadcast(joined)
        room.add(participant)
        membership.rooms[key] = room
        membership.current = room
        self._count_room(membership.address, room, 1)
        if self.cluster is not None:
            self.cluster.entered(participant, room, announced)
        if joined is not None and room.name != self.default_room:
            participant.deliver(joined)
            if room.topic:
                participant.deliver(self._topic(room))
        replay = self.limits.replay
        past = self.history.recent(room.name)[-replay:] if replay else []
        if past:
            participant.deliver(
                wire.PastMessages(room.name, *self._newest_that_fit(past))
            )

    def _loaded(self, participant: IChatParticipant, room_name: str, key: str) -> None:
        """
        A room's history is read: let in the participant who waited for it,
        then carry out what they sent meanwhile.
        """
        left = self._loading[key] - 1
        if left:
            self._loading[key] = left
        else:
            del self._loading[key]
        waited = self._waiting.pop(participant, None)
        if waited is None:
            # They left meanwhile.
            if key not in self.rooms and key not in self._loading:
                self.history.forget(room_name)
            return
        self.enter(participant, room_name)
        while waited and participant in self._members:
            self.handle(participant, waited.pop(0))
            if participant in self._waiting:
                # Another room to read first: the rest waits for it too.
                self._waiting[participant].extend(waited)
                return

    def part(self, participant: IChatParticipant, room_name: str | None) -> None:
        """Leave a room (the current one if not named), telling its members."""
        membership = self._members[participant]
        room = (
            membership.current
            if room_name is None
            else membership.rooms.get(wire.name_key(room_name))
        )
        if room is None:
            what = room_name or "any room"
            participant.deliver(wire.Error(f"you are not in {wire.sanitize(what)}"))
            return
        event = wire.Parted(self.label(participant), room.name)
        self._remove(participant, room)
        participant.deliver(event)
        announced = self._announces(room)
        if announced:
            room.broadcast(event)
        if self.cluster is not None:
            self.cluster.parted(participant, room, announced)

    def _target_room(
        self, participant: IChatParticipant, room_name: str | None
    ) -> Room | None:
        """The room a line goes to, or L{None} after telling the sender why."""
        membership = self._members[participant]
        if room_name is None:
            if membership.current is None:
                participant.deliver(
                    wire.Error("you are in no room; /join one, e.g. /join #lobby")
                )
            return membership.current
        room = membership.rooms.get(wire.name_key(room_name))
        if room is None:
            participant.deliver(
                wire.Error(
                    f"you are not in {wire.sanitize(room_name)[:25]}; /join it first"
                )
            )
        return room

    def _topic(self, room: Room) -> wire.TopicInfo:
        return wire.TopicInfo(room.name, room.topic, room.topic_setter)

    def topic(self, participant: IChatParticipant, text: str | None) -> None:
        """Show the current room's topic, or set it and tell the room."""
        room = self._target_room(participant, None)
        if room is None:
            return
        if text is None:
            participant.deliver(self._topic(room))
            return
        room.topic = wire.sanitize(text)
        # As others see the setter: a guest's topic must not read as set
        # by the certificate holder of the same name.
        room.topic_setter = self.label(participant)
        room.topic_time = self.clock.seconds()
        room.broadcast(self._topic(room))
        if self.cluster is not None:
            self.cluster.topic_set(room)

    def list_rooms(self, participant: IChatParticipant) -> None:
        """
        Tell a participant which rooms there are, with how many are in
        each; the topic only of the rooms they are in (see L{who});
        bounded.
        """
        mine = self._members[participant].rooms
        participant.deliver(
            wire.RoomList(
                *self._first_that_fit(
                    [
                        wire.RoomInfo(
                            room.name,
                            len(room.members),
                            room.topic if key in mine else None,
                        )
                        for key, room in self.rooms.items()
                    ],
                    lambda info: _size(info.name, info.topic or ""),
                )
            )
        )

    def who(self, participant: IChatParticipant, room_name: str | None) -> None:
        """
        Tell a participant who is in a room they are in (the current one by
        default).

        What happens in a room (its lines, topic, history and who is there)
        is for its members: anyone may join, but nobody reads a room
        without being seen in it.  Only the rooms' names and sizes are
        public (L{list_rooms}).
        """
        room = self._target_room(participant, room_name)
        if room is not None:
            labels = [self.label(member) for member in room.members]
            participant.deliver(
                wire.WhoList(room.name, *self._first_that_fit(labels, _size))
            )

    # Other nodes of a cluster (securemsg.cluster.node mirrors their users
    # here, so that /who, /rooms, /msg and names see the whole cluster)

    def local_participants(self) -> list[IChatParticipant]:
        """Everyone connected to this node, in order of arrival."""
        cluster = self.cluster
        if cluster is None:
            return list(self._members)
        return [p for p in self._members if not cluster.is_remote(p)]

    def is_verified(self, participant: IChatParticipant) -> bool:
        """Whether a client certificate vouches for a participant's name."""
        membership = self._members.get(participant)
        return membership is not None and membership.verified

    def flush(self) -> None:
        """Hand out what is held (see L{batch}) now."""
        self._hand_out_held()

    def _unread_here(self, room: Room) -> bool:
        """
        Whether only other nodes' users are in C{room}: its history may
        still be being read here (see L{enter_remote}).
        """
        cluster = self.cluster
        return cluster is not None and all(cluster.is_remote(m) for m in room.members)

    def add_remote(self, participant: IChatParticipant, verified: bool) -> None:
        """Let another node's user in, in no room yet, telling nobody."""
        self._members[participant] = _Membership(verified=verified)
        self._by_name[wire.name_key(participant.name)] = participant

    def enter_remote(self, participant: IChatParticipant, room_name: str) -> Room:
        """Put another node's user in a room (made if new), telling nobody."""
        problem = wire.room_problem(room_name)
        if problem is not None:
            raise ValueError(problem)
        key = wire.name_key(room_name)
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = Room(room_name)
            # For whoever joins it here later: its past, in the background.
            self.history.load(room_name)
        membership = self._members[participant]
        if key not in membership.rooms:
            room.add(participant)
            membership.rooms[key] = room
            membership.current = room
        return room

    def part_remote(self, participant: IChatParticipant, room_name: str) -> Room | None:
        """Take another node's user out of a room, telling nobody."""
        room = self._members[participant].rooms.get(wire.name_key(room_name))
        if room is not None:
            self._remove(participant, room)
        return room

    def rename_now(self, participant: IChatParticipant, new_name: str) -> None:
        """Rename a participant (the cluster has the name), telling others."""
        self._change_name(participant, new_name)

    def rename_guest(self, participant: IChatParticipant, why: str) -> None:
        """Give a guest a new guest name, telling them C{why}."""
        participant.deliver(wire.Error(why))
        self._change_name(participant, self._next_guest_name())

    # Bounded replies

    def _newest_that_fit(
        self, messages: Sequence[wire.Replayable]
    ) -> tuple[tuple[wire.Replayable, ...], int]:
        """
        The newest of C{messages} that fit in L{Limits.reply_bytes}, oldest
        first, and how many older ones were left out.
        """
        budget = self.limits.reply_bytes
        start = len(messages)
        while start and budget >= _message_size(messages[start - 1]):
            start -= 1
            budget -= _message_size(messages[start])
        return tuple(messages[start:]), start

    def _first_that_fit(
        self, entries: list[_T], size: Callable[[_T], int]
    ) -> tuple[tuple[_T, ...], int]:
        """
        The first of C{entries} within L{Limits.list_max} entries and
        L{Limits.reply_bytes}, and how many were left out.
        """
        budget = self.limits.reply_bytes
        kept = 0
        for entry in entries[: self.limits.list_max]:
            budget -= size(entry)
            if budget < 0:
                break
            kept += 1
        return tuple(entries[:kept]), len(entries) - kept

    # Speaking

    def say(
        self, participant: IChatParticipant, text: str, room_name: str | None = None
    ) -> None:
        """Relay a chat line to everyone else in the room."""
        self._speak(participant, wire.Message, text, room_name)

    def act(self, participant: IChatParticipant, text: str) -> None:
        """Relay an action (/me) to everyone else in the current room."""
        self._speak(participant, wire.Action, text, None)

    def _speak(
        self,
        participant: IChatParticipant,
        kind: type[wire.Message] | type[wire.Action],
        text: str,
        room_name: str | None,
    ) -> None:
        room = self._target_room(participant, room_name)
        if room is None:
            return
        event = kind(
            self.label(participant),
            wire.sanitize(text),
            room.name,
            self.clock.seconds(),
        )
        if self.log_messages:
            self.log.info("{line}", line=event.format(default_room=None))
        if participant is not self._batch:
            # Another speaker's line comes after what is held.
            if self._held_room is not None:
                self._hand_out_held()
            room.broadcast(event, exclude=participant)
        else:
            if room is not self._held_room:
                self._hand_out_held()
                self._held_room, self._held_speaker = room, participant
            self._held.append(event)
        self.history.record(event)
        if self.cluster is not None:
            self.cluster.said(event)

    def relay(self, room: Room, event: wire.Message | wire.Action) -> None:
        """
        Give C{event}, a line another node's user said to C{room}, to every
        member here (their mirror takes no room lines).

        Within a batch for L{RELAYED} (one read of the bus), the lines
        relayed to one room one after the other are held and each member
        gets them in one delivery, as a local speaker's lines in their
        batch; the speaker is on another node, so lines of several
        speakers may share a delivery without anyone seeing anything in
        another order.  Whatever else comes first hands out what is held.
        """
        if self._batch is not RELAYED:
            self._hand_out_held()
            room.broadcast(event)
            return
        if room is not self._held_room:
            self._hand_out_held()
            self._held_room, self._held_speaker = room, None
        self._held.append(event)

    def whisper(
        self, participant: IChatParticipant, recipient_name: str, text: str
    ) -> None:
        """
        Send a private line to one participant, in whatever rooms; the
        sender gets the same line back as confirmation, or an error if there
        is nobody of that name.
        """
        recipient = self.find(recipient_name)
        if recipient is None:
            shown = wire.sanitize(recipient_name)[: wire.MAX_NAME_LENGTH]
            participant.deliver(wire.Error(f"nobody here is called {shown}"))
            return
        event = wire.PrivateMessage(
            self.label(participant),
            self.label(recipient),
            wire.sanitize(text),
            self.clock.seconds(),
        )
        if self.log_messages:
            self.log.info(
                "[{sender} -> {recipient}] {text}",
                sender=event.sender,
                recipient=event.recipient,
                text=event.text,
            )
        recipient.deliver(event)
        if recipient is not participant:
            participant.deliver(event)
        if self._keeps_private(participant) and self._keeps_private(recipient):
            self.history.record(event)

    def _keeps_private(self, participant: IChatParticipant) -> bool:
        """
        Whether a participant may have private history: only a certificate
        holder, whose name nobody else can ever take.  A guest's name is
        anyone's once they leave; history kept under it would be read by
        whoever takes it next.
        """
        membership = self._members.get(participant)
        return membership is not None and membership.verified

    def rename(self, participant: IChatParticipant, new_name: str) -> None:
        """
        Change a participant's name if the new one is valid and free, telling
        them and everyone who shares a room with them; otherwise tell the
        participant what is wrong.
        """
        problem = wire.name_problem(new_name)
        if problem is not None:
            participant.deliver(wire.Error(problem))
            return
        old_name = participant.name
        holder = self.find(new_name)
        if holder is not None and holder is not participant:
            participant.deliver(wire.Error(f"the name {holder.name} is taken"))
            return
        if new_name == old_name:
            participant.deliver(wire.Renamed(old_name, new_name, you=True))
            return
        if self._members[participant].verified:
            participant.deliver(
                wire.Error("your name comes from your client certificate")
            )
            return
        if self.state.is_holder(new_name):
            participant.deliver(
                wire.Error(f"the name {new_name} belongs to a certificate holder")
            )
            return
        if self.cluster is not None:
            # Claimed for the whole cluster first (that takes a while).
            self.cluster.rename(participant, new_name)
            return
        self._change_name(participant, new_name)

    def _change_name(self, participant: IChatParticipant, new_name: str) -> None:
        old_name = participant.name
        old_label = self.label(participant)
        del self._by_name[wire.name_key(old_name)]
        participant.name = new_name
        self._by_name[wire.name_key(new_name)] = participant
        participant.deliver(wire.Renamed(old_name, new_name, you=True))
        event = wire.Renamed(old_label, self.label(participant))
        for member in self._neighbours(participant):
            member.deliver(event)
        self.log.info("{old} is now known as {new}", old=old_name, new=new_name)
        if self.cluster is not None:
            self.cluster.renamed(participant, old_name)

    # History

    def show_history(
        self, participant: IChatParticipant, target: str | None, count: int | None
    ) -> Deferred[None] | None:
        """
        Give a participant past messages of a room they are in (the current
        one by default), or of their private conversation with a name.
        """
        count = count or self.limits.replay or 1
        if target is not None and not target.startswith("#"):
            if not self._keeps_private(participant):
                participant.deliver(
                    wire.Error(
                        "private history is kept only between holders of client"
                        " certificates; a guest's name can be taken by others,"
                        " so guests have none"
                    )
                )
                return None
            problem = wire.name_problem(target)
            if problem is not None:
                participant.deliver(wire.Error(problem))
                return None
            fetching = self.history.fetch_private(participant.name, target, count)
            label = f"{participant.name} <-> {target}"
        else:
            room = self._target_room(participant, target)
            if room is None:
                return None
            fetching = self.history.fetch(room.name, count)
            label = room.name

        def deliver(messages: list[wire.Replayable]) -> None:
            if participant in self._members:
                participant.deliver(
                    wire.PastMessages(label, *self._newest_that_fit(messages))
                )

        def failed(reason: object) -> None:
            self.log.failure("reading the history failed", reason)  # type: ignore[arg-type]
            if participant in self._members:
                participant.deliver(wire.Error("the history cannot be read right now"))

        return fetching.addCallbacks(deliver, failed)

    # Operators

    def _operator(self, participant: IChatParticipant, command: str) -> bool:
        if self.is_operator(participant):
            return True
        participant.deliver(
            wire.Error(f"permission denied: {command} is for operators")
        )
        return False

    def kick(self, participant: IChatParticipant, name: str, reason: str) -> None:
        """(Operators) disconnect someone, telling everyone why."""
        if not self._operator(participant, "/kick"):
            return
        target = self.find(name)
        if target is None:
            participant.deliver(
                wire.Error(f"nobody here is called {wire.sanitize(name)[:25]}")
            )
            return
        why = f"kicked by {participant.name}" + (
            f": {wire.sanitize(reason)}" if reason else ""
        )
        self.log.info(
            "{operator} kicked {name}", operator=participant.name, name=target.name
        )
        self.leave(target, why)
        target.disconnect(why, why)

    def ban(self, participant: IChatParticipant, name: str) -> None:
        """
        (Operators) keep someone out for good: a certificate holder by the
        certificate's fingerprint, a guest by IP address (an IPv6 guest by
        its /64, or what C{--ipv6-prefix} says); and disconnect them.
        """
        if not self._operator(participant, "/ban"):
            return
        target = self.find(name)
        if target is None:
            participant.deliver(
                wire.Error(
                    f"nobody here is called {wire.sanitize(name)[:25]};"
                    " /ban works on people who are connected"
                )
            )
            return
        if self.cluster is not None and self.cluster.is_remote(target):
            # Their own server knows their certificate or address.
            self.cluster.ban(participant, target)
            return
        self.ban_for(participant, target)

    def ban_for(self, participant: IChatParticipant, target: IChatParticipant) -> None:
        """
        Ban C{target} (connected here), as the operator C{participant} asked
        (here, or on another node of a cluster, which checked them).
        """
        membership = self._members[target]
        entry = BanRecord(target.name, participant.name, self.clock.seconds())
        if membership.verified and membership.fingerprint is not None:
            self.state.fingerprints[membership.fingerprint] = entry
            what = f"certificate {membership.fingerprint}"
            if self.cluster is not None:
                self.cluster.banned("fingerprint", membership.fingerprint, entry)
        elif membership.address is not None:
            self.state.addresses[membership.address] = entry
            kind = "network" if "/" in membership.address else "address"
            what = f"{kind} {membership.address}"
            if self.cluster is not None:
                self.cluster.banned("address", membership.address, entry)
        else:
            participant.deliver(
                wire.Error(f"{target.name} cannot be banned: no certificate or address")
            )
            return
        if not self.state.keep():
            participant.deliver(
                wire.Error(
                    "the ban holds until restart: the state file could not be written"
                )
            )
        self.log.info(
            "{operator} banned {name} ({what})",
            operator=participant.name,
            name=target.name,
            what=what,
        )
        participant.deliver(wire.Notice(f"banned {target.name} ({what})"))
        why = f"banned by {participant.name}"
        self.leave(target, why)
        target.disconnect(f"you are {why}", why)

    def turn_away(self, bans: ServerRecords) -> None:
        """
        Disconnect the participants of this node that C{bans} keep out, as
        they would have been refused on arriving: bans made on another node
        of a cluster while this one could not hear of them.
        """
        for participant in self.local_participants():
            membership = self._members[participant]
            # As on arriving: an address ban is for guests.
            ban = bans.banned(
                membership.fingerprint,
                None if membership.verified else membership.address,
            )
            if ban is None:
                continue
            why = f"banned by {ban.by}"
            self.log.info(
                "{name} is banned (by {by}, on another server): disconnected",
                name=participant.name,
                by=ban.by,
            )
            self.leave(participant, why)
            participant.disconnect(f"you are {why}", why)

    def unban(self, participant: IChatParticipant, target: str) -> None:
        """(Operators) lift the bans on a name, a fingerprint or an address."""
        if not self._operator(participant, "/unban"):
            return
        lifted = self.state.unban(target)
        if not lifted:
            participant.deliver(
                wire.Error(f"no ban matches {wire.sanitize(target)[:80]}")
            )
            return
        self.state.keep()
        if self.cluster is not None:
            self.cluster.unbanned(target, lifted)
        self.log.info(
            "{operator} lifted bans: {lifted}",
            operator=participant.name,
            lifted=", ".join(lifted),
        )
        participant.deliver(wire.Notice(f"unbanned: {', '.join(lifted)}"))

    def motd(self, participant: IChatParticipant, text: str | None) -> None:
        """Show the message of the day; (operators) set or clear it."""
        if text is None:
            shown = self.state.motd or "(none)"
            participant.deliver(wire.Notice(f"motd: {shown}"))
            return
        if not self._operator(participant, "/motd"):
            return
        self.state.motd = wire.sanitize(text)
        self.state.keep()
        event = wire.Notice(f"motd: {self.state.motd or '(none)'}")
        for member in list(self._members):
            member.deliver(event)
        if self.cluster is not None:
            self.cluster.motd_set(self.state.motd)

    def do_reload(self, participant: IChatParticipant) -> None:
        """(Operators) reload the certificates and say how it went."""
        if not self._operator(participant, "/reload"):
            return
        if self.reload is None:
            participant.deliver(
                wire.Error("this server cannot reload its certificates")
            )
            return
        self.log.info(
            "{operator} asked for a certificate reload", operator=participant.name
        )
        worked, message = self.reload()
        participant.deliver(wire.Notice(message) if worked else wire.Error(message))

    def identity(self, participant: IChatParticipant) -> wire.Identity:
        """How the server knows a participant, for /whoami."""
        membership = self._members[participant]
        if not self.certificates:
            return wire.Identity(participant.name)
        return wire.Identity(
            participant.name, membership.verified, membership.fingerprint
        )

    # Commands

    def handle(self, participant: IChatParticipant, command: wire.Command) -> None:
        """
        Carry out one command from a participant.  L{wire.Quit},
        L{wire.Ping} and L{wire.Format} are the connection's business and
        are not handled here.

        While the participant waits to join a room whose history is being
        read (L{enter}), their commands wait too, in order, up to
        L{MAX_WAITING_COMMANDS}.
        """
        waiting = self._waiting.get(participant)
        if waiting is not None:
            if len(waiting) < MAX_WAITING_COMMANDS:
                waiting.append(command)
            else:
                participant.deliver(
                    wire.Error("too many lines while joining a room; one was dropped")
                )
            return
        if self._held_room is not None and not isinstance(command, wire.Say | wire.Me):
            # Whatever this does comes after the lines said before it.
            self._hand_out_held()
        match command:
            case wire.Say(text, room):
                self.say(participant, text, room)
            case wire.Me(text):
                self.act(participant, text)
            case wire.Nick(name):
                self.rename(participant, name)
            case wire.Private(recipient, text):
                self.whisper(participant, recipient, text)
            case wire.Join(room):
                self.enter(participant, room)
            case wire.Part(room):
                self.part(participant, room)
            case wire.Rooms():
                self.list_rooms(participant)
            case wire.Who(room):
                self.who(participant, room)
            case wire.Topic(text):
                self.topic(participant, text)
            case wire.HistoryRequest(target, count):
                self.show_history(participant, target, count)
            case wire.WhoAmI():
                participant.deliver(self.identity(participant))
            case wire.Kick(name, reason):
                self.kick(participant, name, reason)
            case wire.Ban(name):
                self.ban(participant, name)
            case wire.Unban(target):
                self.unban(participant, target)
            case wire.Motd(text):
                self.motd(participant, text)
            case wire.Reload():
                self.do_reload(participant)
            case wire.Help():
                for line in wire.help_lines():
                    participant.deliver(line)
            case wire.Invalid(problem):
                participant.deliver(wire.Error(problem))
