# -*- test-case-name: tests.test_proxy -*-
"""
The PROXY protocol (v1 and v2), for a server behind a TCP load balancer
(haproxy, a cloud load balancer, stunnel): C{--listen haproxy:tcp:50000}.

The balancer opens its own connection to the server and starts it with a
header that says who the client really is.  L{ProxyHeaderFactory} reads
that header before anything else, then hands the connection, under the
client's address, to the factory it wraps: securemsg's connection guard
(L{securemsg.server.guard.GuardedTLSFactory}), so the limit per address, bans,
C{/whois} and the logs see the client and not the balancer:

    TCP -> PROXY header (this module) -> limits and TLS (guard) -> chat

What needs no address is still refused before the header: a connection
over C{--max-connections} is closed as soon as it is accepted.  A client
over its limit per address is refused as soon as its header is read,
before any TLS work.

Twisted's own L{twisted.protocols.haproxy} wrapper is not used: it hands
the wrapped protocol the connection before the header is read (so a guard
under it counts the balancer's address), and drops a header that arrives in
small pieces.  Its parsers are used for the header itself.

A connection whose first bytes are not a PROXY header, whose header is
malformed or too long, or that sends none within the handshake timeout, is
closed with one log line.  One that closes without sending anything (a
balancer's plain TCP health check) is closed without one.
"""

from __future__ import annotations

import ipaddress
import struct
import typing
from collections import Counter
from typing import Any, Final, runtime_checkable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from securemsg.core.limits import Limits
from securemsg.server.protocol import describe_peer, peer_host

#: The start of a v1 header, and the longest v1 header with its CRLF (the
#: PROXY protocol's own limit).
V1_SIGNATURE: Final = b"PROXY "
V1_MAX_LENGTH: Final = 107
#: The start of a v2 header; its 16 fixed bytes, then as many as it says.
V2_SIGNATURE: Final = V2Parser.PREFIX
V2_FIXED_LENGTH: Final = 16
#: The longest v2 header accepted: the addresses (at most 216 bytes) and
#: room for the TLVs balancers add (a unique id, TLS details, a cloud's
#: connection id).  A longer one is refused rather than buffered.
V2_MAX_LENGTH: Final = V2_FIXED_LENGTH + 1024


class ProxyHeaderError(Exception):
    """A PROXY header that is missing, malformed or too long."""


def parse_header(data: bytes) -> tuple[ProxyInfo, bytes] | None:
    """
    Read a PROXY header (v1 or v2) at the start of C{data}.

    @return: what the header says and the bytes after it; L{None} while
        C{data} may still be the start of a header.
    @raise ProxyHeaderError: if C{data} does not start with a header, or
        starts with a malformed or oversized one.
    """
    if data[:1] == V1_SIGNATURE[:1]:
        return _parse_v1(data)
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    raise ProxyHeaderError("missing (the first bytes are not a PROXY header)")


def _parse_v1(data: bytes) -> tuple[ProxyInfo, bytes] | None:
    if not data.startswith(V1_SIGNATURE[: len(data)]):
        raise ProxyHeaderError("missing (the first bytes are not a PROXY header)")
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyHeaderError(f"oversized (v1, over {V1_MAX_LENGTH} bytes)")
        return None
    line = data[:end]
    try:
        info = V1Parser.parse(line)
        _check_address(info)
    except (InvalidProxyHeader, ValueError, UnicodeDecodeError):
        raise ProxyHeaderError("malformed (v1)") from None
    return info, data[end + 2 :]


def _parse_v2(data: bytes) -> tuple[ProxyInfo, bytes] | None:
    if not data.startswith(V2_SIGNATURE[: len(data)]):
        raise ProxyHeaderError("missing (the first bytes are not a PROXY header)")
    if len(data) < V2_FIXED_LENGTH:
        return None
    length = V2_FIXED_LENGTH + struct.unpack("!H", data[14:16])[0]
    if length > V2_MAX_LENGTH:
        raise ProxyHeaderError(f"oversized (v2, {length} bytes)")
    if len(data) < length:
        return None
    try:
        info = V2Parser.parse(data[:length])
        _check_address(info)
    except (InvalidProxyHeader, ValueError, KeyError, struct.error):
        raise ProxyHeaderError("malformed (v2)") from None
    return info, data[length:]


def _check_address(info: ProxyInfo) -> None:
    # Twisted's v1 parser takes any word for an address; the limits and bans
    # need an IP address.
    host = peer_host(info.source) if info.source is not None else None
    if host is not None:
        ipaddress.ip_address(host)


@implementer(ITransport)
class ProxyHeaderProtocol(ProtocolWrapper):
    """
    One proxied connection: reads the PROXY header, then asks the wrapped
    factory for a protocol under the client's address, and is its
    transport, showing the client's address as the peer (and the address
    the client connected to as the host).
    """

    factory: ProxyHeaderFactory
    log = Logger()

    def __init__(self, factory: ProxyHeaderFactory) -> None:
        # No wrapped protocol until the header says whose connection it is.
        super().__init__(factory, None)  # type: ignore[arg-type]
        self._buffer = b""
        self._info: ProxyInfo | None = None
        self._timer: IDelayedCall | None = None
        self._pending = True

    def logPrefix(self) -> str:
        """
        The log system of the connection, fixed when it is accepted (before
        there is a wrapped protocol to name).
        """
        return f"{type(self.factory.wrappedFactory).__name__} (PROXY)"

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._timer = self.factory.clock.callLater(
            self.factory.timeout, self._timed_out
        )

    def dataReceived(self, data: bytes) -> None:
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if not self._pending:
            return
        self._buffer += data
        try:
            parsed = parse_header(self._buffer)
        except ProxyHeaderError as error:
            self._fail(str(error))
            return
        if parsed is None:
            return
        self._info, rest = parsed
        self._buffer = b""
        self._header_done()
        source = self.getPeer()
        wrapped = self.factory.wrappedFactory.buildProtocol(source)
        if wrapped is None:
            # Refused (and logged) by the wrapped factory: over a limit.
            self.transport.abortConnection()
            return
        self.wrappedProtocol = wrapped
        wrapped.makeConnection(self)
        if rest:
            wrapped.dataReceived(rest)

    def _header_done(self) -> None:
        if self._pending:
            self._pending = False
            self.factory.pending -= 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fail(self, problem: str) -> None:
        self._header_done()
        self.factory.count_refusal("proxy_header")
        self.log.info(
            "{peer}: PROXY header {problem}; closing",
            peer=describe_peer(self.transport.getPeer()),  # type: ignore[union-attr]
            problem=problem,
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(f"missing (none within {self.factory.timeout:g} s)")

    def getPeer(self) -> IAddress:
        """The client's address, as the PROXY header gives it."""
        if self._info is not None and self._info.source is not None:
            return self._info.source
        # No header yet, or a LOCAL one (a balancer's own health check).
        return self.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        """The address the client connected to, as the PROXY header gives it."""
        if self._info is not None and self._info.destination is not None:
            return self._info.destination
        return self.transport.getHost()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._pending and self._buffer:
            self._fail("missing (the connection closed in the middle of it)")
        self._header_done()
        self.factory.unregisterProtocol(self)
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.connectionLost(reason)
            self.wrappedProtocol = None  # type: ignore[assignment]


@runtime_checkable
class ConnectionGuard(typing.Protocol):
    """
    What L{ProxyHeaderFactory} uses of the factory it wraps, if it has it
    (L{securemsg.server.guard.GuardedTLSFactory} does): its total limit,
    the connections it holds, and its refusals.
    """

    limits: Limits
    protocols: dict[Any, int]
    refused: Counter[str]

    def refuse(self, host: str, limit: str, reason: str) -> None:
        """Log and count a connection refused over C{limit}."""


class ProxyHeaderFactory(WrappingFactory):
    """
    Reads the PROXY header of each connection before C{wrappedFactory}
    sees it (see L{ProxyHeaderProtocol}).

    @ivar pending: connections whose header has not been read yet; they
        count towards the wrapped factory's C{max_connections}.
    """

    protocol = ProxyHeaderProtocol
    log = Logger()

    def __init__(
        self, wrappedFactory: IProtocolFactory, clock: IReactorTime, timeout: float
    ) -> None:
        """
        @param wrappedFactory: builds the protocol for each connection once
            its header is read, given the client's address; L{None} refuses
            it.  If it is a L{ConnectionGuard}, connections over its
            C{limits.max_connections} are refused before their header.
        @param timeout: seconds a connection may take to send its header.
        """
        super().__init__(wrappedFactory)
        self.clock = clock
        self.timeout = timeout
        self.pending = 0
        # Told once: a runtime-checkable Protocol's isinstance probes each of
        # its members, too much for every connection.
        self._guard = (
            wrappedFactory if isinstance(wrappedFactory, ConnectionGuard) else None
        )

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:  # type: ignore[override]
        guard = self._guard
        if guard is not None:
            limit = guard.limits.max_connections
            if len(guard.protocols) + self.pending >= limit:
                # Needs no real address: refused before the header is read.
                guard.refuse(
                    describe_peer(addr),
                    f"{limit} connections in total",
                    "max_connections",
                )
                return None
        self.pending += 1
        return ProxyHeaderProtocol(self)

    def count_refusal(self, reason: str) -> None:
        """Count a connection refused here in the wrapped factory's refusals."""
        if self._guard is not None:
            self._guard.refused[reason] += 1


@implementer(IStreamServerEndpoint)
class ProxyHeaderServerEndpoint:
    """
    Listens on C{wrapped} for connections that start with a PROXY header
    (L{ProxyHeaderFactory}).
    """

    def __init__(
        self, wrapped: IStreamServerEndpoint, clock: IReactorTime, *, timeout: float
    ) -> None:
        self.wrapped = wrapped
        self.clock = clock
        self.timeout = timeout

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        listening: Deferred[IListeningPort] = self.wrapped.listen(
            ProxyHeaderFactory(protocolFactory, self.clock, self.timeout)
        )
        return listening
