"""
systemd socket activation: C{--listen systemd:domain=INET:name=...} (or
C{index=}) adopts the listening socket systemd passes and adds securemsg's
TLS to it.  The real C{twistd} is started by C{systemd-socket-activate}
(if it is installed) and by this test itself with C{LISTEN_FDS},
C{LISTEN_PID} and C{LISTEN_FDNAMES}, and a client chats over TLS through the
inherited socket.  Without a socket, C{--listen systemd:...} is one line.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys

from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from securemsg.server.endpoint import tls_server_endpoint
from securemsg.tls import policy as tls

from . import _certs
from ._loopback import LoopbackServerTestCase, connect_line_client, greeting, reactor
from ._ports import free_port
from ._twistd import (
    PROCESS_TIMEOUT,
    REPOSITORY,
    Twistd,
    stop_with_sigterm,
)

TWISTD = "from twisted.scripts.twistd import run; run()"
#: twistd, with LISTEN_PID set to its own process id first, as systemd does.
TWISTD_AS_SYSTEMD_CHILD = (
    "import os; os.environ['LISTEN_PID'] = str(os.getpid()); " + TWISTD
)


class NoSocketTests(SynchronousTestCase):
    """
    Without an inherited socket (no LISTEN_FDS here), a systemd endpoint is
    one clear line, not Twisted's IndexError or KeyError.
    """

    def test_no_socket(self) -> None:
        """By index and by name."""
        _, server = _certs.default_ca_and_server()
        context = tls.make_server_context(
            tls.ServerCredentials([server.certificate], server.key, "c", "k")
        )
        for description in (
            "systemd:domain=INET:index=0",
            "systemd:domain=INET:name=chat",
            "haproxy:systemd:domain=INET:index=0",
        ):
            error = self.assertRaises(
                tls.TLSConfigError,
                tls_server_endpoint,
                reactor,
                description,
                tls.ServerTLS(context),
            )
            self.assertEqual(
                str(error),
                f"--listen {description!r}: systemd passed no such socket (socket"
                " activation sets LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES;"
                " see docs/systemd.md)",
            )

    def test_not_valid(self) -> None:
        """Neither index nor name, or no such address family: one line too."""
        _, server = _certs.default_ca_and_server()
        context = tls.make_server_context(
            tls.ServerCredentials([server.certificate], server.key, "c", "k")
        )
        for description, problem in (
            ("systemd:domain=INET", "Specify exactly one of descriptor index or name"),
            ("systemd:domain=NOPE:index=x", "invalid literal for int()"),
        ):
            error = self.assertRaises(
                tls.TLSConfigError,
                tls_server_endpoint,
                reactor,
                description,
                tls.ServerTLS(context),
            )
            self.assertTrue(
                str(error).startswith(
                    f"--listen {description!r} is not a valid endpoint: {problem}"
                ),
                str(error),
            )


class SocketActivationTests(LoopbackServerTestCase):
    """The real twistd on a socket systemd-style activation passes it."""

    def server_arguments(self, listen: str) -> list[str]:
        _, server = _certs.default_ca_and_server()
        directory = self.directory.resolve()
        cert_path, key_path = server.write(directory)
        return [
            "-n",
            "--pidfile=",
            "--logfile=-",
            "securemsg",
            "--cert",
            cert_path,
            "--key",
            key_path,
            "--listen",
            listen,
            "--history-db",
            ":memory:",
            "--state",
            str(directory / "state.json"),
        ]

    def environment(self) -> dict[str, str]:
        return {
            "PYTHONPATH": os.pathsep.join(
                [str(REPOSITORY), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "COLUMNS": "80",
            "PATH": os.environ.get("PATH", ""),
        }

    async def chat_through(self, twistd: Twistd, port: int) -> None:
        """Two clients chat over TLS on C{port}; then twistd is stopped."""
        ca_pem = _certs.default_ca_and_server()[0].cert_pem()
        alice = await connect_line_client(port, ca_pem)
        self.clients.append(alice)
        self.assertEqual(await alice.next_lines(1), [greeting("guest-1")])
        bob = await connect_line_client(port, ca_pem)
        self.clients.append(bob)
        await bob.next_lines(1)
        await alice.next_lines(1)  # bob's arrival
        bob.send(b"hello through systemd's socket")
        self.assertEqual(
            await alice.next_lines(1), ["[guest-2] hello through systemd's socket"]
        )
        await twistd.wait_for_message(rf"securemsg listening on 127\.0\.0\.1:{port}")
        for client in (alice, bob):
            assert client.transport is not None
            client.transport.loseConnection()
            await client.wait_closed()
        await stop_with_sigterm(self, twistd)

    async def test_listen_fds_from_the_test(self) -> None:
        """
        The test makes the listening socket and passes it as descriptor 3,
        with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES, as systemd does.
        """
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(50)
        port = listening.getsockname()[1]
        twistd = Twistd()
        environment = self.environment()
        environment.update(LISTEN_FDS="1", LISTEN_FDNAMES="chat")
        argv = [
            sys.executable,
            "-c",
            TWISTD_AS_SYSTEMD_CHILD,
            *self.server_arguments("systemd:domain=INET:name=chat"),
        ]
        try:
            process = reactor.spawnProcess(
                twistd,
                sys.executable,
                argv,
                env=environment,
                path=str(self.directory),
                childFDs={0: "w", 1: "r", 2: "r", 3: listening.fileno()},
            )
        finally:
            # Only the server holds it now.
            listening.close()
        self.addCleanup(self.kill, twistd, process)
        await self.chat_through(twistd, port)

    async def test_systemd_socket_activate(self) -> None:
        """
        systemd-socket-activate listens, starts twistd on the first
        connection and passes it the socket; clients chat over TLS.
        """
        activate = shutil.which("systemd-socket-activate")
        if activate is None:
            self.skipTest(
                "systemd-socket-activate is not installed (it comes with systemd)"
            )
        port = free_port()
        environment = self.environment()
        argv = [
            activate,
            "-l",
            f"127.0.0.1:{port}",
            "--fdname=chat",
            *(f"-E{name}={value}" for name, value in environment.items()),
            sys.executable,
            "-c",
            TWISTD,
            # By position this time (the other test asks by name).
            *self.server_arguments("systemd:domain=INET:index=0"),
        ]
        twistd = Twistd()
        process = reactor.spawnProcess(
            twistd, activate, argv, env=environment, path=str(self.directory)
        )
        self.addCleanup(self.kill, twistd, process)
        # It says so on standard error once it listens.
        for _ in range(int(PROCESS_TIMEOUT / 0.02)):
            if b"Listening on" in twistd.err or twistd.ended.fired:
                break
            await deferLater(reactor, 0.02)
        self.assertIn(b"Listening on", twistd.err, twistd.output())
        await self.chat_through(twistd, port)

    async def kill(self, twistd: Twistd, process: object) -> None:
        if not twistd.ended.fired:
            twistd.signal("KILL")
            await twistd.wait_ended()
