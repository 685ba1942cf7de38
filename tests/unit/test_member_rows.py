"""Members.get answers from the rows it read or wrote (issue 24): never other than
the store would.

Random runs of what presence and membership do to the members table (saves with
and without a member key, removals, a room forgotten, batches that commit or
fail, parts that are undone) are checked after every step against SQL.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mqchat.daemon.store import Member, Store

ROOMS = ("a", "b")
KEYS = tuple(bytes([i]) * 32 for i in range(1, 5))


class Failed(Exception):
    """A batch made to fail on purpose."""


def truth(store: Store, room: str, key: bytes) -> Member | None:
    row = store._db.execute(
        "SELECT room, sender_key, name, x25519_key, last_seen_ms, interval_s, online "
        "FROM members WHERE room = ? AND sender_key = ?",
        (room, key),
    ).fetchone()
    if row is None:
        return None
    r, k, n, x, seen, interval, online = row
    return Member(r, bytes(k), n, x, seen, interval, bool(online))


def change(store: Store, rng: random.Random) -> None:
    room, key = rng.choice(ROOMS), rng.choice(KEYS)
    what = rng.randrange(6)
    if what <= 2:
        x25519 = rng.choice((None, None, rng.randbytes(32)))
        member = Member(
            room,
            key,
            rng.choice(("bob", "carol")),
            x25519,
            rng.randrange(10**6),
            30,
            rng.random() < 0.8,
        )
        store.members.save(member)
    elif what == 3:
        store.members.remove(room, key)
    elif what == 4:
        store.members.forget_room(room)
    else:
        store.members.get(room, key)  # a read in the middle of a batch


def failing_batch(store: Store, rng: random.Random) -> None:
    with store.batch():
        change(store, rng)
        if rng.random() < 0.5:
            store.flush()
        change(store, rng)
        raise Failed


def step(store: Store, rng: random.Random) -> None:
    what = rng.randrange(5)
    if what <= 1:
        with store.batch():
            for _ in range(rng.randint(1, 4)):
                change(store, rng)
    elif what == 2:
        with pytest.raises(Failed):
            failing_batch(store, rng)
    elif what == 3:  # a part undone
        with store.batch():
            change(store, rng)
            mark = store.mark()
            change(store, rng)
            if rng.random() < 0.3:
                store.flush()
            store.undo(mark)
    else:
        change(store, rng)  # outside a batch: a transaction of its own


@pytest.mark.parametrize("seed", range(12))
def test_get_answers_as_the_store_does(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = Store(tmp_path / "mqchat.db", retention=100)
    try:
        for _ in range(150):
            step(store, rng)
            for room in ROOMS:
                for key in KEYS:
                    assert store.members.get(room, key) == truth(store, room, key)
    finally:
        store.close()
