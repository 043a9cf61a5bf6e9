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
from securemsg.server.proxy import ProxyHeaderServerEndpoint
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

    C{haproxy:ENDPOINT} listens on C{ENDPOINT} for connections that start
    with a PROXY protocol header (v1 or v2), as a load balancer sends them:
    the client's address in the header is the one the limits, bans and logs
    see (L{securemsg.server.proxy}).  Only such listeners trust the header.

    @param limits: hold at most its C{max_connections} and
        C{max_per_address} connections (per client, as its prefix lengths
        say), and accept new ones from one client at its C{connect_burst}
        and C{connect_rate}, refusing more before any TLS work (L{Limits}'
        defaults if not given).
    @raise TLSConfigError: if C{description} asks for TLS itself, is not a
        valid endpoint, or names a systemd socket that was not passed.
    """
    kind, _, rest = description.partition(":")
    kind = kind.strip().lower()
    if kind in ("ssl", "tls", "txtorcon", "onion", "le", "lets"):
        raise TLSConfigError(
            f"--listen {description!r}: give a plain endpoint such as "
            "tcp:50000; securemsg adds TLS from --cert and --key itself"
        )
    if limits is None:
        limits = Limits()
    # haproxy:ENDPOINT: the PROXY header is read by securemsg's own layer
    # (not Twisted's wrapper), below the connection limits, so that they and
    # everything above see the client's real address (securemsg.server.proxy).
    proxied = kind == "haproxy"
    plain = rest if proxied else description
    try:
        endpoint = serverFromString(reactor, plain)
    except (IndexError, KeyError) as error:
        # Twisted's systemd parser looks the socket up by index or name.
        if plain.split(":", 1)[0].strip().lower() == "systemd":
            raise TLSConfigError(
                f"--listen {description!r}: systemd passed no such socket"
                " (socket activation sets LISTEN_FDS, LISTEN_PID and"
                " LISTEN_FDNAMES; see docs/systemd.md)"
            ) from None
        raise TLSConfigError(
            f"--listen {description!r} is not a valid endpoint: {error}"
        ) from None
    except (ValueError, TypeError, AttributeError) as error:
        raise TLSConfigError(
            f"--listen {description!r} is not a valid endpoint: {error}"
        ) from None
    if proxied:
        endpoint = ProxyHeaderServerEndpoint(
            endpoint, reactor, timeout=limits.handshake_timeout
        )
    return GuardedTLSServerEndpoint(
        endpoint, creator, reactor, limits, description=description
    )
