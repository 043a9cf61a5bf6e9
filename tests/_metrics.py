# -*- test-case-name: tests.test_metrics -*-
"""
Scraping a server's C{--metrics} endpoint in tests, over real HTTP.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.iweb import IResponse

from ._loopback import bounded, eventually, reactor
from ._twistd import Twistd

#: Prometheus samples as {(name, sorted labels): value}.
Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Metrics:
    """Prometheus text as {(name, labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def http_connections_closed() -> None:
    """
    Wait (bounded) until no HTTP connection is left in the reactor, client
    or server side: trial fails a test that leaves one, and a connection
    that says "Connection: close" is closed a moment after the body is read.
    """

    def is_http(selectable: object) -> bool:
        protocol = getattr(selectable, "protocol", None)
        # A client endpoint's connection wraps the protocol.
        protocol = getattr(protocol, "_wrappedProtocol", protocol)
        return type(protocol).__module__.startswith("twisted.web")

    def still_open() -> list[object]:
        selectables = set(reactor.getReaders()) | set(reactor.getWriters())
        return [selectable for selectable in selectables if is_http(selectable)]

    await eventually(
        still_open, lambda found: not found, "HTTP connections to close", interval=0.01
    )


async def get(url: bytes) -> tuple[IResponse, str]:
    """GET C{url} on a connection of its own; the response and its body."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = await bounded(Agent(reactor, pool=pool).request(b"GET", url), "scrape")
    body = (await bounded(readBody(response), "the metrics")).decode("utf-8")
    await http_connections_closed()
    return response, body


async def scrape_twistd(twistd: Twistd) -> tuple[Metrics, str]:
    """
    The metrics of C{twistd}, found where it logs its C{--metrics}
    endpoint: parsed, and as text (for failure messages).
    """
    match = await twistd.wait_for_message(
        r"metrics at http://127\.0\.0\.1:(\d+)/metrics"
    )
    _, body = await get(f"http://127.0.0.1:{match.group(1)}/metrics".encode("ascii"))
    return parse_metrics(body), body
