"""
The real C{haproxy} in TCP mode, run by a test in front of a server of the
test's: with the PROXY protocol in front of securemsg (tests/test_proxy.py),
or as a TLS terminator in front of redis-server (tests/test_cluster_tls.py).
Tests using it skip, saying why, where haproxy is not installed (.ci/run
installs it).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from ._loopback import bounded, eventually, reactor
from ._ports import free_port

#: The haproxy binary, if installed.
HAPROXY = shutil.which("haproxy")

#: Why tests needing haproxy skip without it.
NO_HAPROXY = "haproxy is not installed (apt-get install haproxy)"


class _Haproxy(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


async def start_haproxy(
    test: TestCase, directory: Path, backend_port: int, bind: str = "", server: str = ""
) -> int:
    """
    Run haproxy, listening on a free loopback port and passing each
    connection to C{127.0.0.1:backend_port}, until C{test}'s cleanup; return
    once it accepts connections.

    @param bind: options of its C{bind} line (C{ssl crt FILE}: TLS ends there).
    @param server: options of its C{server} line (C{send-proxy-v2}...).
    @return: the port it listens on.
    """
    assert HAPROXY is not None, NO_HAPROXY
    front = free_port()
    config = directory / "haproxy.cfg"
    config.write_text(
        "global\n"
        "  maxconn 100\n"
        "defaults\n"
        "  mode tcp\n"
        "  timeout connect 5s\n"
        "  timeout client 30s\n"
        "  timeout server 30s\n"
        "frontend front\n"
        f"  bind 127.0.0.1:{front} {bind}\n"
        "  default_backend back\n"
        "backend back\n"
        f"  server one 127.0.0.1:{backend_port} {server}\n"
    )
    process = _Haproxy()
    transport: Any = reactor.spawnProcess(
        process, HAPROXY, [HAPROXY, "-db", "-f", str(config)], env={}
    )

    async def stop() -> None:
        if not process.ended.called:
            transport.signalProcess("KILL")
        await bounded(process.ended, "haproxy to exit")

    test.addCleanup(stop)

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", front)) == 0

    # Ready once it accepts connections (or it has exited: no use waiting).
    try:
        await eventually(
            lambda: listening() or process.ended.called,
            what="haproxy to listen",
            interval=0.02,
        )
    except AssertionError as timeout:
        # What haproxy said by then, not when it was started.
        raise AssertionError(f"{timeout}: {process.output!r}") from None
    if process.ended.called:
        raise AssertionError(f"haproxy did not start: {process.output!r}")
    return front
