"""A repaired text never shares a batch with its original (docs/protocol.md §14, §21).

A repair may be asked for while the original still waits for its PUBACK; both
then wait in the outbox, and a batch may hold a (stream, seq) once: the sealer
ends the batch before the second copy.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from mqchat.daemon.sealing import BatchSealer
from mqchat.daemon.store import OutboxEntry
from mqchat.protocol.batch import open_batch
from mqchat.protocol.epochs import EpochKeys
from mqchat.protocol.records import Kind, Text, record_body
from mqchat.protocol.signing import SigningIdentity


def entry(i: int, record: Text) -> OutboxEntry:
    kind, body = record_body(record)
    return OutboxEntry(i, "lobby", "t", 1, body, kind)


def test_the_batch_ends_before_a_second_copy_of_a_number() -> None:
    keys = EpochKeys(bytes(range(32)), 0)
    room = SimpleNamespace(epoch=keys, v2_topic="t", cipher="aes-256-gcm")
    rooms: Any = SimpleNamespace(get=lambda name: room)
    sealer = BatchSealer(
        rooms=rooms,
        identity=SigningIdentity.generate(os.urandom),
        name="alice",
        clock_ms=lambda: 0,
        random=os.urandom,
    )
    one = Text(5, 1, b"\x01" * 16, 0, "one")
    two = Text(5, 2, b"\x02" * 16, 0, "two")
    again = Text(5, 1, b"\x01" * 16, 0, "one", repaired=True)
    sealed = sealer.seal([entry(1, one), entry(2, two), entry(3, again)])
    assert sealed is not None and sealed.count == 2
    assert list(open_batch(sealed.payload, keys).records) == [one, two]
    rest = sealer.seal([entry(3, again)])
    assert rest is not None and rest.count == 1
    (repaired,) = open_batch(rest.payload, keys).records
    assert repaired == again and record_body(repaired)[0] == Kind.REPAIRED_TEXT
