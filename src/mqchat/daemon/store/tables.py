"""The small tables: meta, rooms and the outbox."""

from __future__ import annotations

import bisect
import json
import sqlite3
from collections.abc import Callable
from typing import Any, NamedTuple

from mqchat.daemon.store.connection import StoreConnection, transaction
from mqchat.daemon.store.records import OutboxEntry, RoomRecord
from mqchat.daemon.store.staging import StagedRows, StagedStatements, Staging


class Meta(StagedRows):
    """Key-value settings of the state dir: schema version, client id, send seq.

    A value set in a batch is written once at its end, however often it was set.
    """

    def get(self, key: str) -> str | None:
        for k, value in reversed(self._staged):
            if k == key:
                return str(value)
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        self._staged.append((key, value))
        self._staging.settle()

    # staged writes (mqchat.daemon.store.staging) ---------------------------

    def write(self, db: sqlite3.Connection) -> None:
        if self._staged:
            db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                dict(self._staged).items(),
            )


class Rooms(StagedStatements):
    """Joined rooms, with their keys (derived, never the passphrase)."""

    def __init__(
        self, db: StoreConnection, staging: Staging, *, on_delete: Callable[[], None]
    ) -> None:
        """``on_delete``: a room's outbox entries are to be deleted (Outbox.forget_room)."""
        super().__init__(db, staging)
        self._on_delete = on_delete

    def all(self) -> list[RoomRecord]:
        rows = (
            self._reading()
            .execute(
                "SELECT name, cipher, legacy, weak, kdf, key_a, key_b, topic, joined_ms "
                "FROM rooms ORDER BY name"
            )
            .fetchall()
        )
        return [
            RoomRecord(n, c, bool(lg), bool(w), json.loads(k), a, b, t, j)
            for n, c, lg, w, k, a, b, t, j in rows
        ]

    def save(self, room: RoomRecord) -> None:
        self._stage(
            (
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
        )

    def delete(self, name: str) -> None:
        """Forget a room and what it still had to send (sent earlier in this batch too:
        what is staged is written first, so the deletes find it)."""
        self._staging.flush()
        self._stage(
            ("DELETE FROM rooms WHERE name = ?", (name,)),
            ("DELETE FROM outbox WHERE room = ?", (name,)),
            ("DELETE FROM sent WHERE room = ?", (name,)),
            *[(f"DELETE FROM {t} WHERE room = ?", (name,)) for t in _GAP_TABLES],
        )
        self._on_delete()


_GAP_TABLES = ("gap_streams", "gap_senders", "held")


_INSERT_OUTBOX = "INSERT INTO outbox (room, topic, qos, payload, kind) VALUES (?, ?, ?, ?, ?)"


class Outbox(StagedRows):
    """What is sent but not yet acknowledged by the broker (PUBACK), oldest first:
    payloads, and version 2 records that are sealed into batches as they go."""

    def __init__(self, db: StoreConnection, staging: Staging) -> None:
        super().__init__(db, staging)
        self._tail = WrittenTail()
        self._pending: list[OutboxEntry] = []
        """The rows this batch's write added, with their ids, kept once all is written."""

    additions = 0
    """Entries ever added (rolled back ones too): while it stays the same, a reader
    that has read to the end knows, without a query, that nothing new is there."""

    def add(self, entry: OutboxEntry) -> None:
        """Queue a payload; it gets its id (its place in the queue) when written."""
        self.additions += 1
        self._staged.append(entry[1:])  # room, topic, qos, payload, kind: the row
        self._staging.settle()

    def after(self, entry_id: int, limit: int) -> list[OutboxEntry]:
        """Up to ``limit`` entries with an id above ``entry_id``, oldest first.

        From the rows this connection wrote last when they hold every row above
        ``entry_id`` (the outbox window reads what was just sent: issue 24), else
        from the store."""
        self._staging.flush()
        tail = self._tail
        if tail.covers(entry_id):
            return tail.after(entry_id, limit)
        rows = self._db.execute(
            "SELECT id, room, topic, qos, payload, kind FROM outbox WHERE id > ? "
            "ORDER BY id LIMIT ?",
            (entry_id, limit),
        ).fetchall()
        return [OutboxEntry(*r) for r in rows]

    def room_of(self, entry_id: int) -> str | None:
        row = self._db.execute("SELECT room FROM outbox WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else str(row[0])

    def waiting(self, room: str) -> bool:
        """Whether a text of ``room`` still waits to be sent."""
        self._staging.flush()
        row = self._db.execute(
            "SELECT 1 FROM outbox WHERE room = ? AND kind = 1 LIMIT 1", (room,)
        ).fetchone()
        return row is not None

    def depth(self) -> int:
        self._staging.flush()
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def remove(self, entry_ids: list[int]) -> None:
        with transaction(self._db) as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in entry_ids])
        self._tail.remove(entry_ids)

    def forget_room(self) -> None:
        """A room's entries are to be deleted (``Rooms.delete``), unless its part fails:
        the store alone knows which, so reads go to it until new rows are written."""
        self._tail.clear()

    # staged writes (mqchat.daemon.store.staging) ---------------------------

    def write(self, db: sqlite3.Connection) -> None:
        self._pending = []
        if not self._staged:
            return
        last = None
        if len(self._staged) == 1:  # a lone message: its id comes with the insert
            last = db.execute(_INSERT_OUTBOX, self._staged[0]).lastrowid
        else:
            db.executemany(_INSERT_OUTBOX, self._staged)
        if last is None:
            # One connection writes, and AUTOINCREMENT numbers a statement's rows in
            # a row: the last id tells every id.
            (last,) = db.execute("SELECT last_insert_rowid()").fetchone()
        first = last - len(self._staged) + 1
        self._pending = [OutboxEntry(first + i, *row) for i, row in enumerate(self._staged)]

    def written(self) -> None:
        super().written()
        self._tail.extend(self._pending)
        self._pending = []

    def forget(self) -> None:
        """The batch did not commit: what it wrote is not in the store."""
        super().written()
        self._pending = []
        self._tail.clear()


class WrittenTail:
    """The outbox's newest rows as this connection wrote them (ids in order, with
    the gaps that removals left), and the id from which it holds every row: nobody
    else writes the outbox, so every row at or above ``start`` is here.

    It holds what the outbox window has not read yet: a read lets go of the rows it
    read past, and it keeps at most LIMIT_BYTES of payloads (a window that starts
    over, or rows past the bound, are read from the store)."""

    LIMIT_BYTES = 1024 * 1024

    def __init__(self) -> None:
        self._rows: list[OutboxEntry] = []
        self._ids: list[int] = []
        self._bytes = 0
        self.start: int | None = None

    def covers(self, entry_id: int) -> bool:
        return self.start is not None and entry_id + 1 >= self.start

    def after(self, entry_id: int, limit: int) -> list[OutboxEntry]:
        at = bisect.bisect_right(self._ids, entry_id)
        self._drop_first(at)
        self.start = max(self.start or 0, entry_id + 1)
        return self._rows[:limit]

    def extend(self, rows: list[OutboxEntry]) -> None:
        if not rows:
            return
        if self.start is None or (self._ids and rows[0].id != self._ids[-1] + 1):
            # Rows in between (written before we kept any) are not here: start over.
            self.clear()
            self.start = rows[0].id
        self._rows += rows
        self._ids += [row.id for row in rows]
        self._bytes += sum(len(row.payload) for row in rows)
        over, excess = 0, self._bytes - self.LIMIT_BYTES
        while excess > 0:
            excess -= len(self._rows[over].payload)
            over += 1
        if over:
            self.start = self._ids[over - 1] + 1
            self._drop_first(over)

    def _drop_first(self, count: int) -> None:
        if count:
            self._bytes -= sum(len(row.payload) for row in self._rows[:count])
            del self._rows[:count], self._ids[:count]

    def remove(self, entry_ids: list[int]) -> None:
        if self.start is None or not entry_ids or max(entry_ids) < self.start:
            return
        gone = set(entry_ids)
        keep = [i for i, row in enumerate(self._rows) if row.id not in gone]
        self._bytes = sum(len(self._rows[i].payload) for i in keep)
        self._rows = [self._rows[i] for i in keep]
        self._ids = [self._ids[i] for i in keep]

    def clear(self) -> None:
        """Hold nothing: every read goes to the store."""
        self._rows, self._ids, self._bytes, self.start = [], [], 0, None


class Member(NamedTuple):
    room: str
    sender_key: bytes
    name: str
    x25519_key: bytes | None
    last_seen_ms: int
    interval_s: int
    online: bool


class Members(StagedStatements):
    """Who was heard in each room (presence), with their X25519 member key.

    Written with the batch like every table. ``get``, asked for each batch received,
    answers from what the batch staged (kept in ``_saved``) and otherwise from the
    store, without writing the batch first."""

    def __init__(self, db: StoreConnection, staging: Staging) -> None:
        super().__init__(db, staging)
        self._saved: dict[tuple[str, bytes], Member | None] = {}
        """What the staged statements say of a member (None: removed)."""
        self._stored: dict[tuple[str, bytes], Member | None] = {}
        """Rows of the store as read or written by this connection, the only one that
        writes them (None: no such row); a batch that does not commit empties it.
        ``get`` is asked for every batch received (presence): without it, a query
        each time (issue 24)."""
        self._rooms_cleared: set[str] = set()

    def save(self, m: Member) -> None:
        before = self._saved.get((m.room, m.sender_key))
        if m.x25519_key is None and before is not None and before.x25519_key is not None:
            m = m._replace(x25519_key=before.x25519_key)  # as the statement's COALESCE does
        self._saved[(m.room, m.sender_key)] = m
        self._stage((_SAVE_MEMBER, m))

    def get(self, room: str, sender_key: bytes) -> Member | None:
        known = (room, sender_key) in self._saved
        saved = self._saved.get((room, sender_key))
        if (known and saved is None) or (not known and room in self._rooms_cleared):
            return None
        if saved is not None and (saved.x25519_key is not None or room in self._rooms_cleared):
            return saved
        # The store holds what no staged statement changed (or the member key a
        # staged save keeps): no need to write the batch first.
        stored = self._stored_row(room, sender_key)
        if saved is None:
            return stored
        return saved._replace(x25519_key=stored.x25519_key if stored else None)

    def _stored_row(self, room: str, sender_key: bytes) -> Member | None:
        """The store's row, read once: after that, from what was read or written."""
        key = (room, sender_key)
        if key in self._stored:
            return self._stored[key]
        row = self._db.execute(
            f"SELECT {_MEMBER_COLUMNS} FROM members WHERE room = ? AND sender_key = ?", key
        ).fetchone()
        if len(self._stored) >= STORED_MEMBERS_KEPT:
            self._stored.clear()
        stored = self._stored[key] = None if row is None else _member(row)
        return stored

    def in_room(self, room: str) -> list[Member]:
        rows = (
            self._reading()
            .execute(
                f"SELECT {_MEMBER_COLUMNS} FROM members WHERE room = ? "
                "ORDER BY name, last_seen_ms DESC",
                (room,),
            )
            .fetchall()
        )
        return [_member(row) for row in rows]

    def online(self) -> list[Member]:
        rows = (
            self._reading()
            .execute(f"SELECT {_MEMBER_COLUMNS} FROM members WHERE online = 1")
            .fetchall()
        )
        return [_member(row) for row in rows]

    def count(self, room: str) -> int:
        row = (
            self._reading()
            .execute("SELECT COUNT(*) FROM members WHERE room = ?", (room,))
            .fetchone()
        )
        return int(row[0])

    def evict_one_offline(self, room: str) -> bool:
        """Forget the member of ``room`` offline and silent the longest; False if none is."""
        row = (
            self._reading()
            .execute(
                "SELECT sender_key FROM members WHERE room = ? AND online = 0 "
                "ORDER BY last_seen_ms LIMIT 1",
                (room,),
            )
            .fetchone()
        )
        if row is None:
            return False
        self.remove(room, bytes(row[0]))
        return True

    def forget_room(self, room: str) -> None:
        self._clear_room(room)
        self._stage((_FORGET_ROOM, (room,)))

    def remove(self, room: str, sender_key: bytes) -> None:
        """One member no longer in the room (a rekey left it out)."""
        self._saved[(room, sender_key)] = None
        self._stage((_REMOVE_MEMBER, (room, sender_key)))

    def _clear_room(self, room: str) -> None:
        for key in [k for k in self._saved if k[0] == room]:
            del self._saved[key]
        self._rooms_cleared.add(room)

    # staged writes (mqchat.daemon.store.staging) ---------------------------

    def undo(self, mark: int) -> None:
        super().undo(mark)
        self._saved.clear()
        self._rooms_cleared.clear()
        for sql, params in self._staged:  # what stays staged, again
            if sql is _SAVE_MEMBER:
                self._saved[(params[0], params[1])] = params
            elif sql is _REMOVE_MEMBER:
                self._saved[(params[0], params[1])] = None
            else:
                self._clear_room(params[0])

    def written(self) -> None:
        stored = self._stored
        for sql, params in self._staged:  # the rows as the statements left them
            if sql is _SAVE_MEMBER:
                key = (params.room, params.sender_key)
                before = stored.pop(key, None)
                if params.x25519_key is not None or before is not None:
                    # the statement keeps a stored member key the save leaves out
                    stored[key] = params._replace(
                        x25519_key=params.x25519_key or (before and before.x25519_key)
                    )
            elif sql is _REMOVE_MEMBER:
                stored[(params[0], params[1])] = None
            else:
                for gone in [k for k in stored if k[0] == params[0]]:
                    del stored[gone]
        super().written()
        self._saved.clear()
        self._rooms_cleared.clear()

    def forget(self) -> None:
        """The batch did not commit: what was written of it is not in the store."""
        super().written()
        self._saved.clear()
        self._rooms_cleared.clear()
        self._stored.clear()


_MEMBER_COLUMNS = "room, sender_key, name, x25519_key, last_seen_ms, interval_s, online"
STORED_MEMBERS_KEPT = 4096
"""Stored member rows kept in memory; past this the cache starts again empty."""
_SAVE_MEMBER = (
    "INSERT INTO members VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(room, sender_key) "
    "DO UPDATE SET name = excluded.name, "
    "x25519_key = COALESCE(excluded.x25519_key, members.x25519_key), "
    "last_seen_ms = excluded.last_seen_ms, interval_s = excluded.interval_s, "
    "online = excluded.online"
)
_REMOVE_MEMBER = "DELETE FROM members WHERE room = ? AND sender_key = ?"
_FORGET_ROOM = "DELETE FROM members WHERE room = ?"


def _member(row: Any) -> Member:
    r, k, n, x, seen, i, o = row
    return Member(r, bytes(k), n, x, seen, i, bool(o))
