"""
Fan-out in one process, without sockets or TLS: what securemsg's own Python
costs per delivered line.

    python bench/fanout_inprocess.py [--receivers 100,1000] [--per-read 1,160]
    python bench/fanout_inprocess.py --profile 100:160   # cProfile of one case

A standalone factory (in-memory history, flood limits raised as
``bench/run.py`` raises them) serves N receivers and one speaker on
transports that drop what is written to them, driven by a fake clock.  The
speaker's lines arrive C{per-read} to a C{dataReceived} call (a TLS record:
``bench/run.py``'s generator writes 50 to 500 lines at a time, so records of
up to 16 KiB, about 160 lines of 100 bytes), and 160 lines make a reactor
turn, at the end of which the output is flushed.  The figure is CPU time
(C{time.process_time}) per delivered line (lines x receivers), best of 5.

It uses only APIs that have not changed since the bench was written
(C{ChatServerFactory.standalone}, C{Limits}, C{buildProtocol}), so the same
file measures any revision: copy it out and run it with that revision's
C{src/} first on C{PYTHONPATH}.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from securemsg.core.limits import Limits
from securemsg.server.factory import ChatServerFactory

LINE = b"x" * 99 + b"\n"
TURN_LINES = 160
RUNS = 5


class NullTransport(StringTransport):
    """A transport that takes everything and keeps nothing."""

    def write(self, data: bytes) -> None:
        pass

    def writeSequence(self, data: Any) -> None:
        pass


def setup(receivers: int) -> tuple[Clock, Any, Any]:
    """A factory with C{receivers} joined clients and one speaker."""
    clock = Clock()
    limits = Limits(
        flood_burst=10**9,
        flood_rate=10**9,
        idle_timeout=0,
        max_connections=receivers + 10,
        max_per_address=receivers + 10,
    )
    factory = ChatServerFactory.standalone(clock, greeting="", limits=limits)
    protocols = []
    for _ in range(receivers + 1):
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(NullTransport())
        protocols.append(protocol)
    # Let the arrivals' announcements go.
    clock.advance(1)
    return clock, factory, protocols[-1]


def speak(clock: Clock, speaker: Any, lines: int, per_read: int) -> None:
    """The speaker says C{lines} lines, C{per_read} at a time."""
    data = LINE * per_read
    reads_per_turn = max(1, TURN_LINES // per_read)
    said = 0
    while said < lines:
        for _ in range(reads_per_turn):
            speaker.dataReceived(data)
            said += per_read
        clock.advance(0)


def measure(receivers: int, per_read: int) -> float:
    """CPU microseconds per delivered line, best of L{RUNS}."""
    clock, _, speaker = setup(receivers)
    lines = max(TURN_LINES, 1_000_000 // receivers // TURN_LINES * TURN_LINES)
    speak(clock, speaker, TURN_LINES, per_read)  # warm up
    best = float("inf")
    for _ in range(RUNS):
        gc.collect()
        start = time.process_time()
        speak(clock, speaker, lines, per_read)
        elapsed = time.process_time() - start
        best = min(best, elapsed)
    return best * 1e6 / (lines * receivers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", default="100,1000")
    parser.add_argument("--per-read", default="1,160")
    parser.add_argument(
        "--profile", metavar="N:PER_READ", help="cProfile one case instead"
    )
    args = parser.parse_args()
    if args.profile:
        receivers, per_read = map(int, args.profile.split(":"))
        clock, _, speaker = setup(receivers)
        lines = max(TURN_LINES, 400_000 // receivers // TURN_LINES * TURN_LINES)
        profile = cProfile.Profile()
        profile.runcall(speak, clock, speaker, lines, per_read)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return
    receivers_list = [int(n) for n in args.receivers.split(",")]
    per_reads = [int(n) for n in args.per_read.split(",")]
    print("| receivers | lines per read | CPU µs per delivered line |")
    print("|---|---|---|")
    for receivers in receivers_list:
        for per_read in per_reads:
            figure = measure(receivers, per_read)
            print(f"| {receivers} | {per_read} | {figure:.3f} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
