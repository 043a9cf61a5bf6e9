# -*- test-case-name: tests.test_bench_capacity -*-
"""
Capacity at a latency bound, from the steps of a rising load: pure
functions, kept apart from the benchmark's processes so that a unit test
can load them alone (C{tests/test_bench_capacity.py}).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The light-load capacity is the highest rate whose p99 stays at most this.
P99_LIMIT_MS = 5.0
#: The rate keeps rising while steps stay within this (a second, looser
#: capacity): on a shared machine others' load alone can put the p99 over
#: 5 ms, and the curve above it still shows how the servers scale.
P99_GIVE_UP_MS = 50.0
#: A step whose clients got less than this share of what was offered did
#: not carry its rate (the server, or the load generator, fell behind).
MIN_DELIVERED_SHARE = 0.95


def step_passes(
    step: Mapping[str, Any],
    p99_limit_ms: float = P99_LIMIT_MS,
    min_share: float = MIN_DELIVERED_SHARE,
) -> bool:
    """
    Whether one step carried its offered rate within the latency bound:
    p99 at most C{p99_limit_ms} and at least C{min_share} of the offered
    deliveries delivered.  A step without a p99 (no line arrived) fails.
    """
    p99 = step.get("p99_ms")
    share = step.get("delivered_share")
    if p99 is None or share is None or p99 != p99:  # NaN: no samples
        return False
    return bool(p99 <= p99_limit_ms and share >= min_share)


def capacity(
    steps: Sequence[Mapping[str, Any]],
    p99_limit_ms: float = P99_LIMIT_MS,
    min_share: float = MIN_DELIVERED_SHARE,
) -> Mapping[str, Any] | None:
    """
    The step of the highest offered rate that passed (L{step_passes}), or
    None if none did.  A step that passed above one that failed counts:
    on a shared machine a single step can fail because of someone else's
    load, and the load keeps rising until two steps in a row fail
    (L{keep_stepping}).
    """
    passed = [s for s in steps if step_passes(s, p99_limit_ms, min_share)]
    if not passed:
        return None
    return max(passed, key=lambda s: float(s["offered_lines_per_s"]))


def first_failed_above(
    steps: Sequence[Mapping[str, Any]],
    best: Mapping[str, Any] | None,
    p99_limit_ms: float = P99_LIMIT_MS,
    min_share: float = MIN_DELIVERED_SHARE,
) -> Mapping[str, Any] | None:
    """
    The first step above C{best} (the capacity; every step if None) that
    failed: what stopped the capacity there.
    """
    floor = float(best["offered_lines_per_s"]) if best is not None else -1.0
    for step in steps:
        if float(step["offered_lines_per_s"]) > floor and not step_passes(
            step, p99_limit_ms, min_share
        ):
            return step
    return None


def keep_stepping(
    steps: Sequence[Mapping[str, Any]],
    failures_in_a_row: int = 2,
    p99_limit_ms: float = P99_LIMIT_MS,
    min_share: float = MIN_DELIVERED_SHARE,
) -> bool:
    """Whether to try a higher rate: not after C{failures_in_a_row} failed."""
    last = steps[-failures_in_a_row:]
    return len(last) < failures_in_a_row or any(
        step_passes(s, p99_limit_ms, min_share) for s in last
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """C{numerator / denominator}, or None if either is missing or zero."""
    if not numerator or not denominator:
        return None
    if numerator != numerator or denominator != denominator:  # NaN
        return None
    return numerator / denominator
