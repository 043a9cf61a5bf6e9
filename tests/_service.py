"""
The service tree C{twistd securemsg} builds from its options, on a memory
reactor, for tests of what the options make.
"""

from __future__ import annotations

from pathlib import Path

from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from securemsg import tap

from . import _certs


class ServiceTreeCase(SynchronousTestCase):
    """
    A certificate and key of its own in C{self.directory}, and L{build}.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        _, server = _certs.default_ca_and_server()
        self.cert_path, self.key_path = server.write(self.directory)

    def build(
        self, *arguments: str, listen: str | None = "tcp:1234"
    ) -> tuple[MemoryReactorClock, MultiService]:
        """
        The service tree of C{twistd securemsg} with this certificate, an
        in-memory history, C{--listen listen} (none if L{None}) and
        C{arguments}; not started.
        """
        reactor = MemoryReactorClock()
        options = tap.Options()
        options.parseOptions(
            [
                "--cert", self.cert_path,
                "--key", self.key_path,
                "--history-db", ":memory:",
                *(("--listen", listen) if listen is not None else ()),
                *arguments,
            ]
        )  # fmt: skip
        return reactor, tap.make_service(reactor, options)

    def start(self, top: MultiService) -> None:
        """Start C{top} as twistd does; stop it when the test ends."""
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
