"""
Tests for L{securemsg.room}: the chat logic alone, with participants that
only record what they are given.
"""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from securemsg import wire
from securemsg.interfaces import IChatParticipant
from securemsg.room import ChatRoom


@implementer(IChatParticipant)
class Recorder:
    """A participant that keeps every event it is given, as server lines."""

    def __init__(self) -> None:
        self.name = ""
        self.lines: list[str] = []

    def deliver(self, event: wire.Event) -> None:
        self.lines.append(event.format())

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


class RoomTests(SynchronousTestCase):
    """
    L{ChatRoom} names, routes and announces.
    """

    def setUp(self) -> None:
        self.room = ChatRoom()
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
