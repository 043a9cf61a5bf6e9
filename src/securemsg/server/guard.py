# -*- test-case-name: tests.test_protections -*-
"""
Connection limits, applied before any TLS work is done.

L{GuardedTLSFactory} is Twisted's L{TLSMemoryBIOFactory} with a count of
the connections it holds, in total and per client (an IPv4 address, an
IPv6 /64: see L{securemsg.core.limits.client_key}), and a token bucket of new
connections per client (a client that connects and closes over and over
costs a handshake and a greeting each time).  A connection over a
limit gets no protocol at all, so the reactor closes it at once: it costs
no handshake.  Refusals are logged once per burst, not once per connection.

A connection within the limits whose first bytes are not TLS (C{nc},
C{telnet}, a browser) is told in one plain line how to connect, and closed
(L{TLSOnlyProtocol}).
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
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from securemsg.core.flood import TokenBucket
from securemsg.core.limits import Limits
from securemsg.server.counters import ServerCounters
from securemsg.server.protocol import peer_host
from securemsg.server.tlsserver import TLSServerProtocol

#: Refusals after the first in a burst are summed up in one line this often.
REFUSAL_LOG_INTERVAL: Final = 10.0

# A TLS client's first record is a handshake (content type 22) of a TLS
# version (major version 3: SSL 3.0 to TLS 1.3).
_HANDSHAKE: Final = 0x16
_VERSION_MAJOR: Final = 0x03

# The first word of an HTTP request: a browser (or curl) pointed at the port.
_HTTP_METHODS: Final = frozenset(
    b"GET HEAD POST PUT DELETE OPTIONS PATCH CONNECT TRACE".split()
)


class NotTLSError(Exception):
    """A client's first bytes were not TLS: it was told how to connect."""


def how_to_connect(port: int | None) -> str:
    """
    The line a client that does not speak TLS is told: what this is and
    how to connect (with the port it came to, if it has one).
    """
    address = f"HOST:{port}" if port is not None else "HOST"
    return (
        "securemsg: this is a TLS chat server and this connection is not TLS;"
        f" connect with TLS, e.g.: securemsg chat {address}"
        f" or openssl s_client -connect {address}"
    )


def looks_like_tls(data: bytes) -> bool:
    """
    Whether C{data}, the first bytes of a connection, can start a TLS
    ClientHello: a handshake record of TLS's major version.
    """
    return data[0] == _HANDSHAKE and (len(data) < 2 or data[1] == _VERSION_MAJOR)


class TLSOnlyProtocol(TLSServerProtocol):
    """
    The server's TLS layer (L{TLSServerProtocol}), which answers a
    client whose first bytes are not TLS with one plain line saying how to
    connect, then closes; what such a client sends never reaches OpenSSL.

    A plain-text client (C{nc}, C{telnet}) sees that line; a browser or
    C{curl} (an HTTP request) gets it as the body of an HTTP error, since
    they show no answer that is not HTTP.  The wrapped protocol sees the
    connection end with L{NotTLSError}, and logs it as any other.
    """

    # One byte checked on the first read; nothing afterwards.
    _first_read = True

    def dataReceived(self, data: bytes) -> None:
        if self._first_read and data:
            self._first_read = False
            if not looks_like_tls(data):
                # Ends the TLS layer: it takes nothing more.
                self._answer_plain_text(data)
                return
        super().dataReceived(data)

    def _answer_plain_text(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None  # Set by makeConnection.
        port = getattr(transport.getHost(), "port", None)
        line = how_to_connect(port).encode("ascii") + b"\r\n"
        if data.split(b" ", 1)[0] in _HTTP_METHODS:
            line = (
                b"HTTP/1.0 400 Bad Request\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % len(line)
            ) + line
        # OpenSSL is left alone (no bytes went into it, none come out): the
        # TLS connection is over before it began, and the wrapped protocol
        # is told why.
        transport.write(line)
        self.disconnecting = True
        self._tls_over(Failure(NotTLSError("not TLS; told how to connect")))


#: Addresses whose connection buckets are kept before the full ones are
#: forgotten.
_FORGET_AT: Final = 1024

_DEFAULTS: Final = Limits()


class GuardedTLSFactory(TLSMemoryBIOFactory):
    """
    Adds TLS to C{wrappedFactory}'s connections, holding at most the
    limits' C{max_connections} at once, and C{max_per_address} from one
    client (one IPv4 address, or one IPv6 network: see
    L{Limits.client_key}); one client may open C{connect_burst} connections
    at once, then C{connect_rate} a second.
    """

    log = Logger()
    # securemsg's TLS layer, not Twisted's (write-aggregating) one: the chat
    # factory already writes once per connection per reactor turn, and each
    # write's records are sent at once.  And a client that does not speak
    # TLS is told how to connect.
    protocol = TLSOnlyProtocol  # type: ignore[assignment]

    def __init__(
        self,
        creator: IOpenSSLServerConnectionCreator,
        wrappedFactory: IProtocolFactory,
        clock: IReactorTime,
        limits: Limits = _DEFAULTS,
    ) -> None:
        super().__init__(creator, False, wrappedFactory, clock)
        self._clock = clock
        self.limits = limits
        # New connections per address; an address whose bucket is full
        # again is forgotten (see _connect_allowed).
        self._connects: dict[str, TokenBucket] = {}
        self._forget_at = _FORGET_AT
        self.per_address: Counter[str] = Counter()
        #: Connections refused, by reason (for the metrics).
        self.refused: Counter[str] = Counter()
        self._hosts: dict[TLSServerProtocol, str] = {}
        self._refused_since_report = 0
        self._report: IDelayedCall | None = None

    def buildProtocol(self, addr: IAddress) -> TLSServerProtocol | None:  # type: ignore[override]
        host = self.client_key(addr)
        limits = self.limits
        if len(self._hosts) >= limits.max_connections:
            self.refuse(
                host,
                f"{limits.max_connections} connections in total",
                "max_connections",
            )
            return None
        if self.per_address[host] >= limits.max_per_address:
            self.refuse(
                host,
                f"{limits.max_per_address} connections from {host}",
                "max_per_address",
            )
            return None
        if not self._connect_allowed(host):
            self.refuse(
                host,
                f"{limits.connect_rate:g} new connections a second from {host}"
                f" (bursts of {limits.connect_burst})",
                "connect_rate",
            )
            return None
        protocol: TLSServerProtocol = super().buildProtocol(addr)  # type: ignore[assignment]
        self._hosts[protocol] = host
        self.per_address[host] += 1
        return protocol

    def client_key(self, addr: IAddress) -> str:
        """
        Who C{addr} is for the limit per client: L{Limits.client_key}; UNIX
        sockets and the like share one count.
        """
        host = peer_host(addr)
        if host is None:
            return "local"
        return self.limits.client_key(host)

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
                self._clock, self.limits.connect_burst, self.limits.connect_rate
            )
        return bucket.allow()

    def unregisterProtocol(self, protocol: Any) -> None:
        super().unregisterProtocol(protocol)
        host = self._hosts.pop(protocol, None)
        if host is not None:
            self.per_address[host] -= 1
            if not self.per_address[host]:
                del self.per_address[host]

    def refuse(self, host: str, limit: str, reason: str) -> None:
        """
        Count a connection from C{host} refused at C{limit} (for the log)
        under C{reason} (for the metrics), and log it once per burst.
        """
        self.refused[reason] += 1
        self._refuse(host, limit)

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
        limits: Limits = _DEFAULTS,
        *,
        description: str | None = None,
    ) -> None:
        """
        @param limits: the connection limits (see L{GuardedTLSFactory}).
        @param description: what the listener is called in the metrics (its
            C{--listen} description).
        """
        self.wrapped = wrapped
        self.description = description
        self.creator = creator
        self.clock = clock
        self.limits = limits

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        guard = GuardedTLSFactory(
            self.creator, protocolFactory, self.clock, self.limits
        )
        # The chat factory's counters (securemsg.counters) read the open
        # connections and refusals of each listener when scraped.
        counters = getattr(protocolFactory, "counters", None)
        if isinstance(counters, ServerCounters):
            counters.add_listener(self.description or "listener", guard)
        listening: Deferred[IListeningPort] = self.wrapped.listen(guard)
        return listening
