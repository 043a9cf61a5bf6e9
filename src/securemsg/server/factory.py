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
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from securemsg.core.history import HistoryStore
from securemsg.core.hub import ChatHub
from securemsg.core.limits import Limits
from securemsg.protocol import wire
from securemsg.server.counters import ServerCounters
from securemsg.server.logbatch import LogBatch
from securemsg.server.outbox import Outbox
from securemsg.server.protocol import ChatServerProtocol

if TYPE_CHECKING:
    from securemsg.tls.policy import ClientCertificateCheck

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
    @ivar outbox: the L{Outbox}: what is sent, and when it is written.
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
        self.outbox = Outbox(
            clock, self.chat.default_room, self.counters.lines_delivered
        )
        #: The lines of connections that end, written in batches, and the
        #: logger of those lines (one for all connections).
        self.log_batch = LogBatch(clock)
        self.disconnections = Logger(
            ChatServerProtocol.log.namespace, observer=self.log_batch
        )
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

    def startFactory(self) -> None:
        """A port listens for this factory: log lines may wait for a batch."""
        self.log_batch.start()

    def stopFactory(self) -> None:
        """No port listens for this factory any more: write what waits."""
        self.outbox.flush_announcements()
        self.log_batch.stop()

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
        self.outbox.flush_announcements()
        self.log_batch.stop()
        # Each close aborts its connection after the grace (see _close).
        closed = gatherResults(
            [c.close_for_shutdown() for c in list(self.open_connections)]
        )
        return closed.addCallback(lambda _: None)
