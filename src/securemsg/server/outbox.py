# -*- test-case-name: tests.test_server -*-
"""
What the server sends, from events to writes: L{Outbox} (one per factory)
encodes each event once for all its receivers and schedules the writes;
L{SendQueue} (one per connection) holds a client's output until then,
counted against its send queue.

A connection hands its queue events and its transport; everything about
when and how much is written is here.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from securemsg.protocol import jsonwire, wire
from securemsg.server import tlsserver

if TYPE_CHECKING:
    from securemsg.server.protocol import ChatServerProtocol

#: How long someone else's arrival or departure may wait to be written, so
#: that those of a burst of connections (a restart, a reconnect storm, a
#: client that connects over and over) share one TLS record per member
#: instead of costing every member of the room a record each.  Anything
#: else for the same client writes them at once, in order.
ANNOUNCEMENT_DELAY: Final = 0.05

#: Past this many bytes queued for a client in one turn, they are written
#: at once instead of at the end of the turn (a busy turn would otherwise
#: hold all of it, and could pass the send queue of a client that reads).
EARLY_WRITE: Final = 65536

#: The most given to the transport in one write when a turn's output is
#: large (one TLS record): a transport pauses its producer only after a
#: write, so it holds at most its own buffer (64 KiB for Twisted's TCP)
#: and this much more for a client that does not read.
WRITE_CHUNK: Final = 16384

_ANNOUNCEMENTS: Final = (wire.Joined, wire.Parted, wire.Departed)


class Outbox:
    """
    The server's output: each event encoded once, whoever gets it, and
    every connection's output of a reactor turn written once, at its end
    (one TLS record and one system call per connection per turn), or
    within L{ANNOUNCEMENT_DELAY} when all it holds is others' arrivals and
    departures.

    @ivar delivered: lines handed to clients, by event class (the
        counters' C{lines_delivered}), up to the last write of output
        (L{count_delivered}).
    """

    def __init__(
        self, clock: IReactorTime, default_room: str, delivered: Counter[type]
    ) -> None:
        """
        @param clock: schedules the writes.
        @param default_room: the room whose name the text lines leave out.
        @param delivered: where to count the lines handed to clients.
        """
        self.clock = clock
        self.default_room = default_room
        self.delivered = delivered
        # The event (or events) being handed out to one receiver after
        # another, and to how many so far: counted in delivered when the
        # next one starts or the turn's output is written (count_delivered),
        # not once per receiver, which cost a quarter of a delivery.
        self._counted: wire.Event | tuple[wire.Event, ...] | None = None
        self._receivers = 0
        self._to_flush: list[SendQueue] = []
        self._flushing: IDelayedCall | None = None
        self._to_announce: list[SendQueue] = []
        self._announcing: IDelayedCall | None = None
        self._last_event: wire.Event | None = None
        self._last_text: bytes | None = None
        self._last_json: bytes | None = None
        self._last_events: tuple[wire.Event, ...] | None = None
        self._last_events_text: bytes | None = None
        self._last_events_json: bytes | None = None

    def count_delivered(self) -> None:
        """
        Add the receivers of the event handed out last to C{delivered}
        (each of several events counts once per receiver).
        """
        counted, receivers = self._counted, self._receivers
        self._counted, self._receivers = None, 0
        if counted is None:
            return
        delivered = self.delivered
        if isinstance(counted, tuple):
            for event in counted:
                delivered[event.__class__] += receivers
        else:
            delivered[counted.__class__] += receivers

    def queue(
        self, owner: ChatServerProtocol, send_queue: int, json: bool
    ) -> SendQueue:
        """
        A new connection's queue.

        @param owner: the connection; its name tells its own arrivals from
            others', and it is told when its queue is over C{send_queue}.
        @param send_queue: how many bytes may be held for the client.
        @param json: whether the client reads JSON lines rather than text
            (L{SendQueue.json}, which the connection changes).
        """
        return SendQueue(self, owner, send_queue, json)

    def encode(self, event: wire.Event, json: bool) -> bytes:
        """
        The bytes of C{event} as text or JSON lines.

        A room hands the same event to each member in turn, so the last
        event's encodings are kept: a line is formatted once per room, not
        once per receiver.
        """
        if event is not self._last_event:
            self._last_event = event
            self._last_text = self._last_json = None
        if json:
            if self._last_json is None:
                self._last_json = jsonwire.encode(event, self.default_room)
            return self._last_json
        if self._last_text is None:
            self._last_text = wire.encode(event, self.default_room)
        return self._last_text

    def encode_all(self, events: tuple[wire.Event, ...], json: bool) -> bytes:
        """
        The bytes of several events, as L{encode} gives them one by one;
        kept like L{encode}'s, since a room hands the same events to each
        member.
        """
        if events is not self._last_events:
            self._last_events = events
            self._last_events_text = self._last_events_json = None
        if json:
            if self._last_events_json is None:
                self._last_events_json = b"".join(
                    jsonwire.encode(event, self.default_room) for event in events
                )
            return self._last_events_json
        if self._last_events_text is None:
            self._last_events_text = b"".join(
                wire.encode(event, self.default_room) for event in events
            )
        return self._last_events_text

    def flush_later(self, queue: SendQueue) -> None:
        """Have C{queue} written at the end of this reactor turn."""
        self._to_flush.append(queue)
        if self._flushing is None:
            self._flushing = self.clock.callLater(0, self.flush)

    def flush_soon(self, queue: SendQueue) -> None:
        """
        Have C{queue} written within L{ANNOUNCEMENT_DELAY} seconds (or
        sooner, with anything more urgent for it).
        """
        self._to_announce.append(queue)
        if self._announcing is None:
            self._announcing = self.clock.callLater(
                ANNOUNCEMENT_DELAY, self.flush_announcements
            )

    def flush_announcements(self) -> None:
        """Write the output that waits for L{flush_soon} now."""
        if self._announcing is not None and self._announcing.active():
            self._announcing.cancel()
        self._announcing = None
        self.count_delivered()
        queues, self._to_announce = self._to_announce, []
        for queue in queues:
            queue.flush()

    def flush(self) -> None:
        """
        Write every connection's output of this turn: one write (so one TLS
        record) per connection per turn, scheduled once for all of them.
        """
        self._flushing = None
        self.count_delivered()
        queues, self._to_flush = self._to_flush, []
        for queue in queues:
            queue.flush()


class SendQueue:
    """
    One connection's output not yet written, counted as it is queued.

    The connection is its transport's producer: while the transport is
    paused (L{pause}), output stays here; past the send queue (less what the
    transports hold) the connection is told (its C{_over_send_queue}), and
    everything queued from then on is dropped (L{drop}).
    """

    # One per connection: slots keep it small.
    __slots__ = (
        "_dropped",
        "_flush_due",
        "_limit",
        "_outbox",
        "_outgoing",
        "_owner",
        "_paused",
        "_pending",
        "_room",
        "_send_queue",
        "json",
        "transport",
    )

    def __init__(
        self, outbox: Outbox, owner: ChatServerProtocol, send_queue: int, json: bool
    ) -> None:
        self._outbox = outbox
        self._owner = owner
        #: Where the output goes: set by the connection once it has it.
        self.transport: Any = None
        #: Whether the client reads JSON lines rather than text (kept here
        #: rather than asked for: it is read for every line).
        self.json = json
        self._outgoing: list[bytes] = []
        # Whether the output is to be written at the end of this turn
        # (Outbox.flush) rather than with the announcements.
        self._flush_due = False
        # The bytes in _outgoing, and how many more may be held for the
        # client (the send queue, less what the transports held when they
        # paused us).
        self._pending = 0
        self._send_queue = send_queue
        self._room = send_queue
        # Past this many bytes queued, act now (see _over_limit).
        self._limit = min(EARLY_WRITE, send_queue)
        self._paused = False
        self._dropped = False

    def put(self, event: wire.Event) -> None:
        """Queue C{event} for the end of the turn."""
        # The hot path: once per receiver of every line.
        outbox = self._outbox
        if event is not outbox._counted:
            outbox.count_delivered()
            outbox._counted = event
        outbox._receivers += 1
        if not self._flush_due:
            if (
                isinstance(event, _ANNOUNCEMENTS)
                and event.name.removeprefix("~") != self._owner.name
            ):
                # Someone else's arrival or departure can wait a little for
                # others to share its record (see ANNOUNCEMENT_DELAY).
                if not self._outgoing:
                    outbox.flush_soon(self)
            else:
                self._flush_due = True
                outbox.flush_later(self)
        # Outbox.encode's cache read here: one call fewer per receiver, so
        # that a delivery costs what it did when this was the protocol's.
        data = (
            (outbox._last_json if self.json else outbox._last_text)
            if event is outbox._last_event
            else None
        ) or outbox.encode(event, self.json)
        self._outgoing.append(data)
        # Counted as it is queued, not when the transport pauses: one read
        # can ask for a lot (see Limits.send_queue).
        self._pending += len(data)
        if self._pending > self._limit:
            self._over_limit()

    def put_all(self, events: tuple[wire.Event, ...]) -> None:
        """Queue several events, in order, for the end of the turn."""
        # The hot path of a busy room: once per receiver per speaker's read.
        outbox = self._outbox
        if events is not outbox._counted:
            outbox.count_delivered()
            outbox._counted = events
        outbox._receivers += 1
        if not self._flush_due:
            self._flush_due = True
            outbox.flush_later(self)
        data = outbox.encode_all(events, self.json)
        self._outgoing.append(data)
        self._pending += len(data)
        if self._pending > self._limit:
            self._over_limit()

    def held_bytes(self) -> int:
        """
        The bytes held for the client: what waits here, and what Twisted's
        transports held for it when they last paused us.
        """
        if self._dropped:
            return 0
        return self._pending + self._send_queue - self._room

    def _over_limit(self) -> None:
        """
        Much is queued: write it now if the transport takes it (a client
        that reads is not held to what one turn makes for it), and tell the
        connection if what is left is over the send queue.
        """
        if not self._paused and not self._dropped:
            self.flush()
        if self._pending > self._room:
            self._owner._over_send_queue()

    def drop(self) -> bool:
        """
        Throw away what is queued, and whatever is queued from now on.

        @return: whether this is the first time (the connection then has
            to be let go).
        """
        self.clear()
        if self._dropped:
            return False
        self._dropped = True
        # Whatever else this turn gives the client is dropped as it comes.
        self._room = self._limit = -1
        return True

    def clear(self) -> None:
        """Throw away what is queued (the connection is gone)."""
        self._outgoing.clear()
        self._pending = 0

    def flush(self) -> None:
        """
        Write what this turn produced for the client; while the client does
        not read (the transport paused us), keep it queued instead.
        """
        self._flush_due = False
        outgoing = self._outgoing
        if not outgoing or self._paused:
            return
        data = outgoing[0] if len(outgoing) == 1 else b"".join(outgoing)
        outgoing.clear()
        transport = self.transport
        if len(data) <= WRITE_CHUNK:
            self._pending = 0
            transport.write(data)
            return
        # A large output goes to the transport a piece at a time, and stops
        # when the transport pauses us: it keeps no more than its own buffer
        # and one piece, and the rest stays counted in our queue.
        sent = 0
        while sent < len(data) and not self._paused:
            transport.write(data[sent : sent + WRITE_CHUNK])
            sent += WRITE_CHUNK
        rest = data[sent:]
        self._pending = len(rest)
        if rest:
            outgoing.append(rest)

    def write_all(self) -> None:
        """Write everything queued, even while paused (we are closing)."""
        self._flush_due = False
        outgoing = self._outgoing
        if outgoing:
            data = b"".join(outgoing)
            outgoing.clear()
            self._pending = 0
            self.transport.write(data)

    def pause(self) -> None:
        """The transport's buffer is full: queue output from now on."""
        self._paused = True
        # What the transports hold counts against the send queue too.
        if not self._dropped:
            held = tlsserver.held_bytes(self.transport)
            self._room = self._limit = self._send_queue - held

    def resume(self) -> None:
        """The transport's buffer is empty again: write what is queued."""
        self._paused = False
        if not self._dropped:
            self._room = self._send_queue
            self._limit = min(EARLY_WRITE, self._room)
        self.flush()
