"""Room keys from a passphrase: Argon2id, then HKDF-SHA256 (docs/protocol.md, "Keys")."""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mqchat.errors import WeakKdfParameters, WeakPassphrase
from mqchat.protocol.limits import is_short_passphrase, normalize_room

SALT_LABEL = b"mqchat/v1/salt\x00"
MASTER_KEY_BYTES = 32
TAG_CHARS = 26


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost. Stored with each room so that it can be raised later."""

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4

    def as_dict(self) -> dict[str, int]:
        return {"memory_kib": self.memory_kib, "iterations": self.iterations, "lanes": self.lanes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KdfParams:
        return cls(int(data["memory_kib"]), int(data["iterations"]), int(data["lanes"]))

    def is_weaker_than(self, other: KdfParams) -> bool:
        return self.memory_kib < other.memory_kib or self.iterations < other.iterations


DEFAULT_KDF = KdfParams()
"""The minimum mqchat accepts without ``weak``."""


def room_salt(room: str) -> bytes:
    """SHA-256("mqchat/v1/salt" NUL NFC(room))[:16]."""
    return hashlib.sha256(SALT_LABEL + normalize_room(room).encode()).digest()[:16]


def _hkdf(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


def cipher_key(message_key: bytes, cipher: str) -> bytes:
    """The per-cipher key, so that no key is ever used by two algorithms."""
    return _hkdf(message_key, b"mqchat/v1 cipher " + cipher.encode())


def room_tag(topic_key: bytes) -> str:
    """26 lowercase base32 characters: HMAC-SHA256(topic key, "topic")[:16]."""
    mac = hmac.new(topic_key, b"topic", hashlib.sha256).digest()[:16]
    return base64.b32encode(mac).decode().rstrip("=").lower()


@dataclass(frozen=True)
class RoomKeys:
    """The two secrets of a passphrase room. Never printed: repr shows only the tag."""

    message_key: bytes = field(repr=False)
    topic_key: bytes = field(repr=False)
    ciphers: dict[str, Any] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    """Cipher objects built from ``message_key`` (mqchat.protocol.envelope fills it):
    held here so that they go when the room's keys go, on ``leave``."""

    @cached_property
    def tag(self) -> str:
        return room_tag(self.topic_key)

    def __repr__(self) -> str:
        return f"RoomKeys(tag={self.tag!r})"

    __str__ = __repr__


def check_passphrase(passphrase: str, *, weak: bool) -> None:
    if not passphrase.strip():
        raise WeakPassphrase("the passphrase is empty")
    if is_short_passphrase(passphrase) and not weak:
        raise WeakPassphrase()


def derive_room_keys(
    passphrase: str, room: str, params: KdfParams = DEFAULT_KDF, *, weak: bool = False
) -> RoomKeys:
    """Derive (message key, topic key) for a passphrase room.

    Raises WeakPassphrase or WeakKdfParameters unless ``weak`` accepts the risk.
    """
    check_passphrase(passphrase, weak=weak)
    if params.is_weaker_than(DEFAULT_KDF) and not weak:
        raise WeakKdfParameters(
            f"Argon2id parameters {params.as_dict()} are weaker than {DEFAULT_KDF.as_dict()}"
        )
    if params.lanes < 1 or params.iterations < 1 or params.memory_kib < 8 * params.lanes:
        raise WeakKdfParameters(f"Argon2id parameters {params.as_dict()} are not valid")
    secret = unicodedata.normalize("NFC", passphrase).encode()
    master = Argon2id(
        salt=room_salt(room),
        length=MASTER_KEY_BYTES,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    ).derive(secret)
    return RoomKeys(
        message_key=_hkdf(master, b"mqchat/v1 message key"),
        topic_key=_hkdf(master, b"mqchat/v1 topic key"),
    )


def topic_for(prefix: str, tag: str) -> str:
    return f"{prefix.rstrip('/')}/{tag}"
