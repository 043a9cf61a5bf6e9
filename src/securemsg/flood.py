# -*- test-case-name: tests.test_flood -*-
"""
Flood control: how many lines one connection may send, as a token bucket.

No I/O here; the time comes from an injected clock.
"""

from __future__ import annotations

from typing import Final

from twisted.internet.interfaces import IReactorTime

DEFAULT_BURST: Final = 20
DEFAULT_RATE: Final = 5.0


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

    def allow(self) -> bool:
        """Take a token for one line if there is one; say whether there was."""
        now = self._clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            self.dropped_in_a_row = 0
            return True
        self.dropped_in_a_row += 1
        return False
