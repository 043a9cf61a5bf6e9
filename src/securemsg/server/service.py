# -*- test-case-name: tests.test_tap -*-
"""
The running server as Twisted services, each with one job, composed by
L{securemsg.tap.make_service} in an L{OrderedMultiService}: it starts them
in the order they were added and stops them in reverse, each after the one
added after it has stopped.  So adding the history, then the shutdown of
the clients, then the listeners gives the order of stopping: stop
listening, then close the clients' connections, then close the history.
"""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable, Sequence
from functools import partial
from types import FrameType
from typing import Final

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from securemsg.core.history import HistoryStore
from securemsg.server.factory import ChatServerFactory
from securemsg.server.protocol import describe_peer
from securemsg.tls import certs
from securemsg.tls.policy import ServerCredentials

#: File descriptors kept free beyond one per connection (listening sockets,
#: log files, certificate reloads).
OPEN_FILES_HEADROOM: Final = 64


class ListenError(Exception):
    """An endpoint could not be listened on; the message says which and why."""


class OrderedMultiService(MultiService):
    """
    A L{MultiService} whose children stop one after the other, in reverse
    order of adding, each once the one added after it has stopped.

    L{MultiService} calls every child's C{stopService} at once, in reverse
    order, without waiting for the Deferreds they return: the history
    would be closed while the clients' connections are still closing
    (within the shutdown grace), with lines still arriving.
    """

    log = Logger()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        stopped: Deferred[None] = succeed(None)
        for service in reversed(list(self)):
            stopped.addCallback(self._stop, service)
        return stopped

    def _stop(self, _: object, service: IService) -> Deferred[None]:
        stopping: Deferred[None] = maybeDeferred(service.stopService)
        # One child that fails to stop must not keep the others running.
        stopping.addErrback(
            lambda failure: self.log.failure(
                "stopping {service}", failure, service=service.name
            )
        )
        return stopping


class ListenerService(Service):
    """
    Listens with one factory on one or more endpoints: the chat's, the web
    page's, the metrics'.

    Listening happens in L{listen}, which C{privilegedStartService} calls
    unless it was called before (as C{twistd securemsg} does, to report a
    port in use before it starts logging), so that a port below 1024 can be
    bound before twistd drops privileges.  An endpoint that cannot be
    listened on stops start-up with L{ListenError} instead of leaving a
    server that listens nowhere.  Stopping stops listening.

    @ivar ports: the ports listened on now.
    """

    log = Logger()

    def __init__(
        self,
        factory: IProtocolFactory,
        endpoints: Sequence[tuple[str, IStreamServerEndpoint]],
        *,
        announce: str = "securemsg listening on {address}",
        failure: str = "cannot listen on {description}",
    ) -> None:
        """
        @param endpoints: pairs of (description for the log, endpoint).
        @param announce: the log line for each port listened on, with
            C{{address}}.
        @param failure: the start of the error when an endpoint cannot be
            listened on, with C{{description}}.
        """
        self.factory = factory
        self.endpoints = list(endpoints)
        self.announce = announce
        self.failure = failure
        self.ports: list[IListeningPort] = []
        self._listening = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.listen()

    def startService(self) -> None:
        super().startService()
        self.listen()

    def listen(self) -> None:
        """
        Listen on every endpoint, unless this was done already.

        @raise ListenError: if an endpoint that answers at once cannot be
            listened on.
        """
        if self._listening:
            return
        self._listening = True
        for description, endpoint in self.endpoints:
            listening = endpoint.listen(self.factory)
            listening.addCallback(self._listening_on)
            if not listening.called:
                # An endpoint that answers later can only be reported later.
                listening.addErrback(self._listen_failed_later, description)
                continue
            # Most endpoints (TCP, UNIX) answer at once: a failure stops
            # start-up.
            failures: list[Failure] = []
            listening.addErrback(failures.append)
            if failures:
                problem = self.failure.format(description=description)
                raise ListenError(f"{problem}: {failures[0].getErrorMessage()}")

    def _listening_on(self, port: IListeningPort) -> None:
        self.ports.append(port)
        self.log.info(self.announce, address=describe_peer(port.getHost()))

    def _listen_failed_later(self, failure: Failure, description: str) -> None:
        self.log.critical(
            "{problem}: {reason}",
            problem=self.failure.format(description=description),
            reason=failure.getErrorMessage(),
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        ports, self.ports = self.ports, []
        self._listening = False
        stopped = gatherResults([maybeDeferred(port.stopListening) for port in ports])
        return stopped.addCallback(lambda _: None)


class OpenFileLimitService(Service):
    """
    Raises the limit of open files (C{ulimit -n}) at start to what
    C{connections} connections need, as far as the hard limit allows.

    Each connection is a file descriptor; the usual soft limit of 1024
    would refuse connections long before C{--max-connections}.
    """

    log = Logger()

    def __init__(self, connections: int) -> None:
        self.connections = connections

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        needed = self.connections + OPEN_FILES_HEADROOM
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft >= needed:
            return
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            self.log.warn(
                "only {available} open files allowed (ulimit -n); fewer than"
                " --max-connections {connections} connections can be held",
                available=target,
                connections=self.connections,
            )


class CertificateReportService(Service):
    """
    Logs, at start, the certificate the server serves with, and what is
    wrong with it or its key file.
    """

    log = Logger()

    def __init__(self, credentials: ServerCredentials) -> None:
        self.credentials = credentials

    def startService(self) -> None:
        super().startService()
        credentials = self.credentials
        self.log.info(
            "certificate: {description}",
            description=certs.describe_certificate(credentials.certificate),
        )


class ShutdownService(Service):
    """
    At stop, closes every client connection cleanly: each client is told
    the server is stopping, gets what is queued for it and a TLS
    close_notify, within the shutdown grace
    (L{ChatServerFactory.shut_down}).
    """

    def __init__(self, factory: ChatServerFactory) -> None:
        self.factory = factory

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.factory.shut_down()


class HistoryService(Service):
    """At stop, writes what is still pending to the history and closes it."""

    def __init__(self, history: HistoryStore) -> None:
        self.history = history

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.history.close()


class RepeatedStopSignals(Service):
    """
    Makes a SIGTERM or SIGINT during the shutdown harmless.

    The reactor's handlers call C{reactor.stop} for every signal, and a
    second one while the shutdown waits for clients to close (up to
    C{--shutdown-grace}) raised C{ReactorNotRunning}, logged with a
    traceback.  Once the reactor runs, this wraps its handlers: the first
    signal reaches the reactor as before; a later one, or any once the
    service is stopping, is one log line.  It touches process-wide signal
    handlers, so only C{twistd securemsg} uses it.
    """

    log = Logger()

    def __init__(self, reactor: IReactorCore) -> None:
        self._reactor = reactor
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        # The reactor installs its handlers as it starts running.
        self._reactor.callWhenRunning(self._wrap_handlers)

    def stopService(self) -> None:
        self._stopping = True
        super().stopService()

    def _wrap_handlers(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(number)
            if callable(handler):
                signal.signal(number, partial(self._received, handler))

    def _received(
        self,
        handler: Callable[[int, FrameType | None], object],
        number: int,
        frame: FrameType | None,
    ) -> None:
        if not self._stopping:
            self._stopping = True
            handler(number, frame)
            return
        self.log.info(
            "{signal} again: already shutting down (connections get"
            " --shutdown-grace seconds to close)",
            signal=signal.Signals(number).name,
        )
