# -*- test-case-name: tests.test_flood -*-
"""
Flood control: how many lines one connection may send, as a token bucket,
with commands weighed by what they cost the server.

No I/O here; the time comes from an injected clock.
"""

from __future__ import annotations

from typing import Final

from twisted.internet.interfaces import IReactorTime

from securemsg.protocol import wire

DEFAULT_BURST: Final = 20
DEFAULT_RATE: Final = 5.0

#: What a command costs in tokens, where it is more than a chat line's 1:
#: those whose reply can be large (up to L{Limits.reply_bytes}: the history
#: read from the database, every room, every member) or, for a /join, that
#: replay a room's history and announce the arrival to all of it.  With the
#: default burst of 20, a client may ask for 4 histories at once, then one
#: a second.
COMMAND_COSTS: Final[dict[type[wire.Command], int]] = {
    wire.HistoryRequest: 5,
    wire.Rooms: 5,
    wire.Join: 5,
    wire.Who: 2,
    wire.Help: 2,
}


def command_cost(command: wire.Command | None) -> int:
    """The tokens C{command} costs (a plain line, or nothing, costs 1)."""
    if command is None:
        return 1
    return COMMAND_COSTS.get(type(command), 1)


class TokenBucket:
    """
    Allows bursts of up to C{burst} lines, refilled at C{rate} lines per
    second.  A line is allowed if a whole token is left, and costs one.

    @ivar dropped_in_a_row: lines refused since the last one allowed; the
        server disconnects a client that keeps flooding.
    """

    __slots__ = ("_clock", "_last", "_tokens", "burst", "dropped_in_a_row", "rate")

    def __init__(
        self,
        clock: IReactorTime,
        burst: int = DEFAULT_BURST,
        rate: float = DEFAULT_RATE,
    ) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("a token bucket needs burst >= 1 and rate > 0")
        self._clock = clock
        self.burst = burst
        self.rate = rate
        self._tokens = float(burst)
        self._last = clock.seconds()
        self.dropped_in_a_row = 0

    def allow(self, cost: int = 1) -> bool:
        """
        Take C{cost} tokens (at most C{burst}, so that anything can pass a
        full bucket) if there are that many; say whether there were.
        """
        now = self._clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        cost = min(cost, self.burst)
        if self._tokens >= cost:
            self._tokens -= cost
            self.dropped_in_a_row = 0
            return True
        self.dropped_in_a_row += 1
        return False

    def full(self) -> bool:
        """
        Whether the bucket has refilled to its burst: then it allows what a
        new bucket would, and whoever keeps buckets may forget it.
        """
        elapsed = self._clock.seconds() - self._last
        return self._tokens + elapsed * self.rate >= self.burst
