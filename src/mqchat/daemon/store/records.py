"""What the store holds, as the rest of the daemon sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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


@dataclass(frozen=True)
class StoredMessage:
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


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    room: str
    topic: str
    qos: int
    payload: bytes
