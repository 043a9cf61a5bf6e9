# -*- test-case-name: tests.test_cluster_redis -*-
"""
The pieces C{twistd securemsg} adds for C{--cluster} and C{--reuse-port}:
the service that runs a node, and a reactor that listens with
C{SO_REUSEPORT}.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError

from securemsg.cluster.config import ClusterError, RedisConfig
from securemsg.cluster.interface import IClusterLink
from securemsg.cluster.node import ClusterNode

try:
    from twisted.internet.tcp import makeBinding
except ImportError:  # Twisted before 26.10: the socket is made by hand.
    makeBinding = None  # type: ignore[assignment]  # noqa: N816

#: Whether this Twisted sets SO_REUSEPORT itself (26.10 and later).
TWISTED_REUSES_PORTS = makeBinding is not None


class ClusterService(Service):
    """
    Runs a L{ClusterNode}: reaches the other nodes when started; says
    goodbye and closes its link when stopped (after the chat's listeners,
    so that its users' departures are sent first).
    """

    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def startService(self) -> None:
        super().startService()
        self.node.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.node.stop()
        return maybeDeferred(self.node.link.stop)


class ReusePortReactor:
    """
    A reactor whose C{listenTCP} sets C{SO_REUSEPORT} (Twisted's
    C{tcp.makeBinding} since 26.10, a socket made by hand before), so that
    several securemsg processes share one port and the kernel spreads new
    connections among them.  Everything else is the wrapped reactor's.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        if TWISTED_REUSES_PORTS:
            binding = makeBinding(interface, port, reuseAddress=True, reusePort=True)
            return self._reactor.listenTCP(binding, factory, backlog, interface)
        return self._adopt(port, factory, backlog, interface)

    def _adopt(self, port: int, factory: Any, backlog: int, interface: str) -> Any:
        """
        Listen as C{listenTCP} would, on a socket made here with
        C{SO_REUSEPORT} and handed to the reactor (C{adoptStreamPort}, as
        C{IReactorSocket}'s docstring shows): Twisted before 26.10 cannot
        set the option itself.
        """
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        try:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listening.bind((interface, port))
            listening.listen(backlog)
            listening.setblocking(False)
            return self._reactor.adoptStreamPort(listening.fileno(), family, factory)
        except OSError as error:
            raise CannotListenError(interface, port, error) from None
        finally:
            # The reactor listens on a duplicate of the descriptor.
            listening.close()


def make_link(reactor: Any, config: RedisConfig) -> IClusterLink:
    """
    The link to the other nodes of the cluster C{config} describes.

    @raise ClusterError: if txredisapi is not installed.
    """
    try:
        from securemsg.cluster.redis import RedisLink
    except ImportError:
        raise ClusterError(
            "--cluster needs txredisapi: pip install 'securemsg[cluster]'"
        ) from None
    return RedisLink(reactor, config)
