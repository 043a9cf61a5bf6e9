# -*- test-case-name: tests.test_direct -*-
"""
Sending TLS output at once, instead of a reactor turn later.

Twisted's TCP transport never sends from C{write}: it buffers the bytes,
asks the reactor to watch the socket for writing (a system call), sends on
the next turn, and stops watching (another system call).  A chat server
that relays a line to a hundred clients pays that for each of them, for
every line, and the line waits a turn.  Like asyncio, L{send_now} tries the
socket first and leaves to the transport only what the socket did not take.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from OpenSSL.SSL import WantReadError
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import directlyProvides, providedBy

#: How much TLS output is read from OpenSSL at a time.
_READ_SIZE = 2**16

#: The most one TLS record holds: a write up to this long is one record.
_RECORD = 2**14

# Where DirectTLSProtocol.write reads a record out of OpenSSL: one buffer
# for all connections (the reactor's thread only), not one made per write.
_OUT = _ffi.new("char[]", _READ_SIZE)

# The buffer attributes send_now reads are Twisted's own (FileDescriptor);
# where a transport lacks them, everything goes through its write().
_BUFFER_ATTRIBUTES = ("dataBuffer", "offset", "_tempDataBuffer", "_writeDisconnected")


def can_send_now(transport: object) -> bool:
    """Whether L{send_now} can send on C{transport}'s socket itself."""
    return isinstance(transport, tcp.Connection) and all(
        hasattr(transport, name) for name in _BUFFER_ATTRIBUTES
    )


def send_now(transport: Any, data: bytes) -> None:
    """
    Write C{data} to a Twisted TCP C{transport}, sending what the socket
    takes right away if nothing is waiting before it; the rest, and
    anything on a connection that is closing or failing, goes through
    C{transport.write} as usual (so its buffering, producer and error
    handling stay Twisted's).

    The caller checks L{can_send_now} once for the transport.
    """
    if (
        transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # Full (EAGAIN) or broken: the transport finds out which.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


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
        return False
    # The SSL object owns its BIOs: this frees the old pair.
    _lib.SSL_set_bio(connection._ssl, fresh_into, fresh_out)
    connection._into_ssl, connection._from_ssl = fresh_into, fresh_out
    return True


def held_bytes(transport: Any) -> int:
    """
    The bytes Twisted holds for sending on C{transport}: the TLS layer's
    buffer (if it is one) and the TCP transport's below it.  Other
    transports (UNIX sockets, test fakes) count as holding nothing.
    """
    held = 0
    if isinstance(transport, TLSMemoryBIOProtocol):
        held += sum(map(len, transport._appSendBuffer))
        transport = transport.transport
    if isinstance(transport, tcp.Connection):
        held += len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    return held


# The last interface of each transport declaration seen (see
# DirectTLSProtocol.makeConnection): a few kinds of transport per process.
_LAST_INTERFACE: WeakKeyDictionary[Any, tuple[Any, ...]] = WeakKeyDictionary()


class DirectTLSProtocol(TLSMemoryBIOProtocol):
    """
    Twisted's server-side TLS protocol, sending its output as soon as it is
    made (see L{send_now}), and all the TLS records of one C{write} in one
    system call (Twisted's sends each 16 KiB record on its own).

    The records of one read are given to the wrapped protocol within its
    C{read_batch()} context, if it has one (L{ChatServerProtocol.read_batch}).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set before Twisted's attributes, for every instance alike (see
        # ChatServerProtocol.__init__ on why that saves memory).
        self._send_now = False
        # While write() makes records, they are kept here and sent after.
        self._records: list[bytes] | None = None
        # Whether the handshake's memory BIOs were let go (see dataReceived).
        self._bios_renewed = False
        super().__init__(*args, **kwargs)

    def dataReceived(self, data: bytes) -> None:
        # One read of the socket holds many TLS records, which OpenSSL hands
        # out one by one (a client that writes one line at a time sends a
        # record per line): a wrapped protocol that can take them as one
        # batch gets them within it.
        read_batch = getattr(self.wrappedProtocol, "read_batch", None)
        if read_batch is None:
            super().dataReceived(data)
        else:
            with read_batch():
                super().dataReceived(data)
        if not self._bios_renewed and self._handshakeDone:
            connection = self._tlsConnection
            if connection is not None and not self._lostTLSConnection:
                self._bios_renewed = renew_bios(connection)

    def makeConnection(self, transport: Any) -> None:
        self._send_now = can_send_now(transport)
        # Twisted's own, but for one thing: it declares each interface the
        # transport provides with a directlyProvides call of its own (9 for
        # TCP, 25 us a connection, a tenth of a handshake's Python), and
        # each call replaces what the one before declared, so the last
        # interface is all it ends with.  That one is declared here, once.
        self._tlsConnection = self.factory._creatorCallable(self)
        self._appSendBuffer = []
        declared = providedBy(transport)
        last = _LAST_INTERFACE.get(declared)
        if last is None:
            # Listing a declaration walks all its bases (40 calls for TCP);
            # every connection of a port has the same one.
            last = _LAST_INTERFACE[declared] = tuple(declared)[-1:]
        if last:
            directlyProvides(self, *last)
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        if self._connectWrapped:
            ProtocolWrapper.makeConnection(self, transport)
        self._checkHandshakeStatus()

    def write(self, data: bytes) -> None:
        if not self._send_now:
            super().write(data)
            return
        if (
            len(data) <= _RECORD
            and self._handshakeDone
            and not self.disconnecting
            and not self._lostTLSConnection
            and not self._appSendBuffer
        ):
            # One record (a line, or a turn's lines for one client: the
            # server's most frequent write), made and read out of OpenSSL
            # by direct calls.  Through Twisted's and pyOpenSSL's layers it
            # is eight Python calls, about a third of a small write's CPU.
            # Anything unusual (an error, OpenSSL wanting to read) takes
            # their path below, which asks OpenSSL again.
            connection = self._tlsConnection
            written = _lib.SSL_write(connection._ssl, data, len(data))
            if written > 0:
                self._send_out(connection)
                if written == len(data):
                    return
                data = data[written:]
        records: list[bytes] = []
        self._records = records
        try:
            super().write(data)
        finally:
            self._records = None
        if records:
            send_now(
                self.transport, records[0] if len(records) == 1 else b"".join(records)
            )

    def _send_out(self, connection: SSL.Connection) -> None:
        """Send what OpenSSL made for C{connection}'s peer."""
        out = connection._from_ssl
        size = _lib.BIO_read(out, _OUT, _READ_SIZE)
        if size <= 0:
            return  # Nothing to send.
        data = _ffi.buffer(_OUT, size)[:]
        if size == _READ_SIZE:
            chunks = [data]
            while (size := _lib.BIO_read(out, _OUT, _READ_SIZE)) > 0:
                chunks.append(_ffi.buffer(_OUT, size)[:])
            data = b"".join(chunks)
        send_now(self.transport, data)

    def _flushSendBIO(self) -> None:
        if not self._send_now:
            super()._flushSendBIO()
            return
        # Read out after every record: OpenSSL's memory buffer keeps the
        # size of the most it ever held, for the life of the connection.
        try:
            data = self._tlsConnection.bio_read(_READ_SIZE)
        except WantReadError:
            return  # Nothing to send.
        if len(data) == _READ_SIZE:
            chunks = [data]
            while len(chunks[-1]) == _READ_SIZE:
                try:
                    chunks.append(self._tlsConnection.bio_read(_READ_SIZE))
                except WantReadError:
                    break
            data = b"".join(chunks)
        if self._records is not None:
            self._records.append(data)
        else:
            send_now(self.transport, data)
