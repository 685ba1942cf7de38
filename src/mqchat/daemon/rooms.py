"""A joined room as the daemon holds it: name, mode, keys, epochs, topics, last seq."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from mqchat.daemon.store import RoomRecord
from mqchat.errors import NotJoined
from mqchat.protocol.epochs import EpochKeys, passphrase_epoch_zero
from mqchat.protocol.kdf import KdfParams, RoomKeys, topic_for
from mqchat.protocol.legacy import LegacyKey, legacy_topic
from mqchat.protocol.limits import normalize_room

LEGACY_WARNING = (
    "legacy room: anyone who knows or guesses the passphrase can read it; the passphrase "
    "itself is the encryption key (short ones pad to a constant key); senders are unverified"
)


class GraceEpoch(NamedTuple):
    """An epoch the room still opens after it moved on: the previous one, or a losing
    candidate (docs/protocol.md §17.3-17.4), until ``until_ms``."""

    keys: EpochKeys
    topic: str
    until_ms: int


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
    epoch: EpochKeys | None = field(default=None, repr=False)
    """Wire format version 2's keys of the current epoch (at first epoch 0: from the
    v1 keys of a passphrase room, random in a created room, the invite's when joined
    by one); what is sent goes with them, on ``v2_topic``. None for legacy rooms.
    mqchat.daemon.epoch_keeper moves both to the next epoch at a rekey."""
    v2_topic: str | None = None
    grace: list[GraceEpoch] = field(default_factory=list, repr=False)
    """Old epochs and losing candidates still opened (mqchat.daemon.epoch_keeper)."""
    expired: set[str] = field(default_factory=set, repr=False)
    """Topics of epochs past their grace period: what comes there is "old epoch"."""
    stream: int = 0
    """Our current stream in this room (docs/protocol.md §15); 0 until the first send."""
    sent_seq: int = 0
    """The last seq we sent in ``stream``."""

    def with_epoch(self, prefix: str) -> Room:
        """Set the v2 epoch-0 keys and topic of a passphrase room (docs/protocol.md §11)."""
        if self.keys is not None:
            self.epoch = EpochKeys(passphrase_epoch_zero(self.keys), 0)
            self.v2_topic = self.epoch.topic(prefix)
        return self

    def epoch_keys_for(self, topic: str) -> EpochKeys | None:
        """The keys of the epoch whose topic ``topic`` is, if the room still opens it:
        the current epoch, or one in its grace period."""
        if topic == self.v2_topic:
            return self.epoch
        for old in self.grace:
            if old.topic == topic:
                return old.keys
        return None

    @property
    def random_key(self) -> bool:
        """Made by `chatctl create` or joined by invite: epochs only, no v1 keys."""
        return self.keys is None and self.legacy_key is None

    @property
    def opens_v1(self) -> bool:
        """A passphrase room opens version 1 payloads until its first rekey's grace
        period ends (docs/protocol.md §17.4): while epoch 0 is current or in grace."""
        if self.keys is None:
            return False
        if self.epoch is None or self.epoch.epoch == 0:
            return True
        return any(old.keys.epoch == 0 for old in self.grace)

    @property
    def legacy(self) -> bool:
        return self.legacy_key is not None

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic the room is received on: v1's (legacy rooms, and passphrase rooms
        until their first rekey's grace period ends), the current epoch's, and those of
        epochs in their grace period."""
        found = [self.topic] if self.legacy_key is not None or self.opens_v1 else []
        if self.v2_topic is not None and self.v2_topic not in found:
            found.append(self.v2_topic)
        found += [old.topic for old in self.grace if old.topic not in found]
        return tuple(found)

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
        ).with_epoch(prefix)

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

    @classmethod
    def random_key_room(
        cls, name: str, cipher: str, keys: EpochKeys, topic: str, *, joined_ms: int
    ) -> Room:
        """A room with a random secret (`chatctl create`, or joined by invite)."""
        return cls(
            name,
            cipher,
            False,
            KdfParams(0, 0, 0),
            None,
            None,
            topic,
            joined_ms=joined_ms,
            epoch=keys,
            v2_topic=topic,
        )

    def same_key(self, other: Room) -> bool:
        if self.keys is not None and other.keys is not None:
            return self.keys.message_key == other.keys.message_key
        if self.legacy_key is not None and other.legacy_key is not None:
            return self.legacy_key.fernet_key == other.legacy_key.fernet_key
        if self.random_key and other.random_key and other.epoch is not None:
            tags = {old.keys.tag for old in self.grace}
            return self.epoch is not None and other.epoch.tag in tags | {self.epoch.tag}
        return False

    def to_record(self) -> RoomRecord:
        """The rooms table's row. A random-key room stores an empty key_a: its secrets
        are in room_epochs (mqchat.daemon.store.epochs)."""
        if self.keys is not None:
            key_a, key_b = self.keys.message_key, self.keys.topic_key
        elif self.legacy_key is not None:
            key_a, key_b = self.legacy_key.fernet_key, None
        else:
            key_a, key_b = b"", None
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
        keys = RoomKeys(rec.key_a, rec.key_b or b"") if rec.key_a else None
        return cls(
            rec.name, rec.cipher, rec.weak, kdf, keys, None, rec.topic, last_seq, rec.joined_ms
        )


def another_room_warning(name: str) -> str:
    """Joined with a passphrase: the name of a room that was joined by invite and left."""
    return (
        f"{name!r} was a room you had joined by invite and left: this is another room of "
        f"that name, with a passphrase, and the old room's messages stay in your history. "
        f"To go back to the old room, ask a member for a new invite (`chatctl join "
        f"--invite`); to undo this join, `chatctl leave {name}`"
    )


LEFT_INVITE_ROOMS_KEY = "left_invite_rooms"
"""The meta table's key for RoomRegistry.left_by_invite (a JSON list of names)."""
LEFT_REMEMBERED = 64
"""How many left invite rooms chatd remembers, for its hints (kept in the meta table)."""


class RoomRegistry:
    """The joined rooms, by name and by topic: what requests and payloads are routed by."""

    def __init__(self, left_by_invite: list[str] | None = None) -> None:
        self._by_name: dict[str, Room] = {}
        self._by_topic: dict[str, Room] = {}
        self.left_by_invite: list[str] = list(left_by_invite or [])
        """Random-key rooms left, newest last (at most LEFT_REMEMBERED): a passphrase
        ``join`` of one of these names makes another room, and the hints must say so."""

    def left(self, room: Room) -> None:
        """``room`` was left: remember whether only a new invite brings it back."""
        names = [n for n in self.left_by_invite if n != room.name]
        if room.random_key:
            names.append(room.name)
        self.left_by_invite = names[-LEFT_REMEMBERED:]

    def load(self, records: list[RoomRecord], last_seq: Callable[[str], int], prefix: str) -> None:
        """The rooms a previous run joined, under today's topic prefix."""
        for rec in records:
            room = Room.from_record(rec, last_seq(rec.name))
            if room.keys is not None:
                room.topic = topic_for(prefix, room.keys.tag)
            self.add(room.with_epoch(prefix))

    def resync(
        self, records: list[RoomRecord], last_seq: Callable[[str], int], prefix: str
    ) -> None:
        """After a rollback: the rooms the store holds, no more, no fewer. A room in
        both keeps its object (and what it counts; its counters are reloaded too)."""
        stored = {rec.name for rec in records}
        for room in [r for r in self._by_name.values() if r.name not in stored]:
            self.remove(room)
        self.load([rec for rec in records if rec.name not in self._by_name], last_seq, prefix)

    def add(self, room: Room) -> None:
        self._by_name[room.name] = room
        for topic in (*room.topics, *room.expired):
            self._by_topic[topic] = room

    def remove(self, room: Room) -> None:
        del self._by_name[room.name]
        for topic in (*room.topics, *room.expired):
            self._by_topic.pop(topic, None)

    def retopic(self, room: Room, before: tuple[str, ...]) -> None:
        """``room``'s topics changed (a new epoch, a grace period ended): map them again."""
        for topic in before:
            if self._by_topic.get(topic) is room:
                del self._by_topic[topic]
        self.add(room)

    def get(self, name: str) -> Room | None:
        # A joined room's name is normalised already, and normalising is the same
        # again: a name found as it is needs no Unicode work (issue 14).
        return self._by_name.get(name) or self._by_name.get(normalize_room(name))

    def require(self, name: str) -> Room:
        room = self.get(name)
        if room is None:
            raise NotJoined(self.not_joined_hint(name))
        return room

    def not_joined_hint(self, name: str) -> str:
        """Why ``name`` is not joined, and the way back that leads to the same room."""
        if name in self.left_by_invite:
            return (
                f"you left {name!r}, a room you had joined by invite: to come back, ask a "
                f"member for a new invite and run `chatctl join --invite` (`chatctl join "
                f"{name}` would make another room of that name, with a passphrase)"
            )
        return (
            f"you have not joined room {name!r}: run `chatctl join --invite` with an "
            f"invite to it, or `chatctl join {name}` if it is a passphrase room"
        )

    def on_topic(self, topic: str) -> Room | None:
        return self._by_topic.get(topic)

    def names(self) -> set[str]:
        return set(self._by_name)

    def __iter__(self) -> Iterator[Room]:
        return iter(sorted(self._by_name.values(), key=lambda r: r.name))

    def __len__(self) -> int:
        return len(self._by_name)
