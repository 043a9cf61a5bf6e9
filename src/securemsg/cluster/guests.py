# -*- test-case-name: tests.test_cluster -*-
"""
Guest numbers unique across a cluster, without a round trip per guest.

Each node reserves blocks of guest numbers from the link (in Redis, one
C{INCRBY NAME:guests} per block), asking for the next block while half of
one is still left, and its chat numbers its guests from them
(L{securemsg.core.hub.ChatHub.guest_numbers}).  So two nodes never give
out the same guest name, and a guest is not renamed right after
connecting because another node's guest holds the name.

While no number is reserved (Redis out of reach when a block was needed),
the chat numbers its guests itself, as one process does: the name's claim
still keeps it unique, and a guest whose name another node holds is
renamed, as before.
"""

from __future__ import annotations

from collections import deque

from twisted.python.failure import Failure

from securemsg.cluster.interface import IClusterLink

#: How many guest numbers a node reserves at once.
BLOCK_SIZE = 100


class GuestNumbers:
    """
    The guest numbers reserved for one node, handed out in order.
    """

    def __init__(self, link: IClusterLink, block_size: int = BLOCK_SIZE) -> None:
        self.link = link
        self.block_size = block_size
        # Reserved and not given out yet, oldest first.
        self._blocks: deque[range] = deque()
        self._asking = False

    @property
    def left(self) -> int:
        """How many reserved numbers are not given out yet."""
        return sum(len(block) for block in self._blocks)

    def take(self) -> int | None:
        """
        The next guest number reserved for this node, or L{None} if none
        is (the chat then numbers the guest itself).
        """
        number = None
        if self._blocks:
            block = self._blocks[0]
            number = block[0]
            if len(block) > 1:
                self._blocks[0] = block[1:]
            else:
                self._blocks.popleft()
        self.refill()
        return number

    def refill(self) -> None:
        """
        Reserve the next block if no more than half of one is left (and
        the link is up, and no block is being asked for already).
        """
        if self._asking or not self.link.up or self.left > self.block_size // 2:
            return
        self._asking = True
        self.link.reserve_guests(self.block_size).addCallbacks(
            self._reserved, self._failed
        )

    def _reserved(self, first: int) -> None:
        self._asking = False
        self._blocks.append(range(first, first + self.block_size))

    def _failed(self, reason: Failure) -> None:
        # The link logs what failed; the next guest (or link up) asks again.
        self._asking = False
