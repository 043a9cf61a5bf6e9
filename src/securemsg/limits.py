"""
The limits that keep one client from hurting the others, with their
defaults.  Each is a C{twistd securemsg} option (see L{securemsg.tap}),
except the bounds of large replies (C{reply_bytes}, C{list_max}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: What each entry of a bounded reply counts on top of its text, names
#: and room, in bytes: more than text or JSON adds around them (a time,
#: field names, punctuation).
REPLY_ENTRY_OVERHEAD: Final = 96


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
    @ivar connect_burst: new connections one IP address may open at once ...
    @ivar connect_rate: ... and per second after that; more are closed at
        once, before any TLS work.
    @ivar flood_burst: lines a client may send at once (a costly command
        counts as several: see L{securemsg.flood.COMMAND_COSTS}) ...
    @ivar flood_rate: ... and per second after that; lines over the rate
        get an error and are dropped.
    @ivar flood_disconnect: lines dropped in a row before a flooding client
        is disconnected.
    @ivar send_queue: the most bytes the server holds for one client before
        it is disconnected: counted as they are queued (whatever produced
        them), with what Twisted's transports held when they last paused
        the server's writes (the kernel's socket buffer is not counted).
    @ivar reply_bytes: the most bytes of entries one reply that can be
        large carries: C{/history}, the replay on joining a room, C{/rooms}
        and C{/who}.  Each entry counts its text, names and room in UTF-8,
        plus L{REPLY_ENTRY_OVERHEAD} (time, JSON field names); a
        reply keeps the newest messages (or the first rooms or names) that
        fit, and says how many it left out.
    @ivar list_max: the most rooms one C{/rooms} lists, and names one
        C{/who}.
    @ivar shutdown_grace: seconds a closing connection (at shutdown, on
        /quit, a kick, a timeout) gets to flush what is queued and close its
        TLS connection cleanly before it is aborted.
    """

    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    max_connections: int = 1000
    max_per_address: int = 20
    connect_burst: int = 20
    connect_rate: float = 5.0
    flood_burst: int = 20
    flood_rate: float = 5.0
    flood_disconnect: int = 100
    send_queue: int = 1024 * 1024
    reply_bytes: int = 128 * 1024
    list_max: int = 200
    shutdown_grace: float = 5.0
