"""Payloads from the broker opened: decrypted, verified and split into what the
receiving rules judge (docs/protocol.md §6, §19, §20).

Opening uses no store and writes nothing: a payload that does not open is counted
and dropped here; what opens is judged, stored and shown by mqchat.daemon.inbox.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from mqchat.daemon.broker import Incoming
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.publisher import LinkEffects
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.errors import PayloadTooLarge, ProtocolError
from mqchat.protocol import envelope
from mqchat.protocol import legacy as legacy_codec
from mqchat.protocol.batch import Batch, open_batch
from mqchat.protocol.epochs import EpochKeys
from mqchat.protocol.kdf import RoomKeys
from mqchat.protocol.limits import MAX_TIMESTAMP_MS
from mqchat.protocol.receiving import Arrival, stream_key
from mqchat.protocol.records import Heads, RepairRequest, Text

T = TypeVar("T")

V2 = b"\x02"


class Opened(NamedTuple):
    """A payload opened and checked, before the receiving rules judge it."""

    room: Room
    arrival: Arrival
    text: str
    legacy: bool
    stream: int = 0
    """A version 2 text's stream (0: version 1 or legacy)."""
    repaired: bool = False
    control: Heads | RepairRequest | None = None
    """A record of the batch that is not a text, handled in order with its texts."""
    sent_ms: int = 0
    batch: int = 0
    """The signed time of a control record's batch, and the batch's number here
    (mqchat.daemon.control_order)."""
    membership: tuple[Batch, bytes] | None = None
    """A version 2 batch itself, with its payload: its membership records and presence
    (mqchat.daemon.membership), handled before its texts in the same unit of work."""


def legacy_id(payload: bytes) -> bytes:
    """Legacy payloads carry no id: a token's hash stands in (its IV makes it unique)."""
    return hashlib.sha256(payload).digest()[:16]


class PayloadOpener:
    def __init__(self, *, rooms: RoomRegistry, drops: DropCounter, link: LinkEffects) -> None:
        self._rooms = rooms
        self._drops = drops
        self._link = link
        self._unsubscribed: set[str] = set()
        self._batches = 0  # batches opened, to number them (mqchat.daemon.control_order)

    def open(self, inc: Incoming) -> list[Opened]:
        """The payload's messages, ready to be judged; none if it is dropped."""
        room = self._rooms.on_topic(inc.topic)
        if room is None:
            self._drops.drop("unknown_topic")
            if inc.topic and inc.topic not in self._unsubscribed:
                # A subscription the broker kept for us (a room left while the
                # broker was down, a lost database): stop it coming.
                self._unsubscribed.add(inc.topic)
                self._link.unsubscribe(inc.topic)
            return []
        if room.legacy_key is not None:
            one = self._open_legacy(room, room.legacy_key, inc.payload)
        elif inc.topic in room.expired:
            # An epoch past its grace period (docs/protocol.md §17.4): its keys are gone.
            self._drops.drop("old_epoch")
            return []
        else:
            epoch_keys = room.epoch_keys_for(inc.topic)
            if epoch_keys is not None and inc.payload[:1] == V2:
                return self._open_v2(room, epoch_keys, inc.payload)
            # Version 1 payloads of a passphrase room, until its first rekey's grace
            # period ends (docs/protocol.md §17.4).
            if room.keys is None or not room.opens_v1:
                self._drops.drop("undecryptable", "not a version 2 payload of this room's epochs")
                return []
            one = self._open(room, room.keys, inc.payload)
        return [] if one is None else [one]

    def _opened(self, payload: bytes, opener: Callable[[], T]) -> T | None:
        """Run a decoder; count and drop what it refuses."""
        try:
            return opener()
        except PayloadTooLarge:
            self._drops.drop("oversized", f"{len(payload)} bytes")
        except ProtocolError as exc:
            self._drops.drop("undecryptable", str(exc))
        return None

    def _open(self, room: Room, keys: RoomKeys, payload: bytes) -> Opened | None:
        opened = self._opened(payload, lambda: envelope.open_payload(payload, keys))
        if opened is None:
            return None
        m = opened[1]
        arrival = Arrival(
            room.name, room.joined_ms, m.sender_name, m.sender_key, m.message_id, m.seq,
            m.timestamp_ms,
        )  # fmt: skip
        return Opened(room, arrival, m.text, legacy=False)

    def _open_v2(self, room: Room, keys: EpochKeys, payload: bytes) -> list[Opened]:
        """A version 2 batch (docs/protocol.md §19, §20): the batch itself (for its
        membership records and presence), then its texts and control records, each
        judged as a part of the unit of work like any message. Opening uses no store."""
        batch = self._opened(payload, lambda: open_batch(payload, keys))
        if batch is None:
            return []
        texts: list[Opened] = []
        self._batches += 1
        seq_keys: dict[int, bytes] = {}  # a batch's texts are mostly of one stream: hash once
        for record in batch.records:
            if isinstance(record, Text):
                if record.timestamp_ms > MAX_TIMESTAMP_MS:
                    # Version 1's bound (docs/protocol.md §6): no date after 9999-12-31.
                    self._drops.drop("undecryptable", "a text's timestamp is after 9999-12-31")
                    continue
                seq_key = seq_keys.get(record.stream)
                if seq_key is None:
                    seq_key = seq_keys[record.stream] = stream_key(
                        batch.sender_key, room.name, record.stream
                    )
                arrival = Arrival(
                    room.name, room.joined_ms, batch.sender_name, batch.sender_key,
                    record.message_id, record.seq, record.timestamp_ms, seq_key,
                )  # fmt: skip
                # room, arrival, text, legacy, stream, repaired: positional is faster
                texts.append(
                    Opened(room, arrival, record.text, False, record.stream, record.repaired)
                )
            elif isinstance(record, Heads | RepairRequest):
                arrival = Arrival(
                    room.name, room.joined_ms, batch.sender_name, batch.sender_key, b"", None, 0
                )
                texts.append(
                    Opened(
                        room, arrival, "", legacy=False, control=record,
                        sent_ms=batch.sent_ms, batch=self._batches,
                    )
                )  # fmt: skip
            # Rekeys go to on_batch (the epoch keeper).
        if batch.skipped:
            self._drops.drop("unknown_record", f"{batch.skipped} of an unknown kind")
        membership = Arrival(
            room.name, room.joined_ms, batch.sender_name, batch.sender_key, b"", None, 0
        )
        return [Opened(room, membership, "", legacy=False, membership=(batch, payload)), *texts]

    def _open_legacy(
        self, room: Room, key: legacy_codec.LegacyKey, payload: bytes
    ) -> Opened | None:
        lm = self._opened(payload, lambda: legacy_codec.open_legacy(payload, key))
        if lm is None:
            return None
        ts = lm.timestamp_s * 1000
        if not 0 <= ts <= MAX_TIMESTAMP_MS:
            self._drops.drop("undecryptable", "legacy timestamp out of range")
            return None
        arrival = Arrival(
            room.name, room.joined_ms, lm.sender_name, None, legacy_id(payload), None, ts
        )
        return Opened(room, arrival, lm.text, legacy=True)
