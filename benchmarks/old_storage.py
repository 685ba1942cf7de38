"""The storage path chatd had before issue 14 (source 71b13c8), kept to be measured against.

The same classes and calls as then, cut to what a send and a received message
do: ``transaction()`` (a SAVEPOINT inside a batch), one statement per row, the
receiver memory asking SQLite on every question, retention on every insert, the
timestamp formatted by ``strftime``, fingerprints hashed on every message.
benchmarks/storage.py runs it beside today's classes, on the same data and the
same crypto (today's envelope), so what differs is storage and per-message glue.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mqchat.daemon.rooms import Room
from mqchat.daemon.store import OutboxEntry, StoredMessage
from mqchat.protocol import envelope
from mqchat.protocol.ipc_events import message_event
from mqchat.protocol.limits import check_text
from mqchat.protocol.receiving import Arrival, Pin, Verdict, judge
from mqchat.protocol.signing import SigningIdentity, fingerprint


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    if db.in_transaction:
        db.execute("SAVEPOINT part")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK TO part")
            db.execute("RELEASE part")
            raise
        db.execute("RELEASE part")
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def iso_ts(ms: int) -> str:
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def to_event(m: StoredMessage) -> dict[str, Any]:
    return message_event(
        room=m.room, seq=m.seq, message_id=m.id, ts=iso_ts(m.ts_ms), sender=m.sender,
        fingerprint=m.fingerprint, verified=m.verified, own=m.own, text=m.text, legacy=m.legacy,
    )  # fmt: skip


class OldStore:
    """messages.insert, outbox.add, meta.set and the receiver memory, as they were."""

    def __init__(self, db: sqlite3.Connection, retention: int) -> None:
        self.db = db
        self.retention = retention

    def insert_message(self, m: StoredMessage) -> None:
        self.db.execute(
            "INSERT INTO messages (room, seq, id, ts_ms, sender, fingerprint, verified, own, "
            "legacy, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (m.room, m.seq, m.id, m.ts_ms, m.sender, m.fingerprint, m.verified, m.own, m.legacy,
             m.text),
        )  # fmt: skip
        if m.seq > self.retention:
            self.db.execute(
                "DELETE FROM messages WHERE room = ? AND seq <= ?",
                (m.room, m.seq - self.retention),
            )

    def add_outbox(self, entry: OutboxEntry) -> int:
        cur = self.db.execute(
            "INSERT INTO outbox (room, topic, qos, payload) VALUES (?, ?, ?, ?)",
            (entry.room, entry.topic, entry.qos, entry.payload),
        )
        return int(cur.lastrowid or 0)

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # ReceiverMemory
    def seen_id(self, message_id: bytes) -> bool:
        row = self.db.execute("SELECT 1 FROM seen_ids WHERE id = ?", (message_id,)).fetchone()
        return row is not None

    def seen_seq(self, sender_key: bytes, seq: int) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM seen_seqs WHERE sender_key = ? AND seq = ?", (sender_key, seq)
        ).fetchone()
        return row is not None

    def highest_seq(self, sender_key: bytes) -> int | None:
        row = self.db.execute(
            "SELECT seq FROM sender_high WHERE sender_key = ?", (sender_key,)
        ).fetchone()
        return None if row is None else int(row[0])

    def pin(self, room: str, name: str) -> Pin | None:
        row = self.db.execute(
            "SELECT sender_key, pending_key FROM pins WHERE room = ? AND name = ?", (room, name)
        ).fetchone()
        return (
            None if row is None else Pin(bytes(row[0]), None if row[1] is None else bytes(row[1]))
        )

    def remember(
        self, message_id: bytes, now_ms: int, sender_key: bytes | None, seq: int | None
    ) -> None:
        self.db.execute("INSERT OR IGNORE INTO seen_ids VALUES (?, ?)", (message_id, now_ms))
        if sender_key is None or seq is None:
            return
        self.db.execute("INSERT OR IGNORE INTO seen_seqs VALUES (?, ?)", (sender_key, seq))
        self.db.execute(
            "INSERT INTO sender_high VALUES (?, ?) ON CONFLICT(sender_key) "
            "DO UPDATE SET seq = MAX(seq, excluded.seq)",
            (sender_key, seq),
        )

    def set_pin(self, room: str, name: str, key: bytes) -> None:
        self.db.execute(
            "INSERT INTO pins VALUES (?, ?, ?, NULL) ON CONFLICT(room, name) "
            "DO UPDATE SET sender_key = excluded.sender_key, pending_key = NULL",
            (room, name, key),
        )

    def saw_key(self, room: str, name: str, key: bytes, now_ms: int) -> None:
        self.db.execute(
            "INSERT INTO sender_keys VALUES (?, ?, ?, ?, ?, 1) "
            "ON CONFLICT(room, name, sender_key) DO UPDATE SET "
            "last_ms = MAX(last_ms, excluded.last_ms), messages = messages + 1",
            (room, name, key, now_ms, now_ms),
        )


class OldPath:
    """rpc_send and the inbox's _receive/_accept as they were, on one room."""

    def __init__(
        self,
        db: sqlite3.Connection,
        room: Room,
        identity: SigningIdentity,
        clock_ms: Callable[[], int],
        publish: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.db = db
        self.store = OldStore(db, 10_000)
        self.room = room
        self.identity = identity
        self.clock_ms = clock_ms
        self.publish = publish
        self.send_seq = 0

    @contextmanager
    def batch(self) -> Iterator[None]:
        with transaction(self.db):
            yield

    def rpc_send(self, text: str) -> dict[str, Any]:
        r = self.room
        keys = r.keys
        if keys is None:
            raise ValueError("a passphrase room")
        check_text(text)
        now = self.clock_ms()
        seq = self.send_seq + 1
        id_bytes, payload = envelope.seal(
            keys, self.identity, name="alice", text=text, seq=seq, timestamp_ms=now,
            random=os.urandom, cipher=r.cipher,
        )  # fmt: skip
        fp, own_key = self.identity.fingerprint, self.identity.public_key
        message = StoredMessage(r.name, r.last_seq + 1, id_bytes.hex(), now, "alice", fp, True,
                                True, r.legacy, text)  # fmt: skip
        with transaction(self.db):
            self.store.insert_message(message)
            self.store.add_outbox(OutboxEntry(0, r.name, r.topic, r.qos, payload))
            self.store.remember(id_bytes, now, own_key, seq)
            self.store.set_meta("send_seq", str(seq))
        self.send_seq = seq
        r.last_seq = message.seq
        self.publish(r.name, to_event(message))
        return {"room": r.name, "seq": message.seq, "id": message.id, "queued": False}

    def receive(self, payload: bytes) -> None:
        r = self.room
        keys = r.keys
        if keys is None:
            raise ValueError("a passphrase room")
        m = envelope.open_payload(payload, keys)[1]
        arrival = Arrival(r.name, r.joined_ms, m.sender_name, m.sender_key, m.message_id, m.seq,
                          m.timestamp_ms)  # fmt: skip
        verdict = judge(arrival, self.store, own_key=self.identity.public_key)
        if verdict.dropped is not None:
            return
        now = self.clock_ms()
        self._apply_pinning(arrival, verdict, now)
        key = arrival.sender_key
        message = StoredMessage(
            r.name, r.last_seq + 1, arrival.message_id.hex(), arrival.timestamp_ms,
            arrival.sender_name, fingerprint(key) if key is not None else "",
            verified=verdict.verified, own=False, legacy=False, text=m.text,
        )  # fmt: skip
        self.store.insert_message(message)
        self.store.remember(arrival.message_id, now, key, arrival.seq)
        r.last_seq = message.seq
        self.publish(r.name, to_event(message))

    def _apply_pinning(self, arrival: Arrival, verdict: Verdict, now_ms: int) -> None:
        if verdict.pin is not None:
            self.store.set_pin(arrival.room, arrival.sender_name, verdict.pin)
        if verdict.key_seen is not None:
            self.store.saw_key(arrival.room, arrival.sender_name, verdict.key_seen, now_ms)
