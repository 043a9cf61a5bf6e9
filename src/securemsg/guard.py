# -*- test-case-name: tests.test_guard -*-
"""
Connection limits, applied before any TLS work is done.

L{GuardedTLSFactory} is Twisted's L{TLSMemoryBIOFactory} with a count of
the connections it holds, in total and per client (an IPv4 address, an
IPv6 /64: see L{securemsg.limits.client_key}).  A connection over a
limit gets no protocol at all, so the reactor closes it at once: it costs
no handshake.  Refusals are logged once per burst, not once per connection.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from securemsg.direct import DirectTLSProtocol
from securemsg.limits import client_key
from securemsg.server import peer_host

#: Refusals after the first in a burst are summed up in one line this often.
REFUSAL_LOG_INTERVAL: Final = 10.0


class GuardedTLSFactory(TLSMemoryBIOFactory):
    """
    Adds TLS to C{wrappedFactory}'s connections, holding at most
    C{max_connections} at once, and C{max_per_address} from one client: one
    IPv4 address, or one IPv6 network of C{ipv6_prefix} bits (a /64 by
    default), see L{client_key}.
    """

    log = Logger()
    # Not Twisted's write-aggregating TLS transport: the chat factory
    # already writes once per connection per reactor turn, so it would only
    # add a timer per connection.  Each TLS record is sent at once.
    protocol = DirectTLSProtocol

    def __init__(
        self,
        creator: IOpenSSLServerConnectionCreator,
        wrappedFactory: IProtocolFactory,
        clock: IReactorTime,
        *,
        max_connections: int,
        max_per_address: int,
        ipv6_prefix: int = 64,
        ipv4_prefix: int = 32,
    ) -> None:
        super().__init__(creator, False, wrappedFactory, clock)
        self._clock = clock
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.ipv6_prefix = ipv6_prefix
        self.ipv4_prefix = ipv4_prefix
        self.per_address: Counter[str] = Counter()
        self._hosts: dict[TLSMemoryBIOProtocol, str] = {}
        self._refused_since_report = 0
        self._report: IDelayedCall | None = None

    def buildProtocol(self, addr: IAddress) -> TLSMemoryBIOProtocol | None:  # type: ignore[override]
        host = self.client_key(addr)
        if len(self._hosts) >= self.max_connections:
            self._refuse(host, f"{self.max_connections} connections in total")
            return None
        if self.per_address[host] >= self.max_per_address:
            self._refuse(host, f"{self.max_per_address} connections from {host}")
            return None
        protocol: TLSMemoryBIOProtocol = super().buildProtocol(addr)
        self._hosts[protocol] = host
        self.per_address[host] += 1
        return protocol

    def client_key(self, addr: IAddress) -> str:
        """
        Who C{addr} is for the limit per client: its L{client_key}; UNIX
        sockets and the like share one count.
        """
        host = peer_host(addr)
        if host is None:
            return "local"
        return client_key(host, self.ipv6_prefix, self.ipv4_prefix)

    def unregisterProtocol(self, protocol: Any) -> None:
        super().unregisterProtocol(protocol)
        host = self._hosts.pop(protocol, None)
        if host is not None:
            self.per_address[host] -= 1
            if not self.per_address[host]:
                del self.per_address[host]

    def _refuse(self, host: str, limit: str) -> None:
        if self._report is None:
            self.log.warn(
                "refusing connections from {host}: at the limit of {limit}",
                host=host,
                limit=limit,
            )
            self._report = self._clock.callLater(
                REFUSAL_LOG_INTERVAL, self._report_refusals
            )
        else:
            self._refused_since_report += 1

    def _report_refusals(self) -> None:
        refused, self._refused_since_report = self._refused_since_report, 0
        if refused:
            self.log.warn(
                "refused {count} more connections in the last {seconds:g} s"
                " (at the connection limits)",
                count=refused,
                seconds=REFUSAL_LOG_INTERVAL,
            )
            self._report = self._clock.callLater(
                REFUSAL_LOG_INTERVAL, self._report_refusals
            )
        else:
            self._report = None

    def doStop(self) -> None:
        if self._report is not None and self._report.active():
            self._report.cancel()
        self._report = None
        super().doStop()


@implementer(IStreamServerEndpoint)
class GuardedTLSServerEndpoint:
    """
    Listens on a plain endpoint and speaks TLS, with connection limits.
    """

    def __init__(
        self,
        wrapped: IStreamServerEndpoint,
        creator: IOpenSSLServerConnectionCreator,
        clock: IReactorTime,
        *,
        max_connections: int,
        max_per_address: int,
        ipv6_prefix: int = 64,
        ipv4_prefix: int = 32,
    ) -> None:
        self.wrapped = wrapped
        self.creator = creator
        self.clock = clock
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.ipv6_prefix = ipv6_prefix
        self.ipv4_prefix = ipv4_prefix

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        listening: Deferred[IListeningPort] = self.wrapped.listen(
            GuardedTLSFactory(
                self.creator,
                protocolFactory,
                self.clock,
                max_connections=self.max_connections,
                max_per_address=self.max_per_address,
                ipv6_prefix=self.ipv6_prefix,
                ipv4_prefix=self.ipv4_prefix,
            )
        )
        return listening
