# -*- test-case-name: tests.test_metrics -*-
"""
What the running server counts, as plain numbers.

The server's hot paths add to plain integers here (an attribute or a dict
entry: about 0.1 us), and L{securemsg.server.metrics} reads them only when
Prometheus scrapes.  A prometheus_client C{Counter.labels(...).inc()} per
delivered line costs about 2 us, and 0.6 us even with the labelled child
kept, under a lock: as much as the rest of a delivery.  So nothing here
imports prometheus_client, and the chat code only ever sees this object.

No label or key holds message text, a name or an address.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Final

from OpenSSL import SSL
from twisted.python.failure import Failure

from securemsg.protocol import wire

if TYPE_CHECKING:
    from securemsg.server.guard import GuardedTLSFactory

#: Which kind of line each event is, for C{lines delivered by kind}.
ROOM_EVENTS: Final = (wire.Message, wire.Action)
PRIVATE_EVENTS: Final = (wire.PrivateMessage,)

# What OpenSSL says on the server when a client certificate is missing or
# fails verification.
_CERTIFICATE_PROBLEMS: Final = (
    "peer did not return a certificate",
    "certificate verify failed",
    "certificate required",
    "unknown ca",
    "bad certificate",
    "certificate revoked",
    "certificate expired",
    "unsupported certificate",
)


def line_kind(event_type: type) -> str:
    """C{room}, C{private} or C{notice} (everything else the server says)."""
    if issubclass(event_type, ROOM_EVENTS):
        return "room"
    if issubclass(event_type, PRIVATE_EVENTS):
        return "private"
    return "notice"


def handshake_failure(reason: Failure) -> str:
    """
    Why a TLS handshake did not finish, for the metrics: C{protocol_error},
    C{client_certificate} (refused or missing), C{not_tls} (told how to
    connect), or C{closed} (the client went away: a port scanner, a health
    check).  A timeout is counted where it happens.
    """
    # Imported here: securemsg.guard imports the server, which imports this.
    from securemsg.server.guard import NotTLSError

    if reason.check(NotTLSError):
        return "not_tls"
    if reason.check(SSL.Error):
        text = str(reason.value).lower()
        if any(problem in text for problem in _CERTIFICATE_PROBLEMS):
            return "client_certificate"
        return "protocol_error"
    return "closed"


class ServerCounters:
    """
    Counts kept by one L{securemsg.server.ChatServerFactory}.

    @ivar handshakes_completed: TLS handshakes that finished.
    @ivar handshakes_failed: those that did not, by reason (see
        L{handshake_failure}; C{timeout} too).
    @ivar lines_received: lines read from joined clients (before flood
        control).
    @ivar lines_delivered: lines handed to clients, by event class (see
        L{delivered_by_kind}).
    @ivar flood_dropped: lines dropped by flood control.
    @ivar send_queue_disconnects: clients disconnected because they did not
        read and their send queue filled.
    @ivar listeners: (description, guard factory) for each listening
        endpoint; a guard has C{protocols} (its open connections) and
        C{refused} (a L{Counter} by reason).
    """

    def __init__(self) -> None:
        self.handshakes_completed = 0
        self.handshakes_failed: Counter[str] = Counter()
        self.lines_received = 0
        self.lines_delivered: Counter[type] = Counter()
        self.flood_dropped = 0
        self.send_queue_disconnects = 0
        self.listeners: list[tuple[str, GuardedTLSFactory]] = []

    def add_listener(self, description: str, guard: GuardedTLSFactory) -> None:
        """Count the connections of the listener C{description} too."""
        self.listeners.append((description, guard))

    def delivered_by_kind(self) -> dict[str, int]:
        """Lines delivered so far, by L{line_kind}."""
        kinds = {"room": 0, "private": 0, "notice": 0}
        for event_type, count in list(self.lines_delivered.items()):
            kinds[line_kind(event_type)] += count
        return kinds

    def refused(self) -> Counter[str]:
        """Connections refused by every listener's guard, by reason."""
        total: Counter[str] = Counter()
        for _, guard in self.listeners:
            total.update(guard.refused)
        return total
