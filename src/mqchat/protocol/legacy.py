"""The original program's wire format, for legacy rooms only (docs/protocol.md, "Legacy").

Its key is the passphrase itself, padded with "0" or cut to 32 characters: no
KDF, no salt, no signature. Nothing outside legacy rooms may use this rule.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken

from mqchat.errors import PayloadTooLarge, ProtocolError, WeakPassphrase
from mqchat.protocol import fernet_token
from mqchat.protocol.limits import MAX_PAYLOAD_BYTES

TOPIC_PREFIX = "movantchat"
KEY_CHARS = 32
UNKNOWN_SENDER = "?"


@dataclass(frozen=True)
class LegacyKey:
    """The original program's Fernet key. repr never shows it."""

    fernet_key: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "LegacyKey(<hidden>)"

    __str__ = __repr__


def legacy_key(passphrase: str) -> LegacyKey:
    """base64url(passphrase padded with "0" or cut to 32 characters)."""
    if not passphrase.strip():
        raise WeakPassphrase("the passphrase is empty")
    raw = passphrase[:KEY_CHARS].ljust(KEY_CHARS, "0").encode()
    if len(raw) != KEY_CHARS:
        raise WeakPassphrase(
            "a legacy passphrase must be ASCII: the original program cannot use this one"
        )
    return LegacyKey(base64.urlsafe_b64encode(raw))


def legacy_topic(room: str) -> str:
    return f"{TOPIC_PREFIX}/{room}"


def seal_legacy(key: LegacyKey, name: str, text: str, *, timestamp_s: int, iv: bytes) -> bytes:
    """The Fernet token of "name: text", as the original program sends it."""
    plain = f"{name}: {text}".encode()
    # Known answers need the clock and IV from the caller; see envelope.seal.
    raw_key = base64.urlsafe_b64decode(key.fernet_key)
    return fernet_token.seal_text(raw_key, plain, timestamp_s=timestamp_s, iv=iv)


@dataclass(frozen=True)
class LegacyMessage:
    sender_name: str
    text: str
    timestamp_s: int


def open_legacy(payload: bytes, key: LegacyKey) -> LegacyMessage:
    """Decrypt a legacy token; a plaintext with no "name: " part gets sender "?"."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}")
    fernet = Fernet(key.fernet_key)
    try:
        plain = fernet.decrypt(payload)
        timestamp = fernet.extract_timestamp(payload)
    except (InvalidToken, ValueError, TypeError) as exc:
        raise ProtocolError("legacy token does not decrypt under this room's key") from exc
    text = plain.decode("utf-8", "replace")
    name, sep, rest = text.partition(": ")
    if not sep or not name.strip() or len(name.encode()) > 64 or "\n" in name:
        return LegacyMessage(UNKNOWN_SENDER, text, timestamp)
    return LegacyMessage(name, rest, timestamp)
