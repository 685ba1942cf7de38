"""Issue 14 item 2: batch-shaped storage keeps the guarantees the per-message SAVEPOINT gave.

The daemon's real classes (store, unit of work, RPC handlers, inbox) on a real
SQLite file, with no broker and no client: a batch is driven as the IPC server
and the inbox drive it, each request or payload a part of one batch. What is
checked is what a user would notice: a send that fails leaves no row behind
and the others of its batch are stored; a payload that fails is dropped alone;
a batch that does not commit leaves nothing, not even in a cache.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqchat.config import Settings, parse_broker_url
from mqchat.daemon.assembly import assemble_core
from mqchat.daemon.broker import Incoming
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.events import EventPublisher
from mqchat.daemon.followers import Followers
from mqchat.daemon.rooms import Room
from mqchat.daemon.store import Store
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import MessageTooLong
from mqchat.protocol import envelope
from mqchat.protocol.batch import seal_batch
from mqchat.protocol.ipc import Request
from mqchat.protocol.ipc_events import iso_ts
from mqchat.protocol.kdf import DEFAULT_KDF, RoomKeys
from mqchat.protocol.limits import MAX_TEXT_BYTES
from mqchat.protocol.records import Text, decode_record
from mqchat.protocol.signing import SigningIdentity

ROOM = "lobby"


def clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Injected(Exception):
    """A failure put into the middle of a request or payload on purpose."""


class RecordingLink:
    """A link that is up and keeps what it was given, in order (no broker: what the
    daemon's parts hand the link is what these tests look at)."""

    connected = True
    generation = 1
    receive_maximum = 65535

    def __init__(self) -> None:
        self.given: list[tuple[str, str]] = []

    def publish(self, topic: str, payload: bytes, qos: int) -> int | None:
        self.given.append(("publish", topic))
        return len(self.given)

    def subscribe(self, topic: str, qos: int) -> None:
        self.given.append(("subscribe", topic))

    def unsubscribe(self, topic: str) -> None:
        self.given.append(("unsubscribe", topic))

    def ack(self, mid: int, qos: int) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"url": None, "protocol": None, "last_error": None, "failing_since_ms": None}


class Parts:
    """chatd's storage-side parts as assembly.py wires them, minus the sockets to clients."""

    def __init__(self, home: Path, keys: RoomKeys) -> None:
        state = home / "state"
        state.mkdir()
        self.path = state / "mqchat.db"
        settings = Settings(
            name="alice",
            brokers=(parse_broker_url("mqtt://127.0.0.1:1"),),
            runtime_dir=home / "run",
            state_dir=state,
        )
        self.store = Store(self.path, retention=10_000)
        self.drops = DropCounter()
        self.events = EventPublisher(home / "ev.sock", self.drops)
        self.work = UnitOfWork(self.store, self.events)
        self.identity = SigningIdentity.generate(os.urandom)
        self.loop = asyncio.new_event_loop()
        self.link = RecordingLink()
        core = assemble_core(
            settings,
            self.store,
            self.identity,
            self.events,
            self.drops,
            self.work,
            pytest.fail,
            self.link,
            self.loop,
            Followers(clock_ms),
            clock_ms=clock_ms,
        )
        self.rooms, self.kdf = core.rooms, core.kdf
        self.sending, self.methods, self.inbox = core.sending, core.methods, core.inbox
        self.repair = core.repair
        # As rpc_join does, without its Argon2id run.
        self.room = Room.passphrase_room(
            ROOM, "aes-256-gcm", keys, DEFAULT_KDF, "mqchat/v1", weak=False, joined_ms=clock_ms()
        )
        self.store.rooms.save(self.room.to_record())
        self.rooms.add(self.room)
        self.store.memory.set_pin(ROOM, "alice", self.identity.public_key)

    def requests(self, *params: dict[str, Any]) -> list[Any]:
        """Handle ``send`` requests as one batch, as the IPC server does: result or error each."""
        results: list[Any] = []
        with self.work.batch():
            for p in params:
                try:
                    with self.work.part():
                        results.append(self.sending.send(ROOM, **p))
                except Exception as exc:
                    results.append(exc)
        return results

    def receive(self, *payloads: bytes) -> None:
        """Hand payloads to the inbox as paho does, and let the loop store them."""

        async def deliver() -> None:
            self.inbox.on_messages(
                [
                    Incoming(self.room.topic, payload, mid, 1)
                    for mid, payload in enumerate(payloads, 1)
                ]
            )
            stored = asyncio.get_running_loop().create_future()
            # call_soon runs callbacks in order: a pass the inbox left for later runs first.
            asyncio.get_running_loop().call_soon(stored.set_result, None)
            await stored

        self.loop.run_until_complete(deliver())

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """What a fresh connection reads: only what was committed."""
        db = sqlite3.connect(self.path)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def call(self, method: str, **params: Any) -> Any:
        """A request as the IPC server serves it, by the method table."""
        return self.methods.call(Request(1, method, params))

    def close(self) -> None:
        self.loop.close()
        self.kdf.close()
        self.events.close()
        self.store.close()


@pytest.fixture
def keys() -> RoomKeys:
    return RoomKeys(os.urandom(32), os.urandom(32))


@pytest.fixture
def parts(keys: RoomKeys) -> Iterator[Parts]:
    # A short directory of our own: events.sock must stay under the 107-byte limit.
    home = Path(f"/tmp/mqbs-{os.getpid()}-{os.urandom(3).hex()}")
    home.mkdir(mode=0o700)
    p = Parts(home, keys)
    try:
        yield p
    finally:
        p.close()
        for path in sorted(home.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        home.rmdir()


def fail_on_call(real: Callable[..., Any], calls: set[int]) -> Callable[..., Any]:
    """``real``, except that the given calls (1-based) raise Injected."""
    count = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        if count in calls:
            raise Injected(f"call {count}")
        return real(*args, **kwargs)

    return wrapper


def queued(kind: int, body: bytes) -> tuple[str, int]:
    """A text as the outbox keeps it: its version 2 record, sealed when it goes."""
    record = decode_record(kind, body)
    assert isinstance(record, Text)
    return record.text, record.seq


# ---------------------------------------------------------------------- sends


def test_a_send_that_fails_after_sealing_leaves_nothing_and_its_batch_commits(
    parts: Parts, keys: RoomKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The third send's message row is staged, then its outbox entry fails.
    monkeypatch.setattr(parts.store.outbox, "add", fail_on_call(parts.store.outbox.add, {3}))
    results = parts.requests(*({"text": f"m{i}"} for i in range(1, 6)))

    assert isinstance(results[2], Injected)
    assert [r["seq"] for r in results if isinstance(r, dict)] == [1, 2, 3, 4]
    assert parts.rows("SELECT seq, text FROM messages ORDER BY seq") == [
        (1, "m1"),
        (2, "m2"),
        (3, "m4"),
        (4, "m5"),
    ]
    sent = [queued(k, p) for k, p in parts.rows("SELECT kind, payload FROM outbox ORDER BY id")]
    assert [text for text, _ in sent] == ["m1", "m2", "m4", "m5"]
    seqs = [seq for _, seq in sent]
    assert seqs == sorted(set(seqs))
    # Kept for repair, the four. No seen ids or seqs: our own signed texts are refused
    # by their key when they come back (receiving.judge).
    assert [s for (s,) in parts.rows("SELECT seq FROM sent ORDER BY seq")] == seqs
    assert parts.rows("SELECT id FROM seen_ids") == []
    assert parts.rows("SELECT seq FROM seen_seqs") == []
    # And the next send carries on from there, in memory as in the store.
    (after,) = parts.requests({"text": "m6"})
    assert after["seq"] == 5


def test_a_send_of_many_texts_is_stored_whole_or_not_at_all(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parts.store.outbox, "add", fail_on_call(parts.store.outbox.add, {5}))
    first, failed, last = parts.requests(
        {"texts": ["a", "b", "c"]}, {"texts": ["d", "e", "f"]}, {"texts": ["g"]}
    )
    assert first["count"] == 3 and first["seqs"] == [1, 2, 3]
    assert isinstance(failed, Injected)  # its second outbox entry: two rows were staged
    assert last["count"] == 1 and last["seqs"] == [4]
    assert parts.rows("SELECT text FROM messages ORDER BY seq") == [("a",), ("b",), ("c",), ("g",)]
    assert len(parts.rows("SELECT id FROM outbox")) == 4
    assert len(parts.rows("SELECT seq FROM sent")) == 4


def test_a_text_too_long_refuses_its_request_before_anything_is_sealed(parts: Parts) -> None:
    (refused,) = parts.requests({"texts": ["fine", "x" * (MAX_TEXT_BYTES + 1)]})
    assert isinstance(refused, MessageTooLong)
    assert refused.message.startswith("texts[1]: ")
    assert parts.rows("SELECT COUNT(*) FROM messages") == [(0,)]
    assert parts.rows("SELECT COUNT(*) FROM sent") == [(0,)]


def test_a_batch_of_sends_takes_no_savepoint_per_message(parts: Parts) -> None:
    statements: list[str] = []
    connection = parts.store._db  # the store's own: what SQLite ran for the batch
    connection.set_trace_callback(statements.append)
    parts.requests(*({"text": f"m{i}"} for i in range(200)))
    connection.set_trace_callback(None)
    savepoints = [s for s in statements if s.startswith("SAVEPOINT")]
    assert len(savepoints) <= 1  # the one that writes the staged rows
    assert sum(s.startswith("BEGIN") for s in statements) == 1
    assert sum(s.startswith("COMMIT") for s in statements) == 1
    assert parts.rows("SELECT COUNT(*) FROM messages") == [(200,)]


def test_a_batch_that_does_not_commit_leaves_nothing(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts.requests({"text": "kept"})

    def disk_full(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(parts.store.messages, "write", disk_full)
    with pytest.raises(sqlite3.OperationalError):
        parts.requests({"text": "lost 1"}, {"texts": ["lost 2", "lost 3"]})
    monkeypatch.undo()
    assert parts.rows("SELECT text FROM messages") == [("kept",)]
    assert parts.rows("SELECT COUNT(*) FROM outbox") == [(1,)]
    # The counters the batch moved came back from the store.
    (after,) = parts.requests({"text": "next"})
    assert after["seq"] == 2


def test_history_in_a_batch_sees_the_sends_before_it(parts: Parts) -> None:
    """A tail that asks history in the same batch as a send must get the message in
    history: its event comes after the commit, below the last_seq history gave."""
    with parts.work.batch():
        with parts.work.part():
            parts.call("send", room=ROOM, text="just sent")
        with parts.work.part():
            history = parts.call("history", room=ROOM, limit=None, since=0)
    assert history["last_seq"] == 1
    assert [m["text"] for m in history["messages"]] == ["just sent"]


def test_leave_in_a_batch_takes_the_sends_before_it_out_of_the_outbox(parts: Parts) -> None:
    with parts.work.batch():
        with parts.work.part():
            parts.call("send", room=ROOM, text="never sent")
        with parts.work.part():
            parts.call("leave", room=ROOM)
    assert parts.rows("SELECT COUNT(*) FROM outbox") == [(0,)]


# ---------------------------------------------------------------------- received payloads


def sealed_by(sender: SigningIdentity, keys: RoomKeys, text: str, seq: int) -> bytes:
    return envelope.seal(
        keys,
        sender,
        name="bob",
        text=text,
        seq=seq,
        timestamp_ms=clock_ms(),
        random=os.urandom,
        cipher="aes-256-gcm",
    )[1]


def test_copies_within_one_batch_are_dropped_before_anything_is_written(
    parts: Parts, keys: RoomKeys
) -> None:
    bob = SigningIdentity.generate(os.urandom)
    first = sealed_by(bob, keys, "once", 1)
    same_seq_other_id = sealed_by(bob, keys, "replayed seq", 1)
    parts.receive(first, first, same_seq_other_id, sealed_by(bob, keys, "twice", 2))
    assert parts.rows("SELECT text, verified FROM messages ORDER BY seq") == [
        ("once", 1),
        ("twice", 1),
    ]
    assert parts.drops.as_dict() == {"duplicate": 1, "replay": 1}
    assert parts.rows("SELECT COUNT(*) FROM pins WHERE name = 'bob'") == [(1,)]


def failing_for(real: Callable[..., Any], text: str) -> Callable[..., Any]:
    """``real``, except that it raises Injected for the message whose text is ``text``."""

    def wrapper(message: Any, *args: Any) -> Any:
        if message.text == text:
            raise Injected(text)
        return real(message, *args)

    return wrapper


def test_a_payload_that_fails_is_dropped_alone_and_can_come_again(
    parts: Parts, keys: RoomKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = SigningIdentity.generate(os.urandom)
    payloads = [sealed_by(bob, keys, f"p{i}", i) for i in range(1, 5)]
    real_insert = parts.store.messages.insert
    monkeypatch.setattr(parts.store.messages, "insert", failing_for(real_insert, "p2"))
    parts.receive(*payloads)
    assert parts.rows("SELECT seq, text FROM messages ORDER BY seq") == [
        (1, "p1"),
        (2, "p3"),
        (3, "p4"),
    ]
    assert parts.drops.as_dict() == {"internal_error": 1}
    monkeypatch.setattr(parts.store.messages, "insert", real_insert)
    # Nothing of it was remembered: the broker's next delivery of it is shown.
    parts.receive(payloads[1])
    assert parts.rows("SELECT text FROM messages WHERE seq = 4") == [("p2",)]


def test_a_text_that_fails_among_many_leaves_the_others_and_each_drop_counted_once(
    parts: Parts, keys: RoomKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Texts in a row are judged as one part (issue 24); when one of them breaks, they
    go again one part each: the one that breaks is dropped alone, the others are
    stored in order, and a drop counted before the break is not counted twice."""
    bob = SigningIdentity.generate(os.urandom)
    p1, p2, p3, p4 = (sealed_by(bob, keys, f"p{i}", i) for i in range(1, 5))
    real_insert = parts.store.messages.insert
    monkeypatch.setattr(parts.store.messages, "insert", failing_for(real_insert, "p3"))
    parts.receive(p1, p1, p2, p3, p4)
    assert parts.rows("SELECT seq, text FROM messages ORDER BY seq") == [
        (1, "p1"),
        (2, "p2"),
        (3, "p4"),
    ]
    assert parts.drops.as_dict() == {"duplicate": 1, "internal_error": 1}
    assert parts.room.last_seq == 3
    monkeypatch.setattr(parts.store.messages, "insert", real_insert)
    parts.receive(p3, p4)  # p3 was not remembered; p4 was
    assert parts.rows("SELECT seq, text FROM messages WHERE seq > 3") == [(4, "p3")]
    assert parts.drops.as_dict() == {"duplicate": 2, "internal_error": 1}


def test_a_batch_that_cannot_be_written_is_written_one_message_at_a_time(
    parts: Parts, keys: RoomKeys
) -> None:
    """A row SQLite refuses (here a trigger refuses one text) fails the batch's
    executemany: the batch is then written message by message, and only the
    message that cannot be written is dropped; the next takes its seq."""
    db = sqlite3.connect(parts.path)
    with db:
        db.execute(
            "CREATE TRIGGER refuse_p2 BEFORE INSERT ON messages WHEN NEW.text = 'p2' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    db.close()
    bob = SigningIdentity.generate(os.urandom)
    payloads = [sealed_by(bob, keys, f"p{i}", i) for i in range(1, 4)]
    parts.receive(*payloads)
    assert parts.rows("SELECT seq, text FROM messages ORDER BY seq") == [(1, "p1"), (2, "p3")]
    assert parts.drops.as_dict() == {"internal_error": 1}
    assert len(parts.rows("SELECT id FROM seen_ids")) == 2
    assert parts.room.last_seq == 2


def test_a_pin_from_a_batch_that_did_not_commit_is_not_remembered(
    parts: Parts, keys: RoomKeys
) -> None:
    """Pins and high-water marks are cached; a batch that rolls back drops the cache,
    also when its rows were written early (a history read) before the failure."""
    bob, mallory = SigningIdentity.generate(os.urandom), SigningIdentity.generate(os.urandom)
    memory = parts.store.memory

    def batch_that_does_not_commit() -> None:
        with parts.work.batch():
            memory.set_pin(ROOM, "bob", mallory.public_key)
            memory.remember(os.urandom(16), clock_ms(), mallory.public_key, 7)
            parts.call("history", room=ROOM, limit=None, since=0)  # writes what is staged
            assert memory.pin(ROOM, "bob") == (mallory.public_key, None)
            assert memory.highest_seq(mallory.public_key) == 7
            raise sqlite3.OperationalError("disk I/O error")  # as a failed COMMIT would

    with pytest.raises(sqlite3.OperationalError):
        batch_that_does_not_commit()
    assert memory.pin(ROOM, "bob") is None
    assert memory.highest_seq(mallory.public_key) is None
    # So bob's own first message pins bob's key, verified.
    parts.receive(sealed_by(bob, keys, "hello", 1))
    assert parts.rows("SELECT sender, verified FROM messages") == [("bob", 1)]
    assert memory.pin(ROOM, "bob") == (bob.public_key, None)


# ---------------------------------------------------------------------- per-message glue


@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_iso_ts_is_the_utc_time_to_the_millisecond(ms: int) -> None:
    stamp = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    assert iso_ts(ms) == stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def test_cipher_objects_belong_to_the_room_keys(keys: RoomKeys) -> None:
    ident = SigningIdentity.generate(os.urandom)

    def seal(k: RoomKeys, cipher: str) -> bytes:
        return envelope.seal(
            k, ident, name="a", text="t", seq=1, timestamp_ms=0, random=os.urandom, cipher=cipher
        )[1]

    assert keys.ciphers == {}
    seal(keys, "aes-256-gcm")
    aead = keys.ciphers["aes-256-gcm"]
    payload = seal(keys, "aes-256-gcm")
    assert envelope.open_payload(payload, keys)[1].text == "t"
    assert keys.ciphers["aes-256-gcm"] is aead  # built once
    # Another room's keys (or the same keys joined again) start with none: nothing
    # outlives the keys object that leave drops.
    again = RoomKeys(keys.message_key, keys.topic_key)
    assert again.ciphers == {} and again == keys
    assert envelope.open_payload(payload, again)[1].text == "t"
    assert not hasattr(envelope, "_key")
    assert envelope.DEFAULT_CIPHER == "aes-256-gcm"


# ---------------------------------------------------------------------- effects in the unit of work


def test_a_batch_that_does_not_commit_leaves_no_room_no_epoch_and_nothing_for_the_broker(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 26 item 1: the room registry, its epochs and what goes to the broker are
    effects of the request like its rows: a batch that rolls back undoes all of them."""

    def disk_full(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    def create() -> None:
        with parts.work.batch(), parts.work.part():
            parts.call("create", room="side", cipher=None)

    monkeypatch.setattr(parts.store.rooms, "write", disk_full)
    with pytest.raises(sqlite3.OperationalError):
        create()
    monkeypatch.undo()
    assert "side" not in parts.rooms.names()
    assert parts.rows("SELECT COUNT(*) FROM rooms WHERE name = 'side'") == [(0,)]
    assert parts.rows("SELECT COUNT(*) FROM room_epochs WHERE room = 'side'") == [(0,)]
    assert parts.link.given == []
    # And the room can be created again, as if the first had never been asked for.
    parts.call("create", room="side", cipher=None)
    assert "side" in parts.rooms.names()
    assert ("subscribe", parts.rooms.require("side").v2_topic) in parts.link.given


def test_a_part_that_breaks_after_a_rekey_publishes_nothing_and_leaves_the_epoch(
    parts: Parts,
) -> None:
    """A bug after a handler changed things: its part is undone, in memory too, and
    the rekey it made never reaches the broker; the other parts of the batch commit."""
    parts.call("create", room="side", cipher=None)
    before = parts.rooms.require("side").epoch
    assert before is not None
    parts.link.given.clear()

    def rekey_then_break() -> None:
        with parts.work.part():
            parts.call("rekey", room="side", remove=None, admins=None, members=None)
            raise Injected("a bug after the rekey")

    with parts.work.batch():
        with pytest.raises(Injected):
            rekey_then_break()
        with parts.work.part():
            parts.call("send", room=ROOM, text="still sent")
    room = parts.rooms.require("side")
    assert room.epoch is not None
    assert (room.epoch.epoch, room.epoch.tag) == (before.epoch, before.tag)
    assert parts.rows("SELECT COUNT(*) FROM room_epochs WHERE room = 'side'") == [(1,)]
    assert [what for what, topic in parts.link.given if topic == room.v2_topic] == []
    assert parts.rows("SELECT text FROM messages") == [("still sent",)]


def test_payloads_that_each_trip_a_bug_cost_one_reload_at_once_and_one_after_the_commit(
    parts: Parts,
) -> None:
    """A hostile sender whose payloads each hit a bug must not make every payload
    reload every room's state: the first failed part reloads at once, the rest once
    after the batch's commit, and the good parts of the batch still commit."""
    reloads: list[int] = []
    parts.work.on_rollback(lambda: reloads.append(1))

    def broken_part() -> None:
        with parts.work.part():
            raise Injected("a bug this payload trips")

    with parts.work.batch():
        for _ in range(10):
            with pytest.raises(Injected):
                broken_part()
        with parts.work.part():
            parts.call("send", room=ROOM, text="still sent")
    assert len(reloads) == 2
    assert parts.rows("SELECT text FROM messages") == [("still sent",)]


def test_a_text_that_fails_after_a_repaired_one_counts_the_repair_once(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repair counts (``status``: repaired) of a run that breaks are taken back
    with its drops, before its texts go again one part each."""
    room = parts.room.with_epoch("mqchat/v1") if parts.room.epoch is None else parts.room
    assert room.epoch is not None and room.v2_topic is not None
    carol = SigningIdentity.generate(os.urandom)

    def batch(*texts: Text) -> bytes:
        return seal_batch(
            room.epoch, carol, name="carol", records=list(texts), sent_ms=clock_ms(),
            random=os.urandom,
        )  # fmt: skip

    def text(seq: int, *, repaired: bool = False) -> Text:
        return Text(1, seq, os.urandom(16), clock_ms(), f"c{seq}", repaired)

    def receive(payload: bytes) -> None:
        async def deliver() -> None:
            parts.inbox.on_messages([Incoming(room.v2_topic or "", payload, 1, 1)])

        parts.loop.run_until_complete(deliver())

    receive(batch(text(1), text(3)))  # 2 is missing: 3 waits behind it
    real_insert = parts.store.messages.insert
    monkeypatch.setattr(parts.store.messages, "insert", failing_for(real_insert, "c4"))
    receive(batch(text(2, repaired=True), text(4)))
    assert parts.rows("SELECT text FROM messages ORDER BY seq") == [("c1",), ("c2",), ("c3",)]
    assert parts.repair.counts["repaired"] == 1
    assert parts.drops.as_dict() == {"internal_error": 1}
