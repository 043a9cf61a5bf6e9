"""
A free TCP port on loopback, for the few programs a test runs that need a
port number before they start (haproxy, systemd-socket-activate).
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """
    A port on 127.0.0.1 that the kernel just handed out and took back: it
    is very unlikely to be handed out again at once.  Listen on port 0
    instead wherever the program lets you read the port back.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
