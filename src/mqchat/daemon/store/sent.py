"""Our own version 2 text records, by (room, stream, seq): what a repair republishes.

docs/protocol.md §21: each message sent is kept, byte for byte as its text
record's body, in the same transaction as the message itself, for as long as
history keeps as many messages of the room.
"""

from __future__ import annotations

import sqlite3

from mqchat.daemon.store.connection import StoreConnection
from mqchat.daemon.store.staging import StagedRows, Staging


class SentRecords(StagedRows):
    def __init__(self, db: StoreConnection, retention: int, staging: Staging) -> None:
        super().__init__(db, staging)
        self.retention = retention

    def add(self, room: str, stream: int, seq: int, body: bytes) -> None:
        self._staged.append((room, stream, seq, body))
        self._staging.settle()

    def last_seq(self, room: str, stream: int) -> int:
        """The highest seq kept of ``stream`` in ``room`` (0: none)."""
        self._staging.flush()
        row = self._db.execute(
            "SELECT MAX(seq) FROM sent WHERE room = ? AND stream = ?", (room, stream)
        ).fetchone()
        return int(row[0] or 0)

    def between(self, room: str, stream: int, first: int, last: int, limit: int) -> list[bytes]:
        """The bodies kept of seqs ``first`` to ``last``, in order, at most ``limit``."""
        self._staging.flush()
        rows = self._db.execute(
            "SELECT body FROM sent WHERE room = ? AND stream = ? AND seq BETWEEN ? AND ? "
            "ORDER BY seq LIMIT ?",
            (room, stream, first, last, limit),
        )
        return [bytes(body) for (body,) in rows]

    def trail(self, room: str, stream: int) -> int | None:
        """The lowest seq kept of ``stream`` in ``room``; None when none is."""
        self._staging.flush()
        row = self._db.execute(
            "SELECT MIN(seq) FROM sent WHERE room = ? AND stream = ?", (room, stream)
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def streams(self, room: str) -> list[tuple[int, int, int]]:
        """(stream, trail, lead) of every stream of ``room`` still kept, oldest first."""
        self._staging.flush()
        rows = self._db.execute(
            "SELECT stream, MIN(seq), MAX(seq) FROM sent WHERE room = ? GROUP BY stream "
            "ORDER BY stream",
            (room,),
        )
        return [(int(s), int(lo), int(hi)) for s, lo, hi in rows]

    # staged writes (mqchat.daemon.store.staging) ---------------------------

    def write(self, db: sqlite3.Connection) -> None:
        if not self._staged:
            return
        db.executemany("INSERT OR REPLACE INTO sent VALUES (?, ?, ?, ?)", self._staged)
        newest: dict[tuple[str, int], int] = {}
        for room, stream, seq, _ in self._staged:
            if seq > newest.get((room, stream), 0):
                newest[(room, stream)] = seq
        for (room, stream), seq in newest.items():
            if seq > self.retention:
                db.execute(
                    "DELETE FROM sent WHERE room = ? AND stream = ? AND seq <= ?",
                    (room, stream, seq - self.retention),
                )
