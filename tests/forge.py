"""Payloads built by hand from docs/protocol.md, as a hostile member (or another
implementation) would build them: without mqchat's encoder and its checks."""

from __future__ import annotations

import base64
import struct

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from mqchat.errors import ProtocolError
from mqchat.protocol.batch import open_batch
from mqchat.protocol.epochs import EpochKeys, passphrase_epoch_zero
from mqchat.protocol.kdf import DEFAULT_KDF, RoomKeys, cipher_key, derive_room_keys
from mqchat.protocol.records import Text
from mqchat.protocol.signing import SigningIdentity

CIPHER_IDS = {"fernet": 1, "aes-256-gcm": 2, "chacha20-poly1305": 3}
SEQ = 7
TIMESTAMP_MS = 1_800_000_000_123


def encrypt_body(keys: RoomKeys, cipher: str, plain: bytes) -> bytes:
    """Encrypt an inner message exactly as docs/protocol.md says, without seal()."""
    key = cipher_key(keys.message_key, cipher)
    header = bytes([1, CIPHER_IDS[cipher]])
    if cipher == "fernet":
        return header + Fernet(base64.urlsafe_b64encode(key)).encrypt(plain)
    nonce = bytes(12)
    aead = AESGCM(key) if cipher == "aes-256-gcm" else ChaCha20Poly1305(key)
    return header + nonce + aead.encrypt(nonce, plain, b"mqchat/v1" + header + keys.tag.encode())


def build_inner(
    identity: SigningIdentity,
    *,
    tag: str,
    name: bytes,
    text: bytes,
    message_id: bytes = bytes(range(16)),
    seq: int = SEQ,
    timestamp_ms: int = TIMESTAMP_MS,
) -> bytes:
    """An inner message built from docs/protocol.md alone, without mqchat's encoder."""
    body = (
        b"\x01"
        + tag.encode()
        + identity.public_key
        + message_id
        + struct.pack(">QQ", seq, timestamp_ms)
        + bytes([len(name)])
        + name
        + struct.pack(">I", len(text))
        + text
    )
    pad = -(len(body) + 2 + 64) % 256
    signed = body + struct.pack(">H", pad) + bytes(pad)
    return signed + identity.sign(b"mqchat/v1 signature\x00" + signed)


def epoch_zero(passphrase: str, room: str) -> EpochKeys:
    """Version 2's epoch 0 of a passphrase room (docs/protocol.md §11.1)."""
    keys = derive_room_keys(passphrase, room, DEFAULT_KDF, weak=False)
    return EpochKeys(passphrase_epoch_zero(keys), 0)


def texts_in(payload: bytes, keys: EpochKeys) -> list[Text]:
    """The text records of a version 2 payload; none if it is not one of this epoch."""
    try:
        batch = open_batch(payload, keys)
    except ProtocolError:
        return []
    return [r for r in batch.records if isinstance(r, Text)]
