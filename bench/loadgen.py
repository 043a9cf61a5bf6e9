#!/usr/bin/env python3
"""
One load generator worker process for the securemsg benchmark.

C{bench/run.py} starts one of these per core and drives it with JSON
commands, one per line, on standard input; each command gets one JSON line
back on standard output when it is done.  The worker keeps every
connection it opened alive (reading what arrives) between commands.

It is written to cost as little CPU as Python allows: raw non-blocking
sockets, one C{select.epoll}, and the stdlib C{ssl} module's C{MemoryBIO}
objects (no asyncio, no Twisted, no per-line Python objects unless latency
is being recorded).  Its counters live in a shared memory file
(C{--shm}, slot C{--slot}) so that the orchestrator and the other workers
can read them at any time without asking.

Roles of a connection:

  - C{recv}: reads everything, counts benchmark lines (those carrying the
    C{~} marker), and records their latency when asked;
  - C{send}: the same, and sends benchmark lines (at the maximum rate that
    a window allows, or at a fixed rate);
  - C{idle}: after the TLS handshake and the first line, only drains the
    socket (no TLS work at all: the server sees a client that reads);
  - C{slow}: after the handshake, never reads again (small receive buffer);
  - C{hs}: handshake churn (connect, handshake, first line, close, again).

Every line a sender sends is C{~<send time in ns, 19 digits> <filler>\\n},
100 bytes by default; C{time.monotonic_ns} is C{CLOCK_MONOTONIC}, one clock
for every process on the machine, so a receiver in another worker measures
the latency as its own C{monotonic_ns} minus the one in the line.
"""

from __future__ import annotations

import array
import contextlib
import errno
import json
import mmap
import os
import random
import select
import socket
import ssl
import sys
import time
from typing import Any

MARK = b"~"
BUF = 262144
# SSL_read hands out at most one TLS record (16 KiB of plaintext) a call.
READ = 16640
SLOT_WORDS = 16
# Counter words in each worker's slot of the shared memory file.
DELIVERED, SENT, READY, LOST, RAW_BYTES, HANDSHAKES, RESUMED, ERRORS = range(8)
POLLS, EVENTS, RECORDS = 8, 9, 10

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

CONNECTING, HANDSHAKING, WAITING, READY_STATE, CLOSED = range(5)

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR | select.EPOLLHUP


def make_line(size: int, prefix: bytes = b"") -> tuple[bytes, bytes]:
    """The parts around the timestamp of a benchmark line of C{size} bytes."""
    head = prefix + MARK
    fixed = len(head) + 19 + 1 + 1  # timestamp, space, newline
    filler = (b"abcdefghijklmnopqrstuvwxyz0123456789" * 100)[: max(0, size - fixed)]
    return head, b" " + filler + b"\n"


class Conn:
    __slots__ = (
        "addr_index",
        "fd",
        "gid",
        "inc",
        "line_head",
        "line_tail",
        "next_send",
        "obj",
        "on_ready",
        "out",
        "pending",
        "period",
        "role",
        "session",
        "slot",
        "sock",
        "state",
        "tail",
        "wait_for",
        "want_out",
    )

    def __init__(self) -> None:
        self.pending = b""
        self.tail = b""
        self.want_out = False
        self.state = CONNECTING
        self.session = None
        self.slot = -1
        self.next_send = 0.0
        self.period = 0.0
        self.gid = 0
        self.wait_for: list[bytes] = []
        self.on_ready = None


class Worker:
    def __init__(self, args: dict[str, Any]) -> None:
        self.host = args["host"]
        self.port = args["port"]
        self.source = args.get("source")
        self.line_size = args.get("line_size", 100)
        self.index = args["slot"]
        self.nworkers = args["workers"]
        fd = os.open(args["shm"], os.O_RDWR)
        self.shm = mmap.mmap(fd, 0)
        os.close(fd)
        self.all_counters = memoryview(self.shm).cast("q")
        base = self.index * SLOT_WORDS
        self.counters = self.all_counters[base : base + SLOT_WORDS]
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # The generator trusts the server without checking its chain: the
        # TLS 1.3 handshake still checks the server's signature, and the
        # server's work is the same either way.
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        if args.get("tls12"):
            self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.delivered = 0
        self.sent = 0
        self.ready = 0
        self.lost = 0
        self.raw_bytes = 0
        self.handshakes = 0
        self.resumed = 0
        self.errors = 0
        self.polls = 0
        self.events = 0
        self.records = 0
        self.recording = False
        self.latencies = array.array("q")
        self.ctl_buf = b""
        self.exit = False
        self.scratch = bytearray(BUF)
        self.view = memoryview(self.scratch)
        # Jobs: opening connections, handshake churn.
        self.connect_job: dict[str, Any] | None = None
        self.hs_job: dict[str, Any] | None = None
        # Sending.
        self.senders: list[Conn] = []
        self.send_mode: str | None = None
        self.window = 0
        self.expect = 1
        self.batch = 32
        self.send_lines = 0
        self.send_rate_timers: list[Conn] = []
        self.names: list[str] = []
        self.private_share = 0.0
        self.rng = random.Random(self.index)
        self.ep.register(0, EPOLLIN)
        os.set_blocking(0, False)

    # ------------------------------------------------------------------
    # Control

    def reply(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            n = os.write(1, data)
            data = data[n:]

    def read_control(self) -> None:
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        if not data:
            self.exit = True
            return
        self.ctl_buf += data
        while b"\n" in self.ctl_buf:
            line, self.ctl_buf = self.ctl_buf.split(b"\n", 1)
            if line.strip():
                self.command(json.loads(line))

    def command(self, cmd: dict[str, Any]) -> None:
        op = cmd["op"]
        if op == "connect":
            self.start_connect(cmd)
        elif op == "handshakes":
            self.start_handshakes(cmd)
        elif op == "send":
            self.start_send(cmd)
        elif op == "coalesce":
            self.reply({"ok": True})  # only cgen needs it
        elif op == "stop_send":
            self.send_mode = None
            self.reply({"ok": True, "sent": self.sent})
        elif op == "record":
            self.recording = bool(cmd["on"])
            if cmd.get("clear"):
                self.latencies = array.array("q")
            self.reply({"ok": True, "samples": len(self.latencies)})
        elif op == "dump_latencies":
            with open(cmd["path"], "wb") as f:
                self.latencies.tofile(f)
            self.reply({"ok": True, "samples": len(self.latencies)})
        elif op == "command_all":
            # Send one raw line on every ready connection of a role.
            line = cmd["line"].encode()
            n = 0
            for c in list(self.conns.values()):
                if c.state == READY_STATE and c.role in cmd["roles"]:
                    self.write(c, line)
                    n += 1
            self.reply({"ok": True, "n": n})
        elif op == "close_all":
            for c in list(self.conns.values()):
                self.close(c, lost=False)
            self.senders = []
            self.reply({"ok": True})
        elif op == "ports":
            ports = [
                c.sock.getsockname()[1]
                for c in self.conns.values()
                if c.role in cmd["roles"] and c.state != CLOSED
            ]
            self.reply({"ok": True, "ports": ports})
        elif op == "exit":
            self.exit = True
            self.reply({"ok": True})
        else:
            self.reply({"ok": False, "error": f"unknown op {op}"})

    # ------------------------------------------------------------------
    # Connections

    def new_conn(self, role: str, session: Any = None, rcvbuf: int = 0) -> Conn | None:
        c = Conn()
        c.role = role
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if self.source:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.source, 0))
        err = sock.connect_ex((self.host, self.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.errors += 1
            return None
        c.sock = sock
        c.fd = sock.fileno()
        c.inc = ssl.MemoryBIO()
        c.out = ssl.MemoryBIO()
        c.obj = self.ctx.wrap_bio(c.inc, c.out, server_side=False, session=session)
        self.conns[c.fd] = c
        self.ep.register(c.fd, EPOLLOUT)
        c.want_out = True
        return c

    def close(self, c: Conn, lost: bool) -> None:
        if c.state == CLOSED:
            return
        if lost and c.state == READY_STATE:
            self.lost += 1
        self.forget(c)
        if c.role == "hs":
            self.hs_slot_done(c, ok=False)
        elif self.connect_job is not None and c.slot >= 0:
            self.connect_job["failed"] += 1
            self.connect_job["inflight"] -= 1
            c.slot = -1
            self.connect_more()

    def forget(self, c: Conn) -> None:
        """Mark C{c} closed, stop watching it and close its socket."""
        c.state = CLOSED
        self.conns.pop(c.fd, None)
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(c.fd)
        c.sock.close()

    def flush(self, c: Conn) -> None:
        data = c.out.read()
        if c.pending:
            data = c.pending + data
        if not data:
            return
        try:
            n = c.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.close(c, lost=True)
            return
        if n < len(data):
            c.pending = data[n:]
            if not c.want_out:
                c.want_out = True
                self.ep.modify(c.fd, EPOLLIN | EPOLLOUT)
        else:
            c.pending = b""
            if c.want_out and c.state != CONNECTING:
                c.want_out = False
                self.ep.modify(c.fd, EPOLLIN)

    def write(self, c: Conn, data: bytes) -> None:
        try:
            c.obj.write(data)
        except ssl.SSLError:
            self.close(c, lost=True)
            return
        self.flush(c)

    def on_event(self, c: Conn, ev: int) -> None:
        state = c.state
        if state == CONNECTING:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err or ev & EPOLLERR:
                self.errors += 1
                self.close(c, lost=False)
                return
            c.state = HANDSHAKING
            c.want_out = False
            self.ep.modify(c.fd, EPOLLIN)
            self.handshake(c)
            return
        if ev & EPOLLOUT and c.pending:
            self.flush(c)
            if c.state == CLOSED:
                return
        if not ev & (EPOLLIN | EPOLLERR):
            if state == READY_STATE and c.role == "send" and self.send_mode == "max":
                self.pump(c)
            return
        if state == READY_STATE:
            role = c.role
            if role == "idle":
                self.drain(c)
                return
            self.receive(c)
            if role == "send" and self.send_mode == "max" and c.state == READY_STATE:
                self.pump(c)
            return
        if state == HANDSHAKING:
            if not self.recv_into_bio(c):
                return
            self.handshake(c)
            return
        if state == WAITING:
            if not self.recv_into_bio(c):
                return
            self.wait_line(c)

    def recv_into_bio(self, c: Conn) -> bool:
        try:
            n = c.sock.recv_into(self.scratch)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self.close(c, lost=True)
            return False
        if not n:
            self.close(c, lost=True)
            return False
        c.inc.write(self.view[:n])
        return True

    def handshake(self, c: Conn) -> None:
        try:
            c.obj.do_handshake()
        except ssl.SSLWantReadError:
            self.flush(c)
            return
        except (ssl.SSLError, OSError):
            self.errors += 1
            self.close(c, lost=False)
            return
        self.flush(c)
        if c.state == CLOSED:
            return
        c.state = WAITING
        self.wait_line(c)

    def wait_line(self, c: Conn) -> None:
        """Read until a line with each of c.wait_for (in order) has arrived."""
        obj = c.obj
        while True:
            try:
                chunk = obj.read(READ)
            except ssl.SSLWantReadError:
                return
            except (ssl.SSLError, OSError):
                self.close(c, lost=True)
                return
            if not chunk:
                self.close(c, lost=True)
                return
            data = c.tail + chunk
            while c.wait_for:
                want = c.wait_for[0]
                i = data.find(want)
                if i < 0:
                    break
                j = data.find(b"\n", i)
                if j < 0:
                    break
                data = data[j + 1 :]
                c.wait_for.pop(0)
            c.tail = data[-4096:]
            if not c.wait_for:
                c.tail = b""
                self.became_ready(c)
                return

    def became_ready(self, c: Conn) -> None:
        c.state = READY_STATE
        if c.role == "hs":
            self.handshakes += 1
            if c.obj.session_reused:
                self.resumed += 1
            c.session = c.obj.session
            self.hs_close(c)
            return
        if c.on_ready is None:
            self.ready += 1
        if c.role == "slow":
            self.ep.unregister(c.fd)
        if c.on_ready is not None:
            step = c.on_ready
            c.on_ready = None
            step(c)
            return
        self.connect_slot_done(c)

    def receive(self, c: Conn) -> None:
        if not self.recv_into_bio(c):
            return
        inc = c.inc
        obj = c.obj
        recording = self.recording
        now = time.monotonic_ns() if recording else 0
        n = 0
        # Read records while whole ones may be waiting in the BIO; raising
        # SSLWantReadError costs more than the read itself, so avoid it.
        while inc.pending:
            try:
                chunk = obj.read(READ)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLError, OSError):
                self.close(c, lost=True)
                return
            if not chunk:
                self.close(c, lost=True)
                return
            if recording:
                self.record_latencies(c, chunk, now)
            else:
                n += chunk.count(MARK)
                self.records += 1
        self.delivered += n

    def record_latencies(self, c: Conn, chunk: bytes, now: int) -> None:
        """
        Count the benchmark lines in C{chunk} and record their latencies as
        of C{now}; a timestamp cut off by the end of a record waits in
        C{c.tail} for the next one.
        """
        buf = c.tail + chunk if c.tail else chunk
        lat = self.latencies
        start = 0
        while True:
            i = buf.find(MARK, start)
            if i < 0:
                c.tail = b""
                return
            if len(buf) < i + 20:
                c.tail = buf[i:]
                return
            lat.append(now - int(buf[i + 1 : i + 20]))
            self.delivered += 1
            start = i + 20

    def drain(self, c: Conn) -> None:
        scratch = self.scratch
        while True:
            try:
                n = c.sock.recv_into(scratch)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close(c, lost=True)
                return
            if not n:
                self.close(c, lost=True)
                return
            self.raw_bytes += n
            if n < BUF:
                return

    # ------------------------------------------------------------------
    # Opening connections

    def start_connect(self, cmd: dict[str, Any]) -> None:
        self.connect_job = {
            "role": cmd["role"],
            "todo": cmd["n"],
            "conc": cmd.get("conc", 16),
            "inflight": 0,
            "done": 0,
            "failed": 0,
            "first": 0,
            "wait_for": [w.encode() for w in cmd.get("wait_for", ["\n"])],
            "rcvbuf": cmd.get("rcvbuf", 0),
            "nick": cmd.get("nick"),
            "join": cmd.get("join"),
            "gid0": cmd.get("gid0", 0),
            "deadline": time.monotonic() + cmd.get("timeout", 60),
            "t0": time.monotonic(),
            "conns": [],
        }
        self.connect_more()

    def connect_more(self) -> None:
        job = self.connect_job
        if job is None:
            return
        while job["inflight"] < job["conc"] and job["first"] < job["todo"]:
            gid = job["gid0"] + job["first"]
            job["first"] += 1
            c = self.new_conn(job["role"], rcvbuf=job["rcvbuf"])
            if c is None:
                job["failed"] += 1
                continue
            job["inflight"] += 1
            c.slot = gid
            c.gid = gid
            c.wait_for = list(job["wait_for"])
            if job["nick"]:
                c.on_ready = self.send_nick
        if job["inflight"] == 0 and job["first"] >= job["todo"]:
            self.finish_connect()

    def send_nick(self, c: Conn) -> None:
        job = self.connect_job
        assert job is not None
        c.state = WAITING
        c.wait_for = [b"you are now"]
        if job["join"]:
            c.on_ready = self.send_join
        self.write(c, f"/nick {job['nick']}{c.gid}\n".encode())

    def send_join(self, c: Conn) -> None:
        job = self.connect_job
        assert job is not None
        c.state = WAITING
        c.wait_for = [b"\n"]
        room = job["join"][c.gid % len(job["join"])]
        self.write(c, f"/join {room}\n".encode())

    def connect_slot_done(self, c: Conn) -> None:
        job = self.connect_job
        if job is None or c.slot < 0:
            return
        c.slot = -1
        job["inflight"] -= 1
        job["done"] += 1
        job["conns"].append(c)
        if c.role == "send":
            self.senders.append(c)
        self.connect_more()

    def finish_connect(self) -> None:
        job = self.connect_job
        assert job is not None
        self.connect_job = None
        self.reply(
            {
                "ok": True,
                "done": job["done"],
                "failed": job["failed"],
                "secs": time.monotonic() - job["t0"],
            }
        )

    def check_connect_deadline(self) -> None:
        job = self.connect_job
        if job is not None and time.monotonic() > job["deadline"]:
            for c in list(self.conns.values()):
                if c.slot >= 0 and c.state != READY_STATE:
                    c.slot = -1
                    job["inflight"] -= 1
                    job["failed"] += 1
                    self.close(c, lost=False)
            job["todo"] = job["first"]
            job["inflight"] = 0
            self.finish_connect()

    # ------------------------------------------------------------------
    # Handshake churn

    def start_handshakes(self, cmd: dict[str, Any]) -> None:
        self.hs_job = {
            "resume": cmd.get("resume", False),
            "conc": cmd.get("conc", 16),
            "deadline": time.monotonic() + cmd["secs"],
            "t0": time.monotonic(),
            "max": cmd.get("max", 10**9),
            "started": 0,
            "inflight": 0,
            "h0": self.handshakes,
            "r0": self.resumed,
            "e0": self.errors,
            "sessions": [None] * cmd.get("conc", 16),
        }
        for slot in range(self.hs_job["conc"]):
            self.hs_start(slot)

    def hs_start(self, slot: int) -> None:
        job = self.hs_job
        assert job is not None
        if time.monotonic() >= job["deadline"] or job["started"] >= job["max"]:
            if job["inflight"] == 0:
                self.hs_finish()
            return
        session = job["sessions"][slot] if job["resume"] else None
        c = self.new_conn("hs", session=session)
        job["started"] += 1
        if c is None:
            return
        c.slot = slot
        c.wait_for = [b"\n"]
        job["inflight"] += 1

    def hs_close(self, c: Conn) -> None:
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            c.obj.unwrap()
        with contextlib.suppress(OSError):
            c.sock.send(c.out.read())
        self.hs_slot_done(c, ok=True)
        self.forget(c)

    def hs_slot_done(self, c: Conn, ok: bool) -> None:
        job = self.hs_job
        if job is None or c.slot < 0:
            return
        slot, c.slot = c.slot, -1
        job["inflight"] -= 1
        if ok and c.session is not None:
            job["sessions"][slot] = c.session
        self.hs_start(slot)

    def hs_finish(self) -> None:
        job = self.hs_job
        assert job is not None
        self.hs_job = None
        self.reply(
            {
                "ok": True,
                "handshakes": self.handshakes - job["h0"],
                "resumed": self.resumed - job["r0"],
                "errors": self.errors - job["e0"],
                "secs": time.monotonic() - job["t0"],
            }
        )

    # ------------------------------------------------------------------
    # Sending

    def start_send(self, cmd: dict[str, Any]) -> None:
        self.send_mode = cmd["mode"]
        self.senders = [c for c in self.senders if c.state == READY_STATE]
        if self.send_mode == "max":
            self.window = cmd["window"]
            self.expect = max(1, cmd["expect"])
            self.batch = cmd.get("batch", 32)
            self.send_lines = self.sent
            for c in self.senders:
                c.line_head, c.line_tail = make_line(self.line_size)
                self.pump(c)
        else:
            rate = cmd["rate"]
            self.names = cmd.get("names", [])
            self.private_share = cmd.get("private", 0.0)
            now = time.monotonic()
            spread = 1.0 / rate / max(1, len(self.senders))
            offset = cmd.get("offset", 0.0)
            for k, c in enumerate(self.senders):
                c.line_head, c.line_tail = make_line(self.line_size)
                c.period = 1.0 / rate
                c.next_send = now + offset + k * spread
        self.reply({"ok": True, "senders": len(self.senders)})

    def window_open(self) -> int:
        delivered = 0
        counters = self.all_counters
        for w in range(self.nworkers):
            delivered += counters[w * SLOT_WORDS + DELIVERED]
        # Count our own deliveries so far, not yet published.
        delivered += self.delivered - counters[self.index * SLOT_WORDS + DELIVERED]
        lag = self.sent - delivered // self.expect
        return self.window - lag

    def pump(self, c: Conn) -> None:
        if c.pending:
            return
        room = self.window_open()
        if room <= 0:
            return
        k = min(room, self.batch)
        line = c.line_head + b"%019d" % time.monotonic_ns() + c.line_tail
        self.sent += k
        self.write(c, line * k)

    def rate_tick(self) -> float:
        """Send the lines that are due; return seconds until the next one."""
        now = time.monotonic()
        wait = 0.05
        names = self.names
        for c in self.senders:
            if c.state != READY_STATE:
                continue
            while c.next_send <= now:
                c.next_send += c.period
                stamp = b"%019d" % time.monotonic_ns()
                if names and self.rng.random() < self.private_share:
                    who = self.rng.choice(names).encode()
                    line = b"/msg " + who + b" " + c.line_head + stamp + c.line_tail
                else:
                    line = c.line_head + stamp + c.line_tail
                self.sent += 1
                self.write(c, line)
                if c.state != READY_STATE:
                    break
            wait = min(wait, c.next_send - now)
        return max(0.0, wait)

    # ------------------------------------------------------------------

    def publish(self) -> None:
        k = self.counters
        k[DELIVERED] = self.delivered
        k[SENT] = self.sent
        k[READY] = self.ready
        k[LOST] = self.lost
        k[RAW_BYTES] = self.raw_bytes
        k[HANDSHAKES] = self.handshakes
        k[RESUMED] = self.resumed
        k[ERRORS] = self.errors
        k[POLLS] = self.polls
        k[EVENTS] = self.events
        k[RECORDS] = self.records

    def run(self) -> None:
        conns = self.conns
        poll = self.ep.poll
        while not self.exit:
            timeout = 0.05
            if self.send_mode == "rate":
                timeout = self.rate_tick()
            elif self.send_mode == "max":
                # Re-check the window often: other workers' receivers move it.
                timeout = 0.0005
                for c in self.senders:
                    if c.state == READY_STATE:
                        self.pump(c)
            events = poll(timeout, 4096)
            self.polls += 1
            self.events += len(events)
            for fd, ev in events:
                if fd == 0:
                    self.read_control()
                    continue
                c = conns.get(fd)
                if c is not None:
                    self.on_event(c, ev)
            if self.connect_job is not None:
                self.check_connect_deadline()
            self.publish()


def main() -> None:
    args = json.loads(sys.argv[1])
    Worker(args).run()


if __name__ == "__main__":
    main()
