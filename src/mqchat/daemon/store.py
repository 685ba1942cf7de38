"""The message store: SQLite in the state dir, WAL mode (docs/store.md).

One connection, used only from the daemon's event loop thread. Every method
that changes state commits before it returns, so what a caller was told is
stored survives a killed daemon.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mqchat.errors import StoreError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CHECKPOINT_INTERVAL_S = 1.0
REPLAY_WINDOW = 4096
"""Per-sender sequence numbers this far below the highest seen are too old."""
SEEN_ID_DAYS = 30
HISTORY_PAGE_MESSAGES = 1000
HISTORY_PAGE_BYTES = 1024 * 1024
"""A history page ends after the message that takes its text past this."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY,
    cipher TEXT NOT NULL,
    legacy INTEGER NOT NULL,
    weak INTEGER NOT NULL,
    kdf TEXT NOT NULL,
    key_a BLOB NOT NULL,
    key_b BLOB,
    topic TEXT NOT NULL,
    joined_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    sender TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    verified INTEGER NOT NULL,
    own INTEGER NOT NULL,
    legacy INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    topic TEXT NOT NULL,
    qos INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_ids (id BLOB PRIMARY KEY, at_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen_seqs (
    sender_key BLOB NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (sender_key, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sender_high (sender_key BLOB PRIMARY KEY, seq INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sender_keys (
    room TEXT NOT NULL,
    name TEXT NOT NULL,
    sender_key BLOB NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (room, name, sender_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pins (
    room TEXT NOT NULL,
    name TEXT NOT NULL,
    sender_key BLOB NOT NULL,
    pending_key BLOB,
    PRIMARY KEY (room, name)
) WITHOUT ROWID;
"""


class Checkpointer(threading.Thread):
    """Copies the WAL into the database now and then, off the event loop.

    PASSIVE checkpoints never block the daemon's own reads and writes; this
    thread's connection only ever checkpoints.
    """

    def __init__(self, path: Path, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        super().__init__(name="sqlite-checkpoint", daemon=True)
        self._path = path
        self._interval = interval_s
        self._stopping = threading.Event()

    def run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, timeout=1.0)
        try:
            while not self._stopping.wait(self._interval):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.debug("checkpoint skipped: %s", exc)
        finally:
            db.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(5.0)


@dataclass(frozen=True)
class RoomRecord:
    name: str
    cipher: str
    legacy: bool
    weak: bool
    kdf: dict[str, Any]
    key_a: bytes
    key_b: bytes | None
    topic: str
    joined_ms: int

    def __repr__(self) -> str:
        return f"RoomRecord(name={self.name!r}, cipher={self.cipher!r}, legacy={self.legacy})"


@dataclass(frozen=True)
class StoredMessage:
    room: str
    seq: int
    id: str
    ts_ms: int
    sender: str
    fingerprint: str
    verified: bool
    own: bool
    legacy: bool
    text: str


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    room: str
    topic: str
    qos: int
    payload: bytes


_MSG_COLS = "room, seq, id, ts_ms, sender, fingerprint, verified, own, legacy, text"


def _message(row: tuple[Any, ...]) -> StoredMessage:
    room, seq, mid, ts, sender, fp, verified, own, legacy, text = row
    return StoredMessage(
        room, seq, mid, ts, sender, fp, bool(verified), bool(own), bool(legacy), text
    )


class Store:
    """Rooms, messages (per-room seq), outbox, replay memory and pinned keys."""

    def __init__(self, path: Path, retention: int) -> None:
        self.path = path
        self.retention = retention
        try:
            self._db = self._open(path)
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreError(f"cannot use the store {path}: {reason}") from None
        self._checkpointer = Checkpointer(path)
        self._checkpointer.start()

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            Store._configure(db, path)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _configure(db: sqlite3.Connection, path: Path) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process; only power loss can
        # undo the last commits (docs/store.md says so).
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=OFF")
        # A checkpoint fsyncs the database: inside a commit on the event loop it
        # stalled every few hundred messages by ~20 ms (benchmarks/latency.py).
        # The Checkpointer thread does it instead.
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.executescript(_SCHEMA)
        db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
        )
        # Reading every table once now turns a damaged file into a clear error at
        # start-up rather than a failure in the middle of serving.
        for table in ("meta", "rooms", "outbox", "pins"):
            db.execute(f"SELECT * FROM {table}").fetchall()
        db.execute("SELECT MAX(seq) FROM messages").fetchone()
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    @staticmethod
    def is_failure(exc: BaseException) -> bool:
        """True when ``exc`` says the store itself failed (disk, lock, damage), so
        trying again later may succeed; False for a refused value, which will not."""
        if isinstance(exc, OSError | MemoryError | sqlite3.OperationalError):
            return True
        refused = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)
        return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, refused)

    def close(self) -> None:
        self._checkpointer.stop()
        self._db.close()  # the last connection to close checkpoints what is left

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing. Nested inside another, it is a savepoint: the outer
        commit makes it durable, and its own failure undoes only itself."""
        if self._db.in_transaction:
            self._db.execute("SAVEPOINT part")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK TO part")
                self._db.execute("RELEASE part")
                raise
            self._db.execute("RELEASE part")
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # meta -------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # rooms ------------------------------------------------------------
    def rooms(self) -> list[RoomRecord]:
        rows = self._db.execute(
            "SELECT name, cipher, legacy, weak, kdf, key_a, key_b, topic, joined_ms FROM rooms "
            "ORDER BY name"
        ).fetchall()
        return [
            RoomRecord(n, c, bool(lg), bool(w), json.loads(k), a, b, t, j)
            for n, c, lg, w, k, a, b, t, j in rows
        ]

    def save_room(self, room: RoomRecord) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO rooms VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    room.name,
                    room.cipher,
                    room.legacy,
                    room.weak,
                    json.dumps(room.kdf),
                    room.key_a,
                    room.key_b,
                    room.topic,
                    room.joined_ms,
                ),
            )

    def delete_room(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM rooms WHERE name = ?", (name,))
            db.execute("DELETE FROM outbox WHERE room = ?", (name,))

    def last_seq(self, room: str) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM messages WHERE room = ?", (room,)).fetchone()
        return int(row[0] or 0)

    # messages ---------------------------------------------------------
    def _insert_message(self, db: sqlite3.Connection, m: StoredMessage) -> None:
        db.execute(
            f"INSERT INTO messages ({_MSG_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m.room,
                m.seq,
                m.id,
                m.ts_ms,
                m.sender,
                m.fingerprint,
                m.verified,
                m.own,
                m.legacy,
                m.text,
            ),
        )
        # Every insert, so a tail never shows more than ``retention`` messages;
        # it is one seek on the primary key, and removes what a lowered
        # retention left behind too.
        if m.seq > self.retention:
            db.execute(
                "DELETE FROM messages WHERE room = ? AND seq <= ?",
                (m.room, m.seq - self.retention),
            )

    def history(
        self, room: str, *, limit: int | None, since: int | None
    ) -> tuple[list[StoredMessage], bool]:
        """One page of messages, oldest first, and whether more follow it.

        With ``since``: the messages after it (at most ``limit``); without: the
        last ``limit`` (all if None). A page holds at most HISTORY_PAGE_MESSAGES
        messages and ends after the one that takes its text past
        HISTORY_PAGE_BYTES, so memory does not grow with a room's history; the
        caller asks again with ``since`` = the last seq it got.
        """
        if since is None:
            since = self._start_of_last(room, limit)
        wanted = HISTORY_PAGE_MESSAGES if limit is None else min(limit, HISTORY_PAGE_MESSAGES)
        rows = self._db.execute(
            f"SELECT {_MSG_COLS} FROM messages WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?",
            (room, since, wanted + 1),
        )
        page: list[StoredMessage] = []
        size = 0
        for row in rows:
            if len(page) == wanted or size > HISTORY_PAGE_BYTES:
                return page, True
            message = _message(row)
            page.append(message)
            size += len(message.text) + len(message.sender) + 128
        return page, False

    def _start_of_last(self, room: str, limit: int | None) -> int:
        """The seq just before the last ``limit`` messages of a room (0: from the start)."""
        if limit is None:
            return 0
        if limit == 0:
            return self.last_seq(room)
        row = self._db.execute(
            "SELECT seq FROM messages WHERE room = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (room, limit - 1),
        ).fetchone()
        return 0 if row is None else int(row[0]) - 1

    def count_messages(self, room: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM messages WHERE room = ?", (room,)).fetchone()
        return int(row[0])

    # sending ----------------------------------------------------------
    def record_send(
        self,
        *,
        message: StoredMessage,
        entry: OutboxEntry,
        seq_key: str,
        sender_seq: int,
        id_bytes: bytes,
        now_ms: int,
        sender_key: bytes | None,
    ) -> int:
        """Store an own message and its outbox entry at once; return the outbox id."""
        with self.transaction() as db:
            self._insert_message(db, message)
            cur = db.execute(
                "INSERT INTO outbox (room, topic, qos, payload) VALUES (?, ?, ?, ?)",
                (entry.room, entry.topic, entry.qos, entry.payload),
            )
            db.execute("INSERT OR IGNORE INTO seen_ids VALUES (?, ?)", (id_bytes, now_ms))
            if sender_key is not None:
                # Our own (key, seq) too: a replay of our message after its id
                # left the seen-id memory is still refused.
                self._mark_seq(db, sender_key, sender_seq)
            self.set_meta(seq_key, str(sender_seq))
            return int(cur.lastrowid or 0)

    def outbox_after(self, entry_id: int, limit: int) -> list[OutboxEntry]:
        """Up to ``limit`` outbox entries with an id above ``entry_id``, oldest first."""
        rows = self._db.execute(
            "SELECT id, room, topic, qos, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (entry_id, limit),
        ).fetchall()
        return [OutboxEntry(*r) for r in rows]

    def outbox_room(self, entry_id: int) -> str | None:
        row = self._db.execute("SELECT room FROM outbox WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else str(row[0])

    def outbox_depth(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def remove_outbox(self, entry_ids: list[int]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in entry_ids])

    # receiving --------------------------------------------------------
    def is_seen(self, id_bytes: bytes) -> bool:
        return (
            self._db.execute("SELECT 1 FROM seen_ids WHERE id = ?", (id_bytes,)).fetchone()
            is not None
        )

    def is_replayed_seq(self, sender_key: bytes, seq: int) -> bool:
        """True when (sender, seq) was seen, or is older than the replay window."""
        row = self._db.execute(
            "SELECT seq FROM sender_high WHERE sender_key = ?", (sender_key,)
        ).fetchone()
        if row is not None and seq <= int(row[0]) - REPLAY_WINDOW:
            return True
        return (
            self._db.execute(
                "SELECT 1 FROM seen_seqs WHERE sender_key = ? AND seq = ?", (sender_key, seq)
            ).fetchone()
            is not None
        )

    def record_received(
        self,
        *,
        message: StoredMessage,
        id_bytes: bytes,
        now_ms: int,
        sender_key: bytes | None,
        sender_seq: int | None,
    ) -> None:
        with self.transaction() as db:
            self._insert_message(db, message)
            db.execute("INSERT OR IGNORE INTO seen_ids VALUES (?, ?)", (id_bytes, now_ms))
            if sender_key is not None and sender_seq is not None:
                self._mark_seq(db, sender_key, sender_seq)

    @staticmethod
    def _mark_seq(db: sqlite3.Connection, sender_key: bytes, seq: int) -> None:
        db.execute("INSERT OR IGNORE INTO seen_seqs VALUES (?, ?)", (sender_key, seq))
        db.execute(
            "INSERT INTO sender_high VALUES (?, ?) ON CONFLICT(sender_key) "
            "DO UPDATE SET seq = MAX(seq, excluded.seq)",
            (sender_key, seq),
        )

    def prune_replay_memory(self, now_ms: int) -> None:
        with self.transaction() as db:
            db.execute(
                "DELETE FROM seen_ids WHERE at_ms < ?", (now_ms - SEEN_ID_DAYS * 86_400_000,)
            )
            db.execute(
                "DELETE FROM seen_seqs WHERE seq <= (SELECT h.seq FROM sender_high h "
                "WHERE h.sender_key = seen_seqs.sender_key) - ?",
                (REPLAY_WINDOW,),
            )

    # pins -------------------------------------------------------------
    def pin(self, room: str, name: str) -> tuple[bytes, bytes | None] | None:
        row = self._db.execute(
            "SELECT sender_key, pending_key FROM pins WHERE room = ? AND name = ?", (room, name)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def set_pin(self, room: str, name: str, key: bytes) -> None:
        self._db.execute(
            "INSERT INTO pins VALUES (?, ?, ?, NULL) ON CONFLICT(room, name) "
            "DO UPDATE SET sender_key = excluded.sender_key, pending_key = NULL",
            (room, name, key),
        )

    def saw_key(self, room: str, name: str, key: bytes, now_ms: int) -> None:
        """Remember that ``key`` spoke under ``name``: `trust` chooses among these."""
        self._db.execute(
            "INSERT INTO sender_keys VALUES (?, ?, ?, ?, ?, 1) "
            "ON CONFLICT(room, name, sender_key) DO UPDATE SET "
            "last_ms = MAX(last_ms, excluded.last_ms), messages = messages + 1",
            (room, name, key, now_ms, now_ms),
        )

    def keys_seen(self, room: str, name: str) -> list[tuple[bytes, int, int, int]]:
        """(key, first seen ms, last seen ms, messages) of every key seen under ``name``."""
        rows = self._db.execute(
            "SELECT sender_key, first_ms, last_ms, messages FROM sender_keys "
            "WHERE room = ? AND name = ? ORDER BY first_ms",
            (room, name),
        ).fetchall()
        return [(bytes(k), int(f), int(la), int(m)) for k, f, la, m in rows]

    def set_pending(self, room: str, name: str, key: bytes) -> None:
        self._db.execute(
            "UPDATE pins SET pending_key = ? WHERE room = ? AND name = ?", (key, room, name)
        )
