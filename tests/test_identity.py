"""
Tests for who people are on a securemsg server: names taken from client
certificates and kept for their holders, guests marked C{~name}, the
operators' commands, bans that outlast a restart, and the mutual-TLS
handshake that decides all this (real TLS, in memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import ClientFactory
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from securemsg.admin import ca
from securemsg.client.trust import load_client_certificate
from securemsg.core.history import MemoryHistory
from securemsg.core.hub import ChatHub, ReloadResult
from securemsg.core.records import BanRecord, ServerRecords
from securemsg.protocol import jsonwire, wire
from securemsg.server.factory import ChatServerFactory
from securemsg.server.outbox import ANNOUNCEMENT_DELAY
from securemsg.server.reload import CertificateReloader
from securemsg.tls.policy import ServerTLS, TLSSettings, load_tls

from . import _certs
from ._fakes import Recorder
from ._tls import LineCollector

ALICE = "sha256:" + "a1" * 32
BOB = "sha256:" + "b2" * 32
OPERATOR_COMMANDS = ["/kick bob", "/ban bob", "/unban bob", "/motd hi", "/reload"]


def greeting(name: str) -> str:
    return f"*** Welcome to securemsg, {name}. Type /help for commands."


class ChatCase(SynchronousTestCase):
    """
    A L{ChatHub} that checks client certificates (C{certificates=True}) with
    alice as its operator, and helpers to let people in.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.state = ServerRecords()
        self.reloads: list[ReloadResult] = []
        self.chat = self.make_chat()

    def make_chat(self, **options: Any) -> ChatHub:
        settings: dict[str, Any] = {
            "state": self.state,
            "operators": ["alice"],
            "certificates": True,
            "reload": self.reload,
        }
        settings.update(options)
        return ChatHub(self.clock, **settings)

    def reload(self) -> ReloadResult:
        return self.reloads.pop(0)

    def verified(self, name: str, fingerprint: str, address: str = "192.0.2.1") -> Any:
        """Someone whose client certificate names them C{name}."""
        person = Recorder()
        self.chat.join(person, identity=name, fingerprint=fingerprint, address=address)
        return person

    def guest(self, address: str | None = "192.0.2.9") -> Any:
        """Someone without a client certificate."""
        person = Recorder()
        self.chat.join(person, address=address)
        return person

    def send(self, person: Any, line: str) -> None:
        """C{person} types C{line}."""
        command = wire.parse_command(line)
        assert command is not None
        self.chat.handle(person, command)

    def take_all(self, *people: Recorder) -> None:
        for person in people:
            person.take()


class CertificateNameTests(ChatCase):
    """
    A verified client certificate gives its holder their name, which nobody
    else may hold or take, even after they left.
    """

    def test_verified_join_takes_the_certificate_name(self) -> None:
        """
        The name comes from the certificate, and is remembered as a holder's
        name (saved in the state file at once).
        """
        self.state.path = self.mktemp()
        guest = self.guest()
        alice = Recorder()
        name = self.chat.join(alice, identity="alice", fingerprint=ALICE)
        self.assertEqual((name, alice.name), ("alice", "alice"))
        self.assertIs(self.chat.find("ALICE"), alice)
        self.assertEqual(guest.take(), ["*** alice joined"])
        self.assertEqual(
            ServerRecords.load(self.state.path).holders, {"alice": "alice"}
        )

    def test_guest_holding_the_name_is_renamed(self) -> None:
        """
        A guest who took a name before its holder first came is given a
        guest name when the holder arrives, and told why; everyone sees the
        change.
        """
        squatter, bystander = self.guest(), self.guest()
        self.send(squatter, "/nick Alice")
        self.take_all(squatter, bystander)
        alice = self.verified("alice", ALICE)
        self.assertEqual(alice.name, "alice")
        self.assertEqual(squatter.name, "guest-3")
        self.assertEqual(
            squatter.take(),
            [
                "!!! the name Alice belongs to a certificate holder",
                "*** you are now guest-3",
                "*** alice joined",
            ],
        )
        self.assertEqual(
            bystander.take(),
            ["*** ~Alice is now known as ~guest-3", "*** alice joined"],
        )
        self.assertEqual(self.chat.names(), ["guest-3", "guest-2", "alice"])

    def test_second_connection_closes_the_first(self) -> None:
        """
        The same holder connecting again (from another device) closes the
        older connection: one name, one connection.
        """
        bystander = self.guest()
        first = self.verified("alice", ALICE)
        self.take_all(bystander, first)
        second = self.verified("alice", ALICE, address="198.51.100.4")
        self.assertEqual(
            first.disconnected,
            (
                "you connected again from elsewhere; this connection is closed",
                "connected again",
            ),
        )
        self.assertNotIn(first, self.chat)
        self.assertIs(self.chat.find("alice"), second)
        self.assertEqual(
            bystander.take(), ["*** alice left (connected again)", "*** alice joined"]
        )
        self.assertEqual(self.chat.names(), ["guest-1", "alice"])

    def test_verified_cannot_change_name(self) -> None:
        """A certificate holder's name is the certificate's; /nick is refused."""
        alice = self.verified("alice", ALICE)
        alice.take()
        self.send(alice, "/nick queen")
        self.assertEqual(
            alice.take(), ["!!! your name comes from your client certificate"]
        )
        self.assertEqual(alice.name, "alice")

    def test_guest_cannot_take_present_holders_name(self) -> None:
        """A guest cannot take the name of a holder who is here."""
        self.verified("alice", ALICE)
        guest = self.guest()
        guest.take()
        self.send(guest, "/nick ALICE")
        self.assertEqual(guest.take(), ["!!! the name alice is taken"])

    def test_holders_name_stays_reserved_after_they_left(self) -> None:
        """Once a holder has been here, their name stays theirs when they leave."""
        alice = self.verified("alice", ALICE)
        self.chat.leave(alice)
        guest = self.guest()
        guest.take()
        self.send(guest, "/nick Alice")
        self.assertEqual(
            guest.take(), ["!!! the name Alice belongs to a certificate holder"]
        )
        self.assertEqual(guest.name, "guest-1")

    def test_holders_names_outlast_a_restart(self) -> None:
        """The reserved names come from the state file after a restart."""
        path = self.mktemp()
        first = ServerRecords(path)
        self.chat = self.make_chat(state=first)
        self.verified("alice", ALICE)
        self.chat = self.make_chat(state=ServerRecords.load(path))
        guest = self.guest()
        guest.take()
        self.send(guest, "/nick alice")
        self.assertEqual(
            guest.take(), ["!!! the name alice belongs to a certificate holder"]
        )

    def test_other_names_are_free(self) -> None:
        """Guests may still take any name no holder has."""
        self.verified("alice", ALICE)
        guest = self.guest()
        guest.take()
        self.send(guest, "/nick carol")
        self.assertEqual(guest.take(), ["*** you are now carol"])


class GuestMarkTests(ChatCase):
    """
    Where client certificates are checked, a guest is shown to others as
    C{~name}, so nobody mistakes them for a certificate holder.
    """

    def setUp(self) -> None:
        super().setUp()
        self.alice = self.verified("alice", ALICE)
        self.guest_one = self.guest()
        self.send(self.guest_one, "/nick bob")
        self.take_all(self.alice, self.guest_one)

    def test_chat_lines(self) -> None:
        """A guest's chat lines and actions carry the mark; a holder's do not."""
        self.send(self.guest_one, "hello")
        self.send(self.guest_one, "/me waves")
        self.assertEqual(self.alice.take(), ["[~bob] hello", "* ~bob waves"])
        self.send(self.alice, "hi bob")
        self.assertEqual(self.guest_one.take(), ["[alice] hi bob"])

    def test_private_lines(self) -> None:
        """Private lines mark the guest on both sides of the arrow."""
        self.send(self.guest_one, "/msg alice psst")
        self.assertEqual(self.alice.take(), ["[~bob -> alice] psst"])
        self.assertEqual(self.guest_one.take(), ["[~bob -> alice] psst"])
        self.send(self.alice, "/msg bob yes?")
        self.assertEqual(self.guest_one.take(), ["[alice -> ~bob] yes?"])

    def test_who(self) -> None:
        """/who lists guests with the mark."""
        self.send(self.guest_one, "/who")
        self.assertEqual(self.guest_one.take(), ["*** 2 here: alice, ~bob"])

    def test_join_and_part_notices(self) -> None:
        """
        Others see a guest's arrival in and departure from a room with the
        mark, and so does the guest (it is how they are shown).
        """
        self.send(self.alice, "/join #dev")
        self.alice.take()
        self.send(self.guest_one, "/join #dev")
        self.assertEqual(self.alice.take(), ["*** ~bob joined #dev"])
        self.assertEqual(self.guest_one.take()[0], "*** ~bob joined #dev")
        self.send(self.guest_one, "/part #dev")
        self.assertEqual(self.alice.take(), ["*** ~bob left #dev"])
        self.assertEqual(self.guest_one.take(), ["*** ~bob left #dev"])

    def test_arrival_in_the_default_room(self) -> None:
        """A guest's arrival on the server is announced with the mark."""
        newcomer = self.guest()
        self.assertEqual(self.alice.take(), [f"*** ~{newcomer.name} joined"])

    def test_departure_notice(self) -> None:
        """A guest's disconnection is announced with the mark."""
        self.chat.leave(self.guest_one, "connection lost")
        self.assertEqual(self.alice.take(), ["*** ~bob left (connection lost)"])

    def test_rename_notice(self) -> None:
        """
        Both names in a guest's rename carry the mark for others; the guest
        is told their bare new name.
        """
        self.send(self.guest_one, "/nick carol")
        self.assertEqual(self.alice.take(), ["*** ~bob is now known as ~carol"])
        self.assertEqual(self.guest_one.take(), ["*** you are now carol"])

    def test_rename_by_arriving_holder(self) -> None:
        """
        A guest renamed because the holder of their name arrived is shown
        with the mark on both names.
        """
        self.send(self.guest_one, "/nick carol")
        self.alice.take()
        self.verified("carol", BOB)
        self.assertEqual(
            self.alice.take(),
            ["*** ~carol is now known as ~guest-2", "*** carol joined"],
        )

    def test_topic_setter(self) -> None:
        """
        A topic a guest set reads as set by the guest, never as by the
        certificate holder of the same name.
        """
        self.send(self.guest_one, "/topic guest rules")
        self.assertEqual(
            self.alice.take(), ["*** topic of #lobby: guest rules (set by ~bob)"]
        )
        self.send(self.alice, "/topic")
        self.assertEqual(
            self.alice.take(), ["*** topic of #lobby: guest rules (set by ~bob)"]
        )
        self.guest_one.take()
        self.send(self.alice, "/topic holder rules")
        self.assertEqual(
            self.guest_one.take(), ["*** topic of #lobby: holder rules (set by alice)"]
        )

    def test_no_mark_without_certificates(self) -> None:
        """A server that checks no certificates marks nobody."""
        self.chat = self.make_chat(certificates=False)
        one, two = self.guest(), self.guest()
        self.take_all(one, two)
        self.send(one, "hello")
        self.send(one, "/msg guest-2 psst")
        self.send(two, "/who")
        self.assertEqual(
            two.take(),
            [
                "[guest-1] hello",
                "[guest-1 -> guest-2] psst",
                "*** 2 here: guest-1, guest-2",
            ],
        )


class PrivateHistoryTests(ChatCase):
    """
    Private history (with C{store_private}) belongs to certificate holders:
    it is kept only between two of them and shown only to one of them.  A
    guest's name is anyone's once they leave, so nothing a guest says or
    is told privately is kept, and guests are told so.
    """

    def setUp(self) -> None:
        super().setUp()
        self.history = MemoryHistory(self.clock, store_private=True)
        self.chat = self.make_chat(history=self.history)

    def test_whoever_takes_a_guests_name_reads_nothing(self) -> None:
        """
        The review's case: guests alice and bob talk privately, alice
        leaves, mallory takes her name and asks for her conversation with
        bob (who need not be there): nothing was kept, and mallory is told
        why.  On a server that checks no certificates (everyone a guest)
        too.
        """
        for certificates in (True, False):
            self.history = MemoryHistory(self.clock, store_private=True)
            self.chat = self.make_chat(history=self.history, certificates=certificates)
            alice, bob = self.guest(), self.guest()
            self.send(alice, "/nick alice")
            self.send(bob, "/nick bob")
            self.send(alice, "/msg bob meet at noon")
            self.send(bob, "/msg alice the code is 4711")
            self.chat.leave(alice)
            self.chat.leave(bob)
            mallory = self.guest()
            self.send(mallory, "/nick alice")
            mallory.take()
            self.send(mallory, "/history bob")
            self.assertEqual(
                mallory.take(),
                [
                    "!!! private history is kept only between holders of client"
                    " certificates; a guest's name can be taken by others, so"
                    " guests have none"
                ],
            )
            self.assertEqual(
                self.successResultOf(self.history.fetch_private("alice", "bob", 9)),
                [],
            )

    def test_guest_and_holder(self) -> None:
        """
        A conversation between a guest and a holder is not kept either:
        the guest's side of it has no owner.
        """
        alice = self.verified("alice", ALICE)
        gina = self.guest()
        self.send(gina, "/nick gina")
        self.send(gina, "/msg alice hello")
        self.send(alice, "/msg gina hi")
        self.take_all(alice, gina)
        self.send(alice, "/history gina")
        self.assertEqual(alice.take(), ["*** no history for alice <-> gina"])
        self.send(gina, "/history alice")
        self.assertIn("guests have none", gina.take()[0])

    def test_holders_read_their_conversation_again(self) -> None:
        """
        Between two holders the conversation is kept, and the holder reads
        it again on a later connection, while no guest can ever take
        either name to read it.
        """
        alice = self.verified("alice", ALICE)
        bob = self.verified("bob", BOB)
        self.send(alice, "/msg bob meet at noon")
        self.chat.leave(alice)
        self.chat.leave(bob)
        mallory = self.guest()
        self.send(mallory, "/nick alice")
        self.send(mallory, "/history bob")
        self.assertEqual([line[:3] for line in mallory.take()[-2:]], ["!!!", "!!!"])
        again = self.verified("alice", ALICE)
        again.take()
        self.send(again, "/history bob")
        self.assertEqual(
            again.take(),
            [
                "*** history of alice <-> bob: 1 message(s)",
                "~ 2023-11-14T22:13:20Z [alice -> bob] meet at noon",
                "*** end of history of alice <-> bob",
            ],
        )

    def test_invalid_name(self) -> None:
        """/history of something that is no name is refused, not echoed."""
        alice = self.verified("alice", ALICE)
        alice.take()
        self.send(alice, "/history b\x1bob")
        self.assertEqual(
            alice.take(),
            [f"!!! that name is not allowed; {wire.NAME_RULES}"],
        )


class WhoAmITests(ChatCase):
    """/whoami says how the server knows you."""

    def test_verified(self) -> None:
        """A holder is told their certificate's fingerprint."""
        alice = self.verified("alice", ALICE)
        alice.take()
        self.send(alice, "/whoami")
        self.assertEqual(
            alice.take(),
            [f"*** you are alice (verified by client certificate {ALICE})"],
        )

    def test_guest(self) -> None:
        """A guest on a server that checks certificates is told they are one."""
        guest = self.guest()
        self.send(guest, "/whoami")
        self.assertEqual(
            guest.take(), ["*** you are guest-1 (guest: no client certificate)"]
        )

    def test_no_certificates(self) -> None:
        """A server that checks no certificates only says the name."""
        self.chat = self.make_chat(certificates=False)
        guest = self.guest()
        self.send(guest, "/whoami")
        self.assertEqual(guest.take(), ["*** you are guest-1"])


class OperatorTests(ChatCase):
    """
    Operators (listed names, vouched for by a certificate) may kick, ban,
    unban, set the message of the day and reload the certificates.
    """

    def setUp(self) -> None:
        super().setUp()
        self.state.path = self.mktemp()
        self.alice = self.verified("alice", ALICE, address="192.0.2.1")
        self.bob = self.verified("bob", BOB, address="192.0.2.2")
        self.carol = self.guest(address="192.0.2.3")
        self.take_all(self.alice, self.bob, self.carol)

    def test_kick(self) -> None:
        """/kick disconnects someone and tells everyone why."""
        self.send(self.alice, "/kick bob flooding the room")
        why = "kicked by alice: flooding the room"
        self.assertEqual(self.bob.disconnected, (why, why))
        self.assertNotIn(self.bob, self.chat)
        self.assertEqual(self.alice.take(), [f"*** bob left ({why})"])
        self.assertEqual(self.carol.take(), [f"*** bob left ({why})"])

    def test_quit_message_is_not_a_kick(self) -> None:
        """
        Parting words that read like a kick are shown as the leaver's own
        words, unlike a real kick, in text and in JSON.
        """
        self.chat.leave(self.bob, message="kicked by alice: spamming")
        quit_line = '*** bob left, saying "kicked by alice: spamming"'
        self.assertEqual(self.alice.take(), [quit_line])
        self.send(self.alice, "/kick guest-1 spamming")
        kick_line = "*** ~guest-1 left (kicked by alice: spamming)"
        self.assertEqual(self.alice.take(), [kick_line])
        self.assertNotEqual(
            jsonwire.event_to_json(wire.Departed("bob", message="kicked by alice")),
            jsonwire.event_to_json(wire.Departed("bob", "kicked by alice")),
        )

    def test_kick_nobody(self) -> None:
        """/kick of a name nobody has says so."""
        self.send(self.alice, "/kick dave")
        self.assertEqual(self.alice.take(), ["!!! nobody here is called dave"])

    def test_ban_holder_by_fingerprint(self) -> None:
        """
        /ban of a certificate holder bans their certificate, saves it, and
        disconnects them.
        """
        self.send(self.alice, "/ban bob")
        self.assertEqual(
            self.alice.take(),
            [f"*** banned bob (certificate {BOB})", "*** bob left (banned by alice)"],
        )
        self.assertEqual(
            self.bob.disconnected, ("you are banned by alice", "banned by alice")
        )
        ban = BanRecord("bob", "alice", 1_700_000_000.0)
        self.assertEqual(self.state.fingerprints, {BOB: ban})
        self.assertEqual(self.state.addresses, {})
        self.assertEqual(ServerRecords.load(self.state.path).fingerprints, {BOB: ban})

    def test_ban_guest_by_address(self) -> None:
        """/ban of a guest bans their address."""
        self.send(self.alice, "/ban guest-1")
        self.assertEqual(
            self.alice.take(),
            [
                "*** banned guest-1 (address 192.0.2.3)",
                "*** ~guest-1 left (banned by alice)",
            ],
        )
        self.assertIsNotNone(self.carol.disconnected)
        self.assertEqual(
            ServerRecords.load(self.state.path).addresses,
            {"192.0.2.3": BanRecord("guest-1", "alice", 1_700_000_000.0)},
        )

    def test_ban_guest_without_address(self) -> None:
        """A guest with no IP address (a UNIX socket) cannot be banned."""
        dave = self.guest(address=None)
        self.send(self.alice, "/ban guest-2")
        self.assertEqual(
            self.alice.take(),
            [
                "*** ~guest-2 joined",
                "!!! guest-2 cannot be banned: no certificate or address",
            ],
        )
        self.assertIn(dave, self.chat)

    def test_ban_that_cannot_be_saved(self) -> None:
        """
        When the state file cannot be written the ban still holds (until a
        restart), and the operator is told.
        """
        self.state.path = str(Path(self.mktemp()) / "missing" / "state.json")
        with capturedLogs() as events:
            self.send(self.alice, "/ban bob")
        self.assertEqual(
            self.alice.take(),
            [
                "!!! the ban holds until restart: the state file could not be written",
                f"*** banned bob (certificate {BOB})",
                "*** bob left (banned by alice)",
            ],
        )
        self.assertIn(BOB, self.state.fingerprints)
        errors = [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(
            errors,
            [
                f"could not save the server state to {self.state.path}:"
                " No such file or directory"
            ],
        )

    def test_unban(self) -> None:
        """/unban lifts a ban by name, and saves that."""
        self.send(self.alice, "/ban bob")
        self.alice.take()
        self.send(self.alice, "/unban BOB")
        self.assertEqual(self.alice.take(), [f"*** unbanned: {BOB}"])
        self.assertEqual(ServerRecords.load(self.state.path).fingerprints, {})

    def test_unban_nothing(self) -> None:
        """/unban of something not banned says so."""
        self.send(self.alice, "/unban 192.0.2.99")
        self.assertEqual(self.alice.take(), ["!!! no ban matches 192.0.2.99"])

    def test_motd(self) -> None:
        """
        Anyone may see the message of the day; an operator sets it (everyone
        is told), newcomers get it when they join, and C{/motd -} clears it.
        """
        self.send(self.carol, "/motd")
        self.assertEqual(self.carol.take(), ["*** motd: (none)"])
        self.send(self.alice, "/motd be kind")
        for person in (self.alice, self.bob, self.carol):
            self.assertEqual(person.take(), ["*** motd: be kind"])
        self.assertEqual(ServerRecords.load(self.state.path).motd, "be kind")
        newcomer = Recorder()
        self.chat.join(newcomer, lambda name: [wire.Notice(f"hello {name}")])
        self.assertEqual(newcomer.take(), ["*** hello guest-2", "*** motd: be kind"])
        self.send(self.alice, "/motd -")
        self.assertEqual(self.carol.take(), ["*** ~guest-2 joined", "*** motd: (none)"])
        self.assertEqual(self.state.motd, "")

    def test_reload(self) -> None:
        """/reload calls the reload hook and reports how it went."""
        self.reloads = [
            (True, "reloaded: now serving sha256:00"),
            (False, "reload failed, the current certificate stays: oops"),
        ]
        self.send(self.alice, "/reload")
        self.send(self.alice, "/reload")
        self.assertEqual(
            self.alice.take(),
            [
                "*** reloaded: now serving sha256:00",
                "!!! reload failed, the current certificate stays: oops",
            ],
        )
        self.assertEqual(self.reloads, [])

    def test_reload_unavailable(self) -> None:
        """A chat without a reload hook says it cannot reload."""
        self.chat.reload = None
        self.send(self.alice, "/reload")
        self.assertEqual(
            self.alice.take(), ["!!! this server cannot reload its certificates"]
        )

    def assertAllRefused(self, person: Recorder) -> None:
        """Every operator command from C{person} is refused and does nothing."""
        for line in OPERATOR_COMMANDS:
            self.send(person, line)
        self.assertEqual(
            person.take(),
            [
                f"!!! permission denied: {line.split()[0]} is for operators"
                for line in OPERATOR_COMMANDS
            ],
        )
        self.assertFalse(self.chat.is_operator(person))
        self.assertIn(self.bob, self.chat)
        self.assertIsNone(self.bob.disconnected)
        self.assertEqual((self.state.fingerprints, self.state.addresses), ({}, {}))
        self.assertEqual(self.state.motd, "")

    def test_refused_for_others(self) -> None:
        """A certificate holder who is not an operator may not use them."""
        self.state.fingerprints[BOB] = BanRecord("bob", "alice", 0.0)
        self.send(self.bob, "/unban bob")
        self.assertEqual(
            self.bob.take(), ["!!! permission denied: /unban is for operators"]
        )
        del self.state.fingerprints[BOB]
        self.assertAllRefused(self.bob)
        self.assertTrue(self.chat.is_operator(self.alice))

    def test_refused_for_guests(self) -> None:
        """A guest may not use them."""
        self.assertAllRefused(self.carol)

    def test_refused_for_guest_with_operators_name(self) -> None:
        """
        A guest who took an operator's name (the operator never came, so the
        name is not reserved yet) is still no operator: only a certificate
        vouches for a name.
        """
        self.state = ServerRecords()
        self.chat = self.make_chat()
        self.bob = self.verified("bob", BOB)
        impostor = self.guest()
        self.send(impostor, "/nick alice")
        self.assertEqual(impostor.take(), ["*** you are now alice"])
        self.assertAllRefused(impostor)

    def test_refused_without_certificates(self) -> None:
        """
        On a server that checks no certificates nobody is an operator, even
        under a listed name.
        """
        self.chat = self.make_chat(certificates=False)
        self.bob = self.guest()
        self.send(self.bob, "/nick bob")
        impostor = self.guest()
        self.send(impostor, "/nick alice")
        impostor.take()
        self.assertAllRefused(impostor)


# ---------------------------------------------------------------------------
# Over real TLS, in memory


@dataclass
class Server:
    """A chat server's factory and the TLS it speaks."""

    factory: ChatServerFactory
    creator: ServerTLS

    @property
    def chat(self) -> ChatHub:
        return self.factory.chat


class MutualTLSCase(SynchronousTestCase):
    """
    A client CA made with L{securemsg.admin.ca} (alice, bob and carol, carol
    revoked), another CA with its own alice, and the server's certificate;
    and servers and clients joined by real TLS in memory.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.ca_directory = self.directory / "ca"
        ca.init_ca(self.ca_directory)
        self.issued = {
            name: ca.issue(self.ca_directory, name)
            for name in ("alice", "bob", "carol")
        }
        ca.revoke(self.ca_directory, "carol")
        other = self.directory / "other-ca"
        ca.init_ca(other, name="some other CA")
        self.forged = ca.issue(other, "alice")
        self.server_ca, server = _certs.default_ca_and_server()
        self.cert_path, self.key_path = server.write(self.directory)
        self.clock = Clock()
        self.pumps: list[IOPump] = []

    def settings(self, client_auth: str = "required", crl: bool = True) -> TLSSettings:
        paths = ca.ca_paths(self.ca_directory)
        return TLSSettings(
            self.cert_path,
            self.key_path,
            client_ca_path=paths.certificate,
            client_auth=client_auth,
            crl_path=paths.crl if crl else None,
        )

    def serve(
        self,
        settings: TLSSettings,
        state: ServerRecords | None = None,
        operators: tuple[str, ...] = (),
        history: MemoryHistory | None = None,
    ) -> Server:
        """A chat server (not listening: see L{connect}) with these settings."""
        loaded = load_tls(settings)
        chat = ChatHub(
            self.clock,
            state=state,
            operators=operators,
            certificates=True,
            history=history,
        )
        return Server(ChatServerFactory(self.clock, chat), ServerTLS(loaded.context))

    def certificate(self, issued: ca.IssuedCertificate) -> PrivateCertificate:
        return load_client_certificate(issued.cert_path, issued.key_path)

    def connect(
        self,
        server: Server,
        certificate: PrivateCertificate | None = None,
        *,
        flush: bool = True,
    ) -> LineCollector:
        """
        A client (trusting the server's CA, presenting C{certificate} if
        given) connected to C{server}; the handshake and what follows it
        are done (unless not C{flush}: then nothing has moved yet).
        """
        server_factory = TLSMemoryBIOFactory(
            server.creator, False, server.factory, clock=self.clock
        )
        collector = LineCollector()
        options = optionsForClientTLS(
            "localhost",
            trustRoot=Certificate.loadPEM(self.server_ca.cert_pem()),
            clientCertificate=certificate,
        )
        client_factory = TLSMemoryBIOFactory(
            options,
            True,
            ClientFactory.forProtocol(lambda: collector),
            clock=self.clock,
        )
        address = IPv4Address("TCP", "127.0.0.1", 50000)
        _, _, pump = connectedServerAndClient(
            lambda: server_factory.buildProtocol(address),
            lambda: client_factory.buildProtocol(address),
            greet=False,
            clock=self.clock,
        )
        self.pumps.append(pump)
        if flush:
            self.flush()
        return collector

    def flush(self) -> None:
        """
        Move everything written on any connection, until all is quiet
        (arrivals and departures included).
        """
        for _ in range(3):
            for pump in self.pumps:
                pump.flush()
            self.clock.advance(ANNOUNCEMENT_DELAY)

    def send(self, client: LineCollector, line: str) -> None:
        client.sendLine(line.encode("utf-8"))
        self.flush()

    def assertRefused(self, client: LineCollector, server: Server, alert: str) -> None:
        """
        The server refused the client's certificate with a TLS alert (in
        TLS 1.3 the client has finished its side of the handshake by then):
        the client was let in nowhere and is cut off.
        """
        self.assertEqual(client.received, [])
        self.assertEqual(len(server.chat), 0)
        assert client.lost is not None
        self.assertTrue(client.lost.check(SSL.Error), client.lost)
        self.assertIn(alert, str(client.lost.value))


class RequiredClientCertificateTests(MutualTLSCase):
    """C{--client-auth required}: no valid client certificate, no entry."""

    def test_holder_joins_under_certificate_name(self) -> None:
        """alice's certificate makes her alice, verified by its fingerprint."""
        server = self.serve(self.settings())
        alice = self.connect(server, self.certificate(self.issued["alice"]))
        self.assertEqual(alice.take(), [greeting("alice")])
        self.send(alice, "/whoami")
        fingerprint = self.issued["alice"].fingerprint
        self.assertEqual(
            alice.take(),
            [f"*** you are alice (verified by client certificate {fingerprint})"],
        )
        self.assertIsNone(alice.lost)

    def test_no_certificate(self) -> None:
        """A client without a certificate fails the handshake."""
        server = self.serve(self.settings())
        self.assertRefused(self.connect(server), server, "certificate required")

    def test_certificate_of_another_ca(self) -> None:
        """
        A certificate naming alice, but from a CA the server does not trust,
        fails the handshake.
        """
        server = self.serve(self.settings())
        forged = self.connect(server, self.certificate(self.forged))
        self.assertRefused(forged, server, "unknown ca")

    def test_revoked_certificate(self) -> None:
        """
        carol's revoked certificate fails the handshake once the CRL is
        loaded (and only because of it).
        """
        carol = self.certificate(self.issued["carol"])
        server = self.serve(self.settings())
        self.assertRefused(self.connect(server, carol), server, "certificate revoked")
        without_crl = self.serve(self.settings(crl=False))
        self.assertEqual(self.connect(without_crl, carol).take(), [greeting("carol")])


class OptionalClientCertificateTests(MutualTLSCase):
    """C{--client-auth optional}: clients without a certificate are guests."""

    def test_guest_and_holder(self) -> None:
        """
        A client without a certificate is a guest, marked C{~} to others;
        alice is herself.
        """
        server = self.serve(self.settings("optional"))
        guest = self.connect(server)
        self.assertEqual(guest.take(), [greeting("guest-1")])
        alice = self.connect(server, self.certificate(self.issued["alice"]))
        self.assertEqual(alice.take(), [greeting("alice")])
        self.assertEqual(guest.take(), ["*** alice joined"])
        self.send(guest, "hello")
        self.assertEqual(alice.take(), ["[~guest-1] hello"])
        self.send(alice, "/who")
        self.assertEqual(alice.take(), ["*** 2 here: ~guest-1, alice"])
        self.send(guest, "/whoami")
        self.assertEqual(
            guest.take(), ["*** you are guest-1 (guest: no client certificate)"]
        )

    def test_private_history_follows_the_certificate(self) -> None:
        """
        Private history kept between two holders is read again by whoever
        presents the same certificate later, and by no guest, whatever
        name the guest asks for.
        """
        history = MemoryHistory(self.clock, store_private=True)
        server = self.serve(self.settings("optional"), history=history)
        alice = self.connect(server, self.certificate(self.issued["alice"]))
        self.connect(server, self.certificate(self.issued["bob"]))
        self.send(alice, "/msg bob meet at noon")
        guest = self.connect(server)
        guest.take()
        self.send(guest, "/nick alice")
        self.send(guest, "/history bob")
        self.assertEqual(
            guest.take(),
            [
                "!!! the name alice is taken",
                "!!! private history is kept only between holders of client"
                " certificates; a guest's name can be taken by others, so guests"
                " have none",
            ],
        )
        again = self.connect(server, self.certificate(self.issued["alice"]))
        again.take()
        self.send(again, "/history bob")
        lines = again.take()
        self.assertEqual(lines[0], "*** history of alice <-> bob: 1 message(s)")
        self.assertTrue(lines[1].endswith(" [alice -> bob] meet at noon"), lines)

    def test_bad_certificates_still_refused(self) -> None:
        """
        Optional means a client may come without a certificate, not with
        one that does not verify: another CA's and a revoked one fail.
        """
        server = self.serve(self.settings("optional"))
        forged = self.connect(server, self.certificate(self.forged))
        self.assertRefused(forged, server, "unknown ca")
        carol = self.certificate(self.issued["carol"])
        self.assertRefused(self.connect(server, carol), server, "certificate revoked")


class BanAcrossRestartTests(MutualTLSCase):
    """A ban is kept in the state file and holds after a restart."""

    def test_ban_outlasts_restart(self) -> None:
        """
        alice (an operator) bans bob, who is cut off; on a new server with
        the same state file bob's handshake still succeeds (his certificate
        is valid) but he is told he is banned and closed, while alice joins;
        once she unbans him, he gets in again.
        """
        path = str(self.directory / "state.json")
        alice_certificate = self.certificate(self.issued["alice"])
        bob_certificate = self.certificate(self.issued["bob"])

        first = self.serve(self.settings(), ServerRecords.load(path), ("alice",))
        alice = self.connect(first, alice_certificate)
        bob = self.connect(first, bob_certificate)
        self.assertEqual(alice.take(), [greeting("alice"), "*** bob joined"])
        self.assertEqual(bob.take(), [greeting("bob")])
        self.send(alice, "/ban bob")
        fingerprint = self.issued["bob"].fingerprint
        self.assertEqual(
            alice.take(),
            [
                f"*** banned bob (certificate {fingerprint})",
                "*** bob left (banned by alice)",
            ],
        )
        self.assertEqual(bob.take(), ["!!! you are banned by alice"])
        self.assertIsNotNone(bob.lost)

        second = self.serve(self.settings(), ServerRecords.load(path), ("alice",))
        bob = self.connect(second, bob_certificate)
        self.assertTrue(bob.handshake_done)
        self.assertEqual(bob.take(), ["!!! you are banned from this server"])
        self.assertIsNotNone(bob.lost)
        self.assertEqual(len(second.chat), 0)
        alice = self.connect(second, alice_certificate)
        self.assertEqual(alice.take(), [greeting("alice")])

        self.send(alice, "/unban bob")
        self.assertEqual(alice.take(), [f"*** unbanned: {fingerprint}"])
        bob = self.connect(second, bob_certificate)
        self.assertEqual(bob.take(), [greeting("bob")])
        self.assertEqual(second.chat.names(), ["alice", "bob"])


class RevocationOnReloadTests(MutualTLSCase):
    """
    A reload applies the new CRL and client CA to the clients already
    connected, not only to new handshakes: whoever's certificate is now
    revoked, or no longer issued by the client CA, is disconnected, and an
    operator loses their rights with it.
    """

    def setUp(self) -> None:
        super().setUp()
        settings = self.settings()
        self.server = self.serve(settings, operators=("alice",))
        loaded = load_tls(settings)
        self.server.creator.context = loaded.context
        self.reloader = CertificateReloader(
            settings,
            self.server.creator,
            loaded,
            recheck=self.server.factory.recheck_certificates,
        )
        self.alice = self.connect(self.server, self.certificate(self.issued["alice"]))
        self.bob = self.connect(self.server, self.certificate(self.issued["bob"]))
        self.assertEqual(self.alice.take(), [greeting("alice"), "*** bob joined"])
        self.assertEqual(self.bob.take(), [greeting("bob")])

    def reload(self) -> tuple[tuple[bool, str], list[str]]:
        """Reload; return its result and the warnings it logged."""
        with capturedLogs() as events:
            result = self.reloader.reload("test")
        self.flush()
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        return result, warnings

    def assertDisconnected(self, client: LineCollector, problem: str) -> None:
        """
        C{client} was told why (last: it may have seen others leave first)
        and cut off.
        """
        self.assertEqual(
            client.take()[-1:],
            [f"!!! your client certificate is no longer accepted: {problem}"],
        )
        self.assertIsNotNone(client.lost)

    def test_revoked_operator_disconnected(self) -> None:
        """
        The operator alice, revoked while connected, keeps her powers until
        the reload; then she is disconnected (bob is told, the log says
        why), and bob stays.  Her certificate cannot get her back in.
        """
        ca.revoke(self.ca_directory, "alice")
        self.send(self.alice, "/motd still mine")
        self.assertEqual(self.alice.take(), ["*** motd: still mine"])
        self.bob.take()
        (worked, message), warnings = self.reload()
        self.assertTrue(worked)
        self.assertTrue(
            message.endswith(
                "; disconnected 1 client whose certificate is no longer accepted"
            ),
            message,
        )
        self.assertDisconnected(self.alice, "certificate revoked")
        self.assertEqual(
            self.bob.take(), ["*** alice left (client certificate no longer accepted)"]
        )
        fingerprint = self.issued["alice"].fingerprint
        [warning] = warnings
        self.assertTrue(
            warning.endswith(
                f" (alice) disconnected: client certificate {fingerprint} is no"
                " longer accepted after the reload (certificate revoked)"
            ),
            warning,
        )
        self.assertEqual(self.server.chat.names(), ["bob"])
        self.assertIsNone(self.bob.lost)
        again = self.connect(self.server, self.certificate(self.issued["alice"]))
        self.assertEqual(again.received, [])
        assert again.lost is not None
        self.assertIn("certificate revoked", str(again.lost.value))
        self.assertEqual(self.server.chat.names(), ["bob"])

    def test_operator_reloading_revokes_herself(self) -> None:
        """
        An operator whose own certificate the C{/reload} she asked for
        revokes is disconnected like anyone else (and is not answered).
        """
        self.server.chat.reload = lambda: self.reloader.reload("/reload")
        ca.revoke(self.ca_directory, "alice")
        self.send(self.alice, "/reload")
        self.assertDisconnected(self.alice, "certificate revoked")
        self.assertEqual(
            self.bob.take(), ["*** alice left (client certificate no longer accepted)"]
        )

    def test_nothing_revoked(self) -> None:
        """A reload that revokes nobody's certificate disconnects nobody."""
        (worked, message), warnings = self.reload()
        self.assertTrue(worked)
        self.assertNotIn("disconnected", message)
        self.assertEqual(warnings, [])
        self.send(self.alice, "/whoami")
        self.assertIn("verified by client certificate", self.alice.take()[0])
        self.assertEqual(self.server.chat.names(), ["alice", "bob"])

    def test_new_client_ca(self) -> None:
        """
        A client CA replaced by another (the CA made again) disconnects
        every holder of the old CA's certificates.
        """
        ca.init_ca(self.ca_directory, force=True)
        (worked, message), warnings = self.reload()
        self.assertTrue(worked)
        self.assertIn("disconnected 2 clients", message)
        for client in (self.alice, self.bob):
            self.assertDisconnected(client, "unable to get local issuer certificate")
        self.assertEqual(len(warnings), 2)
        self.assertEqual(len(self.server.chat), 0)

    def test_handshake_under_way(self) -> None:
        """
        A handshake that began before the reload (so with the old CRL) and
        ends after it is checked against the new CRL when it is done.
        """
        ca.revoke(self.ca_directory, "alice")
        assert self.alice.transport is not None
        self.alice.transport.loseConnection()
        self.flush()
        self.bob.take()
        late = self.connect(
            self.server, self.certificate(self.issued["alice"]), flush=False
        )
        self.reload()
        self.assertTrue(late.handshake_done)
        self.assertEqual(
            late.take(),
            ["!!! your client certificate is no longer accepted: certificate revoked"],
        )
        self.assertIsNotNone(late.lost)
        self.assertEqual(self.server.chat.names(), ["bob"])
        self.assertEqual(self.bob.take(), [])
