"""
Tests for L{securemsg.core.hub}: the chat logic alone, with participants that
only record what they are given.
"""

from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar
from unittest.mock import patch

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from securemsg.core.history import MemoryHistory
from securemsg.core.hub import (
    ANNOUNCE_BURST,
    ANNOUNCE_RATE,
    MAX_WAITING_COMMANDS,
    RELAYED,
    ChatHub,
)
from securemsg.core.limits import Limits
from securemsg.core.participant import IChatParticipant
from securemsg.protocol import jsonwire, wire

from ._fakes import Recorder

R = TypeVar("R", bound=Recorder)


def too_many(rooms: int) -> str:
    """The error for a new room when there are C{rooms} already."""
    return (
        f"!!! there are too many rooms on this server ({rooms});"
        " join one that /rooms lists"
    )


def seat_three(chat: ChatHub, kind: type[R]) -> tuple[R, R, R]:
    """Let alice, bob and carol (made by C{kind}) in, with nothing to read."""
    people = (kind(), kind(), kind())
    for person, name in zip(people, ("alice", "bob", "carol"), strict=True):
        chat.join(person)
        chat.rename(person, name)
    for person in people:
        person.take()
    return people


class RoomTests(SynchronousTestCase):
    """
    L{ChatRoom} names, routes and announces.
    """

    def setUp(self) -> None:
        self.room = ChatHub(Clock())
        self.alice, self.bob, self.carol = Recorder(), Recorder(), Recorder()
        for person in (self.alice, self.bob, self.carol):
            self.room.join(person)
        self.room.rename(self.alice, "alice")
        self.room.rename(self.bob, "bob")
        self.room.rename(self.carol, "carol")
        for person in (self.alice, self.bob, self.carol):
            person.take()

    def test_recorder_is_a_participant(self) -> None:
        """The test double provides the interface the room needs."""
        self.assertTrue(verifyObject(IChatParticipant, self.alice))

    def test_guest_names_are_unique(self) -> None:
        """Each newcomer gets the next free guest name, told to the others."""
        newcomer = Recorder()
        self.assertEqual(self.room.join(newcomer), "guest-4")
        self.assertEqual(newcomer.name, "guest-4")
        self.assertEqual(self.alice.take(), ["*** guest-4 joined"])
        self.assertEqual(newcomer.take(), [])

    def test_guest_name_skips_taken(self) -> None:
        """A guest name someone chose is not handed out again."""
        self.room.rename(self.alice, "guest-4")
        self.assertEqual(self.room.join(Recorder()), "guest-5")

    def test_say_goes_to_everyone_else(self) -> None:
        """A chat line reaches every other member, prefixed with the sender."""
        self.room.say(self.alice, "hello")
        self.assertEqual(self.bob.take(), ["[alice] hello"])
        self.assertEqual(self.carol.take(), ["[alice] hello"])
        self.assertEqual(self.alice.take(), [])

    def test_say_is_sanitised(self) -> None:
        """Control characters never reach another member's terminal."""
        self.room.say(self.alice, "\x1b[2Jgotcha\r")
        self.assertEqual(self.bob.take(), ["[alice] ^[[2Jgotcha^M"])

    def test_action(self) -> None:
        """/me reaches the others as an action line."""
        self.room.act(self.alice, "waves")
        self.assertEqual(self.bob.take(), ["* alice waves"])
        self.assertEqual(self.alice.take(), [])

    def test_whisper(self) -> None:
        """A private line reaches only its recipient, and the sender's copy."""
        self.room.whisper(self.alice, "BOB", "psst")
        self.assertEqual(self.bob.take(), ["[alice -> bob] psst"])
        self.assertEqual(self.alice.take(), ["[alice -> bob] psst"])
        self.assertEqual(self.carol.take(), [])

    def test_whisper_to_self(self) -> None:
        """A private line to oneself arrives once."""
        self.room.whisper(self.alice, "alice", "note")
        self.assertEqual(self.alice.take(), ["[alice -> alice] note"])

    def test_whisper_to_nobody(self) -> None:
        """A private line to an unknown name is an error for the sender."""
        self.room.whisper(self.alice, "dave", "hi")
        self.assertEqual(self.alice.take(), ["!!! nobody here is called dave"])

    def test_rename(self) -> None:
        """A rename is confirmed to its owner and announced to the others."""
        self.room.rename(self.alice, "alicia")
        self.assertEqual(self.alice.take(), ["*** you are now alicia"])
        self.assertEqual(self.bob.take(), ["*** alice is now known as alicia"])
        self.assertEqual(self.room.names(), ["alicia", "bob", "carol"])
        self.assertIs(self.room.find("ALICIA"), self.alice)
        self.assertIsNone(self.room.find("alice"))

    def test_rename_case_only(self) -> None:
        """Changing only the case of one's own name is allowed."""
        self.room.rename(self.alice, "Alice")
        self.assertEqual(self.alice.take(), ["*** you are now Alice"])
        self.assertEqual(self.room.names()[0], "Alice")

    def test_rename_clash_ignores_case(self) -> None:
        """A name taken by someone else, in any case, is refused."""
        self.room.rename(self.alice, "BOB")
        self.assertEqual(self.alice.take(), ["!!! the name bob is taken"])
        self.assertEqual(self.bob.take(), [])
        self.assertEqual(self.alice.name, "alice")

    def test_rename_invalid(self) -> None:
        """An invalid name is refused with the rules."""
        self.room.rename(self.alice, "9lives")
        [line] = self.alice.take()
        self.assertTrue(line.startswith("!!! that name is not allowed"), line)
        self.assertEqual(self.alice.name, "alice")

    def test_leave(self) -> None:
        """Leaving is announced, with the reason, and frees the name."""
        self.room.leave(self.bob, "bye")
        self.assertEqual(self.alice.take(), ["*** bob left (bye)"])
        self.assertEqual(self.room.names(), ["alice", "carol"])
        self.room.rename(self.carol, "bob")
        self.assertEqual(
            self.carol.take(), ["*** bob left (bye)", "*** you are now bob"]
        )

    def test_leave_twice(self) -> None:
        """Leaving twice announces once."""
        self.room.leave(self.bob)
        self.room.leave(self.bob)
        self.assertEqual(self.alice.take(), ["*** bob left"])

    def test_handle_dispatches(self) -> None:
        """Commands from the wire reach the right place."""
        self.room.handle(self.alice, wire.Who())
        self.assertEqual(self.alice.take(), ["*** 3 here: alice, bob, carol"])
        self.room.handle(self.alice, wire.WhoAmI())
        self.assertEqual(self.alice.take(), ["*** you are alice"])
        self.room.handle(self.alice, wire.Invalid("unknown command /x"))
        self.assertEqual(self.alice.take(), ["!!! unknown command /x"])
        self.room.handle(self.alice, wire.Help())
        self.assertEqual(len(self.alice.take()), len(wire.help_lines()))
        self.room.handle(self.alice, wire.Say("hi"))
        self.room.handle(self.alice, wire.Me("nods"))
        self.room.handle(self.alice, wire.Private("carol", "x"))
        self.room.handle(self.alice, wire.Nick("al"))
        self.assertEqual(
            self.carol.take(),
            [
                "[alice] hi",
                "* alice nods",
                "[alice -> carol] x",
                "*** alice is now known as al",
            ],
        )


class RoomsTests(SynchronousTestCase):
    """
    Rooms: everyone starts in the default room; notices stay in their room.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1764248722)
        self.chat = ChatHub(self.clock, limits=Limits(replay=3))
        self.alice, self.bob, self.carol = seat_three(self.chat, Recorder)

    def test_everyone_starts_in_the_default_room(self) -> None:
        """Newcomers are in #lobby, and it is their current room."""
        self.assertEqual(self.chat.rooms_of(self.alice), ["#lobby"])
        self.assertEqual(self.chat.current_room(self.alice), "#lobby")

    def test_join_is_scoped(self) -> None:
        """
        Joining a room tells only its members; the room becomes current and
        plain lines go there.
        """
        self.chat.handle(self.alice, wire.Join("#dev"))
        self.assertEqual(self.alice.take(), ["*** alice joined #dev"])
        self.assertEqual(self.bob.take(), [])
        self.chat.handle(self.bob, wire.Join("#DEV"))
        self.assertEqual(self.alice.take(), ["*** bob joined #dev"])
        self.assertEqual(self.bob.take(), ["*** bob joined #dev"])
        self.chat.handle(self.alice, wire.Say("in dev"))
        self.assertEqual(self.bob.take(), ["#dev [alice] in dev"])
        self.assertEqual(self.carol.take(), [])

    def test_several_rooms(self) -> None:
        """
        A user in several rooms gets each room's lines, marked with the room
        unless it is the default one; /say picks a room explicitly.
        """
        self.chat.handle(self.bob, wire.Join("#dev"))
        self.chat.handle(self.alice, wire.Join("#dev"))
        self.bob.take()
        self.chat.handle(self.carol, wire.Say("lobby line"))
        self.chat.handle(self.alice, wire.Say("dev line"))
        self.chat.handle(self.alice, wire.Say("back in lobby", "#lobby"))
        self.assertEqual(
            self.bob.take(),
            ["[carol] lobby line", "#dev [alice] dev line", "[alice] back in lobby"],
        )
        self.assertEqual(self.carol.take(), ["[alice] back in lobby"])

    def test_say_to_a_room_you_are_not_in(self) -> None:
        """Lines go only to rooms the sender is in."""
        self.chat.handle(self.bob, wire.Join("#dev"))
        self.chat.handle(self.alice, wire.Say("hi", "#dev"))
        self.assertEqual(self.alice.take(), ["!!! you are not in #dev; /join it first"])

    def test_part(self) -> None:
        """
        Leaving a room tells its members; the last room joined becomes
        current again; an empty room (not the default) goes away.
        """
        self.chat.handle(self.alice, wire.Join("#dev"))
        self.chat.handle(self.bob, wire.Join("#dev"))
        self.alice.take()
        self.chat.handle(self.alice, wire.Part())
        self.assertEqual(self.alice.take(), ["*** alice left #dev"])
        self.assertEqual(
            self.bob.take(), ["*** bob joined #dev", "*** alice left #dev"]
        )
        self.assertEqual(self.chat.current_room(self.alice), "#lobby")
        self.chat.handle(self.bob, wire.Part("#dev"))
        self.assertIsNone(self.chat.room("#dev"))
        self.chat.handle(self.bob, wire.Part("#dev"))
        self.assertEqual(self.bob.take()[-1], "!!! you are not in #dev")

    def test_no_room_left(self) -> None:
        """A user who left every room is told to join one."""
        self.chat.handle(self.alice, wire.Part())
        self.alice.take()
        self.chat.handle(self.alice, wire.Say("anyone?"))
        self.assertEqual(
            self.alice.take(), ["!!! you are in no room; /join one, e.g. /join #lobby"]
        )
        self.assertEqual(self.bob.take(), ["*** alice left #lobby"])

    def test_invalid_room(self) -> None:
        """Room names are checked like names."""
        self.chat.handle(self.alice, wire.Join("dev"))
        [line] = self.alice.take()
        self.assertTrue(line.startswith("!!! dev is not a room name"), line)

    def test_rooms_who_topic(self) -> None:
        """/rooms counts members; /who lists a room; /topic shows and sets."""
        self.chat.handle(self.alice, wire.Join("#dev"))
        self.alice.take()
        self.chat.handle(self.alice, wire.Rooms())
        self.assertEqual(self.alice.take(), ["*** rooms: #lobby (3), #dev (1)"])
        self.chat.handle(self.alice, wire.Who("#dev"))
        self.assertEqual(self.alice.take(), ["*** 1 in #dev: alice"])
        self.chat.handle(self.bob, wire.Who())
        self.assertEqual(self.bob.take(), ["*** 3 here: alice, bob, carol"])
        self.chat.handle(self.alice, wire.Topic())
        self.assertEqual(self.alice.take(), ["*** #dev has no topic"])
        self.chat.handle(self.alice, wire.Topic("release \x1b friday"))
        self.assertEqual(
            self.alice.take(), ["*** topic of #dev: release ^[ friday (set by alice)"]
        )
        self.chat.handle(self.bob, wire.Join("#dev"))
        self.assertEqual(
            self.bob.take(),
            [
                "*** bob joined #dev",
                "*** topic of #dev: release ^[ friday (set by alice)",
            ],
        )

    def test_who_is_for_members(self) -> None:
        """
        /who of a room one is not in is refused as for any other room
        command, whether the room exists or not; joining it shows it.
        """
        self.chat.handle(self.alice, wire.Join("#dev"))
        self.bob.take()
        self.chat.handle(self.bob, wire.Who("#dev"))
        self.assertEqual(self.bob.take(), ["!!! you are not in #dev; /join it first"])
        self.chat.handle(self.bob, wire.Who("#nowhere"))
        self.assertEqual(
            self.bob.take(), ["!!! you are not in #nowhere; /join it first"]
        )
        self.chat.handle(self.bob, wire.Join("#dev"))
        self.bob.take()
        self.chat.handle(self.bob, wire.Who("#DEV"))
        self.assertEqual(self.bob.take(), ["*** 2 in #dev: alice, bob"])

    def test_rooms_shows_topics_to_members_only(self) -> None:
        """
        /rooms lists every room with its size to anyone, but a room's topic
        only to its members (JSON: C{null} for the others).
        """
        self.chat.handle(self.alice, wire.Join("#dev"))
        self.chat.handle(self.alice, wire.Topic("the secret plan"))
        seen: list[wire.Event] = []
        self.patch(self.bob, "deliver", seen.append)
        self.patch(self.alice, "deliver", seen.append)
        self.chat.handle(self.bob, wire.Rooms())
        self.chat.handle(self.alice, wire.Rooms())
        self.assertEqual(
            [jsonwire.event_to_json(event)["rooms"] for event in seen],
            [
                [
                    {"name": "#lobby", "members": 3, "topic": ""},
                    {"name": "#dev", "members": 1, "topic": None},
                ],
                [
                    {"name": "#lobby", "members": 3, "topic": ""},
                    {"name": "#dev", "members": 1, "topic": "the secret plan"},
                ],
            ],
        )

    def test_rename_and_leave_reach_neighbours_once(self) -> None:
        """
        Renames and departures go to everyone sharing a room, once each,
        and to nobody else.
        """
        self.chat.handle(self.alice, wire.Join("#dev"))
        self.chat.handle(self.bob, wire.Join("#dev"))
        self.chat.handle(self.carol, wire.Part())
        for person in (self.alice, self.bob, self.carol):
            person.take()
        self.chat.rename(self.alice, "alicia")
        self.assertEqual(self.bob.take(), ["*** alice is now known as alicia"])
        self.assertEqual(self.carol.take(), [])
        self.chat.leave(self.alice, "bye")
        self.assertEqual(self.bob.take(), ["*** alicia left (bye)"])
        self.assertEqual(self.carol.take(), [])

    def test_private_across_rooms(self) -> None:
        """/msg reaches someone who shares no room."""
        self.chat.handle(self.carol, wire.Part())
        self.chat.handle(self.alice, wire.Private("carol", "psst"))
        self.assertEqual(self.carol.take()[-1], "[alice -> carol] psst")

    def test_large_rooms_do_not_announce_arrivals(self) -> None:
        """
        Past the announce limit, arrivals and departures in a room are not
        told to everyone in it; chat lines still are.
        """
        self.chat.limits = replace(self.chat.limits, announce_max=2)
        newcomer = Recorder()
        self.chat.join(newcomer)
        self.assertEqual(self.alice.take(), [])
        self.chat.leave(newcomer)
        self.assertEqual(self.alice.take(), [])
        # Counted without whoever arrives or leaves, as for a /part.
        self.chat.leave(self.carol)
        self.assertEqual(self.alice.take(), ["*** carol left"])
        self.chat.join(newcomer)
        self.assertEqual(self.alice.take(), [f"*** {newcomer.name} joined"])
        self.chat.say(newcomer, "hi")
        self.assertEqual(self.alice.take(), [f"[{newcomer.name}] hi"])

    def test_history_replayed_on_join(self) -> None:
        """
        Joining a room replays its last messages (up to the replay count),
        marked with their time, before anything live.
        """
        self.chat.handle(self.alice, wire.Join("#dev"))
        for number in range(5):
            self.clock.advance(60)
            self.chat.handle(self.alice, wire.Say(f"line {number}"))
        self.chat.handle(self.bob, wire.Join("#dev"))
        self.assertEqual(
            self.bob.take(),
            [
                "*** bob joined #dev",
                "*** history of #dev: 3 message(s)",
                "~ 2025-11-27T13:08:22Z #dev [alice] line 2",
                "~ 2025-11-27T13:09:22Z #dev [alice] line 3",
                "~ 2025-11-27T13:10:22Z #dev [alice] line 4",
                "*** end of history of #dev",
            ],
        )

    def test_history_request(self) -> None:
        """/history gives the last N messages of a room the user is in."""
        for number in range(3):
            self.chat.handle(self.alice, wire.Say(f"line {number}"))
        self.bob.take()
        self.chat.handle(self.bob, wire.HistoryRequest(None, 2))
        self.assertEqual(
            self.bob.take(),
            [
                "*** history of #lobby: 2 message(s)",
                "~ 2025-11-27T13:05:22Z [alice] line 1",
                "~ 2025-11-27T13:05:22Z [alice] line 2",
                "*** end of history of #lobby",
            ],
        )
        self.chat.handle(self.bob, wire.HistoryRequest("#nowhere"))
        self.assertEqual(
            self.bob.take(), ["!!! you are not in #nowhere; /join it first"]
        )

    def test_private_messages_not_kept_by_default(self) -> None:
        """
        Private messages stay out of the history unless asked for, even
        between certificate holders.
        """
        chat = ChatHub(self.clock, certificates=True)
        one, two = Recorder(), Recorder()
        chat.join(one, identity="ann")
        chat.join(two, identity="ben")
        chat.handle(one, wire.Private("ben", "secret"))
        two.take()
        chat.handle(two, wire.HistoryRequest("ann"))
        self.assertEqual(two.take(), ["*** no history for ben <-> ann"])

    def test_private_messages_kept_when_asked(self) -> None:
        """
        With store_private, /history NAME shows a certificate holder their
        conversation with another holder.
        """
        chat = ChatHub(
            self.clock,
            history=MemoryHistory(self.clock, store_private=True),
            certificates=True,
        )
        one, two = Recorder(), Recorder()
        chat.join(one, identity="ann")
        chat.join(two, identity="ben")
        chat.handle(one, wire.Private(two.name, "secret"))
        two.take()
        chat.handle(two, wire.HistoryRequest("ANN"))
        self.assertEqual(
            two.take(),
            [
                "*** history of ben <-> ANN: 1 message(s)",
                "~ 2025-11-27T13:05:22Z [ann -> ben] secret",
                "*** end of history of ben <-> ANN",
            ],
        )


class Counting(Recorder):
    """A L{Recorder} that also counts the calls that brought it events."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def deliver(self, event: wire.Event) -> None:
        self.calls += 1
        super().deliver(event)

    def deliver_all(self, events: tuple[wire.Event, ...]) -> None:
        self.calls += 1
        for event in events:
            super().deliver(event)


class HoldingTests(SynchronousTestCase):
    """
    L{ChatHub.batch}: lines one speaker says in a batch reach each member in
    one delivery when it ends, and nothing is reordered by it.
    """

    def setUp(self) -> None:
        self.chat = ChatHub(Clock())
        self.alice, self.bob, self.carol = seat_three(self.chat, Counting)
        for person in (self.alice, self.bob, self.carol):
            person.calls = 0

    def test_held_lines_arrive_together_at_the_end(self) -> None:
        """
        Nothing is delivered during the batch; at its end each member but
        the speaker gets every line, in order, in one call.
        """
        with self.chat.batch(self.alice):
            for text in ("one", "two", "three"):
                self.chat.handle(self.alice, wire.Say(text))
            self.chat.handle(self.alice, wire.Me("waves"))
            self.assertEqual(self.bob.take(), [])
        expected = ["[alice] one", "[alice] two", "[alice] three", "* alice waves"]
        self.assertEqual(self.bob.take(), expected)
        self.assertEqual(self.carol.take(), expected)
        self.assertEqual((self.bob.calls, self.carol.calls), (1, 1))
        self.assertEqual(self.alice.take(), [])
        self.assertEqual(self.alice.calls, 0)

    def test_not_held_after_the_batch(self) -> None:
        """After a batch, a line is delivered at once."""
        with self.chat.batch(self.alice):
            pass
        self.chat.handle(self.alice, wire.Say("now"))
        self.assertEqual(self.bob.take(), ["[alice] now"])

    def test_handed_out_when_the_batch_fails(self) -> None:
        """
        A batch that ends with an exception still hands out what it held,
        and holds no more.
        """
        with self.assertRaises(ZeroDivisionError), self.chat.batch(self.alice):
            self.chat.handle(self.alice, wire.Say("before"))
            1 / 0  # noqa: B018
        self.assertEqual(self.bob.take(), ["[alice] before"])
        self.chat.handle(self.alice, wire.Say("after"))
        self.assertEqual(self.bob.take(), ["[alice] after"])

    def test_nested_batch_holds_until_the_outer_one_ends(self) -> None:
        """A batch opened within another hands out nothing when it ends."""
        with self.chat.batch(self.alice):
            with self.chat.batch(self.alice):
                self.chat.handle(self.alice, wire.Say("one"))
            self.chat.handle(self.alice, wire.Say("two"))
            self.assertEqual(self.bob.take(), [])
        self.assertEqual(self.bob.take(), ["[alice] one", "[alice] two"])
        self.assertEqual(self.bob.calls, 1)

    def test_private_line_comes_after_held_lines(self) -> None:
        """A private line said after room lines arrives after them."""
        with self.chat.batch(self.alice):
            self.chat.handle(self.alice, wire.Say("to the room"))
            self.chat.handle(self.alice, wire.Private("bob", "to bob"))
            self.chat.handle(self.alice, wire.Say("room again"))
        self.assertEqual(
            self.bob.take(),
            ["[alice] to the room", "[alice -> bob] to bob", "[alice] room again"],
        )

    def test_other_room_and_other_speaker_keep_order(self) -> None:
        """
        A line to another room, or from another speaker, hands out what is
        held first, so a member of both rooms sees the order they were said.
        """
        for person in (self.alice, self.bob):
            self.chat.handle(person, wire.Join("#dev"))
            self.chat.handle(person, wire.Say("lobby", "#lobby"))
        self.bob.take()
        with self.chat.batch(self.alice):
            self.chat.handle(self.alice, wire.Say("first", "#lobby"))
            self.chat.handle(self.alice, wire.Say("second", "#dev"))
            self.chat.handle(self.carol, wire.Say("third"))
            self.chat.handle(self.alice, wire.Say("fourth", "#lobby"))
        self.assertEqual(
            self.bob.take(),
            ["[alice] first", "#dev [alice] second", "[carol] third", "[alice] fourth"],
        )

    def test_arrival_sees_held_lines_once(self) -> None:
        """
        Someone who arrives while lines are held gets them from the history,
        not again live; those already there get them before the arrival.
        """
        newcomer = Counting()
        with self.chat.batch(self.alice):
            self.chat.handle(self.alice, wire.Say("before you came"))
            self.chat.join(newcomer)
        self.assertEqual(
            self.bob.take(), ["[alice] before you came", f"*** {newcomer.name} joined"]
        )
        said = [line for line in newcomer.take() if "before you came" in line]
        self.assertEqual(len(said), 1)
        self.assertTrue(said[0].startswith("~ "), said)

    def test_departure_after_held_lines(self) -> None:
        """Whoever leaves gets the lines said before they left."""
        with self.chat.batch(self.alice):
            self.chat.handle(self.alice, wire.Say("bye carol"))
            self.chat.leave(self.carol, "gone")
        self.assertEqual(self.carol.take(), ["[alice] bye carol"])
        self.assertEqual(
            self.bob.take(), ["[alice] bye carol", "*** carol left (gone)"]
        )

    def relayed(self, speaker: str, text: str, room: str = "#lobby") -> None:
        """A line C{speaker}, on another node, said to C{room}."""
        target = self.chat.room(room)
        assert target is not None
        self.chat.relay(target, wire.Message(speaker, text, target.name, 0.0))

    def test_relayed_lines_arrive_together(self) -> None:
        """
        In a batch for L{RELAYED}, the lines relayed to a room, by one
        speaker or several, reach every member in one call at its end, in
        order.
        """
        with self.chat.batch(RELAYED):
            self.relayed("dave", "one")
            self.relayed("dave", "two")
            self.relayed("erin", "three")
            self.assertEqual(self.bob.take(), [])
        expected = ["[dave] one", "[dave] two", "[erin] three"]
        for person in (self.alice, self.bob, self.carol):
            self.assertEqual(person.take(), expected)
            self.assertEqual(person.calls, 1)

    def test_relayed_lines_keep_order(self) -> None:
        """
        A relayed line to another room, a local speaker's line, an arrival,
        and a flush (what a cluster node does before anything else it
        hears) hand out what is held first; outside the batch, a relayed
        line is handed out at once.
        """
        self.chat.handle(self.bob, wire.Join("#dev"))
        self.chat.handle(self.bob, wire.Join("#lobby"))
        self.bob.take()
        newcomer = Counting()
        with self.chat.batch(RELAYED):
            self.relayed("dave", "one")
            self.relayed("dave", "two", "#dev")
            self.relayed("dave", "three")
            self.chat.handle(self.alice, wire.Say("four"))
            self.relayed("dave", "five")
            self.chat.join(newcomer)
            self.relayed("dave", "six")
            self.chat.flush()
            self.bob.calls = 0
            self.relayed("dave", "seven")
            self.relayed("dave", "eight")
        self.assertEqual(
            self.bob.take(),
            [
                "[dave] one",
                "#dev [dave] two",
                "[dave] three",
                "[alice] four",
                "[dave] five",
                f"*** {newcomer.name} joined",
                "[dave] six",
                "[dave] seven",
                "[dave] eight",
            ],
        )
        self.assertEqual(self.bob.calls, 1)
        self.relayed("dave", "nine")
        self.assertEqual(self.bob.take(), ["[dave] nine"])


class RoomLimitTests(SynchronousTestCase):
    """
    Rooms are bounded: in total, and per address (the rooms the
    participants from one address are in, besides the default room).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.chat = ChatHub(
            self.clock, limits=Limits(max_rooms=4, max_rooms_per_address=2)
        )

    def person(self, address: str | None) -> Recorder:
        person = Recorder()
        self.chat.join(person, address=address)
        person.take()
        return person

    def test_rooms_in_total(self) -> None:
        """
        A new room over C{max_rooms} (the default room counted) is refused;
        once a room empties, a new one may be made again.
        """
        people = [self.person(f"192.0.2.{number}") for number in range(4)]
        for person, room in zip(people, ("#a", "#b", "#c"), strict=False):
            self.chat.handle(person, wire.Join(room))
        self.chat.handle(people[3], wire.Join("#d"))
        self.assertEqual(
            people[3].take(),
            [too_many(4)],
        )
        self.chat.handle(people[3], wire.Join("#a"))
        self.assertEqual(people[3].take()[0], "*** guest-4 joined #a")
        self.chat.handle(people[2], wire.Part("#c"))
        self.chat.handle(people[3], wire.Join("#d"))
        self.assertEqual(people[3].take(), ["*** guest-4 joined #d"])
        self.assertEqual(sorted(self.chat.rooms), ["#a", "#b", "#d", "#lobby"])

    def test_rooms_per_address(self) -> None:
        """
        The participants from one address may be in C{max_rooms_per_address}
        rooms besides the default one, however many they are; a room one of
        them is in already is no new one for the others; other addresses,
        and participants without one (UNIX sockets), are not held to it.
        """
        one, two = self.person("192.0.2.1"), self.person("192.0.2.1")
        self.chat.handle(one, wire.Join("#a"))
        self.chat.handle(two, wire.Join("#b"))
        self.chat.handle(two, wire.Join("#lobby"))
        self.take_all(one, two)
        self.chat.handle(one, wire.Join("#c"))
        self.assertEqual(
            one.take(), ["!!! your address is in too many rooms (2); /part one first"]
        )
        self.chat.handle(two, wire.Join("#A"))
        self.assertEqual(two.take()[0], "*** guest-2 joined #a")
        local, other = self.person(None), self.person("198.51.100.7")
        local.take()
        self.chat.handle(other, wire.Join("#c"))
        self.assertEqual(other.take(), ["*** guest-4 joined #c"])
        self.chat.handle(local, wire.Join("#x"))
        self.assertEqual(
            local.take(),
            [too_many(4)],
        )
        self.chat.handle(two, wire.Part("#b"))
        one.take()
        self.chat.handle(one, wire.Join("#c"))
        self.assertEqual(one.take()[0], "*** guest-1 joined #c")
        self.chat.leave(one)
        self.chat.leave(two)
        self.assertNotIn("192.0.2.1", self.chat._address_rooms)

    def take_all(self, *people: Recorder) -> None:
        for person in people:
            person.take()


class IdleRoomTests(SynchronousTestCase):
    """
    A room that empties lets go of its history in memory: memory holds the
    rooms that exist, not every room ever used.
    """

    def test_emptied_rooms_history_is_let_go(self) -> None:
        """
        The review's case: making rooms, filling them and leaving them, over
        and over, leaves no history in memory but the default room's.
        """
        clock = Clock()
        history = MemoryHistory(clock, per_room=50)
        chat = ChatHub(clock, history=history, limits=Limits(max_rooms_per_address=0))
        speaker = Recorder()
        chat.join(speaker, address="192.0.2.1")
        for number in range(30):
            chat.handle(speaker, wire.Join(f"#r{number}"))
            for line in range(50):
                chat.handle(speaker, wire.Say(f"line {line}"))
            chat.handle(speaker, wire.Part())
        chat.handle(speaker, wire.Say("in the lobby"))
        self.assertEqual(list(history._rooms), ["#lobby"])
        self.assertEqual(list(chat.rooms), ["#lobby"])

    def test_memory_history_ends_with_the_room(self) -> None:
        """
        With the history in memory only, a room made again after it emptied
        has no past.
        """
        chat = ChatHub(Clock())
        alice, bob = Recorder(), Recorder()
        chat.join(alice)
        chat.join(bob)
        chat.handle(alice, wire.Join("#dev"))
        chat.handle(alice, wire.Say("before"))
        chat.handle(alice, wire.Part())
        bob.take()
        chat.handle(bob, wire.Join("#dev"))
        self.assertEqual(bob.take(), ["*** guest-2 joined #dev"])


class SlowHistory(MemoryHistory):
    """
    A history whose rooms' past is in a "database" (C{stored}), read when
    asked for (L{load}) and there when the test fires C{reads}.
    """

    _lazy = True

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock, per_room=2)
        self.stored: dict[str, list[wire.Replayable]] = {}
        self.reads: dict[str, Deferred[None]] = {}

    def load(self, room: str) -> Deferred[None] | None:
        key = room.lower()
        if key in self._rooms:
            return None
        if key not in self.reads:
            self.reads[key] = Deferred()
            self.reads[key].addCallback(self._read, key)
        waiter: Deferred[None] = Deferred()
        self.reads[key].addCallback(lambda _: waiter.callback(None))
        return waiter

    def _read(self, _: None, key: str) -> None:
        del self.reads[key]
        self._rooms[key] = deque(self.stored.get(key, []), maxlen=self.per_room)

    def read(self, room: str) -> None:
        """The database answers: C{room}'s past is read."""
        self.reads[room].callback(None)


class LazyLoadTests(SynchronousTestCase):
    """
    A room's history is read when the room is made.  Who joins it then
    waits, with what they send meanwhile, so that they get its past before
    anything said in it, and their commands in the order they sent them.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1764248722)
        self.history = SlowHistory(self.clock)
        self.history.stored["#dev"] = [
            wire.Message("carol", "from before", "#dev", 1764248000.0)
        ]
        self.history._rooms["#lobby"] = deque(maxlen=2)
        self.chat = ChatHub(self.clock, history=self.history, limits=Limits(replay=2))
        self.alice, self.bob, _ = seat_three(self.chat, Recorder)

    def test_join_waits_for_the_history(self) -> None:
        """
        What a joiner sends while the room is read is carried out after the
        join, in order; nothing of it leaks to the room they were in.
        """
        self.chat.handle(self.alice, wire.Join("#dev"))
        self.chat.handle(self.alice, wire.Say("hello dev"))
        self.chat.handle(self.alice, wire.Who())
        self.assertEqual(self.alice.take(), [])
        self.assertEqual(self.bob.take(), [])
        self.assertEqual(self.chat.rooms_of(self.alice), ["#lobby"])
        self.history.read("#dev")
        self.assertEqual(
            self.alice.take(),
            [
                "*** alice joined #dev",
                "*** history of #dev: 1 message(s)",
                "~ 2025-11-27T12:53:20Z #dev [carol] from before",
                "*** end of history of #dev",
                "*** 1 in #dev: alice",
            ],
        )
        self.assertEqual(self.bob.take(), [])
        self.chat.handle(self.bob, wire.Join("#dev"))
        self.assertEqual(
            self.bob.take(),
            [
                "*** bob joined #dev",
                "*** history of #dev: 2 message(s)",
                "~ 2025-11-27T12:53:20Z #dev [carol] from before",
                "~ 2025-11-27T13:05:22Z #dev [alice] hello dev",
                "*** end of history of #dev",
            ],
        )

    def test_two_wait_for_the_same_room(self) -> None:
        """
        Two who join a room while it is read each get its past, then what
        follows, in order; the room is read once.
        """
        self.chat.handle(self.alice, wire.Join("#dev"))
        self.chat.handle(self.bob, wire.Join("#dev"))
        self.chat.handle(self.bob, wire.Say("bob here"))
        self.assertEqual(list(self.history.reads), ["#dev"])
        self.history.read("#dev")
        replay = [
            "*** history of #dev: 1 message(s)",
            "~ 2025-11-27T12:53:20Z #dev [carol] from before",
            "*** end of history of #dev",
        ]
        self.assertEqual(
            self.alice.take(),
            [
                "*** alice joined #dev",
                *replay,
                "*** bob joined #dev",
                "#dev [bob] bob here",
            ],
        )
        self.assertEqual(self.bob.take(), ["*** bob joined #dev", *replay])

    def test_leaving_while_waiting(self) -> None:
        """
        Someone who leaves while their room is read is not let in; the room
        is not made, and its past is let go of.
        """
        self.chat.handle(self.alice, wire.Join("#dev"))
        self.chat.handle(self.alice, wire.Say("never said"))
        self.chat.leave(self.alice)
        self.history.read("#dev")
        self.assertEqual(self.alice.take(), [])
        self.assertNotIn("#dev", self.chat.rooms)
        self.assertNotIn("#dev", self.history._rooms)
        self.assertEqual(self.chat._loading, {})

    def test_waiting_again_for_another_room(self) -> None:
        """
        A command carried out after a join may itself wait for another
        room: what follows it waits on, in order.
        """
        for command in (wire.Join("#dev"), wire.Join("#ops"), wire.Say("in ops")):
            self.chat.handle(self.alice, command)
        self.history.read("#dev")
        self.assertEqual(self.chat.rooms_of(self.alice), ["#lobby", "#dev"])
        self.chat.handle(self.bob, wire.Join("#dev"))
        self.history.read("#ops")
        self.assertEqual(self.chat.rooms_of(self.alice), ["#lobby", "#dev", "#ops"])
        self.assertEqual(self.history.recent("#ops")[-1].text, "in ops")
        self.assertNotIn("in ops", "".join(self.bob.take()))

    def test_waiting_commands_are_bounded(self) -> None:
        """
        Past L{MAX_WAITING_COMMANDS} commands waiting for a room, more are
        dropped, each with an error.
        """
        self.chat.handle(self.alice, wire.Join("#dev"))
        for number in range(MAX_WAITING_COMMANDS + 1):
            self.chat.handle(self.alice, wire.Say(f"line {number}"))
        self.assertEqual(
            self.alice.take(),
            ["!!! too many lines while joining a room; one was dropped"],
        )
        self.assertEqual(len(self.chat._waiting[self.alice]), MAX_WAITING_COMMANDS)

    def test_rooms_being_read_count(self) -> None:
        """A room being read counts against C{max_rooms}."""
        self.chat.limits = replace(self.chat.limits, max_rooms=2)
        self.chat.handle(self.alice, wire.Join("#dev"))
        self.chat.handle(self.bob, wire.Join("#ops"))
        self.assertEqual(
            self.bob.take(),
            [too_many(2)],
        )


class BoundedReplyTests(SynchronousTestCase):
    """
    Replies that can be large (/history, the replay on joining, /rooms,
    /who) stay within the limits' C{reply_bytes} and C{list_max}, and say
    how much they left out.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1764248722)
        # Each 200-character line from alice in #lobby counts
        # 200 + 5 + 6 + 96 = 307 bytes: three fit in 1000.
        self.chat = ChatHub(
            self.clock, limits=Limits(replay=50, reply_bytes=1000, list_max=3)
        )
        self.alice, self.bob, self.carol = seat_three(self.chat, Recorder)

    def say_long_lines(self, count: int) -> None:
        for number in range(count):
            self.chat.handle(self.alice, wire.Say(f"{number:03} " + "x" * 196))
        self.bob.take()
        self.carol.take()

    def test_history_bounded_in_bytes(self) -> None:
        """
        /history gives the newest messages that fit in C{reply_bytes}, and
        says how many older ones it left out.
        """
        self.say_long_lines(20)
        self.chat.handle(self.bob, wire.HistoryRequest(None, 20))
        lines = self.bob.take()
        self.assertEqual(
            lines[0],
            "*** history of #lobby: 3 message(s)"
            " (17 older not shown: too long for one reply)",
        )
        self.assertEqual(
            [line.split("] ")[1][:3] for line in lines[1:-1]], ["017", "018", "019"]
        )
        self.assertEqual(lines[-1], "*** end of history of #lobby")

    def test_history_control_characters_count_as_shown(self) -> None:
        """
        What counts is the text as stored and shown: C1 control characters,
        2 bytes each when sent, count as the 8 of their visible form.
        """
        # 30 * 8 + 5 + 6 + 96 = 347 bytes each: two fit in 1000.
        for _ in range(5):
            self.chat.handle(self.alice, wire.Say("\x85" * 30))
        self.bob.take()
        self.chat.handle(self.bob, wire.HistoryRequest(None, 5))
        self.assertIn(": 2 message(s) (3 older not shown", self.bob.take()[0])

    def test_replay_bounded_in_bytes(self) -> None:
        """The replay on joining a room is bounded the same way."""
        self.say_long_lines(10)
        newcomer = Recorder()
        self.chat.join(newcomer)
        lines = newcomer.take()
        self.assertIn(
            "*** history of #lobby: 3 message(s)"
            " (7 older not shown: too long for one reply)",
            lines,
        )
        self.assertEqual(len(lines), 5)

    def test_rooms_bounded(self) -> None:
        """
        /rooms lists at most C{list_max} rooms, within C{reply_bytes}, and
        says how many more there are.
        """
        for name in ("#a", "#b", "#c", "#d"):
            self.chat.handle(self.carol, wire.Join(name))
        self.chat.handle(self.alice, wire.Rooms())
        self.assertEqual(
            self.alice.take(), ["*** rooms: #lobby (3), #a (1), #b (1), ... and 2 more"]
        )
        # For carol, a member of #a, #lobby counts 6 + 96 bytes and #a with
        # its topic 2 + 900 + 96: over 1000 together.  Alice is not in #a,
        # so its topic is neither shown to her nor counted.
        self.chat.handle(self.carol, wire.Join("#a"))
        self.chat.handle(self.carol, wire.Topic("t" * 900))
        self.carol.take()
        self.chat.handle(self.carol, wire.Rooms())
        self.assertEqual(self.carol.take(), ["*** rooms: #lobby (3), ... and 4 more"])
        self.chat.handle(self.alice, wire.Rooms())
        self.assertEqual(
            self.alice.take(), ["*** rooms: #lobby (3), #a (1), #b (1), ... and 2 more"]
        )

    def test_who_bounded(self) -> None:
        """/who names at most C{list_max} members, and counts the rest."""
        self.chat.join(Recorder())
        self.alice.take()
        self.chat.handle(self.alice, wire.Who())
        self.assertEqual(
            self.alice.take(), ["*** 4 here: alice, bob, carol, ... and 1 more"]
        )


class AnnouncementRateTests(SynchronousTestCase):
    """
    Arrivals and departures in one room are announced at a bounded rate,
    so that churn does not flood its members.
    """

    def test_churn_is_summed_up(self) -> None:
        """
        Past C{ANNOUNCE_BURST} at once, arrivals and departures are not
        announced; once the rate allows one again, it comes after a notice
        of how many were not.
        """
        clock = Clock()
        chat = ChatHub(clock)
        alice = Recorder()
        chat.join(alice)
        chat.rename(alice, "alice")
        alice.take()
        for _ in range(ANNOUNCE_BURST // 2 + 5):
            churner = Recorder()
            chat.join(churner)
            chat.leave(churner)
        lines = alice.take()
        self.assertEqual(len(lines), ANNOUNCE_BURST)
        self.assertEqual(lines[-2:], ["*** guest-11 joined", "*** guest-11 left"])
        clock.advance(1 / ANNOUNCE_RATE)
        chat.join(Recorder())
        self.assertEqual(
            alice.take(),
            [
                "*** 10 arrivals and departures in #lobby were not announced"
                " (too many at once)",
                "*** guest-17 joined",
            ],
        )
        # A bounded number a second however long the churn lasts.
        for _ in range(100):
            clock.advance(0.01)
            churner = Recorder()
            chat.join(churner)
            chat.leave(churner)
        self.assertLessEqual(len(alice.take()), 2 * int(ANNOUNCE_RATE) + 2)


class UnheardAnnouncementTests(SynchronousTestCase):
    """
    An arrival or departure that nobody is told of is not made into an
    event: most joins are to the default room, which the newcomer is not
    told of, and most leave it with nobody there.
    """

    def counted(self, action: Callable[[], object]) -> tuple[int, int]:
        """How many arrivals and departures C{action} makes."""
        with (
            patch.object(wire, "Joined", wraps=wire.Joined) as joined,
            patch.object(wire, "Departed", wraps=wire.Departed) as departed,
        ):
            action()
        return joined.call_count, departed.call_count

    def test_alone(self) -> None:
        """Alone in the default room: no event either way."""
        chat = ChatHub(Clock())
        alice = Recorder()

        def come_and_go() -> None:
            chat.join(alice)
            chat.leave(alice, "gone")

        self.assertEqual(self.counted(come_and_go), (0, 0))
        self.assertEqual(len(chat), 0)

    def test_someone_to_tell(self) -> None:
        """With someone in the room, both are made and told."""
        chat = ChatHub(Clock())
        alice, bob = Recorder(), Recorder()
        chat.join(alice)
        alice.take()

        def come_and_go() -> None:
            chat.join(bob)
            chat.leave(bob, "gone")

        self.assertEqual(self.counted(come_and_go), (1, 1))
        lines = alice.take()
        self.assertEqual(len(lines), 2, lines)
        self.assertIn(bob.name, lines[0])
        self.assertIn("gone", lines[1])
