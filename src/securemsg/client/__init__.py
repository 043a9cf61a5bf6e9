"""
The chat client: the client API, server trust, and the C{securemsg chat}
session with its pipe and terminal front ends; imports only
L{securemsg.protocol} and L{securemsg.tls}.

The client API is re-exported here (C{from securemsg.client import connect}).
"""

from securemsg.client.api import (
    DEFAULT_PORT,
    MAX_LINE_LENGTH,
    ChatClient,
    ClientError,
    ConnectionFailed,
    ProtocolError,
    VerificationFailed,
    connect,
    split_address,
)

__all__ = [
    "DEFAULT_PORT",
    "MAX_LINE_LENGTH",
    "ChatClient",
    "ClientError",
    "ConnectionFailed",
    "ProtocolError",
    "VerificationFailed",
    "connect",
    "split_address",
]
