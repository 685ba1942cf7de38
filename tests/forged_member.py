"""A member of a passphrase room that chatd does not run: it seals what a test tells it
with its own Ed25519 key and the room's key, as a hostile member could (issue 22)."""

from __future__ import annotations

import os
import time

from forge import epoch_zero
from harness import PASSPHRASE
from mqchat.errors import ProtocolError
from mqchat.protocol.batch import Batch, open_batch, seal_batch
from mqchat.protocol.epochs import EpochKeys
from mqchat.protocol.records import Heads, Record, Text
from mqchat.protocol.signing import SigningIdentity
from rawmqtt import RawClient


class Forger:
    """A member of ``room`` that chatd does not run: seals what it is told, with a
    signed time that goes forward unless it is told otherwise."""

    def __init__(self, room: str, name: str = "carol", keys: EpochKeys | None = None) -> None:
        self.keys = keys or epoch_zero(PASSPHRASE, room)  # Argon2id: 0.3 s
        self.topic = self.keys.topic("mqchat/v1")
        self.identity = SigningIdentity.generate(os.urandom)
        self.name = name
        self._last_ms = 0

    def seal(self, records: list[Record], sent_ms: int | None = None) -> bytes:
        if sent_ms is None:
            sent_ms = self._last_ms = max(self._last_ms + 1, int(time.time() * 1000))
        return seal_batch(
            self.keys, self.identity, name=self.name, records=records, sent_ms=sent_ms,
            random=os.urandom,
        )  # fmt: skip

    def batches(self, raw: RawClient) -> list[Batch]:
        """Every batch of the room the broker carried, opened."""
        opened = []
        for payload in raw.on_topic(self.topic):
            try:
                opened.append(open_batch(payload, self.keys))
            except ProtocolError:
                continue
        return opened


def texts_of(batches: list[Batch], key: bytes, *, repaired: bool) -> list[Text]:
    return [
        r
        for b in batches
        if b.sender_key == key
        for r in b.records
        if isinstance(r, Text) and r.repaired == repaired
    ]


def heads_of(batches: list[Batch], key: bytes) -> list[Heads]:
    return [r for b in batches if b.sender_key == key for r in b.records if isinstance(r, Heads)]
