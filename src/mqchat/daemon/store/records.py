"""What the store holds, as the rest of the daemon sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


@dataclass(frozen=True)
class RoomRecord:
    name: str
    cipher: str
    legacy: bool
    weak: bool
    kdf: dict[str, Any]
    key_a: bytes
    key_b: bytes | None
    topic: str
    joined_ms: int

    def __repr__(self) -> str:
        return f"RoomRecord(name={self.name!r}, cipher={self.cipher!r}, legacy={self.legacy})"


class StoredMessage(NamedTuple):
    """A stored message; its fields are the messages table's columns, in their order,
    so that it is a row as it is (a frozen dataclass cost ~2 µs a text to build)."""

    room: str
    seq: int
    id: str
    ts_ms: int
    sender: str
    fingerprint: str
    verified: bool
    own: bool
    legacy: bool
    text: str


class OutboxEntry(NamedTuple):
    """A payload to publish as it is (``kind`` 0: version 1 and legacy), or a version 2
    record to seal into a batch when the link is free (``kind`` its record kind,
    ``payload`` its body): docs/protocol.md §21. A NamedTuple: one is built for every
    text sent and again when it is read to be sealed (a frozen dataclass ~1 µs more)."""

    id: int
    room: str
    topic: str
    qos: int
    payload: bytes
    kind: int = 0
