# -*- test-case-name: tests.test_server -*-
"""
The chat server's protocol: one client connection, its lines in and the
room's events out (see C{docs/PROTOCOL.md}).  L{securemsg.server.factory}
builds one per connection.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from typing import TYPE_CHECKING, Any, Final

from cryptography import x509
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IPushProducer,
    ITCPTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from securemsg.core.flood import TokenBucket, command_cost
from securemsg.core.participant import IChatParticipant
from securemsg.protocol import jsonwire, wire
from securemsg.server.counters import handshake_failure
from securemsg.server.tlsserver import TLSServerProtocol
from securemsg.tls import certs
from securemsg.tls.identity import identity_from_certificate

if TYPE_CHECKING:
    from securemsg.server.factory import ChatServerFactory


#: The TLS layers a connection may be made over: securemsg's own (the
#: server's), or Twisted's (a factory embedded with Twisted's TLS).
TLS_LAYERS: Final = (TLSServerProtocol, TLSMemoryBIOProtocol)


def describe_peer(address: IAddress) -> str:
    """A short, log-friendly form of a peer address: C{[::1]:5000}."""
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, UNIXAddress):
        return f"unix:{address.name!r}"
    return str(address)


def peer_host(address: IAddress) -> str | None:
    """The IP address in C{address}, or L{None} for other kinds (UNIX)."""
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host
    return None


def describe_reason(reason: Failure) -> str:
    """One line for why a connection ended."""
    if _closed_cleanly(reason):
        return "closed cleanly"
    kind = reason.type.__name__ if reason.type is not None else "error"
    message = reason.getErrorMessage()
    return f"{kind}: {message}" if message else kind


def _closed_cleanly(reason: Failure) -> bool:
    """
    C{reason.check(ConnectionDone)}, for every connection that ends: a
    failure made here has its exception's class (check compares the
    qualified names of its bases, made for failures from elsewhere).
    """
    kind = reason.type
    if kind is ConnectionDone:
        return True
    if isinstance(kind, type) and issubclass(kind, ConnectionDone):
        return True
    return reason.check(ConnectionDone) is not None


@implementer(IChatParticipant, IHandshakeListener, IPushProducer)
class ChatServerProtocol(LineReceiver, TimeoutMixin):
    """
    One client connection: turns its lines into commands for the room, and
    the room's events into lines.

    Over TLS the client joins the room only when the handshake is done
    (Twisted calls C{connectionMade} before it), so a half-open handshake
    never shows up as a user; a handshake that takes too long is aborted.

    It is its transport's producer: when the client stops reading and the
    transport's buffer fills, the transport pauses it, and lines for the
    client wait in its queue instead.  Everything queued for the client is
    counted as it is queued; past the limits' C{send_queue} the client is
    dropped (see L{held_bytes}).  The queue, and when it is written, are
    the factory's L{Outbox}'s (L{securemsg.server.outbox}).
    """

    delimiter = b"\n"
    factory: ChatServerFactory
    # Set by makeConnection: the TLS layer (securemsg's or Twisted's) or a
    # TCP transport, which has more than ITransport declares
    # (disconnecting, setTcpNoDelay).
    transport: Any
    log = Logger()

    name = ""
    _joined = False
    # Defaults that most connections never change stay on the class: an
    # idle connection should cost as little memory as possible.
    # C{/format json}: JSON lines both ways instead of text.
    _json = False
    _lost: list[Deferred[None]] | None = None
    _quit_reason = ""
    # What the client said with /quit (None: it did not quit).
    _quit_message: str | None = None
    # True when LineReceiver stopped at an over-long line with more after it.
    _resume = False
    _producing = False
    _abort_timer: IDelayedCall | None = None
    # Runs while text without a newline waits (see _watch_line_end).
    _line_timer: IDelayedCall | None = None

    def __init__(self, factory: ChatServerFactory) -> None:
        self.factory = factory
        self.limits = factory.limits
        self.MAX_LENGTH = factory.limits.max_line_length
        self.peer = "unknown peer"
        # Set here although the class has defaults: an attribute first set
        # later (ChatHub.join sets the name) would make Python give this
        # instance a dictionary of its own, 0.7 KiB more per connection.
        self.name = ""
        self._joined = False
        # What waits to be written to the client (the transport is given
        # to it in connectionMade).
        self._queue = factory.outbox.queue(self, self.limits.send_queue, self._json)
        # Made when first needed: an idle connection never sends a line.
        self._bucket: TokenBucket | None = None
        # Set here for the reason given for the name above.
        self._line_timer = None
        self._line_looked_again = False
        # Whether the TLS handshake ended (done, or timed out), for the
        # counters.
        self._handshake_over = False

    def connectionMade(self) -> None:
        # Not logged: the disconnection is, with the peer and the name (see
        # _join).
        self.peer = describe_peer(self.transport.getPeer())
        self._queue.transport = self.transport
        self.factory.open_connections.add(self)
        if ITCPTransport.providedBy(self.transport):
            # Twisted leaves Nagle's algorithm on; for short chat lines it
            # adds tens of milliseconds of latency whenever it meets a
            # delayed ACK.
            # Some transports claim to be TCP but are not (UNIX sockets, fakes).
            with suppress(AttributeError, OSError):
                self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        self._producing = True
        if isinstance(self.transport, TLS_LAYERS):
            # Until the handshake is done, the timeout is the handshake's
            # (see timeoutConnection); then it is the idle timeout.
            self.setTimeout(self.limits.handshake_timeout)
        else:
            # No TLS layer below us (plain TCP in tests, or TLS ended by a
            # proxy), so no handshake to wait for.
            self._join()

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """TimeoutMixin's scheduler: the factory's clock, not the reactor."""
        return self.factory.clock.callLater(period, func)

    def handshakeCompleted(self) -> None:
        self._handshake_over = True
        self.factory.counters.handshakes_completed += 1
        # The handshake's timer becomes the idle timer (_join resets it): one
        # timer a connection.  It stops here if there is no idle timeout, or
        # the client did not join (shutting down, banned).
        self._join()
        if not (self._joined and self.limits.idle_timeout):
            self.setTimeout(None)

    def _join(self) -> None:
        if self._joined or self.factory.shutting_down:
            return
        self._joined = True
        if self.limits.idle_timeout:
            self.setTimeout(self.limits.idle_timeout)
        identity, fingerprint = self._client_certificate()
        if identity is not None and not self._certificate_still_accepted():
            return
        address = peer_host(self.transport.getPeer())
        # An address ban is for guests: a certificate holder may share the
        # banned guest's address (the same NAT, say) and is known anyway.
        ban = self.factory.chat.state.banned(
            fingerprint, address if identity is None else None
        )
        # A guest is banned by the address that stands for its client (its
        # IPv6 /64), as it is counted in the limit per address.
        client = None if address is None else self.limits.client_key(address)
        if ban is not None:
            self.log.info(
                "{peer} refused: banned by {by} (as {name})",
                peer=self.peer,
                by=ban.by,
                name=ban.name,
            )
            self._joined = False
            self.deliver(wire.Error("you are banned from this server"))
            self._close()
            return
        name = self.factory.chat.join(
            self,
            lambda name: [
                wire.Notice(line) for line in self.factory.greeting_lines(name)
            ],
            identity=identity,
            fingerprint=fingerprint,
            address=client,
        )
        # A guest's arrival is not logged: its disconnection names the peer
        # and the name, in one line a connection (a log line costs about
        # 30 us, a tenth of a handshake's own CPU).  A certificate holder's
        # fingerprint is said once, here.
        if identity is not None:
            self.log.info(
                "{peer} is {name} (client certificate {fingerprint})",
                peer=self.peer,
                name=name,
                fingerprint=fingerprint,
            )
        # The greeting now, not at the end of the turn: it leaves in the same
        # system call as the end of the TLS handshake (the session tickets).
        self.flush()

    def _client_certificate(self) -> tuple[str | None, str | None]:
        """
        The name and fingerprint of the client's certificate, if it gave one
        (it was verified in the handshake against the client CA).
        """
        chain = self.client_certificates()
        if not chain:
            return None, None
        identity = identity_from_certificate(chain[0])
        return identity, certs.fingerprint(chain[0])

    def client_certificates(self) -> list[x509.Certificate]:
        """
        The certificate the client gave in the TLS handshake, then any
        intermediates it sent with it; empty if it gave none.
        """
        get = getattr(self.transport, "getPeerCertificate", None)
        peer = get() if get is not None else None
        if peer is None:
            return []
        chain = [peer.to_cryptography()]
        handle = getattr(self.transport, "getHandle", lambda: None)()
        sent = handle.get_peer_cert_chain(as_cryptography=True) if handle else None
        # A server is given the intermediates only (OpenSSL leaves the
        # client's own certificate out), but be sure.
        chain += [c for c in sent or () if c != chain[0]]
        return chain

    def _certificate_still_accepted(self) -> bool:
        """
        Whether the client certificate still passes the checks of the
        material reloaded since this handshake began (it was verified with
        what was in service then); if not, say so and close.
        """
        check = self.factory.certificate_check
        problem = check(self.client_certificates()) if check is not None else None
        if problem is None:
            return True
        self.log.info(
            "{peer} refused: client certificate no longer accepted after a"
            " reload ({problem})",
            peer=self.peer,
            problem=problem,
        )
        self._joined = False
        self.deliver(
            wire.Error(f"your client certificate is no longer accepted: {problem}")
        )
        self._close()
        return False

    def recheck_certificate(self) -> bool:
        """
        After a reload: if the client joined with a certificate that the
        reloaded material no longer accepts (revoked by the new CRL, or no
        longer issued by a client CA), tell it, log it, and disconnect it;
        it loses whatever its name gave it (an operator's rights) at once.

        @return: whether it was disconnected.
        """
        check = self.factory.certificate_check
        if not self._joined or check is None:
            return False
        chain = self.client_certificates()
        problem = check(chain) if chain else None
        if problem is None:
            return False
        self.log.warn(
            "{peer} ({name}) disconnected: client certificate {fingerprint} is no"
            " longer accepted after the reload ({problem})",
            peer=self.peer,
            name=self.name,
            fingerprint=certs.fingerprint(chain[0]),
            problem=problem,
        )
        why = "client certificate no longer accepted"
        self.factory.chat.leave(self, why)
        self.disconnect(
            f"your client certificate is no longer accepted: {problem}", why
        )
        return True

    # Sending

    def deliver(self, event: wire.Event) -> None:
        # The hot path: once per receiver of every line.  Written once per
        # reactor turn (see Outbox.flush): one TLS record and one system
        # call for all the lines of a turn.
        self._queue.put(event)

    def deliver_all(self, events: tuple[wire.Event, ...]) -> None:
        # The hot path of a busy room: once per receiver per speaker's read.
        self._queue.put_all(events)

    def held_bytes(self) -> int:
        """
        The bytes held for this client: what waits in our queue, and what
        Twisted's transports held for it when they last paused us.
        """
        return self._queue.held_bytes()

    def _over_send_queue(self) -> None:
        """
        More than the send queue is held for the client: drop what waits
        and abort the connection.
        """
        if not self._queue.drop():
            return
        self.factory.counters.send_queue_disconnects += 1
        self.log.info(
            "{peer} ({name}) disconnected: send queue over {limit} bytes "
            "(the client does not read)",
            peer=self.peer,
            name=self.name,
            limit=self.limits.send_queue,
        )
        self._quit_reason = "not reading"
        self.transport.abortConnection()

    def flush(self) -> None:
        """
        Write what this turn produced for the client; while the client does
        not read (the transport paused us), keep it queued instead.
        """
        self._queue.flush()

    def pauseProducing(self) -> None:
        """The transport's buffer is full: queue lines from now on."""
        self._queue.pause()

    def resumeProducing(self) -> None:
        """The transport's buffer is empty again: send what is queued."""
        self._queue.resume()

    def stopProducing(self) -> None:
        """The connection is going away; connectionLost does the rest."""

    # Receiving

    def read_batch(self) -> AbstractContextManager[None]:
        """
        Within: the lines this client says to a room reach each member
        together (L{ChatHub.batch}).  L{dataReceived} opens one for what it
        is given; the TLS layer below (L{TLSServerProtocol}) opens one for
        all the TLS records of one read of the socket, so that a client
        that sends a record per line costs each member one delivery per
        read, not one per line.
        """
        return self.factory.chat.batch(self)

    def dataReceived(self, data: bytes) -> None:
        if self.transport.disconnecting:
            # We are closing (quit, flooding, shutdown).  TLS goes on handing
            # us what the client sends until its close_notify, which a hostile
            # client never sends: read no more lines.
            return
        # The lines of one read said to a room reach each member together.
        with self.factory.chat.batch(self):
            super().dataReceived(data)
            # LineReceiver returns after an over-long line even when complete
            # lines follow it in the same read; go on with those.
            while self._resume and not self.transport.disconnecting:
                self._resume = False
                super().dataReceived(b"")
        self._watch_line_end()

    def _watch_line_end(self) -> None:
        """
        After a read: if text without a newline waits, (re)start the quiet
        period after which it is a whole line (L{Limits.line_flush});
        otherwise stop it.

        Clients written like the socket tutorial's send each message as one
        C{send()} without a newline and stay connected; without this their
        messages would wait for the next newline or the end of the
        connection.  Each new piece restarts the period, so a line arriving
        in pieces in quick succession is still one line.  The end of a TLS
        record is no line end: a client that writes a line in several
        C{send()} calls sends one record per call, and those often reach the
        server in separate reads.

        An over-long line being skipped (raw mode, where nothing waits in
        the buffer) is skipped up to its newline, pauses or not: were a
        pause to end it, a long line sent slowly would earn an error per
        pause and its tail would be relayed as a line of its own.
        """
        timer = self._line_timer
        delay = self.limits.line_flush
        if delay and self._buffer and not self.transport.disconnecting:
            self._line_looked_again = False
            if timer is not None:
                timer.reset(delay)
            else:
                self._line_timer = self.factory.clock.callLater(delay, self._line_end)
        elif timer is not None:
            self._line_timer = None
            timer.cancel()

    def _line_end(self) -> None:
        """
        Nothing came for the quiet period: what waits without a newline is
        a whole line.
        """
        if not self._line_looked_again:
            # A busy reactor runs the timers that are due before it reads:
            # the rest of the line may be waiting unread.  Decide after one
            # more round of reading (which restarts the period if it brings
            # anything).
            self._line_looked_again = True
            self._line_timer = self.factory.clock.callLater(0, self._line_end)
            return
        self._line_timer = None
        if self.transport.disconnecting:
            return
        # At most MAX_LENGTH bytes: LineReceiver refuses a longer buffer as
        # an over-long line the moment it grows past the limit.
        pending, self._buffer = self._buffer, b""
        with self.factory.chat.batch(self):
            self.lineReceived(pending)

    def lineReceived(self, line: bytes) -> None:
        if not self._joined:
            return
        self.factory.counters.lines_received += 1
        self.resetTimeout()
        bucket = self._bucket
        if bucket is None:
            limits = self.limits
            bucket = self._bucket = TokenBucket(
                self.factory.clock, limits.flood_burst, limits.flood_rate
            )
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            if bucket.allow():
                self.deliver(
                    wire.Error("that line was not valid UTF-8; it was not sent")
                )
            else:
                self._flooded()
            return
        # Parsed before it is counted: a command costs what it costs the
        # server (see flood.COMMAND_COSTS).  Parsing one line is cheap.
        command = (
            jsonwire.parse_command(text) if self._json else wire.parse_command(text)
        )
        if not bucket.allow(command_cost(command)):
            self._flooded()
            return
        if command is None:
            return
        if isinstance(command, wire.Quit):
            self._quit_message = command.reason
            self.deliver(wire.Notice("goodbye"))
            self._close()
            return
        if isinstance(command, wire.Ping):
            self.deliver(wire.Notice("pong"))
            return
        if isinstance(command, wire.Format):
            self._json = self._queue.json = command.kind == "json"
            self.deliver(wire.Notice(f"format is now {command.kind}"))
            return
        self.factory.chat.handle(self, command)

    def _flooded(self) -> None:
        assert self._bucket is not None  # Made by lineReceived.
        self.factory.counters.flood_dropped += 1
        dropped = self._bucket.dropped_in_a_row
        if dropped == 1:
            self.deliver(
                wire.Error(
                    f"too many lines: at most {self.limits.flood_rate:g} a second"
                    f" (bursts of {self.limits.flood_burst}); lines are being dropped"
                )
            )
        elif dropped >= self.limits.flood_disconnect:
            self.log.info(
                "{peer} ({name}) disconnected: flooding ({dropped} lines over"
                " the rate in a row)",
                peer=self.peer,
                name=self.name,
                dropped=dropped,
            )
            self.disconnect("disconnected for flooding", "flooding")

    def timeoutConnection(self) -> None:
        """
        The TLS handshake took too long: abort.  Or no line for the idle
        timeout: say so and close.
        """
        if not self._joined:
            if not self._handshake_over:
                self._handshake_over = True
                self.factory.counters.handshakes_failed["timeout"] += 1
            self.log.info(
                "{peer}: TLS handshake not done after {seconds} s; aborting",
                peer=self.peer,
                seconds=self.limits.handshake_timeout,
            )
            self.transport.abortConnection()
            return
        self.log.info(
            "{peer} ({name}) disconnected: idle for {seconds} s",
            peer=self.peer,
            name=self.name,
            seconds=self.limits.idle_timeout,
        )
        self.disconnect(
            f"disconnected after {self.limits.idle_timeout:g} s without a line"
            " (send /ping to stay connected)",
            "idle",
        )

    def disconnect(self, error: str, farewell: str) -> None:
        """
        Tell the client why, close cleanly, and abort if the client does not
        let the close finish (it may not be reading).
        """
        self.deliver(wire.Error(error))
        self._quit_reason = farewell
        self._close()

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Refuse an over-long line but keep the connection: throw the line
        away (without buffering it) up to its end, then carry on.
        """
        self.resetTimeout()
        self.deliver(
            wire.Error(f"line longer than {self.MAX_LENGTH} bytes; it was not sent")
        )
        self.log.info(
            "{peer} ({name}) sent a line longer than {limit} bytes",
            peer=self.peer,
            name=self.name,
            limit=self.MAX_LENGTH,
        )
        _, newline, rest = line.partition(self.delimiter)
        if newline:
            self._buffer = rest
            self._resume = True
        else:
            # Raw mode only ever throws away the rest of an over-long line.
            self.setRawMode()

    def rawDataReceived(self, data: bytes) -> None:
        # Only used to skip the tail of an over-long line.
        _, newline, rest = data.partition(self.delimiter)
        if newline:
            self.setLineMode(rest)

    # Closing

    def close_for_shutdown(self) -> Deferred[None]:
        """
        The server is stopping: tell the client, send what is queued, and
        close with a TLS close_notify.

        @return: fires when the connection is closed.
        """
        lost: Deferred[None] = Deferred()
        if self._lost is None:
            self._lost = []
        self._lost.append(lost)
        if self._joined:
            self.deliver(wire.Notice("the server is shutting down"))
        self._close()
        return lost

    def _close(self) -> None:
        """
        Close cleanly once everything written is sent, or abort if that
        takes longer than the shutdown grace (the client may not be
        reading).
        """
        # What the client sent after the line that closed it is not read
        # (nor taken for a last line by connectionLost).
        self._buffer = b""
        # Everything queued, even for a client that does not read: it is
        # within the send queue, and the abort below bounds how long it is
        # held.
        self._queue.write_all()
        # The TLS layer sends its close_notify only once no producer is
        # registered.
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()
        if self._abort_timer is None:
            self._abort_timer = self.factory.clock.callLater(
                self.limits.shutdown_grace, self.transport.abortConnection
            )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # A last line without a newline is still a line; handled first, so
        # that whatever it starts (a /quit, a flood disconnect) is cleaned
        # up below with the rest.
        if (
            self._joined
            and self._buffer
            and self.line_mode
            and not self.factory.shutting_down
        ):
            pending, self._buffer = self._buffer, b""
            self.lineReceived(pending)
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        self._abort_timer = None
        if self._line_timer is not None:
            self._line_timer.cancel()
            self._line_timer = None
        self.setTimeout(None)
        self._queue.clear()
        self.factory.open_connections.discard(self)
        if not self._handshake_over and isinstance(self.transport, TLS_LAYERS):
            self.factory.counters.handshakes_failed[handshake_failure(reason)] += 1
        peer, name, why = self.peer, self.name or "not joined", describe_reason(reason)
        # The one line of a guest's connection, made here rather than by the
        # log observer: the same text, and the peer, name and reason fields
        # as before (the text is in "line"), but Twisted's formatter
        # (string.Formatter, in Python, field by field) made 44 of its 134
        # function calls.  Logged through the factory's LogBatch, with the
        # lines of the connections that end about now.
        self.factory.disconnections.info(
            "{line}",
            line=f"{peer} ({name}) disconnected: {why}",
            peer=peer,
            name=name,
            reason=why,
        )
        if self._joined:
            if self._quit_reason:
                farewell = self._quit_reason
            elif _closed_cleanly(reason) or self._quit_message is not None:
                farewell = ""
            else:
                farewell = "connection lost"
            self.factory.chat.leave(
                self,
                farewell,
                announce=not self.factory.shutting_down,
                message=self._quit_message or "",
            )
        lost, self._lost = self._lost or [], None
        for waiter in lost:
            waiter.callback(None)
