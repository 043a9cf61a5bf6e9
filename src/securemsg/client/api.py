# -*- test-case-name: tests.test_client -*-
"""
A securemsg client for programs: connect, send, and receive parsed events.

    from securemsg.client.api import connect

    client = await connect(reactor, "chat.example.org", ca="certificate.pem",
                           on_event=print)
    client.nick("bot")
    client.send("hello")
    await client.close()

Everything the server sends arrives as a L{securemsg.protocol.wire.Event}
(L{Message}, L{Action}, L{PrivateMessage}, L{Notice} or L{Error}), parsed by
the same module the server formats with.

A line from the server may be up to L{MAX_LINE_LENGTH} bytes long; a longer
one ends the connection with a L{ProtocolError}.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import suppress
from dataclasses import fields, replace
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TCPTimedOutError,
    TimeoutError,
    UserError,
)
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from securemsg.client.trust import ServerVerifier, VerificationReport
from securemsg.protocol import jsonwire, wire

DEFAULT_PORT: Final = wire.DEFAULT_PORT

#: The longest line the client takes from a server, in bytes before the LF
#: (a CR before it counts): 4 MiB, four times the most a securemsg server
#: puts on one line (its long replies, such as /history, /rooms and /who,
#: stay well under 1 MiB a line).  Not more: Twisted's LineReceiver searches
#: the whole buffer again for each piece of a line (a TLS record, 16 KiB),
#: so what a line costs grows with its square: about 0.3 s of CPU for 4 MiB,
#: 3 s for 16 MiB.
MAX_LINE_LENGTH: Final = 4 * 1024 * 1024
# Notices that tell a client its own name: after /nick, and after /whoami.
_YOU_ARE: Final = ("you are now ", "you are ")


class ClientError(Exception):
    """A connection could not be made or was refused; one-line message."""


class ConnectionFailed(ClientError):
    """The server could not be reached or the TLS handshake failed."""


class ProtocolError(ClientError):
    """
    The server sent what no securemsg server sends (a line longer than
    L{MAX_LINE_LENGTH}), so the client closed the connection.
    """


class VerificationFailed(ClientError):
    """
    The server's certificate was refused.

    @ivar fingerprint: the fingerprint of the certificate the server showed,
        in C{sha256:} form, so the user can decide to pin it.
    """

    def __init__(self, problem: str, fingerprint: str | None) -> None:
        message = problem
        if fingerprint is not None:
            message += f" (server certificate {fingerprint})"
        super().__init__(message)
        self.problem = problem
        self.fingerprint = fingerprint


EventHandler = Callable[[wire.Event], object]


class ChatClient:
    """
    One connection to a securemsg server, as seen by a program.

    @ivar name: our name on the server as far as we know it (set when the
        server confirms a C{/nick}).
    @ivar on_event: called with each event from the server.
    @ivar closed: fires, when the connection has ended, with the exception
        that says how: L{ConnectionDone} for a clean close, L{ProtocolError}
        when the client closed it because the server broke the protocol.
    @ivar verification: what the check of the server's certificate saw (its
        fingerprint, and a warning if it was accepted all the same), once
        L{connect} has made the connection.
    """

    #: How long L{close} waits for the server to answer C{/quit} by closing
    #: its end, before closing ours anyway.
    close_timeout = 3.0

    def __init__(
        self,
        on_event: EventHandler | None = None,
        clock: IReactorTime | None = None,
        *,
        json: bool = False,
    ) -> None:
        """
        @param on_event: called with each event from the server.
        @param clock: for L{close}'s timeout; without one, L{close} closes at
            once, possibly before the server's last lines arrive.
        @param json: switch the connection to JSON lines on connecting, so
            that events arrive with all their structure (rooms, times, who
            joined where) instead of being read back from text.
        """
        self.clock = clock
        self.json = json
        self._awaiting_format = json
        self.name: str | None = None
        self.on_event: EventHandler = on_event or (lambda event: None)
        self.closed: Deferred[BaseException] = Deferred()
        self.ready: Deferred[ChatClient] = Deferred()
        self.closing = False
        self.verification: VerificationReport | None = None
        self._protocol: ChatClientProtocol | None = None

    # Sending

    def _write_line(self, line: str) -> None:
        if self._protocol is None or self._protocol.transport is None:
            raise ClientError("not connected")
        self._protocol.sendLine(line.encode("utf-8"))

    def send_command(self, command: wire.Command) -> None:
        """Send one command, as a JSON or text line as the connection speaks."""
        if self.json:
            self._write_line(json.dumps(jsonwire.command_to_json(command)))
        else:
            self._write_line(wire.command_to_text(command))

    def send(self, text: str, room: str | None = None) -> None:
        """
        Send chat text to the current room (or to C{room}, one we are in);
        each line of C{text} is one chat line, sent as text even if it
        starts with C{/}.
        """
        for line in text.splitlines():
            if line.strip():
                self.send_command(wire.Say(line, room))

    def command(self, line: str) -> None:
        """
        Send one line as a user would type it, such as C{/who}.

        @raise ClientError: in JSON mode, for a line that is no command.
        """
        first = line.splitlines()[0] if line else ""
        if not self.json:
            self._write_line(first)
            return
        command = wire.parse_command(first)
        if isinstance(command, wire.Invalid):
            raise ClientError(command.problem)
        if command is not None:
            self.send_command(command)

    def private(self, name: str, text: str) -> None:
        """Send C{text} to C{name} only (one line per line of C{text})."""
        for line in text.splitlines():
            if line.strip():
                self.send_command(wire.Private(name, line))

    def action(self, text: str) -> None:
        """
        Send an action, shown to others as C{* yourname text} (the first
        line of C{text}; nothing is sent for blank text, as for L{send}).
        """
        lines = text.splitlines()
        if lines and lines[0].strip():
            self.send_command(wire.Me(lines[0]))

    def nick(self, name: str) -> None:
        """Ask for a new name; the server answers with a notice or an error."""
        self.send_command(wire.Nick(name))

    def whoami(self) -> None:
        """Ask for our own name; the answer sets L{name}."""
        self.send_command(wire.WhoAmI())

    def who(self, room: str | None = None) -> None:
        """Ask who is in a room (the current one by default)."""
        self.send_command(wire.Who(room))

    def join(self, room: str) -> None:
        """Join a room (made if new); plain chat goes there from now on."""
        self.send_command(wire.Join(room))

    def part(self, room: str | None = None) -> None:
        """Leave a room (the current one by default)."""
        self.send_command(wire.Part(room))

    def rooms(self) -> None:
        """Ask for the list of rooms."""
        self.send_command(wire.Rooms())

    def topic(self, text: str | None = None) -> None:
        """Ask for the current room's topic, or set it."""
        self.send_command(wire.Topic(text))

    def history(self, target: str | None = None, count: int | None = None) -> None:
        """Ask for past messages of a room (or a private conversation)."""
        self.send_command(wire.HistoryRequest(target, count))

    def close(self, message: str = "") -> Deferred[BaseException]:
        """
        Leave (others see C{message}, if any) and close the connection, with
        a TLS close_notify.

        @return: L{closed}.
        """
        self.closing = True
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return self.closed
        with suppress(ClientError):
            self.send_command(wire.Quit(message))
        if self.clock is None:
            protocol.transport.loseConnection()
            return self.closed
        # The server answers /quit and closes its end, after everything it
        # still had for us; close ours only if it does not.
        timer = self.clock.callLater(
            self.close_timeout, protocol.transport.loseConnection
        )

        def cancel_timer(result: BaseException) -> BaseException:
            if timer.active():
                timer.cancel()
            return result  # Later callbacks still get the reason.

        self.closed.addBoth(cancel_timer)
        return self.closed

    # Called by the protocol

    def _event(self, event: wire.Event) -> None:
        if self._awaiting_format and event == wire.Notice("format is now json"):
            # The answer to our own /format json, not news for the program.
            self._awaiting_format = False
            return
        if isinstance(event, wire.Renamed | wire.Identity):
            you = isinstance(event, wire.Identity) or event.you
            if you:
                self.name = (
                    event.name if isinstance(event, wire.Identity) else event.new
                )
        elif isinstance(event, wire.Notice):
            for prefix in _YOU_ARE:
                if event.text.startswith(prefix):
                    # /whoami may add how the server knows the name:
                    # "you are alice (verified by client certificate ...)".
                    name = event.text[len(prefix) :].split(" ", 1)[0]
                    if wire.name_problem(name) is None:
                        self.name = name
                    break
        self.on_event(event)


@implementer(IHandshakeListener)
class ChatClientProtocol(LineReceiver):
    """
    The client end of the line protocol: server lines in, parsed events out
    to a L{ChatClient}.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE_LENGTH
    transport: Any

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self._broken: ProtocolError | None = None

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            with suppress(AttributeError, OSError):
                self.transport.setTcpNoDelay(True)

    def handshakeCompleted(self) -> None:
        self.client._protocol = self
        if self.client.json:
            # The greeting may already be on its way as text; from here on
            # the server speaks JSON, and lineReceived reads both.
            self.sendLine(b"/format json")
        self.client.ready.callback(self.client)

    def lineReceived(self, line: bytes) -> None:
        if self._broken is not None:
            return  # The rest of the over-long line, or what followed it.
        if line.endswith(b"\r"):
            line = line[:-1]
        text = line.decode("utf-8", "replace")
        if text.startswith("{"):
            # A JSON line (no text line starts with "{").
            try:
                event = jsonwire.parse_event(text)
            except ValueError:
                event = wire.Notice(text)
            # Shown safely even if the server misbehaves.
            self.client._event(_sanitized(event))
        else:
            self.client._event(wire.parse_event(wire.sanitize(text)))

    def lineLengthExceeded(self, line: bytes) -> None:
        # LineReceiver would close the connection as if all were well.
        if self._broken is None:
            self._broken = ProtocolError(
                f"the server sent a line longer than {self.MAX_LENGTH} bytes"
            )
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.client._protocol = None
        if not self.client.ready.called:
            self.client.ready.errback(reason)
        else:
            self.client.closed.callback(
                self._broken or reason.value or ConnectionDone()
            )


def _sanitized(event: Any) -> Any:
    """C{event} with every text in it made safe to show (see L{wire.sanitize})."""
    changes: dict[str, Any] = {}
    for field in fields(event):
        value = getattr(event, field.name)
        if isinstance(value, str):
            changes[field.name] = wire.sanitize(value)
        elif isinstance(value, tuple):
            changes[field.name] = tuple(
                wire.sanitize(item) if isinstance(item, str) else _sanitized(item)
                for item in value
            )
    return replace(event, **changes)


class _ClientFactory(Factory):
    noisy = False

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def buildProtocol(self, addr: IAddress | None) -> ChatClientProtocol:
        return ChatClientProtocol(self.client)


def _explain(reason: Failure, verifier: ServerVerifier) -> ClientError:
    if verifier.report.problem is not None:
        return VerificationFailed(verifier.report.problem, verifier.report.fingerprint)
    # Over TLS, a close before the handshake is done is seen as not clean.
    if reason.check(ConnectionDone, ConnectionLost):
        return ConnectionFailed("the server closed the connection during the handshake")
    if reason.check(ConnectionRefusedError):
        return ConnectionFailed("connection refused")
    if reason.check(DNSLookupError):
        return ConnectionFailed("host name not found")
    if reason.check(TCPTimedOutError, TimeoutError, UserError):
        return ConnectionFailed("timed out")
    message = reason.getErrorMessage() or (
        reason.type.__name__ if reason.type else "unknown error"
    )
    return ConnectionFailed(message.rstrip("."))


def connect(
    reactor: Any,
    host: str,
    port: int = DEFAULT_PORT,
    *,
    ca: str | None = None,
    pin: str | None = None,
    client_certificate: Any = None,
    on_event: EventHandler | None = None,
    timeout: float = 30,
    json: bool = True,
    allow_expired: bool = False,
) -> Deferred[ChatClient]:
    """
    Connect to a securemsg server and verify it.

    @param reactor: the reactor (TCP, time and name resolution).
    @param ca: PEM file of trusted roots (the server's own certificate
        works); without it and without C{pin}, the system trust store.
    @param pin: C{sha256:HEX} fingerprint the server's certificate must
        have, instead of CA and name checks.  An expired certificate is
        refused all the same, unless C{allow_expired}.
    @param allow_expired: with C{pin}, accept the pinned certificate after
        its expiry date; the client's L{ChatClient.verification} then holds
        a warning to show.
    @param client_certificate: a L{twisted.internet.ssl.PrivateCertificate}
        to present to servers that ask for one.
    @param json: speak JSON lines (the default, for programs: every event
        arrives with its structure); L{False} keeps the text lines a person
        reads.
    @param on_event: called with each L{wire.Event} the server sends,
        starting with the greeting.
    @return: a Deferred that fires with a L{ChatClient} once the TLS
        handshake is done, or fails with L{VerificationFailed} or
        L{ConnectionFailed}.
    """
    verifier = ServerVerifier(
        host,
        ca_path=ca,
        pin=pin,
        client_certificate=client_certificate,
        allow_expired=allow_expired,
    )
    endpoint = wrapClientTLS(
        verifier, HostnameEndpoint(reactor, host, port, timeout=timeout)
    )
    client = ChatClient(on_event, reactor, json=json)

    def connected(client: ChatClient) -> ChatClient:
        client.verification = verifier.report
        return client

    def connection_failed(reason: Failure) -> Failure:
        return Failure(_explain(reason, verifier))

    client.ready.addCallbacks(connected, connection_failed)
    connecting = endpoint.connect(_ClientFactory(client))

    def not_connected(reason: Failure) -> None:
        if not client.ready.called:
            client.ready.errback(reason)

    connecting.addErrback(not_connected)
    return client.ready


def split_address(address: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """
    Split C{HOST[:PORT]} (C{[v6addr]:PORT} for IPv6) into host and port.

    @raise ValueError: for a malformed address or port.
    """
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or not host:
            raise ValueError(f"{address!r}: missing ']' after an IPv6 address")
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            raise ValueError(f"{address!r}: expected ':PORT' after ']'")
    elif address.count(":") == 1:
        host, _, port_text = address.partition(":")
    else:
        host, port_text = address, None  # A bare IPv6 address or a name.
    if not host:
        raise ValueError(f"{address!r}: no host")
    if port_text is None or port_text == "":
        return host, default_port
    # isdigit() alone also passes superscripts (which int() refuses) and
    # non-ASCII digits such as fullwidth ones.
    if not (port_text.isascii() and port_text.isdigit()) or not (
        0 < int(port_text) < 65536
    ):
        raise ValueError(f"{address!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


__all__ = [
    "DEFAULT_PORT",
    "MAX_LINE_LENGTH",
    "ChatClient",
    "ChatClientProtocol",
    "ClientError",
    "ConnectionFailed",
    "ProtocolError",
    "VerificationFailed",
    "connect",
    "split_address",
]
