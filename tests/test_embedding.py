"""
Tests for embedding the server: how L{ChatServerFactory} is built (from a
L{ChatHub}, or with one of its own by L{ChatServerFactory.standalone}), and
the README's "Embedding the server" example, run as it is written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import twisted.internet
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from securemsg.core.history import MemoryHistory
from securemsg.core.hub import ChatHub
from securemsg.core.limits import Limits
from securemsg.protocol import wire
from securemsg.server.factory import DEFAULT_GREETING, ChatServerFactory
from securemsg.server.guard import GuardedTLSFactory

from . import _certs

README = Path(__file__).parent.parent / "README.md"


def readme_example() -> str:
    """The Python code of the README's "Embedding the server"."""
    section = README.read_text().split("## Embedding the server", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no Python example under 'Embedding the server'"
    return match.group(1)


class FactoryTests(SynchronousTestCase):
    """
    L{ChatServerFactory} takes exactly what it uses: a clock, the chat it
    serves and a greeting; the limits are the chat's.
    """

    def test_serves_the_given_chat(self) -> None:
        """
        The factory serves the L{ChatHub} it is given, and holds its
        connections to that chat's L{Limits}: one L{Limits} for the server.
        """
        clock = Clock()
        limits = Limits(max_line_length=100, flood_burst=3)
        chat = ChatHub(clock, default_room="#home", limits=limits)
        factory = ChatServerFactory(clock, chat, greeting="hi {name}")
        self.assertIs(factory.chat, chat)
        self.assertIs(factory.limits, limits)
        self.assertIs(factory.clock, clock)
        self.assertEqual(factory.greeting_lines("bob"), ["hi bob"])
        self.assertEqual(factory.buildProtocol(None).MAX_LENGTH, 100)

    def test_no_chat_settings_beside_a_chat(self) -> None:
        """
        The chat's own settings are not the factory's: given to it, they
        are refused instead of being ignored.
        """
        clock = Clock()
        chat = ChatHub(clock)
        for settings in (
            {"default_room": "#other"},
            {"history": MemoryHistory(clock)},
            {"replay": 5},
            {"log_messages": True},
            {"max_line_length": 10},
            {"limits": Limits()},
        ):
            self.assertRaises(
                TypeError,
                ChatServerFactory,
                clock,
                chat=chat,
                **settings,
            )

    def test_standalone(self) -> None:
        """
        L{ChatServerFactory.standalone} makes a chat of its own from the
        settings it is given, sharing the limits with it.
        """
        clock = Clock()
        limits = Limits(replay=3, max_line_length=64)
        history = MemoryHistory(clock)
        factory = ChatServerFactory.standalone(
            clock,
            greeting="hello {name}",
            limits=limits,
            default_room="#home",
            history=history,
            log_messages=True,
        )
        chat = factory.chat
        self.assertIsInstance(chat, ChatHub)
        self.assertIs(chat.clock, clock)
        self.assertIs(chat.limits, limits)
        self.assertIs(factory.limits, limits)
        self.assertIs(chat.history, history)
        self.assertEqual(chat.default_room, "#home")
        self.assertTrue(chat.log_messages)
        self.assertEqual(factory.greeting_lines("alice"), ["hello alice"])

    def test_standalone_defaults(self) -> None:
        """
        Without settings, the chat has L{Limits}' defaults, the default
        room, a history in memory keeping the replay's worth, and does not
        log what is said.
        """
        clock = Clock()
        factory = ChatServerFactory.standalone(clock)
        self.assertEqual(factory.limits, Limits())
        self.assertEqual(factory.chat.default_room, wire.DEFAULT_ROOM)
        history = factory.chat.history
        assert isinstance(history, MemoryHistory)
        self.assertEqual(history.per_room, Limits().replay)
        self.assertFalse(factory.chat.log_messages)
        self.assertEqual(
            factory.greeting_lines("alice"),
            [DEFAULT_GREETING.replace("{name}", "alice")],
        )

    def test_line_length_at_least_one(self) -> None:
        """A longest line under one byte is refused when the limits are made."""
        self.assertRaises(ValueError, Limits, max_line_length=0)


class ReadmeExampleTests(SynchronousTestCase):
    """
    The README's embedding example works as written, with a
    L{MemoryReactorClock} standing in for the global reactor.
    """

    def test_example_listens_with_the_chat(self) -> None:
        """
        Run in a folder with certificate.pem and private.key, the example
        listens on TCP port 50000 with securemsg's TLS around a chat that
        greets with its greeting.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        _, server = _certs.default_ca_and_server()
        cert_path, key_path = server.write(directory)
        os.rename(cert_path, directory / "certificate.pem")
        os.rename(key_path, directory / "private.key")
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)
        reactor = MemoryReactorClock()
        # "from twisted.internet import reactor" reads this attribute,
        # there only once a reactor is installed.
        if hasattr(twisted.internet, "reactor"):
            self.patch(twisted.internet, "reactor", reactor)
        else:
            twisted.internet.reactor = reactor  # type: ignore[assignment]
            self.addCleanup(delattr, twisted.internet, "reactor")

        # Our own README's code, which is the point of this test.
        exec(compile(readme_example(), str(README), "exec"), {})  # noqa: S102

        self.assertTrue(reactor.hasRun)
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (wire.DEFAULT_PORT, ""))
        assert isinstance(factory, GuardedTLSFactory)
        chat = factory.wrappedFactory
        assert isinstance(chat, ChatServerFactory)
        self.assertIs(chat.clock, reactor)
        self.assertEqual(chat.greeting_lines("alice"), ["hello alice"])
