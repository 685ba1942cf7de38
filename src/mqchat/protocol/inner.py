"""The signed inner message that every cipher carries (docs/protocol.md, "Inner message")."""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field

from mqchat.errors import ProtocolError
from mqchat.protocol.kdf import TAG_CHARS
from mqchat.protocol.limits import MAX_NAME_BYTES, MAX_SEQ, MAX_TEXT_BYTES, MAX_TIMESTAMP_MS
from mqchat.protocol.signing import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    SigningIdentity,
    fingerprint,
    verify,
)

INNER_VERSION = 1
BUCKET = 256
SIGNATURE_LABEL = b"mqchat/v1 signature\x00"
MESSAGE_ID_BYTES = 16

# version, room tag, sender key, message id, seq, timestamp ms
_HEAD = struct.Struct(f">B{TAG_CHARS}s{PUBLIC_KEY_BYTES}s{MESSAGE_ID_BYTES}sQQ")


@dataclass(frozen=True)
class Message:
    """A verified message from a passphrase room."""

    room_tag: str
    sender_name: str
    sender_key: bytes
    message_id: bytes
    seq: int
    timestamp_ms: int
    text: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.sender_key)


def encode(
    identity: SigningIdentity,
    *,
    room_tag: str,
    name: str,
    text: str,
    message_id: bytes,
    seq: int,
    timestamp_ms: int,
) -> bytes:
    """Build and sign an inner message, padded so its length is a multiple of 256."""
    name_b = name.encode()
    text_b = text.encode()
    if not 1 <= len(name_b) <= MAX_NAME_BYTES or len(text_b) > MAX_TEXT_BYTES:
        raise ProtocolError("name or text out of bounds")
    if len(message_id) != MESSAGE_ID_BYTES or len(room_tag) != TAG_CHARS:
        raise ProtocolError("message id or room tag has the wrong length")
    check_ranges(seq, timestamp_ms)
    head = _HEAD.pack(
        INNER_VERSION, room_tag.encode(), identity.public_key, message_id, seq, timestamp_ms
    )
    body = b"".join((head, bytes([len(name_b)]), name_b, struct.pack(">I", len(text_b)), text_b))
    unpadded = len(body) + 2 + SIGNATURE_BYTES
    pad = -unpadded % BUCKET
    signed = body + struct.pack(">H", pad) + bytes(pad)
    return signed + identity.sign(SIGNATURE_LABEL + signed)


def check_ranges(seq: int, timestamp_ms: int) -> None:
    """Refuse numbers a store cannot hold or a clock cannot show (docs/protocol.md §4)."""
    if not 1 <= seq <= MAX_SEQ:
        raise ProtocolError(f"sequence number is outside 1..{MAX_SEQ}")
    if not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
        raise ProtocolError(f"timestamp is outside 0..{MAX_TIMESTAMP_MS}")


def decode(data: bytes, expected_tag: str) -> Message:
    """Parse, check the room tag and verify the signature, or raise ProtocolError."""
    if len(data) % BUCKET or len(data) < _HEAD.size + 1 + 4 + 2 + SIGNATURE_BYTES:
        raise ProtocolError("inner message has a bad length")
    signed, signature = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
    version, tag, sender_key, message_id, seq, ts = _HEAD.unpack_from(signed)
    if version != INNER_VERSION:
        raise ProtocolError(f"inner version {version} is not supported")
    if not hmac.compare_digest(tag, expected_tag.encode()):
        raise ProtocolError("message belongs to another room")
    pos = _HEAD.size
    name_len = signed[pos]
    pos += 1
    name_b = signed[pos : pos + name_len]
    pos += name_len
    if not 1 <= name_len <= MAX_NAME_BYTES:
        raise ProtocolError("sender name is out of bounds")
    if len(name_b) != name_len or pos + 4 > len(signed):
        raise ProtocolError("inner message is truncated")
    (text_len,) = struct.unpack_from(">I", signed, pos)
    pos += 4
    if text_len > MAX_TEXT_BYTES or pos + text_len + 2 > len(signed):
        raise ProtocolError("inner message text is out of bounds")
    text_b = signed[pos : pos + text_len]
    pos += text_len
    (pad,) = struct.unpack_from(">H", signed, pos)
    pos += 2
    if pos + pad != len(signed) or any(signed[pos:]):
        raise ProtocolError("inner message padding is wrong")
    check_ranges(seq, ts)
    if not verify(sender_key, signature, SIGNATURE_LABEL + signed):
        raise ProtocolError("signature does not verify")
    try:
        name = name_b.decode()
        text = text_b.decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError("name or text is not UTF-8") from exc
    return Message(tag.decode(), name, sender_key, message_id, seq, ts, text)
