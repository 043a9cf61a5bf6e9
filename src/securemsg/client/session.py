# -*- test-case-name: tests.test_session -*-
"""
The session of C{securemsg chat}: a L{ChatSession} connects (and, with
C{--reconnect}, reconnects), sends the user's lines and hands the server's
events to a L{FrontEnd}: L{securemsg.client.pipe.PipeFrontEnd} for scripts or
L{securemsg.client.terminal.TerminalFrontEnd} for people.  The command line
that starts it is L{securemsg.admin.chat}.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final, Protocol

from OpenSSL import SSL
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from securemsg.client.api import (
    DEFAULT_PORT,
    ChatClient,
    ChatClientProtocol,
    ClientError,
    ProtocolError,
    VerificationFailed,
    connect,
)
from securemsg.client.trust import ServerVerifier, TrustError
from securemsg.protocol import wire

#: Exit statuses of C{securemsg chat} (documented in the README).
EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_UNVERIFIED: Final = 4
EXIT_SERVER_CLOSED: Final = 5

#: How long a clean close may take before the client gives up waiting.
CLOSE_TIMEOUT: Final = 5.0


class FrontEnd(Protocol):
    """What a L{ChatSession} needs from whatever the user sees."""

    def start(self, session: ChatSession) -> None:
        """Begin reading the user's lines and give them to C{session}."""

    def show(self, event: wire.Event) -> None:
        """Show one event from the server."""

    def status(self, text: str) -> None:
        """Show a diagnostic (connection problems, reconnecting, ...)."""

    def sent(self, line: str, name: str | None) -> None:
        """The user's own line C{line} went to the server as C{name}."""

    def stop(self) -> Deferred[None]:
        """Stop reading, flush what is shown; fires when done."""


class ChatSession:
    """
    One run of C{securemsg chat}: the connection (or connections, with
    C{reconnect}), the user's pending lines, and the exit status.

    @ivar done: fires with the exit status when the session is over.
    """

    def __init__(
        self,
        reactor: Any,
        front: FrontEnd,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        ca: str | None = None,
        pin: str | None = None,
        client_certificate: Any = None,
        name: str | None = None,
        reconnect: bool = False,
        retry_policy: Callable[[int], float] | None = None,
        learn_name: bool = False,
        allow_expired: bool = False,
    ) -> None:
        """
        @param allow_expired: with C{pin}, accept the pinned certificate
            after its expiry date, with a warning (see L{connect}).
        @param learn_name: without C{name}, ask the server for the guest
            name it gave us (for a prompt that shows it).
        @param retry_policy: with C{reconnect}, how long to wait before each
            attempt (see L{ClientService}); by default a backoff from one
            second up to thirty.
        """
        self.reactor = reactor
        self.front = front
        self.host, self.port = host, port
        self.ca, self.pin = ca, pin
        self.allow_expired = allow_expired
        self.client_certificate = client_certificate
        self.name = name
        self.reconnect = reconnect
        self.learn_name = learn_name
        self.retry_policy = retry_policy or backoffPolicy(
            initialDelay=1.0, maxDelay=30.0
        )
        self.done: Deferred[int] = Deferred()
        self.client: ChatClient | None = None
        self._pending: list[str] = []
        self._finishing = False
        self._quit_message = ""
        self._service: ClientService | None = None

    # Starting

    def start(self) -> Deferred[int]:
        """Connect, and start the front end; returns L{done}."""
        self.front.start(self)
        try:
            self._connect()
        except TrustError as error:
            self.front.status(str(error))
            self._end(EXIT_USAGE)
        return self.done

    def _connect(self) -> None:
        if self.reconnect:
            self._start_service()
        else:
            connecting = connect(
                self.reactor,
                self.host,
                self.port,
                ca=self.ca,
                pin=self.pin,
                client_certificate=self.client_certificate,
                on_event=self._event,
                json=False,
                allow_expired=self.allow_expired,
            )
            connecting.addCallbacks(self._connected, self._not_connected)

    def _start_service(self) -> None:
        verifier = ServerVerifier(
            self.host,
            ca_path=self.ca,
            pin=self.pin,
            client_certificate=self.client_certificate,
            allow_expired=self.allow_expired,
        )
        endpoint = wrapClientTLS(
            verifier, HostnameEndpoint(self.reactor, self.host, self.port)
        )

        # No prepareConnection waiting for the handshake: ClientService has
        # no transition for a connection lost while it is being prepared (a
        # refused certificate), and logs NoTransition as an unhandled error,
        # a traceback on stderr.  So the service sees a connection once TCP
        # is up, and failed handshakes are added to its attempt count here,
        # to keep the delay growing.
        failed_handshakes = 0

        def handshake_done(client: ChatClient) -> None:
            nonlocal failed_handshakes
            failed_handshakes = 0
            client.verification = verifier.report
            self._connected(client)

        def handshake_failed(reason: Failure) -> None:
            nonlocal failed_handshakes
            report = verifier.report
            if report.problem is not None:
                # Not a network fault: trying again gets the same
                # certificate, so stop as without --reconnect.
                refused = VerificationFailed(report.problem, report.fingerprint)
                self.front.status(f"server not verified: {refused}")
                self._end(EXIT_UNVERIFIED)
                return
            failed_handshakes += 1
            problem = reason.getErrorMessage()
            self.front.status(f"cannot connect: {problem}; retrying")

        def build() -> ChatClientProtocol:
            client = ChatClient(self._event, self.reactor)
            client.ready.addCallbacks(handshake_done, handshake_failed)
            return ChatClientProtocol(client)

        self._service = ClientService(
            endpoint,
            Factory.forProtocol(build),
            retryPolicy=lambda attempt: self.retry_policy(attempt + failed_handshakes),
            clock=self.reactor,
        )
        self._service.startService()

    def _connected(self, client: ChatClient) -> ChatClient:
        if self.done.called:
            client.close()  # The user gave up while we were connecting.
            return client
        self.client = client
        client.closed.addCallback(self._closed)
        if client.verification is not None and client.verification.warning:
            self.front.status(f"warning: {client.verification.warning}")
        if self.name is not None:
            client.nick(self.name)
        elif self.learn_name:
            client.whoami()
        pending, self._pending = self._pending, []
        for line in pending:
            self._send(client, line)
        if self._finishing:
            self._close_client()
        return client

    def _not_connected(self, reason: Failure) -> None:
        error = reason.value
        if isinstance(error, VerificationFailed):
            self.front.status(f"server not verified: {error}")
            self._end(EXIT_UNVERIFIED)
        elif isinstance(error, ClientError):
            self.front.status(f"cannot connect to {self._address()}: {error}")
            self._end(EXIT_UNREACHABLE)
        else:
            self.front.status(f"cannot connect: {reason.getErrorMessage()}")
            self._end(EXIT_ERROR)

    def _closed(self, reason: BaseException) -> None:
        self.client = None
        if self._finishing:
            self._end(EXIT_OK)
        elif self.reconnect:
            self.front.status("connection lost; reconnecting")
        else:
            self.front.status(_describe_close(reason))
            broken = isinstance(reason, ProtocolError)
            self._end(EXIT_ERROR if broken else EXIT_SERVER_CLOSED)

    def _address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # Events from the server

    def _event(self, event: wire.Event) -> None:
        if (
            isinstance(event, wire.Notice)
            and self.client is not None
            and self.client.name is not None
        ):
            # Keep the confirmed name, to rejoin with it after a reconnect.
            self.name = self.client.name
        self.front.show(event)

    # The user

    def send_line(self, line: str) -> None:
        """
        Send one line the user typed: chat text, or a C{/command}.  Until a
        connection is up, lines wait; none is dropped.
        """
        if not line.strip():
            return
        verb, _, rest = line.partition(" ")
        if verb.lower() == "/quit":
            self._quit_message = rest.strip()
            self.finish()
            return
        if self.client is None:
            self._pending.append(line)
        else:
            self._send(self.client, line)

    def _send(self, client: ChatClient, line: str) -> None:
        client.command(line)
        if not line.startswith("/") or line.startswith("//"):
            self.front.sent(line[1:] if line.startswith("//") else line, client.name)
        elif line.lower().startswith("/me "):
            self.front.sent(line, client.name)

    @property
    def finishing(self) -> bool:
        """
        Whether the user is done (L{finish} or L{interrupt} was called): a
        front end asks for no more lines then.
        """
        return self._finishing

    def finish(self) -> None:
        """
        The user is done (end of input, Ctrl-D, /quit): send what is
        pending, close cleanly, and end.  Lines typed before the connection
        is up are still delivered once it is.
        """
        if self._finishing:
            return
        self._finishing = True
        if self.client is not None:
            self._close_client()
        elif not self._pending and self.reconnect:
            self._end(EXIT_OK)
        # Otherwise still connecting: _connected or _not_connected ends it.

    def interrupt(self) -> None:
        """
        The user wants out now (Ctrl-C, SIGTERM): close cleanly if connected,
        and end without waiting for a connection.
        """
        self._finishing = True
        if self.client is not None:
            self._close_client()
        else:
            self._end(EXIT_OK)

    def _close_client(self) -> None:
        client = self.client
        if client is None:
            return
        # The reconnecting service is stopped only once this connection has
        # closed (in _end): stopping it now would drop the connection before
        # the server has our /quit.
        client.close(self._quit_message)
        # A server that never closes its end does not keep us here.
        timeout = self.reactor.callLater(CLOSE_TIMEOUT, self._end, EXIT_OK)
        client.closed.addBoth(lambda result: timeout.active() and timeout.cancel())

    def _end(self, status: int) -> None:
        if self.done.called:
            return
        if self._service is not None:
            self._service.stopService()
        stopping = self.front.stop()
        stopping.addBoth(lambda _: self.done.callback(status))


def _describe_close(reason: BaseException) -> str:
    """
    Why the server's connection ended, in one line.  A TLS alert from the
    server (for instance "certificate revoked" when it refuses our client
    certificate, which TLS 1.3 reports only after the handshake) is named.
    """
    if isinstance(reason, ConnectionDone):
        return "server closed the connection"
    if isinstance(reason, ProtocolError):
        return f"connection closed: {reason}"
    if isinstance(reason, SSL.Error):
        alerts = [
            re.sub(r"^(sslv3|tlsv1\d?|tls) alert ", "", str(detail[-1]))
            for detail in (reason.args[0] if reason.args else [])
            if isinstance(detail, tuple) and detail
        ]
        if alerts:
            return f"server closed the connection: {'; '.join(alerts)}"
    return "server connection lost"


__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_SERVER_CLOSED",
    "EXIT_UNREACHABLE",
    "EXIT_UNVERIFIED",
    "EXIT_USAGE",
    "ChatSession",
    "FrontEnd",
]
