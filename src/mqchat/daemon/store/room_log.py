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

from mqchat.daemon.store.connection import transaction

ANCHOR: Final = "anchor"
EXPECT: Final = "expect"
COMMIT: Final = "commit"
JOIN: Final = "join"
OWN_JOIN: Final = "own_join"
OUT: Final = "out"

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


class RoomLogRows:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.executescript(_SCHEMA)

    def of(self, room: str) -> list[LogRow]:
        rows = self._db.execute(
            "SELECT room, id, kind, body, payload, topic FROM room_log WHERE room = ?", (room,)
        ).fetchall()
        return [LogRow(*row) for row in rows]

    def save(self, row: LogRow) -> None:
        with transaction(self._db) as db:
            db.execute("INSERT OR REPLACE INTO room_log VALUES (?, ?, ?, ?, ?, ?)", row)

    def delete(self, room: str, kinds: tuple[str, ...]) -> None:
        with transaction(self._db) as db:
            db.executemany(
                "DELETE FROM room_log WHERE room = ? AND kind = ?", [(room, k) for k in kinds]
            )

    def delete_id(self, room: str, row_id: bytes) -> None:
        with transaction(self._db) as db:
            db.execute("DELETE FROM room_log WHERE room = ? AND id = ?", (room, row_id))

    def forget_room(self, room: str) -> None:
        with transaction(self._db) as db:
            db.execute("DELETE FROM room_log WHERE room = ?", (room,))
