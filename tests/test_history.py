"""
Tests for L{securemsg.core.history}: L{MemoryHistory} with a fake clock, and
L{SqliteHistory} on real files with the real reactor's threads (its time
comes from a fake clock, so nothing here waits for time to pass).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _global_reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python import threadable
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from securemsg.core import history as history_module
from securemsg.core.history import (
    FLUSH_DELAY,
    PRUNE_INTERVAL,
    SCHEMA_VERSION,
    HistoryError,
    MemoryHistory,
    SqliteHistory,
)
from securemsg.core.hub import ChatHub
from securemsg.core.limits import Limits
from securemsg.protocol import wire

from ._fakes import Recorder
from ._loopback import bounded

reactor: Any = _global_reactor

#: 2025-11-27T13:05:22Z, the start of every fake clock here.
START = 1764248722.0
HOUR = 3600.0


def say(sender: str, text: str, room: str, time: float | None) -> wire.Message:
    return wire.Message(sender, text, room, time)


def wait_for(condition: Callable[[], bool]) -> Deferred[None]:
    """Let the reactor run (the pool's threads answer) until C{condition}."""

    async def waiting() -> None:
        while not condition():
            turn: Deferred[None] = Deferred()
            reactor.callLater(0.001, turn.callback, None)
            await turn

    return Deferred.fromCoroutine(waiting())


def replayed(*events: wire.Replayable) -> list[wire.Replayable]:
    """The events as the history gives them back: marked as replayed."""
    return [replace(event, replayed=True) for event in events]


class MemoryHistoryTests(SynchronousTestCase):
    """
    L{MemoryHistory} keeps the last messages of each room, and private ones
    only if asked, and replays nothing older than its maximum age.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)

    def test_bounded_per_room(self) -> None:
        """
        Each room keeps its own last C{per_room} messages, oldest first;
        room names are the same whatever their case.
        """
        history = MemoryHistory(self.clock, per_room=2)
        dev = [say("a", f"dev {n}", "#dev", START + n) for n in range(4)]
        ops = [say("b", "ops", "#ops", START)]
        for event in [*dev[:2], *ops, *dev[2:]]:
            history.record(event)
        self.assertEqual(history.recent("#dev"), dev[2:])
        self.assertEqual(history.recent("#DEV"), dev[2:])
        self.assertEqual(history.recent("#ops"), ops)
        self.assertEqual(history.recent("#nowhere"), [])
        self.assertEqual(self.successResultOf(history.fetch("#dev", 1)), dev[3:])
        self.assertEqual(self.successResultOf(history.fetch("#dev", 50)), dev[2:])

    def test_keeps_nothing(self) -> None:
        """With C{per_room} 0, or for a message with no room, nothing is kept."""
        history = MemoryHistory(self.clock, per_room=0)
        history.record(say("a", "x", "#dev", START))
        self.assertEqual(history.recent("#dev"), [])
        history = MemoryHistory(self.clock)
        history.record(say("a", "x", None, START))  # type: ignore[arg-type]
        self.assertEqual(history._rooms, {})

    def test_max_age(self) -> None:
        """Messages older than C{max_age} are no longer replayed or fetched."""
        history = MemoryHistory(self.clock, max_age=HOUR, store_private=True)
        old = say("a", "old", "#dev", START - HOUR - 1)
        edge = say("a", "edge", "#dev", START - HOUR)
        new = say("a", "new", "#dev", START)
        whisper = wire.PrivateMessage("a", "b", "psst", START - 2 * HOUR)
        for event in (old, edge, new, whisper):
            history.record(event)
        self.assertEqual(history.recent("#dev"), [edge, new])
        self.assertEqual(self.successResultOf(history.fetch("#dev", 10)), [edge, new])
        self.assertEqual(self.successResultOf(history.fetch_private("a", "b", 9)), [])
        self.clock.advance(1)
        self.assertEqual(history.recent("#dev"), [new])
        self.clock.advance(HOUR)
        self.assertEqual(history.recent("#dev"), [])

    def test_private(self) -> None:
        """
        Private messages are kept only with C{store_private}; then a
        conversation is found from either side, whatever the names' case.
        """
        events = [
            wire.PrivateMessage("alice", "bob", "one", START),
            wire.PrivateMessage("Bob", "Alice", "two", START + 1),
            wire.PrivateMessage("alice", "carol", "other", START + 2),
        ]
        kept = MemoryHistory(self.clock, store_private=True)
        dropped = MemoryHistory(self.clock)
        for event in events:
            kept.record(event)
            dropped.record(event)
        self.assertEqual(
            self.successResultOf(kept.fetch_private("BOB", "alice", 10)), events[:2]
        )
        self.assertEqual(
            self.successResultOf(kept.fetch_private("bob", "alice", 1)), events[1:2]
        )
        self.assertEqual(
            self.successResultOf(dropped.fetch_private("bob", "alice", 10)), []
        )
        self.assertEqual(kept.recent("#lobby"), [])
        self.assertIsNone(self.successResultOf(kept.close()))


class ClockedReactor:
    """
    The real reactor, for adbapi's threads and its calls back from them, but
    with the time (C{seconds}, C{callLater}) of a fake clock.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay: float, f: Callable[..., object], *a: Any) -> Any:
        return self.clock.callLater(delay, f, *a)

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


class Interactions:
    """
    Watches a history's connection pool: which thread ran each piece of
    database work, and the Deferred of each.
    """

    def __init__(self, history: SqliteHistory) -> None:
        self.threads: list[tuple[str, threading.Thread, bool]] = []
        self.deferreds: list[Deferred[Any]] = []
        pool = history.pool
        original = pool.runInteraction

        def observed(interaction: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
            def in_thread(cursor: Any, *args: Any, **kwargs: Any) -> Any:
                self.threads.append(
                    (
                        getattr(interaction, "__name__", repr(interaction)),
                        threading.current_thread(),
                        threadable.isInIOThread(),
                    )
                )
                return interaction(cursor, *args, **kwargs)

            deferred: Deferred[Any] = original(in_thread, *args, **kwargs)
            self.deferreds.append(deferred)
            return deferred

        pool.runInteraction = observed  # type: ignore[method-assign]

    def names(self) -> list[str]:
        return [name for name, _, _ in self.threads]


class SqliteHistoryTests(TestCase):
    """
    L{SqliteHistory} writes what is said to an SQLite file, reads it back
    after a restart, and applies the retention limits.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.path = str(self.directory / "history.sqlite3")
        self.clock = Clock()
        self.clock.advance(START)
        self.reactor = ClockedReactor(self.clock)
        self._open: list[SqliteHistory] = []
        self.addCleanup(self._close_all)

    async def _close_all(self) -> None:
        # Always: the pool's threads must stop before the test ends.
        for history in self._open:
            await bounded(history.close(), "closing the history")
        self._open.clear()

    def open(self, path: str | None = None, **options: Any) -> SqliteHistory:
        """
        Open the history, with #dev and #ops loaded at once unless told
        otherwise (as the default room is): rooms that exist.
        """
        options.setdefault("preload", ("#dev", "#ops"))
        history = SqliteHistory.open(path or self.path, self.reactor, **options)
        self._open.append(history)
        return history

    async def close(self, history: SqliteHistory) -> None:
        self._open.remove(history)
        await bounded(history.close(), "closing the history")

    async def reopen(self, history: SqliteHistory, **options: Any) -> SqliteHistory:
        """Close C{history} and open its file again, as a restart does."""
        await self.close(history)
        return self.open(**options)

    def query(self, sql: str, path: str | None = None) -> list[tuple[Any, ...]]:
        """Ask (or change) the file directly, with a connection of our own."""
        connection = sqlite3.connect(path or self.path)
        try:
            rows = connection.execute(sql).fetchall()
            connection.commit()
            return rows
        finally:
            connection.close()

    def stored(self) -> list[tuple[Any, ...]]:
        """Every row: room, kind, sender, recipient, text, oldest first."""
        return self.query(
            "SELECT room, kind, sender, recipient, text FROM messages ORDER BY id"
        )

    def chatter(self, history: SqliteHistory) -> dict[str, list[wire.Replayable]]:
        """Record five messages each in #dev and #ops, a minute apart."""
        said: dict[str, list[wire.Replayable]] = {"#dev": [], "#ops": []}
        for number in range(5):
            for room in said:
                time = START + 60 * len(said[room])
                event: wire.Replayable = (
                    wire.Action("bob", f"acts {number}", room, time)
                    if number == 2
                    else say("alice", f"{room} {number}", room, time)
                )
                history.record(event)
                said[room].append(event)
        return said

    # The schema

    def test_schema_created(self) -> None:
        """
        A new file gets the current schema version and the messages table
        with its indexes.
        """
        self.open()
        self.assertEqual(self.query("PRAGMA user_version"), [(SCHEMA_VERSION,)])
        self.assertEqual(
            self.query("SELECT type, name FROM sqlite_master ORDER BY name"),
            [
                ("table", "messages"),
                ("index", "messages_by_pair"),
                ("index", "messages_by_room"),
            ],
        )

    async def test_private_messages_of_version_1_never_shown(self) -> None:
        """
        Private messages stored by version 1, looked up by a bare name that
        any guest could take, are not offered again after the migration to
        version 2 (they age out); room messages are kept, and new private
        messages between the same names are found.
        """
        connection = sqlite3.connect(self.path, isolation_level=None)
        for statement in history_module._MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute("PRAGMA user_version = 1")
        connection.execute(
            "INSERT INTO messages (time, room, room_key, kind, sender, recipient,"
            " text) VALUES (?, NULL, NULL, 'private', 'alice', 'bob', 'old'),"
            " (?, '#dev', '#dev', 'message', 'alice', NULL, 'kept')",
            (START, START),
        )
        connection.close()
        history = self.open(store_private=True)
        self.assertEqual(self.query("PRAGMA user_version"), [(2,)])
        self.assertEqual(
            await bounded(history.fetch_private("alice", "bob", 10), "fetch"), []
        )
        new = wire.PrivateMessage("Bob", "alice", "new", START + 1)
        history.record(new)
        self.assertEqual(
            await bounded(history.fetch_private("alice", "BOB", 10), "fetch"),
            replayed(new),
        )
        self.assertEqual(
            await bounded(history.fetch("#dev", 10), "fetch"),
            replayed(say("alice", "kept", "#dev", START)),
        )

    def test_empty_file(self) -> None:
        """An empty file is a new database (as SQLite sees it), not an error."""
        Path(self.path).touch()
        self.open()
        self.assertEqual(self.query("PRAGMA user_version"), [(SCHEMA_VERSION,)])

    def test_later_version_migrates(self) -> None:
        """
        A later securemsg with a higher schema version migrates an existing
        file in place, keeping what is in it.
        """
        connection = history_module._open_checked(self.path)
        connection.execute(
            "INSERT INTO messages (time, room, room_key, kind, sender, text)"
            " VALUES (1.0, '#dev', '#dev', 'message', 'alice', 'kept')"
        )
        connection.close()
        migrations = dict(history_module._MIGRATIONS)
        migrations[SCHEMA_VERSION] = [
            "ALTER TABLE messages ADD COLUMN edited REAL",
            "CREATE TABLE reactions (message INTEGER, name TEXT)",
        ]
        self.patch(history_module, "_MIGRATIONS", migrations)
        self.patch(history_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
        self.open()
        self.assertEqual(self.query("PRAGMA user_version"), [(SCHEMA_VERSION + 1,)])
        self.assertEqual(
            self.query("SELECT text, edited FROM messages"), [("kept", None)]
        )
        self.assertEqual(self.query("SELECT * FROM reactions"), [])

    def test_failed_migration_changes_nothing(self) -> None:
        """
        A migration that fails part way is undone completely: the file keeps
        its version and schema, and the error is one line.
        """
        history_module._open_checked(self.path).close()
        migrations = dict(history_module._MIGRATIONS)
        migrations[SCHEMA_VERSION] = [
            "CREATE TABLE reactions (message INTEGER, name TEXT)",
            "THIS IS NOT SQL",
        ]
        self.patch(history_module, "_MIGRATIONS", migrations)
        self.patch(history_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
        error = self.assertRaises(HistoryError, self.open)
        self.assertEqual(
            str(error),
            f'cannot use history database {self.path}: near "THIS": syntax error',
        )
        self.assertEqual(self.query("PRAGMA user_version"), [(SCHEMA_VERSION,)])
        self.assertEqual(
            self.query("SELECT name FROM sqlite_master WHERE name = 'reactions'"), []
        )

    def assertOneLineError(self, expected: str, path: str | None = None) -> None:
        error = self.assertRaises(HistoryError, self.open, path)
        self.assertEqual(str(error), expected)
        self.assertNotIn("\n", str(error))
        # No chained exception would be shown with it.
        self.assertIsNone(error.__cause__)
        self.assertTrue(error.__context__ is None or error.__suppress_context__)

    def test_newer_version_refused(self) -> None:
        """
        A file written by a newer securemsg (a higher schema version) is
        refused with one line, and left as it is.
        """
        history_module._open_checked(self.path).close()
        self.query(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        self.assertOneLineError(
            f"history database {self.path} has schema version {SCHEMA_VERSION + 1},"
            f" newer than this securemsg understands ({SCHEMA_VERSION});"
            " upgrade securemsg"
        )
        self.assertEqual(self.query("PRAGMA user_version"), [(SCHEMA_VERSION + 1,)])

    def test_not_a_database(self) -> None:
        """A file that is not SQLite at all is refused with one line naming it."""
        Path(self.path).write_bytes(bytes(range(256)) * 16)
        self.assertOneLineError(
            f"history database {self.path} is not a usable SQLite database"
            " (file is not a database); move it away to start afresh"
        )

    async def make_real_database(self) -> bytes:
        """Fill the file with a few pages of messages; return its bytes."""
        history = self.open()
        for number in range(300):
            history.record(say("alice", f"{number:03} " + "x" * 200, "#dev", START))
        await self.close(history)
        return Path(self.path).read_bytes()

    async def test_truncated(self) -> None:
        """A database cut short is refused with one line naming it."""
        data = await self.make_real_database()
        self.assertGreater(len(data), 8 * 4096)
        Path(self.path).write_bytes(data[: len(data) // 2])
        self.assertOneLineError(
            f"history database {self.path} is not a usable SQLite database"
            " (database disk image is malformed); move it away to start afresh"
        )

    async def test_damaged_page(self) -> None:
        """
        A database whose table pages are overwritten fails the integrity
        check at start: one line naming it.
        """
        data = bytearray(await self.make_real_database())
        [(page_size,)] = self.query("PRAGMA page_size")
        [(root,)] = self.query(
            "SELECT rootpage FROM sqlite_master WHERE name = 'messages_by_room'"
        )
        # The header of the index's first page: no valid kind of page.
        start = (root - 1) * page_size
        data[start : start + 8] = b"\xff" * 8
        Path(self.path).write_bytes(bytes(data))
        self.assertOneLineError(
            f"history database {self.path} is damaged; move it away to start afresh"
        )

    async def test_damaged_text(self) -> None:
        """
        Damage the integrity check does not see (text that is not UTF-8)
        still stops the start with one line, when the rooms are loaded.
        """
        await self.make_real_database()
        self.query(
            "UPDATE messages SET room = CAST(X'FFFE' AS TEXT)"
            " WHERE id = (SELECT MAX(id) FROM messages)"
        )
        self.assertOneLineError(
            f"history database {self.path} is damaged; move it away to start afresh"
        )

    def assertLocked(self) -> None:
        self.assertOneLineError(
            f"history database {self.path} is locked by another program"
            " (is another securemsg using it?)"
        )

    def test_locked(self) -> None:
        """
        A database another program holds locked (for writing, or for
        everything) is refused with one line, after a short wait.
        """
        history_module._open_checked(self.path).close()
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN EXCLUSIVE")
        self.assertLocked()
        other.execute("ROLLBACK")
        other.execute("BEGIN IMMEDIATE")
        self.assertLocked()
        other.execute("ROLLBACK")
        self.open()

    def test_unwritable_directory(self) -> None:
        """
        A file that cannot be made (its directory is no directory, or the
        path is a directory) is refused with one line naming it.
        """
        blocker = self.directory / "not-a-directory"
        blocker.write_text("")
        for path in [str(blocker / "history.sqlite3"), str(self.directory)]:
            self.assertOneLineError(
                f"cannot open history database {path}: unable to open database file",
                path,
            )

    def test_read_only_directory(self) -> None:
        """A directory we may not write in: one line naming the file."""
        if os.geteuid() == 0:
            raise self.skipTest("root may write in any directory")
        locked = self.directory / "read-only"
        locked.mkdir(mode=0o500)
        self.addCleanup(locked.chmod, 0o700)
        path = str(locked / "history.sqlite3")
        self.assertOneLineError(
            f"cannot open history database {path}: unable to open database file",
            path,
        )

    # Permissions

    async def test_created_private_to_its_owner(self) -> None:
        """
        Under the usual umask of 022, the database and its write-ahead and
        shared-memory files are made readable by their owner only, and no
        warning is logged for them.
        """
        old_umask = os.umask(0o022)
        self.addCleanup(os.umask, old_umask)
        with capturedLogs() as events:
            history = self.open()
        history.record(say("alice", "secret plans", "#dev", START))
        await bounded(history.flush(), "flush")
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            self.assertEqual(oct(os.stat(name).st_mode & 0o777), oct(0o600), name)
        self.assertEqual(events, [])

    def test_warning_for_a_database_others_may_read(self) -> None:
        """
        An existing database that its group or others may read is opened,
        with a warning naming it and saying how to fix it.
        """
        sqlite3.connect(self.path).close()
        os.chmod(self.path, 0o644)
        with capturedLogs() as events:
            self.open()
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                f"history database file {self.path} is accessible by group or"
                " others (mode 0644): it holds what was said; run:"
                f" chmod 600 {self.path}"
            ],
        )
        self.assertEqual(events[0]["log_level"], LogLevel.warn)

    # Writing and reading

    async def test_restart_replays_recent(self) -> None:
        """
        What was recorded is there after a restart: each room's last
        C{per_room} messages, in order, marked as history; private messages
        stay out of the rooms.
        """
        history = self.open(store_private=True)
        said = self.chatter(history)
        history.record(wire.PrivateMessage("alice", "bob", "psst", START))
        history = await self.reopen(history, per_room=3)
        self.assertEqual(history.recent("#dev"), replayed(*said["#dev"][-3:]))
        self.assertEqual(history.recent("#OPS"), replayed(*said["#ops"][-3:]))
        self.assertEqual(history.recent("#lobby"), [])
        history = await self.reopen(history, per_room=0)
        self.assertEqual(history.recent("#dev"), [])

    async def test_rooms_loaded_when_made(self) -> None:
        """
        At start only the rooms asked for (the default room) are read; any
        other room's last messages are read once, when it is made, after
        what is pending is written; recording for a room that is not loaded
        writes it without keeping it in memory; a room that emptied is let
        go of.
        """
        history = self.open(per_room=3)
        said = self.chatter(history)
        history = await self.reopen(history, per_room=3, preload=("#ops",))
        self.assertEqual(list(history._rooms), ["#ops"])
        self.assertEqual(history.recent("#ops"), replayed(*said["#ops"][-3:]))
        self.assertEqual(history.recent("#dev"), [])
        late = say("carol", "late", "#dev", START + 999)
        history.record(late)
        self.assertEqual(history._rooms.keys(), {"#ops"})
        watch = Interactions(history)
        first, second = history.load("#DEV"), history.load("#dev")
        assert first is not None and second is not None
        await bounded(gatherResults([first, second]), "load")
        self.assertEqual(watch.names(), ["_runQuery"])
        self.assertEqual(history.recent("#dev"), [*replayed(*said["#dev"][-2:], late)])
        self.assertIsNone(history.load("#dev"))
        history.forget("#dev")
        self.assertEqual(history._rooms.keys(), {"#ops"})
        loading = history.load("#new")
        assert loading is not None
        await bounded(loading, "load")
        self.assertEqual(history.recent("#new"), [])
        history = await self.reopen(history, per_room=0, preload=("#ops",))
        self.assertIsNone(history.load("#dev"))
        self.assertEqual(history.recent("#ops"), [])

    async def test_load_failure_logged(self) -> None:
        """
        A room whose past cannot be read (text that is not UTF-8) works
        all the same, without it; the failure is logged.
        """
        await self.make_real_database()
        self.query(
            "UPDATE messages SET room = CAST(X'FFFE' AS TEXT)"
            " WHERE id = (SELECT MAX(id) FROM messages)"
        )
        history = self.open(preload=())
        loading = history.load("#dev")
        assert loading is not None
        with capturedLogs() as events:
            await bounded(loading, "load")
        self.assertEqual(history.recent("#dev"), [])
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["could not read the history of #dev"],
        )
        self.flushLoggedErrors()

    async def test_room_made_again_replays_its_past(self) -> None:
        """
        A room's stored history is the room's: a room that emptied (and so
        left memory) replays it to whoever makes it again, before anything
        said in it after.
        """
        history = self.open(preload=("#lobby",))
        chat = ChatHub(self.clock, history=history, limits=Limits(replay=5))
        alice, bob = Recorder(), Recorder()
        chat.join(alice)
        chat.join(bob)
        chat.handle(alice, wire.Join("#dev"))
        await bounded(wait_for(lambda: "#dev" in chat.rooms), "the join")
        chat.handle(alice, wire.Say("said before"))
        chat.handle(alice, wire.Part())
        self.assertNotIn("#dev", history._rooms)
        bob.take()
        chat.handle(bob, wire.Join("#dev"))
        chat.handle(alice, wire.Join("#dev"))
        chat.handle(alice, wire.Say("said after"))
        await bounded(wait_for(lambda: len(chat.rooms_of(alice)) == 2), "the joins")
        self.assertEqual(
            bob.take(),
            [
                "*** guest-2 joined #dev",
                "*** history of #dev: 1 message(s)",
                "~ 2025-11-27T13:05:22Z #dev [guest-1] said before",
                "*** end of history of #dev",
                "*** guest-1 joined #dev",
                "#dev [guest-1] said after",
            ],
        )

    async def test_batched_in_wal_mode(self) -> None:
        """
        Recording writes nothing at once: the messages wait
        L{FLUSH_DELAY}, then are written together in one transaction to
        the database in WAL mode, on the reactor's thread (no thread could
        get the GIL from a busy reactor).  Reading and pruning run on a
        thread of the pool, never the reactor's.
        """
        history = self.open()
        watch = Interactions(history)
        said = self.chatter(history)
        self.assertEqual(self.stored(), [])
        self.clock.advance(FLUSH_DELAY)
        self.assertEqual(len(self.stored()), len(said["#dev"]) + len(said["#ops"]))
        self.assertEqual(watch.names(), [])
        self.assertEqual(self.query("PRAGMA journal_mode"), [("wal",)])
        fetched = await bounded(history.fetch("#dev", 100), "fetch")
        self.assertEqual(fetched, replayed(*said["#dev"]))
        await bounded(history.prune(), "prune")
        await bounded(history.checkpoint(), "checkpoint")
        self.assertEqual(watch.names(), ["_runQuery", "_prune", "_runOperation"])
        for name, thread, in_reactor_thread in watch.threads:
            self.assertIsNot(thread, threading.main_thread(), name)
            self.assertFalse(in_reactor_thread, name)

    async def test_large_batch(self) -> None:
        """
        A batch larger than one INSERT statement takes is written whole and
        in order.
        """
        history = self.open(per_room=1)
        count = 2 * history_module._ROWS_PER_INSERT + 7
        for number in range(count):
            history.record(wire.Message("alice", f"line {number}", "#dev", START))
        self.clock.advance(FLUSH_DELAY)
        self.assertEqual(
            [text for *_, text in self.stored()],
            [f"line {number}" for number in range(count)],
        )

    async def test_busy_database_written_later(self) -> None:
        """
        While another connection holds the database, a batch is kept and
        written with the next one, without waiting and without an error.
        """
        history = self.open()
        holder = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(holder.close)
        holder.execute("BEGIN IMMEDIATE")
        with capturedLogs() as events:
            said = self.chatter(history)
            self.clock.advance(FLUSH_DELAY)
        self.assertEqual(events, [])
        holder.execute("ROLLBACK")
        self.assertEqual(self.stored(), [])
        self.clock.advance(FLUSH_DELAY)
        self.assertEqual(len(self.stored()), len(said["#dev"]) + len(said["#ops"]))

    async def test_closed_into_one_file(self) -> None:
        """Closing copies the write-ahead log into the database file."""
        history = self.open()
        said = self.chatter(history)
        await self.close(history)
        wal = Path(self.path + "-wal")
        self.assertEqual(wal.stat().st_size if wal.exists() else 0, 0)
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        self.addCleanup(connection.close)
        (count,) = connection.execute("SELECT count(*) FROM messages").fetchone()
        self.assertEqual(count, len(said["#dev"]) + len(said["#ops"]))

    async def test_write_ahead_files_have_the_database_owner(self) -> None:
        """
        Started as root on a database that belongs to another user (twistd
        with C{--uid}), the WAL files belong to that user too (SQLite sees
        to it), so that user's connections can open them.
        """
        if os.geteuid() != 0:
            raise SkipTest("only root can give files away")
        history = self.open()
        await self.close(history)
        os.chown(self.path, 4321, 4321)
        history = self.open()
        self.assertIsNotNone(history.writer)
        for suffix in ("-wal", "-shm"):
            owner = os.stat(self.path + suffix)
            self.assertEqual((owner.st_uid, owner.st_gid), (4321, 4321), suffix)

    async def test_without_wal_written_off_the_reactor_thread(self) -> None:
        """
        Where the file system cannot have WAL mode, batches are written on
        a thread of the pool instead.
        """
        self.patch(history_module, "_write_ahead", lambda connection: False)
        history = self.open()
        self.assertIsNone(history.writer)
        watch = Interactions(history)
        said = self.chatter(history)
        self.clock.advance(FLUSH_DELAY)
        await bounded(gatherResults(watch.deferreds), "the write")
        self.assertEqual(watch.names(), ["_insert"])
        self.assertEqual(len(self.stored()), len(said["#dev"]) + len(said["#ops"]))
        for name, thread, in_reactor_thread in watch.threads:
            self.assertIsNot(thread, threading.main_thread(), name)
            self.assertFalse(in_reactor_thread, name)

    async def test_fetch_reads_database(self) -> None:
        """
        Asking for more than is in memory reads the database (writing what
        is pending first), before and after a restart.
        """
        history = self.open(per_room=2)
        said = self.chatter(history)
        watch = Interactions(history)
        self.assertEqual(
            await bounded(history.fetch("#dev", 2), "fetch"), said["#dev"][-2:]
        )
        self.assertEqual(watch.threads, [])
        self.assertEqual(
            await bounded(history.fetch("#dev", 4), "fetch"),
            replayed(*said["#dev"][-4:]),
        )
        self.assertEqual(
            await bounded(history.fetch("#Dev", 100), "fetch"),
            replayed(*said["#dev"]),
        )
        self.assertEqual(await bounded(history.fetch("#nowhere", 9), "fetch"), [])
        history = await self.reopen(history, per_room=1)
        self.assertEqual(history.recent("#ops"), replayed(said["#ops"][-1]))
        self.assertEqual(
            await bounded(history.fetch("#ops", 3), "fetch"),
            replayed(*said["#ops"][-3:]),
        )

    async def test_concurrent_fetches(self) -> None:
        """
        Two fetches at the same time each get their own room's messages,
        however the writes and reads interleave.
        """
        history = self.open(per_room=1)
        said = self.chatter(history)
        dev, ops = history.fetch("#dev", 5), history.fetch("#ops", 5)
        results = await bounded(gatherResults([dev, ops]), "fetches")
        self.assertEqual(results, [replayed(*said["#dev"]), replayed(*said["#ops"])])
        history.record(say("carol", "late", "#dev", START))
        dev, ops = history.fetch("#dev", 2), history.fetch("#ops", 2)
        self.assertEqual(await bounded(ops, "fetch"), replayed(*said["#ops"][-2:]))
        self.assertEqual(
            await bounded(dev, "fetch"),
            replayed(said["#dev"][-1], say("carol", "late", "#dev", START)),
        )

    async def test_close_writes_pending(self) -> None:
        """Closing writes what is still waiting for the flush delay."""
        history = self.open()
        self.chatter(history)
        await self.close(history)
        self.assertEqual(len(self.stored()), 10)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(
            self.stored()[-1], ("#ops", "message", "alice", None, "#ops 4")
        )

    # Retention

    async def test_prune_max_count(self) -> None:
        """Pruning keeps the newest C{max_count} messages of each room."""
        history = self.open(max_count=2, store_private=True)
        said = self.chatter(history)
        for number in range(3):
            history.record(wire.PrivateMessage("a", "b", f"p{number}", START))
        await bounded(history.flush(), "flush")
        await bounded(history.prune(), "prune")
        self.assertEqual(
            self.stored(),
            [
                ("#dev", "message", "alice", None, "#dev 3"),
                ("#ops", "message", "alice", None, "#ops 3"),
                ("#dev", "message", "alice", None, "#dev 4"),
                ("#ops", "message", "alice", None, "#ops 4"),
                (None, "private", "a", "b", "p1"),
                (None, "private", "a", "b", "p2"),
            ],
        )
        history = await self.reopen(history, per_room=10)
        self.assertEqual(history.recent("#dev"), replayed(*said["#dev"][-2:]))

    async def test_prune_max_age(self) -> None:
        """
        Messages older than C{max_age} are not fetched, and pruning deletes
        them from the file; pruning runs every L{PRUNE_INTERVAL}.
        """
        history = self.open(max_age=HOUR, per_room=1)
        watch = Interactions(history)
        now = self.clock.seconds()
        old = say("alice", "old", "#dev", now - HOUR - 1)
        new = say("alice", "new", "#dev", now)
        history.record(old)
        history.record(new)
        self.assertEqual(
            await bounded(history.fetch("#dev", 10), "fetch"), replayed(new)
        )
        self.assertEqual(len(self.stored()), 2)
        self.clock.advance(PRUNE_INTERVAL)
        await bounded(gatherResults(watch.deferreds), "prune")
        self.assertEqual(watch.names()[-1:], ["_prune"])
        self.assertEqual(self.stored(), [("#dev", "message", "alice", None, "new")])
        self.clock.advance(HOUR)
        self.assertEqual(history.recent("#dev"), [])
        await bounded(history.prune(), "prune")
        self.assertEqual(self.stored(), [])

    async def test_prune_max_age_of_private_messages(self) -> None:
        """
        The age limit applies to private messages as to room messages:
        older ones are neither fetched nor left in the file once pruned.
        """
        history = self.open(max_age=HOUR, store_private=True)
        now = self.clock.seconds()
        old = wire.PrivateMessage("alice", "bob", "old", now - HOUR - 1)
        new = wire.PrivateMessage("bob", "alice", "new", now)
        history.record(old)
        history.record(new)
        self.assertEqual(
            await bounded(history.fetch_private("alice", "bob", 10), "fetch"),
            replayed(new),
        )
        await bounded(history.prune(), "prune")
        self.assertEqual(self.stored(), [(None, "private", "bob", "alice", "new")])
        self.clock.advance(HOUR + 1)
        self.assertEqual(
            await bounded(history.fetch_private("alice", "bob", 10), "fetch"), []
        )
        await bounded(history.prune(), "prune")
        self.assertEqual(self.stored(), [])

    # Private messages

    async def test_private_not_stored(self) -> None:
        """Without C{store_private}, private messages never reach the file."""
        history = self.open()
        history.record(wire.PrivateMessage("alice", "bob", "psst", START))
        history.record(say("alice", "hi", "#dev", START))
        self.assertEqual(
            await bounded(history.fetch_private("alice", "bob", 10), "fetch"), []
        )
        await self.close(history)
        self.assertEqual(self.stored(), [("#dev", "message", "alice", None, "hi")])

    async def test_private_stored(self) -> None:
        """
        With C{store_private}, a conversation is found from either side and
        whatever the case of the names, also after a restart.
        """
        history = self.open(store_private=True)
        conversation = [
            wire.PrivateMessage("alice", "bob", "one", START),
            wire.PrivateMessage("bob", "alice", "two", START + 1),
            wire.PrivateMessage("alice", "bob", "three", START + 2),
        ]
        other = wire.PrivateMessage("alice", "carol", "other", START + 3)
        for event in [*conversation, other]:
            history.record(event)
        for one, two in [("alice", "bob"), ("BOB", "Alice")]:
            self.assertEqual(
                await bounded(history.fetch_private(one, two, 10), "fetch"),
                replayed(*conversation),
            )
        history = await self.reopen(history, store_private=True)
        self.assertEqual(
            await bounded(history.fetch_private("bob", "alice", 2), "fetch"),
            replayed(*conversation[1:]),
        )
        self.assertEqual(
            await bounded(history.fetch_private("carol", "alice", 2), "fetch"),
            replayed(other),
        )
