"""
The chat server: protocol, factory, TLS listener guard, direct sends, services
and certificate reload; imports L{securemsg.protocol}, L{securemsg.core} and
L{securemsg.tls}.

The public embedding API is re-exported here.
"""

from securemsg.server.endpoint import tls_server_endpoint
from securemsg.server.factory import ChatServerFactory
from securemsg.server.protocol import ChatServerProtocol

__all__ = ["ChatServerFactory", "ChatServerProtocol", "tls_server_endpoint"]
