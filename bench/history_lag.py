"""
How far the history's SQLite writes fall behind while the reactor is busy.

    python bench/history_lag.py [--busy 5] [--idle 3] [--thread]

It runs securemsg's own ``SqliteHistory`` on the real reactor, in a
temporary folder. For ``--busy`` seconds the reactor thread does what a
saturated chat server does: Python work with a system call every few dozen
lines (each of which lets go of the GIL for a moment) while it records
messages. Then it idles for ``--idle`` seconds. It prints how many messages
were recorded, and how many were in the database at the end of each phase.

By default the history writes each batch on the reactor's thread, in WAL
mode, and every message is in the database at the end of the busy phase.
``--thread`` makes it write on its pool's thread, as it does where WAL mode
is not available (and as it always did before): then almost nothing is
written until the reactor idles. CPython hands the GIL to a waiting thread
only when the holder has kept it for the switch interval without letting
go, and a thread that makes system calls lets go all the time, so the
writer thread almost never gets it (the "convoy effect").
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from twisted.internet import reactor

from securemsg.core import history
from securemsg.protocol import wire


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=float, default=5.0)
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument(
        "--thread", action="store_true", help="write on the pool's thread"
    )
    args = parser.parse_args()
    if args.thread:
        history._write_ahead = lambda connection: False  # type: ignore[assignment]
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "history.sqlite3")
    kept = history.SqliteHistory.open(path, reactor, 50)
    devnull = os.open(os.devnull, os.O_WRONLY)
    recorded = 0
    busy_until = time.monotonic() + args.busy
    counts: list[tuple[str, int]] = []

    def written() -> int:
        connection = sqlite3.connect(path)
        try:
            (count,) = connection.execute("SELECT count(*) FROM messages").fetchone()
        finally:
            connection.close()
        return int(count)

    def busy() -> None:
        nonlocal recorded
        end = min(time.monotonic() + 0.05, busy_until)
        while time.monotonic() < end:
            for _ in range(40):
                kept.record(wire.Message("guest-1", "x" * 99, "#lobby", time.time()))
                recorded += 1
                sum(range(300))  # the rest of the work for that line
            os.write(devnull, b"x")  # a system call, as send() is
        if time.monotonic() < busy_until:
            reactor.callLater(0, busy)
        else:
            counts.append(("after the busy phase", written()))
            reactor.callLater(args.idle, idle_done)

    def idle_done() -> None:
        counts.append((f"after {args.idle:g} s idle", written()))
        reactor.stop()

    reactor.callLater(0, busy)
    reactor.run()
    print(f"recorded while busy ({args.busy:g} s): {recorded} messages")
    for when, count in counts:
        print(f"in the database {when}: {count}")
    os.close(devnull)


if __name__ == "__main__":
    main()
