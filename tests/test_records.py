"""
Tests for L{securemsg.core.records}: what the server remembers across restarts
(bans, the message of the day, certificate holders' names) and the JSON
file it is kept in.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from securemsg.core.records import VERSION, BanRecord, RecordsError, ServerRecords

ALICE_FINGERPRINT = "sha256:" + "a1" * 32
BOB_FINGERPRINT = "sha256:" + "b2" * 32


class StateTestCase(SynchronousTestCase):
    """A temporary directory and the state file path in it."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.path = str(self.directory / "state.json")

    def full_state(self) -> ServerRecords:
        """A state with something of everything in it."""
        state = ServerRecords(self.path)
        state.fingerprints[BOB_FINGERPRINT] = BanRecord("bob", "alice", 1000.5)
        state.addresses["192.0.2.7"] = BanRecord("guest-3", "alice", 1001.0)
        state.motd = "be nice"
        state.add_holder("alice")
        state.add_holder("Bob")
        return state

    def write(self, data: object) -> None:
        Path(self.path).write_text(json.dumps(data), encoding="utf-8")

    def assertOneLineStateError(self, *fragments: str) -> RecordsError:
        """Loading fails with one line that holds each of C{fragments}."""
        error: RecordsError = self.assertRaises(
            RecordsError, ServerRecords.load, self.path
        )
        message = str(error)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return error


class LoadSaveTests(StateTestCase):
    """
    L{ServerRecords.save} and L{ServerRecords.load} keep everything, and the
    file is replaced whole.
    """

    def test_missing_file_is_empty(self) -> None:
        """A state file that does not exist yet gives an empty state."""
        state = ServerRecords.load(self.path)
        self.assertEqual(state, ServerRecords(self.path))
        self.assertEqual(
            (state.fingerprints, state.addresses, state.motd, state.holders),
            ({}, {}, "", {}),
        )
        self.assertFalse(os.path.exists(self.path))

    def test_in_memory(self) -> None:
        """Without a path nothing is read or written."""
        state = ServerRecords.load(None)
        state.motd = "only in memory"
        state.save()
        state.check_writable()
        self.assertEqual(os.listdir(self.directory), [])

    def test_round_trip(self) -> None:
        """What is saved is what is loaded back."""
        state = self.full_state()
        state.save()
        loaded = ServerRecords.load(self.path)
        self.assertEqual(loaded, state)
        self.assertEqual(loaded.holders, {"alice": "alice", "bob": "Bob"})
        self.assertTrue(loaded.is_holder("BOB"))

    def test_file_format(self) -> None:
        """
        The file is versioned JSON; holders are listed by their own
        spelling, sorted.
        """
        self.full_state().save()
        data = json.loads(Path(self.path).read_text(encoding="utf-8"))
        self.assertEqual(
            data,
            {
                "version": VERSION,
                "bans": {
                    "fingerprints": {
                        BOB_FINGERPRINT: {"name": "bob", "by": "alice", "time": 1000.5}
                    },
                    "addresses": {
                        "192.0.2.7": {"name": "guest-3", "by": "alice", "time": 1001.0}
                    },
                },
                "motd": "be nice",
                "holders": ["Bob", "alice"],
            },
        )

    def test_save_replaces_the_file(self) -> None:
        """
        Each save writes a new file and renames it over the old one: the old
        file is never written in place (a reader sees the old or the new
        file, never half of one), no temporary file stays behind, and the
        file is readable by its owner only (it holds IP addresses).
        """
        state = self.full_state()
        state.save()
        before = os.stat(self.path)
        os.chmod(self.path, 0o644)
        state.motd = "changed"
        state.save()
        after = os.stat(self.path)
        self.assertNotEqual(after.st_ino, before.st_ino)
        self.assertEqual(stat.S_IMODE(after.st_mode), 0o600)
        self.assertEqual(os.listdir(self.directory), ["state.json"])
        self.assertEqual(ServerRecords.load(self.path).motd, "changed")

    def test_failed_save_keeps_the_old_file(self) -> None:
        """
        A save that fails halfway leaves the previous file as it was and
        removes its temporary file.
        """
        state = self.full_state()
        state.save()
        before = Path(self.path).read_bytes()
        state.motd = object()  # type: ignore[assignment]
        self.assertRaises(TypeError, state.save)
        self.assertEqual(Path(self.path).read_bytes(), before)
        self.assertEqual(os.listdir(self.directory), ["state.json"])

    def test_check_writable(self) -> None:
        """A state whose folder can be written passes the start-up check."""
        ServerRecords(self.path).check_writable()

    def test_check_writable_refuses_missing_folder(self) -> None:
        """
        A state file in a folder that does not exist cannot be saved, and
        the start-up check says so in one line.
        """
        path = str(self.directory / "missing" / "state.json")
        error = self.assertRaises(RecordsError, ServerRecords(path).check_writable)
        self.assertEqual(
            str(error),
            f"cannot write state file {path}: its folder is not writable",
        )


class DamagedFileTests(StateTestCase):
    """
    A state file that cannot be used stops start-up with one line saying
    which file and what to do.
    """

    def test_not_json(self) -> None:
        """A file that is not JSON is damaged."""
        Path(self.path).write_text('{"version": 1, "bans": ', encoding="utf-8")
        self.assertOneLineStateError(
            f"state file {self.path} is damaged", "move it away to start afresh"
        )

    def test_empty_file(self) -> None:
        """An empty file (a crash of some other writer) is damaged."""
        Path(self.path).write_bytes(b"")
        self.assertOneLineStateError(f"state file {self.path} is damaged")

    def test_wrong_shapes(self) -> None:
        """
        JSON of the right version but the wrong shape is damaged, whatever
        is wrong with it.
        """

        def ban(**changes: object) -> dict[str, object]:
            return {"name": "bob", "by": "alice", "time": 1.0, **changes}

        for data in [
            [1, 2, 3],
            {"version": 1, "bans": []},
            {"version": 1, "bans": {"fingerprints": {"sha256:00": {"name": "x"}}}},
            {"version": 1, "bans": {"addresses": {"192.0.2.1": None}}},
            {"version": 1, "holders": 7},
            {"version": 1, "holders": [None]},
            # These used to load and do harm later: a string of holders
            # reserved its letters as names, and a ban with a number for a
            # name made /unban fail.
            {"version": 1, "holders": "alice"},
            {"version": 1, "motd": {"text": "hi"}},
            {"version": 1, "bans": {"fingerprints": {"sha256:00": ban(name=5)}}},
            {"version": 1, "bans": {"addresses": {"192.0.2.1": ban(by=None)}}},
            {"version": 1, "bans": {"addresses": {"192.0.2.1": ban(time="noon")}}},
        ]:
            self.write(data)
            self.assertOneLineStateError(f"state file {self.path} is damaged")

    def test_unknown_version(self) -> None:
        """
        A file of another version (a newer securemsg's) is refused, not
        half understood.
        """
        for version in (VERSION + 1, None, "1"):
            self.write({"version": version, "motd": "from the future"})
            self.assertOneLineStateError(
                f"state file {self.path} is damaged",
                "not a securemsg state file of a known version",
            )

    def test_unreadable(self) -> None:
        """A path that cannot be read (here a folder) says why."""
        os.mkdir(self.path)
        error = self.assertOneLineStateError()
        self.assertEqual(
            str(error), f"cannot read state file {self.path}: Is a directory"
        )


class BanTests(SynchronousTestCase):
    """
    Bans by certificate fingerprint and by address, and lifting them by
    name, fingerprint or address.
    """

    def setUp(self) -> None:
        self.state = ServerRecords()
        self.bob = BanRecord("bob", "alice", 1.0)
        self.guest = BanRecord("guest-3", "alice", 2.0)
        self.state.fingerprints[BOB_FINGERPRINT] = self.bob
        self.state.addresses["192.0.2.7"] = self.guest

    def test_banned_by_fingerprint(self) -> None:
        """A banned certificate is refused from any address."""
        self.assertIs(self.state.banned(BOB_FINGERPRINT, "198.51.100.1"), self.bob)
        self.assertIs(self.state.banned(BOB_FINGERPRINT, None), self.bob)

    def test_banned_by_address(self) -> None:
        """A banned address is refused with or without a certificate."""
        self.assertIs(self.state.banned(None, "192.0.2.7"), self.guest)
        self.assertIs(self.state.banned(ALICE_FINGERPRINT, "192.0.2.7"), self.guest)

    def test_fingerprint_ban_comes_first(self) -> None:
        """When both match, the certificate's ban is the one reported."""
        self.assertIs(self.state.banned(BOB_FINGERPRINT, "192.0.2.7"), self.bob)

    def test_not_banned(self) -> None:
        """Others, and connections known by neither, are let in."""
        self.assertIsNone(self.state.banned(ALICE_FINGERPRINT, "198.51.100.1"))
        self.assertIsNone(self.state.banned(None, None))

    def test_unban_by_name(self) -> None:
        """A name (any case) lifts the bans made on whoever had it."""
        self.assertEqual(self.state.unban("BOB"), [BOB_FINGERPRINT])
        self.assertEqual(self.state.fingerprints, {})
        self.assertEqual(self.state.addresses, {"192.0.2.7": self.guest})

    def test_unban_by_fingerprint(self) -> None:
        """A fingerprint lifts that certificate's ban."""
        self.assertEqual(self.state.unban(BOB_FINGERPRINT), [BOB_FINGERPRINT])
        self.assertIsNone(self.state.banned(BOB_FINGERPRINT, None))

    def test_unban_by_address(self) -> None:
        """An address lifts that address's ban."""
        self.assertEqual(self.state.unban("192.0.2.7"), ["192.0.2.7"])
        self.assertIsNone(self.state.banned(None, "192.0.2.7"))
        self.assertIs(self.state.banned(BOB_FINGERPRINT, None), self.bob)

    def test_unban_name_lifts_every_kind(self) -> None:
        """One name banned both ways is unbanned both ways at once."""
        self.state.addresses["198.51.100.9"] = BanRecord("bob", "carol", 3.0)
        self.assertEqual(self.state.unban("bob"), [BOB_FINGERPRINT, "198.51.100.9"])
        self.assertEqual(self.state.addresses, {"192.0.2.7": self.guest})

    def test_unban_nothing(self) -> None:
        """Lifting a ban nobody has lifts nothing."""
        self.assertEqual(self.state.unban("carol"), [])
        self.assertEqual(len(self.state.fingerprints) + len(self.state.addresses), 2)


class HolderTests(SynchronousTestCase):
    """The names of certificate holders, kept so that guests cannot take them."""

    def test_add_holder(self) -> None:
        """
        A holder's name is remembered once, ignoring case, with the spelling
        it was first seen with.
        """
        state = ServerRecords()
        self.assertTrue(state.add_holder("Alice"))
        self.assertFalse(state.add_holder("alice"))
        self.assertEqual(state.holders, {"alice": "Alice"})

    def test_is_holder(self) -> None:
        """Any spelling of a holder's name is a holder's name; others are not."""
        state = ServerRecords()
        state.add_holder("alice")
        self.assertTrue(state.is_holder("ALICE"))
        self.assertFalse(state.is_holder("alicia"))
