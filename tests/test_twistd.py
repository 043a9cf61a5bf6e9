"""
The real C{twistd securemsg} in a subprocess: it finds the plugin from the
top-level C{twisted/plugins/} folder (the repository root is put on
C{PYTHONPATH}, as during development), serves chat over TLS, stops on
SIGTERM, and reports configuration problems as one line, not a traceback.

Each launch costs about half a second, so checks share launches where they
fit together.  Every process is bounded by a timeout and killed in cleanup.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _global_reactor
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessTerminated
from twisted.trial.unittest import TestCase

from securemsg.tls.policy import PASSPHRASE_ENVIRONMENT_VARIABLE

from . import _certs
from ._loopback import LineClient, connect_line_client, greeting, tls_transport
from ._twistd import (
    Twistd,
    listening_port,
    start_daemon,
    start_twistd,
    stop_with_sigterm,
)

reactor: Any = _global_reactor

PASSPHRASE = b"correct horse battery staple"


class TwistdTests(TestCase):
    """
    C{twistd -n securemsg} run as an operator would run it.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.ca, self.server = _certs.default_ca_and_server()

    def start(self, *arguments: str, **environment: str) -> Twistd:
        """Start twistd with C{arguments} and C{environment} added."""
        return start_twistd(self, self.directory, *arguments, environment=environment)

    async def run_to_exit(self, *arguments: str, **environment: str) -> Twistd:
        """Start twistd and wait until it exits by itself."""
        twistd = self.start(*arguments, **environment)
        await twistd.wait_ended()
        return twistd

    async def listening_port(self, twistd: Twistd) -> int:
        """Wait until twistd says where it listens; return the port."""
        return await listening_port(twistd)

    async def connect(self, port: int) -> LineClient:
        """A TLS client that trusts the test CA and checks C{localhost}."""
        client = await connect_line_client(port, self.ca.cert_pem())
        self.addCleanup(self.close_client, client)
        return client

    async def close_client(self, client: LineClient) -> None:
        if not client.ended.fired:
            tls_transport(client).abortConnection()
        await client.wait_closed()

    def assertNoTraceback(self, twistd: Twistd) -> None:
        self.assertNotIn(b"Traceback", twistd.out, twistd.output())
        self.assertNotIn(b"Traceback", twistd.err, twistd.output())

    def assertFailedWithStatus1(self, twistd: Twistd) -> None:
        status = twistd.ended.value
        self.assertIsInstance(status, ProcessTerminated, twistd.output())
        self.assertEqual((status.exitCode, status.signal), (1, None), twistd.output())
        self.assertNoTraceback(twistd)

    async def test_serves_chat_and_stops_on_sigterm(self) -> None:
        """
        twistd finds the securemsg plugin and serves chat over TLS; the key
        is encrypted and its passphrase read from --key-passphrase-file; as
        the key file is readable by others, a warning line says how to fix
        that with chmod.  Two clients chat; one quits; SIGTERM then stops
        the server cleanly while the other is still connected, and the
        client sees its connection end.
        """
        cert_path, key_path = self.server.write(self.directory, passphrase=PASSPHRASE)
        os.chmod(key_path, 0o644)
        passphrase_file = self.directory / "passphrase.txt"
        passphrase_file.write_bytes(PASSPHRASE + b"\n")
        twistd = self.start(
            "--cert", cert_path,
            "--key", key_path,
            "--key-passphrase-file", str(passphrase_file),
            "--listen", "tcp:0:interface=127.0.0.1",
        )  # fmt: skip
        port = await self.listening_port(twistd)
        warning = await twistd.wait_for_message(r"private key file .*")
        self.assertEqual(
            warning.group(0),
            f"private key file {key_path} is accessible by group or others"
            f" (mode 0644); run: chmod 600 {key_path}",
        )

        alice = await self.connect(port)
        self.assertEqual(await alice.next_lines(1), [greeting("guest-1")])
        bob = await self.connect(port)
        self.assertEqual(await bob.next_lines(1), [greeting("guest-2")])
        self.assertEqual(await alice.next_lines(1), ["*** guest-2 joined"])
        alice.send(b"/nick alice", b"hello from twistd")
        self.assertEqual(
            await bob.next_lines(2),
            ["*** guest-1 is now known as alice", "[alice] hello from twistd"],
        )
        self.assertEqual(await alice.next_lines(1), ["*** you are now alice"])
        bob.send(b"/quit see you")
        self.assertEqual(await bob.next_lines(1), ["*** goodbye"])
        self.assertEqual(
            await alice.next_lines(1), ['*** guest-2 left, saying "see you"']
        )
        await bob.wait_closed()

        await stop_with_sigterm(self, twistd)
        await alice.wait_closed()
        # Told before the server closed, and closed with a TLS close_notify.
        self.assertEqual(alice.unread, ["*** the server is shutting down"])
        self.assertTrue(alice.ended.value.check(ConnectionDone), alice.ended.value)
        self.assertEqual(twistd.err, b"")

    async def test_second_sigterm_while_stopping(self) -> None:
        """
        More SIGTERMs while the server is already shutting down (here it
        waits for a client that does not read to close its TLS) are
        harmless: a log line, no traceback, and the shutdown goes on as the
        first one started it.
        """
        cert_path, key_path = self.server.write(self.directory)
        twistd = self.start(
            "--cert", cert_path,
            "--key", key_path,
            "--listen", "tcp:0:interface=127.0.0.1",
            "--shutdown-grace", "20",
        )  # fmt: skip
        port = await self.listening_port(twistd)
        client = await self.connect(port)
        self.assertEqual(await client.next_lines(1), [greeting("guest-1")])
        # It never answers the server's close_notify: the shutdown has to
        # wait out --shutdown-grace.
        tls_transport(client).pauseProducing()

        twistd.signal("TERM")
        twistd.signal("TERM")
        await twistd.wait_for_message("Received SIGTERM, shutting down.")
        twistd.signal("TERM")
        await twistd.wait_for_message(r"SIGTERM again: .*")
        # Still shutting down, and not cut short: once the client reads
        # again it gets the notice and the close_notify, and twistd ends.
        tls_transport(client).resumeProducing()
        await client.wait_closed()
        self.assertEqual(client.unread, ["*** the server is shutting down"])
        self.assertTrue(client.ended.value.check(ConnectionDone), client.ended.value)
        await twistd.wait_ended()
        status = twistd.ended.value
        if isinstance(status, ProcessTerminated):
            self.assertEqual(status.signal, signal.SIGTERM, twistd.output())
        else:
            self.assertIsInstance(status, ProcessDone, twistd.output())
        self.assertIn("Server Shut Down.", twistd.messages(), twistd.output())
        self.assertNoTraceback(twistd)
        self.assertEqual(twistd.err, b"")

    async def test_passphrase_from_environment(self) -> None:
        """
        The passphrase of an encrypted key may come from the
        SECUREMSG_KEY_PASSPHRASE environment variable instead; a key file
        only its owner can read gives no permission warning.
        """
        cert_path, key_path = self.server.write(self.directory, passphrase=PASSPHRASE)
        twistd = self.start(
            "--cert", cert_path,
            "--key", key_path,
            "--listen", "tcp:0:interface=127.0.0.1",
            **{PASSPHRASE_ENVIRONMENT_VARIABLE: PASSPHRASE.decode()},
        )  # fmt: skip
        port = await self.listening_port(twistd)
        client = await self.connect(port)
        self.assertEqual(await client.next_lines(1), [greeting("guest-1")])
        assert client.transport is not None
        client.transport.loseConnection()
        await client.wait_closed()
        await stop_with_sigterm(self, twistd)
        self.assertEqual(
            [message for message in twistd.messages() if "chmod" in message], []
        )

    async def test_wrong_passphrase(self) -> None:
        """
        A wrong passphrase stops start-up with exactly one line on standard
        error saying so, and exit status 1.
        """
        wrong = b"not the passphrase"
        cert_path, key_path = self.server.write(self.directory, passphrase=PASSPHRASE)
        passphrase_file = self.directory / "passphrase.txt"
        passphrase_file.write_bytes(wrong + b"\n")
        twistd = await self.run_to_exit(
            "--cert", cert_path,
            "--key", key_path,
            "--key-passphrase-file", str(passphrase_file),
            "--listen", "tcp:0:interface=127.0.0.1",
        )  # fmt: skip
        self.assertFailedWithStatus1(twistd)
        self.assertEqual(
            twistd.err.decode(),
            f"securemsg: wrong passphrase for private key {key_path}"
            " (or the file is damaged)\n",
        )
        self.assertEqual(twistd.out, b"")

    async def test_unknown_option(self) -> None:
        """
        An unknown option is exactly one line on standard error pointing at
        --help (not twistd's whole usage first), and exit status 1.
        """
        twistd = await self.run_to_exit("--bogus")
        self.assertFailedWithStatus1(twistd)
        self.assertEqual(
            twistd.err.decode(),
            "twistd securemsg: option --bogus not recognized;"
            " run 'twistd securemsg --help' for usage\n",
        )
        self.assertEqual(twistd.out, b"")

    async def test_missing_certificate(self) -> None:
        """
        A certificate file that does not exist stops start-up with exactly
        one line on standard error, which says how to make one with
        C{securemsg gencert}, and exit status 1.
        """
        missing = str(self.directory / "certificate.pem")
        twistd = await self.run_to_exit(
            "--cert", missing, "--listen", "tcp:0:interface=127.0.0.1"
        )
        self.assertFailedWithStatus1(twistd)
        self.assertEqual(
            twistd.err.decode(),
            f"securemsg: certificate file {missing} not found"
            " (make one with: securemsg gencert)\n",
        )
        self.assertEqual(twistd.out, b"")

    async def test_port_in_use(self) -> None:
        """
        A port that is already in use stops start-up with exactly one line
        on standard error that says which endpoint could not be listened on
        and why, before twistd starts logging, and exit status 1.
        """
        port = take_port(self)
        cert_path, key_path = self.server.write(self.directory)
        description = f"tcp:{port}:interface=127.0.0.1"
        twistd = await self.run_to_exit(
            "--cert", cert_path, "--key", key_path, "--listen", description
        )
        self.assertFailedWithStatus1(twistd)
        self.assertEqual(
            twistd.err.decode(),
            f"securemsg: cannot listen on {description}: Couldn't listen on"
            f" 127.0.0.1:{port}: [Errno {errno.EADDRINUSE}]"
            f" {os.strerror(errno.EADDRINUSE)}.\n",
        )
        self.assertEqual(twistd.out, b"")

    async def test_interface_not_here(self) -> None:
        """
        An --interface address this machine does not have stops start-up the
        same way: one line on standard error, exit status 1.
        """
        cert_path, key_path = self.server.write(self.directory)
        # TEST-NET-1 (RFC 5737): never assigned to a real interface.
        twistd = await self.run_to_exit(
            "--cert", cert_path, "--key", key_path,
            "--interface", "192.0.2.1", "--port", "0",
        )  # fmt: skip
        self.assertFailedWithStatus1(twistd)
        self.assertEqual(
            twistd.err.decode(),
            "securemsg: cannot listen on tcp:0:interface=192.0.2.1: Couldn't"
            f" listen on 192.0.2.1:0: [Errno {errno.EADDRNOTAVAIL}]"
            f" {os.strerror(errno.EADDRNOTAVAIL)}.\n",
        )
        self.assertEqual(twistd.out, b"")


class DaemonTests(TestCase):
    """
    C{twistd securemsg} without C{-n}, as the README allows: a daemon with a
    pid file and a log file.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.ca, self.server = _certs.default_ca_and_server()
        self.cert_path, self.key_path = self.server.write(self.directory)

    async def test_serves_chat_and_stops_on_sigterm(self) -> None:
        """
        The command returns (status 0, nothing printed) once the daemon
        listens; two clients chat through it over TLS; SIGTERM stops it
        cleanly and removes its pid file.
        """
        command, daemon = start_daemon(
            self, self.directory,
            "--cert", self.cert_path,
            "--key", self.key_path,
            "--listen", "tcp:0:interface=127.0.0.1",
        )  # fmt: skip
        await command.wait_ended()
        self.assertIsInstance(command.ended.value, ProcessDone, command.output())
        self.assertEqual((command.out, command.err), (b"", b""))
        pid = daemon.read_pid()
        self.assertNotEqual(pid, command.transport.pid)  # type: ignore[union-attr]
        self.assertTrue(daemon.running())
        [port] = [
            int(match.group(1))
            for match in map(LISTENING.fullmatch, daemon.messages())
            if match is not None
        ]

        alice = await connect_line_client(port, self.ca.cert_pem())
        self.addCleanup(abort_client, alice)
        self.assertEqual(await alice.next_lines(1), [greeting("guest-1")])
        bob = await connect_line_client(port, self.ca.cert_pem())
        self.addCleanup(abort_client, bob)
        self.assertEqual(await bob.next_lines(1), [greeting("guest-2")])
        self.assertEqual(await alice.next_lines(1), ["*** guest-2 joined"])
        bob.send(b"hello from the daemon's other side")
        self.assertEqual(
            await alice.next_lines(1), ["[guest-2] hello from the daemon's other side"]
        )

        os.kill(pid, signal.SIGTERM)
        await daemon.wait_gone()
        await alice.wait_closed()
        await bob.wait_closed()
        self.assertFalse(daemon.pidfile.exists(), daemon.log())
        self.assertIn("Server Shut Down.", daemon.messages(), daemon.log())
        self.assertNotIn("Traceback", daemon.log())

    async def test_port_in_use(self) -> None:
        """
        A port in use stops the daemon's start-up with the same one line on
        standard error as in the foreground, and exit status 1, at once
        (not a command that waits for ever); no pid file is left behind.
        """
        port = take_port(self)
        description = f"tcp:{port}:interface=127.0.0.1"
        command, daemon = start_daemon(
            self, self.directory,
            "--cert", self.cert_path, "--key", self.key_path, "--listen", description,
        )  # fmt: skip
        await command.wait_ended()
        status = command.ended.value
        self.assertIsInstance(status, ProcessTerminated, command.output())
        self.assertEqual((status.exitCode, status.signal), (1, None), command.output())
        self.assertEqual(
            command.err.decode(),
            f"securemsg: cannot listen on {description}: Couldn't listen on"
            f" 127.0.0.1:{port}: [Errno {errno.EADDRINUSE}]"
            f" {os.strerror(errno.EADDRINUSE)}.\n",
        )
        self.assertEqual(command.out, b"")
        self.assertFalse(daemon.pidfile.exists())


def take_port(case: TestCase) -> int:
    """Listen on a loopback port until C{case} ends; return the port."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    case.addCleanup(taken.close)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port: int = taken.getsockname()[1]
    return port


async def abort_client(client: LineClient) -> None:
    """Cleanup: cut C{client} off unless it has ended; wait until it has."""
    if not client.ended.fired:
        tls_transport(client).abortConnection()
    await client.wait_closed()


LISTENING = re.compile(r"securemsg listening on 127\.0\.0\.1:(\d+)")
