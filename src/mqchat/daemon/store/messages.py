"""Messages shown to the user, per room, numbered 1, 2, 3... in the order stored."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from mqchat.daemon.followers import HELD_FOR_FOLLOWERS_TIMES
from mqchat.daemon.store.connection import StoreConnection
from mqchat.daemon.store.records import StoredMessage
from mqchat.daemon.store.staging import StagedRows, Staging

HISTORY_PAGE_MESSAGES = 1000
HISTORY_PAGE_BYTES = 1024 * 1024
"""A history page ends after the message that takes its text past this."""

_COLUMNS = ", ".join(StoredMessage._fields)
"""room, seq, id, ts_ms, sender, fingerprint, verified, own, legacy, text: a
StoredMessage is a row as it is."""


def _message(row: tuple[Any, ...]) -> StoredMessage:
    room, seq, mid, ts, sender, fp, verified, own, legacy, text = row
    return StoredMessage(
        room, seq, mid, ts, sender, fp, bool(verified), bool(own), bool(legacy), text
    )


class Messages(StagedRows):
    """Inside a batch, rows are staged and written with one statement at its end;
    retention is applied then, once per room the batch touched."""

    def __init__(
        self,
        db: StoreConnection,
        retention: int,
        staging: Staging,
        lowest_unread: Callable[[str], int | None],
    ) -> None:
        super().__init__(db, staging)
        self.retention = retention
        self.lowest_unread = lowest_unread
        """The lowest seq of a room a connected tail has not shown yet
        (mqchat.daemon.followers): retention keeps it, within a bound."""

    def insert(self, m: StoredMessage) -> None:
        self._staged.append(m)  # a row as it is: its fields are the columns, in order
        self._staging.settle()

    # staged writes (mqchat.daemon.store.staging) ---------------------------

    def write(self, db: sqlite3.Connection) -> None:
        if not self._staged:
            return
        db.executemany(
            f"INSERT INTO messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            map(tuple, self._staged),  # a plain tuple binds ~1 µs faster than a NamedTuple
        )
        newest: dict[str, int] = {}
        for row in self._staged:
            room, seq = row[0], row[1]
            if seq > newest.get(room, 0):
                newest[room] = seq
        # Every batch, so a tail never shows more than ``retention`` messages;
        # one seek on the primary key per room, and it removes what a lowered
        # retention left behind too.
        for room, seq in newest.items():
            cut = seq - self.retention
            unread = self.lowest_unread(room) if cut > 0 else None
            if unread is not None:
                # A following tail has not shown these yet (issue 22 item 10).
                cut = max(min(cut, unread - 1), cut - HELD_FOR_FOLLOWERS_TIMES * self.retention)
            if cut > 0:
                db.execute("DELETE FROM messages WHERE room = ? AND seq <= ?", (room, cut))

    def last_seq(self, room: str) -> int:
        self._staging.flush()
        row = self._db.execute("SELECT MAX(seq) FROM messages WHERE room = ?", (room,)).fetchone()
        return int(row[0] or 0)

    def count(self, room: str) -> int:
        self._staging.flush()
        row = self._db.execute("SELECT COUNT(*) FROM messages WHERE room = ?", (room,)).fetchone()
        return int(row[0])

    def sent_as(
        self, room: str, sender: str, fingerprint: str
    ) -> tuple[int, int | None, int | None]:
        """(messages, first ts, last ts) that ``fingerprint`` signed as ``sender`` in
        ``room``, of those the store still holds: what `chatctl trust` lists."""
        self._staging.flush()
        row = self._db.execute(
            "SELECT COUNT(*), MIN(ts_ms), MAX(ts_ms) FROM messages "
            "WHERE room = ? AND sender = ? AND fingerprint = ?",
            (room, sender, fingerprint),
        ).fetchone()
        return int(row[0]), row[1], row[2]

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
        self._staging.flush()  # a batch's own messages too: its events come after the commit
        if since is None:
            since = self._start_of_last(room, limit)
        wanted = HISTORY_PAGE_MESSAGES if limit is None else min(limit, HISTORY_PAGE_MESSAGES)
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?",
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
