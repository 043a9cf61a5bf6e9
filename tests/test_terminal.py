"""
The terminal front end of C{securemsg chat}: how lines look (colours,
kinds of line), how keys reach the session, and the real client in a
pseudo-terminal whose screen a terminal emulator (pyte) keeps, chatting
through a real server over loopback TLS.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import struct
import subprocess
import sys
import termios
import threading
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pyte
from prompt_toolkit.application import create_app_session
from prompt_toolkit.data_structures import Size
from prompt_toolkit.formatted_text import to_plain_text
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.shortcuts import print_formatted_text
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import securemsg
from securemsg.client.terminal import (
    PALETTE,
    STYLE,
    TerminalFrontEnd,
    install_reactor,
    name_colour,
    render,
    render_sent,
    render_status,
)
from securemsg.protocol import wire

from . import _certs
from ._loopback import (
    TIMEOUT,
    LineClient,
    LoopbackServerTestCase,
    Waiters,
    reactor,
)
from ._twistd import PROCESS_TIMEOUT
from .test_wire import INVISIBLE_DANGER, shown_as, unsafe_characters


def subprocess_environment(**changes: str) -> dict[str, str]:
    """
    Our environment with C{changes}, for a subprocess of this interpreter
    that must import the securemsg this test run imports: wherever it is
    installed, or this checkout (an editable install finds it with an
    import hook; C{PYTHONPATH} adds its folder in case nothing else does).
    """
    env = dict(os.environ, **changes)
    source = str(Path(securemsg.__file__).resolve().parent.parent)
    if source not in sys.path:
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [source, env.get("PYTHONPATH")])
        )
    return env


class ColourTests(SynchronousTestCase):
    """
    Each name has one colour from L{PALETTE}, whatever its case, in every
    run.
    """

    def test_fixed_name_fixed_colour(self) -> None:
        """
        The colour comes from CRC-32 of the lower-cased name, not from the
        per-process salted C{hash}: C{alice} is always the same entry.
        """
        self.assertEqual(zlib.crc32(b"alice") % len(PALETTE), 7)
        self.assertEqual(name_colour("alice"), "ansibrightcyan")
        self.assertEqual(name_colour("bob"), "ansigreen")

    def test_any_case(self) -> None:
        """A name has the same colour in any case."""
        for name in ["Alice", "ALICE", "aLiCe"]:
            self.assertEqual(name_colour(name), name_colour("alice"))

    def test_palette(self) -> None:
        """
        Every colour comes from the palette, and different names do get
        different colours.
        """
        names = [f"user{number}" for number in range(40)]
        colours = {name_colour(name) for name in names}
        self.assertLessEqual(colours, set(PALETTE))
        self.assertGreater(len(colours), 1)

    def test_name_in_its_colour(self) -> None:
        """Wherever a name appears, it is bold, in its colour."""
        bold_alice = ("bold ansibrightcyan", "alice")
        self.assertIn(bold_alice, render(wire.Message("alice", "hi")))
        self.assertIn(bold_alice, render(wire.Action("alice", "waves")))
        self.assertIn(bold_alice, render(wire.PrivateMessage("alice", "bob", "x")))
        self.assertIn(bold_alice, render(wire.PrivateMessage("bob", "alice", "x")))
        self.assertIn(bold_alice, render_sent("hello", "alice"))


class RenderTests(SynchronousTestCase):
    """
    How each kind of line is shown: the text is the wire form, and its
    style says what kind of line it is.
    """

    def test_message(self) -> None:
        """A chat line is C{[name] text}."""
        self.assertEqual(
            list(render(wire.Message("bob", "hi alice"))),
            [("", "["), ("bold ansigreen", "bob"), ("", "] hi alice")],
        )

    def test_action(self) -> None:
        """An action is C{* name text}, in italics."""
        self.assertEqual(
            list(render(wire.Action("bob", "waves"))),
            [
                ("class:action", "* "),
                ("bold ansigreen", "bob"),
                ("class:action", " waves"),
            ],
        )

    def test_private(self) -> None:
        """
        A private line is C{[from -> to] text}, in the private style apart
        from the names.
        """
        self.assertEqual(
            list(render(wire.PrivateMessage("bob", "alice", "psst"))),
            [
                ("class:private", "["),
                ("bold ansigreen", "bob"),
                ("class:private", " -> "),
                ("bold ansibrightcyan", "alice"),
                ("class:private", "] psst"),
            ],
        )

    def test_notice(self) -> None:
        """A notice is C{*** text}, dimmed."""
        self.assertEqual(
            list(render(wire.Notice("bob joined"))),
            [("class:notice", "*** bob joined")],
        )

    def test_error(self) -> None:
        """An error is C{!!! text}, in red."""
        self.assertEqual(
            list(render(wire.Error("the name bob is taken"))),
            [("class:error", "!!! the name bob is taken")],
        )

    def test_status(self) -> None:
        """The session's own diagnostics are C{-- text}, in their own style."""
        self.assertEqual(
            list(render_status("server closed the connection")),
            [("class:status", "-- server closed the connection")],
        )

    def test_styles(self) -> None:
        """The styles make notices grey, errors red and private lines magenta."""
        attributes = {
            kind: STYLE.get_attrs_for_style_str(f"class:{kind}")
            for kind in ["notice", "error", "private", "action", "status"]
        }
        self.assertEqual(attributes["notice"].color, "ansibrightblack")
        self.assertEqual(attributes["error"].color, "ansired")
        self.assertTrue(attributes["error"].bold)
        self.assertEqual(attributes["private"].color, "ansimagenta")
        self.assertTrue(attributes["action"].italic)
        self.assertTrue(attributes["status"].italic)
        for colour in ["ansired", "ansimagenta", "ansibrightblack"]:
            self.assertNotIn(colour, PALETTE)

    def test_own_lines(self) -> None:
        """
        The user's own lines look as others see them: C{[name] text}, or
        C{* name text} for C{/me text}; before the server has confirmed a
        name, as C{(you)}, which cannot be anybody's name.
        """
        self.assertEqual(
            render_sent("hello", "alice"), render(wire.Message("alice", "hello"))
        )
        self.assertEqual(
            render_sent("/ME  waves", "alice"), render(wire.Action("alice", "waves"))
        )
        self.assertEqual(
            to_plain_text(render_sent("hello", None)),
            "[(you)] hello",
        )

    def test_control_characters(self) -> None:
        """
        Control characters never reach the terminal, whatever made the
        event, even in the user's own lines and in diagnostics.
        """
        lines = [
            render(wire.Message("bob", "\x1b[2J\rgotcha\x07")),
            render(wire.Notice("\x1b]0;title\x07")),
            render_sent("\x1b[31mred", "alice"),
            render_status("bad\x00\u202e"),
        ]
        # What is unsafe is stated in test_wire, not taken from wire.sanitize.
        for line in lines:
            self.assertEqual(unsafe_characters(to_plain_text(line)), [], line)
        self.assertEqual(lines[0][2], ("", "] ^[[2J^Mgotcha^G"))

    def test_invisible_characters(self) -> None:
        """
        Bidi marks, embeddings, overrides and isolates, and the line and
        paragraph separators, show as code points in every kind of line.
        """
        visible = "".join(map(shown_as, INVISIBLE_DANGER))
        self.assertNotIn("\u2028", visible)
        self.assertEqual(
            to_plain_text(render(wire.Message("bob", f"a{INVISIBLE_DANGER}b"))),
            f"[bob] a{visible}b",
        )
        self.assertEqual(
            to_plain_text(render_status(INVISIBLE_DANGER)), f"-- {visible}"
        )
        lines = [
            render(wire.Action("bob", INVISIBLE_DANGER)),
            render(wire.PrivateMessage("bob", "alice", INVISIBLE_DANGER)),
            render(wire.Notice(INVISIBLE_DANGER)),
            render(wire.Error(INVISIBLE_DANGER)),
            render_sent(INVISIBLE_DANGER, "alice"),
        ]
        for line in lines:
            text = to_plain_text(line)
            self.assertEqual(unsafe_characters(text), [], text)
            self.assertIn(visible, text)

    def test_printed(self) -> None:
        """
        Printed on an xterm, a chat line is its wire text, with the name in
        its colour (bright cyan is SGR 96) and no other escape in the text.
        """
        written = io.StringIO()
        output = Vt100_Output(written, lambda: Size(24, 80), term="xterm-256color")
        print_formatted_text(
            render(wire.Message("alice", "hi \x1b[31mthere")),
            style=STYLE,
            output=output,
        )
        self.assertIn("[\x1b[0;96;1malice\x1b[0m] hi ^[[31mthere", written.getvalue())


class InstallReactorTests(SynchronousTestCase):
    """
    L{install_reactor} puts Twisted on the asyncio loop prompt_toolkit
    uses, unless a reactor is already installed.
    """

    def test_installs_asyncio_reactor(self) -> None:
        """
        In a fresh process, the reactor is Twisted's asyncio reactor, on the
        current event loop; a second call changes nothing.
        """
        program = (
            "import asyncio\n"
            "from securemsg.client import terminal\n"
            "terminal.install_reactor()\n"
            "from twisted.internet import reactor\n"
            "terminal.install_reactor()\n"
            "from twisted.internet import reactor as again\n"
            "loop = asyncio.get_event_loop()\n"
            "print(type(reactor).__name__, reactor._asyncioEventloop is loop,"
            " again is reactor)\n"
        )
        completed = subprocess.run(
            [sys.executable, "-c", program],
            env=subprocess_environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(completed.stdout, "AsyncioSelectorReactor True True\n")

    def test_reactor_installed_already(self) -> None:
        """With a reactor installed (trial's here), nothing changes."""
        installed = sys.modules["twisted.internet.reactor"]
        install_reactor()
        self.assertIs(sys.modules["twisted.internet.reactor"], installed)


# ---------------------------------------------------------------------------
# Keys to the session, in this process


class FakeClient:
    """What the front end reads of a L{securemsg.client.api.ChatClient}."""

    name: str | None = "alice"


class FakeSession:
    """Records what the front end asks of a L{securemsg.client.session.ChatSession}."""

    def __init__(self) -> None:
        self.client = FakeClient()
        self.calls: list[tuple[str, ...]] = []
        self.finishing = False
        self._changed: asyncio.Event | None = None

    def _record(self, *call: str) -> None:
        self.calls.append(call)
        if self._changed is not None:
            self._changed.set()

    def send_line(self, line: str) -> None:
        if line == "/quit":
            self.finishing = True  # As ChatSession does.
        self._record("send_line", line)

    def finish(self) -> None:
        self._record("finish")

    def interrupt(self) -> None:
        self._record("interrupt")

    async def called(self, count: int) -> None:
        """Return once there have been C{count} calls."""
        self._changed = asyncio.Event()
        while len(self.calls) < count:
            await self._changed.wait()
            self._changed.clear()


def run_in_own_loop(scenario: Callable[[], Awaitable[None]]) -> None:
    """
    Run C{scenario} on a new asyncio loop in a thread of its own, bounded
    by L{TIMEOUT}.  prompt_toolkit installs no signal handlers outside the
    main thread, so it cannot disturb the handlers of trial's reactor.
    """
    errors: list[BaseException] = []

    async def bounded_scenario() -> None:
        await asyncio.wait_for(scenario(), TIMEOUT)

    def run() -> None:
        try:
            asyncio.run(bounded_scenario())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, name="terminal scenario", daemon=True)
    thread.start()
    thread.join(TIMEOUT + 5)
    if thread.is_alive():
        raise AssertionError("the scenario's event loop did not finish")
    if errors:
        raise errors[0]


async def prompting(front: TerminalFrontEnd) -> None:
    """Return once the front end's prompt is up and reading keys."""
    while front._prompt is None or not front._prompt.app.is_running:
        await asyncio.sleep(0)


class KeyTests(SynchronousTestCase):
    """
    Keys typed at the prompt (fed through a pipe) reach the session as
    lines, or as the end of the session.
    """

    def scenario(
        self, keys: str, calls: int, output: Any = None
    ) -> tuple[FakeSession, TerminalFrontEnd]:
        """
        Start a front end on a fake session, type C{keys}, wait for
        C{calls} calls to the session, then stop the front end.
        """
        session = FakeSession()
        front = TerminalFrontEnd("chat.example")

        async def scenario() -> None:
            with (
                create_pipe_input() as typed,
                create_app_session(input=typed, output=output or DummyOutput()),
            ):
                front.start(session)  # type: ignore[arg-type]
                await prompting(front)
                typed.send_text(keys)
                await session.called(calls)
                await front.stop().asFuture(asyncio.get_running_loop())

        run_in_own_loop(scenario)
        return session, front

    def test_lines(self) -> None:
        """
        Each line typed goes to the session, commands too, and the user's
        own line is shown as others see it.
        """
        written = io.StringIO()
        output = Vt100_Output(written, lambda: Size(24, 80), term="xterm-256color")
        session, front = self.scenario("hello\r/who\r", 2, output)
        self.assertEqual(session.calls, [("send_line", "hello"), ("send_line", "/who")])
        self.assertNotIn("[alice] hello", written.getvalue())
        front.sent("hello", "alice")
        self.assertIn("[\x1b[0;96;1malice\x1b[0m] hello", written.getvalue())

    def test_control_d(self) -> None:
        """Ctrl-D on an empty line finishes the session."""
        session, _ = self.scenario("\x04", 1)
        self.assertEqual(session.calls, [("finish",)])

    def test_control_c(self) -> None:
        """Ctrl-C interrupts the session, even with text typed."""
        session, _ = self.scenario("half a line\x03", 1)
        self.assertEqual(session.calls, [("interrupt",)])

    def test_no_prompt_after_quit(self) -> None:
        """
        Once a line has made the session finish (C{/quit}), the prompt is
        not drawn again: the server's goodbye, shown while the connection
        closes and before the session stops the front end, is the last
        thing on the screen.
        """
        session = FakeSession()
        front = TerminalFrontEnd("chat.example")
        written = io.StringIO()
        output = Vt100_Output(written, lambda: Size(24, 80), term="xterm-256color")
        after_goodbye: list[str] = []

        async def scenario() -> None:
            with (
                create_pipe_input() as typed,
                create_app_session(input=typed, output=output),
            ):
                front.start(session)  # type: ignore[arg-type]
                await prompting(front)
                typed.send_text("/quit\r")
                await session.called(1)
                for _ in range(10):
                    await asyncio.sleep(0)  # Time to prompt again, if it would.
                shown_at = len(written.getvalue())
                front.show(wire.Notice("goodbye"))
                await asyncio.gather(*front._printing)
                after_goodbye.append(written.getvalue()[shown_at:])
                await front.stop().asFuture(asyncio.get_running_loop())

        run_in_own_loop(scenario)
        self.assertEqual(session.calls, [("send_line", "/quit")])
        self.assertIn("*** goodbye", after_goodbye[0])
        self.assertNotIn("alice", after_goodbye[0])

    def test_stop(self) -> None:
        """
        C{stop} ends the prompt (the session ended, say because the server
        closed the connection) and fires once the prompt is gone; the
        session is not asked to finish again.
        """
        session = FakeSession()
        front = TerminalFrontEnd("chat.example")
        stopped: list[Deferred[None]] = []

        async def scenario() -> None:
            with (
                create_pipe_input() as typed,
                create_app_session(input=typed, output=DummyOutput()),
            ):
                front.start(session)  # type: ignore[arg-type]
                await prompting(front)
                typed.send_text("half a line")
                front.status("server closed the connection")
                stopped.append(front.stop())
                await stopped[0].asFuture(asyncio.get_running_loop())
                assert front._prompt is not None
                self.assertFalse(front._prompt.app.is_running)
                self.assertIs(front.stop(), stopped[0])

        run_in_own_loop(scenario)
        self.assertEqual(session.calls, [])
        self.assertEqual(self.successResultOf(stopped[0]), None)


# ---------------------------------------------------------------------------
# The real client in a pseudo-terminal

ROWS, COLUMNS = 24, 80

#: Alice's screen once she has joined as alice.
JOINED = [
    "-- connecting to localhost; Ctrl-D or /quit to leave",
    "*** Welcome to securemsg, guest-2. Type /help for commands.",
    "*** you are now alice",
]


class AnsweringScreen(pyte.Screen):
    """
    A pyte screen that answers the terminal's queries (such as the cursor
    position request prompt_toolkit sends) as a real terminal would.
    """

    def __init__(self, columns: int, lines: int, answer: Callable[[bytes], None]):
        super().__init__(columns, lines)
        self.answer = answer

    def write_process_input(self, data: str) -> None:
        self.answer(data.encode("utf-8"))


class ChatInTerminal(ProcessProtocol):
    """
    C{securemsg chat} in a pseudo-terminal: whatever it writes goes through
    a terminal emulator, and a test can wait until the screen shows
    something, type keys, and wait for the process to end.
    """

    def __init__(self) -> None:
        self.screen = AnsweringScreen(COLUMNS, ROWS, self.type)
        self.stream = pyte.ByteStream(self.screen)
        self.ended = Waiters()
        self._watching: list[tuple[Callable[[], bool], Deferred[None]]] = []
        #: The screen's lines after each piece of output, to check what was
        #: shown on the way and not only at the end.
        self.screens: list[list[str]] = []

    def type(self, keys: bytes) -> None:
        """Type C{keys} at the terminal."""
        if self.transport is not None and not self.ended.fired:
            self.transport.write(keys)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.stream.feed(data)
        self.screens.append(self.lines())
        watching, self._watching = self._watching, []
        for shows, waiter in watching:
            if shows():
                waiter.callback(None)
            else:
                self._watching.append((shows, waiter))

    def processEnded(self, reason: Failure) -> None:
        self.ended.fire(reason.value)

    def dump(self) -> str:
        """The screen, for failure messages."""
        cursor = self.screen.cursor
        rows = "\n".join(f"{row:2} |{line}|" for row, line in enumerate(self.lines()))
        return f"{rows}\ncursor at row {cursor.y}, column {cursor.x}"

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def _bounded(self, waiter: Deferred[None], what: str) -> Deferred[None]:
        def timed_out(result: object, seconds: float) -> Failure:
            return Failure(
                AssertionError(
                    f"timed out after {seconds}s waiting for {what};"
                    f" the screen:\n{self.dump()}"
                )
            )

        return waiter.addTimeout(PROCESS_TIMEOUT, reactor, onTimeoutCancel=timed_out)

    def wait_until(self, shows: Callable[[], bool], what: str) -> Deferred[None]:
        """Fires once C{shows()} is true of the screen, checked on each output."""
        if shows():
            return succeed(None)
        waiter: Deferred[None] = Deferred(
            lambda waiter: self._watching.remove((shows, waiter))
        )
        self._watching.append((shows, waiter))
        return self._bounded(waiter, f"the screen to show {what}")

    def wait_ended(self) -> Deferred[None]:
        """Fires once the process has ended; C{ended.value} says how."""
        return self._bounded(self.ended.wait(), "securemsg chat to exit")

    # What the screen shows

    def prompt_reads(self, typed: str) -> bool:
        """The cursor is at the end of C{typed} on a line that reads just that."""
        cursor = self.screen.cursor
        return self.lines()[cursor.y] == typed.rstrip() and cursor.x == len(typed)

    def shows_above_prompt(self, line: str) -> bool:
        """C{line} is a whole line of the screen above the cursor's line."""
        return line in self.lines()[: self.screen.cursor.y]


class ChatInTerminalTests(LoopbackServerTestCase):
    """
    C{securemsg chat --name alice} in a pseudo-terminal, with bob, a line
    client, in the same room of a real server.
    """

    async def start_chat(self) -> tuple[ChatInTerminal, LineClient]:
        """
        Serve; connect bob; start alice's client in an 80x24 terminal, and
        return once its prompt shows her name.
        """
        ca, server = _certs.default_ca_and_server()
        await self.serve(*server.write(self.directory))
        ca_path, _ = ca.write(self.directory.resolve(), "ca")
        bob = await self.connect(ca.cert_pem())
        await bob.next_lines(1)  # The greeting.
        bob.send(b"/nick bob")
        self.assertEqual(await bob.next_lines(1), ["*** you are now bob"])

        alice = ChatInTerminal()
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        env = subprocess_environment(TERM="xterm-256color")
        argv = [
            sys.executable,
            "-m",
            "securemsg",
            "chat",
            f"localhost:{self.port}",
            "--ca",
            ca_path,
            "--name",
            "alice",
        ]
        reactor.spawnProcess(
            alice,
            sys.executable,
            argv,
            env=env,
            usePTY=(master, slave, os.ttyname(slave)),
        )
        self.alice = alice
        await alice.wait_until(lambda: alice.prompt_reads("alice> "), "alice's prompt")
        self.assertEqual(
            await bob.next_lines(2),
            ["*** guest-2 joined", "*** guest-2 is now known as alice"],
        )
        return alice, bob

    async def tearDown(self) -> None:  # type: ignore[override]
        """Kill alice's client if it is still running, then stop serving."""
        alice: ChatInTerminal | None = getattr(self, "alice", None)
        if alice is not None and alice.transport and not alice.ended.fired:
            alice.transport.signalProcess("KILL")
            await alice.wait_ended()
        await super().tearDown()

    async def assert_exits_cleanly(
        self, alice: ChatInTerminal, bob: LineClient, shown: list[str]
    ) -> None:
        """
        Alice's client exits with status 0, and bob sees her leave; her
        screen shows just the lines C{shown}, with nothing left of the
        prompt (and no warning or traceback).
        """
        self.assertEqual(await bob.next_lines(1), ["*** alice left"])
        await alice.wait_ended()
        self.assertIsInstance(alice.ended.value, ProcessDone, alice.dump())
        self.assertEqual([line for line in alice.lines() if line], shown)
        self.assertEqual(alice.screen.cursor.x, 0, alice.dump())

    async def test_chat(self) -> None:
        """
        A line from bob appears above the line alice is typing, which stays
        as it was; her line goes to bob and shows on her screen as bob sees
        it; Ctrl-D leaves cleanly.
        """
        alice, bob = await self.start_chat()
        alice.type(b"hel")
        await alice.wait_until(lambda: alice.prompt_reads("alice> hel"), "'hel' typed")
        bob.send(b"hi alice")
        await alice.wait_until(
            lambda: (
                alice.shows_above_prompt("[bob] hi alice")
                and alice.prompt_reads("alice> hel")
            ),
            "bob's line above the unbroken 'alice> hel'",
        )
        alice.type(b"lo\r")
        self.assertEqual(await bob.next_lines(1), ["[alice] hello"])
        await alice.wait_until(
            lambda: (
                alice.shows_above_prompt("[alice] hello")
                and alice.prompt_reads("alice> ")
            ),
            "alice's own line, and an empty prompt",
        )
        alice.type(b"\x04")
        await self.assert_exits_cleanly(
            alice, bob, [*JOINED, "[bob] hi alice", "[alice] hello", "*** goodbye"]
        )

    async def test_control_c(self) -> None:
        """Ctrl-C at the prompt leaves cleanly too."""
        alice, bob = await self.start_chat()
        alice.type(b"half a line\x03")
        await self.assert_exits_cleanly(alice, bob, [*JOINED, "*** goodbye"])

    async def test_server_closes(self) -> None:
        """
        When the server closes the connection (here: it is shutting down),
        the prompt goes away with what was typed, and alice's client says
        why and exits with status 5.
        """
        alice, bob = await self.start_chat()
        alice.type(b"half a line")
        await alice.wait_until(
            lambda: alice.prompt_reads("alice> half a line"), "'half a line' typed"
        )
        connection = await self.factory.connection(1)
        connection.close_for_shutdown()
        await alice.wait_ended()
        self.assertIsInstance(alice.ended.value, ProcessTerminated, alice.dump())
        self.assertEqual(alice.ended.value.exitCode, 5, alice.dump())
        self.assertEqual(
            [line for line in alice.lines() if line],
            [
                *JOINED,
                "*** the server is shutting down",
                "-- server closed the connection",
            ],
        )
        self.assertEqual(await bob.next_lines(1), ["*** alice left"])

    async def test_quit(self) -> None:
        """
        C{/quit} leaves cleanly, and no prompt is drawn once it is typed: at
        no time does the screen show one after the server's goodbye.
        """
        alice, bob = await self.start_chat()
        alice.type(b"/quit\r")
        await self.assert_exits_cleanly(alice, bob, [*JOINED, "*** goodbye"])
        for screen in alice.screens:
            if "*** goodbye" in screen:
                after = screen[screen.index("*** goodbye") + 1 :]
                self.assertFalse(
                    [line for line in after if line.startswith("alice>")],
                    "\n".join(screen),
                )
