"""
Prometheus metrics (L{securemsg.server.metrics}, L{securemsg.server.counters}): the
collector over fake connections and a fake clock, and the real C{/metrics}
endpoint scraped over HTTP during a real TLS chat on loopback, and under
C{twistd}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from OpenSSL import SSL
from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from securemsg.cluster.local import MemoryBus, MemoryLink
from securemsg.cluster.node import ClusterNode, RemoteParticipant
from securemsg.core.history import SqliteHistory
from securemsg.core.limits import Limits
from securemsg.protocol import wire
from securemsg.server import ChatServerFactory
from securemsg.server.counters import handshake_failure, line_kind
from securemsg.server.endpoint import tls_server_endpoint
from securemsg.server.guard import GuardedTLSFactory, NotTLSError
from securemsg.server.metrics import ServerCollector, make_registry, metrics_listener
from securemsg.server.reload import CertificateReloader
from securemsg.server.service import ListenError
from securemsg.tap import Options
from securemsg.tls import policy as tls

from . import _certs
from ._fakes import Recorder
from ._loopback import LoopbackServerTestCase, bounded, port_of, reactor
from ._metrics import Metrics, get, parse_metrics, scrape_twistd
from ._service import ServiceTreeCase
from ._tls import server_context
from ._twistd import start_twistd, stop_with_sigterm


class Client:
    """One plain connection to the factory over a StringTransport."""

    def __init__(self, factory: ChatServerFactory, port: int) -> None:
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", port)
        )
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)

    def send(self, *lines: bytes) -> None:
        self.protocol.dataReceived(b"".join(line + b"\n" for line in lines))


class CounterTests(SynchronousTestCase):
    """How events and handshake failures are sorted for the metrics."""

    def test_line_kinds(self) -> None:
        """Room speech, private lines, and everything else."""
        self.assertEqual(line_kind(wire.Message), "room")
        self.assertEqual(line_kind(wire.Action), "room")
        self.assertEqual(line_kind(wire.PrivateMessage), "private")
        self.assertEqual(line_kind(wire.Notice), "notice")
        self.assertEqual(line_kind(wire.Error), "notice")

    def test_handshake_failures(self) -> None:
        """OpenSSL's errors, a plain-text client, a client that left."""

        def reason(error: Exception) -> str:
            return handshake_failure(Failure(error))

        certificate = SSL.Error(
            [("SSL routines", "", "peer did not return a certificate")]
        )
        self.assertEqual(reason(certificate), "client_certificate")
        wrong = SSL.Error([("SSL routines", "", "wrong version number")])
        self.assertEqual(reason(wrong), "protocol_error")
        self.assertEqual(reason(NotTLSError("x")), "not_tls")
        self.assertEqual(reason(ConnectionDone()), "closed")


class CollectorTests(SynchronousTestCase):
    """L{securemsg.metrics.ServerCollector} reads what the server counted."""

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.factory = ChatServerFactory.standalone(
            self.clock,
            greeting="",
            limits=Limits(flood_burst=2, flood_rate=1, send_queue=100),
        )
        self.registry = make_registry(self.factory)

    def value(self, name: str, **labels: str) -> float | None:
        result: float | None = self.registry.get_sample_value(name, labels)
        return result

    def test_clients_of_this_process(self) -> None:
        """
        With --cluster, the chat also holds other processes' users (so that
        /who lists them); the clients gauge counts this process's own.
        """
        chat = self.factory.chat
        link = MemoryLink(MemoryBus(self.clock), "here")
        ClusterNode(chat, link, self.clock)
        link.up = True
        chat.join(Recorder())
        chat.add_remote(RemoteParticipant(chat.cluster, "there", "far"), False)  # type: ignore[arg-type]
        self.assertEqual(len(chat), 2)
        self.assertEqual(self.value("securemsg_clients"), 1)

    def test_cluster(self) -> None:
        """
        With --cluster: whether the link is up, what waits for Redis, the
        messages dropped, the other nodes known; no names in labels.
        """
        bus = MemoryBus(self.clock)
        link, other = MemoryLink(bus, "here"), MemoryLink(bus, "there")
        node = ClusterNode(self.factory.chat, link, self.clock)
        registry = make_registry(self.factory, cluster=node)
        # Not started yet: Redis is not reached.
        self.assertEqual(registry.get_sample_value("securemsg_cluster_link_up"), 0)
        node.start()
        there = ChatServerFactory.standalone(self.clock).chat
        ClusterNode(there, other, self.clock).start()
        value = registry.get_sample_value
        self.assertEqual(value("securemsg_cluster_link_up"), 1)
        self.assertEqual(value("securemsg_cluster_nodes"), 1)
        self.assertEqual(value("securemsg_cluster_publish_backlog"), 0)
        self.assertEqual(value("securemsg_cluster_dropped_total"), 0)
        link.backlog = 3
        self.assertEqual(value("securemsg_cluster_publish_backlog"), 3)
        link.cut()
        # What this node says while Redis is out of reach (its goodbye) is
        # dropped.
        node.stop()
        self.assertEqual(value("securemsg_cluster_link_up"), 0)
        self.assertEqual(value("securemsg_cluster_nodes"), 0)
        self.assertEqual(value("securemsg_cluster_dropped_total"), 1)
        for family in registry.collect():
            if family.name.startswith("securemsg_cluster"):
                for sample in family.samples:
                    self.assertEqual(sample.labels, {}, sample)
        # Without --cluster, none of them.
        self.assertIsNone(self.value("securemsg_cluster_link_up"))

    def test_lines_flood_and_send_queue(self) -> None:
        """
        Lines received and delivered by kind, lines dropped by flood control,
        bytes queued for a client that does not read, and its disconnection
        when its queue is full.
        """
        reader, sender = Client(self.factory, 1), Client(self.factory, 2)
        self.clock.advance(1)
        reader.protocol.pauseProducing()
        sender.send(b"one", b"two", b"three", b"/msg guest-1 psst")
        self.clock.advance(0)
        self.assertEqual(self.value("securemsg_lines_received_total"), 4)
        self.assertEqual(self.value("securemsg_flood_dropped_lines_total"), 2)
        self.assertEqual(self.value("securemsg_lines_delivered_total", kind="room"), 2)
        queued = self.value("securemsg_send_queue_bytes")
        self.assertEqual(queued, len(b"[guest-2] one\n[guest-2] two\n"))
        self.assertEqual(self.value("securemsg_clients"), 2)
        self.assertEqual(self.value("securemsg_send_queue_disconnects_total"), 0)
        self.clock.advance(5)
        sender.send(b"x" * 100)
        self.clock.advance(0)
        self.assertTrue(reader.transport.disconnected)
        self.assertEqual(self.value("securemsg_send_queue_disconnects_total"), 1)
        reader.protocol.connectionLost(Failure(ConnectionDone()))
        # The sender's notice of the reader's departure waits a moment to
        # share a write with other announcements; then nothing is held.
        self.assertGreater(self.value("securemsg_send_queue_bytes") or 0, 0)
        self.clock.advance(1)
        self.assertEqual(self.value("securemsg_send_queue_bytes"), 0)

    def test_history_reloads_and_expiry(self) -> None:
        """
        History rows written and pending; reloads that worked and failed;
        the certificate's expiry.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        history = SqliteHistory.open(str(directory / "h.sqlite3"), self.clock)
        self.addCleanup(history.close)
        _, server = _certs.default_ca_and_server()
        cert_path, key_path = server.write(directory)
        settings = Options()
        settings.parseOptions(["--cert", cert_path, "--key", key_path])
        tls_settings = settings.tls_settings()
        loaded = tls.load_tls(tls_settings)
        reloader = CertificateReloader(
            tls_settings, tls.ServerTLS(loaded.context), loaded
        )
        registry = make_registry(self.factory, history=history, reloader=reloader)

        def value(name: str, **labels: str) -> float | None:
            result: float | None = registry.get_sample_value(name, labels)
            return result

        history.record(wire.Message("alice", "hello", "#lobby", 1.0))
        self.assertEqual(value("securemsg_history_rows_pending"), 1)
        self.assertEqual(value("securemsg_history_rows_written_total"), 0)
        history.flush()
        self.assertEqual(value("securemsg_history_rows_pending"), 0)
        self.assertEqual(value("securemsg_history_rows_written_total"), 1)

        self.assertEqual(
            value("securemsg_certificate_expiry_timestamp_seconds"),
            server.certificate.not_valid_after_utc.timestamp(),
        )
        reloader.reload()
        Path(key_path).write_text("not a key")
        reloader.reload()
        self.assertEqual(value("securemsg_reloads_total", result="ok"), 1)
        self.assertEqual(value("securemsg_reloads_total", result="failed"), 1)

    def test_handshake_timeout(self) -> None:
        """
        A handshake that times out counts once as C{timeout}, not again as
        the connection closes; the open connection is counted meanwhile.
        """
        guard = GuardedTLSFactory(
            tls.ServerTLS(server_context()),
            self.factory,
            self.clock,
            Limits(max_connections=10, max_per_address=10),
        )
        self.factory.counters.add_listener("tcp:50000", guard)
        protocol = guard.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(
            self.value("securemsg_connections_open", listener="tcp:50000"), 1
        )
        self.clock.advance(self.factory.limits.handshake_timeout)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionDone()))
        failed = "securemsg_handshakes_failed_total"
        self.assertEqual(self.value(failed, reason="timeout"), 1)
        self.assertEqual(self.value(failed, reason="closed"), 0)
        self.assertEqual(
            self.value("securemsg_connections_open", listener="tcp:50000"), 0
        )

    def test_refusals(self) -> None:
        """Connections refused by the guard, by reason."""
        guard = GuardedTLSFactory(
            tls.ServerTLS(server_context()),
            self.factory,
            self.clock,
            Limits(max_connections=10, max_per_address=1),
        )
        self.factory.counters.add_listener("tcp:50000", guard)
        address = IPv4Address("TCP", "192.0.2.1", 1)
        protocol = guard.buildProtocol(address)
        assert protocol is not None
        protocol.makeConnection(StringTransport())
        self.assertIsNone(guard.buildProtocol(address))
        refused = "securemsg_connections_refused_total"
        self.assertEqual(self.value(refused, reason="max_per_address"), 1)
        self.assertEqual(self.value(refused, reason="max_connections"), 0)

    def test_process_metrics(self) -> None:
        """prometheus_client's process metrics are there: CPU, memory, fds."""
        for name in (
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ):
            self.assertIsNotNone(self.value(name), name)

    def test_registries_apart(self) -> None:
        """Two servers in one process each have their own metrics."""
        other = ChatServerFactory.standalone(self.clock, greeting="")
        other_registry = make_registry(other)
        Client(other, 1).send(b"hi")
        self.assertEqual(self.value("securemsg_lines_received_total"), 0)
        self.assertEqual(
            other_registry.get_sample_value("securemsg_lines_received_total"), 1
        )


def _keys(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class ScrapeCase(LoopbackServerTestCase):
    """
    The real C{/metrics} endpoint of a server on loopback, scraped with
    Twisted's HTTP client.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        super().setUp()
        ca, server = _certs.default_ca_and_server()
        self.ca_pem = ca.cert_pem()
        cert_path, key_path = server.write(self.directory)
        await self.serve(cert_path, key_path)
        self.metrics = metrics_listener(
            reactor, "tcp:0:interface=127.0.0.1", make_registry(self.factory)
        )
        self.metrics.startService()
        self.addCleanup(self.metrics.stopService)
        [listening] = self.metrics.ports
        port = port_of(listening.getHost())
        self.url = f"http://127.0.0.1:{port}/metrics".encode("ascii")

    async def scrape(self) -> Metrics:
        response, body = await get(self.url)
        self.assertEqual(response.code, 200)
        [content_type] = response.headers.getRawHeaders(b"content-type")
        self.assertTrue(content_type.startswith(b"text/plain; version="))
        return parse_metrics(body)


class ScrapeTests(ScrapeCase):
    """The numbers move as clients chat over real TLS."""

    async def test_numbers_move(self) -> None:
        """
        Connections, handshakes, lines received and delivered by kind, as
        two clients chat; no label holds a name, an address or text.
        """
        listener = _keys(listener="tcp:0:interface=127.0.0.1")
        before = await self.scrape()
        self.assertEqual(before[("securemsg_connections_open", listener)], 0)
        self.assertEqual(before[("securemsg_handshakes_completed_total", ())], 0)

        alice = await self.connect(self.ca_pem)
        await alice.next_lines(1)
        bob = await self.connect(self.ca_pem)
        await bob.next_lines(1)
        await alice.next_lines(1)  # bob's arrival
        alice.send(b"one", b"two", b"/msg guest-2 psst")
        await bob.next_lines(3)
        await alice.next_lines(1)  # her private line, echoed

        during = await self.scrape()
        self.assertEqual(during[("securemsg_connections_open", listener)], 2)
        self.assertEqual(during[("securemsg_clients", ())], 2)
        self.assertEqual(during[("securemsg_handshakes_completed_total", ())], 2)
        self.assertEqual(during[("securemsg_lines_received_total", ())], 3)
        delivered = "securemsg_lines_delivered_total"
        self.assertEqual(during[(delivered, _keys(kind="room"))], 2)
        self.assertEqual(during[(delivered, _keys(kind="private"))], 2)
        # Two greetings and bob's arrival.
        self.assertEqual(during[(delivered, _keys(kind="notice"))], 3)
        self.assertGreater(during[("process_cpu_seconds_total", ())], 0)
        self.assertGreater(during[("process_open_fds", ())], 0)
        for name, labels in during:
            for _, value in labels:
                for secret in ("alice", "guest-", "psst", "one", "127.0.0.1:"):
                    self.assertNotIn(secret, value, (name, labels))

    async def test_failed_handshakes_and_refusals(self) -> None:
        """
        A plain-text client is a failed handshake (not_tls); a client whose
        TLS is refused is one too (protocol_error).
        """

        class PlainText(Protocol):
            def connectionMade(self) -> None:
                assert self.transport is not None
                self.transport.write(b"hello?\r\n")

        await self.connect_plain(PlainText())
        server = await self.factory.connection(0)
        await bounded(server.ended.wait(), "the plain client to be closed")
        after = await self.scrape()
        failed = "securemsg_handshakes_failed_total"
        self.assertEqual(after[(failed, _keys(reason="not_tls"))], 1)
        self.assertEqual(after[(failed, _keys(reason="protocol_error"))], 0)
        self.assertEqual(
            after[
                ("securemsg_connections_refused_total", _keys(reason="max_per_address"))
            ],
            0,
        )


class TwistdMetricsTests(LoopbackServerTestCase):
    """C{twistd securemsg --metrics} serves the metrics."""

    async def test_twistd_serves_metrics(self) -> None:
        """The real twistd logs where the metrics are, and serves them."""
        _, server = _certs.default_ca_and_server()
        cert_path, key_path = server.write(self.directory.resolve())
        twistd = start_twistd(
            self,
            self.directory,
            "--cert",
            cert_path,
            "--key",
            key_path,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--metrics",
            "tcp:0:interface=127.0.0.1",
            "--history-db",
            ":memory:",
        )
        metrics, body = await scrape_twistd(twistd)
        self.assertEqual(
            metrics[("securemsg_reloads_total", _keys(result="ok"))], 0, body
        )
        self.assertIn(("securemsg_certificate_expiry_timestamp_seconds", ()), metrics)
        await stop_with_sigterm(self, twistd)


class ClientCertificateTests(ScrapeCase):
    """
    With client certificates required, a client without one is a failed
    handshake: C{client_certificate}.
    """

    async def serve(
        self, cert_path: str, key_path: str, limits: Limits | None = None
    ) -> None:
        ca, _ = _certs.default_ca_and_server()
        credentials = tls.load_credentials(cert_path, key_path)
        context = tls.make_server_context(credentials, client_cas=[ca.certificate])
        endpoint = tls_server_endpoint(
            reactor, "tcp:0:interface=127.0.0.1", tls.ServerTLS(context), limits
        )
        self.listening = await bounded(endpoint.listen(self.factory), "listening")
        self.port = port_of(self.listening.getHost())

    async def test_no_client_certificate(self) -> None:
        """The server refuses the handshake; the metric says why."""
        client = await self.connect(self.ca_pem)
        await client.wait_closed()
        server = await self.factory.connection(0)
        await bounded(server.ended.wait(), "the server's side to end")
        after = await self.scrape()
        failed = "securemsg_handshakes_failed_total"
        self.assertEqual(after[(failed, _keys(reason="client_certificate"))], 1)
        self.assertEqual(after[("securemsg_handshakes_completed_total", ())], 0)


class ServiceTests(ServiceTreeCase):
    """C{--metrics} in the service tree, and its failures."""

    def make(self, *arguments: str) -> tuple[MemoryReactorClock, Any]:
        reactor, top = self.build(*arguments)
        self.start(top)
        return reactor, top

    def test_off_by_default(self) -> None:
        """Without --metrics, only the chat listens."""
        reactor, _ = self.make()
        self.assertEqual([port for port, *_ in reactor.tcpServers], [1234])

    def test_metrics_endpoint(self) -> None:
        """
        --metrics listens on its own endpoint with an HTTP site whose
        /metrics reads this server's counters.
        """
        reactor, top = self.make("--metrics", "tcp:9464:interface=127.0.0.1")
        [chat, metrics] = reactor.tcpServers
        self.assertEqual((metrics[0], metrics[3]), (9464, "127.0.0.1"))
        self.assertIsInstance(metrics[1], Site)
        service = top.getServiceNamed("metrics")
        self.assertIs(service.factory, metrics[1])
        site = metrics[1]
        assert isinstance(site, Site)
        page = site.resource.children[b"metrics"]
        [collector] = [
            c
            for c in page.registry._collector_to_names
            if isinstance(c, ServerCollector)
        ]
        assert isinstance(chat[1], GuardedTLSFactory), chat[1]
        self.assertIs(collector.factory, chat[1].wrappedFactory)
        self.assertIsNotNone(collector.reloader)

    def test_cluster_node(self) -> None:
        """With --cluster, the collector reads the cluster node."""
        _, top = self.make(
            "--metrics", "tcp:9464", "--cluster", "redis://127.0.0.1:6390/0"
        )
        site = top.getServiceNamed("metrics").factory
        [collector] = [
            c
            for c in site.resource.children[b"metrics"].registry._collector_to_names
            if isinstance(c, ServerCollector)
        ]
        self.assertIs(collector.cluster, top.getServiceNamed("cluster").node)

    def test_cannot_listen(self) -> None:
        """A metrics endpoint that cannot be used is one line."""
        taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port
        for description, problem in (
            (f"tcp:{port}:interface=127.0.0.1", f"cannot serve metrics on tcp:{port}"),
            ("nonsense:1", "--metrics 'nonsense:1' is not a valid endpoint"),
        ):

            def listen(description: str = description) -> None:
                metrics_listener(reactor, description, CollectorRegistry()).listen()

            error = self.assertRaises(ListenError, listen)
            self.assertTrue(str(error).startswith(problem), str(error))
