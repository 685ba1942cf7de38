"""Seal and open wire payloads (docs/protocol.md, "Envelope").

``seal`` turns (room keys, identity, text) into payload bytes; ``open_payload``
turns any bytes into a verified Message or raises ProtocolError, nothing else.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from mqchat.errors import PayloadTooLarge, ProtocolError
from mqchat.protocol import ciphers, fernet_token, inner
from mqchat.protocol.kdf import RoomKeys, cipher_key
from mqchat.protocol.limits import MAX_PAYLOAD_BYTES
from mqchat.protocol.signing import SigningIdentity

Random = Callable[[int], bytes]

WIRE_VERSION: Final = 1
AD_LABEL: Final = b"mqchat/v1"
NONCE_BYTES: Final = 12
FERNET_IV_BYTES: Final = 16

# The cipher names live in mqchat.protocol.ciphers, which chatctl can import
# without cryptography; these names stay for the modules that take them from here.
CIPHER_IDS: Final = ciphers.CIPHER_IDS
CIPHER_NAMES: Final = ciphers.CIPHER_NAMES
DEFAULT_CIPHER: Final = ciphers.DEFAULT_CIPHER
check_cipher = ciphers.check_cipher


def associated_data(cipher_id: int, tag: str) -> bytes:
    return AD_LABEL + bytes([WIRE_VERSION, cipher_id]) + tag.encode()


Aead = AESGCM | ChaCha20Poly1305


def _fernet(keys: RoomKeys) -> tuple[bytes, Fernet]:
    """The room's Fernet key and a Fernet object for it, built once per room."""
    cached: tuple[bytes, Fernet] | None = keys.ciphers.get("fernet")
    if cached is None:
        key = cipher_key(keys.message_key, "fernet")
        cached = keys.ciphers["fernet"] = (key, Fernet(base64.urlsafe_b64encode(key)))
    return cached


def _aead(keys: RoomKeys, cipher: str) -> Aead:
    """The room's AEAD object for ``cipher``, built once per room (a key schedule each)."""
    aead: Aead | None = keys.ciphers.get(cipher)
    if aead is None:
        key = cipher_key(keys.message_key, cipher)
        aead = keys.ciphers[cipher] = (
            AESGCM(key) if cipher == "aes-256-gcm" else ChaCha20Poly1305(key)
        )
    return aead


def seal(
    keys: RoomKeys,
    identity: SigningIdentity,
    *,
    name: str,
    text: str,
    seq: int,
    timestamp_ms: int,
    random: Random,
    cipher: str = DEFAULT_CIPHER,
) -> tuple[bytes, bytes]:
    """Return (message id, payload). The id is 16 bytes of ``random``."""
    cipher_id = CIPHER_IDS[check_cipher(cipher)]
    message_id = random(inner.MESSAGE_ID_BYTES)
    plain = inner.encode(
        identity,
        room_tag=keys.tag,
        name=name,
        text=text,
        message_id=message_id,
        seq=seq,
        timestamp_ms=timestamp_ms,
    )
    header = bytes([WIRE_VERSION, cipher_id])
    if cipher == "fernet":
        # Fernet's public encrypt() reads the clock and os.urandom itself; the
        # protocol takes both from the caller so that known answers can be pinned.
        body = fernet_token.seal_text(
            _fernet(keys)[0], plain, timestamp_s=timestamp_ms // 1000, iv=random(FERNET_IV_BYTES)
        )
    else:
        nonce = random(NONCE_BYTES)
        aead = _aead(keys, cipher)
        body = nonce + aead.encrypt(nonce, plain, associated_data(cipher_id, keys.tag))
    payload = header + body
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("sealed payload is over the size limit")
    return message_id, payload


def open_payload(payload: bytes, keys: RoomKeys) -> tuple[str, inner.Message]:
    """Return (cipher name, message), or raise ProtocolError for anything else."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}")
    if len(payload) < 2:
        raise ProtocolError("payload is truncated")
    if payload[0] != WIRE_VERSION:
        raise ProtocolError(f"wire version {payload[0]} is not supported")
    cipher = CIPHER_NAMES.get(payload[1])
    if cipher is None:
        raise ProtocolError(f"cipher id {payload[1]} is not supported")
    body = payload[2:]
    try:
        if cipher == "fernet":
            # Python's base64 decoder skips stray bytes and ignores the unused low
            # bits of the last character, so one token would have many spellings.
            # Accept only the canonical one, as a strict decoder elsewhere would.
            if base64.urlsafe_b64encode(base64.urlsafe_b64decode(body)) != body:
                raise ProtocolError("Fernet token is not canonical base64url")
            plain = _fernet(keys)[1].decrypt(body)
        else:
            if len(body) < NONCE_BYTES + 16:
                raise ProtocolError("payload is truncated")
            plain = _aead(keys, cipher).decrypt(
                body[:NONCE_BYTES], body[NONCE_BYTES:], associated_data(payload[1], keys.tag)
            )
    except (InvalidToken, InvalidTag, binascii.Error, ValueError, TypeError) as exc:
        raise ProtocolError("payload does not decrypt under this room's key") from exc
    return cipher, inner.decode(plain, keys.tag)
