"""What a receiver remembers to judge what arrives: seen ids, sequence numbers, pins.

It answers the questions of mqchat.protocol.receiving.Memory, and records what
a verdict says to record. Inside a batch, what it records is staged (see
mqchat.daemon.store.staging) and the answers take the staged records into
account, so a batch judges its second copy of a message as a duplicate before
either is written. Pins and each sender's highest seq are cached once read or
written: the receiving rules ask for them on every message.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple, TypeVar

from mqchat.daemon.store.connection import StoreConnection, transaction
from mqchat.daemon.store.staging import Staging
from mqchat.protocol.receiving import REPLAY_WINDOW, Pin

K = TypeVar("K")
V = TypeVar("V")

SEEN_ID_DAYS = 30
PREFETCH_CHUNK = 500
"""Values bound in one prefetch statement (SQLite allows 999 in old builds)."""
CACHE_ENTRIES = 10_000
"""Pins and high-water marks cached; past this the cache starts again empty."""

_NO_PIN = Pin(b"", None)  # cached: "no pin", unlike a key not looked up yet


class PinChange(NamedTuple):
    """One staged change to the pins or the keys seen, applied in order."""

    kind: str  # "pin", "pending" or "saw"
    room: str
    name: str
    key: bytes
    at_ms: int = 0


class ReceiverMemory:
    def __init__(self, db: StoreConnection, staging: Staging) -> None:
        self._db = db
        self._staging = staging
        # Staged, in the order recorded: (id, at ms), (key, seq), pin changes.
        self._ids: list[tuple[bytes, int]] = []
        self._seqs: list[tuple[bytes, int]] = []
        self._pin_changes: list[PinChange] = []
        # Indexes of the staged rows, rebuilt when a part is undone.
        self._staged_ids: set[bytes] = set()
        self._staged_seqs: set[tuple[bytes, int]] = set()
        self._staged_high: dict[bytes, int] = {}
        self._staged_pins: dict[tuple[str, str], Pin] = {}
        # What the store holds (only ever filled from it, or from written rows).
        self._high: dict[bytes, int | None] = {}
        self._pins: dict[tuple[str, str], Pin] = {}
        # Asked of the store for a whole batch (prefetch), until it writes anything.
        self._asked_ids: set[bytes] = set()
        self._found_ids: set[bytes] = set()
        self._asked_seqs: set[tuple[bytes, int]] = set()
        self._found_seqs: set[tuple[bytes, int]] = set()
        staging.register(self)

    # replay memory ---------------------------------------------------
    def prefetch(self, ids: list[bytes], seqs: list[tuple[bytes, int]]) -> None:
        """Ask the store at once which of a batch's ids and (key, seq) it has seen, so
        that judging the batch asks it nothing more: a statement per PREFETCH_CHUNK
        ids, and per sender key, instead of two per message."""
        self._forget_prefetched()
        for start in range(0, len(ids), PREFETCH_CHUNK):
            chunk = ids[start : start + PREFETCH_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT id FROM seen_ids WHERE id IN ({marks})", chunk)
            self._found_ids.update(bytes(mid) for (mid,) in rows)
            self._asked_ids.update(chunk)
        by_key: dict[bytes, list[int]] = {}
        for key, seq in seqs:
            by_key.setdefault(key, []).append(seq)
        for key, numbers in by_key.items():
            for start in range(0, len(numbers), PREFETCH_CHUNK):
                some = numbers[start : start + PREFETCH_CHUNK]
                marks = ",".join("?" * len(some))
                found = self._db.execute(
                    f"SELECT seq FROM seen_seqs WHERE sender_key = ? AND seq IN ({marks})",
                    [key, *some],
                )
                self._found_seqs.update((key, int(seq)) for (seq,) in found)
                self._asked_seqs.update((key, seq) for seq in some)

    def _forget_prefetched(self) -> None:
        self._asked_ids.clear()
        self._found_ids.clear()
        self._asked_seqs.clear()
        self._found_seqs.clear()

    def seen_id(self, message_id: bytes) -> bool:
        if message_id in self._staged_ids:
            return True
        if message_id in self._asked_ids:
            return message_id in self._found_ids
        row = self._db.execute("SELECT 1 FROM seen_ids WHERE id = ?", (message_id,)).fetchone()
        return row is not None

    def seen_seq(self, sender_key: bytes, seq: int) -> bool:
        if (sender_key, seq) in self._staged_seqs:
            return True
        if (sender_key, seq) in self._asked_seqs:
            return (sender_key, seq) in self._found_seqs
        row = self._db.execute(
            "SELECT 1 FROM seen_seqs WHERE sender_key = ? AND seq = ?", (sender_key, seq)
        ).fetchone()
        return row is not None

    def highest_seq(self, sender_key: bytes) -> int | None:
        stored = self._stored_high(sender_key)
        staged = self._staged_high.get(sender_key)
        if staged is None or (stored is not None and stored >= staged):
            return stored
        return staged

    def _stored_high(self, sender_key: bytes) -> int | None:
        if sender_key in self._high:
            return self._high[sender_key]
        row = self._db.execute(
            "SELECT seq FROM sender_high WHERE sender_key = ?", (sender_key,)
        ).fetchone()
        high = None if row is None else int(row[0])
        _cache(self._high, sender_key, high)
        return high

    def remember(
        self, message_id: bytes, now_ms: int, sender_key: bytes | None, seq: int | None
    ) -> None:
        """Remember a message shown (or sent): its id, and its sender's (key, seq)."""
        self._ids.append((message_id, now_ms))
        self._staged_ids.add(message_id)
        if sender_key is not None and seq is not None:
            self._seqs.append((sender_key, seq))
            self._staged_seqs.add((sender_key, seq))
            if seq > self._staged_high.get(sender_key, 0):
                self._staged_high[sender_key] = seq
        self._staging.settle()

    def prune(self, now_ms: int) -> None:
        """Forget ids after SEEN_ID_DAYS and seqs below each sender's window."""
        self._staging.flush()
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
        found = self._staged_pins.get((room, name)) or self._stored_pin(room, name)
        return None if found is _NO_PIN else found

    def _stored_pin(self, room: str, name: str) -> Pin:
        cached = self._pins.get((room, name))
        if cached is not None:
            return cached
        row = self._db.execute(
            "SELECT sender_key, pending_key FROM pins WHERE room = ? AND name = ?", (room, name)
        ).fetchone()
        pin = (
            _NO_PIN
            if row is None
            else Pin(bytes(row[0]), None if row[1] is None else bytes(row[1]))
        )
        _cache(self._pins, (room, name), pin)
        return pin

    def set_pin(self, room: str, name: str, key: bytes) -> None:
        self._change(PinChange("pin", room, name, key))

    def set_pending(self, room: str, name: str, key: bytes) -> None:
        self._change(PinChange("pending", room, name, key))

    def saw_key(self, room: str, name: str, key: bytes, now_ms: int) -> None:
        """Remember that ``key`` spoke under ``name``: `trust` chooses among these."""
        self._change(PinChange("saw", room, name, key, now_ms))

    def _change(self, change: PinChange) -> None:
        self._pin_changes.append(change)
        self._index_pin_change(change)
        self._staging.settle()

    def _index_pin_change(self, change: PinChange) -> None:
        where = (change.room, change.name)
        if change.kind == "pin":
            self._staged_pins[where] = Pin(change.key, None)
        elif change.kind == "pending":
            pinned = self.pin(change.room, change.name)
            if pinned is not None:  # as the UPDATE below: no pin, nothing to mark
                self._staged_pins[where] = Pin(pinned.key, change.key)

    def keys_seen(self, room: str, name: str) -> list[tuple[bytes, int, int, int]]:
        """(key, first seen ms, last seen ms, messages) of every key seen under ``name``."""
        self._staging.flush()
        rows = self._db.execute(
            "SELECT sender_key, first_ms, last_ms, messages FROM sender_keys "
            "WHERE room = ? AND name = ? ORDER BY first_ms",
            (room, name),
        ).fetchall()
        return [(bytes(k), int(f), int(la), int(m)) for k, f, la, m in rows]

    # staged writes (mqchat.daemon.store.staging) ---------------------------
    def staged(self) -> bool:
        return bool(self._ids or self._pin_changes)

    def mark(self) -> int:
        # One number for three lists: each only grows within a batch, so the
        # three lengths pack into one int (ids and seqs < 2**24 per batch).
        return (len(self._ids) << 48) | (len(self._seqs) << 24) | len(self._pin_changes)

    def undo(self, mark: int) -> None:
        ids, seqs, changes = mark >> 48, (mark >> 24) & 0xFFFFFF, mark & 0xFFFFFF
        if (ids, seqs, changes) == (len(self._ids), len(self._seqs), len(self._pin_changes)):
            return
        del self._ids[ids:]
        del self._seqs[seqs:]
        del self._pin_changes[changes:]
        self._staged_ids = {mid for mid, _ in self._ids}
        self._staged_seqs = set(self._seqs)
        self._staged_high = {}
        for key, seq in self._seqs:
            if seq > self._staged_high.get(key, 0):
                self._staged_high[key] = seq
        self._staged_pins = {}
        for change in self._pin_changes:
            self._index_pin_change(change)

    def write(self, db: sqlite3.Connection) -> None:
        if self._ids:
            db.executemany("INSERT OR IGNORE INTO seen_ids VALUES (?, ?)", self._ids)
        if self._seqs:
            db.executemany("INSERT OR IGNORE INTO seen_seqs VALUES (?, ?)", self._seqs)
            db.executemany(
                "INSERT INTO sender_high VALUES (?, ?) ON CONFLICT(sender_key) "
                "DO UPDATE SET seq = MAX(seq, excluded.seq)",
                self._staged_high.items(),
            )
        for change in self._pin_changes:
            _write_pin_change(db, change)

    def written(self) -> None:
        for key, seq in self._staged_high.items():
            if key in self._high:  # else it is read from the store when asked
                known = self._high[key]
                self._high[key] = seq if known is None else max(known, seq)
        for where, pin in self._staged_pins.items():
            _cache(self._pins, where, pin)
        self._clear_staged()
        self._forget_prefetched()  # what was staged is in the store now: ask it again

    def forget(self) -> None:
        self._clear_staged()
        self._forget_prefetched()
        self._high.clear()
        self._pins.clear()

    def _clear_staged(self) -> None:
        self._ids.clear()
        self._seqs.clear()
        self._pin_changes.clear()
        self._staged_ids.clear()
        self._staged_seqs.clear()
        self._staged_high.clear()
        self._staged_pins.clear()


def _cache(cache: dict[K, V], key: K, value: V) -> None:
    """Bounded: a peer that makes up keys or names cannot make the cache grow."""
    if len(cache) >= CACHE_ENTRIES:
        cache.clear()
    cache[key] = value


def _write_pin_change(db: sqlite3.Connection, change: PinChange) -> None:
    if change.kind == "pin":
        db.execute(
            "INSERT INTO pins VALUES (?, ?, ?, NULL) ON CONFLICT(room, name) "
            "DO UPDATE SET sender_key = excluded.sender_key, pending_key = NULL",
            (change.room, change.name, change.key),
        )
    elif change.kind == "pending":
        db.execute(
            "UPDATE pins SET pending_key = ? WHERE room = ? AND name = ?",
            (change.key, change.room, change.name),
        )
    else:
        db.execute(
            "INSERT INTO sender_keys VALUES (?, ?, ?, ?, ?, 1) "
            "ON CONFLICT(room, name, sender_key) DO UPDATE SET "
            "last_ms = MAX(last_ms, excluded.last_ms), messages = messages + 1",
            (change.room, change.name, change.key, change.at_ms, change.at_ms),
        )
