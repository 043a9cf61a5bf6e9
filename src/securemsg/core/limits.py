# -*- test-case-name: tests.test_protections -*-
"""
The limits that keep one client from hurting the others, and the other
bounds of what the server gives, with their defaults, written here only.
Each is a C{twistd securemsg} option whose default is read from here (see
L{securemsg.tap}), except the bounds of large replies (C{reply_bytes},
C{list_max}).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
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
    @ivar max_per_address: connections held at once from one client: one
        IPv4 address, or one IPv6 /64 (see L{client_key}).
    @ivar ipv6_prefix: the length of the IPv6 network that counts as one
        client, in the per-address limit and in a guest's ban.
    @ivar ipv4_prefix: the same for IPv4 (32: each address is a client).
    @ivar connect_burst: new connections one client may open at once ...
    @ivar connect_rate: ... and per second after that; more are closed at
        once, before any TLS work.
    @ivar flood_burst: lines a client may send at once (a costly command
        counts as several: see L{securemsg.core.flood.COMMAND_COSTS}) ...
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
    @ivar line_flush: seconds text without a newline may wait for more
        before it is taken as a whole line (for clients that send each
        message without a newline); 0 to wait for the newline (or the end of
        the connection) however long it takes.
    @ivar max_rooms: rooms that may exist at once (each holds its last
        messages in memory); 0 for no limit.
    @ivar max_rooms_per_address: rooms besides the default one that the
        clients from one IP address may be in at once; 0 for no limit.
    @ivar max_line_length: the longest line accepted, in bytes, without its
        line ending; at least 1.
    @ivar replay: how many past messages a user gets on joining a room (0:
        none), and the fewest a history keeps at hand for each room.
    @ivar announce_max: arrivals and departures are announced only in rooms
        with at most this many members (in a larger room they would be most
        of the traffic, and cost each arrival a line to everyone); 0
        announces them everywhere.
    """

    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    max_connections: int = 1000
    max_per_address: int = 20
    ipv6_prefix: int = 64
    ipv4_prefix: int = 32
    connect_burst: int = 20
    connect_rate: float = 5.0
    flood_burst: int = 20
    flood_rate: float = 5.0
    flood_disconnect: int = 100
    send_queue: int = 1024 * 1024
    reply_bytes: int = 128 * 1024
    list_max: int = 200
    shutdown_grace: float = 5.0
    line_flush: float = 0.2
    max_rooms: int = 500
    max_rooms_per_address: int = 20
    max_line_length: int = 4096
    replay: int = 50
    announce_max: int = 200

    def __post_init__(self) -> None:
        if self.max_line_length < 1:
            raise ValueError("max_line_length must be at least 1")

    def client_key(self, host: str) -> str:
        """L{client_key} with these limits' prefix lengths."""
        return client_key(host, self.ipv6_prefix, self.ipv4_prefix)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    C{host} as an IP address, if it is one: an IPv4 address mapped into
    IPv6 (C{::ffff:192.0.2.1}, as a dual-stack socket shows an IPv4 peer)
    as the IPv4 address, and without an IPv6 zone (C{%eth0}).
    """
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def client_key(host: str, ipv6_prefix: int = 64, ipv4_prefix: int = 32) -> str:
    """
    What stands for one client at the IP address C{host}, in the limit of
    connections per address and in a guest's ban: the network of
    C{ipv6_prefix} bits around an IPv6 address (one subscriber is usually
    given a whole /64, so any of its addresses is the same client), and of
    C{ipv4_prefix} bits around an IPv4 address (32 by default: the address
    itself).  An address that is a whole network by itself is written
    without a prefix length: C{192.0.2.7}, C{2001:db8::/64}.

    Anything that is not an IP address is its own key.
    """
    # Asked twice for every connection (the limit per address when it is
    # accepted, the ban when it joins), mostly for the same few addresses:
    # parsing one costs about 5 us, a look-up a tenth of that.
    return _client_key(host, ipv6_prefix, ipv4_prefix)


@lru_cache(maxsize=4096)
def _client_key(host: str, ipv6_prefix: int, ipv4_prefix: int) -> str:
    address = _ip(host)
    if address is None:
        return host
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    if prefix >= address.max_prefixlen:
        return str(address)
    return str(ipaddress.ip_network((address, prefix), strict=False))


@lru_cache(maxsize=1024)
def _network(key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(key, strict=False)
    except ValueError:
        return None


def covering_key(keys: Iterable[str], host: str) -> str | None:
    """
    The first of C{keys} (made by L{client_key}, with whatever prefix
    lengths were in force then) that C{host} belongs to: the key itself, or
    an address in its network; L{None} if none.
    """
    # Parsed only once there is a key to compare with: every client that
    # joins is looked up in the bans, which are usually none.
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    parsed = False
    for key in keys:
        if key == host:
            return key
        if not parsed:
            address, parsed = _ip(host), True
        if address is None:
            continue
        network = _network(key)
        # Versions apart, "in" compares the bits of an IPv4 address with an
        # IPv6 network's.
        if (
            network is not None
            and network.version == address.version
            and address in network
        ):
            return key
    return None
