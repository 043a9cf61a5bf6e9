"""
Tests for C{securemsg fingerprint FILE | HOST[:PORT]}, through
L{securemsg.admin.cli.main} as the console script calls it.

Standard output must hold exactly the fingerprint, so that a script can
use it as it is; the description of the certificate goes to the standard
error stream L{main} is given, and nothing to the process's own
C{sys.stderr}, which these tests replace to check that.
"""

from __future__ import annotations

import sys
from io import StringIO
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from twisted.internet.defer import maybeDeferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase

from securemsg.admin.cli import main
from securemsg.tls import certs

from . import _certs
from ._loopback import LoopbackServerTestCase, bounded


class Run:
    """One run of C{securemsg fingerprint}: its status and its output."""

    def __init__(self, *arguments: str) -> None:
        self.stdout, self.stderr = StringIO(), StringIO()
        self.status = main(["fingerprint", *arguments], self.stdout, self.stderr)


def capture_stderr(case: SynchronousTestCase) -> StringIO:
    """
    Replace C{sys.stderr} for the rest of C{case}, to check that the command
    writes nothing there, only to the streams L{main} is given.
    """
    captured = StringIO()
    case.patch(sys, "stderr", captured)
    return captured


class FileTests(SynchronousTestCase):
    """The fingerprint of a certificate file."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.described = capture_stderr(self)
        self.ca, self.server = _certs.default_ca_and_server()

    def test_certificate(self) -> None:
        """
        Standard output is exactly the C{sha256:} fingerprint and a newline;
        the certificate's description goes to the command's standard error,
        not to the process's.
        """
        cert_path, _ = self.server.write(self.directory)
        run = Run(cert_path)
        self.assertEqual(run.status, 0)
        fingerprint = certs.fingerprint(self.server.certificate)
        self.assertEqual(run.stdout.getvalue(), fingerprint + "\n")
        self.assertEqual(
            run.stderr.getvalue(),
            certs.describe_certificate(self.server.certificate) + "\n",
        )
        self.assertEqual(self.described.getvalue(), "")

    def test_matches_pin(self) -> None:
        """What it prints is what C{--pin} takes, and matches the certificate."""
        cert, _ = certs.generate_self_signed()
        path = self.directory / "certificate.pem"
        certs.write_certificate(path, cert, force=False)
        run = Run(str(path))
        self.assertEqual(
            certs.parse_fingerprint(run.stdout.getvalue()),
            cert.fingerprint(hashes.SHA256()),
        )

    def test_chain(self) -> None:
        """For a chain file (server first, then its CA), the server's."""
        path = self.directory / "fullchain.pem"
        path.write_bytes(self.server.cert_pem() + self.ca.cert_pem())
        run = Run(str(path))
        self.assertEqual(run.status, 0)
        self.assertEqual(
            run.stdout.getvalue(), certs.fingerprint(self.server.certificate) + "\n"
        )

    def test_key_in_file(self) -> None:
        """A file holding a key besides the certificate is fine."""
        path = self.directory / "combined.pem"
        path.write_bytes(self.server.key_pem() + self.server.cert_pem())
        run = Run(str(path))
        self.assertEqual(
            run.stdout.getvalue(), certs.fingerprint(self.server.certificate) + "\n"
        )

    def test_der_is_not_pem(self) -> None:
        """A DER certificate is not read; the message names the file once."""
        path = self.directory / "server.crt"
        path.write_bytes(
            self.server.certificate.public_bytes(serialization.Encoding.DER)
        )
        run = Run(str(path))
        self.assertEqual(run.status, 1)
        self.assertEqual(run.stdout.getvalue(), "")
        self.assertEqual(
            run.stderr.getvalue(),
            f"securemsg fingerprint: {path}: no PEM certificate found"
            " (expected a '-----BEGIN CERTIFICATE-----' block)\n",
        )

    def test_missing_file(self) -> None:
        """A missing file: one line on standard error, status 1."""
        path = self.directory / "certificate.pem"
        run = Run(str(path))
        self.assertEqual(run.status, 1)
        self.assertEqual(run.stdout.getvalue(), "")
        self.assertEqual(
            run.stderr.getvalue(), f"securemsg fingerprint: {path}: no such file\n"
        )
        self.assertEqual(self.described.getvalue(), "")

    def test_unreadable(self) -> None:
        """A path that cannot be read as a file: one line, status 1."""
        path = self.directory / "folder.pem"
        path.mkdir()
        run = Run(str(path))
        self.assertEqual(run.status, 1)
        self.assertEqual(
            run.stderr.getvalue(),
            f"securemsg fingerprint: cannot read {path}: Is a directory\n",
        )

    def test_arguments(self) -> None:
        """
        Without FILE or HOST, or with two, the usage error says so in one
        line (ending in no stray full stop before the hint).
        """
        hint = "; run 'securemsg fingerprint --help' for usage\n"
        for arguments, problem in [
            ((), "missing FILE or HOST (expected FILE | HOST[:PORT])"),
            (
                ("a.pem", "b.pem"),
                "unexpected argument 'b.pem' (expected FILE | HOST[:PORT])",
            ),
        ]:
            run = Run(*arguments)
            self.assertEqual(run.status, 2)
            self.assertEqual(
                run.stderr.getvalue(), f"securemsg fingerprint: {problem}{hint}"
            )
            self.assertEqual(run.stdout.getvalue(), "")

    def test_neither(self) -> None:
        """Something that is neither a file nor HOST[:PORT] is a usage error."""
        run = Run("chat.example.org:99999")
        self.assertEqual(run.status, 2)
        self.assertEqual(
            run.stderr.getvalue(),
            "securemsg fingerprint: chat.example.org:99999 is neither a file nor"
            " HOST[:PORT]: 'chat.example.org:99999': port must be a number from"
            " 1 to 65535\n",
        )


class ServerTests(LoopbackServerTestCase):
    """
    The fingerprint of the certificate a server presents.  The fetch is a
    blocking stdlib C{ssl} call, so the command runs in a thread.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        super().setUp()
        self.described = capture_stderr(self)
        _, self.server = _certs.default_ca_and_server()
        await self.serve(*self.server.write(self.directory))

    async def run_in_thread(self, *arguments: str) -> Run:
        run: Run = await bounded(
            deferToThread(Run, *arguments), "securemsg fingerprint"
        )
        return run

    async def test_server(self) -> None:
        """
        C{HOST:PORT} prints the fingerprint of the certificate the server
        presents, which nobody had to trust.
        """
        for host in ("127.0.0.1", "localhost"):
            run = await self.run_in_thread(f"{host}:{self.port}")
            self.assertEqual(run.status, 0, run.stderr.getvalue())
            self.assertEqual(
                run.stdout.getvalue(), certs.fingerprint(self.server.certificate) + "\n"
            )
            self.assertEqual(
                run.stderr.getvalue(),
                certs.describe_certificate(self.server.certificate) + "\n",
            )
        self.assertEqual(self.described.getvalue(), "")

    async def test_refused(self) -> None:
        """A port nobody listens on: one line, status 3."""
        assert self.listening is not None
        await bounded(maybeDeferred(self.listening.stopListening), "stopListening")
        self.listening = None
        run = await self.run_in_thread(f"127.0.0.1:{self.port}")
        self.assertEqual(run.status, 3)
        self.assertEqual(run.stdout.getvalue(), "")
        self.assertEqual(
            run.stderr.getvalue(),
            f"securemsg fingerprint: cannot get a certificate from"
            f" 127.0.0.1:{self.port}: Connection refused\n",
        )
