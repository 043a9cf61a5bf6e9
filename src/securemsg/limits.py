"""
The limits that keep one client from hurting the others, with their
defaults.  Each is a C{twistd securemsg} option (see L{securemsg.tap}).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """
    @ivar handshake_timeout: seconds a connection may take to finish its TLS
        handshake before it is aborted.
    @ivar idle_timeout: seconds without a line from a client before it is
        disconnected (C{/ping} keeps a connection alive); 0 for none.
    @ivar max_connections: connections held at once, in total; more are
        closed at once, before any TLS work.
    @ivar max_per_address: connections held at once from one IP address.
    @ivar flood_burst: lines a client may send at once ...
    @ivar flood_rate: ... and per second after that; lines over the rate
        get an error and are dropped.
    @ivar flood_disconnect: lines dropped in a row before a flooding client
        is disconnected.
    @ivar send_queue: the most bytes the server holds for one client before
        it is disconnected: counted as they are queued (whatever produced
        them), with what Twisted's transports held when they last paused
        the server's writes (the kernel's socket buffer is not counted).
    @ivar shutdown_grace: seconds a closing connection (at shutdown, on
        /quit, a kick, a timeout) gets to flush what is queued and close its
        TLS connection cleanly before it is aborted.
    """

    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    max_connections: int = 1000
    max_per_address: int = 20
    flood_burst: int = 20
    flood_rate: float = 5.0
    flood_disconnect: int = 100
    send_queue: int = 1024 * 1024
    shutdown_grace: float = 5.0
