# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics: C{twistd securemsg --metrics tcp:9464:interface=127.0.0.1}
serves them at C{/metrics} over plain HTTP, on its own endpoint (never the
chat port).

Each server has its own L{CollectorRegistry} (so several servers in one
process, or in tests, do not collide), holding L{ServerCollector}, which
reads the server's plain counters (L{securemsg.server.counters}) and state when
scraped, and prometheus_client's process, platform and garbage collector
collectors.

The page is rendered on the reactor thread by L{MetricsPage} (as Synapse's
C{synapse/metrics/_twisted_exposition.py} does), not by prometheus_client's
C{MetricsResource}, which renders in a thread while the reactor changes
what it reads.  docs/operations.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from securemsg.core.history import HistoryStore, SqliteHistory
from securemsg.server.factory import ChatServerFactory
from securemsg.server.service import ListenError, ListenerService


class ClusterState(Protocol):
    """
    What L{ServerCollector} reads of a C{--cluster} node
    (L{securemsg.cluster.node.ClusterNode} provides it), by its shape only:
    the server does not import the cluster (tests/test_layers.py).
    """

    @property
    def link_is_up(self) -> bool:
        """Whether the other nodes are within reach (Redis is usable)."""

    @property
    def publish_backlog(self) -> int:
        """Messages and commands waiting to be sent to Redis or answered."""

    @property
    def dropped(self) -> int:
        """Messages not published (out of reach, or too much waiting)."""

    @property
    def nodes_known(self) -> int:
        """Other nodes heard from (and not let go)."""


class ServerCollector(Collector):
    """
    The server's metrics, read when Prometheus scrapes: counters from
    L{securemsg.server.counters.ServerCounters}, and gauges from the server's
    state at that moment.
    """

    def __init__(
        self,
        factory: ChatServerFactory,
        *,
        history: HistoryStore | None = None,
        reloader: Any = None,
        cluster: ClusterState | None = None,
    ) -> None:
        """
        @param factory: the chat factory whose C{counters} to read.
        @param history: its history: a L{SqliteHistory} adds the rows
            written and waiting.
        @param reloader: its L{securemsg.server.reload.CertificateReloader}, for
            reloads and the certificate's expiry.
        @param cluster: its cluster node, with C{--cluster}.
        """
        self.factory = factory
        self.history = history
        self.reloader = reloader
        self.cluster = cluster

    def collect(self) -> Iterator[Metric]:
        counters = self.factory.counters
        open_ = GaugeMetricFamily(
            "securemsg_connections_open",
            "Connections open (in the TLS handshake or joined), by listener.",
            labels=["listener"],
        )
        for description, guard in counters.listeners:
            open_.add_metric([description], len(guard.protocols))
        yield open_
        yield GaugeMetricFamily(
            "securemsg_clients",
            "Clients joined to the chat through this process.",
            # This process's own (with --cluster, the chat shows others too).
            value=len(self.factory.chat.local_participants()),
        )
        yield CounterMetricFamily(
            "securemsg_handshakes_completed",
            "TLS handshakes completed.",
            value=counters.handshakes_completed,
        )
        failed = CounterMetricFamily(
            "securemsg_handshakes_failed",
            "TLS handshakes that did not complete, by reason: timeout,"
            " protocol_error, client_certificate, not_tls, closed.",
            labels=["reason"],
        )
        for reason in ("timeout", "protocol_error", "client_certificate", "not_tls"):
            failed.add_metric([reason], counters.handshakes_failed[reason])
        failed.add_metric(["closed"], counters.handshakes_failed["closed"])
        yield failed
        refused = CounterMetricFamily(
            "securemsg_connections_refused",
            "Connections refused before any TLS work, by reason:"
            " max_connections, max_per_address, connect_rate, proxy_header.",
            labels=["reason"],
        )
        by_reason = counters.refused()
        for reason in sorted(
            {"max_connections", "max_per_address", "connect_rate", *by_reason}
        ):
            refused.add_metric([reason], by_reason[reason])
        yield refused
        yield CounterMetricFamily(
            "securemsg_lines_received",
            "Lines received from joined clients (before flood control).",
            value=counters.lines_received,
        )
        delivered = CounterMetricFamily(
            "securemsg_lines_delivered",
            "Lines delivered to clients, by kind: room (said in a room),"
            " private, notice (everything else the server says).",
            labels=["kind"],
        )
        for kind, count in counters.delivered_by_kind().items():
            delivered.add_metric([kind], count)
        yield delivered
        yield CounterMetricFamily(
            "securemsg_flood_dropped_lines",
            "Lines dropped by flood control.",
            value=counters.flood_dropped,
        )
        yield CounterMetricFamily(
            "securemsg_send_queue_disconnects",
            "Clients disconnected because their send queue was full.",
            value=counters.send_queue_disconnects,
        )
        yield GaugeMetricFamily(
            "securemsg_send_queue_bytes",
            "Bytes queued for clients that do not read fast enough.",
            value=sum(
                # The protocol's own count of what it holds.
                protocol.held_bytes()
                for protocol in list(self.factory.open_connections)
            ),
        )
        yield from self._history()
        yield from self._reloads()
        yield from self._cluster()

    def _history(self) -> Iterator[Metric]:
        history = self.history
        if not isinstance(history, SqliteHistory):
            return
        yield CounterMetricFamily(
            "securemsg_history_rows_written",
            "Messages written to the history database.",
            value=history.rows_written,
        )
        yield GaugeMetricFamily(
            "securemsg_history_rows_pending",
            "Messages waiting to be written to the history database.",
            value=history.rows_pending,
        )

    def _reloads(self) -> Iterator[Metric]:
        if self.reloader is None:
            return
        reloads = CounterMetricFamily(
            "securemsg_reloads",
            "Certificate reloads (SIGHUP, /reload, --watch-certs), by result.",
            labels=["result"],
        )
        reloads.add_metric(["ok"], self.reloader.reloads_ok)
        reloads.add_metric(["failed"], self.reloader.reloads_failed)
        yield reloads
        certificate = self.reloader.current.credentials.certificate
        yield GaugeMetricFamily(
            "securemsg_certificate_expiry_timestamp_seconds",
            "When the certificate in service expires (Unix time).",
            value=certificate.not_valid_after_utc.timestamp(),
        )

    def _cluster(self) -> Iterator[Metric]:
        cluster = self.cluster
        if cluster is None:
            return
        yield GaugeMetricFamily(
            "securemsg_cluster_link_up",
            "Whether Redis, and through it the other nodes, is within reach"
            " (1) or not (0).",
            value=1 if cluster.link_is_up else 0,
        )
        yield GaugeMetricFamily(
            "securemsg_cluster_publish_backlog",
            "Messages and commands waiting to be sent to Redis or answered by it.",
            value=cluster.publish_backlog,
        )
        yield CounterMetricFamily(
            "securemsg_cluster_dropped",
            "Messages for the other nodes not published (Redis out of reach,"
            " or too much waiting).",
            value=cluster.dropped,
        )
        yield GaugeMetricFamily(
            "securemsg_cluster_nodes",
            "Other nodes heard from within a claim's lifetime.",
            value=cluster.nodes_known,
        )


def make_registry(
    factory: ChatServerFactory,
    *,
    history: HistoryStore | None = None,
    reloader: Any = None,
    cluster: ClusterState | None = None,
) -> CollectorRegistry:
    """
    A registry of its own for one server: L{ServerCollector} and
    prometheus_client's process (CPU, memory, open files), platform and
    garbage collector metrics.
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(
        ServerCollector(factory, history=history, reloader=reloader, cluster=cluster)
    )
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if GC_COLLECTOR is not None:
        GCCollector(registry=registry)
    return registry


class MetricsPage(Resource):
    """
    The metrics in Prometheus' text format, rendered on the reactor thread.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


def metrics_site(registry: CollectorRegistry) -> Site:
    """The HTTP site: the metrics at C{/metrics}, nothing elsewhere."""
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    site = Site(root)
    # One line per scrape would drown the chat server's log.
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


def metrics_listener(
    reactor: IReactorCore, description: str, registry: CollectorRegistry
) -> ListenerService:
    """
    The service that serves the metrics of C{registry} on C{description} (a
    plain endpoint description), listening as the chat's own listener does:
    before twistd drops privileges, with a failure to listen stopping
    start-up.

    @raise ListenError: if C{description} is not a valid endpoint.
    """
    try:
        endpoint = serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise ListenError(
            f"--metrics {description!r} is not a valid endpoint: {error}"
        ) from None
    return ListenerService(
        metrics_site(registry),
        [(description, endpoint)],
        announce="metrics at http://{address}/metrics",
        failure="cannot serve metrics on {description}",
    )
