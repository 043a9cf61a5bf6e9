"""
Fan-out in one process, without sockets: what securemsg's own code costs
per delivered line, with or without TLS.

    python bench/fanout_inprocess.py [--receivers 100,1000] [--cases 1x1,160x4]
    python bench/fanout_inprocess.py --tls          # the receivers over TLS
    python bench/fanout_inprocess.py --profile 100:160x4 [--tls]   # cProfile

A standalone factory (in-memory history, flood limits raised as
``bench/run.py`` raises them) serves N receivers and one speaker, driven by
a fake clock.  A case C{PxR} is P lines to each C{dataReceived} call of the
speaker (a TLS record: ``bench/run.py``'s generator writes 50 to 500 lines
of 100 bytes at a time, so records of 16 KiB, about 160 lines) and R such
reads per reactor turn (Twisted reads 64 KiB at a time: 4 records), at the
end of which the output is flushed.  C{1x1} is light load: a line, a turn.

Without C{--tls} the receivers' transports drop what is written: what is
measured is securemsg's Python.  With it, each receiver is the server's
TLS layer (L{TLSServerProtocol}, after a real handshake in memory) over
a stand-in for Twisted's TCP transport whose socket takes every C{send()}
and drops it: OpenSSL's encryption and the TLS layer's Python are in the
figure, the system call is not; so is the speaker over TLS, each C{P}
lines a TLS record and a turn's records in one C{dataReceived}, as Twisted
reads up to 64 KiB of a socket at a time.

The figure is CPU time (C{time.process_time}) per delivered line (lines x
receivers), best of 5.  It works with either TLS layer of the server
(C{TLSServerProtocol}, or C{DirectTLSProtocol} before it) and otherwise
only with APIs that have not changed since it was written
(C{ChatServerFactory.standalone}, C{Limits}), so the same file measures
any revision: run it with that revision's C{src/} first on C{PYTHONPATH}.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import pstats
import sys
import time
from contextlib import suppress
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from securemsg.core.limits import Limits

try:
    from securemsg.server.tlsserver import TLSServerProtocol as ServerTLS
except ImportError:  # A revision before securemsg's own TLS layer.
    from securemsg.server.direct import (  # type: ignore[attr-defined,no-redef]
        DirectTLSProtocol as ServerTLS,
    )
from securemsg.server.factory import ChatServerFactory

LINE = b"x" * 99 + b"\n"
RUNS = 5


class NullTransport(StringTransport):
    """A transport that takes everything and keeps nothing."""

    def write(self, data: bytes) -> None:
        pass

    def writeSequence(self, data: Any) -> None:
        pass


class _NullSocket:
    """A socket whose C{send()} takes everything (kept while C{keep} is set)."""

    def __init__(self) -> None:
        self.keep: list[bytes] | None = []

    def send(self, data: bytes) -> int:
        if self.keep is not None:
            self.keep.append(bytes(data))
        return len(data)


class NullTCP(tcp.Server):
    """
    Enough of Twisted's TCP transport for the server's TLS layer to send on
    its socket itself, as it does in the server; nothing is buffered.
    """

    def __init__(self) -> None:  # Not Twisted's: there is no real socket.
        self.socket = _NullSocket()
        self.connected = 1
        self.disconnecting = False
        self.disconnected = False
        self._writeDisconnected = False
        self._tempDataBuffer: list[bytes] = []
        self._tempDataLen = 0
        self.dataBuffer = b""
        self.offset = 0
        self.producer = None

    def write(self, data: bytes) -> None:
        self.socket.send(data)

    def writeSequence(self, data: Any) -> None:
        self.socket.send(b"".join(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 6697)

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


def _tls_options() -> tuple[CertificateOptions, SSL.Context]:
    """A server's options with a new certificate, and a client's context."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    server = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=crypto.X509.from_cryptography(certificate),
    )
    client = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client.set_verify(SSL.VERIFY_NONE, lambda *args: True)
    return server, client


def _handshake_done(protocol: Any) -> bool:
    """Whether the server's TLS layer (of any revision) is past the handshake."""
    if hasattr(protocol, "_handshake_done"):
        return bool(protocol._handshake_done)
    return bool(protocol._handshakeDone)


def _connect_tls(
    tls_factory: TLSMemoryBIOFactory, client_context: SSL.Context
) -> tuple[Any, SSL.Connection]:
    """
    One client: the server's TLS protocol, after a handshake in memory, and
    the client's end.
    """
    protocol = tls_factory.buildProtocol(None)
    transport = NullTCP()
    protocol.makeConnection(transport)
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    for _ in range(10):
        with suppress(SSL.WantReadError):
            client.do_handshake()
        with suppress(SSL.WantReadError):
            protocol.dataReceived(client.bio_read(65536))
        sent = transport.socket.keep
        assert sent is not None
        if sent:
            client.bio_write(b"".join(sent))
            sent.clear()
        if _handshake_done(protocol):
            break
    assert _handshake_done(protocol)
    # From now on the client reads nothing: what the server sends is dropped.
    transport.socket.keep = None
    return protocol, client


class PlainSpeaker:
    """A speaker whose reads come as they are, in plain text."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol

    def turn(self, per_read: int, reads: int) -> None:
        """One reactor turn: C{reads} reads of C{per_read} lines."""
        data = LINE * per_read
        for _ in range(reads):
            self.protocol.dataReceived(data)


class TLSSpeaker:
    """
    A speaker over TLS: each C{per_read} lines are one TLS record, and the
    records of a turn arrive in one read of the socket, as Twisted reads
    up to 64 KiB at a time.
    """

    def __init__(self, protocol: Any, client: SSL.Connection) -> None:
        self.protocol = protocol
        self.client = client

    def turn(self, per_read: int, reads: int) -> None:
        """One reactor turn: C{reads} records of C{per_read} lines."""
        data = LINE * per_read
        records = []
        for _ in range(reads):
            self.client.send(data)
            records.append(self.client.bio_read(65536))
        self.protocol.dataReceived(b"".join(records))


def setup(receivers: int, tls: bool) -> tuple[Clock, Any]:
    """A factory with C{receivers} joined clients; the speaker."""
    clock = Clock()
    limits = Limits(
        flood_burst=10**9,
        flood_rate=10**9,
        idle_timeout=0,
        max_connections=receivers + 10,
        max_per_address=receivers + 10,
    )
    factory = ChatServerFactory.standalone(clock, greeting="", limits=limits)
    speaker: PlainSpeaker | TLSSpeaker
    if tls:
        server_options, client_context = _tls_options()
        tls_factory = TLSMemoryBIOFactory(server_options, False, factory)
        tls_factory.protocol = ServerTLS
        for _ in range(receivers):
            _connect_tls(tls_factory, client_context)
        speaker = TLSSpeaker(*_connect_tls(tls_factory, client_context))
    else:
        for _ in range(receivers):
            factory.buildProtocol(None).makeConnection(NullTransport())
        speaker = PlainSpeaker(factory.buildProtocol(None))
        speaker.protocol.makeConnection(NullTransport())
    # Let the arrivals' announcements go.
    clock.advance(1)
    assert len(factory.chat) == receivers + 1
    return clock, speaker


def speak(clock: Clock, speaker: Any, turns: int, per_read: int, reads: int) -> None:
    """The speaker says C{per_read} lines a read, C{reads} reads a turn."""
    for _ in range(turns):
        speaker.turn(per_read, reads)
        clock.advance(0)


def _turns(receivers: int, per_read: int, reads: int, tls: bool) -> int:
    """How many turns make a run of about half a second."""
    if per_read * reads < 16:
        budget = 100_000 if tls else 1_000_000
    else:
        budget = 4_000_000 if tls else 10_000_000
    return max(2, budget // (receivers * per_read * reads))


def measure(receivers: int, per_read: int, reads: int, tls: bool) -> float:
    """CPU microseconds per delivered line, best of L{RUNS}."""
    clock, speaker = setup(receivers, tls)
    turns = _turns(receivers, per_read, reads, tls)
    speak(clock, speaker, 2, per_read, reads)  # warm up
    best = float("inf")
    for _ in range(RUNS):
        gc.collect()
        start = time.process_time()
        speak(clock, speaker, turns, per_read, reads)
        best = min(best, time.process_time() - start)
    return best * 1e6 / (turns * per_read * reads * receivers)


def _case(text: str) -> tuple[int, int]:
    per_read, reads = text.split("x")
    return int(per_read), int(reads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receivers", default="100,1000")
    parser.add_argument("--cases", default="1x1,160x4", help="PxR, comma-separated")
    parser.add_argument("--tls", action="store_true", help="receivers over TLS")
    parser.add_argument("--profile", metavar="N:PxR", help="cProfile one case")
    args = parser.parse_args()
    if args.profile:
        receivers, case = args.profile.split(":")
        per_read, reads = _case(case)
        clock, speaker = setup(int(receivers), args.tls)
        turns = _turns(int(receivers), per_read, reads, args.tls)
        profile = cProfile.Profile()
        profile.runcall(speak, clock, speaker, turns, per_read, reads)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return
    what = "TLS, " if args.tls else ""
    print(f"| receivers | lines a read x reads a turn | {what}CPU µs per line |")
    print("|---|---|---|")
    for receivers in map(int, args.receivers.split(",")):
        for case in args.cases.split(","):
            per_read, reads = _case(case)
            figure = measure(receivers, per_read, reads, args.tls)
            print(f"| {receivers} | {per_read} x {reads} | {figure:.3f} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
