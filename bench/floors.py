"""
What the libraries under a chat server cost on this machine, without any
server around them: the floors the benchmark's targets run into.

    python bench/floors.py

It prints one table:

- the server's CPU for one full TLS 1.3 handshake (X25519, ECDSA P-256),
  with pyOpenSSL (the OpenSSL in the ``cryptography`` wheel, which securemsg
  and Twisted use) and with Python's ``ssl`` module (the system's OpenSSL,
  which the asyncio peers use), both through memory buffers, so no system
  call is counted;
- the CPU to encrypt one 100-byte line as its own TLS record, and per line
  inside 16 KiB records, with each;
- the CPU of one ``send()`` of a 130-byte record on loopback TCP to a reader
  in another process, which is what every delivered line costs at light load.

Everything runs in this process (and one reader process), on 127.0.0.1.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from OpenSSL._util import lib as _openssl_lib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from securemsg.tls import certs
from securemsg.tls import policy as tls

LINE = b"x" * 99 + b"\n"


def cpu_us(run: Callable[[], None], count: int) -> float:
    """Median over three rounds of the process CPU per call, in µs."""
    rounds = []
    for _ in range(3):
        start = time.process_time()
        for _ in range(count):
            run()
        rounds.append((time.process_time() - start) / count * 1e6)
    return sorted(rounds)[1]


class PyOpenSSLPair:
    """A server and a client connection over memory buffers (pyOpenSSL)."""

    def __init__(self, server_context: SSL.Context) -> None:
        client_context = SSL.Context(SSL.TLS_METHOD)
        _openssl_lib.SSL_CTX_set1_curves_list(client_context._context, b"X25519")
        self.server_context, self.client_context = server_context, client_context
        self.server_time = 0.0

    def handshake(self) -> SSL.Connection:
        """One full handshake; the server's CPU is added to server_time."""
        server = SSL.Connection(self.server_context, None)
        server.set_accept_state()
        client = SSL.Connection(self.client_context, None)
        client.set_connect_state()
        for _ in range(6):
            with suppress(SSL.WantReadError):
                client.do_handshake()
            with suppress(SSL.WantReadError):
                server.bio_write(client.bio_read(65536))
            start = time.process_time()
            with suppress(SSL.WantReadError):
                server.do_handshake()
            with suppress(SSL.WantReadError):
                client.bio_write(server.bio_read(65536))
            self.server_time += time.process_time() - start
            if server.get_peer_finished() is not None:
                break
        return server


class StdlibPair:
    """The same with Python's ssl module."""

    def __init__(self, cert_path: str, key_path: str) -> None:
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context.load_cert_chain(cert_path, key_path)
        self.client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client_context.check_hostname = False
        self.client_context.verify_mode = ssl.CERT_NONE
        self.server_time = 0.0

    def handshake(self) -> tuple[ssl.SSLObject, ssl.MemoryBIO]:
        server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        server = self.server_context.wrap_bio(server_in, server_out, server_side=True)
        client = self.client_context.wrap_bio(client_in, client_out)
        done = False
        for _ in range(6):
            with suppress(ssl.SSLWantReadError):
                client.do_handshake()
            server_in.write(client_out.read())
            start = time.process_time()
            try:
                server.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                pass
            client_in.write(server_out.read())
            self.server_time += time.process_time() - start
            if done:
                break
        return server, server_out


def _reader(port: int, ready: Any) -> None:
    with socket.create_connection(("127.0.0.1", port)) as connection:
        ready.set()
        while connection.recv(1 << 20):
            pass


def send_cost() -> float:
    """CPU of one send() of 130 bytes on loopback TCP, in µs."""
    listener = socket.create_server(("127.0.0.1", 0))
    ready = multiprocessing.Event()
    reader = multiprocessing.Process(
        target=_reader, args=(listener.getsockname()[1], ready)
    )
    reader.start()
    connection, _ = listener.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ready.wait(10)
    record = b"r" * 130
    clock = time.thread_time_ns

    def timed(call: Callable[[], object], count: int) -> float:
        # Paced like light load: the reader has drained the socket and sleeps
        # in recv() when the next record comes; only the call is timed.
        total = 0
        for _ in range(count):
            time.sleep(0.0002)
            start = clock()
            call()
            total += clock() - start
        return total / count / 1000

    try:
        rounds = sorted(
            timed(lambda: connection.send(record), 3000) - timed(lambda: None, 3000)
            for _ in range(3)
        )
        return rounds[1]
    finally:
        connection.close()
        listener.close()
        reader.join(10)


def main() -> None:
    cert, key = certs.generate_self_signed(["127.0.0.1"])
    with tempfile.TemporaryDirectory() as directory:
        cert_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        certs.write_certificate(cert_path, cert, force=True)
        certs.write_private_key(key_path, key, None, force=True)
        stdlib = StdlibPair(cert_path, key_path)
    credentials = tls.ServerCredentials([cert], key, "", "")
    pyopenssl = PyOpenSSLPair(tls.make_server_context(credentials))

    rows: list[tuple[str, str, str]] = []
    count = 300
    for pair in (pyopenssl, stdlib):
        pair.handshake()  # warm up
        pair.server_time = 0.0
        for _ in range(count):
            pair.handshake()
    rows.append(
        (
            "full TLS 1.3 handshake, server CPU",
            f"{pyopenssl.server_time / count * 1e6:.0f} µs",
            f"{stdlib.server_time / count * 1e6:.0f} µs",
        )
    )

    server = pyopenssl.handshake()
    std_server, std_out = stdlib.handshake()
    big = LINE * 163  # 16,300 bytes: one full record

    def record_cost(data: bytes, count: int) -> tuple[float, float]:
        """µs to encrypt C{data} as TLS records, with each library."""

        def with_pyopenssl() -> None:
            server.send(data)
            server.bio_read(65536)

        def with_stdlib() -> None:
            std_server.write(data)
            std_out.read()

        return cpu_us(with_pyopenssl, count), cpu_us(with_stdlib, count)

    line_py, line_std = record_cost(LINE, 20000)
    rows.append(
        (
            "one 100-byte line as its own TLS record",
            f"{line_py:.2f} µs",
            f"{line_std:.2f} µs",
        )
    )
    big_py, big_std = record_cost(big, 2000)
    rows.append(
        (
            "per 100-byte line in 16 KiB records",
            f"{big_py / 163 * 1000:.0f} ns",
            f"{big_std / 163 * 1000:.0f} ns",
        )
    )
    rows.append(
        ("send() of a 130-byte record, loopback TCP", f"{send_cost():.1f} µs", "")
    )

    version = SSL.SSLeay_version(SSL.SSLEAY_VERSION).decode()
    print(
        f"| floor on this machine | pyOpenSSL ({version})"
        f" | Python ssl ({ssl.OPENSSL_VERSION}) |"
    )
    print("|---|---|---|")
    for what, one, other in rows:
        print(f"| {what} | {one} | {other} |")


if __name__ == "__main__":
    main()
