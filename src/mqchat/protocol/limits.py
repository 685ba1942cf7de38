"""Sizes and names every part of mqchat agrees on."""

from __future__ import annotations

import unicodedata

from mqchat.errors import InvalidRoomName, MessageTooLong, UsageError

MAX_INT = 2**53 - 1
"""The largest value of any version 2 integer field: exact in SQLite, JSON and JavaScript."""
KEY_BYTES = 32
"""An Ed25519 or X25519 public key."""

MAX_TEXT_BYTES = 16 * 1024
"""A message's text may be up to 16 KiB of UTF-8."""

MAX_PAYLOAD_BYTES = 64 * 1024
"""Payloads above this are dropped before any decryption is attempted."""

MAX_SEQ = 2**63 - 1
"""Sequence numbers are 1..2^63-1: every integer a peer sends must fit SQLite's int64."""

MAX_TIMESTAMP_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the latest time a message may claim."""

MAX_ROOM_CHARS = 64
MAX_NAME_BYTES = 64
MIN_PASSPHRASE_CHARS = 12

_FORBIDDEN_IN_ROOM = frozenset("+#/")


def is_short_passphrase(passphrase: str) -> bool:
    """Shorter than MIN_PASSPHRASE_CHARS (NFC characters): refused unless --weak."""
    return len(unicodedata.normalize("NFC", passphrase)) < MIN_PASSPHRASE_CHARS


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def _has_surrogate(text: str) -> bool:
    # A lone surrogate is what bytes that are not UTF-8 become in argv, the
    # environment or a JSON string ("\\udcff"); it cannot be encoded, so it is
    # refused here rather than failing later in whatever encodes the name.
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def normalize_room(room: str) -> str:
    """Return the NFC form of a room name, or raise InvalidRoomName."""
    if _has_surrogate(room):
        raise InvalidRoomName("room name is not valid UTF-8 text")
    norm = unicodedata.normalize("NFC", room)
    if not 1 <= len(norm) <= MAX_ROOM_CHARS:
        raise InvalidRoomName(f"room name must be 1 to {MAX_ROOM_CHARS} characters")
    if norm != norm.strip():
        raise InvalidRoomName("room name must not start or end with white space")
    if _has_control(norm) or _FORBIDDEN_IN_ROOM & set(norm):
        raise InvalidRoomName("room name must not contain control characters or any of + # /")
    return norm


def normalize_name(name: str) -> str:
    """Return the NFC form of a sender name, or raise UsageError."""
    if _has_surrogate(name):
        raise UsageError("name is not valid UTF-8 text")
    norm = unicodedata.normalize("NFC", name).strip()
    if not norm or len(norm.encode()) > MAX_NAME_BYTES:
        raise UsageError(f"name must be 1 to {MAX_NAME_BYTES} bytes of UTF-8")
    if _has_control(norm):
        raise UsageError("name must not contain control characters")
    return norm


def check_text(text: str) -> bytes:
    """Return the UTF-8 of a message text, or raise MessageTooLong."""
    try:
        data = text.encode()
    except UnicodeEncodeError as exc:
        raise UsageError("message is not valid Unicode text") from exc
    if len(data) > MAX_TEXT_BYTES:
        raise MessageTooLong(
            f"message is {len(data)} bytes of UTF-8; the limit is {MAX_TEXT_BYTES} (16 KiB)"
        )
    return data
