# -*- test-case-name: tests.test_server -*-
"""
The chat server's protocol and factory.

L{ChatServerFactory} is the embeddable piece: give it to any Twisted server
endpoint (wrapped in TLS by L{securemsg.tls} or by the endpoint itself) and
it serves the chat described in C{docs/PROTOCOL.md}.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any, Final

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from securemsg import wire
from securemsg.interfaces import IChatParticipant
from securemsg.room import ChatRoom

DEFAULT_GREETING: Final = "Welcome to securemsg, {name}. Type /help for commands."
DEFAULT_MAX_LINE_LENGTH: Final = 4096


def describe_peer(address: IAddress) -> str:
    """A short, log-friendly form of a peer address: C{[::1]:5000}."""
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, UNIXAddress):
        return f"unix:{address.name!r}"
    return str(address)


def describe_reason(reason: Failure) -> str:
    """One line for why a connection ended."""
    if reason.check(ConnectionDone):
        return "closed cleanly"
    kind = reason.type.__name__ if reason.type is not None else "error"
    message = reason.getErrorMessage()
    return f"{kind}: {message}" if message else kind


@implementer(IChatParticipant, IHandshakeListener)
class ChatServerProtocol(LineReceiver):
    """
    One client connection: turns its lines into commands for the room, and
    the room's events into lines.

    Over TLS the client joins the room only when the handshake is done
    (Twisted calls C{connectionMade} before it), so a half-open handshake
    never shows up as a user.
    """

    delimiter = b"\n"
    factory: ChatServerFactory
    # Set by makeConnection: Twisted's TLS or TCP transport, which has more
    # than ITransport declares (disconnecting, setTcpNoDelay).
    transport: Any
    log = Logger()

    name = ""
    _joined = False
    _quit_reason = ""
    # True while the rest of an over-long line is being thrown away.
    _discarding = False
    # True when LineReceiver stopped at an over-long line with more after it.
    _resume = False

    def __init__(self, factory: ChatServerFactory) -> None:
        self.factory = factory
        self.MAX_LENGTH = factory.max_line_length
        self.peer = "unknown peer"

    def connectionMade(self) -> None:
        self.peer = describe_peer(self.transport.getPeer())
        self.log.info("connection from {peer}", peer=self.peer)
        if ITCPTransport.providedBy(self.transport):
            # Twisted leaves Nagle's algorithm on; for short chat lines it
            # adds tens of milliseconds of latency whenever it meets a
            # delayed ACK.
            # Some transports claim to be TCP but are not (UNIX sockets, fakes).
            with suppress(AttributeError, OSError):
                self.transport.setTcpNoDelay(True)
        if not isinstance(self.transport, TLSMemoryBIOProtocol):
            # No TLS layer of Twisted's below us (plain TCP in tests, or TLS
            # ended by a proxy), so no handshake to wait for.
            self._join()

    def handshakeCompleted(self) -> None:
        self._join()

    def _join(self) -> None:
        if self._joined:
            return
        self._joined = True
        name = self.factory.room.join(self)
        self.log.info("{peer} is {name}", peer=self.peer, name=name)
        for line in self.factory.greeting_lines(name):
            self.deliver(wire.Notice(line))

    def deliver(self, event: wire.Event) -> None:
        self.transport.write(wire.encode(event))

    # Receiving

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        # LineReceiver returns after an over-long line even when complete
        # lines follow it in the same read; go on with those.
        while self._resume and not self.transport.disconnecting:
            self._resume = False
            super().dataReceived(b"")

    def lineReceived(self, line: bytes) -> None:
        if not self._joined:
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.deliver(wire.Error("that line was not valid UTF-8; it was not sent"))
            return
        command = wire.parse_command(text)
        if command is None:
            return
        if isinstance(command, wire.Quit):
            self._quit_reason = command.reason
            self.deliver(wire.Notice("goodbye"))
            self.transport.loseConnection()
            return
        self.factory.room.handle(self, command)

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Refuse an over-long line but keep the connection: throw the line
        away (without buffering it) up to its end, then carry on.
        """
        self.deliver(
            wire.Error(f"line longer than {self.MAX_LENGTH} bytes; it was not sent")
        )
        self.log.info(
            "{peer} ({name}) sent a line longer than {limit} bytes",
            peer=self.peer,
            name=self.name,
            limit=self.MAX_LENGTH,
        )
        _, newline, rest = line.partition(self.delimiter)
        if newline:
            self._buffer = rest
            self._resume = True
        else:
            self._discarding = True
            self.setRawMode()

    def rawDataReceived(self, data: bytes) -> None:
        # Only used to skip the tail of an over-long line.
        _, newline, rest = data.partition(self.delimiter)
        if newline:
            self._discarding = False
            self.setLineMode(rest)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # A last line without a newline is still a line.
        if (
            self._joined
            and self._buffer
            and self.line_mode
            and not self._discarding
            and len(self._buffer) <= self.MAX_LENGTH
        ):
            pending, self._buffer = self._buffer, b""
            self.lineReceived(pending)
        self.log.info(
            "{peer} ({name}) disconnected: {reason}",
            peer=self.peer,
            name=self.name or "not joined",
            reason=describe_reason(reason),
        )
        if self._joined:
            if self._quit_reason:
                farewell = self._quit_reason
            elif reason.check(ConnectionDone):
                farewell = ""
            else:
                farewell = "connection lost"
            self.factory.room.leave(self, farewell)


class ChatServerFactory(Factory):
    """
    Builds the protocol for each connection to one chat room.

    It uses no global state and needs no twistd: listen with it on any
    server endpoint, in any reactor.

    @ivar room: the L{ChatRoom} everyone connected is in.
    @ivar clock: the time source for timeouts.
    """

    noisy = False

    def __init__(
        self,
        clock: IReactorTime,
        *,
        greeting: str = DEFAULT_GREETING,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        log_messages: bool = False,
        room: ChatRoom | None = None,
    ) -> None:
        """
        @param clock: the reactor (or a fake clock in tests).
        @param greeting: what each client is told when it joins; C{{name}}
            stands for the client's assigned name.  An empty string sends
            nothing.
        @param max_line_length: the longest line accepted, in bytes,
            without its line ending.
        @param log_messages: log the text of chat lines (off by default).
        @param room: the room to use, if not a new one.
        """
        if max_line_length < 1:
            raise ValueError("max_line_length must be at least 1")
        self.clock = clock
        self.greeting = greeting
        self.max_line_length = max_line_length
        self.room = room if room is not None else ChatRoom(log_messages=log_messages)

    def greeting_lines(self, name: str) -> list[str]:
        """The greeting for a client called C{name}, one entry per line."""
        return [line.replace("{name}", name) for line in self.greeting.splitlines()]

    def buildProtocol(self, addr: IAddress | None) -> ChatServerProtocol:  # type: ignore[override]
        return ChatServerProtocol(self)
