# -*- test-case-name: tests.test_direct -*-
"""
Twisted's TCP send buffer, seen from the TLS layer: TLS output sent at once
instead of a reactor turn later (L{send_now}), and what the buffer holds
(L{tcp_held}).

Twisted's TCP transport never sends from C{write}: it buffers the bytes,
asks the reactor to watch the socket for writing (a system call), sends on
the next turn, and stops watching (another system call).  A chat server
that relays a line to a hundred clients pays that for each of them, for
every line, and the line waits a turn.  Like asyncio, L{send_now} tries the
socket first and leaves to the transport only what the socket did not take.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.protocols.policies import ProtocolWrapper

# The buffer attributes send_now and tcp_held read are Twisted's own
# (FileDescriptor); where a transport lacks them, everything goes through
# its write().
_BUFFER_ATTRIBUTES = (
    "dataBuffer",
    "offset",
    "_tempDataBuffer",
    "_tempDataLen",
    "_writeDisconnected",
)


def socket_transport(transport: Any) -> Any:
    """
    The transport below C{transport}'s wrappers that pass writes on as they
    are (the PROXY header reader is one): the one with the socket, for
    L{send_now} and L{tcp_held}.  A wrapper with a C{write} of its own is
    not looked through.
    """
    while isinstance(transport, ProtocolWrapper) and (
        type(transport).write is ProtocolWrapper.write
    ):
        transport = transport.transport
    return transport


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


def tcp_held(transport: Any) -> int:
    """
    The bytes a Twisted TCP C{transport} holds for sending; other
    transports (test fakes) count as holding nothing.
    """
    if not isinstance(transport, tcp.Connection):
        return 0
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
