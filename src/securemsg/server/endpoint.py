# -*- test-case-name: tests.test_tls -*-
"""
The server's listening endpoint: a plain transport endpoint wrapped in
securemsg's TLS (L{securemsg.tls.policy}) by L{GuardedTLSServerEndpoint},
which counts and rate-limits connections before any TLS work.
"""

from __future__ import annotations

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IReactorTime,
    IStreamServerEndpoint,
)

from securemsg.core.limits import Limits
from securemsg.server.guard import GuardedTLSServerEndpoint
from securemsg.tls.policy import TLSConfigError


def tls_server_endpoint(
    reactor: IReactorTime,
    description: str,
    creator: IOpenSSLServerConnectionCreator,
    limits: Limits | None = None,
) -> IStreamServerEndpoint:
    """
    An endpoint that listens on C{description} (a plain transport endpoint
    such as C{tcp:50000:interface=::}) and speaks TLS made by C{creator}.

    @param limits: hold at most its C{max_connections} and
        C{max_per_address} connections (per client, as its prefix lengths
        say), and accept new ones from one client at its C{connect_burst}
        and C{connect_rate}, refusing more before any TLS work (L{Limits}'
        defaults if not given).
    @raise TLSConfigError: if C{description} asks for TLS itself.
    """
    kind = description.split(":", 1)[0].strip().lower()
    if kind in ("ssl", "tls", "txtorcon", "onion", "le", "lets"):
        raise TLSConfigError(
            f"--listen {description!r}: give a plain endpoint such as "
            "tcp:50000; securemsg adds TLS from --cert and --key itself"
        )
    try:
        endpoint = serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError) as error:
        raise TLSConfigError(
            f"--listen {description!r} is not a valid endpoint: {error}"
        ) from None
    if limits is None:
        limits = Limits()
    return GuardedTLSServerEndpoint(
        endpoint,
        creator,
        reactor,
        max_connections=limits.max_connections,
        max_per_address=limits.max_per_address,
        ipv6_prefix=limits.ipv6_prefix,
        ipv4_prefix=limits.ipv4_prefix,
        connect_burst=limits.connect_burst,
        connect_rate=limits.connect_rate,
    )
