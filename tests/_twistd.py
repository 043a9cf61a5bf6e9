"""
The real C{twistd -n securemsg} in a subprocess, for tests: started in a
folder of the test's, with the repository root on C{PYTHONPATH} (so the
top-level C{twisted/plugins/} folder is found, as during development),
watched through its log, and killed in cleanup if it is still running.

L{start_daemon} runs it without C{-n}, as a daemon with a pid file and a log
file in that folder.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from securemsg.tls.policy import PASSPHRASE_ENVIRONMENT_VARIABLE

from ._loopback import Waiters, bounded

reactor: Any = _global_reactor

REPOSITORY = Path(__file__).resolve().parent.parent

#: Generous: a twistd start takes about half a second, more on a busy CI.
PROCESS_TIMEOUT = 30.0

#: One line of twistd's text log: time, [system], then the message.
LOG_LINE = re.compile(r"\S+ \[(?P<system>[^\]]*)\] (?P<message>.*)")


class Twistd(ProcessProtocol):
    """
    A running C{twistd}: collects its output, and lets a test wait for a log
    message on standard output or for the process to end.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended = Waiters()
        self._watching: list[tuple[re.Pattern[str], Deferred[re.Match[str]]]] = []

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.fire(reason.value)
        self._check()
        self._give_up()

    def _give_up(self) -> None:
        """Fail every wait for a message that can no longer come."""
        watching, self._watching = self._watching, []
        for pattern, waiter in watching:
            waiter.errback(
                AssertionError(
                    f"twistd ended ({self.ended.value}) before logging"
                    f" {pattern.pattern!r}; output:\n{self.output()}"
                )
            )

    def output(self) -> str:
        """Everything it wrote so far, for failure messages."""
        return (
            self.out.decode("utf-8", "replace")
            + "\n--- stderr ---\n"
            + self.err.decode("utf-8", "replace")
        )

    def messages(self) -> list[str]:
        """The messages of the complete log lines on standard output."""
        lines = self.out.decode("utf-8", "replace").split("\n")[:-1]
        return [
            match.group("message")
            for match in map(LOG_LINE.fullmatch, lines)
            if match is not None
        ]

    def _find(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        for message in self.messages():
            match = pattern.fullmatch(message)
            if match is not None:
                return match
        return None

    def _check(self) -> None:
        watching, self._watching = self._watching, []
        for pattern, waiter in watching:
            match = self._find(pattern)
            if match is None:
                self._watching.append((pattern, waiter))
            else:
                waiter.callback(match)

    def wait_for_message(self, pattern: str) -> Deferred[re.Match[str]]:
        """Fires with the match once a log message matches C{pattern} fully."""
        waiter: Deferred[re.Match[str]] = Deferred(
            lambda waiter: self._watching.remove((compiled, waiter))
        )
        compiled = re.compile(pattern)
        self._watching.append((compiled, waiter))
        self._check()
        if self.ended.fired:
            self._give_up()
        return bounded(waiter, f"twistd to log {pattern!r}", PROCESS_TIMEOUT)

    def signal(self, name: str) -> None:
        """Send the signal called C{name} (C{"TERM"}, C{"HUP"}) to it."""
        assert self.transport is not None
        self.transport.signalProcess(name)

    def wait_ended(self) -> Deferred[None]:
        """Fires once the process has ended; C{ended.value} says how."""
        return bounded(self.ended.wait(), "twistd to exit", PROCESS_TIMEOUT)


async def stop_with_sigterm(case: TestCase, twistd: Twistd) -> None:
    """
    Send SIGTERM and check that twistd exits because of it, cleanly: with
    status 0 after its "Server Shut Down." (twistd handles the signal and
    stops the reactor) or killed by the signal, and without a traceback.
    """
    twistd.signal("TERM")
    await twistd.wait_ended()
    status = twistd.ended.value
    if isinstance(status, ProcessTerminated):
        case.assertEqual(status.signal, signal.SIGTERM, twistd.output())
    else:
        case.assertIsInstance(status, ProcessDone, twistd.output())
        case.assertIn("Server Shut Down.", twistd.messages(), twistd.output())
    case.assertNotIn(b"Traceback", twistd.out + twistd.err, twistd.output())


def _spawn(
    test: TestCase,
    directory: Path,
    twistd_options: list[str],
    arguments: tuple[str, ...],
    environment: dict[str, str] | None,
    inherit: socket.socket | None = None,
) -> Twistd:
    """
    Start C{twistd TWISTD_OPTIONS securemsg ARGUMENTS} in C{directory}, with
    no passphrase in its environment unless C{environment} gives one;
    C{test} kills it in cleanup.

    @param inherit: a listening socket passed as systemd passes one (as
        descriptor 3, named C{chat}: C{--listen systemd:domain=INET:name=chat}).
    """
    env = dict(os.environ)
    env.pop(PASSPHRASE_ENVIRONMENT_VARIABLE, None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPOSITORY), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["COLUMNS"] = "80"
    env.update(environment or {})
    twistd = Twistd()
    code = "from twisted.scripts.twistd import run; run()"
    child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
    if inherit is not None:
        env.update(LISTEN_FDS="1", LISTEN_FDNAMES="chat")
        # systemd sets LISTEN_PID to the server's own process id.
        code = "import os; os.environ['LISTEN_PID'] = str(os.getpid()); " + code
        child_fds[3] = inherit.fileno()
    argv = [sys.executable, "-c", code, *twistd_options, "securemsg", *arguments]
    reactor.spawnProcess(
        twistd,
        sys.executable,
        argv,
        env=env,
        path=str(directory),
        childFDs=child_fds,
    )
    test.addCleanup(_kill, twistd)
    return twistd


def start_twistd(
    test: TestCase,
    directory: Path,
    *arguments: str,
    environment: dict[str, str] | None = None,
    inherit: socket.socket | None = None,
) -> Twistd:
    """
    Start C{twistd -n securemsg ARGUMENTS} in C{directory}, logging to
    standard output, with no pid file and no passphrase in its environment
    unless C{environment} gives one, and given the listening socket
    C{inherit} as systemd gives one if set; C{test} kills it in cleanup.
    """
    options = ["-n", "--pidfile=", "--logfile=-"]
    return _spawn(test, directory, options, arguments, environment, inherit)


class Daemon:
    """
    A twistd daemon: its pid file and log file, in the folder it was
    started in.
    """

    def __init__(self, directory: Path) -> None:
        self.pidfile = directory / "twistd.pid"
        self.logfile = directory / "twistd.log"
        #: Its process id, once L{read_pid} has read it.
        self.pid: int | None = None

    def read_pid(self) -> int:
        """Read its process id from the pid file."""
        self.pid = int(self.pidfile.read_text())
        return self.pid

    def log(self) -> str:
        """Its log file's text so far ('' if there is none)."""
        try:
            return self.logfile.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def messages(self) -> list[str]:
        """The messages of the complete lines of its log file."""
        lines = self.log().split("\n")[:-1]
        return [
            match.group("message")
            for match in map(LOG_LINE.fullmatch, lines)
            if match is not None
        ]

    def running(self) -> bool:
        """Whether its process still runs (a zombie does not)."""
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        # Not our child, so not ours to reap: whoever adopted it may leave it
        # a zombie for a while.
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except FileNotFoundError:
            return not Path("/proc/self").exists()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    async def wait_gone(self) -> None:
        """Wait (bounded) until its process has ended."""
        deadline = reactor.seconds() + PROCESS_TIMEOUT
        while self.running():
            if reactor.seconds() > deadline:
                raise AssertionError(
                    f"twistd daemon {self.pid} still runs after"
                    f" {PROCESS_TIMEOUT}s; log:\n{self.log()}"
                )
            await deferLater(reactor, 0.05)


def start_daemon(
    test: TestCase, directory: Path, *arguments: str
) -> tuple[Twistd, Daemon]:
    """
    Start C{twistd securemsg ARGUMENTS} as a daemon in C{directory}, with
    C{twistd.pid} and C{twistd.log} there.  The L{Twistd} is the command
    itself, which exits once the daemon has started or failed to; C{test}
    kills the daemon in cleanup if it still runs.
    """
    daemon = Daemon(directory)
    options = [f"--pidfile={daemon.pidfile}", f"--logfile={daemon.logfile}"]
    command = _spawn(test, directory, options, arguments, None)
    test.addCleanup(_kill_daemon, daemon)
    return command, daemon


def _kill_daemon(daemon: Daemon) -> None:
    if daemon.pid is None and daemon.pidfile.exists():
        daemon.read_pid()
    if daemon.running():
        assert daemon.pid is not None
        os.kill(daemon.pid, signal.SIGKILL)


async def _kill(twistd: Twistd) -> None:
    if not twistd.ended.fired:
        twistd.signal("KILL")
        await twistd.wait_ended()


async def listening_port(twistd: Twistd) -> int:
    """Wait until twistd says where it listens; return the port."""
    match = await twistd.wait_for_message(r"securemsg listening on 127\.0\.0\.1:(\d+)")
    return int(match.group(1))
