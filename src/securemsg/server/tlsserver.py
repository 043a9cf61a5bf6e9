# -*- test-case-name: tests.test_tlsserver -*-
"""
The server's TLS layer: one object between Twisted's TCP transport and
OpenSSL's memory BIOs, which is the chat protocol's transport.

Twisted's L{TLSMemoryBIOProtocol} does this job for clients and servers
alike, through L{ProtocolWrapper}, pyOpenSSL's exceptions and a producer
stand-in; in a TLS 1.3 handshake that layer costs the server more CPU than
all of securemsg's own work for the connection (C{bench/README.md}).
L{TLSServerProtocol} keeps its behaviour for a server (the same errors, the
same close_notify exchange, the same producer rules) and takes the common
paths (a handshake step, a record in, a write) in direct OpenSSL calls:

  - what OpenSSL makes is sent at once, in one system call per write or
    read (L{securemsg.server.direct.send_now}), on the TCP transport below
    any wrapper that passes writes on as they are (the PROXY header
    reader's);
  - the TLS records of one read reach a wrapped protocol that has a
    C{read_batch()} within it (L{ChatServerProtocol.read_batch});
  - the handshake's memory BIOs are let go once it is done
    (L{renew_bios}).

The connection is made by a L{TLSMemoryBIOFactory} (the guard's), which
gives it its C{SSL.Connection} and counts it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from twisted.internet._producer_helpers import _PullToPush
from twisted.internet.interfaces import (
    IConsumer,
    IHandshakeListener,
    INegotiated,
    IProtocol,
    IPushProducer,
    ISSLTransport,
    ISystemHandle,
)
from twisted.internet.main import CONNECTION_LOST
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.tls import TLSMemoryBIOProtocol, _representsEOF
from twisted.python.failure import Failure
from zope.interface import implementer

from securemsg.server.direct import (
    can_send_now,
    send_now,
    socket_transport,
    tcp_held,
)

if TYPE_CHECKING:
    from twisted.protocols.tls import TLSMemoryBIOFactory

#: How much is read out of OpenSSL at a time (decrypted input, or records
#: to send).
_READ_SIZE = 2**16

#: The most one TLS record holds: writes are handed to OpenSSL in pieces
#: this long, and read out after each, so that the memory BIO (which keeps
#: the room of the most it ever held) stays within one record (two, after
#: a write OpenSSL took only part of).
_RECORD = 2**14

# Where records are read out of OpenSSL, and decrypted input read in: one
# buffer each for all connections (the reactor's thread only), not one
# made per call.
_OUT = _ffi.new("char[]", _READ_SIZE)
_IN = _ffi.new("char[]", _READ_SIZE)

_WANT_READ = _lib.SSL_ERROR_WANT_READ

# The OpenSSL calls that take bytes in, encrypt, and say why a call did
# not (names of this module's, so that a test can make them answer as
# OpenSSL does out of memory, or when it must read before it can write).
_bio_write = _lib.BIO_write
_ssl_write = _lib.SSL_write
_ssl_get_error = _lib.SSL_get_error


@implementer(ISSLTransport, ISystemHandle, INegotiated, IConsumer, IPushProducer)
class TLSServerProtocol(Protocol):
    """
    The server side of a TLS connection over a Twisted transport, and the
    transport of the protocol it wraps (L{ISSLTransport}).

    As Twisted's TLS layer: writes before the handshake is done wait for
    it; the wrapped protocol is told of the handshake
    (L{IHandshakeListener}); C{loseConnection} sends close_notify once
    what was written is handed over and no producer is registered, and
    closes once the client answers (before the handshake is done, it
    aborts); the wrapped protocol's C{connectionLost} gets the TLS error
    that ended the connection, L{ConnectionLost} for a TCP end without
    close_notify, or the transport's reason.  What differs: an aborted
    connection sends nothing more (no close_notify) and its protocol gets
    the transport's L{ConnectionAborted}; a client's close_notify before
    the handshake is done is a clean close; writes waiting for the
    handshake do not pause the producer (the chat counts them in its
    send queue: L{held_bytes}); C{loseWriteConnection} closes the whole
    connection (TLS has no half-close).

    @ivar wrappedProtocol: the protocol this is the transport of.
    """

    # Defaults for every connection; an instance sets these only when they
    # change (one dictionary layout for all: see ChatServerProtocol).
    connected = False
    disconnecting = False
    _handshake_done = False
    # The TLS connection is over (an error, the close_notify exchange, or
    # not TLS at all): nothing more goes in or out of OpenSSL.
    _tls_lost = False
    _aborted = False
    _reason: Failure | None = None
    _producer: Any = None
    _bios_renewed = False
    # The TCP transport L{send_now} sends on, if it can (see makeConnection).
    _direct: Any = None

    def __init__(
        self, factory: TLSMemoryBIOFactory, wrappedProtocol: IProtocol
    ) -> None:
        self.factory = factory
        self.wrappedProtocol: Any = wrappedProtocol
        self._tls: SSL.Connection | None = None
        # Writes that wait for the handshake (or for OpenSSL to read).
        self._pending: list[bytes] = []

    # IProtocol, for the TCP transport

    def makeConnection(self, transport: Any) -> None:
        below = socket_transport(transport)
        if can_send_now(below):
            self._direct = below
        self._tls = self.factory._creatorCallable(self)
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        # A server speaks second: nothing to send until the ClientHello.
        self.wrappedProtocol.makeConnection(self)

    def dataReceived(self, data: bytes) -> None:
        connection = self._tls
        if self._tls_lost or connection is None:
            return
        if _bio_write(connection._into_ssl, data, len(data)) != len(data):
            # A memory BIO takes all it is given, unless memory runs out:
            # then bytes of the stream are lost, and so is the connection.
            # (What OpenSSL queued about it must not be taken for the error
            # of a later call.)
            _lib.ERR_clear_error()
            self._tls_over(Failure(MemoryError("OpenSSL could not take a read")))
            return
        try:
            if not self._handshake_done and not self._handshake(connection):
                return
            if self._pending:
                self._write_pending()
            # One read of the socket may hold many TLS records, which OpenSSL
            # hands out one by one: a wrapped protocol that can take them as
            # one batch gets them within it.
            read_batch = getattr(self.wrappedProtocol, "read_batch", None)
            if read_batch is None:
                self._receive(connection)
            else:
                with read_batch():
                    self._receive(connection)
        except BaseException:
            # The wrapped protocol raised: Twisted logs it and ends the
            # connection.  What else this read held is not for it.
            self._tls_lost = True
            raise
        if not self._bios_renewed and not self._tls_lost:
            self._bios_renewed = renew_bios(connection)

    def _handshake(self, connection: SSL.Connection) -> bool:
        """
        Take the handshake as far as the bytes received allow.

        @return: whether it is done (and the connection still up).
        """
        ssl = connection._ssl
        result = _lib.SSL_do_handshake(ssl)
        if result <= 0:
            if _ssl_get_error(ssl, result) == _WANT_READ:
                self._send_out()
                return False
            self._fail(connection, result)
            return False
        self._handshake_done = True
        wrapped = self.wrappedProtocol
        if IHandshakeListener.providedBy(wrapped):
            wrapped.handshakeCompleted()
        return not self._tls_lost

    def _receive(self, connection: SSL.Connection) -> None:
        """
        Hand the wrapped protocol what OpenSSL decrypts, until it wants more
        bytes or the TLS connection ends; then send what OpenSSL made (an
        answer to a close_notify, an alert, a key update).
        """
        ssl = connection._ssl
        while not self._tls_lost:
            size = _lib.SSL_read(ssl, _IN, _READ_SIZE)
            if size > 0:
                self.wrappedProtocol.dataReceived(_ffi.buffer(_IN, size)[:])
                continue
            if _ssl_get_error(ssl, size) == _WANT_READ:
                break
            self._fail(connection, size)
        self._send_out()

    def _fail(self, connection: SSL.Connection, result: int) -> None:
        """
        An OpenSSL call on C{connection} (a handshake step, a read or a
        write) returned C{result}, neither success nor a wish for more
        bytes: the client's close_notify (answered, and the connection
        closed), or an error (the connection ends with it).
        """
        try:
            # pyOpenSSL's own exception for the result (and for an exception
            # raised in a verification callback).
            connection._raise_ssl_error(connection._ssl, result)
        except SSL.ZeroReturnError:
            self._shutdown_tls()
            self._tls_over(None)
        except SSL.Error:
            self._tls_over(Failure())
        else:
            self._tls_over(Failure(SSL.Error([])))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        connection = self._tls
        try:
            if not self._tls_lost and connection is not None:
                # The TCP connection ended first: let OpenSSL see the end,
                # and hand over what it still holds (and report a truncation).
                connection.bio_shutdown()
                self._receive(connection)
        finally:
            # Even if the wrapped protocol raised on what was left: it gets
            # its end, and the factory (the guard's count) its unregister.
            self._tls_lost = True
            reason = self._reason or reason
            self._reason = None
            self.connected = False
            self.factory.unregisterProtocol(self)
            wrapped, self.wrappedProtocol = self.wrappedProtocol, None
            try:
                wrapped.connectionLost(reason)
            finally:
                # The SSL.Connection may refer to us (its app data): let
                # both go.
                self._tls = None

    # Ending the TLS connection

    def _shutdown_tls(self) -> None:
        """
        Send close_notify (or answer the client's), and close the transport
        once both sides have sent theirs.
        """
        connection = self._tls
        if connection is None or self._tls_lost:
            # Over (aborted, failed): no close_notify, which would tell the
            # client that the stream ended cleanly.
            return
        try:
            done = connection.shutdown()
        except SSL.Error:
            # During the handshake OpenSSL cannot shut down yet.
            done = False
        if not done:
            self._send_out()
            return
        # Both sides have sent close_notify: ours leaves with the end of the
        # connection, through the transport (which sends what it holds, then
        # closes), so the client is woken once for both, not twice.
        transport: Any = self.transport
        closing = self._read_out(connection)
        if closing:
            transport.write(closing)
        transport.loseConnection()

    def _tls_over(self, reason: Failure | None) -> None:
        """
        The TLS connection is over: send what OpenSSL made (an alert) and
        close the transport.

        @param reason: what the wrapped protocol is told, or L{None} for
            the transport's reason.
        """
        if (
            reason is not None
            and isinstance(reason.value, SSL.Error)
            and _representsEOF(reason.value)
        ):
            # As Twisted's layer tells it: the peer's TCP connection ended
            # without close_notify.
            reason = Failure(CONNECTION_LOST)
        if self._reason is None:
            self._reason = reason
        self._tls_lost = True
        self._send_out()
        self.transport.loseConnection()  # type: ignore[union-attr]

    # ITransport, for the wrapped protocol

    def write(self, data: bytes) -> None:
        # After loseConnection, only a registered producer may still write
        # (it is unregistered before close_notify is sent).
        if self.disconnecting and self._producer is None:
            return
        if self._tls_lost or not data:
            return
        if type(data) is not bytes:
            data = bytes(data)  # A bytearray or memoryview, as Twisted takes.
        if not self._handshake_done or self._pending:
            self._pending.append(data)
            return
        self._write(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def _write(self, data: bytes) -> None:
        """Encrypt C{data} and send the records, in one system call."""
        connection = self._tls
        assert connection is not None  # Set while TLS is up.
        ssl = connection._ssl
        start = 0
        if len(data) <= _RECORD:
            # The common case: one record (a line, or a turn's lines for
            # one client), made and sent without a list.
            written = _ssl_write(ssl, data, len(data))
            if written == len(data):
                self._send_out()
                return
            if written <= 0:
                self._write_failed(connection, written, data)
                return
            # Fewer: pyOpenSSL's contexts allow partial writes, and a client
            # that asked for smaller records (RFC 6066 max_fragment_length)
            # gets one of them per call.  The rest goes on below.
            start = written
        records: list[bytes] = []
        view = memoryview(data)
        while start < len(data):
            piece = view[start : start + _RECORD]
            written = _ssl_write(ssl, _ffi.from_buffer(piece), len(piece))
            if written <= 0:
                if records:
                    self._send(b"".join(records))
                self._write_failed(connection, written, bytes(view[start:]))
                return
            records.append(self._read_out(connection))
            start += written
        self._send(b"".join(records))

    def _write_failed(
        self, connection: SSL.Connection, result: int, rest: bytes
    ) -> None:
        """
        OpenSSL did not take C{rest}: it wants to read first (keep it for
        then), or the connection failed.
        """
        if _ssl_get_error(connection._ssl, result) == _WANT_READ:
            self._pending.insert(0, rest)
            self._send_out()
            return
        self._fail(connection, result)

    def _write_pending(self) -> None:
        """Write what waited for the handshake (or for OpenSSL to read)."""
        pending, self._pending = self._pending, []
        for index, data in enumerate(pending):
            self._write(data)
            if self._pending or self._tls_lost:
                # OpenSSL wants to read again: the rest waits with it.
                self._pending.extend(pending[index + 1 :])
                return
        if self.disconnecting and self._producer is None:
            self._shutdown_tls()

    def _read_out(self, connection: SSL.Connection) -> bytes:
        """What OpenSSL made for the client (empty if nothing)."""
        out = connection._from_ssl
        size = _lib.BIO_read(out, _OUT, _READ_SIZE)
        if size <= 0:
            return b""
        data: bytes = _ffi.buffer(_OUT, size)[:]
        if size < _READ_SIZE:
            return data
        chunks = [data]
        while (size := _lib.BIO_read(out, _OUT, _READ_SIZE)) > 0:
            chunks.append(_ffi.buffer(_OUT, size)[:])
        return b"".join(chunks)

    def _send_out(self) -> None:
        """Send what OpenSSL made for the client, if anything."""
        connection = self._tls
        if connection is not None:
            data = self._read_out(connection)
            if data:
                self._send(data)

    def _send(self, data: bytes) -> None:
        if self._aborted:
            return
        direct = self._direct
        if direct is not None:
            send_now(direct, data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    def loseConnection(self) -> None:
        if self.disconnecting or not self.connected:
            return
        if not self._handshake_done and not self._pending:
            # OpenSSL cannot send close_notify before the handshake is done,
            # and nothing more may be written to finish it.
            self.abortConnection()
            return
        self.disconnecting = True
        if not self._pending and self._producer is None:
            self._shutdown_tls()

    def abortConnection(self) -> None:
        self._aborted = True
        self.disconnecting = True
        self._tls_lost = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    # IConsumer

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self._tls_lost:
            producer.stopProducing()
            return
        if not streaming:
            # A pull producer is asked for more when the TCP transport's
            # buffer empties, which send_now may never fill: push it.
            pusher = _PullToPush(producer, self)
            self.transport.registerProducer(pusher, True)  # type: ignore[union-attr]
            self._producer = pusher
            pusher.startStreaming()
            return
        self.transport.registerProducer(producer, True)  # type: ignore[union-attr]
        self._producer = producer

    def unregisterProducer(self) -> None:
        producer = self._producer
        if producer is None:
            return
        if isinstance(producer, _PullToPush):
            producer.stopStreaming()
        self._producer = None
        self.transport.unregisterProducer()  # type: ignore[union-attr]
        if self.disconnecting and not self._pending:
            self._shutdown_tls()

    # IPushProducer: the bytes coming in (twisted.web's HTTP channel stops
    # reading while it answers a request)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        # The TCP transport's would close without close_notify.
        self.loseConnection()

    # The rest of the transport

    def getPeer(self) -> Any:
        return self.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> Any:
        return self.transport.getHost()  # type: ignore[union-attr]

    def getPeerCertificate(self) -> Any:
        """The client's certificate (pyOpenSSL's X509), or L{None}."""
        connection = self._tls
        return None if connection is None else connection.get_peer_certificate()

    def getHandle(self) -> SSL.Connection | None:
        """The C{SSL.Connection} (for Twisted's C{Certificate.peerFromTransport})."""
        return self._tls

    @property
    def negotiatedProtocol(self) -> bytes | None:
        """The protocol agreed by ALPN, if any (L{INegotiated})."""
        connection = self._tls
        if connection is None:
            return None
        return connection.get_alpn_proto_negotiated() or None

    # ITCPTransport's options (ISSLTransport extends it): those of the TCP
    # transport below; a transport without them (a test's fake) has none,
    # and twisted.web's HTTP channel, which sets TCP_NODELAY on every
    # ITCPTransport, must not fail for it.

    def _tcp_option(self, name: str, *value: bool) -> bool:
        """Call the TCP transport's C{name}, if it has one."""
        option = getattr(self.transport, name, None)
        return bool(option(*value)) if option is not None else False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self._tcp_option("setTcpNoDelay", enabled)

    def getTcpNoDelay(self) -> bool:
        return self._tcp_option("getTcpNoDelay")

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self._tcp_option("setTcpKeepAlive", enabled)

    def getTcpKeepAlive(self) -> bool:
        return self._tcp_option("getTcpKeepAlive")

    def loseWriteConnection(self) -> None:
        """TLS has no half-close: this closes the connection."""
        self.loseConnection()

    def logPrefix(self) -> str:
        wrapped = self.wrappedProtocol
        return f"{wrapped.__class__.__name__} (TLS)"

    def __getattr__(self, name: str) -> Any:
        # Anything else a transport has (Twisted's TLS layer passes such
        # lookups on too): the TCP transport's.
        if name.startswith("__") or name == "transport":
            raise AttributeError(name)
        return getattr(self.__dict__.get("transport"), name)


def held_bytes(transport: Any) -> int:
    """
    The bytes Twisted holds for sending on C{transport}: a TLS layer's
    (securemsg's or Twisted's) writes waiting for OpenSSL, and the TCP
    transport's buffer below it (L{tcp_held}, below the PROXY header
    reader too).
    """
    held = 0
    if isinstance(transport, TLSServerProtocol):
        held += sum(map(len, transport._pending))
        transport = transport.transport
    elif isinstance(transport, TLSMemoryBIOProtocol):
        held += sum(map(len, transport._appSendBuffer))
        transport = transport.transport
    return held + tcp_held(socket_transport(transport))


def renew_bios(connection: SSL.Connection) -> bool:
    """
    Give a pyOpenSSL memory-BIO C{connection} two new, empty memory BIOs,
    if nothing waits in its own; OpenSSL frees the old ones.

    A memory BIO keeps the room of the most it ever held for as long as it
    lives, and the handshake is the most most chat connections ever send or
    receive (the certificate, the session tickets): replacing them once it
    is done saves about 3 KiB of each idle connection's 25.  pyOpenSSL has
    no call for it; it keeps the two BIOs in C{_into_ssl} and C{_from_ssl}.

    @return: whether they were replaced (not if bytes were waiting in
        them, or OpenSSL could not make new ones).
    """
    into, out = connection._into_ssl, connection._from_ssl
    if into is None or out is None:
        return False
    if _lib.BIO_get_mem_data(into, _ffi.NULL) or _lib.BIO_get_mem_data(out, _ffi.NULL):
        return False
    fresh_into = _lib.BIO_new(_lib.BIO_s_mem())
    fresh_out = _lib.BIO_new(_lib.BIO_s_mem())
    if fresh_into == _ffi.NULL or fresh_out == _ffi.NULL:
        for bio in (fresh_into, fresh_out):
            if bio != _ffi.NULL:
                _lib.BIO_free(bio)
        # Not to be taken for the error of the connection's next call.
        _lib.ERR_clear_error()
        return False
    # The SSL object owns its BIOs: this frees the old pair.
    _lib.SSL_set_bio(connection._ssl, fresh_into, fresh_out)
    connection._into_ssl, connection._from_ssl = fresh_into, fresh_out
    return True
