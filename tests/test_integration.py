"""
End-to-end tests: real TLS over loopback TCP, through the same endpoint code
C{twistd securemsg} uses, with real Twisted TLS clients (and one blocking
Python C{ssl} client, as the tutorial writes it).

These are the only chat tests that touch the network; everything they check
in detail is also checked in memory by C{test_server} and C{test_tls}.  Each
wait is bounded, and tearDown waits until both ends of every connection have
seen C{connectionLost} before it stops listening, so that trial's reactor is
clean (STYLE.md, pitfall 9).
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from securemsg.core.limits import Limits
from securemsg.server.guard import how_to_connect
from securemsg.tls import certs

from . import _certs
from ._loopback import (
    TIMEOUT,
    LineClient,
    LoopbackServerTestCase,
    Waiters,
    bounded,
    greeting,
    reactor,
    tls_transport,
)


class ResetAfterHandshake(LineClient):
    """Resets the TCP connection the moment its TLS handshake is done."""

    def handshakeCompleted(self) -> None:
        super().handshakeCompleted()
        tls_transport(self).abortConnection()


class GarbageSender(Protocol):
    """A plain TCP client that sends something that is not TLS."""

    def __init__(self, garbage: bytes) -> None:
        self.garbage = garbage
        self.received = b""
        self.ended = Waiters()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.garbage)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.ended.fire(reason)

    def wait_closed(self) -> Deferred[None]:
        return bounded(self.ended.wait(), "the garbage sender's connectionLost")


def tutorial_client(port: int, server_cert_path: str) -> str:
    """
    The tutorial's blocking Python C{ssl} client, Part 2, with timeouts on
    every socket operation so that a bug cannot hang the test run: connect,
    read the greeting line, send one message without a newline, close.

    Runs in a thread.

    @return: the greeting line, without its newline.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(server_cert_path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    conn = context.wrap_socket(sock, server_hostname="localhost")
    try:
        conn.connect(("127.0.0.1", port))
        received = b""
        while not received.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                raise AssertionError(f"server closed before a line: {received!r}")
            received += chunk
        conn.sendall(b"one message without a newline")
    finally:
        conn.close()
    return received.decode("utf-8").removesuffix("\n")


class ChatOverTLSTests(LoopbackServerTestCase):
    """
    Several Twisted TLS clients chat through a real securemsg server on
    loopback.
    """

    async def start_chat(self) -> None:
        ca, server = _certs.default_ca_and_server()
        self.ca_pem = ca.cert_pem()
        cert_path, key_path = server.write(self.directory)
        await self.serve(cert_path, key_path)

    async def three_named(self) -> tuple[LineClient, LineClient, LineClient]:
        """
        Connect three clients and name them alice, bob and carol, checking
        every line each receives on the way; returns with nothing unread.
        """
        await self.start_chat()
        alice = await self.connect(self.ca_pem)
        self.assertEqual(await alice.next_lines(1), [greeting("guest-1")])
        bob = await self.connect(self.ca_pem)
        self.assertEqual(await bob.next_lines(1), [greeting("guest-2")])
        self.assertEqual(await alice.next_lines(1), ["*** guest-2 joined"])
        carol = await self.connect(self.ca_pem)
        self.assertEqual(await carol.next_lines(1), [greeting("guest-3")])
        self.assertEqual(await alice.next_lines(1), ["*** guest-3 joined"])
        self.assertEqual(await bob.next_lines(1), ["*** guest-3 joined"])

        for client, number, name in [
            (alice, 1, "alice"),
            (bob, 2, "bob"),
            (carol, 3, "carol"),
        ]:
            client.send(b"/nick " + name.encode())
            self.assertEqual(await client.next_lines(1), [f"*** you are now {name}"])
            for other in {alice, bob, carol} - {client}:
                self.assertEqual(
                    await other.next_lines(1),
                    [f"*** guest-{number} is now known as {name}"],
                )
        return alice, bob, carol

    async def test_join_and_nick(self) -> None:
        """
        Each client is greeted by its guest name, the others are told it
        joined, and /nick tells the client its new name and everyone else the
        change.  /who then lists the three by their new names.
        """
        _, bob, _ = await self.three_named()
        bob.send(b"/who")
        self.assertEqual(await bob.next_lines(1), ["*** 3 here: alice, bob, carol"])

    async def test_broadcast(self) -> None:
        """
        A chat line reaches both other clients exactly, and not its sender:
        the sender's next line is the reply to its own later line.
        """
        alice, bob, carol = await self.three_named()
        alice.send("hello, wörld".encode())
        self.assertEqual(await bob.next_lines(1), ["[alice] hello, wörld"])
        self.assertEqual(await carol.next_lines(1), ["[alice] hello, wörld"])
        alice.send(b"/me waves")
        self.assertEqual(await bob.next_lines(1), ["* alice waves"])
        self.assertEqual(await carol.next_lines(1), ["* alice waves"])
        bob.send(b"hi alice")
        self.assertEqual(await alice.next_lines(1), ["[bob] hi alice"])
        self.assertEqual(await carol.next_lines(1), ["[bob] hi alice"])

    async def test_private_message(self) -> None:
        """
        /msg reaches only its recipient, and the sender gets the same line
        back; the third client's next line is a later broadcast, so it never
        saw the private one.
        """
        alice, bob, carol = await self.three_named()
        alice.send(b"/msg Bob psst, bob")
        self.assertEqual(await bob.next_lines(1), ["[alice -> bob] psst, bob"])
        self.assertEqual(await alice.next_lines(1), ["[alice -> bob] psst, bob"])
        bob.send(b"/msg nobody hello")
        self.assertEqual(await bob.next_lines(1), ["!!! nobody here is called nobody"])
        bob.send(b"public again")
        self.assertEqual(await carol.next_lines(1), ["[bob] public again"])
        self.assertEqual(await alice.next_lines(1), ["[bob] public again"])

    async def test_nick_clash(self) -> None:
        """
        Asking for a name someone has (in any case) is refused with an
        error to the asker only, and the asker keeps its name.
        """
        alice, bob, carol = await self.three_named()
        carol.send(b"/nick ALICE")
        self.assertEqual(await carol.next_lines(1), ["!!! the name alice is taken"])
        carol.send(b"still carol")
        self.assertEqual(await alice.next_lines(1), ["[carol] still carol"])
        self.assertEqual(await bob.next_lines(1), ["[carol] still carol"])

    async def test_over_long_line(self) -> None:
        """
        A line over the default limit of 4096 bytes gets an error and is not
        relayed, whether it fits in one TLS record or spans many; the
        connection keeps working, and a line of exactly 4096 bytes is relayed.
        """
        alice, bob, carol = await self.three_named()
        error = "!!! line longer than 4096 bytes; it was not sent"
        alice.send(b"x" * 4097, b"after one record")
        self.assertEqual(await alice.next_lines(1), [error])
        self.assertEqual(await bob.next_lines(1), ["[alice] after one record"])
        alice.send(b"y" * 100_000, b"after many records")
        self.assertEqual(await alice.next_lines(1), [error])
        self.assertEqual(await bob.next_lines(1), ["[alice] after many records"])
        alice.send(b"z" * 4096)
        self.assertEqual(await bob.next_lines(1), ["[alice] " + "z" * 4096])
        self.assertEqual(
            await carol.next_lines(3),
            [
                "[alice] after one record",
                "[alice] after many records",
                "[alice] " + "z" * 4096,
            ],
        )

    async def test_invalid_utf8(self) -> None:
        """
        A line that is not UTF-8 gets an error and is not relayed; the
        connection stays and its next line is relayed.
        """
        alice, bob, carol = await self.three_named()
        bob.send(b"bad \xff\xfe bytes", b"good bytes")
        self.assertEqual(
            await bob.next_lines(1),
            ["!!! that line was not valid UTF-8; it was not sent"],
        )
        self.assertEqual(await alice.next_lines(1), ["[bob] good bytes"])
        self.assertEqual(await carol.next_lines(1), ["[bob] good bytes"])

    async def test_control_characters_made_visible(self) -> None:
        """
        Control characters (BEL, ESC, CR, DEL, a C1 control) and a bidi
        override arrive made visible, a tab as a space, and a CRLF line ending
        is not part of the line.
        """
        alice, bob, carol = await self.three_named()
        bob.send("a\x07b\x1b[2Jc\rd\te\u202ef\x7fg\u0085h\r".encode())
        expected = ["[bob] a^Gb^[[2Jc^Md e<U+202E>f^?g<U+0085>h"]
        self.assertEqual(await alice.next_lines(1), expected)
        self.assertEqual(await carol.next_lines(1), expected)

    async def test_abrupt_disconnect(self) -> None:
        """
        A client whose connection is reset (abortConnection: a TCP RST, no
        TLS close) is announced to the others as lost, and the server goes
        on serving them and new clients.
        """
        alice, bob, carol = await self.three_named()
        tls_transport(bob).abortConnection()
        await bob.wait_closed()
        self.assertEqual(await alice.next_lines(1), ["*** bob left (connection lost)"])
        self.assertEqual(await carol.next_lines(1), ["*** bob left (connection lost)"])
        alice.send(b"still here?")
        self.assertEqual(await carol.next_lines(1), ["[alice] still here?"])
        dave = await self.connect(self.ca_pem)
        self.assertEqual(await dave.next_lines(1), [greeting("guest-4")])
        self.assertEqual(await alice.next_lines(1), ["*** guest-4 joined"])
        self.assertEqual(await carol.next_lines(1), ["*** guest-4 joined"])
        dave.send(b"hello")
        self.assertEqual(await alice.next_lines(1), ["[guest-4] hello"])

    async def test_quit_with_message(self) -> None:
        """
        /quit with a message: the quitter is told goodbye and the server
        closes its connection cleanly; the others see the message as the
        reason it left.
        """
        alice, bob, carol = await self.three_named()
        carol.send(b"/quit  gotta go ")
        self.assertEqual(await carol.next_lines(1), ["*** goodbye"])
        await carol.wait_closed()
        self.assertTrue(carol.ended.value.check(ConnectionDone))
        self.assertEqual(
            await alice.next_lines(1), ['*** carol left, saying "gotta go"']
        )
        self.assertEqual(await bob.next_lines(1), ['*** carol left, saying "gotta go"'])
        alice.send(b"bye carol")
        self.assertEqual(await bob.next_lines(1), ["[alice] bye carol"])

    async def test_reset_right_after_handshake(self) -> None:
        """
        A client that resets the connection as soon as its side of the
        handshake is done does not disturb the others.  Whether the server
        got far enough to let it join is a race (under TLS 1.3 the client's
        Finished message usually never leaves), so what the others see is
        checked against what the server did: either nothing, or exactly a
        join and a "connection lost".  Then they keep chatting.
        """
        alice, bob, carol = await self.three_named()
        resetter = await self.connect(self.ca_pem, ResetAfterHandshake)
        await resetter.wait_closed()
        server_side = await self.factory.connection(3)
        await bounded(server_side.ended.wait(), "the server's connectionLost")
        alice.send(b"anyone else?")
        expected = ["[alice] anyone else?"]
        if server_side.was_joined:
            expected = [
                "*** guest-4 joined",
                "*** guest-4 left (connection lost)",
                *expected,
            ]
        self.assertEqual(await bob.next_lines(len(expected)), expected)
        self.assertEqual(await carol.next_lines(len(expected)), expected)
        bob.send(b"yes")
        self.assertEqual(await alice.next_lines(1), ["[bob] yes"])
        self.assertEqual(resetter.unread, [])

    async def test_garbage_instead_of_tls(self) -> None:
        """
        A client that sends a broken TLS record to the TLS port is
        disconnected by the server without ever joining (it gets no chat
        line, at most a TLS alert record), and the others keep chatting.
        """
        alice, bob, carol = await self.three_named()
        # A handshake record whose ClientHello is five bytes of nonsense.
        garbage = GarbageSender(b"\x16\x03\x01\x00\x05hello")
        await self.connect_plain(garbage)
        await garbage.wait_closed()
        server_side = await self.factory.connection(3)
        await bounded(server_side.ended.wait(), "the server's connectionLost")
        self.assertFalse(server_side.was_joined)
        if garbage.received:
            # A TLS record of type 21: an alert, not chat text.
            self.assertEqual(garbage.received[:1], b"\x15")
        carol.send(b"did something happen?")
        self.assertEqual(await alice.next_lines(1), ["[carol] did something happen?"])
        self.assertEqual(await bob.next_lines(1), ["[carol] did something happen?"])

    async def test_plain_text_told_how_to_connect(self) -> None:
        """
        A plain-text client (as C{nc} or C{telnet}) and a browser's HTTP
        request on the TLS port each get one plain line saying how to
        connect (the browser as an HTTP error's body), no TLS byte, and are
        closed without ever joining; the TLS clients keep chatting.
        """
        alice, bob, carol = await self.three_named()
        line = how_to_connect(self.port).encode() + b"\r\n"
        typed = GarbageSender(b"hello?\n")
        browser = GarbageSender(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        for index, client in enumerate([typed, browser], start=3):
            await self.connect_plain(client)
            await client.wait_closed()
            self.assertTrue(client.ended.value.check(ConnectionDone))
            server_side = await self.factory.connection(index)
            await bounded(server_side.ended.wait(), "the server's connectionLost")
            self.assertFalse(server_side.was_joined)
        self.assertEqual(typed.received, line)
        self.assertTrue(
            browser.received.startswith(b"HTTP/1.0 400 Bad Request\r\n"),
            browser.received,
        )
        self.assertTrue(browser.received.endswith(b"\r\n\r\n" + line))
        carol.send(b"did something happen?")
        self.assertEqual(await alice.next_lines(1), ["[carol] did something happen?"])
        self.assertEqual(await bob.next_lines(1), ["[carol] did something happen?"])


class TutorialClientTests(LoopbackServerTestCase):
    """
    The tutorial's blocking Python C{ssl} client works against a server with
    a certificate made the way C{securemsg gencert} makes one.
    """

    async def test_tutorial_client(self) -> None:
        """
        A self-signed certificate from L{certs.generate_self_signed}, written
        with L{certs.write_certificate} and L{certs.write_private_key}, is
        trusted by Python's C{ssl} when loaded as a verify location.  The
        blocking client reads its greeting, sends one message without a
        newline and closes; a Twisted client pinned to the same certificate
        receives the message exactly, then the notice that the sender left
        (a close without TLS close_notify counts as a lost connection).
        """
        certificate, key = certs.generate_self_signed()
        cert_path = str(self.directory / "certificate.pem")
        key_path = str(self.directory / "private.key")
        certs.write_certificate(cert_path, certificate, force=False)
        certs.write_private_key(key_path, key, None, force=False)
        await self.serve(cert_path, key_path)

        watcher = await self.connect(Path(cert_path).read_bytes())
        self.assertEqual(await watcher.next_lines(1), [greeting("guest-1")])

        received = await bounded(
            deferToThread(tutorial_client, self.port, cert_path), "the tutorial client"
        )
        self.assertEqual(received, greeting("guest-2"))
        self.assertEqual(
            await watcher.next_lines(3),
            [
                "*** guest-2 joined",
                "[guest-2] one message without a newline",
                "*** guest-2 left (connection lost)",
            ],
        )

    async def test_tutorial_chat_without_newlines(self) -> None:
        """
        Two clients behave like the tutorial's multi-client chat: each sends
        three messages without a newline, one second apart, and stays
        connected.  Each sees the other's messages one per line, attributed
        by the server, within a second of their sending (the server takes a
        quiet period of L{Limits.line_flush} as their end).  The two are
        interleaved half a second apart, so the test takes about 3 s.
        """
        ca, server = _certs.default_ca_and_server()
        await self.serve(*server.write(self.directory))
        alice = await self.connect(ca.cert_pem())
        self.assertEqual(await alice.next_lines(1), [greeting("guest-1")])
        bob = await self.connect(ca.cert_pem())
        self.assertEqual(await bob.next_lines(1), [greeting("guest-2")])
        self.assertEqual(await alice.next_lines(1), ["*** guest-2 joined"])

        start = reactor.seconds()
        schedule = [
            (index + offset, sender, receiver, f"[{name}] message {index + 1}")
            for index in range(3)
            for offset, sender, receiver, name in [
                (0.0, alice, bob, "alice"),
                (0.5, bob, alice, "bob"),
            ]
        ]
        for at, sender, receiver, message in schedule:
            await deferLater(reactor, max(0.0, start + at - reactor.seconds()))
            assert sender.transport is not None
            sent = reactor.seconds()
            sender.transport.write(message.encode())
            guest = "guest-1" if sender is alice else "guest-2"
            self.assertEqual(
                await bounded(receiver.next_lines(1), message, 1.0),
                [f"[{guest}] {message}"],
            )
            self.assertLess(reactor.seconds() - sent, 1.0)
        self.assertEqual((alice.unread, bob.unread), ([], []))


class PlainTextOverTheLimitTests(LoopbackServerTestCase):
    """
    The connection limits come before the plain-text answer.
    """

    async def test_refused_before_any_answer(self) -> None:
        """
        With one connection allowed per address and held by a TLS client,
        a plain-text client is closed with no answer at all; once the TLS
        client has gone, the next one is told how to connect.
        """
        ca, server = _certs.default_ca_and_server()
        await self.serve(*server.write(self.directory), Limits(max_per_address=1))
        holder = await self.connect(ca.cert_pem())
        self.assertEqual(await holder.next_lines(1), [greeting("guest-1")])
        refused = GarbageSender(b"hello?\n")
        await self.connect_plain(refused)
        await refused.wait_closed()
        self.assertEqual(refused.received, b"")
        assert holder.transport is not None
        holder.transport.loseConnection()
        await holder.wait_closed()
        await bounded(self.factory.connections[0].ended.wait(), "the server's end")
        answered = GarbageSender(b"hello?\n")
        await self.connect_plain(answered)
        await answered.wait_closed()
        self.assertEqual(
            answered.received, how_to_connect(self.port).encode() + b"\r\n"
        )
