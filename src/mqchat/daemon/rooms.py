"""A joined room as the daemon holds it: name, mode, keys, topic, last seq."""

from __future__ import annotations

from dataclasses import dataclass, field

from mqchat.daemon.store import RoomRecord
from mqchat.protocol.kdf import KdfParams, RoomKeys, topic_for
from mqchat.protocol.legacy import LegacyKey, legacy_topic

LEGACY_WARNING = (
    "legacy room: anyone who knows or guesses the passphrase can read it; the passphrase "
    "itself is the encryption key (short ones pad to a constant key); senders are unverified"
)


@dataclass
class Room:
    name: str
    cipher: str
    weak: bool
    kdf: KdfParams
    keys: RoomKeys | None = field(repr=False)
    legacy_key: LegacyKey | None = field(repr=False)
    topic: str
    last_seq: int = 0
    joined_ms: int = 0

    @property
    def legacy(self) -> bool:
        return self.legacy_key is not None

    @property
    def qos(self) -> int:
        # The original program publishes and subscribes at QoS 0.
        return 0 if self.legacy else 1

    @property
    def warning(self) -> str | None:
        return LEGACY_WARNING if self.legacy else None

    @classmethod
    def passphrase_room(
        cls,
        name: str,
        cipher: str,
        keys: RoomKeys,
        kdf: KdfParams,
        prefix: str,
        *,
        weak: bool,
        joined_ms: int,
    ) -> Room:
        return cls(
            name, cipher, weak, kdf, keys, None, topic_for(prefix, keys.tag), joined_ms=joined_ms
        )

    @classmethod
    def legacy_room(cls, name: str, key: LegacyKey, *, joined_ms: int) -> Room:
        return cls(
            name,
            "fernet",
            True,
            KdfParams(0, 0, 0),
            None,
            key,
            legacy_topic(name),
            joined_ms=joined_ms,
        )

    def same_key(self, other: Room) -> bool:
        if self.keys is not None and other.keys is not None:
            return self.keys.message_key == other.keys.message_key
        if self.legacy_key is not None and other.legacy_key is not None:
            return self.legacy_key.fernet_key == other.legacy_key.fernet_key
        return False

    def to_record(self) -> RoomRecord:
        if self.keys is not None:
            key_a, key_b = self.keys.message_key, self.keys.topic_key
        elif self.legacy_key is not None:
            key_a, key_b = self.legacy_key.fernet_key, None
        else:  # pragma: no cover - a Room always has one of the two
            raise ValueError("room without key")
        return RoomRecord(
            self.name,
            self.cipher,
            self.legacy,
            self.weak,
            self.kdf.as_dict(),
            key_a,
            key_b,
            self.topic,
            self.joined_ms,
        )

    @classmethod
    def from_record(cls, rec: RoomRecord, last_seq: int) -> Room:
        kdf = KdfParams.from_dict(rec.kdf)
        if rec.legacy:
            return cls(
                rec.name,
                rec.cipher,
                rec.weak,
                kdf,
                None,
                LegacyKey(rec.key_a),
                rec.topic,
                last_seq,
                rec.joined_ms,
            )
        keys = RoomKeys(rec.key_a, rec.key_b or b"")
        return cls(
            rec.name, rec.cipher, rec.weak, kdf, keys, None, rec.topic, last_seq, rec.joined_ms
        )
