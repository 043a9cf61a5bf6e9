"""
Tests for L{securemsg.cluster}: several chats joined into one, through the
in-memory bus of L{securemsg.cluster.local} (the same rules as Redis: claims
that expire, messages in each node's order).
"""

from __future__ import annotations

import json
from typing import Any, cast

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from securemsg.cluster.history import StreamHistory
from securemsg.cluster.interface import (
    ClusterMessage,
    IClusterHandler,
    IClusterLink,
    Presence,
)
from securemsg.cluster.local import MemoryBus, MemoryLink
from securemsg.cluster.node import BACK_IN_REACH, OUT_OF_REACH, ClusterNode
from securemsg.core.history import MemoryHistory
from securemsg.core.hub import RELAYED, ChatHub
from securemsg.core.records import BanRecord, ServerRecords
from securemsg.protocol import wire

from ._fakes import Recorder
from ._logs import log_lines

TTL = 15.0


class Cluster:
    """Chats of one process joined by a L{MemoryBus}, on one clock."""

    def __init__(
        self,
        count: int,
        *,
        shared_history: bool = False,
        guest_blocks: bool = True,
        **chat_options: object,
    ) -> None:
        self.clock = Clock()
        self.bus = MemoryBus(self.clock)
        self.bus.guests_reservable = guest_blocks
        self.chats: list[ChatHub] = []
        self.links: list[MemoryLink] = []
        self.nodes: list[ClusterNode] = []
        self.users: list[Recorder] = []
        for index in range(count):
            link = MemoryLink(self.bus, f"node{index}", TTL)
            if shared_history:
                chat_options["history"] = StreamHistory(
                    self.clock, link, MemoryHistory(self.clock), per_room=3
                )
            chat = ChatHub(self.clock, **chat_options)  # type: ignore[arg-type]
            node = ClusterNode(chat, link, self.clock)
            node.start()
            self.chats.append(chat)
            self.links.append(link)
            self.nodes.append(node)

    def user(
        self,
        index: int,
        name: str,
        identity: str | None = None,
        participant: Recorder | None = None,
    ) -> Recorder:
        """
        Someone (C{participant}, or a new L{Recorder}) connected to node
        C{index}, named C{name}.
        """
        participant = participant if participant is not None else Recorder()
        chat = self.chats[index]
        if identity is not None:
            chat.join(participant, identity=identity)
        else:
            chat.join(participant)
            chat.handle(participant, wire.Nick(name))
        assert participant.name == name, participant.take()
        self.users.append(participant)
        self.quiet()
        return participant

    def alice_and_bob_in(self, room: str) -> tuple[Recorder, Recorder]:
        """C{alice} of node 0 and C{bob} of node 1, who both joined C{room}."""
        alice = self.user(0, "alice")
        bob = self.user(1, "bob")
        self.chats[0].handle(alice, wire.Join(room))
        self.chats[1].handle(bob, wire.Join(room))
        return alice, bob

    def quiet(self) -> None:
        """Forget what every user was told so far."""
        for user in self.users:
            user.take()

    def kill(self, index: int) -> None:
        """Node C{index} stops without a word (SIGKILL)."""
        beat = self.nodes[index]._beat
        assert beat is not None
        beat.stop()
        self.links[index].up = False
        self.bus.links.remove(self.links[index])

    def advance(self, seconds: float, step: float = 1.0) -> None:
        """Let time pass, a step at a time (beats run on the way)."""
        while seconds > 0:
            self.clock.advance(min(step, seconds))
            seconds -= step


class ClusterTests(SynchronousTestCase):
    """
    Users of different nodes see one chat.
    """

    def setUp(self) -> None:
        self.cluster = Cluster(2)
        self.a, self.b = self.cluster.chats

    def test_interfaces(self) -> None:
        """The in-memory link and the node provide their interfaces."""
        self.assertTrue(verifyObject(IClusterLink, self.cluster.links[0]))
        self.assertTrue(verifyObject(IClusterHandler, self.cluster.nodes[0]))

    def test_lines_cross_nodes(self) -> None:
        """
        A line, an action and a topic said on one node reach the members
        of the room on the other, in order; arrivals are announced there.
        """
        alice, bob = self.cluster.alice_and_bob_in("#x")
        self.assertEqual(alice.take(), ["*** alice joined #x", "*** bob joined #x"])
        bob.take()
        self.a.handle(alice, wire.Say("hi"))
        self.a.handle(alice, wire.Me("waves"))
        self.a.handle(alice, wire.Topic("plans"))
        self.assertEqual(
            bob.take(),
            [
                "#x [alice] hi",
                "#x * alice waves",
                "*** topic of #x: plans (set by alice)",
            ],
        )
        self.assertEqual(self.b.room("#x").topic, "plans")  # type: ignore[union-attr]

    def test_private_across_nodes(self) -> None:
        """
        C{/msg} reaches a user of another node; the sender gets it back; an
        unknown name is an error as in one process.
        """
        alice = self.cluster.user(0, "alice")
        bob = self.cluster.user(1, "bob")
        self.a.handle(alice, wire.Private("BOB", "psst"))
        self.assertEqual(bob.take(), ["[alice -> bob] psst"])
        self.assertEqual(alice.take(), ["[alice -> bob] psst"])
        self.a.handle(alice, wire.Private("carol", "hello?"))
        self.assertEqual(alice.take(), ["!!! nobody here is called carol"])

    def test_who_and_rooms_list_the_cluster(self) -> None:
        """C{/who} and C{/rooms} count the users of every node."""
        alice = self.cluster.user(0, "alice")
        self.cluster.user(1, "bob")
        self.a.handle(alice, wire.Who())
        self.assertEqual(alice.take(), ["*** 2 here: alice, bob"])
        self.a.handle(alice, wire.Rooms())
        self.assertEqual(alice.take(), ["*** rooms: #lobby (2)"])

    def test_names_unique_ignoring_case(self) -> None:
        """A name taken on one node is taken on the others, whatever its case."""
        self.cluster.user(0, "bob")
        carol = self.cluster.user(1, "carol")
        self.b.handle(carol, wire.Nick("BOB"))
        self.assertEqual(carol.take(), ["!!! the name bob is taken"])

    def test_simultaneous_claim(self) -> None:
        """
        Two users asking for one name at once on two nodes (neither node
        heard of the other's): exactly one gets it, the other the usual
        error.
        """
        one = self.cluster.user(0, "one")
        two = self.cluster.user(1, "two")
        self.cluster.bus.paused = True
        self.a.handle(one, wire.Nick("Dave"))
        self.b.handle(two, wire.Nick("dave"))
        self.cluster.bus.paused = False
        self.cluster.bus.deliver()
        self.assertEqual(one.name, "Dave")
        self.assertEqual(two.name, "two")
        self.assertIn("!!! the name dave is taken", two.take())
        self.assertEqual(self.b.find("dave").origin, "node0")  # type: ignore[union-attr]

    def test_simultaneous_guests(self) -> None:
        """
        Two guests arriving at once on two nodes (neither heard of the
        other) get different names: each node numbers its guests from its
        own block of numbers reserved in the link, and nobody is renamed.
        """
        self.cluster.bus.paused = True
        first, second = Recorder(), Recorder()
        self.a.join(first)
        self.b.join(second)
        self.cluster.bus.paused = False
        self.cluster.bus.deliver()
        self.assertEqual((first.name, second.name), ("guest-1", "guest-101"))
        for guest in (first, second):
            self.assertEqual([e for e in guest.take() if e.startswith("!!!")], [])
        self.assertEqual(sorted(self.a.names()), ["guest-1", "guest-101"])
        self.assertEqual(sorted(self.b.names()), ["guest-1", "guest-101"])

    def test_guests_alternating(self) -> None:
        """
        Many guests arriving on both nodes in turn all get names of their
        own, none renamed; a node reserves a block of numbers at a time
        (the next one when half of the current one is used), not one per
        guest.
        """
        guests = []
        for _ in range(150):
            for chat in (self.a, self.b):
                guest = Recorder()
                chat.join(guest)
                guests.append(guest)
        names = [guest.name for guest in guests]
        self.assertEqual(len(set(names)), len(names))
        for guest in guests:
            self.assertEqual([e for e in guest.take() if e.startswith("!!!")], [])
        # 150 guests each: one block at start, the next after 50 guests
        # (half left), a third after 150: three commands, not 150.
        self.assertEqual(self.cluster.bus.guests, 2 * 3 * 100)
        self.assertEqual(sorted(self.a.names()), sorted(names))

    def test_guest_blocks_reserved_ahead(self) -> None:
        """
        A node reserves its first block of guest numbers when its link
        comes up, and the next one when half of the current one is used.
        """
        self.assertEqual(self.cluster.bus.guests, 200)
        for _ in range(49):
            self.a.join(Recorder())
        self.assertEqual(self.cluster.bus.guests, 200)
        self.a.join(Recorder())
        self.assertEqual(self.cluster.bus.guests, 300)
        self.assertEqual(self.cluster.nodes[0].guests.left, 150)

    def test_guest_name_taken_by_hand(self) -> None:
        """
        A guest number of one node's block taken as a name by hand on
        another node is skipped there; taken meanwhile (before the node
        heard of it), the claim keeps the name unique.
        """
        carol = self.cluster.user(1, "guest-2")
        guests = [Recorder() for _ in range(3)]
        for guest in guests:
            self.a.join(guest)
        self.assertEqual([g.name for g in guests], ["guest-1", "guest-3", "guest-4"])
        self.cluster.bus.paused = True
        self.b.handle(carol, wire.Nick("guest-5"))
        late = Recorder()
        self.a.join(late)
        self.cluster.bus.paused = False
        self.cluster.bus.deliver()
        self.assertEqual(carol.name, "guest-5")
        self.assertEqual(late.name, "guest-6")
        self.assertIn("!!! the name guest-5 is taken on another server", late.take())

    def test_guests_without_blocks(self) -> None:
        """
        While no guest numbers can be reserved, each node numbers its
        guests itself: two guests arriving at once on two nodes get the
        same first guest name, and the one who lost the claim is renamed.
        """
        self.cluster = Cluster(2, guest_blocks=False)
        self.a, self.b = self.cluster.chats
        self.cluster.bus.paused = True
        first, second = Recorder(), Recorder()
        self.a.join(first)
        self.b.join(second)
        self.cluster.bus.paused = False
        self.cluster.bus.deliver()
        self.assertEqual(first.name, "guest-1")
        self.assertEqual(second.name, "guest-2")
        self.assertIn("!!! the name guest-1 is taken on another server", second.take())
        self.assertEqual(sorted(self.a.names()), ["guest-1", "guest-2"])
        self.assertEqual(sorted(self.b.names()), ["guest-1", "guest-2"])

    def test_guest_blocks_after_redis_is_back(self) -> None:
        """
        A node that could not reserve guest numbers numbers its guests
        itself meanwhile, and reserves a block as soon as its link comes
        up again.
        """
        self.cluster = Cluster(1, guest_blocks=False)
        [chat] = self.cluster.chats
        [link] = self.cluster.links
        first = Recorder()
        chat.join(first)
        self.assertEqual(first.name, "guest-1")
        link.cut()
        self.cluster.bus.guests_reservable = True
        self.cluster.bus.guests = 500
        link.mend()
        second = Recorder()
        chat.join(second)
        self.assertEqual(second.name, "guest-501")

    def test_leaving_frees_the_name(self) -> None:
        """A user who quits is seen leaving everywhere; the name is free."""
        alice = self.cluster.user(0, "alice")
        bob = self.cluster.user(1, "bob")
        self.b.leave(bob, message="bye")
        self.assertEqual(alice.take(), ['*** bob left, saying "bye"'])
        carol = self.cluster.user(0, "carol")
        self.a.handle(carol, wire.Nick("bob"))
        self.assertEqual(carol.name, "bob")

    def test_rename_seen_everywhere(self) -> None:
        """A new name is announced on every node, and the old one is free."""
        alice = self.cluster.user(0, "alice")
        bob = self.cluster.user(1, "bob")
        self.b.handle(bob, wire.Nick("robert"))
        self.assertEqual(alice.take(), ["*** bob is now known as robert"])
        self.assertEqual(bob.take(), ["*** you are now robert"])
        self.a.handle(alice, wire.Private("robert", "hi"))
        self.assertEqual(bob.take(), ["[alice -> robert] hi"])
        self.a.handle(alice, wire.Nick("bob"))
        self.assertEqual(alice.name, "bob")

    def test_node_lost(self) -> None:
        """
        A node that stops without a word (SIGKILL): within the claim's
        lifetime its users are seen leaving, and their names are free.
        """
        alice = self.cluster.user(0, "alice")
        self.cluster.user(1, "bob")
        self.cluster.kill(1)
        self.cluster.advance(TTL + TTL / 3 + 1)
        self.assertEqual(alice.take(), ["*** bob left (their server is out of reach)"])
        self.assertEqual(self.a.names(), ["alice"])
        self.a.handle(alice, wire.Nick("bob"))
        self.assertEqual(alice.name, "bob")

    def test_node_alive_keeps_names(self) -> None:
        """A node that beats keeps its users and their claims."""
        alice = self.cluster.user(0, "alice")
        self.cluster.user(1, "bob")
        self.cluster.advance(TTL * 4)
        self.assertEqual(alice.take(), [])
        self.assertEqual(self.cluster.bus.holder("bob"), "node1")

    def test_node_stopped(self) -> None:
        """A node stopped cleanly says so: its users leave at once."""
        alice = self.cluster.user(0, "alice")
        self.cluster.user(1, "bob")
        self.cluster.nodes[1].stop()
        self.assertEqual(alice.take(), ["*** bob left (their server stopped)"])

    def test_new_node_learns_who_is_there(self) -> None:
        """A node that joins later hears who is on the others, and where."""
        alice = self.cluster.user(0, "alice")
        self.a.handle(alice, wire.Join("#x"))
        self.a.handle(alice, wire.Topic("plans"))
        chat = ChatHub(self.cluster.clock)
        ClusterNode(
            chat, MemoryLink(self.cluster.bus, "late", TTL), self.cluster.clock
        ).start()
        self.assertEqual(sorted(chat.names()), ["alice"])
        self.assertEqual(chat.room("#x").topic, "plans")  # type: ignore[union-attr]
        self.assertEqual(chat.rooms_of(chat.find("alice")), ["#lobby", "#x"])  # type: ignore[arg-type]

    def test_link_lost_and_back(self) -> None:
        """
        Redis lost: the node's users get one notice, and see only each
        other; when it is back, one notice, and the others are seen again.
        """
        alice = self.cluster.user(0, "alice")
        bob = self.cluster.user(1, "bob")
        self.cluster.links[0].cut()
        self.cluster.links[0].cut()
        self.assertEqual(alice.take(), [f"*** {OUT_OF_REACH}"])
        self.assertEqual(self.a.names(), ["alice"])
        self.cluster.links[0].mend()
        self.assertEqual(alice.take(), [f"*** {BACK_IN_REACH}"])
        self.assertEqual(sorted(self.a.names()), ["alice", "bob"])
        self.b.handle(bob, wire.Say("back?"))
        self.assertEqual(alice.take(), ["[bob] back?"])

    def test_name_taken_while_cut_off(self) -> None:
        """
        A name claimed elsewhere while its node was cut off (and its claim
        expired): on reconnecting, the later claimant is renamed.
        """
        self.cluster.user(0, "alice")
        bob = self.cluster.user(1, "bob")
        self.cluster.links[1].cut()
        self.cluster.advance(TTL + TTL / 3 + 1)
        other = self.cluster.user(0, "bob")
        self.cluster.links[1].mend()
        self.assertEqual(other.name, "bob")
        self.assertTrue(bob.name.startswith("guest-"), bob.name)
        self.assertIn(
            "!!! the name bob was taken on another server; you have a new one",
            bob.take(),
        )

    def test_messages_not_understood(self) -> None:
        """
        A message with missing or wrong fields (another version, a bug) is
        logged and changes nothing; one of an unknown kind is ignored.
        """
        alice = self.cluster.user(0, "alice")
        logged = log_lines(self)
        node = self.cluster.nodes[0]
        node.received({"n": "other", "t": "join", "name": "x"})
        node.received({"n": "other", "t": "say", "room": 5, "k": "m"})
        node.received({"n": "other", "t": "something new"})
        node.received({"n": "other", "t": 7})
        # What the node does on its own is not a kind of message.
        node.received({"n": "other", "t": "late_hello", "users": [], "topics": {}})
        node.received({"t": "join"})
        self.assertEqual(self.a.names(), ["alice"])
        self.assertEqual(alice.take(), [])
        self.assertEqual(len([line for line in logged if "not understood" in line]), 2)

    def test_claim_unanswered(self) -> None:
        """
        Redis did not answer a claim: the user is told the name cannot be
        checked now (not that it is taken), and the claim Redis may have
        made is let go.
        """
        alice = self.cluster.user(0, "alice")
        link = self.cluster.links[0]
        link.claim = lambda key, force: fail(TimeoutError("slow"))  # type: ignore[method-assign]
        self.cluster.bus.claims["zed"] = ("node0", 1e9)
        self.a.handle(alice, wire.Nick("zed"))
        self.assertEqual(
            alice.take(), ["!!! the name zed cannot be checked right now; try again"]
        )
        self.assertEqual(alice.name, "alice")
        self.assertIsNone(self.cluster.bus.holder("zed"))

    def test_no_rename_while_cut_off(self) -> None:
        """Nobody can tell whether a name is free while cut off."""
        alice = self.cluster.user(0, "alice")
        self.cluster.links[0].cut()
        alice.take()
        self.a.handle(alice, wire.Nick("zed"))
        self.assertEqual(
            alice.take(),
            ["!!! names cannot change while the other servers are out of reach"],
        )


class Deliveries(Recorder):
    """A L{Recorder} that also keeps the lines of each delivery apart."""

    def __init__(self) -> None:
        super().__init__()
        self.deliveries: list[list[str]] = []

    def deliver(self, event: wire.Event) -> None:
        self.deliveries.append(event.format().split("\n"))
        super().deliver(event)

    def deliver_all(self, events: tuple[wire.Event, ...]) -> None:
        self.deliveries.append(
            [line for event in events for line in event.format().split("\n")]
        )
        for event in events:
            super().deliver(event)

    def take_deliveries(self) -> list[list[str]]:
        """The deliveries since the last call."""
        self.take()
        deliveries, self.deliveries = self.deliveries, []
        return deliveries


class RelayTests(SynchronousTestCase):
    """
    The lines of one read of the bus reach the users of a node in as few
    deliveries as the chat allows, in the order they were said.
    """

    def setUp(self) -> None:
        self.cluster = Cluster(2)
        self.a, self.b = self.cluster.chats
        self.alice = self.cluster.user(0, "alice")
        self.carol = self.cluster.user(0, "carol")
        self.bob = self.cluster.user(1, "bob", participant=Deliveries())
        self.dave = self.cluster.user(1, "dave", participant=Deliveries())
        for person in (self.bob, self.dave):
            cast(Deliveries, person).take_deliveries()

    def read(self) -> None:
        """Let node 1 read, at once, what the bus held."""
        self.cluster.bus.paused = False
        self.cluster.bus.deliver()

    def test_lines_of_one_read_together(self) -> None:
        """
        Lines of node 0's users that node 1 reads at once reach each of
        its users in one delivery; read one by one, one delivery each.
        """
        self.cluster.bus.paused = True
        for text in ("one", "two", "three"):
            self.a.handle(self.alice, wire.Say(text))
        self.a.handle(self.carol, wire.Me("four"))
        self.read()
        together = [["[alice] one", "[alice] two", "[alice] three", "* carol four"]]
        bob = cast(Deliveries, self.bob)
        dave = cast(Deliveries, self.dave)
        self.assertEqual(bob.take_deliveries(), together)
        self.assertEqual(dave.take_deliveries(), together)
        self.a.handle(self.alice, wire.Say("five"))
        self.a.handle(self.alice, wire.Say("six"))
        self.assertEqual(bob.take_deliveries(), [["[alice] five"], ["[alice] six"]])

    def test_order_kept_with_other_kinds(self) -> None:
        """
        Within a read, a private line, a topic, an arrival, a line to
        another room and a line of node 1's own hand out what is held
        first: everyone sees everything in the order it was said.
        """
        for chat, person in ((self.b, self.bob), (self.a, self.alice)):
            chat.handle(person, wire.Join("#dev"))
            chat.handle(person, wire.Join("#lobby"))
        self.cluster.quiet()
        bob = cast(Deliveries, self.bob)
        bob.take_deliveries()
        self.cluster.bus.paused = True
        self.a.handle(self.alice, wire.Say("one"))
        self.a.handle(self.alice, wire.Private("bob", "psst"))
        self.a.handle(self.alice, wire.Say("two"))
        self.a.handle(self.alice, wire.Say("three", "#dev"))
        self.a.handle(self.alice, wire.Say("four"))
        self.a.handle(self.alice, wire.Topic("plans"))
        self.a.handle(self.carol, wire.Say("five"))
        self.cluster.user(0, "erin")
        self.a.handle(self.carol, wire.Say("six"))
        self.a.handle(self.carol, wire.Say("seven"))
        self.read()
        self.assertEqual(
            bob.take_deliveries(),
            [
                ["[alice] one"],
                ["[alice -> bob] psst"],
                ["[alice] two"],
                ["#dev [alice] three"],
                ["[alice] four"],
                ["*** topic of #lobby: plans (set by alice)"],
                ["[carol] five"],
                ["*** guest-3 joined"],
                ["*** guest-3 is now known as erin"],
                ["[carol] six", "[carol] seven"],
            ],
        )
        # A line said on node 1 while another read's lines are held.
        self.cluster.bus.paused = True
        self.a.handle(self.alice, wire.Say("eight"))
        self.a.handle(self.alice, wire.Say("nine"))
        with self.b.batch(RELAYED):
            self.b.relay(
                self.b.room("#lobby"),  # type: ignore[arg-type]
                wire.Message("alice", "held", "#lobby", 0.0),
            )
            self.b.handle(self.dave, wire.Say("ten"))
        self.read()
        self.assertEqual(
            bob.take_deliveries(),
            [["[alice] held"], ["[dave] ten"], ["[alice] eight", "[alice] nine"]],
        )


class OperatorTests(SynchronousTestCase):
    """
    Operators act on users of any node; certificate holders' names are
    theirs across the cluster.
    """

    def setUp(self) -> None:
        self.cluster = Cluster(2, operators=["op"], certificates=True)
        self.a, self.b = self.cluster.chats

    def test_kick_across_nodes(self) -> None:
        """C{/kick} closes the connection of a user of another node."""
        op = self.cluster.user(0, "op", identity="op")
        bob = self.cluster.user(1, "bob", identity="bob")
        witness = self.cluster.user(1, "carol", identity="carol")
        self.a.handle(op, wire.Kick("bob", "spam"))
        self.assertEqual(bob.disconnected, ("kicked by op: spam", "kicked by op: spam"))
        self.assertEqual(witness.take(), ["*** bob left (kicked by op: spam)"])
        self.assertEqual(sorted(self.a.names()), ["carol", "op"])

    def test_holder_takes_name_from_guest_elsewhere(self) -> None:
        """
        A certificate holder arriving on one node takes their name from a
        guest on another, who is renamed.
        """
        guest = self.cluster.user(1, "dana")
        holder = Recorder()
        self.a.join(holder, identity="dana")
        self.assertEqual(holder.name, "dana")
        self.assertTrue(guest.name.startswith("guest-"), guest.name)
        self.assertIn("!!! the name dana belongs to a certificate holder", guest.take())
        self.assertIs(self.a.find("dana"), holder)

    def test_ban_across_nodes(self) -> None:
        """
        C{/ban} of a user of another node: their node bans them (by their
        certificate, which it knows) and closes their connection; every
        node keeps the ban; C{/unban} lifts it everywhere.
        """
        op = self.cluster.user(0, "op", identity="op")
        bob = Recorder()
        self.b.join(bob, identity="bob", fingerprint="ab:cd")
        guest = Recorder()
        self.b.join(guest, address="192.0.2.7")
        self.a.handle(op, wire.Ban("bob"))
        self.a.handle(op, wire.Ban(guest.name))
        self.assertEqual(bob.disconnected, ("you are banned by op", "banned by op"))
        self.assertEqual(guest.disconnected, ("you are banned by op", "banned by op"))
        for chat in self.cluster.chats:
            self.assertEqual(list(chat.state.fingerprints), ["ab:cd"])
            self.assertEqual(list(chat.state.addresses), ["192.0.2.7"])
            self.assertEqual(chat.state.fingerprints["ab:cd"].by, "op")
        self.a.handle(op, wire.Unban("bob"))
        for chat in self.cluster.chats:
            self.assertEqual(chat.state.fingerprints, {})

    def test_motd_shared(self) -> None:
        """The message of the day an operator sets reaches every node."""
        op = self.cluster.user(0, "op", identity="op")
        carol = self.cluster.user(1, "carol", identity="carol")
        self.a.handle(op, wire.Motd("be nice"))
        self.assertEqual(carol.take(), ["*** motd: be nice"])
        self.assertEqual(self.b.state.motd, "be nice")

    def test_private_history_on_both_nodes(self) -> None:
        """
        A private line between certificate holders of two nodes is kept by
        both nodes (with --store-private), so C{/history NAME} shows it on
        either side; a guest's is kept by neither.
        """
        cluster = Cluster(2, certificates=True)
        histories = []
        for chat in cluster.chats:
            chat.history = MemoryHistory(cluster.clock, store_private=True)
            histories.append(chat.history)
        a, b = cluster.chats
        ann = cluster.user(0, "ann", identity="ann")
        cluster.user(1, "ben", identity="ben")
        guest = cluster.user(1, "gus")
        a.handle(ann, wire.Private("ben", "for ben"))
        b.handle(guest, wire.Private("ann", "from a guest"))
        for history in histories:
            kept = self.successResultOf(history.fetch_private("ann", "ben", 10))
            self.assertEqual([event.text for event in kept], ["for ben"])
            kept = self.successResultOf(history.fetch_private("ann", "gus", 10))
            self.assertEqual(kept, [])

    def test_holder_name_reserved_everywhere(self) -> None:
        """
        A name a certificate gave on one node is reserved on the others
        too: a guest there cannot take it, even once its holder has left.
        """
        holder = self.cluster.user(0, "erin", identity="erin")
        self.a.leave(holder)
        guest = self.cluster.user(1, "guest")
        self.b.handle(guest, wire.Nick("Erin"))
        self.assertEqual(
            guest.take(), ["!!! the name Erin belongs to a certificate holder"]
        )

    def test_holder_connects_again_elsewhere(self) -> None:
        """The older connection of a holder on another node is closed."""
        older = self.cluster.user(1, "dana", identity="dana")
        self.cluster.user(0, "dana", identity="dana")
        self.assertEqual(older.disconnected[1], "connected again")  # type: ignore[index]
        self.assertEqual(self.cluster.bus.holder("dana"), "node0")


class HistoryTests(SynchronousTestCase):
    """
    Each node keeps its own history, with the lines it heard from others.
    """

    def test_replay_of_lines_said_on_another_node(self) -> None:
        """
        Someone joining a room on one node gets the lines said in it on
        another while this node knew the room.
        """
        cluster = Cluster(2)
        a, b = cluster.chats
        alice, _ = cluster.alice_and_bob_in("#x")
        a.handle(alice, wire.Say("said on node 0"))
        carol = cluster.user(1, "carol")
        b.handle(carol, wire.Join("#x"))
        self.assertIn("#x [alice] said on node 0", "\n".join(carol.take()))


class StreamHistoryTests(SynchronousTestCase):
    """
    With a shared history (streams in Redis), every node replays the same
    past of a room, even one it never heard.
    """

    def setUp(self) -> None:
        self.cluster = Cluster(2, shared_history=True)
        self.a, self.b = self.cluster.chats

    def test_same_replay_on_every_node(self) -> None:
        """
        Lines said on one node while the other heard nothing (cut off from
        Redis) are replayed to someone joining the room there; and
        C{/history} reads the stream.
        """
        alice = self.cluster.user(0, "alice")
        bob = self.cluster.user(1, "bob")
        self.a.handle(alice, wire.Join("#x"))
        self.cluster.links[1].cut()
        for index in range(4):
            self.a.handle(alice, wire.Say(f"line {index}"))
        self.cluster.links[1].mend()
        bob.take()
        self.b.handle(bob, wire.Join("#x"))
        self.assertEqual(
            bob.take(),
            [
                "*** bob joined #x",
                "*** history of #x: 3 message(s)",
                "~ 1970-01-01T00:00:00Z #x [alice] line 1",
                "~ 1970-01-01T00:00:00Z #x [alice] line 2",
                "~ 1970-01-01T00:00:00Z #x [alice] line 3",
                "*** end of history of #x",
            ],
        )
        self.b.handle(bob, wire.Say("from bob"))
        self.b.handle(bob, wire.HistoryRequest("#x", 2))
        self.assertEqual(
            bob.take(),
            [
                "*** history of #x: 2 message(s)",
                "~ 1970-01-01T00:00:00Z #x [alice] line 3",
                "~ 1970-01-01T00:00:00Z #x [bob] from bob",
                "*** end of history of #x",
            ],
        )
        self.assertEqual(len(self.cluster.bus.streams["#x"]), 5)

    def test_joining_waits_for_the_read(self) -> None:
        """
        A room known here only through another node's users: its stream
        is read when it appears, and someone joining it here meanwhile
        waits for the read, to get the same replay as everywhere.
        """
        alice = self.cluster.user(0, "alice")
        self.a.handle(alice, wire.Join("#x"))
        self.a.handle(alice, wire.Say("before"))
        self.a.handle(alice, wire.Part("#x"))
        reads: list[tuple[Deferred[list[str]], list[str]]] = []
        link = self.cluster.links[1]
        real_read = link.read_history

        def slow_read(room_key: str, count: int) -> Deferred[list[str]]:
            waiting: Deferred[list[str]] = Deferred()
            reads.append((waiting, self.successResultOf(real_read(room_key, count))))
            return waiting

        link.read_history = slow_read  # type: ignore[method-assign]
        self.a.handle(alice, wire.Join("#x"))
        bob = self.cluster.user(1, "bob")
        self.b.handle(bob, wire.Join("#x"))
        self.assertEqual(bob.take(), [])
        waiting, entries = reads.pop(0)
        waiting.callback(entries)
        self.assertIn("~ 1970-01-01T00:00:00Z #x [alice] before", bob.take())

    def test_lines_heard_are_not_kept_twice(self) -> None:
        """A line from another node is in the stream once (its node's)."""
        alice = self.cluster.user(0, "alice")
        self.cluster.user(1, "bob")
        self.a.handle(alice, wire.Say("once"))
        self.assertEqual(len(self.cluster.bus.streams["#lobby"]), 1)


def drop_hellos(link: MemoryLink) -> None:
    """
    C{link} loses every C{hello} it publishes (replies too), as a busy
    node or a bounded publisher may, and publishes the rest.
    """
    publish = link.publish

    def dropping(message: ClusterMessage) -> bool:
        if message.get("t") == "hello":
            link.dropped += 1
            return False
        return publish(message)

    link.publish = dropping  # type: ignore[method-assign]


class PresenceTests(SynchronousTestCase):
    """
    Each node keeps its users in the link (Redis) with the claims' expiry;
    a node whose link comes up reads the other live nodes' users there, so
    it sees them even if a reply to its hello is lost.
    """

    def setUp(self) -> None:
        self.cluster = Cluster(2)
        self.a, self.b = self.cluster.chats
        self.bus = self.cluster.bus

    def kept(self, node_id: str) -> dict[str, Any] | None:
        """The users the link keeps for C{node_id}, decoded; L{None}: none."""
        users = self.bus.users_of(node_id)
        if users is None:
            return None
        return {key: json.loads(data) for key, data in users.items()}

    def late_node(self, node_id: str = "late") -> tuple[ChatHub, MemoryLink]:
        """A node made now, not started yet."""
        chat = ChatHub(self.cluster.clock)
        link = MemoryLink(self.bus, node_id, TTL)
        self.cluster.nodes.append(ClusterNode(chat, link, self.cluster.clock))
        return chat, link

    def test_kept_by_the_link(self) -> None:
        """
        What a node's users do (arrive, join, rename, part, leave) is kept
        by the link, written once per reactor turn whatever it holds.
        """
        writes = self.bus.presence_writes
        self.assertEqual(self.kept("node0"), {})
        self.assertEqual(writes["node0"], 1)
        alice = self.cluster.user(0, "alice")
        self.cluster.clock.advance(0)
        self.assertEqual(
            self.kept("node0"),
            {"alice": {"name": "alice", "v": False, "rooms": ["#lobby"]}},
        )
        self.assertEqual(writes["node0"], 2)
        self.a.handle(alice, wire.Join("#x"))
        self.a.handle(alice, wire.Join("#y"))
        self.a.handle(alice, wire.Part("#lobby"))
        self.a.handle(alice, wire.Nick("Al"))
        self.cluster.clock.advance(0)
        self.assertEqual(
            self.kept("node0"),
            {"al": {"name": "Al", "v": False, "rooms": ["#x", "#y"]}},
        )
        self.assertEqual(writes["node0"], 3)
        self.a.leave(alice)
        self.cluster.clock.advance(0)
        self.assertEqual(self.kept("node0"), {})
        self.assertEqual(self.kept("node1"), {})

    def test_renewed_and_expiring(self) -> None:
        """
        A node's users stay in the link while it beats; a node killed
        (SIGKILL) no longer renews them: they expire with its claims, and
        a node started then does not take them.
        """
        self.cluster.user(1, "bob")
        self.cluster.advance(TTL * 3)
        self.assertEqual(list(self.kept("node1") or ()), ["bob"])
        self.cluster.kill(1)
        self.cluster.advance(TTL - TTL / 3)
        self.assertEqual(list(self.kept("node1") or ()), ["bob"])
        self.cluster.advance(TTL / 3 + 1)
        self.assertIsNone(self.kept("node1"))
        chat, _ = self.late_node()
        self.cluster.nodes[-1].start()
        self.assertEqual(chat.names(), [])

    def test_stopped_node_forgotten(self) -> None:
        """
        A node stopped cleanly takes its users out of the link at once;
        what happens after (its users leaving) does not bring them back.
        """
        bob = self.cluster.user(1, "bob")
        self.cluster.clock.advance(0)
        self.assertEqual(list(self.kept("node1") or ()), ["bob"])
        self.cluster.nodes[1].stop()
        self.assertIsNone(self.kept("node1"))
        self.b.leave(bob)
        self.cluster.advance(TTL / 3)
        self.assertIsNone(self.kept("node1"))
        self.assertEqual(list(self.kept("node0") or ()), [])

    def test_reply_lost(self) -> None:
        """
        A node that starts sees the users of the others, in their rooms,
        even though their replies to its hello are lost; what they do next
        reaches it on the bus.
        """
        drop_hellos(self.cluster.links[0])
        alice = self.cluster.user(0, "alice")
        self.a.handle(alice, wire.Join("#x"))
        self.cluster.user(1, "bob")
        self.cluster.clock.advance(0)
        chat, _ = self.late_node()
        self.cluster.nodes[-1].start()
        self.assertEqual(sorted(chat.names()), ["alice", "bob"])
        self.assertEqual(chat.rooms_of(chat.find("alice")), ["#lobby", "#x"])  # type: ignore[arg-type]
        self.a.handle(alice, wire.Part("#x"))
        self.assertEqual(chat.rooms_of(chat.find("alice")), ["#lobby"])  # type: ignore[arg-type]
        carol = Recorder()
        chat.join(carol)
        chat.handle(carol, wire.Nick("carol"))
        carol.take()
        self.a.handle(alice, wire.Say("hello"))
        self.assertEqual(carol.take(), ["[alice] hello"])
        # Still there after the beats (its node renews them and beats).
        self.cluster.advance(TTL * 2)
        self.assertEqual(sorted(chat.names()), ["alice", "bob", "carol"])

    def test_read_then_reply(self) -> None:
        """
        A user taken from the link, then heard of in a reply to the hello,
        is one user, in the same rooms, and nobody is told twice.
        """
        alice = self.cluster.user(0, "alice")
        self.a.handle(alice, wire.Join("#x"))
        self.cluster.clock.advance(0)
        alice.take()
        chat, _ = self.late_node()
        self.bus.paused = True
        self.cluster.nodes[-1].start()
        seen = chat.find("alice")
        self.assertIsNotNone(seen)
        self.bus.paused = False
        self.bus.deliver()
        self.assertIs(chat.find("alice"), seen)
        self.assertEqual(chat.names(), ["alice"])
        self.assertEqual(chat.rooms_of(seen), ["#lobby", "#x"])  # type: ignore[arg-type]
        self.assertEqual(alice.take(), [])

    def test_bus_older_than_the_read(self) -> None:
        """
        Messages the link's users show already, heard late on the bus
        (Redis answered the read before handing them out), are not applied
        again: a user of the new node in the room is not told twice.
        """
        alice = self.cluster.user(0, "alice")
        chat, _ = self.late_node()
        carol = Recorder()
        chat.join(carol)
        chat.handle(carol, wire.Join("#y"))
        self.bus.paused = True
        self.a.handle(alice, wire.Join("#y"))
        self.cluster.clock.advance(0)
        self.cluster.nodes[-1].start()
        self.assertEqual(chat.rooms_of(chat.find("alice")), ["#lobby", "#y"])  # type: ignore[arg-type]
        carol.take()
        self.bus.paused = False
        self.bus.deliver()
        self.assertEqual(carol.take(), [])
        self.assertEqual(chat.rooms_of(chat.find("alice")), ["#lobby", "#y"])  # type: ignore[arg-type]
        self.a.handle(alice, wire.Part("#y"))
        self.assertEqual(carol.take(), ["*** alice left #y"])

    def test_read_newer_than_the_bus(self) -> None:
        """
        What the link read is newer than what the bus told so far (a user
        left a room, and the bus has not said so yet): it is taken, room
        and all, and the late message changes nothing.
        """
        alice = self.cluster.user(0, "alice")
        self.a.handle(alice, wire.Join("#x"))
        chat, link = self.late_node()
        reads: list[Deferred[dict[str, Presence]]] = []
        read = link.read_presence

        def slow_read() -> Deferred[dict[str, Presence]]:
            reads.append(Deferred())
            return reads[-1]

        link.read_presence = slow_read  # type: ignore[method-assign]
        self.cluster.nodes[-1].start()
        self.assertEqual(chat.rooms_of(chat.find("alice")), ["#lobby", "#x"])  # type: ignore[arg-type]
        self.bus.paused = True
        self.a.handle(alice, wire.Part("#x"))
        self.cluster.clock.advance(0)
        reads[0].callback(self.successResultOf(read()))
        self.assertEqual(chat.rooms_of(chat.find("alice")), ["#lobby"])  # type: ignore[arg-type]
        self.bus.paused = False
        self.bus.deliver()
        self.assertEqual(chat.rooms_of(chat.find("alice")), ["#lobby"])  # type: ignore[arg-type]

    def test_late_hello_topics(self) -> None:
        """
        A hello heard after newer users were read from the link changes
        none of them, but its topics are taken (the link does not keep
        them) and the reply it asks for is sent.
        """
        drop_hellos(self.cluster.links[0])
        alice = self.cluster.user(0, "alice")
        self.a.handle(alice, wire.Join("#x"))
        self.cluster.clock.advance(0)
        chat, _ = self.late_node()
        node = self.cluster.nodes[-1]
        node.start()
        mark = self.bus.presence["node0"][0]
        replies: list[ClusterMessage] = []
        self.cluster.nodes[0].received = replies.append  # type: ignore[method-assign,assignment]
        node.received(
            {
                "n": "node0",
                "t": "hello",
                "s": mark,
                "reply": True,
                "users": [],
                "topics": {"#x": ["plans", "alice", 5.0]},
            }
        )
        self.assertEqual(chat.names(), ["alice"])
        self.assertEqual(chat.room("#x").topic, "plans")  # type: ignore[union-attr]
        self.assertEqual([m["t"] for m in replies], ["hello"])

    def test_read_older_than_the_bus(self) -> None:
        """
        What the link read is older than what the bus told since (a user
        left in between): it is not taken (no ghost), and the link is read
        again at the next beat.
        """
        drop_hellos(self.cluster.links[0])
        alice = self.cluster.user(0, "alice")
        self.cluster.user(0, "bob")
        self.cluster.clock.advance(0)
        chat, link = self.late_node()
        reads: list[Deferred[dict[str, Presence]]] = []
        read = link.read_presence

        def slow_read() -> Deferred[dict[str, Presence]]:
            if reads:
                return read()
            reads.append(Deferred())
            return reads[0]

        link.read_presence = slow_read  # type: ignore[method-assign]
        self.cluster.nodes[-1].start()
        old = self.successResultOf(read())
        self.a.leave(alice)
        self.cluster.clock.advance(0)
        reads[0].callback(old)
        self.assertEqual(chat.names(), [])
        self.cluster.advance(TTL / 3)
        self.assertEqual(chat.names(), ["bob"])

    def test_read_failed(self) -> None:
        """
        The others' users cannot be read when the link comes up: logged,
        and read again at the next beat.
        """
        logged = log_lines(self)
        drop_hellos(self.cluster.links[0])
        self.cluster.user(0, "alice")
        self.cluster.clock.advance(0)
        chat, link = self.late_node()
        read = link.read_presence
        link.read_presence = lambda: fail(TimeoutError("slow"))  # type: ignore[method-assign]
        self.cluster.nodes[-1].start()
        self.assertEqual(chat.names(), [])
        self.assertEqual(
            len([line for line in logged if "could not be read" in line]), 1
        )
        link.read_presence = read  # type: ignore[method-assign]
        self.cluster.advance(TTL / 3)
        self.assertEqual(chat.names(), ["alice"])

    def test_back_after_being_cut_off(self) -> None:
        """
        A node whose link comes back writes all its users again (Redis may
        have lost them, or they expired meanwhile) and reads the others'.
        """
        drop_hellos(self.cluster.links[1])
        self.cluster.user(0, "alice")
        self.cluster.user(1, "bob")
        link = self.cluster.links[0]
        link.cut()
        self.cluster.advance(TTL + 1)
        self.assertIsNone(self.kept("node0"))
        link.mend()
        self.assertEqual(list(self.kept("node0") or ()), ["alice"])
        self.assertEqual(sorted(self.a.names()), ["alice", "bob"])


class SharedSettingsTests(SynchronousTestCase):
    """
    Bans and the message of the day are kept by the link (Redis): a node
    that was stopped or cut off when they changed learns them when its
    link comes up, and gives the cluster those it alone has.
    """

    def setUp(self) -> None:
        self.cluster = Cluster(2, operators=["op"], certificates=True)
        self.a, self.b = self.cluster.chats
        self.op = self.cluster.user(0, "op", identity="op")

    def late_node(self, state: ServerRecords) -> ChatHub:
        """A node started now, with C{state} read from its state file."""
        chat = ChatHub(self.cluster.clock, state=state, certificates=True)
        ClusterNode(
            chat, MemoryLink(self.cluster.bus, "late", TTL), self.cluster.clock
        ).start()
        return chat

    def test_ban_and_motd_learned_at_link_up(self) -> None:
        """
        Bans and a motd set while a node was cut off reach it when its link
        is back: it keeps them, tells its users the motd, and disconnects
        those of its users the bans keep out, as it would have refused
        them (an address ban is for guests only).
        """
        bob = Recorder()
        self.a.join(bob, identity="bob", fingerprint="ab:cd")
        guest = Recorder()
        self.a.join(guest, address="192.0.2.7")
        carol = self.cluster.user(1, "carol", identity="carol")
        self.cluster.links[1].cut()
        carol.take()
        self.a.handle(self.op, wire.Ban("bob"))
        self.a.handle(self.op, wire.Ban(guest.name))
        self.a.handle(self.op, wire.Motd("be nice"))
        # Meanwhile, the same certificate and address reach node 1.
        bob_again = Recorder()
        self.b.join(bob_again, identity="bob", fingerprint="ab:cd")
        guest_again = Recorder()
        self.b.join(guest_again, address="192.0.2.7")
        holder = Recorder()
        self.b.join(holder, identity="dave", fingerprint="ef:01", address="192.0.2.7")
        self.assertEqual(self.b.state.fingerprints, {})
        self.cluster.links[1].mend()
        self.assertEqual(list(self.b.state.fingerprints), ["ab:cd"])
        self.assertEqual(list(self.b.state.addresses), ["192.0.2.7"])
        self.assertEqual(self.b.state.fingerprints["ab:cd"].by, "op")
        self.assertEqual(self.b.state.motd, "be nice")
        self.assertIn("*** motd: be nice", carol.take())
        for banned in (bob_again, guest_again):
            self.assertEqual(
                banned.disconnected, ("you are banned by op", "banned by op")
            )
        self.assertIsNone(holder.disconnected)
        self.assertIsNone(carol.disconnected)
        self.assertEqual(sorted(self.a.names()), ["carol", "dave", "op"])

    def test_unban_learned_at_link_up(self) -> None:
        """
        An unban made while a node was cut off lifts the ban there too when
        its link is back, instead of the node bringing it back.
        """
        bob = Recorder()
        self.a.join(bob, identity="bob", fingerprint="ab:cd")
        self.a.handle(self.op, wire.Ban("bob"))
        self.assertEqual(list(self.b.state.fingerprints), ["ab:cd"])
        self.cluster.links[1].cut()
        self.cluster.advance(1)
        self.a.handle(self.op, wire.Unban("bob"))
        self.cluster.links[1].mend()
        self.assertEqual(self.b.state.fingerprints, {})
        self.assertEqual(self.a.state.fingerprints, {})

    def test_unban_while_the_bans_are_read(self) -> None:
        """
        A ban lifted while a node's link comes up, after Redis answered the
        node's read of the bans and before the answer arrived, stays lifted
        there: whether another node lifted it (heard on the bus) or an
        operator on this one.
        """
        for lifter in (0, 1):
            cluster = Cluster(2, operators=["op", "op2"], certificates=True)
            operators = [
                cluster.user(0, "op", identity="op"),
                cluster.user(1, "op2", identity="op2"),
            ]
            a, b = cluster.chats
            a.join(Recorder(), identity="bob", fingerprint="ab:cd")
            a.handle(operators[0], wire.Ban("bob"))
            self.assertEqual(list(b.state.fingerprints), ["ab:cd"])
            link = cluster.links[1]
            link.cut()
            answers: list[tuple[Deferred[dict[str, str]], dict[str, str]]] = []

            def read_bans(
                link: MemoryLink = link,
                answers: list[
                    tuple[Deferred[dict[str, str]], dict[str, str]]
                ] = answers,
            ) -> Deferred[dict[str, str]]:
                # Redis answers now; the answer arrives later.
                waiting: Deferred[dict[str, str]] = Deferred()
                answers.append((waiting, dict(link.bus.bans)))
                return waiting

            self.patch(link, "read_bans", read_bans)
            link.mend()
            cluster.advance(1)
            cluster.chats[lifter].handle(operators[lifter], wire.Unban("ab:cd"))
            self.assertEqual(b.state.fingerprints, {})
            [(waiting, answer)] = answers
            self.assertNotIn("lifted", answer["ab:cd"])
            waiting.callback(answer)
            self.assertEqual(b.state.fingerprints, {}, lifter)
            self.assertEqual(a.state.fingerprints, {}, lifter)

    def test_started_later(self) -> None:
        """
        A node started after a ban, an unban and a motd were made gets
        them: its state file's old copy of the lifted ban is dropped.
        """
        first = Recorder()
        self.a.join(first, identity="bob", fingerprint="ab:cd")
        self.a.handle(self.op, wire.Ban("bob"))
        stale = ServerRecords()
        stale.fingerprints.update(self.a.state.fingerprints)
        stale.motd = "old news"
        self.cluster.advance(1)
        self.a.handle(self.op, wire.Unban("ab:cd"))
        self.a.handle(self.op, wire.Motd("new news"))
        guest = Recorder()
        self.a.join(guest, address="192.0.2.9")
        self.a.handle(self.op, wire.Ban(guest.name))
        late = self.late_node(stale)
        self.assertEqual(late.state.fingerprints, {})
        self.assertEqual(list(late.state.addresses), ["192.0.2.9"])
        self.assertEqual(late.state.motd, "new news")
        self.assertEqual(self.a.state.motd, "new news")
        self.assertEqual(self.a.state.fingerprints, {})

    def test_malformed_bans_refused(self) -> None:
        """
        A ban that is not a name, an operator and a time is kept by no
        node: neither one heard on the bus (C{"name": 42} is not turned into
        C{"42"}) nor one read from Redis at link-up; each is logged as not
        understood.
        """
        logged = log_lines(self)
        self.cluster.links[0].publish(
            {"t": "banned", "kind": "fingerprint", "value": "ab:cd",
             "name": 42, "by": "op", "time": 1.0}
        )  # fmt: skip
        self.cluster.quiet()
        self.assertEqual(self.b.state.fingerprints, {})
        link = self.cluster.links[1]
        link.bus.bans["ef:01"] = json.dumps(
            {"kind": "fingerprint", "name": "bob", "by": ["op"], "time": 1.0}
        )
        link.cut()
        link.mend()
        self.assertEqual(self.b.state.fingerprints, {})
        self.assertEqual(
            len([line for line in logged if "not understood" in line]), 2, logged
        )

    def test_bans_the_cluster_never_heard_of(self) -> None:
        """
        A node whose state file has bans (and a motd) the cluster has none
        of (made before it joined) gives them to the cluster: kept by the
        link, and by the nodes that are up.
        """
        own = ServerRecords()
        own.addresses["198.51.100.0/24"] = BanRecord("spammer", "root", 5.0)
        own.motd = "welcome"
        late = self.late_node(own)
        for chat in (self.a, self.b, late):
            self.assertEqual(list(chat.state.addresses), ["198.51.100.0/24"])
            self.assertEqual(chat.state.motd, "welcome")
        self.assertIn("198.51.100.0/24", self.cluster.bus.bans)
        self.assertEqual(self.cluster.bus.motd, "welcome")

    def test_changes_made_while_cut_off(self) -> None:
        """
        A ban, an unban and a motd made on a node while it was cut off are
        kept by the link and reach the other nodes when it is back (its
        unban is not undone by the cluster's older copy of the ban).
        """
        lifted = Recorder()
        self.a.join(lifted, address="192.0.2.1")
        self.a.handle(self.op, wire.Ban(lifted.name))
        guest = Recorder()
        self.a.join(guest, address="192.0.2.7")
        self.cluster.links[0].cut()
        self.cluster.advance(1)
        self.a.handle(self.op, wire.Ban(guest.name))
        self.a.handle(self.op, wire.Unban("192.0.2.1"))
        self.a.handle(self.op, wire.Motd("made alone"))
        self.assertEqual(list(self.b.state.addresses), ["192.0.2.1"])
        self.cluster.links[0].mend()
        for chat in self.cluster.chats:
            self.assertEqual(list(chat.state.addresses), ["192.0.2.7"])
            self.assertEqual(chat.state.motd, "made alone")
        self.assertEqual(self.cluster.bus.motd, "made alone")

    def test_redis_lost_its_data(self) -> None:
        """
        Redis came back empty (no persistence): the nodes give it their
        bans and motd again, and nobody is told the motd again.
        """
        guest = Recorder()
        self.a.join(guest, address="192.0.2.7")
        self.a.handle(self.op, wire.Ban(guest.name))
        self.a.handle(self.op, wire.Motd("be nice"))
        carol = self.cluster.user(1, "carol", identity="carol")
        self.cluster.bus.bans.clear()
        self.cluster.bus.motd = None
        # The first node back gives them; the other hears it.
        self.cluster.links[0].cut()
        self.cluster.links[0].mend()
        self.assertEqual(list(self.cluster.bus.bans), ["192.0.2.7"])
        self.assertEqual(self.cluster.bus.motd, "be nice")
        self.assertNotIn("*** motd: be nice", carol.take() + self.op.take())
        for chat in self.cluster.chats:
            self.assertEqual(list(chat.state.addresses), ["192.0.2.7"])

    def test_settings_not_readable(self) -> None:
        """
        The cluster's bans cannot be read when the link comes up: logged,
        and this node's own are kept as they are.
        """
        logged = log_lines(self)
        link = self.cluster.links[1]
        link.cut()
        self.b.state.motd = "mine"
        link.read_bans = lambda: fail(TimeoutError("slow"))  # type: ignore[method-assign]
        link.mend()
        self.assertEqual(self.b.state.motd, "mine")
        self.assertEqual(
            len([line for line in logged if "could not be read" in line]), 1
        )


class TopicRejoinTests(SynchronousTestCase):
    """
    Topics travel in the hello a node publishes when its link comes up;
    the newer topic wins.
    """

    def test_topic_changed_while_cut_off(self) -> None:
        """
        A topic set while a node was cut off is not undone by the older
        topic that node brings back; its users are told the new one.
        """
        cluster = Cluster(2)
        a = cluster.chats[0]
        alice, bob = cluster.alice_and_bob_in("#x")
        a.handle(alice, wire.Topic("old"))
        cluster.links[1].cut()
        cluster.advance(1)
        a.handle(alice, wire.Topic("new"))
        cluster.quiet()
        cluster.links[1].mend()
        for chat in cluster.chats:
            self.assertEqual(chat.room("#x").topic, "new")  # type: ignore[union-attr]
        self.assertIn("*** topic of #x: new (set by alice)", bob.take())
        self.assertNotIn("*** topic of #x: old (set by alice)", alice.take())
