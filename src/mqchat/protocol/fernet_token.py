"""Fernet tokens built from the public spec (https://github.com/fernet/spec).

``cryptography``'s ``Fernet.encrypt`` reads the clock and ``os.urandom`` itself,
and its only way round that is the private ``_encrypt_from_parts``. The
protocol takes the clock and randomness from its caller, so this module builds
tokens from the primitives the spec names: AES-128-CBC, PKCS#7 and
HMAC-SHA256. The 32-byte key is split as the spec says: the first 16 bytes sign,
the last 16 encrypt.

Two spellings of one token: the *raw* token (bytes, what wire version 2
carries) and its *text* (canonical base64url, what version 1 and the original
program carry).
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Final

# The crypto core loads cryptography at import, as kdf.py and envelope.py do.
from cryptography.exceptions import InvalidSignature  # noqa: TID253
from cryptography.hazmat.primitives import hashes, hmac, padding  # noqa: TID253
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: TID253

from mqchat.errors import ProtocolError

TOKEN_VERSION: Final = 0x80
KEY_BYTES: Final = 32
IV_BYTES: Final = 16
HMAC_BYTES: Final = 32
BLOCK_BYTES: Final = 16
HEAD_BYTES: Final = 1 + 8 + IV_BYTES
MIN_TOKEN_BYTES: Final = HEAD_BYTES + BLOCK_BYTES + HMAC_BYTES
MAX_TIMESTAMP: Final = 2**64 - 1


def _split(key: bytes) -> tuple[bytes, bytes]:
    if len(key) != KEY_BYTES:
        raise ProtocolError("a Fernet key is 32 bytes")
    return key[:16], key[16:]


def _mac(signing_key: bytes, data: bytes) -> hmac.HMAC:
    mac = hmac.HMAC(signing_key, hashes.SHA256())
    mac.update(data)
    return mac


def seal_raw(key: bytes, plaintext: bytes, *, timestamp_s: int, iv: bytes) -> bytes:
    """The raw token: 0x80 || timestamp || IV || AES-128-CBC(PKCS7(plaintext)) || HMAC."""
    signing_key, encryption_key = _split(key)
    if len(iv) != IV_BYTES or not 0 <= timestamp_s <= MAX_TIMESTAMP:
        raise ProtocolError("a Fernet IV is 16 bytes and its timestamp a uint64")
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(encryption_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    signed = struct.pack(">BQ", TOKEN_VERSION, timestamp_s) + iv + ciphertext
    return signed + _mac(signing_key, signed).finalize()


def open_raw(key: bytes, token: bytes) -> tuple[int, bytes]:
    """Return (timestamp, plaintext) of a raw token, or raise ProtocolError. No TTL."""
    signing_key, encryption_key = _split(key)
    if len(token) < MIN_TOKEN_BYTES or (len(token) - HEAD_BYTES - HMAC_BYTES) % BLOCK_BYTES:
        raise ProtocolError("Fernet token has a bad length")
    if token[0] != TOKEN_VERSION:
        raise ProtocolError("Fernet token has a bad version byte")
    signed, tag = token[:-HMAC_BYTES], token[-HMAC_BYTES:]
    try:
        _mac(signing_key, signed).verify(tag)  # constant-time
    except InvalidSignature as exc:
        raise ProtocolError("Fernet token does not verify under this key") from exc
    (timestamp,) = struct.unpack_from(">Q", token, 1)
    iv = token[9:HEAD_BYTES]
    decryptor = Cipher(algorithms.AES(encryption_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(signed[HEAD_BYTES:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise ProtocolError("Fernet token has bad padding") from exc
    return timestamp, plaintext


def to_text(token: bytes) -> bytes:
    """The token's canonical base64url text, with "=" padding, as Fernet libraries write it."""
    return base64.urlsafe_b64encode(token)


def from_text(text: bytes) -> bytes:
    """Decode a token's text, accepting only the canonical spelling."""
    try:
        raw = base64.urlsafe_b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("Fernet token is not base64url") from exc
    # Python's decoder skips stray bytes and ignores the unused low bits of the
    # last character, so one token would have many spellings.
    if to_text(raw) != text:
        raise ProtocolError("Fernet token is not canonical base64url")
    return raw


def seal_text(key: bytes, plaintext: bytes, *, timestamp_s: int, iv: bytes) -> bytes:
    """The token as Fernet libraries write it: what ``Fernet(b64(key)).encrypt`` would give."""
    return to_text(seal_raw(key, plaintext, timestamp_s=timestamp_s, iv=iv))


def open_text(key: bytes, text: bytes) -> tuple[int, bytes]:
    return open_raw(key, from_text(text))
