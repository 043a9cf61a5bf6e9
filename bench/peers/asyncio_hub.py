#!/usr/bin/env python3
"""
Reference peer: an asyncio + stdlib C{ssl} chat hub (optionally on uvloop).

One C{asyncio.Protocol} per client, a greeting line, every line relayed as
C{<userN> line} to everyone else, the lines of one read in one write.  A
client whose transport holds more than 1 MiB unsent (it does not read) is
aborted, like securemsg's default C{--send-queue}.

    python bench/peers/asyncio_hub.py PORT CERT KEY [--uvloop]
"""

import asyncio
import itertools
import ssl
import sys

LIMIT = 1024 * 1024
clients = set()
numbers = itertools.count(1)


class Hub(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.name = b"<user%d> " % next(numbers)
        self.buffer = b""
        clients.add(self)
        transport.write(b"welcome\n")

    def connection_lost(self, exc):
        clients.discard(self)

    def data_received(self, data):
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        if not lines:
            return
        # One write per client for all the lines of this read (asyncio's
        # SSL transport makes a TLS record and a send() of every write).
        message = b"".join([self.name + line + b"\n" for line in lines])
        for client in list(clients):
            if client is not self:
                transport = client.transport
                if transport.get_write_buffer_size() > LIMIT:
                    transport.abort()
                    clients.discard(client)
                else:
                    transport.write(message)


async def main(port, cert, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        Hub, "127.0.0.1", int(port), ssl=context, backlog=1024
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.install()
    asyncio.run(main(*sys.argv[1:4]))
