# -*- test-case-name: tests.test_history -*-
"""
What was said, kept for people who join later: in memory, or in SQLite.

The last messages of every room that exists are in memory, so that a user
who joins gets them at once and in order with what follows.  L{SqliteHistory}
also writes every message to a database, in batches, and reads it back
when someone asks for more; a room's last messages are read back only when
the room is made again (L{HistoryStore.load}), and let go of when it empties
(L{HistoryStore.forget}), so that memory holds the rooms that exist, not every
room ever used.  The batches are written
on the reactor's thread in SQLite's WAL mode, where a commit appends to the
log without waiting for the disk; what does wait (checkpoints, pruning,
reads) runs on a thread pool (C{twisted.enterprise.adbapi}).
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import stat
from collections import deque
from collections.abc import Iterable
from typing import Any, Final, Protocol

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from securemsg.core.limits import Limits
from securemsg.protocol import wire

#: Messages an SQLite history keeps per room by default (older ones are
#: deleted).
DEFAULT_MAX_COUNT: Final = 10_000

#: The schema version this code writes; see L{_MIGRATIONS}.
SCHEMA_VERSION: Final = 2

#: The statements that take a database from each version to the next.
_MIGRATIONS: Final = {
    # From version 0 (a new, empty database) to 1.
    0: [
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            room TEXT,
            room_key TEXT,
            kind TEXT NOT NULL,
            sender TEXT NOT NULL,
            recipient TEXT,
            text TEXT NOT NULL
        )""",
        "CREATE INDEX messages_by_room ON messages (room_key, id)",
        """CREATE INDEX messages_private ON messages (sender, recipient, id)
            WHERE room_key IS NULL""",
    ],
    # From 1 to 2: private messages belong to the pair of certificate
    # holders who exchanged them (see private_pair).  Those stored before
    # were looked up by bare name, which any guest could take: they keep
    # no pair, are never shown again, and age out.
    1: [
        "ALTER TABLE messages ADD COLUMN pair TEXT",
        "DROP INDEX messages_private",
        """CREATE INDEX messages_by_pair ON messages (pair, id)
            WHERE pair IS NOT NULL""",
    ],
}

#: How long new messages may wait in memory before they are written.
FLUSH_DELAY: Final = 0.2
#: How often the retention limits are applied to the database.
PRUNE_INTERVAL: Final = 60.0
#: How often the write-ahead log is copied into the database (on a thread).
CHECKPOINT_INTERVAL: Final = 10.0


class HistoryError(Exception):
    """The history database cannot be used; the message is one line."""


class HistoryStore(Protocol):
    """Where messages are kept."""

    def record(self, event: wire.Replayable) -> None:
        """Keep a room message, or a private one if private ones are kept."""

    def recent(self, room: str) -> list[wire.Replayable]:
        """The room's last messages kept in memory, oldest first."""

    def load(self, room: str) -> Deferred[None] | None:
        """
        Bring the room's last messages into memory, for L{recent}.

        @return: L{None} if they are there already; else a L{Deferred}
            that fires (never with a failure) once they are.
        """

    def forget(self, room: str) -> None:
        """Let go of the room's messages in memory: it has emptied."""

    def fetch(self, room: str, count: int) -> Deferred[list[wire.Replayable]]:
        """Up to C{count} of the room's last messages, oldest first."""

    def fetch_private(
        self, one: str, other: str, count: int
    ) -> Deferred[list[wire.Replayable]]:
        """
        Up to C{count} last private messages between two certificate
        holders' names.
        """

    def close(self) -> Deferred[None]:
        """Write what is pending and let go of any resources."""


def _room_key(room: str) -> str:
    return wire.name_key(room)


def private_pair(one: str, other: str) -> str:
    """
    The key of the private conversation between two names, the same from
    either side and whatever their case.

    Only conversations between certificate holders are kept (the chat
    decides, see L{securemsg.core.hub.ChatHub.whisper}), so these names are
    identities nobody else can take.
    """
    first, second = sorted((wire.name_key(one), wire.name_key(other)))
    return f"{first} {second}"


class MemoryHistory:
    """
    History in memory only: the last C{per_room} messages of each room, and
    as many private ones if C{store_private}.  Nothing survives a restart,
    and a room's messages are gone when it empties (L{forget}).

    @ivar max_age: messages older than this many seconds are not replayed
        (L{None}: no limit).
    """

    #: Whether rooms' messages are only kept in memory once L{load}ed (the
    #: others are in a database).
    _lazy = False

    def __init__(
        self,
        clock: IReactorTime,
        per_room: int = Limits.replay,
        *,
        max_age: float | None = None,
        store_private: bool = False,
    ) -> None:
        self.clock = clock
        self.per_room = per_room
        self.max_age = max_age
        self.store_private = store_private
        self._rooms: dict[str, deque[wire.Replayable]] = {}
        self._private: deque[wire.PrivateMessage] = deque(maxlen=max(per_room, 1) * 20)

    def _fresh(self, events: Iterable[wire.Replayable]) -> list[wire.Replayable]:
        if self.max_age is None:
            return list(events)
        oldest = self.clock.seconds() - self.max_age
        return [event for event in events if (event.time or 0) >= oldest]

    def _remember(self, event: wire.Replayable) -> None:
        if isinstance(event, wire.PrivateMessage):
            if self.store_private:
                self._private.append(event)
            return
        if event.room is None or self.per_room < 1:
            return
        key = _room_key(event.room)
        kept = self._rooms.get(key)
        if kept is None:
            if self._lazy:
                # Not loaded: the database has it, memory need not.
                return
            kept = self._rooms[key] = deque(maxlen=self.per_room)
        kept.append(event)

    def record(self, event: wire.Replayable) -> None:
        self._remember(event)

    def recent(self, room: str) -> list[wire.Replayable]:
        return self._fresh(self._rooms.get(_room_key(room), ()))

    def load(self, room: str) -> Deferred[None] | None:
        return None

    def forget(self, room: str) -> None:
        self._rooms.pop(_room_key(room), None)

    def fetch(self, room: str, count: int) -> Deferred[list[wire.Replayable]]:
        return succeed(self.recent(room)[-count:])

    def fetch_private(
        self, one: str, other: str, count: int
    ) -> Deferred[list[wire.Replayable]]:
        pair = private_pair(one, other)
        found = [
            event
            for event in self._private
            if private_pair(event.sender, event.recipient) == pair
        ]
        return succeed(self._fresh(found)[-count:])

    def close(self) -> Deferred[None]:
        return succeed(None)


def _row(event: wire.Replayable) -> tuple[Any, ...]:
    if isinstance(event, wire.PrivateMessage):
        return (
            event.time,
            None,
            None,
            "private",
            event.sender,
            event.recipient,
            event.text,
            private_pair(event.sender, event.recipient),
        )
    kind = "message" if isinstance(event, wire.Message) else "action"
    room = event.room or ""
    return (
        event.time,
        room,
        _room_key(room),
        kind,
        event.sender,
        None,
        event.text,
        None,
    )


def _event(row: tuple[Any, ...]) -> wire.Replayable:
    when, room, kind, sender, recipient, text = row
    if kind == "private":
        return wire.PrivateMessage(sender, recipient, text, when, True)
    make = wire.Message if kind == "message" else wire.Action
    return make(sender, text, room, when, True)


def _create_private(path: str) -> None:
    """
    Create the database file, if it does not exist yet, readable and
    writable by its owner only.

    SQLite would create it with the umask's mode (0644 under the usual
    022): anyone on the machine could read the history.  Its write-ahead
    log and shared-memory files take the database file's mode (SQLite sees
    to it), so they are private too.  Creating the file here with C{O_EXCL}
    and the mode given to C{open(2)} means it never exists with looser
    permissions, not even for a moment.  An empty file is an empty database
    to SQLite.
    """
    if path == ":memory:" or path.startswith("file:"):
        return
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        # It exists (kept as it is: see history_file_warnings), or cannot
        # be made, which SQLite will say in its own words.
        return
    os.close(descriptor)


def history_file_warnings(path: str) -> list[str]:
    """
    Warnings about the history database's permissions: one line for each
    of the database and its write-ahead files that its group or others may
    read or write.

    @raise OSError: when the database cannot be examined.
    """
    if os.name == "nt":  # pragma: no cover
        return []
    warnings = []
    for name in (path, path + "-wal", path + "-shm"):
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            warnings.append(
                f"history database file {name} is accessible by group or others"
                f" (mode {mode:04o}): it holds what was said; run:"
                f" chmod 600 {shlex.quote(name)}"
            )
    return warnings


def _open_checked(path: str) -> sqlite3.Connection:
    """
    Open the database (creating it private to its owner), make or migrate
    its schema, and prove it usable.

    @raise HistoryError: for a corrupt, locked, unwritable or too new file.
    """
    _create_private(path)
    try:
        connection = sqlite3.connect(path, timeout=0.5, isolation_level=None)
    except sqlite3.Error as error:
        raise HistoryError(f"cannot open history database {path}: {error}") from None
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"history database {path} has schema version {version}, newer than"
                f" this securemsg understands ({SCHEMA_VERSION}); upgrade securemsg"
            )
        if connection.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise HistoryError(
                f"history database {path} is damaged; move it away to start afresh"
            )
        # Taking the write lock now proves nobody else holds it.
        connection.execute("BEGIN IMMEDIATE")
        # One transaction: a migration is done completely or not at all.
        while version < SCHEMA_VERSION:
            for statement in _MIGRATIONS[version]:
                connection.execute(statement)
            version += 1
            connection.execute(f"PRAGMA user_version = {version}")
        connection.execute("COMMIT")
    except sqlite3.OperationalError as error:
        connection.close()
        if _busy(error):
            raise HistoryError(
                f"history database {path} is locked by another program"
                " (is another securemsg using it?)"
            ) from None
        raise HistoryError(f"cannot use history database {path}: {error}") from None
    except sqlite3.DatabaseError as error:
        connection.close()
        raise HistoryError(
            f"history database {path} is not a usable SQLite database ({error});"
            " move it away to start afresh"
        ) from None
    except HistoryError:
        connection.close()
        raise
    return connection


class SqliteHistory(MemoryHistory):
    """
    History kept in an SQLite database as well as in memory.

    Open it with L{SqliteHistory.open}, which checks the file at once (so a
    server with a bad database stops at start with one line).
    """

    log = Logger()
    _lazy = True

    def __init__(
        self,
        pool: adbapi.ConnectionPool,
        clock: IReactorTime,
        per_room: int = Limits.replay,
        *,
        max_count: int = DEFAULT_MAX_COUNT,
        max_age: float | None = None,
        store_private: bool = False,
        writer: sqlite3.Connection | None = None,
    ) -> None:
        """
        @param writer: a connection to the database in WAL mode, used on the
            reactor thread to write each batch; without one, batches are
            written on the pool's thread.
        """
        super().__init__(clock, per_room, max_age=max_age, store_private=store_private)
        self.pool = pool
        self.writer = writer
        self.max_count = max_count
        # Rooms whose last messages are being read, with who waits for them.
        self._loading: dict[str, list[Deferred[None]]] = {}
        self._pending: list[tuple[Any, ...]] = []
        #: Rows written to the database so far, for the metrics.
        self.rows_written = 0
        self._flush: IDelayedCall | None = None
        self._writing: Deferred[None] = succeed(None)
        self._pruning = LoopingCall(self.prune)
        self._pruning.clock = clock
        self._checkpointing = LoopingCall(self.checkpoint)
        self._checkpointing.clock = clock

    @classmethod
    def open(
        cls,
        path: str,
        reactor: Any,
        per_room: int = Limits.replay,
        *,
        max_count: int = DEFAULT_MAX_COUNT,
        max_age: float | None = None,
        store_private: bool = False,
        preload: Iterable[str] = (),
    ) -> SqliteHistory:
        """
        Open (or create, readable by its owner only) the database at
        C{path}, and load the last messages of the rooms in C{preload} (the
        default room, which always exists); other rooms' are loaded when
        they are made (L{load}).  Log a warning if others may read an
        existing database.

        @raise HistoryError: if the database cannot be used.
        """
        connection = _open_checked(path)
        for warning in history_file_warnings(path):
            cls.log.warn("{problem}", problem=warning)
        oldest = 0.0 if max_age is None else reactor.seconds() - max_age
        try:
            loaded = {
                _room_key(room): connection.execute(
                    _LAST_OF_ROOM, (_room_key(room), oldest, per_room)
                ).fetchall()
                for room in preload
            }
        except sqlite3.Error:
            connection.close()
            # Damage that the quick check does not see, such as text that is
            # not UTF-8: one line too, not a traceback.
            raise HistoryError(
                f"history database {path} is damaged; move it away to start afresh"
            ) from None
        writer = connection if _write_ahead(connection) else None
        if writer is None:
            connection.close()
        pool = adbapi.ConnectionPool(
            "sqlite3",
            path,
            check_same_thread=False,
            timeout=5.0,
            cp_min=1,
            cp_max=1,
            cp_reactor=reactor,
        )
        history = cls(
            pool,
            reactor,
            per_room,
            max_count=max_count,
            max_age=max_age,
            store_private=store_private,
            writer=writer,
        )
        if per_room > 0:
            for key, rows in loaded.items():
                history._rooms[key] = deque(
                    (_event(row) for row in reversed(rows)), maxlen=per_room
                )
        history._pruning.start(PRUNE_INTERVAL, now=False)
        if writer is not None:
            history._checkpointing.start(CHECKPOINT_INTERVAL, now=False)
        return history

    def record(self, event: wire.Replayable) -> None:
        if isinstance(event, wire.PrivateMessage) and not self.store_private:
            return
        self._remember(event)
        self._pending.append(_row(event))
        if self._flush is None:
            self._flush = self.clock.callLater(FLUSH_DELAY, self.flush)

    def flush(self) -> Deferred[None]:
        """
        Write what is pending, in one transaction: on this thread in WAL
        mode (see L{_write_here}), else on the pool's thread.
        """
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        rows, self._pending = self._pending, []
        if rows and self.writer is not None:
            self._write_here(rows)
        elif rows:
            writing: Deferred[None] = self.pool.runInteraction(_insert, rows)
            writing.addCallback(self._written, len(rows))
            writing.addErrback(
                lambda failure: self.log.failure(
                    "could not write {count} messages to the history",
                    failure,
                    count=len(rows),
                )
            )
            self._writing = writing
        # A Deferred of its own for each caller: fetch chains its query onto
        # it, so handing out self._writing itself would let one caller's
        # callbacks change (or delay) what every later caller gets.
        written: Deferred[None] = Deferred()
        self._writing.addBoth(lambda _: written.callback(None))
        return written

    @property
    def rows_pending(self) -> int:
        """Rows waiting to be written to the database."""
        return len(self._pending)

    def _written(self, result: None, count: int) -> None:
        self.rows_written += count

    def _write_here(self, rows: list[tuple[Any, ...]]) -> None:
        """
        Write C{rows} on this (the reactor's) thread.

        A thread of the pool would hardly ever run while the reactor is
        busy: CPython hands the GIL to a waiting thread only when its holder
        kept it a whole switch interval, and a reactor lets go of it at
        every system call (C{bench/history_lag.py}).  In WAL mode with
        C{synchronous=NORMAL} a commit appends to the log without waiting
        for the disk; the checkpoints, which do wait, run on the pool.
        """
        assert self.writer is not None
        try:
            self.writer.execute("BEGIN IMMEDIATE")
            _insert(self.writer, rows)
            self.writer.execute("COMMIT")
            self.rows_written += len(rows)
        except sqlite3.Error as error:
            if self.writer.in_transaction:
                self.writer.execute("ROLLBACK")
            if _busy(error):
                # A prune or checkpoint holds the database: try again later.
                self._pending[:0] = rows
                if self._flush is None:
                    self._flush = self.clock.callLater(FLUSH_DELAY, self.flush)
                return
            self.log.error(
                "could not write {count} messages to the history: {error}",
                count=len(rows),
                error=error,
            )

    def checkpoint(self) -> Deferred[None]:
        """Copy the write-ahead log into the database, on the pool's thread."""
        checkpointing: Deferred[None] = self.pool.runOperation(
            "PRAGMA wal_checkpoint(PASSIVE)"
        )
        checkpointing.addErrback(
            lambda failure: self.log.failure(
                "could not checkpoint the history", failure
            )
        )
        return checkpointing

    def prune(self) -> Deferred[None]:
        """Apply the retention limits (count per room, age) in the database."""
        oldest = None if self.max_age is None else self.clock.seconds() - self.max_age
        pruning: Deferred[None] = self.pool.runInteraction(
            _prune, self.max_count, oldest
        )
        pruning.addErrback(
            lambda failure: self.log.failure("could not prune the history", failure)
        )
        return pruning

    def load(self, room: str) -> Deferred[None] | None:
        """
        Read the room's last messages (after writing what is pending, so
        none is missed) on the pool's thread, and keep them in memory.

        Nobody can say anything in a room while it is being loaded: it is
        loaded when it is made, before anyone is in it (see
        L{securemsg.core.hub.ChatHub.enter}).
        """
        key = _room_key(room)
        if self.per_room < 1 or key in self._rooms:
            return None
        waiting = self._loading.get(key)
        if waiting is None:
            waiting = self._loading[key] = []
            oldest = self._oldest()
            reading = self.flush().addCallback(
                lambda _: self._query(_LAST_OF_ROOM, (key, oldest, self.per_room))
            )
            reading.addCallbacks(
                self._loaded,
                self._not_loaded,
                callbackArgs=(key,),
                errbackArgs=(key,),
            )
        loaded: Deferred[None] = Deferred()
        waiting.append(loaded)
        return loaded

    def _loaded(self, events: list[wire.Replayable], key: str) -> None:
        self._rooms[key] = deque(events, maxlen=self.per_room)
        for waiter in self._loading.pop(key, []):
            waiter.callback(None)

    def _not_loaded(self, failure: Any, key: str) -> None:
        # The room works all the same, without its past.
        self.log.failure("could not read the history of {room}", failure, room=key)
        self._loaded([], key)

    def _oldest(self) -> float:
        return 0.0 if self.max_age is None else self.clock.seconds() - self.max_age

    def fetch(self, room: str, count: int) -> Deferred[list[wire.Replayable]]:
        kept = self.recent(room)
        if count <= len(kept):
            return succeed(kept[-count:])
        oldest = self._oldest()
        return self.flush().addCallback(
            lambda _: self._query(_LAST_OF_ROOM, (_room_key(room), oldest, count))
        )

    def fetch_private(
        self, one: str, other: str, count: int
    ) -> Deferred[list[wire.Replayable]]:
        if not self.store_private:
            return succeed([])
        oldest = 0.0 if self.max_age is None else self.clock.seconds() - self.max_age
        return self.flush().addCallback(
            lambda _: self._query(
                "SELECT time, room, kind, sender, recipient, text FROM messages"
                " WHERE pair = ? AND time >= ? ORDER BY id DESC LIMIT ?",
                (private_pair(one, other), oldest, count),
            )
        )

    def _query(
        self, sql: str, arguments: tuple[Any, ...]
    ) -> Deferred[list[wire.Replayable]]:
        rows: Deferred[list[tuple[Any, ...]]] = self.pool.runQuery(sql, arguments)
        return rows.addCallback(lambda found: [_event(row) for row in reversed(found)])

    def close(self) -> Deferred[None]:
        for loop in (self._pruning, self._checkpointing):
            if loop.running:
                loop.stop()
        return self.flush().addBoth(lambda _: self._close_connections())

    def _close_connections(self) -> None:
        self.pool.close()
        if self.writer is not None:
            # The last connection to close copies the write-ahead log into
            # the database and removes it.
            self.writer.close()
            self.writer = None


#: A room's last messages (newest first), not older than a time.
_LAST_OF_ROOM: Final = (
    "SELECT time, room, kind, sender, recipient, text FROM messages"
    " WHERE room_key = ? AND time >= ? ORDER BY id DESC LIMIT ?"
)

#: Rows per INSERT statement: 8 parameters each, well under SQLite's
#: limit of 32,766 per statement.
_ROWS_PER_INSERT: Final = 256
_INSERT_ROWS: Final = (
    "INSERT INTO messages"
    " (time, room, room_key, kind, sender, recipient, text, pair) VALUES "
)


def _insert(cursor: Any, rows: list[tuple[Any, ...]]) -> None:
    # Many rows per statement: half the CPU of an executemany of the same
    # rows, which steps the statement once per row.
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        part = rows[start : start + _ROWS_PER_INSERT]
        # Only placeholders are put together here; the values are bound.
        placeholders = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(part))
        statement = _INSERT_ROWS + placeholders
        cursor.execute(statement, [value for row in part for value in row])


def _write_ahead(connection: sqlite3.Connection) -> bool:
    """
    Put the database in WAL mode, for writes that do not wait for the disk;
    false where the file system cannot have it (the mode stays as it was).
    """
    try:
        (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(mode).lower() != "wal":
            return False
        connection.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints run on the pool (they wait for the disk), and a write
        # that finds the database busy is tried again later, not waited for.
        connection.execute("PRAGMA wal_autocheckpoint=0")
        connection.execute("PRAGMA busy_timeout=0")
    except sqlite3.Error:
        return False
    return True


def _busy(error: sqlite3.Error) -> bool:
    """Whether C{error} says another connection holds the database."""
    primary = getattr(error, "sqlite_errorcode", 0) & 0xFF
    return primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _prune(cursor: Any, max_count: int, oldest: float | None) -> None:
    if oldest is not None:
        cursor.execute("DELETE FROM messages WHERE time < ?", (oldest,))
    cursor.execute(
        "DELETE FROM messages WHERE id IN ("
        " SELECT id FROM ("
        "  SELECT id, ROW_NUMBER() OVER (PARTITION BY room_key ORDER BY id DESC) AS n"
        "  FROM messages"
        " ) WHERE n > ?)",
        (max_count,),
    )


__all__ = [
    "SCHEMA_VERSION",
    "HistoryError",
    "HistoryStore",
    "MemoryHistory",
    "SqliteHistory",
    "history_file_warnings",
    "private_pair",
]
