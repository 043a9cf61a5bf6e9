# -*- test-case-name: tests.test_terminal -*-
"""
The terminal front end of C{securemsg chat}: a line editor (prompt_toolkit)
running on Twisted's asyncio reactor.

Lines from the server never garble the line being typed: the prompt runs
inside C{patch_stdout()}, and each line is printed through prompt_toolkit's
C{run_in_terminal}, which takes the prompt away, prints the line and draws
the prompt again with what was typed so far.  All terminal handling
(raw mode, escape sequences, redrawing) is prompt_toolkit's.
"""

from __future__ import annotations

import asyncio
import sys
import zlib
from typing import TYPE_CHECKING, Final

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application import run_in_terminal
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.styles import Style
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.python.failure import Failure

from securemsg.protocol import wire

if TYPE_CHECKING:
    from securemsg.client.session import ChatSession

#: Colours for names.  Red (errors), magenta (private lines) and grey
#: (notices) are left out so that a name never looks like one of those.
PALETTE: Final = (
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansicyan",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
    "ansibrightcyan",
)

#: How each kind of line looks; names get their own colour (L{name_style}).
STYLE: Final = Style.from_dict(
    {
        "action": "italic",
        "private": "ansimagenta",
        "notice": "ansibrightblack",
        "room": "ansicyan",
        "error": "bold ansired",
        "status": "italic",
    }
)

#: Shown for the user's own name until the server has confirmed one.
#: Names cannot contain parentheses, so it cannot be anybody's name.
UNKNOWN_NAME: Final = "(you)"

Fragments = list[tuple[str, str]]


def name_colour(name: str) -> str:
    """
    The palette colour of C{name}: the same for a name in any case, in
    every run (C{zlib.crc32}, unlike C{hash}, is not salted per process).
    """
    return PALETTE[zlib.crc32(name.lower().encode("utf-8")) % len(PALETTE)]


def _name(name: str) -> tuple[str, str]:
    return (f"bold {name_colour(name)}", wire.sanitize(name))


def render(event: wire.Event) -> FormattedText:
    """
    How C{event} is shown, without its line ending.  Text is passed through
    L{wire.sanitize} again, so that no control character reaches the
    terminal whatever produced the event.
    """
    fragments: Fragments = []
    if (
        isinstance(event, wire.Message | wire.Action | wire.PrivateMessage)
        and event.replayed
    ):
        when = wire.format_time(event.time or 0)
        fragments.append(("class:notice", f"{wire.HISTORY_PREFIX}{when} "))
    if isinstance(event, wire.Message | wire.Action) and event.room:
        fragments.append(("class:room", wire.sanitize(event.room) + " "))
    match event:
        case wire.Message(sender, text):
            fragments += [("", "["), _name(sender), ("", "] " + wire.sanitize(text))]
        case wire.Action(sender, text):
            fragments += [
                ("class:action", "* "),
                _name(sender),
                ("class:action", " " + wire.sanitize(text)),
            ]
        case wire.PrivateMessage(sender, recipient, text):
            fragments += [
                ("class:private", "["),
                _name(sender),
                ("class:private", " -> "),
                _name(recipient),
                ("class:private", "] " + wire.sanitize(text)),
            ]
        case wire.Error(text):
            fragments = [("class:error", wire.ERROR_PREFIX + wire.sanitize(text))]
        case _:
            # Notices of every kind (the text client only sees plain ones).
            lines = event.format().split("\n")
            text = "\n".join(wire.sanitize(line) for line in lines)
            fragments = [("class:notice", text)]
    return FormattedText(fragments)


def render_status(text: str) -> FormattedText:
    """How a diagnostic from the session (not from the server) is shown."""
    return FormattedText([("class:status", "-- " + wire.sanitize(text))])


def render_sent(line: str, name: str | None) -> FormattedText:
    """
    How the user's own line C{line}, sent as C{name}, is shown: as others
    see it (C{[name] text}, or C{* name text} for C{/me text}).
    """
    who = name or UNKNOWN_NAME
    if line[:4].lower() == "/me ":
        return render(wire.Action(who, line[4:].strip()))
    return render(wire.Message(who, line))


def install_reactor() -> None:
    """
    Install Twisted's asyncio reactor, on a new event loop that becomes the
    current one, so that prompt_toolkit and Twisted share it.  Does nothing
    if a reactor is installed already; call it before anything imports
    C{twisted.internet.reactor}.
    """
    if "twisted.internet.reactor" in sys.modules:
        return
    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)


class _Stopped(Exception):
    """Ends the prompt when the session stops the front end."""


class TerminalFrontEnd:
    """
    For people at a terminal: a prompt with line editing and history, the
    server's lines shown above it in colour, and the user's own lines shown
    as others see them.  Needs the asyncio reactor (L{install_reactor}).

    Every submitted line goes to the session, commands included.  Ctrl-D on
    an empty line finishes the session; Ctrl-C interrupts it.
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self.session: ChatSession | None = None
        self._prompt: PromptSession[str] | None = None
        self._reading: asyncio.Task[None] | None = None
        self._printing: set[asyncio.Future[None]] = set()
        self._stopping = False
        self._stopped: Deferred[None] | None = None

    # FrontEnd

    def start(self, session: ChatSession) -> None:
        self.session = session
        self._prompt = PromptSession(
            self._prompt_message, style=STYLE, erase_when_done=True
        )
        self.status(f"connecting to {self.host}; Ctrl-D or /quit to leave")
        self._reading = asyncio.get_event_loop().create_task(self._read_lines(session))
        Deferred.fromFuture(self._reading).addErrback(self._reading_failed)

    def show(self, event: wire.Event) -> None:
        self._print(render(event))

    def status(self, text: str) -> None:
        self._print(render_status(text))

    def sent(self, line: str, name: str | None) -> None:
        self._print(render_sent(line, name))

    def stop(self) -> Deferred[None]:
        """
        End the prompt; fires once the terminal is back to how it was and
        everything is printed.
        """
        if self._stopped is None:
            self._stopping = True
            if self._reading is None or self._prompt is None:
                self._stopped = succeed(None)
            else:
                app = self._prompt.app
                if app.is_running and not app.is_done:
                    app.exit(exception=_Stopped)
                waiting = self._reading.get_loop().create_task(self._wait_until_done())
                self._stopped = Deferred.fromFuture(waiting)
        return self._stopped

    # Reading

    async def _read_lines(self, session: ChatSession) -> None:
        assert self._prompt is not None
        with patch_stdout():
            while not self._stopping:
                try:
                    line = await self._prompt.prompt_async()
                except _Stopped:
                    return
                except EOFError:
                    session.finish()
                    return
                except KeyboardInterrupt:
                    session.interrupt()
                    return
                if not self._stopping:
                    session.send_line(line)
                if session.finishing:
                    # After /quit: a new prompt would only be drawn again
                    # under the server's goodbye, until the connection is
                    # closed.
                    return

    def _reading_failed(self, reason: Failure) -> None:
        if reason.check(CancelledError) or self.session is None:
            return
        self.status(f"the line editor failed: {reason.getErrorMessage()}")
        self.session.interrupt()

    async def _wait_until_done(self) -> None:
        # The prompt's end restores the terminal; lines still being printed
        # above it come out before we say we are done.
        assert self._reading is not None
        await asyncio.wait({self._reading, *self._printing})

    def _prompt_message(self) -> FormattedText:
        client = self.session.client if self.session is not None else None
        if client is None or client.name is None:
            return FormattedText([("", "> ")])
        return FormattedText([_name(client.name), ("", "> ")])

    # Writing

    def _print(self, fragments: FormattedText) -> None:
        line = FormattedText([*fragments, ("", "\n")])
        if self._prompt is None:
            print_formatted_text(line, style=STYLE)
            return
        app = self._prompt.app
        if not app.is_running:
            app.print_text(line, style=STYLE)
            return
        # Like print_formatted_text while an application runs, but keeping
        # the future, so that stop() can wait until the line is out.
        printing = asyncio.ensure_future(
            run_in_terminal(lambda: app.print_text(line, style=STYLE))
        )
        self._printing.add(printing)
        printing.add_done_callback(self._printing.discard)


__all__ = [
    "PALETTE",
    "STYLE",
    "TerminalFrontEnd",
    "install_reactor",
    "name_colour",
    "render",
    "render_sent",
    "render_status",
]
