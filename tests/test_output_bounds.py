"""
Tests that what the server holds for a client that does not read stays
bounded by C{--send-queue} plus one bounded reply, over real TLS on
loopback: the amplification of issue 12 (a few bytes of C{/history}
asking for megabytes).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.tcp import Connection
from twisted.logger import capturedLogs

from securemsg.core.limits import Limits
from securemsg.protocol import wire
from securemsg.server.protocol import ChatServerProtocol

from . import _certs
from ._loopback import LoopbackServerTestCase, bounded, greeting, tls_transport

#: Lines of 2048 C1 control characters: 4 kB as sent, 16 kB as shown and
#: kept (each becomes <U+0085>), so 50 of them are 800 kB.
BIG_TEXT = "\x85" * 2048


class NonReaderTests(LoopbackServerTestCase):
    """
    A client that asks for a lot and then stops reading is dropped once
    what is queued for it passes the send queue.
    """

    async def test_history_amplification_bounded(self) -> None:
        """
        A client that sends 20 C{/history #big 50} in one write and never
        reads is disconnected ("not reading") once the bytes queued for it
        pass C{--send-queue}; the bytes held for it (our queue and
        Twisted's buffers) never exceed the send queue plus one bounded
        reply.  Flood control is raised here so that it is the send queue
        that stops it.
        """
        limits = Limits(send_queue=512 * 1024, flood_burst=200, flood_rate=100)
        self.factory.limits = limits
        for number in range(50):
            self.factory.chat.history.record(
                wire.Message("bob", wire.sanitize(BIG_TEXT), "#big", float(number))
            )
        most = [0]

        def held(protocol: ChatServerProtocol) -> int:
            # Our queue, and the buffer of Twisted's TCP transport below TLS
            # (read here, not through tlsserver.held_bytes, which it checks).
            tcp = protocol.transport.transport
            buffered: int = len(tcp.dataBuffer) - tcp.offset + tcp._tempDataLen
            return sum(map(len, protocol._queue._outgoing)) + buffered

        deliver = ChatServerProtocol.deliver
        over = ChatServerProtocol._over_send_queue

        def counting_deliver(protocol: ChatServerProtocol, event: Any) -> None:
            deliver(protocol, event)
            most[0] = max(most[0], held(protocol))

        def counting_over(protocol: ChatServerProtocol) -> None:
            # The peak: what was held when it went over, before it is let go.
            most[0] = max(most[0], held(protocol))
            over(protocol)

        self.patch(ChatServerProtocol, "deliver", counting_deliver)
        self.patch(ChatServerProtocol, "_over_send_queue", counting_over)

        ca, server = _certs.default_ca_and_server()
        await self.serve(*server.write(self.directory))
        client = await self.connect(ca.cert_pem())
        self.assertEqual(await client.next_lines(1), [greeting("guest-1")])
        client.send(b"/join #big")
        # The replay is bounded too: 7 of the 16 kB lines fit in 128 kB.
        lines = await client.next_lines(10)
        self.assertEqual(
            lines[1],
            "*** history of #big: 7 message(s)"
            " (43 older not shown: too long for one reply)",
        )
        connection = await self.factory.connection(0)
        # Small kernel buffers both ways, so that the kernel does not take
        # megabytes on loopback before Twisted's buffer fills and pauses us.
        client_tcp = tls_transport(client).transport
        assert isinstance(client_tcp, Connection)
        for sock, option in [
            (connection.transport.transport.socket, socket.SO_SNDBUF),
            (client_tcp.socket, socket.SO_RCVBUF),
        ]:
            sock.setsockopt(socket.SOL_SOCKET, option, 4096)
        tls_transport(client).pauseProducing()  # Reads no more.
        with capturedLogs() as events:
            client.send(*[b"/history #big 50"] * 20)
            await bounded(connection.ended.wait(), "the server dropping the client")
        logged = [str(event.get("log_format", "")).format(**event) for event in events]
        self.assertTrue(
            any("send queue over 524288 bytes" in line for line in logged), logged
        )
        self.assertEqual(connection._quit_reason, "not reading")
        self.assertGreater(most[0], limits.send_queue)
        # One reply's text: its entries within reply_bytes, and its header
        # and footer.
        self.assertLessEqual(most[0], limits.send_queue + limits.reply_bytes + 200)
        tls_transport(client).resumeProducing()
