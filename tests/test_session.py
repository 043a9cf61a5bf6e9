"""
Tests for L{securemsg.client.session}: a L{ChatSession} with a recording front end
against a real securemsg server on loopback, and C{securemsg chat} in pipe
mode, run as a user runs it, in a subprocess.

Every wait is bounded; every subprocess is killed in cleanup if it is still
running.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import securemsg
from securemsg.client.api import MAX_LINE_LENGTH
from securemsg.client.session import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_SERVER_CLOSED,
    EXIT_UNREACHABLE,
    EXIT_UNVERIFIED,
    EXIT_USAGE,
    ChatSession,
)
from securemsg.protocol import wire
from securemsg.server.endpoint import tls_server_endpoint
from securemsg.tls import certs
from securemsg.tls import policy as tls

from . import _certs, _cli
from ._loopback import (
    TIMEOUT,
    LineClient,
    LoopbackServerTestCase,
    Waiters,
    bounded,
    greeting,
    port_of,
    reactor,
)
from ._twistd import PROCESS_TIMEOUT

UNKNOWN_ISSUER = "unknown issuer (no trusted certificate issued it; use --ca or --pin)"


class RecordingFrontEnd:
    """
    A L{securemsg.client.session.FrontEnd} that records what the session asks it to
    show, and lets a test wait for a given event or status.
    """

    def __init__(self) -> None:
        self.session: ChatSession | None = None
        self.shown: list[wire.Event] = []
        self.statuses: list[str] = []
        self.sent_lines: list[tuple[str, str | None]] = []
        self.stopped = False
        self._watching: list[tuple[Callable[[], bool], Deferred[None]]] = []

    # The FrontEnd interface

    def start(self, session: ChatSession) -> None:
        self.session = session

    def show(self, event: wire.Event) -> None:
        self.shown.append(event)
        self._check()

    def status(self, text: str) -> None:
        self.statuses.append(text)
        self._check()

    def sent(self, line: str, name: str | None) -> None:
        self.sent_lines.append((line, name))

    def stop(self) -> Deferred[None]:
        self.stopped = True
        return succeed(None)

    # For tests

    def _check(self) -> None:
        watching, self._watching = self._watching, []
        for condition, waiter in watching:
            if condition():
                waiter.callback(None)
            else:
                self._watching.append((condition, waiter))

    def wait_until(self, condition: Callable[[], bool], what: str) -> Deferred[None]:
        """
        Fires once C{condition()} is true; fails after L{TIMEOUT} seconds
        with what was shown by then.
        """
        if condition():
            return succeed(None)
        waiter: Deferred[None] = Deferred(
            lambda waiter: self._watching.remove((condition, waiter))
        )
        self._watching.append((condition, waiter))

        def timed_out(result: object, seconds: float) -> Failure:
            return Failure(
                AssertionError(
                    f"timed out after {seconds}s waiting for {what};"
                    f" shown {self.shown!r}, statuses {self.statuses!r}"
                )
            )

        return waiter.addTimeout(TIMEOUT, reactor, onTimeoutCancel=timed_out)

    def wait_shown(self, event: wire.Event, times: int = 1) -> Deferred[None]:
        """Fires once C{event} has been shown C{times} times in all."""
        return self.wait_until(
            lambda: self.shown.count(event) >= times, f"{event!r} shown {times}x"
        )

    def wait_status(self, text: str) -> Deferred[None]:
        """Fires once the status line C{text} has been shown."""
        return self.wait_until(lambda: text in self.statuses, f"status {text!r}")


def welcome(name: str) -> wire.Notice:
    """The greeting as an event."""
    return wire.Notice(greeting(name).removeprefix(wire.NOTICE_PREFIX))


class ChatServerCase(LoopbackServerTestCase):
    """A loopback server with the test CA's certificate, and a CA file."""

    async def setUp(self) -> None:  # type: ignore[override]
        super().setUp()
        # Absolute: the subprocesses run in this folder.
        self.directory = self.directory.resolve()
        self.ca, self.server = _certs.default_ca_and_server()
        self.cert_path, self.key_path = self.server.write(self.directory)
        self.ca_path = str(self.directory / "ca.pem")
        Path(self.ca_path).write_bytes(self.ca.cert_pem())
        self._stoppers: list[Callable[[], Awaitable[object]]] = []
        await self.serve(self.cert_path, self.key_path)

    def stop_first(self, stop: Callable[[], Awaitable[object]]) -> None:
        """
        Run C{stop} at the start of tearDown, before it waits for every
        connection to close: a session or a process left running by a
        failed test would otherwise keep its connection open until that
        wait times out.
        """
        self._stoppers.append(stop)

    async def tearDown(self) -> None:  # type: ignore[override]
        errors: list[BaseException] = []
        for stop in reversed(self._stoppers):
            try:
                await stop()
            except Exception as error:
                errors.append(error)
        await super().tearDown()
        if errors:
            raise errors[0]

    async def listen(self, description: str) -> IListeningPort:
        """Listen with C{cert_path} and C{key_path} on C{description}."""
        credentials = tls.load_credentials(self.cert_path, self.key_path)
        endpoint = tls_server_endpoint(
            reactor,
            description,
            tls.ServerTLS(tls.make_server_context(credentials)),
        )
        port: IListeningPort = await bounded(
            endpoint.listen(self.factory), f"listening on {description}"
        )
        return port

    async def end_session(self, session: ChatSession) -> None:
        """Make sure C{session} is over, so nothing is left running."""
        if not session.done.called:
            session.interrupt()
        await bounded(session.done, "the session to end")

    async def observer(self, name: str = "guest-1") -> LineClient:
        """Connect a plain line client and read its greeting."""
        client = await self.connect(self.ca.cert_pem())
        self.assertEqual(await client.next_lines(1), [greeting(name)])
        return client


class SessionTests(ChatServerCase):
    """A L{ChatSession} with a recording front end."""

    def session(self, **options: object) -> tuple[ChatSession, RecordingFrontEnd]:
        """A session to the test server, trusting the test CA unless told."""
        front = RecordingFrontEnd()
        options.setdefault("ca", self.ca_path)
        session = ChatSession(
            reactor,
            front,
            "localhost",
            self.port,
            **options,  # type: ignore[arg-type]
        )
        self.stop_first(lambda: self.end_session(session))
        return session, front

    async def test_lines_before_connection(self) -> None:
        """
        Lines typed while the session is still connecting wait, and are all
        delivered, in order, once the connection is up.
        """
        watcher = await self.observer()
        session, front = self.session()
        session.start()
        self.assertIsNone(session.client)
        for line in ("first", "/me waves", "//slash", "", "second"):
            session.send_line(line)
        self.assertIsNone(session.client)
        self.assertEqual(
            await watcher.next_lines(5),
            [
                "*** guest-2 joined",
                "[guest-2] first",
                "* guest-2 waves",
                "[guest-2] /slash",
                "[guest-2] second",
            ],
        )
        self.assertEqual(
            front.sent_lines,
            [("first", None), ("/me waves", None), ("/slash", None), ("second", None)],
        )
        self.assertEqual(front.shown, [welcome("guest-2")])

    async def test_finish_while_connecting(self) -> None:
        """
        The end of input may come before the connection is up (a short
        pipe): what was typed is still delivered, then the session closes
        cleanly and ends with 0.
        """
        watcher = await self.observer()
        session, front = self.session()
        done = session.start()
        session.send_line("only line")
        session.finish()
        self.assertEqual(await bounded(done, "the session to end"), EXIT_OK)
        self.assertEqual(
            await watcher.next_lines(3),
            ["*** guest-2 joined", "[guest-2] only line", "*** guest-2 left"],
        )
        self.assertEqual(front.shown, [welcome("guest-2"), wire.Notice("goodbye")])
        self.assertEqual(front.statuses, [])
        self.assertTrue(front.stopped)

    async def test_name_sent_after_connecting(self) -> None:
        """
        With C{name}, the session asks for that name as soon as it is
        connected, before any of the user's lines.
        """
        watcher = await self.observer()
        session, front = self.session(name="alice")
        session.start()
        session.send_line("hello")
        self.assertEqual(
            await watcher.next_lines(3),
            [
                "*** guest-2 joined",
                "*** guest-2 is now known as alice",
                "[alice] hello",
            ],
        )
        await front.wait_shown(wire.Notice("you are now alice"))
        self.assertEqual(session.name, "alice")

    async def test_finish_waits_for_goodbye(self) -> None:
        """
        C{finish} says C{/quit} (with the message from a typed C{/quit}) and
        ends with 0 only after the server's goodbye and its close; from the
        typed C{/quit} on, the session is C{finishing} (front ends stop
        asking for lines).
        """
        watcher = await self.observer()
        session, front = self.session()
        done = session.start()
        await front.wait_shown(welcome("guest-2"))
        self.assertFalse(session.finishing)
        session.send_line("/quit  see you later ")
        self.assertTrue(session.finishing)
        self.assertEqual(await bounded(done, "the session to end"), EXIT_OK)
        self.assertEqual(front.shown[-1], wire.Notice("goodbye"))
        self.assertTrue(front.stopped)
        self.assertEqual(
            await watcher.next_lines(2),
            ["*** guest-2 joined", '*** guest-2 left, saying "see you later"'],
        )
        # Finishing again changes nothing.
        shown, statuses = list(front.shown), list(front.statuses)
        session.finish()
        session.interrupt()
        self.assertEqual((front.shown, front.statuses), (shown, statuses))

    async def test_server_closes(self) -> None:
        """
        When the server closes the connection, the session says so and ends
        with 5.
        """
        session, front = self.session()
        done = session.start()
        await front.wait_shown(welcome("guest-1"))
        server = await self.factory.connection(0)
        # Twisted's TLS layer sends its close_notify only once no producer
        # is registered; the server may be its transport's producer.
        server.transport.unregisterProducer()
        server.transport.loseConnection()
        self.assertEqual(await bounded(done, "the session to end"), EXIT_SERVER_CLOSED)
        self.assertEqual(front.statuses, ["server closed the connection"])
        self.assertTrue(front.stopped)

    async def test_line_too_long(self) -> None:
        """
        A line from the server over the client library's bound ends the
        session with 1 (an error, not the server closing), saying why.
        """
        session, front = self.session()
        done = session.start()
        await front.wait_shown(welcome("guest-1"))
        assert session.client is not None and session.client._protocol is not None
        # As if the server had sent it.
        session.client._protocol.dataReceived(b"x" * (MAX_LINE_LENGTH + 1))
        self.assertEqual(await bounded(done, "the session to end"), EXIT_ERROR)
        self.assertEqual(
            front.statuses,
            [
                "connection closed: the server sent a line longer than"
                f" {MAX_LINE_LENGTH} bytes"
            ],
        )

    async def test_server_connection_lost(self) -> None:
        """A connection reset by the server also ends the session with 5."""
        session, front = self.session()
        done = session.start()
        await front.wait_shown(welcome("guest-1"))
        server = await self.factory.connection(0)
        server.transport.abortConnection()
        self.assertEqual(await bounded(done, "the session to end"), EXIT_SERVER_CLOSED)
        self.assertEqual(front.statuses, ["server connection lost"])

    async def test_not_verified(self) -> None:
        """
        A server whose certificate is not trusted ends the session with 4;
        the status line says why and shows the fingerprint seen.
        """
        other = self.directory / "other-ca.pem"
        other.write_bytes(_certs.make_ca("another CA").cert_pem())
        session, front = self.session(ca=str(other))
        session.send_line("never sent")
        self.assertEqual(
            await bounded(session.start(), "the session to end"), EXIT_UNVERIFIED
        )
        fingerprint = certs.fingerprint(self.server.certificate)
        self.assertEqual(
            front.statuses,
            [
                f"server not verified: {UNKNOWN_ISSUER}"
                f" (server certificate {fingerprint})"
            ],
        )
        self.assertEqual(front.shown, [])
        server = await self.factory.connection(0)
        await bounded(server.ended.wait(), "the server's end")
        self.assertFalse(server.was_joined)

    async def test_unreachable(self) -> None:
        """A port nobody listens on ends the session with 3."""
        assert self.listening is not None
        await bounded(maybeDeferred(self.listening.stopListening), "stopListening")
        self.listening = None
        session, front = self.session()
        self.assertEqual(
            await bounded(session.start(), "the session to end"), EXIT_UNREACHABLE
        )
        self.assertEqual(
            front.statuses,
            [f"cannot connect to localhost:{self.port}: connection refused"],
        )

    async def test_bad_pin(self) -> None:
        """An unusable pin ends the session with 2 before connecting."""
        session, front = self.session(ca=None, pin="sha256:nope")
        self.assertEqual(
            await bounded(session.start(), "the session to end"), EXIT_USAGE
        )
        self.assertEqual(len(front.statuses), 1)
        self.assertTrue(front.statuses[0].startswith("--pin: invalid fingerprint"))
        self.assertEqual(self.factory.connections, [])


class ExpiredPinTests(ChatServerCase):
    """
    A pinned server certificate that has expired: refused, unless the
    session allows it, and then accepted with a warning.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        expired = _certs.issue(self.ca, days_valid=(-30, -1))
        self.cert_path, self.key_path = expired.write(self.directory, "expired")
        self.expired_port = await self.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(self.expired_port.stopListening)
        self.pin = certs.fingerprint(expired.certificate)
        self.when = expired.certificate.not_valid_after_utc.strftime(
            "%Y-%m-%d %H:%M UTC"
        )

    def session(self, **options: object) -> tuple[ChatSession, RecordingFrontEnd]:
        """A session pinning the expired certificate."""
        front = RecordingFrontEnd()
        session = ChatSession(
            reactor,
            front,
            "localhost",
            port_of(self.expired_port.getHost()),
            pin=self.pin,
            **options,  # type: ignore[arg-type]
        )
        self.stop_first(lambda: self.end_session(session))
        return session, front

    async def test_refused(self) -> None:
        """Without C{allow_expired}: not verified, status 4, with the date."""
        for reconnect in (False, True):
            session, front = self.session(reconnect=reconnect)
            done = session.start()
            self.assertEqual(await bounded(done, "the session"), EXIT_UNVERIFIED)
            self.assertEqual(
                front.statuses,
                [
                    f"server not verified: certificate has expired (on {self.when});"
                    " a pin accepts an expired certificate only with"
                    f" --allow-expired (server certificate {self.pin})"
                ],
            )

    async def test_allowed(self) -> None:
        """
        With C{allow_expired}: connected, after a warning that the
        certificate has expired (on every connection, reconnecting too).
        """
        for reconnect in (False, True):
            session, front = self.session(allow_expired=True, reconnect=reconnect)
            session.start()
            await front.wait_shown(welcome(f"guest-{2 if reconnect else 1}"))
            self.assertEqual(
                front.statuses,
                [
                    f"warning: the server's certificate expired on {self.when};"
                    " accepted because of --allow-expired"
                ],
            )
            await self.end_session(session)


class ReconnectTests(ChatServerCase):
    """
    With C{reconnect}, a lost connection is made again, and the session
    rejoins under the name it had.
    """

    async def test_reconnects_and_rejoins(self) -> None:
        """
        The server stops listening and drops every connection; the session
        says it is reconnecting, keeps trying (each try is refused), and when
        the server listens again on the same port, reconnects and takes its
        name back.  A client that is already there sees the rejoin as a
        rename to that name.  At the end, C{/quit} still closes cleanly.
        """
        # The watcher needs a way in while the session's port is closed.
        side_door = await self.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(side_door.stopListening)
        attempts: list[int] = []

        def retry_quickly(attempt: int) -> float:
            attempts.append(attempt)
            return 0.02

        front = RecordingFrontEnd()
        session = ChatSession(
            reactor,
            front,
            "localhost",
            self.port,
            ca=self.ca_path,
            reconnect=True,
            retry_policy=retry_quickly,
        )
        done = session.start()
        self.stop_first(lambda: self.end_session(session))
        await front.wait_shown(welcome("guest-1"))
        session.send_line("/nick alice")
        await front.wait_shown(wire.Notice("you are now alice"))

        # The server goes away.
        assert self.listening is not None
        await bounded(maybeDeferred(self.listening.stopListening), "stopListening")
        self.listening = None
        for server in self.factory.connections:
            server.transport.abortConnection()
        for server in self.factory.connections:
            await bounded(server.ended.wait(), "the server's end")
        await front.wait_status("connection lost; reconnecting")
        waiting = len(attempts)
        self.assertEqual(len(self.factory.chat), 0)

        # Someone comes in by the side door and waits.
        watcher = await self.connect_to(port_of(side_door.getHost()))
        self.assertEqual(await watcher.next_lines(1), [greeting("guest-2")])

        # The server is back, on the same port.
        self.listening = await self.listen(f"tcp:{self.port}:interface=127.0.0.1")
        self.assertEqual(
            await watcher.next_lines(2),
            ["*** guest-3 joined", "*** guest-3 is now known as alice"],
        )
        await front.wait_shown(wire.Notice("you are now alice"), times=2)
        self.assertGreater(len(attempts), waiting)
        self.assertEqual(front.statuses, ["connection lost; reconnecting"])
        self.assertEqual(session.name, "alice")

        session.send_line("back again")
        self.assertEqual(await watcher.next_lines(1), ["[alice] back again"])
        session.send_line("/quit bye now")
        self.assertEqual(await bounded(done, "the session to end"), EXIT_OK)
        self.assertEqual(
            await watcher.next_lines(1), ['*** alice left, saying "bye now"']
        )
        self.assertEqual(front.shown[-1], wire.Notice("goodbye"))

    async def test_not_verified_stops(self) -> None:
        """
        With C{reconnect}, a refused certificate is not a network fault:
        the session says why, as without C{reconnect}, tries no more and
        ends with 4, without an error being logged (Twisted's ClientService
        cannot take a connection that is lost before it is prepared).
        """
        other = self.directory / "other-ca.pem"
        other.write_bytes(_certs.make_ca("another CA").cert_pem())
        attempts: list[int] = []
        front = RecordingFrontEnd()

        def retry_quickly(attempt: int) -> float:
            attempts.append(attempt)
            return 0.01

        session = ChatSession(
            reactor,
            front,
            "localhost",
            self.port,
            ca=str(other),
            reconnect=True,
            retry_policy=retry_quickly,
        )
        done = session.start()
        self.stop_first(lambda: self.end_session(session))
        self.assertEqual(await bounded(done, "the session to end"), EXIT_UNVERIFIED)
        fingerprint = certs.fingerprint(self.server.certificate)
        self.assertEqual(
            front.statuses,
            [
                f"server not verified: {UNKNOWN_ISSUER}"
                f" (server certificate {fingerprint})"
            ],
        )
        self.assertEqual(attempts, [])
        self.assertEqual(front.shown, [])
        self.assertTrue(front.stopped)
        # Nothing more is tried once it is over.
        assert session._service is not None
        self.assertFalse(session._service.running)

    async def test_lost_then_not_verified(self) -> None:
        """
        A server that comes back after a lost connection with a certificate
        that fails verification ends a reconnecting session with 4.
        """
        front = RecordingFrontEnd()
        session = ChatSession(
            reactor,
            front,
            "localhost",
            self.port,
            ca=self.ca_path,
            reconnect=True,
            retry_policy=lambda attempt: 0.01,
        )
        done = session.start()
        self.stop_first(lambda: self.end_session(session))
        await front.wait_shown(welcome("guest-1"))

        # The server comes back on the same port with another CA's
        # certificate.
        assert self.listening is not None
        await bounded(maybeDeferred(self.listening.stopListening), "stopListening")
        self.listening = None
        for server in self.factory.connections:
            server.transport.abortConnection()
        stranger = _certs.issue(_certs.make_ca("another CA"))
        self.cert_path, self.key_path = stranger.write(self.directory, "stranger")
        self.listening = await self.listen(f"tcp:{self.port}:interface=127.0.0.1")

        self.assertEqual(await bounded(done, "the session to end"), EXIT_UNVERIFIED)
        self.assertEqual(front.statuses[0], "connection lost; reconnecting")
        self.assertTrue(
            front.statuses[-1].startswith(f"server not verified: {UNKNOWN_ISSUER}"),
            front.statuses,
        )

    async def connect_to(self, port: int) -> LineClient:
        """Connect a line client to C{port} instead of the main port."""
        main_port, self.port = self.port, port
        try:
            return await self.connect(self.ca.cert_pem())
        finally:
            self.port = main_port


# ---------------------------------------------------------------------------
# securemsg chat in a subprocess


class ChatProcess(ProcessProtocol):
    """A running C{securemsg chat}: its output, and a way to wait for its end."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended = Waiters()
        self._watching: list[tuple[bytes, Deferred[None]]] = []

    def outReceived(self, data: bytes) -> None:
        self.out += data
        watching, self._watching = self._watching, []
        for text, waiter in watching:
            if text in self.out:
                waiter.callback(None)
            else:
                self._watching.append((text, waiter))

    def wait_output(self, text: bytes) -> Deferred[None]:
        """Fires once standard output holds C{text}."""
        if text in self.out:
            return succeed(None)
        waiter: Deferred[None] = Deferred(
            lambda waiter: self._watching.remove((text, waiter))
        )
        self._watching.append((text, waiter))
        return bounded(waiter, f"{text!r} on standard output", PROCESS_TIMEOUT)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.fire(reason.value)

    def exit_code(self) -> int | None:
        """The exit status, once ended (None if killed by a signal)."""
        value = self.ended.value
        if isinstance(value, ProcessDone):
            return 0
        if isinstance(value, ProcessTerminated):
            code: int | None = value.exitCode
            return code
        raise AssertionError(f"not ended: {value!r}")

    def output(self) -> str:
        return (
            self.out.decode("utf-8", "replace")
            + "\n--- stderr ---\n"
            + self.err.decode("utf-8", "replace")
        )


def child_environment() -> dict[str, str]:
    """
    Our environment, with the folder the securemsg under test was imported
    from first on C{PYTHONPATH}, so that the child imports the same copy
    (an editable install would find it anyway; a checkout run from another
    venv would not).
    """
    source = str(Path(securemsg.__file__).resolve().parent.parent)
    environment = dict(os.environ)
    environment.pop(tls.PASSPHRASE_ENVIRONMENT_VARIABLE, None)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [source, environment.get("PYTHONPATH")])
    )
    return environment


class PipeModeTests(ChatServerCase):
    """
    C{python -m securemsg chat} with pipes for its standard streams, as a
    script runs it.
    """

    def run_chat(self, *arguments: str, stdin: bytes | None = b"") -> ChatProcess:
        """
        Start C{securemsg chat ARGUMENTS} with C{stdin} written to its
        standard input, which is then closed (left open if C{stdin} is
        L{None}).
        """
        process = ChatProcess()
        argv = [sys.executable, "-m", "securemsg", "chat", *arguments]
        reactor.spawnProcess(
            process,
            sys.executable,
            argv,
            env=child_environment(),
            path=str(self.directory),
        )
        self.stop_first(lambda: self.kill(process))
        if stdin is not None:
            assert process.transport is not None
            process.transport.write(stdin)
            process.transport.closeStdin()
        return process

    async def kill(self, process: ChatProcess) -> None:
        if not process.ended.fired:
            assert process.transport is not None
            process.transport.signalProcess("KILL")
        await bounded(process.ended.wait(), "the process to end", PROCESS_TIMEOUT)

    async def exit_code(self, process: ChatProcess) -> int | None:
        await bounded(process.ended.wait(), "the process to end", PROCESS_TIMEOUT)
        return process.exit_code()

    async def test_pipe(self) -> None:
        """
        Lines from standard input are sent, the end of input quits cleanly
        with status 0, standard output holds exactly the server's lines (the
        greeting to the goodbye) and standard error nothing.
        """
        watcher = await self.observer()
        process = self.run_chat(
            f"localhost:{self.port}",
            "--ca",
            self.ca_path,
            stdin=b"hi there\n/me waves\n",
        )
        self.assertEqual(
            await watcher.next_lines(4),
            [
                "*** guest-2 joined",
                "[guest-2] hi there",
                "* guest-2 waves",
                "*** guest-2 left",
            ],
        )
        self.assertEqual(await self.exit_code(process), 0, process.output())
        self.assertEqual(
            process.out.decode("utf-8"),
            f"{greeting('guest-2')}\n*** goodbye\n",
            process.output(),
        )
        self.assertEqual(process.err, b"")

    async def test_others_lines_printed(self) -> None:
        """
        What others say while the client is connected goes to standard
        output as it arrives, with C{--name} asked for first; standard input
        may stay open for as long as the script likes.
        """
        watcher = await self.observer()
        process = self.run_chat(
            f"localhost:{self.port}",
            "--ca",
            self.ca_path,
            "--name",
            "ci",
            stdin=None,
        )
        self.assertEqual(
            await watcher.next_lines(2),
            ["*** guest-2 joined", "*** guest-2 is now known as ci"],
        )
        watcher.send(b"hello ci")
        await process.wait_output(b"[guest-1] hello ci\n")
        assert process.transport is not None
        process.transport.write(b"hello watcher\n")
        self.assertEqual(await watcher.next_lines(1), ["[ci] hello watcher"])
        process.transport.closeStdin()
        self.assertEqual(await self.exit_code(process), 0, process.output())
        self.assertEqual(
            process.out.decode("utf-8"),
            f"{greeting('guest-2')}\n*** you are now ci\n[guest-1] hello ci\n"
            "*** goodbye\n",
            process.output(),
        )
        self.assertEqual(process.err, b"")

    async def test_sigterm(self) -> None:
        """
        SIGTERM (from a service manager, or kill) leaves cleanly: C{/quit},
        the server's goodbye, then status 0.
        """
        watcher = await self.observer()
        process = self.run_chat(
            f"localhost:{self.port}", "--ca", self.ca_path, stdin=None
        )
        self.assertEqual(await watcher.next_lines(1), ["*** guest-2 joined"])
        await process.wait_output(f"{greeting('guest-2')}\n".encode())
        assert process.transport is not None
        process.transport.signalProcess("TERM")
        self.assertEqual(await self.exit_code(process), 0, process.output())
        self.assertEqual(await watcher.next_lines(1), ["*** guest-2 left"])
        self.assertEqual(
            process.out.decode("utf-8"),
            f"{greeting('guest-2')}\n*** goodbye\n",
            process.output(),
        )
        self.assertEqual(process.err, b"")

    async def test_not_verified(self) -> None:
        """
        With a CA that did not issue the server's certificate: status 4, one
        line on standard error with the fingerprint seen, nothing on
        standard output; standard input left open does not keep it running.
        The same with C{--reconnect}, which does not try again.
        """
        other = self.directory / "other-ca.pem"
        other.write_bytes(_certs.make_ca("another CA").cert_pem())
        fingerprint = certs.fingerprint(self.server.certificate)
        for extra in [(), ("--reconnect",)]:
            process = self.run_chat(
                f"localhost:{self.port}", "--ca", str(other), *extra, stdin=None
            )
            self.assertEqual(await self.exit_code(process), 4, process.output())
            self.assertEqual(
                process.err.decode("utf-8"),
                f"securemsg chat: server not verified: {UNKNOWN_ISSUER}"
                f" (server certificate {fingerprint})\n",
            )
            self.assertEqual(process.out, b"")

    async def test_unreachable(self) -> None:
        """A refused connection: status 3 and one line on standard error."""
        assert self.listening is not None
        await bounded(maybeDeferred(self.listening.stopListening), "stopListening")
        self.listening = None
        process = self.run_chat(f"127.0.0.1:{self.port}", "--ca", self.ca_path)
        self.assertEqual(await self.exit_code(process), 3, process.output())
        self.assertEqual(
            process.err.decode("utf-8"),
            f"securemsg chat: cannot connect to 127.0.0.1:{self.port}:"
            " connection refused\n",
        )
        self.assertEqual(process.out, b"")

    async def test_ca_and_pin(self) -> None:
        """C{--ca} with C{--pin} is a usage error: status 2, nothing sent."""
        pin = certs.fingerprint(self.server.certificate)
        process = self.run_chat(
            f"localhost:{self.port}", "--ca", self.ca_path, "--pin", pin
        )
        self.assertEqual(await self.exit_code(process), 2, process.output())
        self.assertEqual(
            process.err.decode("utf-8"),
            "securemsg chat: give --ca or --pin, not both;"
            " run 'securemsg chat --help' for usage\n",
        )
        self.assertEqual(process.out, b"")
        self.assertEqual(self.factory.connections, [])

    async def test_same_securemsg(self) -> None:
        """The child imports the securemsg these tests import."""
        process = ChatProcess()
        code = "import securemsg, sys; sys.stdout.write(securemsg.__file__)"
        reactor.spawnProcess(
            process,
            sys.executable,
            [sys.executable, "-c", code],
            env=child_environment(),
            path=str(self.directory),
        )
        self.addCleanup(self.kill, process)
        self.assertEqual(await self.exit_code(process), 0, process.output())
        self.assertEqual(
            Path(process.out.decode()).resolve(), Path(securemsg.__file__).resolve()
        )


class DescribeCloseTests(SynchronousTestCase):
    """
    How the end of a connection is told to the user.
    """

    def test_forms(self) -> None:
        """Clean close, a TLS alert from the server, anything else."""
        from OpenSSL import SSL
        from twisted.internet.error import ConnectionDone, ConnectionLost

        from securemsg.client.session import _describe_close

        self.assertEqual(
            _describe_close(ConnectionDone()), "server closed the connection"
        )
        self.assertEqual(
            _describe_close(
                SSL.Error([("SSL routines", "", "tls alert certificate revoked")])
            ),
            "server closed the connection: certificate revoked",
        )
        self.assertEqual(_describe_close(ConnectionLost()), "server connection lost")


class UsageTests(SynchronousTestCase):
    """
    C{securemsg chat} with the wrong arguments: one line saying what is
    wrong, status 2, before anything is started.
    """

    def assert_usage_error(self, result: _cli.Result, problem: str) -> None:
        self.assertEqual(
            (result.code, result.stdout, result.stderr),
            (
                EXIT_USAGE,
                "",
                f"securemsg chat: {problem}; run 'securemsg chat --help' for usage\n",
            ),
        )

    def test_missing_host(self) -> None:
        """Without HOST, the message says HOST is missing."""
        self.assert_usage_error(_cli.run("chat"), "missing HOST (expected HOST[:PORT])")
        self.assert_usage_error(
            _cli.run("chat", "--ca", "ca.pem"), "missing HOST (expected HOST[:PORT])"
        )

    def test_extra_argument(self) -> None:
        """A second address is named as the unexpected argument."""
        self.assert_usage_error(
            _cli.run("chat", "alpha", "beta"),
            "unexpected argument 'beta' (expected HOST[:PORT])",
        )

    def test_allow_expired_without_pin(self) -> None:
        """C{--allow-expired} is about a pin; without C{--pin} it is refused."""
        self.assert_usage_error(
            _cli.run("chat", "localhost", "--allow-expired"),
            "--allow-expired needs --pin",
        )

    def test_bad_port(self) -> None:
        """A port out of range is a usage error that quotes the address."""
        self.assert_usage_error(
            _cli.run("chat", "chat.example:0"),
            "'chat.example:0': port must be a number from 1 to 65535",
        )
