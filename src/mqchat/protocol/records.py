"""The records a version 2 batch carries (docs/protocol.md, "Version 2", "Records").

A record is ``kind (1 byte) || length (uint16) || body``. Encoding and decoding
are strict and canonical: one value has one encoding, every integer is checked
against its documented range (at most 2^53 - 1, so it fits SQLite's signed
64-bit integers and a JSON number without loss), and anything else raises
ProtocolError. A kind this module does not know decodes to ``None``: the batch
skips it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, NamedTuple

from mqchat.errors import ProtocolError
from mqchat.protocol.limits import KEY_BYTES, MAX_INT, MAX_TEXT_BYTES
from mqchat.protocol.membership import (
    Commit,
    Join,
    Roster,
    commit_body,
    decode_commit,
    decode_join,
    decode_roster_record,
    join_body,
)

MESSAGE_ID_BYTES: Final = 16
RECORD_HEAD_BYTES: Final = 3
MAX_RECORD_BODY: Final = 0xFFFF
MAX_REPAIR_RANGES: Final = 32
MAX_REKEY_RECIPIENTS: Final = 512
MAX_PRESENCE_INTERVAL_S: Final = 86400
DEFAULT_PRESENCE_INTERVAL_S: Final = 60
BOX_BYTES: Final = KEY_BYTES + KEY_BYTES + 32 + 16


class Kind(IntEnum):
    TEXT = 1
    REPAIRED_TEXT = 2
    HEADS = 3
    REPAIR_REQUEST = 4
    MEMBER_KEY = 5
    REKEY = 6
    PRESENCE = 7
    COMMIT = 8
    JOIN = 9
    ROSTER = 10


class PresenceState(IntEnum):
    ONLINE = 1
    STILL_HERE = 2
    LEAVING = 3


SINGLETON_KINDS: Final = frozenset(
    {Kind.MEMBER_KEY, Kind.REKEY, Kind.PRESENCE, Kind.COMMIT, Kind.JOIN, Kind.ROSTER}
)
"""Kinds that may appear at most once in a batch."""


class Text(NamedTuple):
    """A chat message. ``repaired`` marks a republication answering a repair request.

    A NamedTuple, not a frozen dataclass like the other records: every text of a
    batch is built once on each side, and a frozen dataclass's ``__init__`` costs
    four times as much (issue 24). Its repr leaves the text out, as theirs would.
    """

    stream: int
    seq: int
    message_id: bytes
    timestamp_ms: int
    text: str
    repaired: bool = False

    def __repr__(self) -> str:
        return (
            f"Text(stream={self.stream}, seq={self.seq}, message_id={self.message_id!r}, "
            f"timestamp_ms={self.timestamp_ms}, repaired={self.repaired})"
        )


@dataclass(frozen=True, slots=True)
class Heads:
    """Where the sender's ``stream`` stands in a room: sent ``1..lead``, holds ``trail..lead``."""

    stream: int
    trail: int
    lead: int
    final: bool = False


@dataclass(frozen=True, slots=True)
class RepairRequest:
    """A NACK: please republish ``ranges`` (inclusive) of ``sender_key``'s ``stream``."""

    sender_key: bytes
    stream: int
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class MemberKey:
    """The sender's X25519 public key, for rekeys to seal the next epoch's secret to."""

    x25519_key: bytes


@dataclass(frozen=True, slots=True)
class KeyBox:
    """One member's sealed copy of a new epoch secret (docs/protocol.md, "Key box")."""

    recipient: bytes
    ephemeral: bytes
    sealed: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Rekey:
    """Epoch ``new_epoch`` starts; its secret is sealed to each recipient in ``boxes``."""

    new_epoch: int
    boxes: tuple[KeyBox, ...]

    @property
    def recipients(self) -> tuple[bytes, ...]:
        return tuple(box.recipient for box in self.boxes)


@dataclass(frozen=True, slots=True)
class Presence:
    state: PresenceState
    interval_s: int = DEFAULT_PRESENCE_INTERVAL_S


Record = Text | Heads | RepairRequest | MemberKey | Rekey | Presence | Commit | Join | Roster

_TEXT_HEAD = struct.Struct(f">QQ{MESSAGE_ID_BYTES}sQ")
_HEADS = struct.Struct(">QQQB")
_REPAIR_HEAD = struct.Struct(f">{KEY_BYTES}sQB")
_RANGE = struct.Struct(">QQ")
_REKEY_HEAD = struct.Struct(">QH")
_PRESENCE = struct.Struct(">BI")
_HEADS_FINAL = 0x01


def _check_int(value: int, low: int, what: str, high: int = MAX_INT) -> int:
    if not low <= value <= high:
        raise ProtocolError(f"{what} {value} is outside {low}..{high}")
    return value


def _check_key(key: bytes, what: str) -> bytes:
    if len(key) != KEY_BYTES or not any(key):
        raise ProtocolError(f"{what} must be 32 bytes, not all zero")
    return key


def _text_body(record: Text) -> bytes:
    _check_int(record.stream, 1, "stream")
    _check_int(record.seq, 1, "seq")
    _check_int(record.timestamp_ms, 0, "timestamp")
    if len(record.message_id) != MESSAGE_ID_BYTES:
        raise ProtocolError("a message id is 16 bytes")
    try:
        text = record.text.encode()
    except UnicodeEncodeError as exc:
        raise ProtocolError("text is not valid Unicode") from exc
    if len(text) > MAX_TEXT_BYTES:
        raise ProtocolError(f"text is over {MAX_TEXT_BYTES} bytes")
    return _TEXT_HEAD.pack(record.stream, record.seq, record.message_id, record.timestamp_ms) + text


def _heads_body(record: Heads) -> bytes:
    _check_int(record.stream, 1, "stream")
    _check_int(record.lead, 0, "lead")
    _check_int(record.trail, 1, "trail", record.lead + 1)
    return _HEADS.pack(record.stream, record.trail, record.lead, _HEADS_FINAL * record.final)


def _repair_body(record: RepairRequest) -> bytes:
    _check_key(record.sender_key, "sender key")
    _check_int(record.stream, 1, "stream")
    _check_int(len(record.ranges), 1, "range count", MAX_REPAIR_RANGES)
    parts = [_REPAIR_HEAD.pack(record.sender_key, record.stream, len(record.ranges))]
    previous_last = 0
    for first, last in record.ranges:
        # Ascending and disjoint, so that one request has one encoding.
        _check_int(first, previous_last + 1, "range start")
        _check_int(last, first, "range end")
        parts.append(_RANGE.pack(first, last))
        previous_last = last
    return b"".join(parts)


def _rekey_body(record: Rekey) -> bytes:
    _check_int(record.new_epoch, 1, "new epoch")
    _check_int(len(record.boxes), 1, "recipient count", MAX_REKEY_RECIPIENTS)
    parts = [_REKEY_HEAD.pack(record.new_epoch, len(record.boxes))]
    previous = b""
    for box in record.boxes:
        # Sorted by recipient key and unique, so that one rekey has one encoding.
        if _check_key(box.recipient, "recipient key") <= previous:
            raise ProtocolError("key boxes must be sorted by recipient key, without repeats")
        if len(box.ephemeral) != KEY_BYTES or len(box.sealed) != BOX_BYTES - 2 * KEY_BYTES:
            raise ProtocolError("a key box has the wrong size")
        parts += (box.recipient, box.ephemeral, box.sealed)
        previous = box.recipient
    return b"".join(parts)


def _presence_body(record: Presence) -> bytes:
    state = PresenceState(record.state)
    _check_int(record.interval_s, 1, "presence interval", MAX_PRESENCE_INTERVAL_S)
    return _PRESENCE.pack(state, record.interval_s)


_KIND_OF_TYPE: Final[dict[type, Kind]] = {
    Heads: Kind.HEADS,
    RepairRequest: Kind.REPAIR_REQUEST,
    MemberKey: Kind.MEMBER_KEY,
    Rekey: Kind.REKEY,
    Presence: Kind.PRESENCE,
    Commit: Kind.COMMIT,
    Join: Kind.JOIN,
    Roster: Kind.ROSTER,
}


def record_kind(record: Record) -> Kind:
    if isinstance(record, Text):
        return Kind.REPAIRED_TEXT if record.repaired else Kind.TEXT
    return _KIND_OF_TYPE[type(record)]


def record_body(record: Record) -> tuple[Kind, bytes]:
    """The kind and body bytes of a record, or ProtocolError if a field is out of range."""
    if isinstance(record, Text):
        return (Kind.REPAIRED_TEXT if record.repaired else Kind.TEXT), _text_body(record)
    if isinstance(record, Heads):
        return Kind.HEADS, _heads_body(record)
    if isinstance(record, RepairRequest):
        return Kind.REPAIR_REQUEST, _repair_body(record)
    if isinstance(record, MemberKey):
        return Kind.MEMBER_KEY, _check_key(record.x25519_key, "member key")
    if isinstance(record, Rekey):
        return Kind.REKEY, _rekey_body(record)
    if isinstance(record, Presence):
        return Kind.PRESENCE, _presence_body(record)
    if isinstance(record, Commit):
        return Kind.COMMIT, commit_body(record)
    if isinstance(record, Join):
        return Kind.JOIN, join_body(record)
    return Kind.ROSTER, record.state.encode()


def encode_record(record: Record) -> bytes:
    kind, body = record_body(record)
    return struct.pack(">BH", kind, len(body)) + body


# -- decoding ------------------------------------------------------------------


def _exact(body: bytes, size: int, what: str) -> None:
    if len(body) != size:
        raise ProtocolError(f"{what} record has {len(body)} bytes, not {size}")


def _decode_text(body: bytes, repaired: bool) -> Text:
    if len(body) < _TEXT_HEAD.size:
        raise ProtocolError("text record is truncated")
    stream, seq, message_id, timestamp_ms = _TEXT_HEAD.unpack_from(body)
    raw = body[_TEXT_HEAD.size :]
    if len(raw) > MAX_TEXT_BYTES:
        raise ProtocolError(f"text is over {MAX_TEXT_BYTES} bytes")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError("text is not UTF-8") from exc
    record = Text(stream, seq, message_id, timestamp_ms, text, repaired)
    _text_body(record)  # the range checks, in one place
    return record


def _decode_heads(body: bytes) -> Heads:
    _exact(body, _HEADS.size, "heads")
    stream, trail, lead, flags = _HEADS.unpack(body)
    if flags & ~_HEADS_FINAL:
        raise ProtocolError("heads record has unknown flags")
    record = Heads(stream, trail, lead, bool(flags))
    _heads_body(record)
    return record


def _decode_repair(body: bytes) -> RepairRequest:
    if len(body) < _REPAIR_HEAD.size:
        raise ProtocolError("repair request is truncated")
    sender_key, stream, count = _REPAIR_HEAD.unpack_from(body)
    _exact(body, _REPAIR_HEAD.size + count * _RANGE.size, "repair request")
    ranges = tuple(
        _RANGE.unpack_from(body, _REPAIR_HEAD.size + i * _RANGE.size) for i in range(count)
    )
    record = RepairRequest(sender_key, stream, ranges)
    _repair_body(record)
    return record


def _decode_rekey(body: bytes) -> Rekey:
    if len(body) < _REKEY_HEAD.size:
        raise ProtocolError("rekey record is truncated")
    new_epoch, count = _REKEY_HEAD.unpack_from(body)
    _exact(body, _REKEY_HEAD.size + count * BOX_BYTES, "rekey")
    boxes = []
    for i in range(count):
        at = _REKEY_HEAD.size + i * BOX_BYTES
        boxes.append(
            KeyBox(
                body[at : at + KEY_BYTES],
                body[at + KEY_BYTES : at + 2 * KEY_BYTES],
                body[at + 2 * KEY_BYTES : at + BOX_BYTES],
            )
        )
    record = Rekey(new_epoch, tuple(boxes))
    _rekey_body(record)
    return record


def _decode_presence(body: bytes) -> Presence:
    _exact(body, _PRESENCE.size, "presence")
    state, interval_s = _PRESENCE.unpack(body)
    if state not in PresenceState.__members__.values():
        raise ProtocolError(f"presence state {state} is not known")
    record = Presence(PresenceState(state), interval_s)
    _presence_body(record)
    return record


def decode_record(kind: int, body: bytes) -> Record | None:
    """Decode one record body; ``None`` for a kind this version does not know."""
    if kind == 0:
        raise ProtocolError("record kind 0 is reserved")
    if kind in (Kind.TEXT, Kind.REPAIRED_TEXT):
        return _decode_text(body, kind == Kind.REPAIRED_TEXT)
    if kind == Kind.HEADS:
        return _decode_heads(body)
    if kind == Kind.REPAIR_REQUEST:
        return _decode_repair(body)
    if kind == Kind.MEMBER_KEY:
        _exact(body, KEY_BYTES, "member key")
        return MemberKey(_check_key(body, "member key"))
    if kind == Kind.REKEY:
        return _decode_rekey(body)
    if kind == Kind.PRESENCE:
        return _decode_presence(body)
    if kind == Kind.COMMIT:
        return decode_commit(body)
    if kind == Kind.JOIN:
        return decode_join(body)
    if kind == Kind.ROSTER:
        return decode_roster_record(body)
    return None
