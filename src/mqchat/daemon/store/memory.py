"""What a receiver remembers to judge what arrives: seen ids, sequence numbers, pins.

It answers the questions of mqchat.protocol.receiving.Memory, and records what
a verdict says to record.
"""

from __future__ import annotations

import sqlite3

from mqchat.daemon.store.connection import transaction
from mqchat.protocol.receiving import REPLAY_WINDOW, Pin

SEEN_ID_DAYS = 30


class ReceiverMemory:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    # replay memory ---------------------------------------------------
    def seen_id(self, message_id: bytes) -> bool:
        row = self._db.execute("SELECT 1 FROM seen_ids WHERE id = ?", (message_id,)).fetchone()
        return row is not None

    def seen_seq(self, sender_key: bytes, seq: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM seen_seqs WHERE sender_key = ? AND seq = ?", (sender_key, seq)
        ).fetchone()
        return row is not None

    def highest_seq(self, sender_key: bytes) -> int | None:
        row = self._db.execute(
            "SELECT seq FROM sender_high WHERE sender_key = ?", (sender_key,)
        ).fetchone()
        return None if row is None else int(row[0])

    def remember(
        self, message_id: bytes, now_ms: int, sender_key: bytes | None, seq: int | None
    ) -> None:
        """Remember a message shown (or sent): its id, and its sender's (key, seq)."""
        self._db.execute("INSERT OR IGNORE INTO seen_ids VALUES (?, ?)", (message_id, now_ms))
        if sender_key is None or seq is None:
            return
        self._db.execute("INSERT OR IGNORE INTO seen_seqs VALUES (?, ?)", (sender_key, seq))
        self._db.execute(
            "INSERT INTO sender_high VALUES (?, ?) ON CONFLICT(sender_key) "
            "DO UPDATE SET seq = MAX(seq, excluded.seq)",
            (sender_key, seq),
        )

    def prune(self, now_ms: int) -> None:
        """Forget ids after SEEN_ID_DAYS and seqs below each sender's window."""
        with transaction(self._db) as db:
            db.execute(
                "DELETE FROM seen_ids WHERE at_ms < ?", (now_ms - SEEN_ID_DAYS * 86_400_000,)
            )
            db.execute(
                "DELETE FROM seen_seqs WHERE seq <= (SELECT h.seq FROM sender_high h "
                "WHERE h.sender_key = seen_seqs.sender_key) - ?",
                (REPLAY_WINDOW,),
            )

    # pins ---------------------------------------------------------------
    def pin(self, room: str, name: str) -> Pin | None:
        row = self._db.execute(
            "SELECT sender_key, pending_key FROM pins WHERE room = ? AND name = ?", (room, name)
        ).fetchone()
        return (
            None if row is None else Pin(bytes(row[0]), None if row[1] is None else bytes(row[1]))
        )

    def set_pin(self, room: str, name: str, key: bytes) -> None:
        self._db.execute(
            "INSERT INTO pins VALUES (?, ?, ?, NULL) ON CONFLICT(room, name) "
            "DO UPDATE SET sender_key = excluded.sender_key, pending_key = NULL",
            (room, name, key),
        )

    def set_pending(self, room: str, name: str, key: bytes) -> None:
        self._db.execute(
            "UPDATE pins SET pending_key = ? WHERE room = ? AND name = ?", (key, room, name)
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
