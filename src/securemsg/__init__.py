"""
securemsg: a TLS-encrypted multi-user chat server and client on Twisted.

The server side is L{ChatServerFactory} (L{securemsg.server}), which works
with any Twisted server endpoint; L{securemsg.server.tls_server_endpoint}
adds securemsg's TLS policy to one.

The embedding names are imported on first use, so C{import securemsg} loads
nothing but the version.
"""

from typing import TYPE_CHECKING, Any

from securemsg._version import __version__

if TYPE_CHECKING:
    from securemsg.server import ChatServerFactory, ChatServerProtocol

__all__ = ["ChatServerFactory", "ChatServerProtocol", "__version__"]

_LAZY = frozenset({"ChatServerFactory", "ChatServerProtocol"})


def __getattr__(name: str) -> Any:
    # Loaded on first use: the client and the command need none of the server.
    if name in _LAZY:
        from securemsg import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
