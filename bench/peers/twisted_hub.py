#!/usr/bin/env python3
"""
Reference peer: a naive Twisted chat hub, about 30 lines.

A LineReceiver per client on Twisted's own C{ssl:} endpoint (Twisted's TLS
defaults), a greeting line, and every line relayed as C{<userN> line} to
everyone else.  No names, no limits, no queue bound: the baseline that
securemsg's features are paid for against.

    python bench/peers/twisted_hub.py PORT CERT KEY
"""

import sys

from twisted.internet import endpoints, reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver


class Hub(LineReceiver):
    delimiter = b"\n"

    def connectionMade(self):
        self.factory.count += 1
        self.name = b"user%d" % self.factory.count
        self.factory.clients.add(self)
        self.sendLine(b"welcome " + self.name)

    def connectionLost(self, reason):
        self.factory.clients.discard(self)

    def lineReceived(self, line):
        message = b"<" + self.name + b"> " + line
        for client in self.factory.clients:
            if client is not self:
                client.sendLine(message)


def make_factory():
    factory = Factory.forProtocol(Hub)
    factory.clients, factory.count = set(), 0
    return factory


if __name__ == "__main__":
    port, cert, key = sys.argv[1:4]
    description = (
        f"ssl:{port}:interface=127.0.0.1:backlog=1024:privateKey={key}:certKey={cert}"
    )
    endpoints.serverFromString(reactor, description).listen(make_factory())
    reactor.run()
