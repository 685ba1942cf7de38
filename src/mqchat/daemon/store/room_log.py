"""A room's membership log on disk (docs/store.md, "room_log").

One row per thing the log must find again after a restart: the anchor (a
roster), the state a newcomer waits for, each commit judged valid (with the
verbatim payload it came in, to send again to a member left behind), each
admitted join, our own join record, and why we are out of a room. A table of
its own beside room_epochs; rows written in the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Final, NamedTuple

from mqchat.daemon.store.connection import StoreConnection
from mqchat.daemon.store.staging import StagedRows, Staging

ANCHOR: Final = "anchor"
EXPECT: Final = "expect"
COMMIT: Final = "commit"
JOIN: Final = "join"
OWN_JOIN: Final = "own_join"
OUT: Final = "out"
TAG_KIND: Final = "tag"
"""An epoch tag's state hash (id ``tag:`` + tag)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS room_log (
    room TEXT NOT NULL,
    id BLOB NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    payload BLOB,
    topic TEXT,
    PRIMARY KEY (room, id)
) WITHOUT ROWID;
"""


class LogRow(NamedTuple):
    room: str
    id: bytes
    kind: str
    body: bytes
    payload: bytes | None = None
    topic: str | None = None


class RoomLogRows(StagedRows):
    """Staged like the messages: written with the batch that made them, undone with a
    part that failed (mqchat.daemon.store.staging); at once outside a batch."""

    def __init__(self, db: StoreConnection, staging: Staging) -> None:
        db.executescript(_SCHEMA)
        super().__init__(db, staging)

    def of(self, room: str) -> list[LogRow]:
        self._staging.flush()
        rows = self._db.execute(
            "SELECT room, id, kind, body, payload, topic FROM room_log WHERE room = ?", (room,)
        ).fetchall()
        return [LogRow(*row) for row in rows]

    def save(self, row: LogRow) -> None:
        self._stage("INSERT OR REPLACE INTO room_log VALUES (?, ?, ?, ?, ?, ?)", tuple(row))

    def delete(self, room: str, kinds: tuple[str, ...]) -> None:
        for kind in kinds:
            self._stage("DELETE FROM room_log WHERE room = ? AND kind = ?", (room, kind))

    def delete_id(self, room: str, row_id: bytes) -> None:
        self._stage("DELETE FROM room_log WHERE room = ? AND id = ?", (room, row_id))

    def forget_room(self, room: str) -> None:
        self._stage("DELETE FROM room_log WHERE room = ?", (room,))

    def _stage(self, sql: str, args: tuple[object, ...]) -> None:
        self._staged.append((sql, args))
        self._staging.settle()

    def write(self, db: sqlite3.Connection) -> None:
        for sql, args in self._staged:  # in order: a delete after a save undoes it
            db.execute(sql, args)
