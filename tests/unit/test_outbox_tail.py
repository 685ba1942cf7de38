"""The outbox answers ``after`` from the rows it just wrote (issue 24): never other
than the store would.

Random runs of what the daemon does to the outbox (batches that commit or fail,
parts that are undone, removals after PUBACKs, rooms deleted) are checked after
every step against the store itself, read with SQL.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from mqchat.daemon.store import OutboxEntry, Store
from mqchat.daemon.store.tables import WrittenTail

ROOMS = ("a", "b", "c")


class Failed(Exception):
    """A batch made to fail on purpose."""


def truth(store: Store, entry_id: int, limit: int) -> list[OutboxEntry]:
    rows = store._db.execute(  # the same connection: it sees the batch's own rows
        "SELECT id, room, topic, qos, payload, kind FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
        (entry_id, limit),
    ).fetchall()
    return [OutboxEntry(*row) for row in rows]


def ids(store: Store) -> list[int]:
    return [row[0] for row in store._db.execute("SELECT id FROM outbox ORDER BY id")]


def add_some(store: Store, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 5)):
        room = rng.choice(ROOMS)
        # now and then a big one: what is kept is bounded in bytes (a flood of 16 KB
        # lines once held 64 MB here); the bound is 4 KiB in this test
        payload = rng.randbytes(rng.choice((1, 8, 8, 8, 3000)))
        store.outbox.add(OutboxEntry(0, room, f"t/{room}", 1, payload, rng.choice((0, 1))))


def failing_batch(store: Store, rng: random.Random, *, flush: bool) -> None:
    with store.batch():
        add_some(store, rng)
        if flush:
            store.flush()  # written early (a read inside the batch), then undone
        raise Failed


def step(store: Store, rng: random.Random) -> None:
    what = rng.randrange(7)
    if what <= 1:  # a batch that commits
        with store.batch():
            add_some(store, rng)
    elif what == 2:  # a batch that fails: nothing of it stays
        with pytest.raises(Failed):
            failing_batch(store, rng, flush=rng.random() < 0.5)
    elif what == 3:  # a part whose writes and room delete are undone
        with store.batch():
            add_some(store, rng)
            mark = store.mark()
            add_some(store, rng)
            store.rooms.delete(rng.choice(ROOMS))
            store.undo(mark)
    elif what == 4 and ids(store):  # PUBACKs: what was published goes
        present = ids(store)
        store.outbox.remove(rng.sample(present, rng.randint(1, len(present))))
    elif what == 5:  # leaving a room
        with store.batch():
            store.rooms.delete(rng.choice(ROOMS))
    else:  # outside a batch, as repair and presence queue records
        add_some(store, rng)


@pytest.mark.parametrize("seed", range(12))
def test_after_answers_as_the_store_does(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(WrittenTail, "LIMIT_BYTES", 4096)
    rng = random.Random(seed)
    store = Store(tmp_path / "mqchat.db", retention=100)
    try:
        for _ in range(120):
            step(store, rng)
            present = ids(store)
            probes = {0, *(i - 1 for i in present), *present, (present or [0])[-1] + 3}
            for entry_id in sorted(probes):  # the window's cursor only moves on
                limit = rng.choice((1, 2, 256))
                assert store.outbox.after(entry_id, limit) == truth(store, entry_id, limit)
                held = store.outbox._tail
                assert held._bytes == sum(len(row.payload) for row in held._rows)
                assert held._bytes <= WrittenTail.LIMIT_BYTES
    finally:
        store.close()


def test_rows_written_in_a_batch_that_then_fails_are_not_held(tmp_path: Path) -> None:
    """The outbox writes its rows before the sent records; when those are refused,
    the batch rolls back, and the outbox must not answer with its rows."""
    store = Store(tmp_path / "mqchat.db", retention=100)
    try:
        with store.batch():
            store.outbox.add(OutboxEntry(0, "a", "t/a", 1, b"x", 1))
        first = store.outbox.after(0, 10)
        store._db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON sent BEGIN SELECT RAISE(ABORT, 'no'); END"
        )

        def refused_batch() -> None:
            with store.batch():
                store.outbox.add(OutboxEntry(0, "a", "t/a", 1, b"y", 1))
                store.sent.add("a", 1, 1, b"y")

        with pytest.raises(sqlite3.IntegrityError):
            refused_batch()
        assert store.outbox.after(0, 10) == first == truth(store, 0, 10)
    finally:
        store.close()
