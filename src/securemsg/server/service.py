# -*- test-case-name: tests.test_tap -*-
"""
The running server as a Twisted service: listening on its endpoints and
reporting what it serves with.
"""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable, Sequence
from functools import partial
from types import FrameType
from typing import Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from securemsg.core.limits import Limits
from securemsg.server.protocol import describe_peer
from securemsg.tls import certs
from securemsg.tls.policy import ServerCredentials

#: File descriptors kept free beyond one per connection (listening sockets,
#: log files, certificate reloads).
OPEN_FILES_HEADROOM: Final = 64


class ListenError(Exception):
    """An endpoint could not be listened on; the message says which and why."""


class ChatService(Service):
    """
    Listens with one factory on several endpoints, and logs the certificate
    it serves with.

    Listening happens in L{listen}, which C{privilegedStartService} calls
    unless it was called before (as C{twistd securemsg} does, to report a
    port in use before it starts logging), so that a port below 1024 can be
    bound before twistd drops privileges.  An endpoint that cannot be
    listened on stops start-up with L{ListenError} instead of leaving a
    server that listens nowhere.
    """

    log = Logger()

    def __init__(
        self,
        factory: Factory,
        endpoints: Sequence[tuple[str, IStreamServerEndpoint]],
        credentials: ServerCredentials | None = None,
    ) -> None:
        """
        @param endpoints: pairs of (description for the log, endpoint).
        @param credentials: the certificate and key, to report at start.
        """
        self.factory = factory
        self.endpoints = list(endpoints)
        self.credentials = credentials
        self.ports: list[IListeningPort] = []
        self._listening = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.listen()

    def startService(self) -> None:
        super().startService()
        self.listen()
        if self.credentials is not None:
            self._report_credentials(self.credentials)

    def listen(self) -> None:
        """
        Listen on every endpoint, unless this was done already.

        @raise ListenError: if an endpoint that answers at once cannot be
            listened on.
        """
        if self._listening:
            return
        self._listening = True
        limits: Limits | None = getattr(self.factory, "limits", None)
        if limits is not None:
            self._raise_open_file_limit(limits.max_connections)
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
                raise ListenError(
                    f"cannot listen on {description}: {failures[0].getErrorMessage()}"
                )

    def _raise_open_file_limit(self, connections: int) -> None:
        # Each connection is a file descriptor; the usual soft limit of 1024
        # would refuse connections long before --max-connections.
        needed = connections + OPEN_FILES_HEADROOM
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
                connections=connections,
            )

    def _listening_on(self, port: IListeningPort) -> None:
        self.ports.append(port)
        self.log.info(
            "securemsg listening on {address}", address=describe_peer(port.getHost())
        )

    def _listen_failed_later(self, failure: Failure, description: str) -> None:
        self.log.critical(
            "cannot listen on {description}: {reason}",
            description=description,
            reason=failure.getErrorMessage(),
        )

    def _report_credentials(self, credentials: ServerCredentials) -> None:
        self.log.info(
            "certificate: {description}",
            description=certs.describe_certificate(credentials.certificate),
        )

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, then close every client connection cleanly: each
        client is told the server is stopping, gets what is queued for it
        and a TLS close_notify, within the shutdown grace.
        """
        super().stopService()
        ports, self.ports = self.ports, []
        self._listening = False
        stopped = gatherResults([maybeDeferred(port.stopListening) for port in ports])
        shut_down = getattr(self.factory, "shut_down", None)
        if shut_down is not None:
            stopped.addCallback(lambda _: shut_down())
        chat = getattr(self.factory, "chat", None)
        if chat is not None:
            # Write what is still pending to the history database.
            stopped.addCallback(lambda _: chat.history.close())
        return stopped.addCallback(lambda _: None)


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
