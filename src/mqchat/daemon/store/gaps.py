"""What a receiver keeps to repair what the broker dropped (docs/protocol.md §20).

- ``gap_streams``: per (room, sender key, stream) the ``StreamGaps`` of
  mqchat.protocol.gaps (``hw``, the missing ranges with when each was found,
  ``final``), how many texts are held back behind a gap, and the sender's name
  (for notices).
- ``gap_senders``: per (room, sender key) the ``floor``: the first stream this
  receiver tracked of the sender; a stream below it predates us (a replay).
  That a row exists is what "heard before in this room" means.
- ``held``: texts received after a gap, stored but not yet shown: they wait
  until everything before them has arrived or is given up.

Stream and sender rows are read once and cached; inside a batch a change is
journalled (so a failed part can undo it) and written at the batch's end.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, NamedTuple

from mqchat.daemon.store.connection import StoreConnection
from mqchat.daemon.store.records import StoredMessage
from mqchat.daemon.store.staging import StagedRows, Staging
from mqchat.protocol.gaps import Gap, StreamGaps

CACHE_ENTRIES = 10_000

StreamId = tuple[str, bytes, int]
"""(room, sender key, stream)"""


class StreamRow(NamedTuple):
    gaps: StreamGaps
    held: int
    name: str


def _encode(gaps: StreamGaps) -> str:
    return json.dumps([list(g) for g in gaps.missing], separators=(",", ":"))


def _decode(hw: int, missing: str, final: int) -> StreamGaps:
    return StreamGaps(hw, tuple(Gap(*g) for g in json.loads(missing)), bool(final))


class GapStreams:
    """The ``gap_streams`` and ``gap_senders`` tables, cached and journalled."""

    def __init__(self, db: StoreConnection, staging: Staging) -> None:
        self._db = db
        self._staging = staging
        self._streams: dict[StreamId, StreamRow | None] = {}
        self._floors: dict[tuple[str, bytes], int | None] = {}
        # (table, key, value before): undone backwards by a failed part.
        self._journal: list[tuple[str, Any, Any]] = []
        self._dirty_streams: set[StreamId] = set()
        self._dirty_floors: set[tuple[str, bytes]] = set()
        staging.register(self)

    def get(self, sid: StreamId) -> StreamRow | None:
        if sid not in self._streams:
            if len(self._streams) >= CACHE_ENTRIES and not self._journal:
                self._streams.clear()
            row = self._db.execute(
                "SELECT hw, missing, final, held, name FROM gap_streams "
                "WHERE room = ? AND sender_key = ? AND stream = ?",
                sid,
            ).fetchone()
            self._streams[sid] = (
                None if row is None else StreamRow(_decode(row[0], row[1], row[2]), row[3], row[4])
            )
        return self._streams[sid]

    def put(self, sid: StreamId, row: StreamRow) -> None:
        self._journal.append(("stream", sid, self.get(sid)))
        self._streams[sid] = row
        self._dirty_streams.add(sid)
        self._staging.settle()

    def floor(self, room: str, sender_key: bytes) -> int | None:
        key = (room, sender_key)
        if key not in self._floors:
            if len(self._floors) >= CACHE_ENTRIES and not self._journal:
                self._floors.clear()
            row = self._db.execute(
                "SELECT floor FROM gap_senders WHERE room = ? AND sender_key = ?", key
            ).fetchone()
            self._floors[key] = None if row is None else int(row[0])
        return self._floors[key]

    def set_floor(self, room: str, sender_key: bytes, floor: int) -> None:
        key = (room, sender_key)
        self._journal.append(("floor", key, self.floor(room, sender_key)))
        self._floors[key] = floor
        self._dirty_floors.add(key)
        self._staging.settle()

    def wanting(self) -> list[tuple[StreamId, StreamRow]]:
        """Every stream with missing numbers or held texts."""
        self._staging.flush()
        rows = self._db.execute(
            "SELECT room, sender_key, stream, hw, missing, final, held, name FROM gap_streams "
            "WHERE missing != '[]' OR held > 0"
        ).fetchall()
        return [
            ((r, bytes(k), s), StreamRow(_decode(hw, m, f), held, n))
            for r, k, s, hw, m, f, held, n in rows
        ]

    def forget_room(self, room: str) -> None:
        """``leave``: the room's counters go (a rejoin starts afresh). Their rows are
        deleted with the room's (``Rooms.delete``, staged with the request); here
        the cache forgets them, once nothing of it waits to be written."""
        self._staging.flush()
        self._streams.clear()
        self._floors.clear()

    # StagedTable (mqchat.daemon.store.staging) --------------------------------

    def staged(self) -> bool:
        return bool(self._dirty_streams or self._dirty_floors)

    def mark(self) -> int:
        return len(self._journal)

    def undo(self, mark: int) -> None:
        for table, key, before in reversed(self._journal[mark:]):
            if table == "stream":
                self._streams[key] = before
            else:
                self._floors[key] = before
        del self._journal[mark:]

    def write(self, db: sqlite3.Connection) -> None:
        rows = []
        for sid in self._dirty_streams:
            row = self._streams.get(sid)
            if row is not None:
                g = row.gaps
                rows.append((*sid, g.hw, _encode(g), g.final, row.held, row.name))
        db.executemany("INSERT OR REPLACE INTO gap_streams VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        floors = [
            (room, key, floor)
            for (room, key) in self._dirty_floors
            if (floor := self._floors.get((room, key))) is not None
        ]
        db.executemany("INSERT OR REPLACE INTO gap_senders VALUES (?, ?, ?)", floors)

    def written(self) -> None:
        self._journal.clear()
        self._dirty_streams.clear()
        self._dirty_floors.clear()

    def forget(self) -> None:
        self.written()
        self._streams.clear()
        self._floors.clear()


class HeldTexts(StagedRows):
    """Texts stored but not shown yet: a number before them is missing."""

    def add(self, stream: int, seq: int, sender_key: bytes, m: StoredMessage) -> None:
        self._staged.append(
            (
                m.room, sender_key, stream, seq, m.id, m.ts_ms, m.sender, m.fingerprint,
                m.verified, m.text,
            )
        )  # fmt: skip
        self._staging.settle()

    def take(self, sid: StreamId, below: int | None) -> list[StoredMessage]:
        """Remove and return the held texts of ``sid`` with a seq below ``below`` (all
        if None), in the sender's order; their ``seq`` is 0 until they are numbered."""
        self._staging.flush()
        room, key, stream = sid
        bound = below if below is not None else 2**63 - 1
        rows = self._db.execute(
            "SELECT id, ts_ms, sender, fingerprint, verified, text FROM held "
            "WHERE room = ? AND sender_key = ? AND stream = ? AND seq < ? ORDER BY seq",
            (room, key, stream, bound),
        ).fetchall()
        if rows:
            self._db.execute(
                "DELETE FROM held WHERE room = ? AND sender_key = ? AND stream = ? AND seq < ?",
                (room, key, stream, bound),
            )
        return [
            StoredMessage(room, 0, mid, ts, sender, fp, bool(v), False, False, text)
            for mid, ts, sender, fp, v, text in rows
        ]

    def count(self) -> int:
        self._staging.flush()
        return int(self._db.execute("SELECT COUNT(*) FROM held").fetchone()[0])

    def write(self, db: sqlite3.Connection) -> None:
        if self._staged:
            db.executemany(
                "INSERT OR IGNORE INTO held VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self._staged
            )
