"""Sealing what waits in the outbox into version 2 batches (docs/protocol.md §12.4, §21).

The outbox keeps a version 2 message as its text record, not as a payload: it
is sealed only when the broker link has room for it, together with whatever
else of the same room is waiting then, in one batch signed once and encrypted
once. No timer: a message sent on an idle daemon leaves at once, alone. A
batch is sealed with the room's epoch at that moment, so what waited through a
rekey goes out in the new epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mqchat.daemon.rooms import RoomRegistry
from mqchat.daemon.store import OutboxEntry
from mqchat.protocol.batch import seal_bodies
from mqchat.protocol.signing import SigningIdentity


class Sealed:
    """One batch: its topic, its payload and how many of the entries it carries."""

    __slots__ = ("count", "payload", "topic")

    def __init__(self, topic: str, payload: bytes, count: int) -> None:
        self.topic = topic
        self.payload = payload
        self.count = count


class BatchSealer:
    def __init__(
        self,
        *,
        rooms: RoomRegistry,
        identity: SigningIdentity,
        name: str,
        clock_ms: Callable[[], int],
        random: Callable[[int], bytes],
    ) -> None:
        self._rooms = rooms
        self._identity = identity
        self._name = name
        self._clock_ms = clock_ms
        self._random = random

    def seal(self, entries: Sequence[OutboxEntry]) -> Sealed | None:
        """Seal the leading entries (records of one room) that fit one batch.

        None when the room is no longer joined, or has no version 2 keys: the
        entries cannot be sent and the caller removes them.
        """
        room = self._rooms.get(entries[0].room)
        if room is None or room.epoch is None or room.v2_topic is None:
            return None
        # Texts, heads and repair requests, all the outbox holds: sealed from the
        # bodies they were queued as (record_body), with no decoding and encoding
        # each again. A repaired text may wait beside its original (a repair asked
        # for before the original's PUBACK): a batch holds a number once (§14), so
        # the batch ends before the second.
        payload, count = seal_bodies(
            room.epoch,
            self._identity,
            name=self._name,
            bodies=[(entry.kind, entry.payload) for entry in entries],
            sent_ms=self._clock_ms(),
            random=self._random,
            cipher=room.cipher,
        )
        return Sealed(room.v2_topic, payload, count)
