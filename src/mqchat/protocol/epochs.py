"""Epoch secrets and the keys, topic and tag each one gives (docs/protocol.md, "Epochs").

A room in wire version 2 has an epoch number (0 at create or join) and a
32-byte secret per epoch. Every key of an epoch derives from its secret with
the epoch number in the HKDF info, so no two epochs share a key, a topic or a
tag. ``EpochKeys`` owns its cipher objects: the daemon holds one per joined
(room, epoch) and drops it on ``leave``; there is no module-level cache that
would keep a room's keys in memory after that.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Final, TypeVar

# The crypto core loads cryptography at import, as kdf.py and envelope.py do.
from cryptography.hazmat.primitives import hashes  # noqa: TID253
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: TID253
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: TID253

from mqchat.errors import ProtocolError
from mqchat.protocol.envelope import CIPHER_IDS
from mqchat.protocol.kdf import RoomKeys, room_tag, topic_for
from mqchat.protocol.limits import MAX_INT
from mqchat.protocol.records import Rekey, record_body

Random = Callable[[int], bytes]
T = TypeVar("T")

SECRET_BYTES: Final = 32
LABEL: Final = b"mqchat/v2 "
EPOCH_ZERO_INFO: Final = b"mqchat/v2 epoch 0 secret"
REKEY_ID_LABEL: Final = b"mqchat/v2 rekey id\x00"

DEFAULT_CIPHER: Final = "aes-256-gcm"
"""New rooms default to AES-256-GCM in version 2; Fernet and ChaCha20-Poly1305 stay selectable."""

GRACE_SECONDS: Final = 24 * 3600
"""How long a member keeps opening epoch n after it switched to epoch n+1."""


def _hkdf(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


def check_epoch(epoch: int) -> int:
    if not 0 <= epoch <= MAX_INT:
        raise ProtocolError(f"epoch {epoch} is outside 0..{MAX_INT}")
    return epoch


def epoch_key(secret: bytes, epoch: int, label: str) -> bytes:
    """HKDF-SHA256(secret, info = "mqchat/v2 " || label || 0x00 || uint64(epoch))."""
    if len(secret) != SECRET_BYTES:
        raise ProtocolError("an epoch secret is 32 bytes")
    info = LABEL + label.encode() + b"\x00" + struct.pack(">Q", check_epoch(epoch))
    return _hkdf(secret, info)


def passphrase_epoch_zero(keys: RoomKeys) -> bytes:
    """Epoch 0's secret of a passphrase room, from the v1 message key (itself from Argon2id).

    Daemons store a room's derived v1 keys, not the Argon2id output, so an
    existing room moves to version 2 without the passphrase or a KDF run.
    """
    return _hkdf(keys.message_key, EPOCH_ZERO_INFO)


def new_epoch_secret(random: Random) -> bytes:
    """Epoch 0 of a random-key room, or the secret of a rekey: 32 random bytes."""
    secret = random(SECRET_BYTES)
    if len(secret) != SECRET_BYTES:
        raise ProtocolError("the randomness source gave the wrong number of bytes")
    return secret


class EpochKeys:
    """The keys of one epoch of one room. repr shows the epoch and tag only."""

    __slots__ = ("_aead", "_fernet_key", "epoch", "tag")

    def __init__(self, secret: bytes, epoch: int) -> None:
        self.epoch = check_epoch(epoch)
        self.tag = room_tag(epoch_key(secret, epoch, "topic"))
        self._fernet_key = epoch_key(secret, epoch, "cipher fernet")
        self._aead: dict[int, AESGCM | ChaCha20Poly1305] = {
            CIPHER_IDS["aes-256-gcm"]: AESGCM(epoch_key(secret, epoch, "cipher aes-256-gcm")),
            CIPHER_IDS["chacha20-poly1305"]: ChaCha20Poly1305(
                epoch_key(secret, epoch, "cipher chacha20-poly1305")
            ),
        }

    def aead(self, cipher_id: int) -> AESGCM | ChaCha20Poly1305:
        return self._aead[cipher_id]

    @property
    def fernet_key(self) -> bytes:
        return self._fernet_key

    def topic(self, prefix: str) -> str:
        return topic_for(prefix, self.tag)

    def __repr__(self) -> str:
        return f"EpochKeys(epoch={self.epoch}, tag={self.tag!r})"

    __str__ = __repr__


def rekey_id(*, rekeyer_key: bytes, epoch: int, tag: str, rekey: Rekey) -> bytes:
    """SHA-256 naming one rekey record (docs/protocol.md §17.3, the rule before issue 21;
    the vectors of §23.4 keep it). Which rekey wins is now mqchat.protocol.membership's."""
    _, body = record_body(rekey)
    head = REKEY_ID_LABEL + rekeyer_key + struct.pack(">Q", check_epoch(epoch)) + tag.encode()
    return hashlib.sha256(head + body).digest()
