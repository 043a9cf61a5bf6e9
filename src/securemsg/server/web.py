# -*- test-case-name: tests.test_web -*-
"""
Chat from a browser: one page and a WebSocket endpoint (C{--web}).

The browser is a participant like any other.  Its WebSocket messages are
lines: each is fed to a L{ChatServerProtocol} (L{WebChatProtocol}) through a
transport (L{WebSocketLineTransport}) that turns the lines it writes back
into messages, one per line.  So the browser gets exactly what a TLS line
client gets: the same names, rooms, commands, history, flood control, line
limit, idle timeout and send-queue bound, from the same code.  It starts in
the JSON format (C{/format json}), so the page never parses display text.

The WebSocket framing is wsproto's, the engine of Twisted's own
C{twisted.web.websocket} (the C{twisted[websocket]} extra), driven here
rather than through Twisted's L{WebSocketResource}, because that one
gathers a message in memory however long it grows and cannot refuse a
connection once it has read its request; see C{docs/web.md}.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from contextlib import suppress
from importlib import resources
from typing import Any, Final

from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from securemsg.protocol import wire
from securemsg.server.factory import ChatServerFactory
from securemsg.server.protocol import ChatServerProtocol, describe_peer

#: Where the page opens its WebSocket.
SOCKET_PATH: Final = b"socket"

#: The page, shipped as package data.
PAGE_RESOURCE: Final = "webchat.html"

#: WebSocket close codes (RFC 6455, section 7.4.1).
CLOSE_NORMAL: Final = 1000
CLOSE_UNSUPPORTED_DATA: Final = 1003

#: How long an HTTP connection may stay without a request (the page's
#: socket, once upgraded, has the chat's idle timeout instead).
HTTP_TIMEOUT: Final = 60

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


def read_page() -> bytes:
    """The chat page, as shipped in the package."""
    return resources.files("securemsg.server").joinpath(PAGE_RESOURCE).read_bytes()


def content_security_policy(page: bytes) -> str:
    """
    The policy for C{page}: nothing but its own inline script and style
    (allowed by their SHA-256, so no other inline code runs) and a
    WebSocket to its own origin.
    """
    allowed: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, body in _INLINE.findall(page):
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        allowed[kind].append(f"'sha256-{digest}'")
    scripts = " ".join(allowed[b"script"]) or "'none'"
    styles = " ".join(allowed[b"style"]) or "'none'"
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {scripts}",
            f"style-src {styles}",
            "connect-src 'self'",
            "img-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _security_headers(request: Request) -> None:
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"cache-control", b"no-store")


class ChatPage(Resource):
    """The chat page at C{/}, and C{/socket} for its WebSocket."""

    isLeaf = False

    def __init__(self, socket: Resource, page: bytes | None = None) -> None:
        super().__init__()
        self.page = read_page() if page is None else page
        self.policy = content_security_policy(self.page).encode("ascii")
        self.putChild(SOCKET_PATH, socket)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return super().getChild(path, request)  # type: ignore[no-any-return]

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", self.policy)
        _security_headers(request)
        return self.page

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)


class WebChatProtocol(ChatServerProtocol):
    """
    A browser's connection: a L{ChatServerProtocol} whose lines come and go
    as WebSocket messages.  It speaks JSON from the start, so that even the
    greeting and the history replayed on joining reach the page as JSON.
    """

    _json = True

    def message_received(self, text: str) -> None:
        """
        One message from the browser: one line.  A line break in it would
        make it several lines, and a message is one line: it is refused.
        """
        if "\n" in text:
            self.deliver(
                wire.Error("one line per message: a line break was in it; not sent")
            )
            return
        # dataReceived, not lineReceived: the same path as a TLS client's
        # bytes (one read's lines reach a room together, over-long lines
        # are refused with the line protocol's error).
        self.dataReceived(text.encode("utf-8") + self.delimiter)


class WebSocketLineTransport:
    """
    The transport a L{WebChatProtocol} writes its lines to: each line it
    writes leaves as one WebSocket text message; everything else (the peer,
    the client certificate, flow control, closing) is the TLS connection's.
    """

    def __init__(self, socket: WebSocketWire, transport: Any) -> None:
        self._socket = socket
        self._transport = transport
        self._partial = b""

    @property
    def disconnecting(self) -> bool:
        """Whether the connection is closing (the chat reads no more)."""
        return bool(self._transport.disconnecting) or self._socket.closing

    def write(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if lines:
            self._socket.send_lines([line.decode("utf-8") for line in lines])

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._socket.close()

    def abortConnection(self) -> None:
        self._transport.abortConnection()

    def getPeer(self) -> IAddress:
        return self._transport.getPeer()  # type: ignore[no-any-return]

    def getHost(self) -> IAddress:
        return self._transport.getHost()  # type: ignore[no-any-return]

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._transport.unregisterProducer()

    def getPeerCertificate(self) -> Any:
        """The client certificate the browser gave, if any."""
        get = getattr(self._transport, "getPeerCertificate", None)
        return get() if get is not None else None

    def getHandle(self) -> Any:
        get = getattr(self._transport, "getHandle", None)
        return get() if get is not None else None


class WebSocketWire(Protocol):
    """
    The WebSocket framing of one upgraded connection, with wsproto: text
    messages to and from a L{WebChatProtocol}, and nothing held beyond the
    line limit (the rest of an over-long message is thrown away as it
    arrives, and the chat protocol refuses it as an over-long line).
    """

    # The TLS transport (Twisted's declares less than it has).
    transport: Any

    def __init__(self, connection: Connection, chat: WebChatProtocol) -> None:
        self._ws = connection
        self.chat = chat
        self._pieces: list[str] = []
        self._size = 0
        # A message is cut just past the limit, so that it is still seen as
        # over-long.
        self._keep = chat.MAX_LENGTH + 1
        self.closing = False
        # The close code for when the chat protocol closes the connection.
        self._close_code = CLOSE_NORMAL

    def connectionMade(self) -> None:
        self.chat.makeConnection(WebSocketLineTransport(self, self.transport))

    def dataReceived(self, data: bytes) -> None:
        if self._ws.state not in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
            return
        self._ws.receive_data(data)
        for event in self._ws.events():
            if isinstance(event, TextMessage):
                self._text(event)
            elif isinstance(event, BytesMessage):
                self._close_code = CLOSE_UNSUPPORTED_DATA
                self.chat.disconnect("send lines as text messages", "binary message")
            elif isinstance(event, Ping):
                self.transport.write(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._closed_by_peer(event)
            if self.closing:
                return

    def _text(self, event: TextMessage) -> None:
        if self._size < self._keep:
            piece = event.data[: self._keep - self._size]
            self._pieces.append(piece)
            self._size += len(piece.encode("utf-8"))
        if not event.message_finished:
            return
        text = "".join(self._pieces)
        self._pieces = []
        self._size = 0
        self.chat.message_received(text)

    def _closed_by_peer(self, event: CloseConnection) -> None:
        if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            # The peer's close (or wsproto's, for a frame it cannot parse):
            # answer it, and the chat protocol takes it as a clean end.
            with suppress(LocalProtocolError):
                self.transport.write(self._ws.send(event.response()))
        self.closing = True
        self.transport.loseConnection()

    def send_lines(self, lines: list[str]) -> None:
        """
        Send each line as a text message, unless the socket is closing: in
        one write, so that the lines of a turn share TLS records as a line
        client's do.
        """
        if self._ws.state is ConnectionState.OPEN:
            send = self._ws.send
            self.transport.write(b"".join(send(TextMessage(data=t)) for t in lines))

    def close(self, code: int | None = None) -> None:
        """Send a close frame and close the TLS connection after it."""
        if self._ws.state is ConnectionState.OPEN:
            code = self._close_code if code is None else code
            self.transport.write(self._ws.send(CloseConnection(code=code)))
        self.closing = True
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closing = True
        self.chat.connectionLost(reason)


def own_origin(request: Request) -> str | None:
    """The origin of the page that C{request} came to: C{https://} and its Host."""
    host = request.getHeader(b"host")
    if not host:
        return None
    return "https://" + host.decode("latin-1").strip().lower()


class ChatSocket(Resource):
    """
    The WebSocket endpoint: checks the request's C{Origin}, then upgrades
    the connection and hands it to a new L{WebChatProtocol}.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, factory: ChatServerFactory, origins: Sequence[str] = ()) -> None:
        """
        @param factory: the chat server's factory (its chat, limits and
            open connections are the browser's too).
        @param origins: origins allowed besides the page's own, such as
            C{https://chat.example.com}.
        """
        super().__init__()
        self.factory = factory
        self.origins = {origin.rstrip("/").lower() for origin in origins}

    def origin_problem(self, request: Request) -> str | None:
        """
        Why the WebSocket request's C{Origin} is refused, or L{None}.

        A browser always sends the origin of the page that opens a
        WebSocket; without this check any web site could open one to the
        chat with its visitor's client certificate.  A request without an
        C{Origin} is not from a page (a program), and passes.
        """
        origin = request.getHeader(b"origin")
        if origin is None:
            return None
        text = origin.decode("latin-1").strip().lower()
        if text == own_origin(request) or text in self.origins:
            return None
        shown = wire.sanitize(text)[:200]
        return f"origin {shown!r} is not this page's nor one --web-origin allows"

    def render_GET(self, request: Request) -> bytes | int:
        peer = describe_peer(request.getClientAddress())
        problem = self.origin_problem(request)
        if problem is not None:
            self.log.info(
                "{peer}: WebSocket refused: {problem}", peer=peer, problem=problem
            )
            return self._refuse(request, 403, problem)
        if self.factory.shutting_down:
            return self._refuse(request, 503, "the server is shutting down")
        handshake = H11Handshake(ConnectionType.SERVER)
        headers = [
            (name, value)
            for name, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        ]
        try:
            handshake.initiate_upgrade_connection(headers, request.uri)
        except RemoteProtocolError as error:
            return self._refuse(request, 400, f"not a WebSocket request: {error}")
        accept = handshake.send(AcceptConnection())
        connection = handshake.connection
        assert connection is not None  # Made by the accepted handshake.
        channel = request.channel
        transport: Any = channel.transport
        transport.write(accept)
        # The HTTP channel is its transport's producer; the chat protocol
        # takes its place (its send queue and flow control are the chat's).
        transport.unregisterProducer()
        socket = WebSocketWire(connection, WebChatProtocol(self.factory))
        # The hook Twisted's own WebSocketResource upgrades with: from now
        # on the connection's bytes go to the socket.
        channel._protocolUpgradeForWebsockets(socket)
        return NOT_DONE_YET

    def _refuse(self, request: Request, code: int, problem: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        _security_headers(request)
        return problem.encode("utf-8") + b"\n"


def make_site(
    factory: ChatServerFactory, origins: Sequence[str] = (), page: bytes | None = None
) -> Site:
    """
    The web front of a chat server: the page and its WebSocket, for any
    server endpoint (C{twistd securemsg} listens with it over the server's
    own TLS).

    @param origins: see L{ChatSocket}.
    @param page: the page to serve (the shipped one if not given).
    """
    site = Site(
        ChatPage(ChatSocket(factory, origins), page),
        timeout=HTTP_TIMEOUT,
        reactor=factory.clock,
    )
    site.displayTracebacks = False
    site.noisy = False
    return site
