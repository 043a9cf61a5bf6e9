# -*- test-case-name: tests.test_guard -*-
"""
Connection limits, applied before any TLS work is done.

L{GuardedTLSFactory} is Twisted's L{TLSMemoryBIOFactory} with a count of
the connections it holds, in total and per IP address, and a token bucket
of new connections per IP address (a client that connects and closes over
and over costs a handshake and a greeting each time).  A connection over a
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
from securemsg.flood import TokenBucket
from securemsg.limits import Limits
from securemsg.server import peer_host

#: Refusals after the first in a burst are summed up in one line this often.
REFUSAL_LOG_INTERVAL: Final = 10.0

#: Addresses whose connection buckets are kept before the full ones are
#: forgotten.
_FORGET_AT: Final = 1024

_DEFAULTS: Final = Limits()


class GuardedTLSFactory(TLSMemoryBIOFactory):
    """
    Adds TLS to C{wrappedFactory}'s connections, holding at most
    C{max_connections} at once, and C{max_per_address} from one address;
    one address may open C{connect_burst} connections at once, then
    C{connect_rate} a second.
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
        connect_burst: int = _DEFAULTS.connect_burst,
        connect_rate: float = _DEFAULTS.connect_rate,
    ) -> None:
        super().__init__(creator, False, wrappedFactory, clock)
        self._clock = clock
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.connect_burst = connect_burst
        self.connect_rate = connect_rate
        # New connections per address; an address whose bucket is full
        # again is forgotten (see _connect_allowed).
        self._connects: dict[str, TokenBucket] = {}
        self._forget_at = _FORGET_AT
        self.per_address: Counter[str] = Counter()
        self._hosts: dict[TLSMemoryBIOProtocol, str] = {}
        self._refused_since_report = 0
        self._report: IDelayedCall | None = None

    def buildProtocol(self, addr: IAddress) -> TLSMemoryBIOProtocol | None:  # type: ignore[override]
        # UNIX sockets and the like share one count.
        host = peer_host(addr) or "local"
        if len(self._hosts) >= self.max_connections:
            self._refuse(host, f"{self.max_connections} connections in total")
            return None
        if self.per_address[host] >= self.max_per_address:
            self._refuse(host, f"{self.max_per_address} connections from {host}")
            return None
        if not self._connect_allowed(host):
            self._refuse(
                host,
                f"{self.connect_rate:g} new connections a second from {host}"
                f" (bursts of {self.connect_burst})",
            )
            return None
        protocol: TLSMemoryBIOProtocol = super().buildProtocol(addr)
        self._hosts[protocol] = host
        self.per_address[host] += 1
        return protocol

    def _connect_allowed(self, host: str) -> bool:
        """Take a token from C{host}'s bucket of new connections."""
        bucket = self._connects.get(host)
        if bucket is None:
            if len(self._connects) >= self._forget_at:
                # A full bucket is as good as none: forget those, so that
                # the table holds only addresses seen lately (amortised:
                # this runs once the table has doubled).
                self._connects = {
                    h: b for h, b in self._connects.items() if not b.full()
                }
                self._forget_at = max(_FORGET_AT, 2 * len(self._connects))
            bucket = self._connects[host] = TokenBucket(
                self._clock, self.connect_burst, self.connect_rate
            )
        return bucket.allow()

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
        connect_burst: int = _DEFAULTS.connect_burst,
        connect_rate: float = _DEFAULTS.connect_rate,
    ) -> None:
        self.wrapped = wrapped
        self.creator = creator
        self.clock = clock
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.connect_burst = connect_burst
        self.connect_rate = connect_rate

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        listening: Deferred[IListeningPort] = self.wrapped.listen(
            GuardedTLSFactory(
                self.creator,
                protocolFactory,
                self.clock,
                max_connections=self.max_connections,
                max_per_address=self.max_per_address,
                connect_burst=self.connect_burst,
                connect_rate=self.connect_rate,
            )
        )
        return listening
