"""Seal and open wire version 2 payloads (docs/protocol.md, "Version 2").

A payload is one *batch*: 1 to 256 records of one sender in one room and
epoch, signed once with Ed25519, padded to a size bucket and encrypted once.
``seal_batch`` turns records into payload bytes; ``open_batch`` turns any bytes
into a verified ``Batch`` or raises ProtocolError, nothing else. Sizes are
checked before any decryption.
"""

from __future__ import annotations

import bisect
import hmac
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

# The crypto core loads cryptography at import, as kdf.py and envelope.py do.
from cryptography.exceptions import InvalidTag  # noqa: TID253

from mqchat.errors import PayloadTooLarge, ProtocolError
from mqchat.protocol import fernet_token
from mqchat.protocol.envelope import CIPHER_IDS, CIPHER_NAMES, check_cipher
from mqchat.protocol.epochs import DEFAULT_CIPHER, EpochKeys
from mqchat.protocol.fingerprints import fingerprint
from mqchat.protocol.kdf import TAG_CHARS
from mqchat.protocol.limits import MAX_INT, MAX_NAME_BYTES, MAX_PAYLOAD_BYTES
from mqchat.protocol.records import (
    MESSAGE_ID_BYTES,
    RECORD_HEAD_BYTES,
    SINGLETON_KINDS,
    Kind,
    Record,
    Rekey,
    Text,
    decode_record,
    encode_record,
    record_body,
    record_kind,
)
from mqchat.protocol.signing import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, SigningIdentity, verify

Random = Callable[[int], bytes]

WIRE_VERSION: Final = 2
INNER_VERSION: Final = 2
AD_LABEL: Final = b"mqchat/v2"
SIGNATURE_LABEL: Final = b"mqchat/v2 batch signature\x00"
NONCE_BYTES: Final = 12
AEAD_TAG_BYTES: Final = 16
MAX_RECORDS: Final = 256

SMALL_BUCKET: Final = 256
BUCKETS: Final[tuple[int, ...]] = (
    *range(SMALL_BUCKET, 4096 + 1, SMALL_BUCKET),
    6144,
    8192,
    12288,
    16384,
    24576,
    32768,
    49152,
    65280,
)
"""Plaintext sizes: multiples of 256 up to 4 KiB, then powers of two and 1.5 times them."""
MAX_PLAINTEXT: Final = BUCKETS[-1]
_BUCKET_SET: Final = frozenset(BUCKETS)

AEAD_OVERHEAD: Final = 2 + NONCE_BYTES + AEAD_TAG_BYTES
FERNET_OVERHEAD: Final = 2 + fernet_token.HEAD_BYTES + fernet_token.BLOCK_BYTES + 32
"""Every bucket is a multiple of 16, so PKCS#7 always adds one whole block."""

# version, room tag, epoch, sender key, sent_ms
_HEAD = struct.Struct(f">B{TAG_CHARS}sQ{PUBLIC_KEY_BYTES}sQ")
_NAME_LEN = 1
_COUNT = struct.Struct(">H")


@dataclass(frozen=True, slots=True)
class Batch:
    """A verified batch. ``skipped`` counts records of kinds this version does not know."""

    cipher: str
    room_tag: str
    epoch: int
    sender_key: bytes
    sender_name: str
    sent_ms: int
    records: tuple[Record, ...] = field(repr=False)
    skipped: int = 0

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.sender_key)


def bucket_size(length: int) -> int:
    """The smallest bucket that holds ``length`` bytes of plaintext."""
    at = bisect.bisect_left(BUCKETS, length)
    if at == len(BUCKETS):
        raise ProtocolError(f"a batch of {length} bytes is over {MAX_PLAINTEXT}")
    return BUCKETS[at]


def fixed_size(name: str) -> int:
    """Plaintext bytes of a batch with no record: header, name, count and signature."""
    return _HEAD.size + _NAME_LEN + len(name.encode()) + _COUNT.size + SIGNATURE_BYTES


def records_that_fit(waiting: Sequence[Record], *, name: str) -> int:
    """How many of the leading ``waiting`` records one batch can carry, in order
    (``bodies_that_fit`` of their bodies)."""
    return bodies_that_fit([record_body(r) for r in waiting[:MAX_RECORDS]], name=name)


def bodies_that_fit(bodies: Sequence[tuple[int, bytes]], *, name: str) -> int:
    """How many of the leading waiting records, as (kind, body), one batch carries.

    The sender asks this of what is already waiting when the broker link is free,
    seals that many and keeps the rest for the next batch: at most MAX_RECORDS, as
    many as fit MAX_PLAINTEXT, no second singleton (member key, rekey, presence...),
    and no text whose number or id is already in the batch (a repaired text may
    wait beside its original). Any one valid record fits on its own, so the answer
    is at least 1 when ``bodies`` is not empty.
    """
    size = fixed_size(name)
    singletons: set[int] = set()
    numbers: set[tuple[int, int]] = set()
    ids: set[bytes] = set()
    count = 0
    for kind, body in bodies[:MAX_RECORDS]:
        size += RECORD_HEAD_BYTES + len(body)
        if size > MAX_PLAINTEXT or kind in singletons:
            break
        if kind in _TEXT_KINDS:
            stream, seq, message_id = _TEXT_KEYS.unpack_from(body)
            if (stream, seq) in numbers or message_id in ids:
                break
            numbers.add((stream, seq))
            ids.add(message_id)
        elif kind in SINGLETON_KINDS:
            singletons.add(kind)
        count += 1
    if bodies and not count:
        raise ProtocolError("the first waiting record does not fit in a batch")
    return count


def _check_batch(records: Sequence[Record], epoch: int) -> None:
    """Rules across records: singletons once, texts unique, a rekey names the next epoch."""
    if not 1 <= len(records) <= MAX_RECORDS:
        raise ProtocolError(f"a batch holds 1 to {MAX_RECORDS} records, not {len(records)}")
    singletons: set[type] = set()
    ids: set[bytes] = set()
    numbers: set[tuple[int, int]] = set()
    for record in records:
        if isinstance(record, Text):
            if record.message_id in ids or (record.stream, record.seq) in numbers:
                raise ProtocolError("a batch repeats a message id or sequence number")
            ids.add(record.message_id)
            numbers.add((record.stream, record.seq))
        elif record_kind(record) in SINGLETON_KINDS:
            if type(record) in singletons:
                raise ProtocolError(f"a batch holds more than one {type(record).__name__}")
            singletons.add(type(record))
        if isinstance(record, Rekey) and record.new_epoch != epoch + 1:
            raise ProtocolError("a rekey must name the epoch after the batch's own")
    if Kind.COMMIT in {record_kind(r) for r in records} and Rekey not in singletons:
        raise ProtocolError("a commit travels with its rekey")


def encode_plaintext(
    identity: SigningIdentity,
    *,
    tag: str,
    epoch: int,
    name: str,
    sent_ms: int,
    records: Sequence[Record],
) -> bytes:
    """Build, pad and sign a batch plaintext."""
    _check_batch(records, epoch)
    encoded = [encode_record(record) for record in records]
    return _signed_plaintext(identity, tag, epoch, name, sent_ms, encoded)


def _signed_plaintext(
    identity: SigningIdentity, tag: str, epoch: int, name: str, sent_ms: int, encoded: list[bytes]
) -> bytes:
    name_b = name.encode()
    if not 1 <= len(name_b) <= MAX_NAME_BYTES or len(tag) != TAG_CHARS:
        raise ProtocolError("sender name or room tag out of bounds")
    if not 0 <= epoch <= MAX_INT or not 0 <= sent_ms <= MAX_INT:
        raise ProtocolError("epoch or sent time out of range")
    head = _HEAD.pack(INNER_VERSION, tag.encode(), epoch, identity.public_key, sent_ms)
    body = b"".join([head, bytes([len(name_b)]), name_b, _COUNT.pack(len(encoded)), *encoded])
    padded = body + bytes(bucket_size(len(body) + SIGNATURE_BYTES) - SIGNATURE_BYTES - len(body))
    return padded + identity.sign(SIGNATURE_LABEL + padded)


BODY_KINDS: Final = frozenset({Kind.TEXT, Kind.REPAIRED_TEXT, Kind.HEADS, Kind.REPAIR_REQUEST})
"""Kinds ``seal_bodies`` takes as the bodies they were queued as (all the outbox
holds): none is a singleton, and of these only texts have a rule across records,
which ``bodies_that_fit`` keeps."""
_TEXT_KINDS: Final = frozenset({Kind.TEXT, Kind.REPAIRED_TEXT})
_TEXT_KEYS = struct.Struct(f">QQ{MESSAGE_ID_BYTES}s")
_RECORD_HEAD = struct.Struct(">BH")


def seal_bodies(
    keys: EpochKeys,
    identity: SigningIdentity,
    *,
    name: str,
    bodies: Sequence[tuple[int, bytes]],
    sent_ms: int,
    random: Random,
    cipher: str = DEFAULT_CIPHER,
) -> tuple[bytes, int]:
    """Seal the leading ``bodies`` that fit one batch (``bodies_that_fit``): the
    payload and how many it carries. The same bytes as ``seal_batch`` of those
    records, without decoding each and encoding it again (issue 24)."""
    if any(kind not in BODY_KINDS for kind, _ in bodies):
        raise ProtocolError("only texts, heads and repair requests are sealed from their bodies")
    count = bodies_that_fit(bodies, name=name)
    if not count:
        raise ProtocolError("a batch holds at least one record")
    encoded = [_RECORD_HEAD.pack(kind, len(body)) + body for kind, body in bodies[:count]]
    plain = _signed_plaintext(identity, keys.tag, keys.epoch, name, sent_ms, encoded)
    return _seal_plain(keys, plain, cipher, sent_ms, random), count


def associated_data(cipher_id: int, keys: EpochKeys) -> bytes:
    """ "mqchat/v2" || 0x02 || cipher id || uint64(epoch) || room tag: 45 bytes."""
    return AD_LABEL + struct.pack(">BBQ", WIRE_VERSION, cipher_id, keys.epoch) + keys.tag.encode()


def seal_batch(
    keys: EpochKeys,
    identity: SigningIdentity,
    *,
    name: str,
    records: Sequence[Record],
    sent_ms: int,
    random: Random,
    cipher: str = DEFAULT_CIPHER,
) -> bytes:
    """Return the payload of one batch. ``random`` gives the nonce or the Fernet IV."""
    plain = encode_plaintext(
        identity, tag=keys.tag, epoch=keys.epoch, name=name, sent_ms=sent_ms, records=records
    )
    return _seal_plain(keys, plain, cipher, sent_ms, random)


def _seal_plain(keys: EpochKeys, plain: bytes, cipher: str, sent_ms: int, random: Random) -> bytes:
    cipher_id = CIPHER_IDS[check_cipher(cipher)]
    header = bytes([WIRE_VERSION, cipher_id])
    if cipher == "fernet":
        iv = random(fernet_token.IV_BYTES)
        token = fernet_token.seal_raw(keys.fernet_key, plain, timestamp_s=sent_ms // 1000, iv=iv)
        return header + token
    nonce = random(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError("the randomness source gave the wrong number of bytes")
    sealed = keys.aead(cipher_id).encrypt(nonce, plain, associated_data(cipher_id, keys))
    return header + nonce + sealed


def _decrypt(payload: bytes, keys: EpochKeys) -> tuple[str, bytes]:
    """Check the header and the size, then decrypt. Nothing is decrypted before the size."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}")
    if len(payload) < 2:
        raise ProtocolError("payload is truncated")
    if payload[0] != WIRE_VERSION:
        raise ProtocolError(f"wire version {payload[0]} is not version 2")
    cipher = CIPHER_NAMES.get(payload[1])
    if cipher is None:
        raise ProtocolError(f"cipher id {payload[1]} is not supported")
    overhead = FERNET_OVERHEAD if cipher == "fernet" else AEAD_OVERHEAD
    if len(payload) - overhead not in _BUCKET_SET:
        raise ProtocolError(f"payload of {len(payload)} bytes is not a {cipher} batch size")
    if cipher == "fernet":
        return cipher, fernet_token.open_raw(keys.fernet_key, payload[2:])[1]
    nonce, sealed = payload[2 : 2 + NONCE_BYTES], payload[2 + NONCE_BYTES :]
    try:
        plain = keys.aead(payload[1]).decrypt(nonce, sealed, associated_data(payload[1], keys))
    except InvalidTag as exc:
        raise ProtocolError("payload does not decrypt under this epoch's key") from exc
    return cipher, plain


def _split_records(signed: bytes, at: int, count: int) -> tuple[list[Record], int]:
    records: list[Record] = []
    skipped = 0
    for _ in range(count):
        if at + RECORD_HEAD_BYTES > len(signed):
            raise ProtocolError("batch is truncated inside a record")
        kind = signed[at]
        (length,) = struct.unpack_from(">H", signed, at + 1)
        at += RECORD_HEAD_BYTES
        if at + length > len(signed):
            raise ProtocolError("a record runs past the end of the batch")
        record = decode_record(kind, signed[at : at + length])
        at += length
        if record is None:
            skipped += 1
        else:
            records.append(record)
    return records, at


def parse_plaintext(plain: bytes, keys: EpochKeys, cipher: str = DEFAULT_CIPHER) -> Batch:
    """Check a decrypted batch against this room and epoch, its ranges and its signature."""
    if len(plain) not in _BUCKET_SET:
        raise ProtocolError("batch plaintext is not a bucket size")
    signed, signature = plain[:-SIGNATURE_BYTES], plain[-SIGNATURE_BYTES:]
    version, tag, epoch, sender_key, sent_ms = _HEAD.unpack_from(signed)
    if version != INNER_VERSION:
        raise ProtocolError(f"batch version {version} is not supported")
    if not hmac.compare_digest(tag, keys.tag.encode()) or epoch != keys.epoch:
        raise ProtocolError("batch belongs to another room or epoch")
    if sent_ms > MAX_INT:
        raise ProtocolError("batch sent time is out of range")
    at = _HEAD.size
    name_len = signed[at]
    name_b = signed[at + 1 : at + 1 + name_len]
    at += 1 + name_len
    if not 1 <= name_len <= MAX_NAME_BYTES or at + _COUNT.size > len(signed):
        raise ProtocolError("sender name is out of bounds")
    (count,) = _COUNT.unpack_from(signed, at)
    if not 1 <= count <= MAX_RECORDS:
        raise ProtocolError(f"a batch holds 1 to {MAX_RECORDS} records, not {count}")
    records, end = _split_records(signed, at + _COUNT.size, count)
    if any(signed[end:]):
        raise ProtocolError("batch padding is not zero")
    if records:
        _check_batch(records, epoch)
    if not verify(sender_key, signature, SIGNATURE_LABEL + signed):
        raise ProtocolError("batch signature does not verify")
    try:
        name = name_b.decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError("sender name is not UTF-8") from exc
    return Batch(
        cipher, tag.decode(), epoch, sender_key, name, sent_ms, tuple(records), count - len(records)
    )


def open_batch(payload: bytes, keys: EpochKeys) -> Batch:
    """Return the verified batch, or raise ProtocolError for anything else."""
    cipher, plain = _decrypt(payload, keys)
    return parse_plaintext(plain, keys, cipher)
