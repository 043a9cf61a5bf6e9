"""
Tests for L{securemsg.web}: the chat page and the WebSocket bridge, in
memory (the browser itself is in L{tests.test_web_browser}).

A WebSocket client made with wsproto talks to the real HTTP site over
iosim; line clients talk to the same chat factory.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from securemsg import tap
from securemsg.admin import ca
from securemsg.core.hub import ChatHub as Chat
from securemsg.core.limits import Limits
from securemsg.server import web
from securemsg.server.factory import ChatServerFactory
from securemsg.server.guard import GuardedTLSFactory, GuardedTLSServerEndpoint
from securemsg.server.outbox import ANNOUNCEMENT_DELAY
from securemsg.server.reload import CertificateReloader, ReloadService
from securemsg.server.service import ListenerService
from securemsg.tls.policy import ServerTLS, TLSConfigError, load_tls

from ._service import ServiceTreeCase
from ._tls import LineCollector
from .test_identity import MutualTLSCase, Server

PAGE_ORIGIN = "https://chat.example:8443"


class SocketClient(Protocol):
    """A WebSocket client (wsproto) that keeps what the server sends."""

    def __init__(self, origin: str | None = PAGE_ORIGIN, path: str = "/socket"):
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.origin = origin
        self.path = path
        self.accepted = False
        self.refused: int | None = None
        self.refusal = b""
        self.messages: list[str] = []
        self.closed: int | None = None
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        headers = [] if self.origin is None else [(b"origin", self.origin.encode())]
        request = Request(
            host="chat.example:8443", target=self.path, extra_headers=headers
        )
        self.transport.write(self.ws.send(request))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, RejectConnection):
                self.refused = event.status_code
            elif isinstance(event, RejectData):
                self.refusal += event.data
            elif isinstance(event, TextMessage):
                self.messages.append(event.data)
            elif isinstance(event, CloseConnection):
                self.closed = event.code

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason

    def send(self, text: str) -> None:
        self.transport.write(self.ws.send(TextMessage(data=text)))  # type: ignore[union-attr]

    def command(self, **fields: Any) -> None:
        self.send(json.dumps(fields))

    def take(self) -> list[dict[str, Any]]:
        """The events received since the last call, as JSON objects."""
        messages, self.messages = self.messages, []
        return [json.loads(m) for m in messages]


class BridgeCase(SynchronousTestCase):
    """A chat factory, its web site, and clients of both kinds in memory."""

    max_line_length = 100

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = ChatServerFactory.standalone(
            self.clock,
            limits=replace(self.limits(), max_line_length=self.max_line_length),
        )
        self.site = web.make_site(self.factory, ["https://other.example"])
        self.pumps: list[IOPump] = []

    def limits(self) -> Limits:
        return Limits(flood_burst=1000, flood_rate=1000)

    def browser(self, origin: str | None = PAGE_ORIGIN, **kw: Any) -> SocketClient:
        client = SocketClient(origin, **kw)
        address = IPv4Address("TCP", "127.0.0.1", 40000 + len(self.pumps))
        _, _, pump = connectedServerAndClient(
            lambda: self.site.buildProtocol(address),
            lambda: client,
            greet=False,
            clock=self.clock,
        )
        self.pumps.append(pump)
        self.flush()
        return client

    def line_client(self) -> LineCollector:
        collector = LineCollector()
        address = IPv4Address("TCP", "127.0.0.1", 45000 + len(self.pumps))
        _, _, pump = connectedServerAndClient(
            lambda: self.factory.buildProtocol(address),
            lambda: collector,
            greet=False,
            clock=self.clock,
        )
        self.pumps.append(pump)
        self.flush()
        return collector

    def flush(self) -> None:
        for _ in range(3):
            for pump in self.pumps:
                pump.flush()
            self.clock.advance(ANNOUNCEMENT_DELAY)


class BridgeTests(BridgeCase):
    """
    A browser's WebSocket is a chat participant like a line client: JSON
    events, one message per line, the same rooms and rules.
    """

    def test_join_json(self) -> None:
        """
        A browser is let in, named, and greeted in JSON (no /format json
        needed, so the greeting is JSON too); each event is one message.
        """
        browser = self.browser()
        self.assertTrue(browser.accepted)
        events = browser.take()
        self.assertEqual(events[0]["type"], "notice")
        self.assertIn("Welcome to securemsg", events[0]["text"])
        browser.command(type="whoami")
        self.flush()
        [whoami] = browser.take()
        self.assertEqual(whoami["type"], "whoami")
        self.assertTrue(whoami["name"].startswith("guest-"), whoami)
        self.assertEqual(len(self.factory.chat), 1)

    def test_chat_with_line_client(self) -> None:
        """
        A browser and a line client in the same room hear each other; the
        browser's events are JSON objects, the line client's text.
        """
        browser = self.browser()
        line = self.line_client()
        browser.command(type="nick", name="webby")
        line.sendLine(b"/nick liner")
        self.flush()
        browser.take()
        line.take()
        browser.command(type="say", text="hello from the web")
        line.sendLine(b"hello from a terminal")
        self.flush()
        self.assertIn("[webby] hello from the web", line.take())
        [heard] = browser.take()
        self.assertEqual(
            (heard["type"], heard["room"], heard["from"], heard["text"]),
            ("message", "#lobby", "liner", "hello from a terminal"),
        )

    def test_rooms_and_history(self) -> None:
        """
        A browser joins a room and gets its history replayed, as JSON.
        """
        line = self.line_client()
        line.sendLine(b"/join #dev")
        line.sendLine(b"before you came")
        self.flush()
        browser = self.browser()
        browser.take()
        browser.command(type="join", room="#dev")
        self.flush()
        events = browser.take()
        self.assertEqual(events[0], {"type": "join", "room": "#dev", "name": "guest-2"})
        [history] = [e for e in events if e["type"] == "history"]
        self.assertEqual([m["text"] for m in history["messages"]], ["before you came"])

    def test_over_long_message(self) -> None:
        """
        A message longer than the line limit is refused with the line
        protocol's error and not relayed; the connection goes on.
        """
        browser = self.browser()
        line = self.line_client()
        browser.take()
        line.take()
        with capturedLogs() as events:
            browser.command(type="say", text="x" * 500)
            self.flush()
        [error] = browser.take()
        self.assertEqual(error["type"], "error")
        self.assertIn("longer than 100 bytes", error["text"])
        self.assertEqual(line.take(), [])
        self.assertTrue(any("longer than 100 bytes" in formatEvent(e) for e in events))
        browser.command(type="say", text="short")
        self.flush()
        self.assertEqual(line.take(), ["[guest-1] short"])

    def test_over_long_message_not_held(self) -> None:
        """
        The bridge keeps no more of a message than the limit, however long
        it grows (sent in fragments, never finished).
        """
        browser = self.browser()
        browser.take()
        [protocol] = [
            p
            for p in self.factory.open_connections
            if isinstance(p, web.WebChatProtocol)
        ]
        wire = protocol.transport._socket
        for _ in range(50):
            browser.transport.write(  # type: ignore[union-attr]
                browser.ws.send(TextMessage(data="y" * 1000, message_finished=False))
            )
            self.flush()
        self.assertLessEqual(sum(map(len, wire._pieces)), self.max_line_length + 1)
        self.assertEqual(browser.take(), [])

    def test_exactly_the_limit(self) -> None:
        """A message of exactly the line limit in bytes is a line."""
        browser = self.browser()
        line = self.line_client()
        browser.take()
        line.take()
        text = json.dumps({"type": "say", "text": ""})
        padding = self.max_line_length - len(text.encode())
        # Two-byte characters: the limit is in bytes, as for lines.
        text = json.dumps(
            {"type": "say", "text": "é" * (padding // 2)}, ensure_ascii=False
        )
        self.assertLessEqual(len(text.encode()), self.max_line_length)
        browser.send(text)
        self.flush()
        self.assertEqual(browser.take(), [])
        self.assertEqual(line.take(), ["[guest-1] " + "é" * (padding // 2)])

    def test_line_break_refused(self) -> None:
        """A message is one line: one with a line break in it is refused."""
        browser = self.browser()
        line = self.line_client()
        browser.take()
        line.take()
        browser.send('{"type": "say", "text": "a"}\n{"type": "say", "text": "b"}')
        self.flush()
        [error] = browser.take()
        self.assertIn("one line per message", error["text"])
        self.assertEqual(line.take(), [])

    def test_commands(self) -> None:
        """/commands work from a browser as JSON commands (here /rooms)."""
        browser = self.browser()
        browser.take()
        browser.command(type="rooms")
        self.flush()
        [rooms] = browser.take()
        self.assertEqual(rooms["type"], "rooms")
        self.assertEqual(rooms["rooms"][0]["name"], "#lobby")

    def test_binary_refused(self) -> None:
        """A binary message is no line: the browser is told and closed."""
        browser = self.browser()
        browser.take()
        browser.transport.write(browser.ws.send(BytesMessage(data=b"hi")))  # type: ignore[union-attr]
        self.flush()
        [error] = browser.take()
        self.assertEqual(error["type"], "error")
        self.assertEqual(browser.closed, web.CLOSE_UNSUPPORTED_DATA)
        self.assertEqual(len(self.factory.chat), 0)

    def test_quit_closes(self) -> None:
        """/quit says goodbye, closes the socket, and others hear it."""
        browser = self.browser()
        line = self.line_client()
        browser.take()
        line.take()
        browser.command(type="quit", message="bye all")
        self.flush()
        self.assertEqual(browser.take()[-1], {"type": "notice", "text": "goodbye"})
        self.assertEqual(browser.closed, web.CLOSE_NORMAL)
        self.assertIsNotNone(browser.lost)
        self.assertIn('*** guest-1 left, saying "bye all"', line.take())

    def test_browser_closes(self) -> None:
        """The browser's close frame is answered and it leaves the chat."""
        browser = self.browser()
        line = self.line_client()
        line.take()
        browser.transport.write(browser.ws.send(CloseConnection(code=1001)))  # type: ignore[union-attr]
        self.flush()
        self.assertEqual(browser.closed, 1001)
        self.assertEqual(len(self.factory.chat), 1)
        self.assertEqual(line.take(), ["*** guest-1 left"])

    def test_shutdown(self) -> None:
        """The server's shutdown tells browsers too, and closes them."""
        browser = self.browser()
        browser.take()
        self.factory.shut_down()
        self.flush()
        self.assertEqual(
            browser.take(), [{"type": "notice", "text": "the server is shutting down"}]
        )
        self.assertEqual(browser.closed, web.CLOSE_NORMAL)


class WriteCountingTransport(StringTransport):
    """A transport that counts its writes."""

    writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


class BatchingTests(BridgeCase):
    """The lines of one turn leave in one write, as a line client's do."""

    def test_one_write_per_turn(self) -> None:
        """
        Three lines said in one read reach a browser as three messages,
        written at once (so they can share a TLS record).
        """
        transport = WriteCountingTransport()
        socket = web.WebSocketWire(
            Connection(ConnectionType.SERVER), web.WebChatProtocol(self.factory)
        )
        socket.makeConnection(transport)
        line = self.line_client()
        self.flush()
        transport.clear()
        transport.writes = 0
        line.transport.write(b"one\ntwo\nthree\n")  # type: ignore[union-attr]
        self.flush()
        self.assertEqual(transport.writes, 1)
        reader = Connection(ConnectionType.CLIENT)
        reader.receive_data(transport.value())
        texts = [
            json.loads(e.data)["text"] if isinstance(e, TextMessage) else e
            for e in reader.events()
        ]
        self.assertEqual(texts, ["one", "two", "three"])


class LimitTests(BridgeCase):
    """The line protocol's limits hold a browser too."""

    def limits(self) -> Limits:
        return Limits(flood_burst=3, flood_rate=1, flood_disconnect=5, idle_timeout=30)

    def test_flood_control(self) -> None:
        """Past the burst, lines are dropped with an error, then cut off."""
        browser = self.browser()
        line = self.line_client()
        browser.take()
        line.take()
        for n in range(10):
            browser.command(type="say", text=f"line {n}")
        self.flush()
        self.assertEqual(
            line.take()[:3],
            ["[guest-1] line 0", "[guest-1] line 1", "[guest-1] line 2"],
        )
        errors = [e["text"] for e in browser.take() if e["type"] == "error"]
        self.assertIn("too many lines", errors[0])
        self.assertEqual(errors[-1], "disconnected for flooding")
        self.assertEqual(browser.closed, web.CLOSE_NORMAL)

    def test_idle_timeout(self) -> None:
        """A browser that sends nothing is disconnected like anyone."""
        browser = self.browser()
        browser.take()
        self.clock.advance(31)
        self.flush()
        [error] = browser.take()
        self.assertIn("without a line", error["text"])
        self.assertEqual(len(self.factory.chat), 0)

    def test_send_queue_bound(self) -> None:
        """
        A browser that does not read has a bounded queue, as any client:
        over it, the connection is aborted.
        """
        self.factory.limits = Limits(send_queue=2000, flood_burst=1000, flood_rate=1000)
        browser = self.browser()
        browser.take()
        [protocol] = [
            p
            for p in self.factory.open_connections
            if isinstance(p, web.WebChatProtocol)
        ]
        protocol.limits = self.factory.limits
        line = self.line_client()
        protocol.pauseProducing()  # As the transport does when it is full.
        for n in range(100):
            line.sendLine(f"line {n}".encode())
        self.flush()
        self.assertIsNotNone(browser.lost)
        self.assertEqual(len(self.factory.chat), 1)


class OriginTests(BridgeCase):
    """Only the page's own origin, and those allowed, open the socket."""

    def test_own_origin(self) -> None:
        """The page's own origin (its Host) is let in."""
        self.assertTrue(self.browser("https://CHAT.example:8443").accepted)

    def test_allowed_origin(self) -> None:
        """An origin on the allow-list is let in."""
        self.assertTrue(self.browser("https://other.example").accepted)

    def test_no_origin(self) -> None:
        """A program (no Origin) is let in: only browsers send one."""
        self.assertTrue(self.browser(None).accepted)

    def test_foreign_origin_refused(self) -> None:
        """
        Another site's page is refused with 403 and a logged reason, and
        never joins the chat.
        """
        with capturedLogs() as events:
            browser = self.browser("https://evil.example")
        self.assertFalse(browser.accepted)
        self.assertEqual(browser.refused, 403)
        self.assertIn(b"https://evil.example", browser.refusal)
        self.assertEqual(len(self.factory.chat), 0)
        logged = [formatEvent(e) for e in events]
        self.assertTrue(
            any(
                "WebSocket refused: origin 'https://evil.example'" in m for m in logged
            ),
            logged,
        )

    def test_http_page_origin_refused(self) -> None:
        """The same host over plain HTTP is another origin."""
        self.assertEqual(self.browser("http://chat.example:8443").refused, 403)


class PageTests(BridgeCase):
    """The page is served with its type and a strict security policy."""

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        received: list[bytes] = []

        class Get(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(  # type: ignore[union-attr]
                    f"GET {path} HTTP/1.1\r\nHost: chat.example\r\n"
                    "Connection: close\r\n\r\n".encode()
                )

            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        address = IPv4Address("TCP", "127.0.0.1", 40000)
        _, _, pump = connectedServerAndClient(
            lambda: self.site.buildProtocol(address), Get, greet=False, clock=self.clock
        )
        pump.flush()
        head, _, body = b"".join(received).partition(b"\r\n\r\n")
        status, *lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        return int(status.split()[1]), headers, body

    def test_page(self) -> None:
        """
        The page: HTML, nosniff, and a policy that allows its own inline
        script and style only by their hashes, and connections to itself.
        """
        status, headers, body = self.get("/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        self.assertEqual(headers["x-content-type-options"], "nosniff")
        policy = headers["content-security-policy"]
        self.assertIn("default-src 'none'", policy)
        self.assertIn("script-src 'sha256-", policy)
        self.assertIn("connect-src 'self'", policy)
        self.assertNotIn("unsafe", policy)
        self.assertEqual(body, web.read_page())
        self.assertNotIn(b"http://", body)
        self.assertNotIn(b"https://", body)

    def test_policy_hashes(self) -> None:
        """The policy's hashes are those of the page's script and style."""
        page = b"<style>a{}</style><script>go()</script>"
        policy = web.content_security_policy(page)
        # sha256 of "go()" and "a{}", base64.
        self.assertIn("script-src 'sha256-", policy)
        self.assertEqual(policy.count("'sha256-"), 2)
        self.assertNotEqual(
            policy, web.content_security_policy(page.replace(b"go", b"no"))
        )

    def test_unknown_path(self) -> None:
        """Nothing else is served."""
        self.assertEqual(self.get("/secret")[0], 404)

    def test_socket_without_upgrade(self) -> None:
        """A plain GET of the socket's path is a 400, not a crash."""
        status, _, _ = self.get("/socket")
        self.assertEqual(status, 400)


class WebTLSTests(MutualTLSCase):
    """
    Over real TLS (in memory) with client certificates: the browser's
    certificate names it, as it does a line client.
    """

    def connect_browser(
        self,
        factory: ChatServerFactory,
        creator: Any,
        certificate: PrivateCertificate | None,
    ) -> SocketClient:
        site = web.make_site(factory)
        server_factory = TLSMemoryBIOFactory(creator, False, site, clock=self.clock)
        client = SocketClient()
        options = optionsForClientTLS(
            "localhost",
            trustRoot=Certificate.loadPEM(self.server_ca.cert_pem()),
            clientCertificate=certificate,
        )
        client_factory = TLSMemoryBIOFactory(
            options, True, ClientFactory.forProtocol(lambda: client), clock=self.clock
        )
        address = IPv4Address("TCP", "127.0.0.1", 50001)
        _, _, pump = connectedServerAndClient(
            lambda: server_factory.buildProtocol(address),
            lambda: client_factory.buildProtocol(address),
            greet=False,
            clock=self.clock,
        )
        self.pumps.append(pump)
        self.flush()
        return client

    def test_client_certificate_login(self) -> None:
        """
        With client certificates asked for, the browser's certificate is
        its name; a TLS line client with its own certificate chats with it.
        """
        loaded = load_tls(self.settings())
        chat = Chat(self.clock, certificates=True)
        factory = ChatServerFactory(self.clock, chat)
        creator = ServerTLS(loaded.context)
        browser = self.connect_browser(
            factory, creator, self.certificate(self.issued["alice"])
        )
        self.assertTrue(browser.accepted)
        browser.command(type="whoami")
        self.flush()
        [whoami] = [e for e in browser.take() if e["type"] == "whoami"]
        self.assertEqual((whoami["name"], whoami["verified"]), ("alice", True))

        bob = self.connect(
            Server(factory, creator), self.certificate(self.issued["bob"])
        )
        bob.take()
        browser.take()
        self.send(bob, "hi alice")
        [heard] = browser.take()
        self.assertEqual((heard["from"], heard["text"]), ("bob", "hi alice"))
        browser.command(type="say", text="hi bob")
        self.flush()
        self.assertIn("[alice] hi bob", bob.take())

    def test_required_certificate(self) -> None:
        """Without a certificate, a browser gets no page when one is required."""
        loaded = load_tls(self.settings())
        factory = ChatServerFactory(self.clock, Chat(self.clock, certificates=True))
        browser = self.connect_browser(factory, ServerTLS(loaded.context), None)
        self.assertFalse(browser.accepted)
        self.assertEqual(len(factory.chat), 0)

    def test_revoked_on_reload(self) -> None:
        """
        A reload that revokes the certificate a browser logged in with
        disconnects the browser, as it does a line client: the browser's
        connection is one of the chat's.
        """
        settings = self.settings()
        loaded = load_tls(settings)
        factory = ChatServerFactory(self.clock, Chat(self.clock, certificates=True))
        creator = ServerTLS(loaded.context)
        reloader = CertificateReloader(
            settings, creator, loaded, recheck=factory.recheck_certificates
        )
        browser = self.connect_browser(
            factory, creator, self.certificate(self.issued["alice"])
        )
        browser.take()
        ca.revoke(self.ca_directory, "alice")
        worked, _ = reloader.reload("test")
        self.flush()
        self.assertTrue(worked)
        [error] = browser.take()
        self.assertEqual(error["type"], "error")
        self.assertIn("no longer accepted", error["text"])
        self.assertEqual(browser.closed, web.CLOSE_NORMAL)
        self.assertEqual(len(factory.chat), 0)


class WebOptionsTests(ServiceTreeCase):
    """C{--web} and C{--web-origin} of C{twistd securemsg}."""

    def test_web_listens_with_the_same_tls_and_chat(self) -> None:
        """
        --web listens on its endpoint with the page's site behind the very
        TLS object the chat listens with, the one a reload (SIGHUP,
        /reload) swaps the context of; its browsers join the same chat.
        """
        reactor, top = self.build(
            "--web", "tcp:8443:interface=127.0.0.1",
            "--web-origin", "https://chat.example",
        )  # fmt: skip
        top.privilegedStartService()
        top.startService()
        [chat_port, web_port] = reactor.tcpServers
        self.assertEqual((web_port[0], web_port[3]), (8443, "127.0.0.1"))
        chat_tls, web_tls = chat_port[1], web_port[1]
        assert isinstance(web_tls, GuardedTLSFactory), web_tls
        site = web_tls.wrappedFactory
        self.assertIsInstance(site, Site)
        reloads = top.getServiceNamed("reload")
        assert isinstance(reloads, ReloadService)
        chat_service = top.getServiceNamed("chat")
        web_service = top.getServiceNamed("web")
        assert isinstance(chat_service, ListenerService)
        assert isinstance(web_service, ListenerService)
        self.assertIs(web_service.factory, site)
        creator = reloads.reloader.creator
        for service in (chat_service, web_service):
            [(_, endpoint)] = service.endpoints
            assert isinstance(endpoint, GuardedTLSServerEndpoint), endpoint
            self.assertIs(endpoint.creator, creator)
        socket = site.resource.children[web.SOCKET_PATH]
        assert isinstance(chat_tls, GuardedTLSFactory), chat_tls
        self.assertIs(socket.factory, chat_tls.wrappedFactory)
        self.assertEqual(socket.origins, {"https://chat.example"})
        self.successResultOf(top.stopService())

    def test_no_web_by_default(self) -> None:
        """Without --web, nothing but the chat listens."""
        reactor, top = self.build()
        top.privilegedStartService()
        top.startService()
        self.assertEqual(len(reactor.tcpServers), 1)
        self.successResultOf(top.stopService())

    def test_bad_endpoint(self) -> None:
        """A --web that is no endpoint is one clear error naming --web."""
        error = self.assertRaises(TLSConfigError, self.build, "--web", "nonsense:1")
        self.assertIn("--web 'nonsense:1'", str(error))

    def test_origin_needs_web(self) -> None:
        """--web-origin alone is a mistake."""
        error = self.assertRaises(
            UsageError,
            tap.Options().parseOptions,
            ["--web-origin", "https://a.example"],
        )
        self.assertEqual(str(error), "--web-origin needs --web")

    def test_origin_checked(self) -> None:
        """An origin is a scheme and a host, nothing more."""
        for bad in ("chat.example", "https://chat.example/page", "ftp://x", "https://"):
            self.assertRaises(
                UsageError,
                tap.Options().parseOptions,
                ["--web", "tcp:8443", "--web-origin", bad],
            )
