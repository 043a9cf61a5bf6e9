"""
Tests for L{securemsg.core.flood}: the token bucket, on a fake clock.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from securemsg.core.flood import COMMAND_COSTS, TokenBucket, command_cost
from securemsg.protocol import wire


class TokenBucketTests(SynchronousTestCase):
    """
    L{TokenBucket} allows a burst, then a steady rate.
    """

    def test_burst_then_refused(self) -> None:
        """A full bucket allows C{burst} lines at once, then refuses."""
        bucket = TokenBucket(Clock(), burst=3, rate=1)
        self.assertEqual([bucket.allow() for _ in range(5)], [True] * 3 + [False] * 2)
        self.assertEqual(bucket.dropped_in_a_row, 2)

    def test_refills_at_rate(self) -> None:
        """Tokens come back at C{rate} per second, never above C{burst}."""
        clock = Clock()
        bucket = TokenBucket(clock, burst=2, rate=4)
        self.assertTrue(bucket.allow() and bucket.allow())
        self.assertFalse(bucket.allow())
        clock.advance(0.25)
        self.assertTrue(bucket.allow())
        self.assertFalse(bucket.allow())
        clock.advance(100)
        self.assertEqual([bucket.allow() for _ in range(3)], [True, True, False])

    def test_allowed_line_resets_count(self) -> None:
        """The count of lines refused in a row restarts after an allowed one."""
        clock = Clock()
        bucket = TokenBucket(clock, burst=1, rate=1)
        bucket.allow()
        bucket.allow()
        self.assertEqual(bucket.dropped_in_a_row, 1)
        clock.advance(1)
        self.assertTrue(bucket.allow())
        self.assertEqual(bucket.dropped_in_a_row, 0)

    def test_invalid(self) -> None:
        """A bucket that could never allow anything is refused."""
        self.assertRaises(ValueError, TokenBucket, Clock(), burst=0)
        self.assertRaises(ValueError, TokenBucket, Clock(), rate=0)

    def test_cost(self) -> None:
        """
        A costly command takes several tokens at once; a cost over the burst
        takes the whole bucket rather than never passing.
        """
        clock = Clock()
        bucket = TokenBucket(clock, burst=10, rate=1)
        self.assertEqual([bucket.allow(4) for _ in range(3)], [True, True, False])
        self.assertTrue(bucket.allow(2))
        self.assertFalse(bucket.allow(1))
        clock.advance(100)
        self.assertTrue(bucket.allow(50))
        self.assertFalse(bucket.allow(1))


class CommandCostTests(SynchronousTestCase):
    """
    L{command_cost} weighs commands by what they cost the server.
    """

    def test_costs(self) -> None:
        """
        Chat lines cost 1; commands whose reply can be large, and /join,
        cost more.
        """
        self.assertEqual(command_cost(wire.Say("hi")), 1)
        self.assertEqual(command_cost(None), 1)
        self.assertEqual(command_cost(wire.Private("bob", "hi")), 1)
        self.assertEqual(command_cost(wire.HistoryRequest(None, 50)), 5)
        self.assertEqual(command_cost(wire.Rooms()), 5)
        self.assertEqual(command_cost(wire.Join("#big")), 5)
        self.assertEqual(command_cost(wire.Who(None)), 2)
        self.assertEqual(command_cost(wire.Help()), 2)
        self.assertTrue(all(cost > 1 for cost in COMMAND_COSTS.values()))
