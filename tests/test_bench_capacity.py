"""
Tests for C{bench/capacity.py}: the light-load capacity at p99 <= 5 ms that
the cluster rows of C{bench/run.py} report, found from the steps of a
rising rate.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase


def _load() -> Any:
    """C{bench/capacity.py}, which is not in a package: loaded by path."""
    path = Path(__file__).resolve().parent.parent / "bench" / "capacity.py"
    spec = importlib.util.spec_from_file_location("bench_capacity", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


capacity = _load()


def step(offered: float, p99: float, share: float = 1.0) -> dict[str, Any]:
    """One step of the rising rate, with the figures the helpers read."""
    return {"offered_lines_per_s": offered, "p99_ms": p99, "delivered_share": share}


class CapacityTests(SynchronousTestCase):
    """
    L{capacity.capacity} picks the highest offered rate that kept p99 within
    5 ms and delivered what was offered.
    """

    def test_highest_passing_step(self) -> None:
        """The step below the first one over 5 ms is the capacity."""
        steps = [step(200, 1.2), step(500, 3.9), step(1000, 5.0), step(1500, 7.5)]
        self.assertEqual(capacity.capacity(steps), steps[2])

    def test_behind_is_not_carried(self) -> None:
        """
        A step within the latency bound whose clients got less than 95% of
        what was offered (the server or the load generator fell behind)
        does not count.
        """
        steps = [step(200, 1.0), step(500, 2.0, share=0.90)]
        self.assertEqual(capacity.capacity(steps), steps[0])

    def test_noisy_step_below(self) -> None:
        """
        One step that failed below a higher one that passed (someone else's
        load on a shared machine) does not hide the higher one.
        """
        steps = [step(200, 1.0), step(500, 6.0), step(1000, 4.0), step(1500, 9.0)]
        self.assertEqual(capacity.capacity(steps), steps[2])

    def test_none_passed(self) -> None:
        """No step within the bound: no capacity, and a step with no
        samples (p99 NaN) fails."""
        steps = [step(200, 6.0), step(500, float("nan"))]
        self.assertIsNone(capacity.capacity(steps))
        self.assertIsNone(capacity.capacity([]))

    def test_first_failed_above(self) -> None:
        """
        What stopped the capacity is the first failed step above it, not a
        noisy one below it; with no capacity, the first failed step.
        """
        steps = [step(200, 6.0), step(500, 4.0), step(1000, 9.0), step(1500, 8.0)]
        best = capacity.capacity(steps)
        self.assertEqual(capacity.first_failed_above(steps, best), steps[2])
        self.assertEqual(capacity.first_failed_above(steps[:1], None), steps[0])
        self.assertIsNone(capacity.first_failed_above(steps[1:2], steps[1]))

    def test_keep_stepping(self) -> None:
        """The rate rises until two steps in a row have failed."""
        self.assertTrue(capacity.keep_stepping([step(200, 1.0)]))
        self.assertTrue(capacity.keep_stepping([step(200, 6.0)]))
        self.assertTrue(capacity.keep_stepping([step(200, 6.0), step(500, 4.0)]))
        self.assertFalse(
            capacity.keep_stepping([step(100, 1.0), step(200, 6.0), step(500, 7.0)])
        )
        # With the looser bound the rate goes on rising past 5 ms.
        self.assertTrue(
            capacity.keep_stepping(
                [step(200, 6.0), step(500, 7.0)],
                p99_limit_ms=capacity.P99_GIVE_UP_MS,
            )
        )

    def test_ratio(self) -> None:
        """A ratio of two figures, or None when one is missing or zero."""
        self.assertEqual(capacity.ratio(3.0, 2.0), 1.5)
        self.assertIsNone(capacity.ratio(None, 2.0))
        self.assertIsNone(capacity.ratio(3.0, 0.0))
        self.assertIsNone(capacity.ratio(float("nan"), 2.0))
