"""
The chat page in a real browser: headless Chromium (the system's
C{chromium} package) driven by Playwright, against the real C{twistd
securemsg --web} in a subprocess, with a TLS line client beside it.

Playwright's synchronous API runs in one thread of its own (its objects
belong to the thread that made them), while trial's reactor runs the line
client and watches twistd.  The browser trusts the test certificate by its
public key alone (C{--ignore-certificate-errors-spki-list}), as a careful
user would pin it, not by ignoring every certificate error.  A browser
with a client certificate has it presented by Playwright (see
L{BrowserClientCertificateCase}).

These tests are skipped, saying why, only where Playwright or Chromium
cannot be had; C{.ci/run} installs Chromium where it can.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

from cryptography.hazmat.primitives import serialization
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from securemsg.admin import ca as client_ca

from . import _certs
from ._loopback import LineClient, connect_line_client
from ._twistd import Twistd, reactor, start_twistd, stop_with_sigterm

T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

#: Chromium's switches for a quiet headless run in a container.
CHROMIUM_ARGUMENTS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

#: How long the page may take to show something (generous for a busy CI).
WAIT_MS = 15_000

#: Where to copy the screenshot the tests make (docs/web.png is one).
SCREENSHOT_ENVIRONMENT_VARIABLE = "SECUREMSG_WEB_SCREENSHOT"


def _why_no_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return "no Chromium to drive (apt-get install chromium)"
    return None


def spki_pin(pair: _certs.Pair) -> str:
    """The base64 SHA-256 of a certificate's public key, as Chromium pins it."""
    der = pair.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


class Browser:
    """Headless Chromium, driven from a thread of its own."""

    def __init__(
        self, pin: str, driver_environment: dict[str, str] | None = None
    ) -> None:
        self._pin = pin
        self._driver_environment = driver_environment or {}
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="playwright")
        self._pool.start()
        self._playwright: Any = None
        self._browser: Any = None

    def call(self, function: Callable[..., T], *args: Any, **kw: Any) -> Deferred[T]:
        """Run C{function(*args, **kw)} in the browser's thread."""
        return deferToThreadPool(reactor, self._pool, function, *args, **kw)

    def launch(self) -> None:
        """(In the browser's thread.)  Start Chromium."""
        from playwright.sync_api import sync_playwright

        # The Playwright driver (a Node program) takes its environment from
        # ours when it starts, and only then.
        with mock.patch.dict(os.environ, self._driver_environment):
            self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                *CHROMIUM_ARGUMENTS,
                f"--ignore-certificate-errors-spki-list={self._pin}",
            ],
        )

    def open(
        self,
        url: str,
        width: int = 900,
        height: int = 560,
        connected: bool = True,
        **options: Any,
    ) -> Any:
        """
        (In the browser's thread.)  A new page at C{url}, once connected
        (unless not C{connected}), in a context of its own made with
        C{options} (Playwright's).
        """
        context = self._browser.new_context(
            viewport={"width": width, "height": height}, **options
        )
        page = context.new_page()
        errors: list[str] = []
        page.errors = errors
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.response = page.goto(url)
        if connected:
            wait_status(page, "connected")
        return page

    def close(self) -> None:
        """(In the browser's thread.)  Stop Chromium."""
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()

    def stop(self) -> None:
        self._pool.stop()


# Steps run in the browser's thread.


def wait_status(page: Any, text: str) -> None:
    page.wait_for_function(
        "text => document.getElementById('status').textContent.startsWith(text)",
        arg=text,
        timeout=WAIT_MS,
    )


def type_line(page: Any, line: str) -> None:
    page.fill("#line", line)
    page.press("#line", "Enter")


def wait_line(page: Any, room: str, text: str) -> str:
    """Wait until C{room}'s list on C{page} has a line containing C{text}."""
    selector = f'#log div[data-room="{room}"] p'
    page.wait_for_function(
        "([s, t]) => [...document.querySelectorAll(s)]"
        ".some(p => p.textContent.includes(t))",
        arg=[selector, text],
        timeout=WAIT_MS,
    )
    lines: list[str] = page.eval_on_selector_all(
        selector, "ps => ps.map(p => p.textContent)"
    )
    return next(line for line in lines if text in line)


def wait_sender(page: Any, room: str, text: str) -> str:
    """
    Wait until C{room}'s list on C{page} has a message containing C{text};
    return the name it is shown as from.
    """
    wait_line(page, room, text)
    names: list[str] = page.eval_on_selector_all(
        f'#log div[data-room="{room}"] p.message',
        "(ps, t) => ps.filter(p => p.textContent.includes(t))"
        ".map(p => p.querySelector('.name').textContent)",
        text,
    )
    return names[-1]


def set_name(page: Any, name: str) -> None:
    type_line(page, f"/nick {name}")
    page.wait_for_function(
        "name => document.getElementById('me').textContent === name",
        arg=name,
        timeout=WAIT_MS,
    )


def wait_me(page: Any, name: str) -> None:
    """Wait until C{page} says its user is C{name} (the start of it)."""
    page.wait_for_function(
        "name => document.getElementById('me').textContent.startsWith(name)",
        arg=name,
        timeout=WAIT_MS,
    )


async def wait_for(client: LineClient, text: str) -> str:
    """Read C{client}'s lines until one with C{text} in it comes; return it."""
    while True:
        [line] = await client.next_lines(1)
        if text in line:
            return line


class BrowserTestCase(TestCase):
    """A twistd with --web, a TLS line client, and Chromium."""

    skip = _why_no_browser()
    timeout = 90

    async def setUp(self) -> None:  # type: ignore[override]
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        ca, server = _certs.default_ca_and_server()
        self.ca_pem = ca.cert_pem()
        self.cert, self.key = server.write(self.directory)
        self.twistd = await self.start_server("tcp:0:interface=127.0.0.1")
        self.browser = Browser(spki_pin(server), self.driver_environment())
        self.addCleanup(self.browser.stop)
        await self.browser.call(self.browser.launch)
        self.addCleanup(self.browser.call, self.browser.close)

    def server_options(self) -> list[str]:
        """More options for C{twistd securemsg}."""
        return []

    def driver_environment(self) -> dict[str, str]:
        """More environment for Playwright's driver."""
        return {}

    async def start_server(self, web: str) -> Twistd:
        twistd = start_twistd(
            self,
            self.directory,
            *self.server_options(),
            "--cert",
            self.cert,
            "--key",
            self.key,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--web",
            web,
            "--history-db",
            ":memory:",
            "--state",
            str(self.directory / "state.json"),
        )
        chat = await twistd.wait_for_message(
            r"securemsg listening on 127\.0\.0\.1:(\d+)"
        )
        page = await twistd.wait_for_message(
            r"securemsg web chat at https://127\.0\.0\.1:(\d+)/"
        )
        self.chat_port = int(chat.group(1))
        self.web_port = int(page.group(1))
        self.url = f"https://localhost:{self.web_port}/"
        return twistd

    async def line_client(self, name: str) -> LineClient:
        client = await connect_line_client(self.chat_port, self.ca_pem)
        assert client.transport is not None
        self.addCleanup(client.transport.loseConnection)
        await client.next_lines(1)  # The greeting.
        client.send(f"/nick {name}".encode())
        await client.next_lines(1)
        return client


class BrowserChatTests(BrowserTestCase):
    """Two pages and a line client chat together."""

    async def test_chat(self) -> None:
        """
        Two browser pages and a TLS line client hear each other; markup in
        a message shows as text and runs nothing; a message in a room the
        page is not looking at marks it unread.  The screenshot for the
        docs is taken here.
        """
        call = self.browser.call
        alice = await call(self.browser.open, self.url)
        bob = await call(self.browser.open, self.url)
        await call(set_name, alice, "alice")
        await call(set_name, bob, "bob")
        carol = await self.line_client("carol")
        carol.unread.clear()

        await call(type_line, alice, "hello from a browser")
        self.assertIn("[alice] hello from a browser", await carol.next_lines(1))
        shown = await call(wait_line, bob, "#lobby", "hello from a browser")
        self.assertIn("alice", shown)

        carol.send(b"hello from a terminal")
        for page in (alice, bob):
            await call(wait_line, page, "#lobby", "hello from a terminal")

        markup = (
            "<script>window.pwned = 1</script>"
            ' <img src=x onerror="window.pwned = 2"> <b>bold</b>'
        )
        await call(type_line, bob, markup)
        self.assertEqual(await carol.next_lines(1), [f"[bob] {markup}"])
        shown = await call(wait_line, alice, "#lobby", "<script>")
        self.assertIn(markup, shown)
        injected = await call(
            alice.evaluate,
            "() => [window.pwned, document.querySelectorAll('#log img, #log b,"
            " #log script').length]",
        )
        self.assertEqual(injected, [None, 0])

        # Rooms, who is here, and unread markers.
        await call(type_line, alice, "/join #dev")
        await call(
            alice.wait_for_selector, "#rooms li.current >> text=#dev", timeout=WAIT_MS
        )
        carol.send(b"/join #dev", b"/say #lobby anyone in the lobby?")
        await call(
            alice.wait_for_selector, "#rooms li.unread >> text=#lobby", timeout=WAIT_MS
        )
        badge = await call(alice.text_content, "#rooms li.unread .badge")
        self.assertEqual(badge, "1")
        await call(alice.wait_for_selector, "#people >> text=carol", timeout=WAIT_MS)
        await call(type_line, alice, "welcome to #dev, carol")
        await call(wait_line, alice, "#dev", "welcome to #dev, carol")
        heard = await wait_for(carol, "welcome to #dev, carol")
        self.assertIn("alice", heard)
        self.assertIn("#dev", heard)

        # Input history: arrow up brings the last line back.
        await call(alice.press, "#line", "ArrowUp")
        self.assertEqual(
            await call(alice.input_value, "#line"), "welcome to #dev, carol"
        )
        await call(alice.fill, "#line", "")

        # Back to the lobby: the marker goes, and the screenshot shows it.
        await call(alice.click, "#rooms >> text=#lobby")
        await call(
            alice.wait_for_selector, "#rooms li.current >> text=#lobby", timeout=WAIT_MS
        )
        self.assertEqual(await call(alice.locator("#rooms li.unread").count), 0)
        screenshot = self.directory / "web.png"
        await call(alice.screenshot, path=str(screenshot))
        self.assertEqual(screenshot.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        copy_to = os.environ.get(SCREENSHOT_ENVIRONMENT_VARIABLE)
        if copy_to:
            shutil.copyfile(screenshot, copy_to)
        self.assertEqual(alice.errors + bob.errors, [])

    async def test_phone_screen(self) -> None:
        """
        On a phone-sized screen the page fits its width, with the room list
        above the messages and the input line in view.
        """
        call = self.browser.call
        page = await call(self.browser.open, self.url, 375, 667)
        await call(type_line, page, "small screen")
        await call(wait_line, page, "#lobby", "small screen")
        layout = await call(
            page.evaluate,
            """() => {
                const box = (id) => document.getElementById(id).getBoundingClientRect();
                return {
                    scroll: document.documentElement.scrollWidth,
                    input: [box('line').left, box('line').right, box('input').bottom],
                    rooms: box('rooms').top < box('log').top,
                };
            }""",
        )
        self.assertLessEqual(layout["scroll"], 375)
        left, right, bottom = layout["input"]
        self.assertGreaterEqual(left, 0)
        self.assertLessEqual(right, 375)
        self.assertLessEqual(bottom, 667)
        self.assertTrue(layout["rooms"])


class BrowserReconnectTests(BrowserTestCase):
    """The page comes back by itself after the server restarts."""

    async def test_reconnect_after_restart(self) -> None:
        """
        When the server restarts, the page says it lost the connection,
        reconnects with backoff, and is back in the rooms it was in.
        """
        call = self.browser.call
        page = await call(self.browser.open, self.url)
        await call(type_line, page, "/join #dev")
        await call(page.wait_for_selector, "#rooms >> text=#dev", timeout=WAIT_MS)

        await stop_with_sigterm(self, self.twistd)
        await call(wait_status, page, "disconnected")
        self.twistd = await self.start_server(
            f"tcp:{self.web_port}:interface=127.0.0.1"
        )
        await call(wait_status, page, "connected")

        carol = await self.line_client("carol")
        carol.send(b"/join #dev", b"back again?")
        await call(wait_line, page, "#dev", "back again?")
        self.assertEqual(page.errors, [])


class BrowserClientCertificateCase(BrowserTestCase):
    """
    A server with C{--client-ca}, C{--crl} and C{--client-auth} (this
    class's L{client_auth}), and browsers that present a client certificate
    from that CA (alice's, or carol's, which the CRL revokes) or none.

    Playwright presents the certificate (its C{client_certificates}): for
    the origin it is given, Playwright's driver makes the TLS connection to
    the server itself, with the certificate, and hands Chromium the
    decrypted stream.  So it is the driver, not Chromium, that must trust
    the server here: it does, by the test CA given to it in
    C{NODE_EXTRA_CA_CERTS} (and the server's certificate names
    C{localhost}), ignoring no certificate error.  The server sees a
    browser with a client certificate either way.
    """

    client_auth: str

    async def setUp(self) -> None:  # type: ignore[override]
        self.ca_directory = Path(self.mktemp()).resolve() / "ca"
        client_ca.init_ca(self.ca_directory)
        self.alice = client_ca.issue(self.ca_directory, "alice")
        self.carol = client_ca.issue(self.ca_directory, "carol")
        client_ca.revoke(self.ca_directory, "carol")
        await super().setUp()

    def server_options(self) -> list[str]:
        paths = client_ca.ca_paths(self.ca_directory)
        return [
            "--client-ca",
            str(paths.certificate),
            "--crl",
            str(paths.crl),
            "--client-auth",
            self.client_auth,
        ]

    def driver_environment(self) -> dict[str, str]:
        server_ca = self.directory / "server-ca.pem"
        server_ca.write_bytes(self.ca_pem)
        return {"NODE_EXTRA_CA_CERTS": str(server_ca)}

    def presenting(self, issued: client_ca.IssuedCertificate) -> dict[str, Any]:
        """Playwright's context options for a browser presenting C{issued}."""
        return {
            "client_certificates": [
                {
                    "origin": self.url.rstrip("/"),
                    "certPath": issued.cert_path,
                    "keyPath": issued.key_path,
                }
            ]
        }


class BrowserClientCertificateTests(BrowserClientCertificateCase):
    """With C{--client-auth optional}: certificate holders, and guests."""

    client_auth = "optional"

    async def test_certificate_login(self) -> None:
        """
        The page with alice's certificate is alice, verified by it (a mark
        by the name, and C{/whoami} says so); a page without one is a
        guest, C{~guest-N}; each hears the other by those names, and so
        does a line client.
        """
        call = self.browser.call
        alice = await call(self.browser.open, self.url, **self.presenting(self.alice))
        guest = await call(self.browser.open, self.url)
        await call(wait_me, alice, "alice")
        # A guest is guest-N to itself, ~guest-N to the others.
        await call(wait_me, guest, "guest-")
        guest_name = await call(guest.text_content, "#me")

        await call(type_line, alice, "/whoami")
        shown = await call(wait_line, alice, "#lobby", "you are alice")
        fingerprint = self.alice.fingerprint
        self.assertIn(
            f"you are alice (verified by client certificate {fingerprint})", shown
        )
        mark = await call(
            alice.eval_on_selector,
            "#me",
            "me => [me.className, me.title, getComputedStyle(me, '::after').content]",
        )
        self.assertEqual(
            mark, ["verified", f"verified by client certificate {fingerprint}", '" ✓"']
        )
        await call(type_line, guest, "/whoami")
        shown = await call(wait_line, guest, "#lobby", "you are guest-")
        self.assertIn(f"you are {guest_name} (guest: no client certificate)", shown)
        self.assertEqual(
            await call(guest.eval_on_selector, "#me", "me => me.className"), ""
        )

        dave = await self.line_client("dave")
        await call(type_line, alice, "hello from alice's certificate")
        sender = await call(wait_sender, guest, "#lobby", "hello from alice's")
        self.assertEqual(sender, "alice")
        self.assertIn(
            "[alice] hello from alice's certificate",
            await wait_for(dave, "hello from alice's"),
        )
        await call(type_line, guest, "hello from a guest")
        sender = await call(wait_sender, alice, "#lobby", "hello from a guest")
        self.assertEqual(sender, f"~{guest_name}")
        self.assertEqual(alice.errors + guest.errors, [])

    async def test_revoked_certificate(self) -> None:
        """
        A certificate the CRL revokes logs nobody in: the server ends the
        handshake, and the browser gets no page (Playwright's driver says
        why, in a page of its own).
        """
        call = self.browser.call
        carol = await call(
            self.browser.open, self.url, connected=False, **self.presenting(self.carol)
        )
        self.assertEqual(carol.response.status, 503)
        self.assertIn("certificate revoked", await call(carol.text_content, "body"))


class BrowserRequiredCertificateTests(BrowserClientCertificateCase):
    """With C{--client-auth required}: no certificate, no page."""

    client_auth = "required"

    async def test_required(self) -> None:
        """
        A browser without a certificate gets no page; one with alice's
        comes in as alice.
        """
        call = self.browser.call
        failure = await self.assertFailure(
            call(self.browser.open, self.url, connected=False), Exception
        )
        # With TLS 1.3 the server's "certificate required" alert comes after
        # the client has finished its side of the handshake, so Chromium
        # reports it as a refused certificate or as a connection the server
        # closed, depending on which it reads first.
        self.assertRegex(
            str(failure),
            r"net::ERR_(BAD_SSL_CLIENT_AUTH_CERT|SOCKET_NOT_CONNECTED"
            r"|CONNECTION_CLOSED|CONNECTION_RESET)",
        )
        alice = await call(self.browser.open, self.url, **self.presenting(self.alice))
        await call(wait_me, alice, "alice")
        await call(type_line, alice, "/whoami")
        shown = await call(wait_line, alice, "#lobby", "you are alice")
        self.assertIn(
            f"you are alice (verified by client certificate {self.alice.fingerprint})",
            shown,
        )
        self.assertEqual(alice.errors, [])
