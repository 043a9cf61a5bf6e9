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

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from twisted.internet import tcp

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
        # Not to be taken for the error of the connection's next call.
        _lib.ERR_clear_error()
        return False
    # The SSL object owns its BIOs: this frees the old pair.
    _lib.SSL_set_bio(connection._ssl, fresh_into, fresh_out)
    connection._into_ssl, connection._from_ssl = fresh_into, fresh_out
    return True
