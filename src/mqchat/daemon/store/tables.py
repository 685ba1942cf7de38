"""The small tables: meta, rooms and the outbox."""

from __future__ import annotations

import json
import sqlite3

from mqchat.daemon.store.connection import transaction
from mqchat.daemon.store.records import OutboxEntry, RoomRecord
from mqchat.daemon.store.staging import Staging


class Meta:
    """Key-value settings of the state dir: schema version, client id, send seq.

    A value set in a batch is written once at its end, however often it was set.
    """

    def __init__(self, db: sqlite3.Connection, staging: Staging) -> None:
        self._db = db
        self._staging = staging
        self._staged: list[tuple[str, str]] = []
        staging.register(self)

    def get(self, key: str) -> str | None:
        for k, value in reversed(self._staged):
            if k == key:
                return value
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        self._staged.append((key, value))
        self._staging.settle()

    # staged writes (mqchat.daemon.store.staging) ---------------------------
    def staged(self) -> bool:
        return bool(self._staged)

    def mark(self) -> int:
        return len(self._staged)

    def undo(self, mark: int) -> None:
        del self._staged[mark:]

    def write(self, db: sqlite3.Connection) -> None:
        if self._staged:
            db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                dict(self._staged).items(),
            )

    def written(self) -> None:
        self._staged.clear()

    forget = written


class Rooms:
    """Joined rooms, with their keys (derived, never the passphrase)."""

    def __init__(self, db: sqlite3.Connection, staging: Staging) -> None:
        self._db = db
        self._staging = staging

    def all(self) -> list[RoomRecord]:
        rows = self._db.execute(
            "SELECT name, cipher, legacy, weak, kdf, key_a, key_b, topic, joined_ms FROM rooms "
            "ORDER BY name"
        ).fetchall()
        return [
            RoomRecord(n, c, bool(lg), bool(w), json.loads(k), a, b, t, j)
            for n, c, lg, w, k, a, b, t, j in rows
        ]

    def save(self, room: RoomRecord) -> None:
        with transaction(self._db) as db:
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

    def delete(self, name: str) -> None:
        """Forget a room and what it still had to send (sent earlier in this batch too)."""
        self._staging.flush()
        with transaction(self._db) as db:
            db.execute("DELETE FROM rooms WHERE name = ?", (name,))
            db.execute("DELETE FROM outbox WHERE room = ?", (name,))


class Outbox:
    """Payloads sent but not yet acknowledged by the broker (PUBACK), oldest first."""

    def __init__(self, db: sqlite3.Connection, staging: Staging) -> None:
        self._db = db
        self._staging = staging
        self._staged: list[tuple[str, str, int, bytes]] = []
        staging.register(self)

    def add(self, entry: OutboxEntry) -> None:
        """Queue a payload; it gets its id (its place in the queue) when written."""
        self._staged.append((entry.room, entry.topic, entry.qos, entry.payload))
        self._staging.settle()

    def after(self, entry_id: int, limit: int) -> list[OutboxEntry]:
        """Up to ``limit`` entries with an id above ``entry_id``, oldest first."""
        self._staging.flush()
        rows = self._db.execute(
            "SELECT id, room, topic, qos, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (entry_id, limit),
        ).fetchall()
        return [OutboxEntry(*r) for r in rows]

    def room_of(self, entry_id: int) -> str | None:
        row = self._db.execute("SELECT room FROM outbox WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else str(row[0])

    def depth(self) -> int:
        self._staging.flush()
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def remove(self, entry_ids: list[int]) -> None:
        with transaction(self._db) as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in entry_ids])

    # staged writes (mqchat.daemon.store.staging) ---------------------------
    def staged(self) -> bool:
        return bool(self._staged)

    def mark(self) -> int:
        return len(self._staged)

    def undo(self, mark: int) -> None:
        del self._staged[mark:]

    def write(self, db: sqlite3.Connection) -> None:
        if self._staged:
            db.executemany(
                "INSERT INTO outbox (room, topic, qos, payload) VALUES (?, ?, ?, ?)", self._staged
            )

    def written(self) -> None:
        self._staged.clear()

    forget = written
