"""
The chat page in a real browser: headless Chromium (the system's
C{chromium} package) driven by Playwright, against the real C{twistd
securemsg --web} in a subprocess, with a TLS line client beside it.

Playwright's synchronous API runs in one thread of its own (its objects
belong to the thread that made them), while trial's reactor runs the line
client and watches twistd.  The browser trusts the test certificate by its
public key alone (C{--ignore-certificate-errors-spki-list}), as a careful
user would pin it, not by ignoring every certificate error.

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

from cryptography.hazmat.primitives import serialization
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

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

    def __init__(self, pin: str) -> None:
        self._pin = pin
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

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                *CHROMIUM_ARGUMENTS,
                f"--ignore-certificate-errors-spki-list={self._pin}",
            ],
        )

    def open(self, url: str, width: int = 900, height: int = 560) -> Any:
        """(In the browser's thread.)  A new page at C{url}, once connected."""
        context = self._browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        errors: list[str] = []
        page.errors = errors
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
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


def set_name(page: Any, name: str) -> None:
    type_line(page, f"/nick {name}")
    page.wait_for_function(
        "name => document.getElementById('me').textContent === name",
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
        self.browser = Browser(spki_pin(server))
        self.addCleanup(self.browser.stop)
        await self.browser.call(self.browser.launch)
        self.addCleanup(self.browser.call, self.browser.close)

    async def start_server(self, web: str) -> Twistd:
        twistd = start_twistd(
            self,
            self.directory,
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
