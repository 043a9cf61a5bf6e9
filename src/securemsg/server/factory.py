# -*- test-case-name: tests.test_server,tests.test_embedding -*-
"""
The chat server's factory.

L{ChatServerFactory} is the embeddable piece (L{ChatServerFactory.standalone}
makes one with a chat of its own): give it to any Twisted server
endpoint (wrapped in TLS by L{securemsg.server.tls_server_endpoint} or by the
endpoint itself) and it serves the chat described in C{docs/PROTOCOL.md}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Self

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorTime,
)
from twisted.internet.protocol import Factory

from securemsg.core.history import HistoryStore
from securemsg.core.hub import ChatHub
from securemsg.core.limits import Limits
from securemsg.protocol import jsonwire, wire
from securemsg.server.counters import ServerCounters
from securemsg.server.protocol import ChatServerProtocol

if TYPE_CHECKING:
    from securemsg.tls.policy import ClientCertificateCheck

#: How long someone else's arrival or departure may wait to be written, so
#: that those of a burst of connections (a restart, a reconnect storm, a
#: client that connects over and over) share one TLS record per member
#: instead of costing every member of the room a record each.  Anything
#: else for the same client writes them at once, in order.
ANNOUNCEMENT_DELAY: Final = 0.05

DEFAULT_GREETING: Final = "Welcome to securemsg, {name}. Type /help for commands."


class ChatServerFactory(Factory):
    """
    Builds the protocol for each connection to one chat.

    It uses no global state and needs no twistd: listen with it on any
    server endpoint, in any reactor.  L{standalone} makes one with a chat
    of its own, for embedding.

    @ivar chat: the L{ChatHub}: who is here and in which rooms.
    @ivar clock: the time source for timeouts.
    @ivar limits: the L{Limits} each connection is held to: the chat's.
    @ivar open_connections: every connection, joined or still in its handshake.
    @ivar certificate_check: how the TLS material reloaded last judges client
        certificates (L{recheck_certificates}); L{None} before any reload.
    """

    noisy = False

    def __init__(
        self,
        clock: IReactorTime,
        chat: ChatHub,
        *,
        greeting: str = DEFAULT_GREETING,
    ) -> None:
        """
        @param clock: the reactor (or a fake clock in tests).
        @param chat: the L{ChatHub} to serve; its L{Limits} are the
            connections' too, so that one L{Limits} holds the whole server.
        @param greeting: what each client is told when it joins; C{{name}}
            stands for the client's assigned name.  An empty string sends
            nothing.
        """
        self.clock = clock
        self.chat = chat
        self.limits = chat.limits
        self.greeting = greeting
        self.open_connections: set[ChatServerProtocol] = set()
        #: What the server counts as it runs (read by securemsg.server.metrics).
        self.counters = ServerCounters()
        self._to_flush: list[ChatServerProtocol] = []
        self._flushing: IDelayedCall | None = None
        self._to_announce: list[ChatServerProtocol] = []
        self._announcing: IDelayedCall | None = None
        self._last_event: wire.Event | None = None
        self._last_text: bytes | None = None
        self._last_json: bytes | None = None
        self._last_events: tuple[wire.Event, ...] | None = None
        self._last_events_text: bytes | None = None
        self._last_events_json: bytes | None = None
        self.shutting_down = False
        # Set by the first certificate reload (see recheck_certificates).
        self.certificate_check: ClientCertificateCheck | None = None

    @classmethod
    def standalone(
        cls,
        clock: IReactorTime,
        *,
        greeting: str = DEFAULT_GREETING,
        limits: Limits | None = None,
        default_room: str = wire.DEFAULT_ROOM,
        history: HistoryStore | None = None,
        log_messages: bool = False,
    ) -> Self:
        """
        A factory serving a new chat of its own, made from these settings:
        what a program that embeds the server usually wants.

        @param clock: the reactor (or a fake clock in tests).
        @param greeting: see L{__init__}.
        @param limits: timeouts and limits (L{Limits}), for the connections
            and the chat; L{Limits}' defaults if not given.
        @param default_room: the room everyone starts in.
        @param history: where messages are kept; in memory if not given.
        @param log_messages: log the text of chat lines (off by default:
            private).
        """
        chat = ChatHub(
            clock,
            default_room=default_room,
            history=history,
            log_messages=log_messages,
            limits=limits,
        )
        return cls(clock, chat, greeting=greeting)

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
                self._last_json = jsonwire.encode(event, self.chat.default_room)
            return self._last_json
        if self._last_text is None:
            self._last_text = wire.encode(event, self.chat.default_room)
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
                    jsonwire.encode(event, self.chat.default_room) for event in events
                )
            return self._last_events_json
        if self._last_events_text is None:
            self._last_events_text = b"".join(
                wire.encode(event, self.chat.default_room) for event in events
            )
        return self._last_events_text

    def flush_later(self, protocol: ChatServerProtocol) -> None:
        """Have C{protocol}'s output written at the end of this reactor turn."""
        self._to_flush.append(protocol)
        if self._flushing is None:
            self._flushing = self.clock.callLater(0, self.flush)

    def flush_soon(self, protocol: ChatServerProtocol) -> None:
        """
        Have C{protocol}'s output written within L{ANNOUNCEMENT_DELAY}
        seconds (or sooner, with anything more urgent for it).
        """
        self._to_announce.append(protocol)
        if self._announcing is None:
            self._announcing = self.clock.callLater(
                ANNOUNCEMENT_DELAY, self.flush_announcements
            )

    def flush_announcements(self) -> None:
        """Write the output that waits for L{flush_soon} now."""
        if self._announcing is not None and self._announcing.active():
            self._announcing.cancel()
        self._announcing = None
        protocols, self._to_announce = self._to_announce, []
        for protocol in protocols:
            protocol.flush()

    def flush(self) -> None:
        """
        Write every connection's output of this turn: one write (so one TLS
        record) per connection per turn, scheduled once for all of them.
        """
        self._flushing = None
        protocols, self._to_flush = self._to_flush, []
        for protocol in protocols:
            protocol.flush()

    def stopFactory(self) -> None:
        """No port listens for this factory any more: write what waits."""
        self.flush_announcements()

    def greeting_lines(self, name: str) -> list[str]:
        """The greeting for a client called C{name}, one entry per line."""
        return [line.replace("{name}", name) for line in self.greeting.splitlines()]

    def buildProtocol(self, addr: IAddress | None) -> ChatServerProtocol:  # type: ignore[override]
        return ChatServerProtocol(self)

    def recheck_certificates(self, check: ClientCertificateCheck) -> int:
        """
        Apply reloaded TLS material to the clients that were verified with
        the material before it: whoever's certificate C{check} now finds
        fault with is disconnected (L{ChatServerProtocol.recheck_certificate}),
        and a handshake still under way is checked again when it is done.

        @return: how many clients were disconnected.
        """
        self.certificate_check = check
        return sum(
            protocol.recheck_certificate() for protocol in list(self.open_connections)
        )

    def shut_down(self) -> Deferred[None]:
        """
        Tell every client the server is stopping and close each connection
        cleanly (TLS close_notify); abort those still open after the limits'
        C{shutdown_grace}.

        @return: fires when every connection is closed.
        """
        self.shutting_down = True
        self.flush_announcements()
        # Each close aborts its connection after the grace (see _close).
        closed = gatherResults(
            [c.close_for_shutdown() for c in list(self.open_connections)]
        )
        return closed.addCallback(lambda _: None)
