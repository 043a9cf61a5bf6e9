"""
securemsg: a TLS-encrypted multi-user chat server and client on Twisted.

The server side is L{ChatServerFactory}, which works with any Twisted server
endpoint; L{securemsg.tls} adds securemsg's TLS policy to one.
"""

from securemsg._version import __version__
from securemsg.server import ChatServerFactory, ChatServerProtocol

__all__ = ["ChatServerFactory", "ChatServerProtocol", "__version__"]
