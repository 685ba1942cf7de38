"""Sealing from the bodies records were queued as gives the same bytes as sealing the
records (issue 24: the sender no longer decodes and encodes each one again)."""

from __future__ import annotations

import random

import pytest

from mqchat.errors import ProtocolError
from mqchat.protocol.batch import (
    MAX_RECORDS,
    bodies_that_fit,
    open_batch,
    seal_batch,
    seal_bodies,
)
from mqchat.protocol.epochs import EpochKeys
from mqchat.protocol.records import Heads, Kind, Record, RepairRequest, Text, record_body
from mqchat.protocol.signing import SigningIdentity

KEYS = EpochKeys(bytes(range(32)), 3)
ALICE = SigningIdentity.from_private_bytes(bytes(32))


def fixed_random(n: int) -> bytes:
    return bytes(range(n))


def some_records(rng: random.Random, count: int) -> list[Record]:
    records: list[Record] = []
    for seq in range(1, count + 1):
        pick = rng.random()
        if pick < 0.8:
            text = "".join(rng.choice("aé€😀 \n") for _ in range(rng.randint(0, 300)))
            records.append(Text(7, seq, rng.randbytes(16), 1_700_000_000_000 + seq, text))
        elif pick < 0.9:
            records.append(Heads(7, 1, seq))
        else:
            records.append(RepairRequest(b"\x01" * 32, 7, ((1, seq),)))
    return records


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305", "fernet"])
def test_the_same_bytes_as_sealing_the_records(cipher: str) -> None:
    rng = random.Random(24)
    for _ in range(40):
        records = some_records(rng, rng.randint(1, 300))
        bodies = [record_body(r) for r in records]
        count = bodies_that_fit(bodies, name="alice")
        by_records = seal_batch(
            KEYS, ALICE, name="alice", records=records[:count], sent_ms=5,
            random=fixed_random, cipher=cipher,
        )  # fmt: skip
        by_bodies, sealed = seal_bodies(
            KEYS, ALICE, name="alice", bodies=bodies, sent_ms=5,
            random=fixed_random, cipher=cipher,
        )  # fmt: skip
        assert (by_bodies, sealed) == (by_records, count)
        assert open_batch(by_bodies, KEYS).records == tuple(records[:count])


def test_a_repeated_number_or_id_ends_the_batch_before_it() -> None:
    first = Text(7, 1, bytes(16), 1, "one")
    again = Text(7, 1, bytes(range(16)), 1, "one, repaired", repaired=True)
    same_id = Text(7, 2, bytes(16), 1, "two")
    bodies = [record_body(r) for r in (first, again)]
    assert bodies_that_fit(bodies, name="alice") == 1
    assert bodies_that_fit([record_body(first), record_body(same_id)], name="alice") == 1
    many = [record_body(Text(7, s, s.to_bytes(16, "big"), 1, "x")) for s in range(1, 300)]
    assert bodies_that_fit(many, name="alice") == MAX_RECORDS


def test_kinds_with_rules_of_their_own_and_nothing_at_all_are_not_sealed_from_bodies() -> None:
    for bodies in ([(Kind.MEMBER_KEY, b"\x01" * 32)], []):
        with pytest.raises(ProtocolError):
            seal_bodies(KEYS, ALICE, name="alice", bodies=bodies, sent_ms=5, random=fixed_random)


def test_a_second_singleton_ends_the_batch_before_it() -> None:
    key = (Kind.MEMBER_KEY, b"\x01" * 32)
    assert bodies_that_fit([record_body(Text(7, 1, bytes(16), 1, "x")), key, key], name="a") == 2
