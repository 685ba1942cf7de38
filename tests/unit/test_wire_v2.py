"""Wire format version 2: known answers, round trips, tampering, limits, fuzzing.

The known answers are the test vectors of docs/protocol.md (§23). Where a test
builds bytes "by hand" it follows the doc with plain ``cryptography`` and
``struct``, not mqchat's encoder. The invariant under test, after h11: any
bytes either open to a verified Batch or raise ProtocolError.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqchat.errors import PayloadTooLarge, ProtocolError
from mqchat.protocol import fernet_token
from mqchat.protocol.batch import (
    BUCKETS,
    MAX_PLAINTEXT,
    MAX_RECORDS,
    Batch,
    bucket_size,
    encode_plaintext,
    open_batch,
    records_that_fit,
    seal_batch,
)
from mqchat.protocol.epochs import EpochKeys, epoch_key, passphrase_epoch_zero
from mqchat.protocol.kdf import cipher_key, derive_room_keys
from mqchat.protocol.limits import MAX_PAYLOAD_BYTES, MAX_TEXT_BYTES
from mqchat.protocol.records import (
    MAX_INT,
    Heads,
    MemberKey,
    Presence,
    PresenceState,
    Record,
    RepairRequest,
    Text,
    decode_record,
    encode_record,
)
from mqchat.protocol.signing import SigningIdentity

CIPHERS = ("aes-256-gcm", "chacha20-poly1305", "fernet")
CIPHER_IDS = {"fernet": 1, "aes-256-gcm": 2, "chacha20-poly1305": 3}
ALICE = SigningIdentity.from_private_bytes(bytes(range(32)))
BOB = SigningIdentity.from_private_bytes(bytes(range(32, 64)))
SENT_MS = 1_800_000_000_123

# -- the vectors of docs/protocol.md §23 -----------------------------------------

EPOCH0_SECRET = bytes.fromhex("c0df649b835b92800f69e6fc78010871dd298a5a07646a9ee80e9ab9ca781692")
EPOCH0_KEYS_HEX = {
    "topic": "b13ad47aa029bd981bcc3433ad97b663c5f632912af6b964625d8ef27aa0e9ae",
    "cipher fernet": "0379d6f844752242190a32d9607237d9f6ba893772cb7d24f0d63c7847ce23a4",
    "cipher aes-256-gcm": "02b46a10d2121916bde5d3f6e299519260a110b9d954f1e636f0ceaa5daddf58",
    "cipher chacha20-poly1305": "7c5868d770008fe261408d0a2f99637ad0cc5c56dcd904bf2324853dff6670e9",
}
EPOCH0_TAG = "gdmqr4jocgmz3dbqnlkkylemcy"
EPOCH1_SECRET = bytes(range(0x40, 0x60))
EPOCH1_TAG = "x5lwap2kzxgbag2fzskhptw4iu"
AD_HEX = (
    "6d71636861742f76320202000000000000000067646d7172346a6f63676d7a336462716e6c6b6b796c656d6379"
)

TEXTS = (
    Text(5, 1, bytes(range(16)), 1_800_000_000_100, "hello, room"),
    Text(5, 2, bytes(range(16, 32)), 1_800_000_000_120, "second"),
)
PLAIN_B_HEX = (
    "0267646d7172346a6f63676d7a336462716e6c6b6b796c656d6379000000000000000003a107bff3ce10be"
    "1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8000001a3185c507b05616c6963650002010033"
    "00000000000000050000000000000001000102030405060708090a0b0c0d0e0f000001a3185c506468656c"
    "6c6f2c20726f6f6d01002e00000000000000050000000000000002101112131415161718191a1b1c1d1e1f"
    "000001a3185c50787365636f6e64" + "00" * 6 + "dce4aca76cf3dabe38e78abb386f557e985e6b6c49decb"
    "10b518e9677ada542514a45dcb36682d7c47894e5eb143d3642080b20d1527d9dadb2a893723431c0d"
)
PAYLOAD_B_HEX = {
    "aes-256-gcm": (
        "0202a0a1a2a3a4a5a6a7a8a9aaabe0dc08c41ae59f1c9995dd99b9c4bc63072ba1babe1a13bfd4a80baac7"
        "bf81e009fe675bd9aeaf23fa06c4b867fa9b20b0d8ce4ad07d2de0fc0cabfbc7e41f00afe2bb3180e3500b"
        "945581a90d4f43b2670ada6b90df0e51289b6e193d3a937f8cf7029a1b69a73c76afe936794d6b2d0d91d6"
        "40edd7dd9af1167da371f390fd6762bd4ca027fcd6149acc9dbd4e176975bf4afbd878ddbdc3753f874ff6"
        "183353b611c1a2809dc5861737d4d0f825b9dc73cb5a9ff0fb0f51d976bc93e0842d730a9c1006a3a3eda7"
        "ecc63cc52108d3bc4153d937ac95b4a16b9e659dabf305a04c797a63463e750a10bc203c7d8e54b31443f6"
        "68d7ba491a3643392f7994338c697098d015ded5ee851374fa5c7e8d"
    ),
    "chacha20-poly1305": (
        "0203a0a1a2a3a4a5a6a7a8a9aaab4baf50d88471fb42e1d41256aa0ba981372ab8e7b67f100d080ec73979"
        "5531b4575c61e9c1f6a9893ba6a2b8cd136ba46608868ae20ade14f76f825fed1e4e20b97d42cc5f0eff13"
        "423a036807538e5d67f6d7826b489eea2b5ad23026f8d963422d7cc019d4d6ceafdd33a51e6d8d25c3b8e2"
        "4f65ff0260def9be0f6b86eb96cd482e6ee09072bff3ad2d255b5fba73aa589e7f6464b658d415d84dcac0"
        "543203161f5ed0ba61486f4879a3da7b877cf85c0945a25462a75ed8eac90345f1a7fc773ee6b568df3398"
        "4373ccaffad7ecc7ae375bbc47d7371ec6975ba0785f1d7452a378c7de07d3d32a74018f4c43145a551dc4"
        "cac52b317a4dc72345bb789478558d9f833ffd95ad8e9feba38569a8"
    ),
    "fernet": (
        "020180000000006b49d200a0a1a2a3a4a5a6a7a8a9aaabacadaeaf07537433746d8bb9d5a5fc23918eba34"
        "710872e5c4df4bf518791e57ab65287d6bf17a3bbf637e30355b988c8b0183d41b0fad259c30e8bc2191b1"
        "9b3ab7c56b6113fe831dcbe6110b4ffaa5ebe7a2fe45e09da03f28e15c7f83f0b2d74b2f5b6c9f5f503e90"
        "05cfe8426658042c68b23176512ad0b3cee51b380ce1637d9d55e4321a691bf483aa946c3575726e47651b"
        "1a93949ecbf562171795b691035470c29435cdd557abbda981f5a2196b8b08bbd5f110af89c08e44a1bf16"
        "cf0d0648c579afff204016830895b955cd6bf3c1c5c5c41ea8f064e6a81248113ea15a0202f7e5d6cc3210"
        "ab5388dab41cb4ed8ca7f1fe54f1e02247e1f5fd2ed33e8a9184977472b806f81f013bb0497c946300f3c5"
        "98cf0833ac20cca4bf0a4b351cf417412e2189307d6f050927a06d1f459a"
    ),
}
PAYLOADS_B = {cipher: bytes.fromhex(h) for cipher, h in PAYLOAD_B_HEX.items()}
BOB_X25519 = bytes.fromhex("d35a2ff8f0af0d859c2cbf153399e69662be8ad63e44169745e635418ed51f53")
CONTROL = (
    Presence(PresenceState.ONLINE, 60),
    MemberKey(BOB_X25519),
    RepairRequest(ALICE.public_key, 5, ((2, 2),)),
)
PAYLOAD_C = bytes.fromhex(
    "0202c0c1c2c3c4c5c6c7c8c9cacb539d76c7f4adb7f38410b749583726e9bbc0a97948b590719048cc28ed"
    "c7fba021a6ef30235eaa51ee012dd7d715662f6f224ee8afea1156dc94c461340c0c9e8276692a8c7d0f0c"
    "ba71c77f04106a1b361ff754acdaf0afa26e3c3a5ff2143def9130b36ce6be1e2f4b9518ba7a23f8b9a890"
    "6a0e226093c6647584664394c7e5f6a56f60f82ab1e9e28994d0356bf0bc0f23aec845910e2be88bdb8bbc"
    "d75a36df44e0ca53aaa477ad5c770ed1b516649fdfe73d3184f14a64655d63d2258f8fe7e23532b42232ab"
    "f881ed3156cd07ba2f4b980c0c8866feccd2c99a0e806d77b3e2187bc0f9d56864dab239dc46810867bdc5"
    "fb710ad86333464099aee2dea6dc3e3f56569680bbf0cdfe70e81df6"
)
HEADS_RECORD_HEX = "03001900000000000000050000000000000001000000000000000200"

# Version 1's vectors (docs/protocol.md §8.3-§8.5, pinned in test_envelope.py and
# test_legacy.py), for the Fernet token builder.
V1_FERNET_KEY = bytes.fromhex("4bc79fe0681ca34af18849a77b7c9d2fc98dc8ce04a09fc70a96718f6c8bab78")
V1_INNER_SIGNATURE = (
    "b106bfdfeb3637253c1f127fc88ac77715cf036f302e96518b4f9d49b7b5b6c9"
    "d3ff120195df3ce919b0fb67485c10c4a971dacaafd1f4b5cca4644307b74903"
)
V1_FERNET_TOKEN = (
    b"gAAAAABrSdIAEBESExQVFhcYGRobHB0eHxWaKQzo04EHArAibO3OTpeiyYPUpRA2tjzYW599epbtSPWRJDjThI"
    b"GlVHTI6v1ZzdrRc-bj3MHLzhg2itPI53oz1VYy_wjWnS09EFdRwrWhy_9YQwUdleylPOrRq7-1QAMX2XsJOFGC"
    b"KTBArjVCr5KprXVX1MBmaCTvI7L6ZAi3JUcFel7EkJS-WOB8Rd6Z9J8Rjm5Z5zoGVfthsUqsmZNdDVsvGz1vFm"
    b"krRs1UApp2N-JzQcrOrlw0WFOLO5wtFl4WzvDyyYjeYERntXXrekdfnGEF1aN99YwfXrReOOHeHUByRMElYh-z"
    b"pkvrTzsPbOqfpASRtaIJ7CYre8OFVsZJus3zMF7ndqkT60phI13OgPNddnVNKpBlbppIwTe6lTdHgyyVUqNDLe"
    b"KaXiwWzFQ="
)
LEGACY_KEY = b"correct horse battery staple0000"
LEGACY_TOKEN = (
    b"gAAAAABrSdIAAAECAwQFBgcICQoLDA0OD0q6JTTaBsOPTNzSR_1V0tqcYhT2kV58p7s4VP8D2yChRgJaSRhYRDVwuzj4"
    b"uY4nsJeN2NRS76uJFBiUVXQtpU8="
)

E0 = EpochKeys(EPOCH0_SECRET, 0)
E1 = EpochKeys(EPOCH1_SECRET, 1)


def counting_random(start: int = 0) -> Callable[[int], bytes]:
    """Deterministic randomness: the bytes start, start+1, ... (mod 256), in order."""
    position = start

    def take(n: int) -> bytes:
        nonlocal position
        out = bytes((position + i) & 0xFF for i in range(n))
        position += n
        return out

    return take


def seal(records: Sequence[Record], cipher: str = "aes-256-gcm", keys: EpochKeys = E0) -> bytes:
    return seal_batch(
        keys, ALICE, name="alice", records=records, sent_ms=SENT_MS, random=counting_random(0xA0),
        cipher=cipher,
    )  # fmt: skip


# -- building by hand, from the doc alone ----------------------------------------


def record_bytes(kind: int, body: bytes) -> bytes:
    return struct.pack(">BH", kind, len(body)) + body


def text_body(
    stream: int = 1, seq: int = 1, ts: int = 0, text: bytes = b"hi", mid: bytes = b""
) -> bytes:
    return (
        struct.pack(">QQ", stream, seq) + (mid or bytes(range(16))) + struct.pack(">Q", ts) + text
    )


def hand_plaintext(
    records: Sequence[bytes],
    *,
    identity: SigningIdentity = ALICE,
    tag: str = EPOCH0_TAG,
    epoch: int = 0,
    name: bytes = b"alice",
    sent_ms: int = SENT_MS,
    count: int | None = None,
    padding: bytes | None = None,
) -> bytes:
    head = bytes([2]) + tag.encode() + struct.pack(">Q", epoch) + identity.public_key
    head += struct.pack(">QB", sent_ms, len(name)) + name
    body = head + struct.pack(">H", len(records) if count is None else count) + b"".join(records)
    size = next(b for b in BUCKETS if b >= len(body) + 64)
    pad = bytes(size - 64 - len(body)) if padding is None else padding
    signed = body + pad
    return signed + identity.sign(b"mqchat/v2 batch signature\x00" + signed)


def hand_seal(plain: bytes, *, cipher: str = "aes-256-gcm", secret: bytes = EPOCH0_SECRET,
              epoch: int = 0, tag: str = EPOCH0_TAG) -> bytes:  # fmt: skip
    key = epoch_key(secret, epoch, f"cipher {cipher}")
    header = bytes([2, CIPHER_IDS[cipher]])
    if cipher == "fernet":
        token = Fernet(base64.urlsafe_b64encode(key)).encrypt(plain)
        return header + base64.urlsafe_b64decode(token)
    ad = b"mqchat/v2" + header + struct.pack(">Q", epoch) + tag.encode()
    aead = AESGCM(key) if cipher == "aes-256-gcm" else ChaCha20Poly1305(key)
    return header + bytes(12) + aead.encrypt(bytes(12), plain, ad)


def hand_open(payload: bytes, secret: bytes = EPOCH0_SECRET, epoch: int = 0) -> bytes:
    cipher = {v: k for k, v in CIPHER_IDS.items()}[payload[1]]
    key = epoch_key(secret, epoch, f"cipher {cipher}")
    if cipher == "fernet":
        return Fernet(base64.urlsafe_b64encode(key)).decrypt(base64.urlsafe_b64encode(payload[2:]))
    ad = b"mqchat/v2" + payload[:2] + struct.pack(">Q", epoch) + EPOCH0_TAG.encode()
    aead = AESGCM(key) if cipher == "aes-256-gcm" else ChaCha20Poly1305(key)
    return aead.decrypt(payload[2:14], payload[14:], ad)


# -- known answers ---------------------------------------------------------------


def test_passphrase_room_epoch_zero_known_answer() -> None:
    v1 = derive_room_keys("correct horse battery staple", "lobby")
    assert passphrase_epoch_zero(v1) == EPOCH0_SECRET
    for label, key_hex in EPOCH0_KEYS_HEX.items():
        assert epoch_key(EPOCH0_SECRET, 0, label).hex() == key_hex
    assert E0.tag == EPOCH0_TAG
    assert E0.topic("mqchat/v1/") == f"mqchat/v1/{EPOCH0_TAG}"
    assert E1.tag == EPOCH1_TAG


def test_every_epoch_has_its_own_keys_and_tag() -> None:
    tags = {EpochKeys(EPOCH0_SECRET, n).tag for n in range(20)}
    assert len(tags) == 20
    assert epoch_key(EPOCH0_SECRET, 1, "cipher aes-256-gcm") != epoch_key(
        EPOCH0_SECRET, 0, "cipher aes-256-gcm"
    )


def test_associated_data_known_answer() -> None:
    from mqchat.protocol.batch import associated_data

    assert associated_data(2, E0).hex() == AD_HEX


def test_text_batch_plaintext_known_answer() -> None:
    plain = encode_plaintext(
        ALICE, tag=E0.tag, epoch=0, name="alice", sent_ms=SENT_MS, records=TEXTS
    )
    assert plain.hex() == PLAIN_B_HEX
    by_hand = hand_plaintext([encode_record(t) for t in TEXTS])
    assert by_hand == plain


@pytest.mark.parametrize("cipher", CIPHERS)
def test_text_batch_payload_known_answer(cipher: str) -> None:
    assert seal(TEXTS, cipher) == PAYLOADS_B[cipher]


@pytest.mark.parametrize("cipher", CIPHERS)
def test_pinned_payload_decrypts_by_the_doc_to_the_pinned_plaintext(cipher: str) -> None:
    assert hand_open(PAYLOADS_B[cipher]).hex() == PLAIN_B_HEX


@pytest.mark.parametrize("cipher", CIPHERS)
def test_pinned_payload_opens(cipher: str) -> None:
    batch = open_batch(PAYLOADS_B[cipher], E0)
    assert batch == Batch(cipher, EPOCH0_TAG, 0, ALICE.public_key, "alice", SENT_MS, TEXTS, 0)
    assert batch.fingerprint == ALICE.fingerprint


def test_control_batch_known_answer() -> None:
    payload = seal_batch(
        E0, BOB, name="bob", records=CONTROL, sent_ms=1_800_000_000_456,
        random=counting_random(0xC0),
    )  # fmt: skip
    assert payload == PAYLOAD_C
    assert open_batch(PAYLOAD_C, E0).records == CONTROL


def test_heads_record_known_answer() -> None:
    assert encode_record(Heads(5, 1, 2)).hex() == HEADS_RECORD_HEX


def test_plaintext_layout_is_as_documented() -> None:
    plain = bytes.fromhex(PLAIN_B_HEX)
    assert plain[0] == 2
    assert plain[1:27] == EPOCH0_TAG.encode()
    assert struct.unpack(">Q", plain[27:35]) == (0,)
    assert plain[35:67] == ALICE.public_key
    assert struct.unpack(">Q", plain[67:75]) == (SENT_MS,)
    assert plain[75] == 5
    assert plain[76:81] == b"alice"
    assert struct.unpack(">H", plain[81:83]) == (2,)
    assert plain[83:86] == bytes([1]) + struct.pack(">H", 40 + 11)
    assert plain[86:126] == text_body(5, 1, 1_800_000_000_100, b"", bytes(range(16)))
    assert plain[126:137] == b"hello, room"
    ALICE_SIG = ALICE.sign(b"mqchat/v2 batch signature\x00" + plain[:-64])
    assert plain[-64:] == ALICE_SIG


def test_fernet_body_is_a_standard_fernet_token_in_raw_form() -> None:
    key = base64.urlsafe_b64encode(epoch_key(EPOCH0_SECRET, 0, "cipher fernet"))
    token_text = base64.urlsafe_b64encode(PAYLOADS_B["fernet"][2:])
    assert Fernet(key).extract_timestamp(token_text) == SENT_MS // 1000
    assert Fernet(key).decrypt(token_text).hex() == PLAIN_B_HEX


def test_fernet_builder_reproduces_version_1_vectors() -> None:
    """The builder that replaces Fernet._encrypt_from_parts gives v1's pinned tokens."""
    v1 = derive_room_keys("correct horse battery staple", "lobby")
    assert cipher_key(v1.message_key, "fernet") == V1_FERNET_KEY
    from mqchat.protocol import inner

    plain = inner.encode(
        ALICE, room_tag=v1.tag, name="alice", text="hello, room", message_id=bytes(range(16)),
        seq=7, timestamp_ms=1_800_000_000_123,
    )  # fmt: skip
    assert plain[-64:].hex() == V1_INNER_SIGNATURE
    iv = bytes(range(16, 32))
    assert fernet_token.seal_text(V1_FERNET_KEY, plain, timestamp_s=1_800_000_000, iv=iv) == (
        V1_FERNET_TOKEN
    )
    assert fernet_token.open_text(V1_FERNET_KEY, V1_FERNET_TOKEN) == (1_800_000_000, plain)
    legacy = fernet_token.seal_text(
        LEGACY_KEY, b"alice: hello, room", timestamp_s=1_800_000_000, iv=bytes(range(16))
    )
    assert legacy == LEGACY_TOKEN


def test_fernet_builder_interoperates_with_the_fernet_library() -> None:
    key = bytes(range(100, 132))
    token = Fernet(base64.urlsafe_b64encode(key)).encrypt(b"from the library")
    assert fernet_token.open_text(key, token)[1] == b"from the library"
    other_last = b"B=" if token.endswith(b"A=") else b"A="
    for bad in (token[:-2] + other_last, token + b"\n", token[:-1], b" " + token):
        with pytest.raises(ProtocolError):
            fernet_token.open_text(key, bad)


# -- round trips -----------------------------------------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
def test_longest_text_with_longest_name_fits(cipher: str) -> None:
    record = Text(1, 1, bytes(16), MAX_INT, "\u00e9" * (MAX_TEXT_BYTES // 2))
    name = "n" * 64
    payload = seal_batch(
        E0, ALICE, name=name, records=[record], sent_ms=MAX_INT, random=counting_random(),
        cipher=cipher,
    )  # fmt: skip
    assert len(payload) <= MAX_PAYLOAD_BYTES
    batch = open_batch(payload, E0)
    assert batch.records == (record,)
    assert batch.sender_name == name


def test_repaired_text_keeps_id_seq_and_time_and_says_it_is_a_repair() -> None:
    original = TEXTS[0]
    repaired = Text(original.stream, original.seq, original.message_id, original.timestamp_ms,
                    original.text, repaired=True)  # fmt: skip
    kind, body = encode_record(repaired)[0], encode_record(repaired)[3:]
    assert kind == 2
    assert body == encode_record(original)[3:]
    assert open_batch(seal([repaired]), E0).records == (repaired,)


def test_unknown_record_kind_is_skipped_not_fatal() -> None:
    plain = hand_plaintext(
        [record_bytes(0x42, b"from the future"), encode_record(TEXTS[0]), record_bytes(0xFF, b"")]
    )
    batch = open_batch(hand_seal(plain), E0)
    assert batch.records == (TEXTS[0],)
    assert batch.skipped == 2


def test_batch_of_only_unknown_kinds_opens_empty() -> None:
    batch = open_batch(hand_seal(hand_plaintext([record_bytes(0x80, b"x")])), E0)
    assert batch.records == ()
    assert batch.skipped == 1


# -- sizes and buckets -------------------------------------------------------------


def test_buckets_are_as_documented() -> None:
    assert BUCKETS[:16] == tuple(range(256, 4097, 256))
    assert BUCKETS[16:] == (6144, 8192, 12288, 16384, 24576, 32768, 49152, 65280)
    assert MAX_PLAINTEXT == 65280
    assert all(b % 16 == 0 for b in BUCKETS)
    assert [bucket_size(n) for n in (1, 256, 257, 4096, 4097, 6145, 65280)] == [
        256, 256, 512, 4096, 6144, 8192, 65280,
    ]  # fmt: skip
    with pytest.raises(ProtocolError):
        bucket_size(65281)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_largest_batch_is_under_the_payload_limit(cipher: str) -> None:
    overhead = 75 if cipher == "fernet" else 30
    assert MAX_PLAINTEXT + overhead <= MAX_PAYLOAD_BYTES


def test_control_batches_are_the_size_of_short_messages() -> None:
    """The broker cannot tell presence, heads or repair requests from a short message."""
    sizes = {len(seal([Text(1, 1, bytes(16), 0, "x" * n)])) for n in range(0, 67)}
    sizes |= {len(seal(CONTROL)), len(seal([Heads(1, 1, 9, final=True)]))}
    sizes |= {len(seal([Presence(PresenceState.LEAVING)]))}
    assert sizes == {286}


def test_payload_sizes_follow_the_buckets() -> None:
    for n in range(0, MAX_TEXT_BYTES + 1, 331):
        payload = seal([Text(1, 1, bytes(16), 0, "y" * n)])
        assert len(payload) - 30 in BUCKETS


def test_packer_takes_as_many_waiting_records_as_fit() -> None:
    small = [Text(1, n, n.to_bytes(16, "big"), 0, "m" * 50) for n in range(1, 1000)]
    assert records_that_fit(small, name="alice") == MAX_RECORDS
    big = [
        Text(2, n, (-n).to_bytes(16, "big", signed=True), 0, "b" * MAX_TEXT_BYTES)
        for n in range(1, 10)
    ]
    assert records_that_fit(big, name="n" * 64) == 3
    assert records_that_fit([], name="alice") == 0
    for waiting in (small, big, big[2:] + small, small[:3] + big):
        n = records_that_fit(waiting, name="n" * 64)
        payload = seal_batch(
            E0, ALICE, name="n" * 64, records=waiting[:n], sent_ms=0, random=counting_random()
        )
        assert len(payload) <= MAX_PAYLOAD_BYTES
        if n < len(waiting) and n < MAX_RECORDS:
            with pytest.raises(ProtocolError):
                seal_batch(E0, ALICE, name="n" * 64, records=waiting[: n + 1], sent_ms=0,
                           random=counting_random())  # fmt: skip


def test_packer_puts_one_presence_or_member_key_in_a_batch() -> None:
    waiting: list[Record] = [
        TEXTS[0],
        Presence(PresenceState.ONLINE),
        Presence(PresenceState.STILL_HERE),
    ]
    assert records_that_fit(waiting, name="alice") == 2


# -- tampering ---------------------------------------------------------------------


def test_every_flipped_bit_is_detected_aes_gcm() -> None:
    payload = PAYLOADS_B["aes-256-gcm"]
    for position in range(len(payload)):
        for bit in range(8):
            tampered = bytearray(payload)
            tampered[position] ^= 1 << bit
            with pytest.raises(ProtocolError):
                open_batch(bytes(tampered), E0)


@pytest.mark.parametrize("cipher", ["fernet", "chacha20-poly1305"])
def test_every_flipped_bit_is_detected(cipher: str) -> None:
    payload = PAYLOADS_B[cipher]
    for position in range(len(payload)):
        for bit in range(8):
            tampered = bytearray(payload)
            tampered[position] ^= 1 << bit
            with pytest.raises(ProtocolError):
                open_batch(bytes(tampered), E0)


def test_every_flipped_bit_inside_the_plaintext_is_detected() -> None:
    """A member holds the epoch key and can re-encrypt: the signature must catch it."""
    plain = bytes.fromhex(PLAIN_B_HEX)
    for position in range(len(plain)):
        for bit in range(8):
            tampered = bytearray(plain)
            tampered[position] ^= 1 << bit
            with pytest.raises(ProtocolError):
                open_batch(hand_seal(bytes(tampered)), E0)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_truncated_or_extended_payload_is_refused(cipher: str) -> None:
    payload = PAYLOADS_B[cipher]
    for length in range(len(payload)):
        with pytest.raises(ProtocolError):
            open_batch(payload[:length], E0)
    with pytest.raises(ProtocolError):
        open_batch(payload + b"\x00", E0)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_payload_of_another_epoch_or_room_is_refused(cipher: str) -> None:
    other_room = EpochKeys(bytes(range(1, 33)), 0)
    for keys in (E1, EpochKeys(EPOCH0_SECRET, 1), other_room):
        with pytest.raises(ProtocolError):
            open_batch(PAYLOADS_B[cipher], keys)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_plaintext_naming_another_room_or_epoch_is_refused(cipher: str) -> None:
    """Bound inside the plaintext too, which is what protects Fernet (no associated data)."""
    texts = [encode_record(TEXTS[0])]
    for plain in (hand_plaintext(texts, epoch=1), hand_plaintext(texts, tag=EPOCH1_TAG)):
        with pytest.raises(ProtocolError, match="another room or epoch"):
            open_batch(hand_seal(plain, cipher=cipher), E0)


def test_version_1_or_unknown_header_is_refused() -> None:
    body = PAYLOADS_B["aes-256-gcm"][2:]
    for header in (b"\x01\x02", b"\x03\x02", b"\x02\x00", b"\x02\x04", b"\xff\xff"):
        with pytest.raises(ProtocolError):
            open_batch(header + body, E0)


class CountingKeys:
    """EpochKeys that count decryptions: sizes must be refused before any."""

    def __init__(self) -> None:
        self.decryptions = 0
        self.epoch, self.tag, self.fernet_key = 0, EPOCH0_TAG, bytes(32)

    def aead(self, cipher_id: int) -> AESGCM:
        self.decryptions += 1
        return AESGCM(bytes(32))


@pytest.mark.parametrize("cipher_id", [2, 3])
def test_sizes_are_checked_before_any_decryption(cipher_id: int) -> None:
    keys = CountingKeys()
    oversize = bytes([2, cipher_id]) + bytes(MAX_PAYLOAD_BYTES - 1)
    with pytest.raises(PayloadTooLarge):
        open_batch(oversize, keys)  # type: ignore[arg-type]
    for size in (2, 3, 29, 30, 285, 287, 300, 4126 + 1, MAX_PAYLOAD_BYTES):
        with pytest.raises(ProtocolError):
            open_batch(bytes([2, cipher_id]) + bytes(size - 2), keys)  # type: ignore[arg-type]
    assert keys.decryptions == 0


# -- ranges: a member with the key cannot make a peer store an impossible value ------

HOSTILE_RECORDS = {
    "seq 2^53": record_bytes(1, text_body(seq=2**53)),
    "seq 2^63": record_bytes(1, text_body(seq=2**63)),
    "seq 2^64-1": record_bytes(2, text_body(seq=2**64 - 1)),
    "seq 0": record_bytes(1, text_body(seq=0)),
    "stream 0": record_bytes(1, text_body(stream=0)),
    "stream 2^63": record_bytes(1, text_body(stream=2**63)),
    "timestamp 2^63": record_bytes(1, text_body(ts=2**63)),
    "text not UTF-8": record_bytes(1, text_body(text=b"\xff\xfe")),
    "text too long": record_bytes(1, text_body(text=b"x" * (MAX_TEXT_BYTES + 1))),
    "text truncated": record_bytes(1, text_body()[:39]),
    "heads lead 2^63": record_bytes(3, struct.pack(">QQQB", 1, 1, 2**63, 0)),
    "heads trail past lead": record_bytes(3, struct.pack(">QQQB", 1, 5, 3, 0)),
    "heads trail 0": record_bytes(3, struct.pack(">QQQB", 1, 0, 3, 0)),
    "heads flag": record_bytes(3, struct.pack(">QQQB", 1, 1, 3, 2)),
    "heads long": record_bytes(3, struct.pack(">QQQBB", 1, 1, 3, 0, 0)),
    "repair no range": record_bytes(4, ALICE.public_key + struct.pack(">QB", 1, 0)),
    "repair backwards": record_bytes(4, ALICE.public_key + struct.pack(">QBQQ", 1, 1, 5, 4)),
    "repair overlap": record_bytes(4, ALICE.public_key + struct.pack(">QBQQQQ", 1, 2, 1, 5, 5, 6)),
    "repair 2^63": record_bytes(4, ALICE.public_key + struct.pack(">QBQQ", 1, 1, 1, 2**63)),
    "repair count lies": record_bytes(4, ALICE.public_key + struct.pack(">QBQQ", 1, 2, 1, 1)),
    "member key short": record_bytes(5, bytes(range(1, 32))),
    "member key zero": record_bytes(5, bytes(32)),
    "rekey wrong epoch": record_bytes(6, struct.pack(">QH", 5, 1) + bytes(range(1, 113))),
    "rekey no box": record_bytes(6, struct.pack(">QH", 1, 0)),
    "presence state": record_bytes(7, struct.pack(">BI", 9, 60)),
    "presence interval 0": record_bytes(7, struct.pack(">BI", 1, 0)),
    "presence interval": record_bytes(7, struct.pack(">BI", 1, 86401)),
    "kind 0": record_bytes(0, b""),
    "record past the end": struct.pack(">BH", 1, 4000) + text_body(),
}


@pytest.mark.parametrize("name", HOSTILE_RECORDS)
def test_signed_batch_with_a_field_out_of_range_is_refused(name: str) -> None:
    plain = hand_plaintext([encode_record(TEXTS[0]), HOSTILE_RECORDS[name]])
    with pytest.raises(ProtocolError):
        open_batch(hand_seal(plain), E0)


HOSTILE_BATCHES = {
    "sent 2^63": {"sent_ms": 2**63},
    "sent 2^53": {"sent_ms": 2**53},
    "no name": {"name": b""},
    "name 65 bytes": {"name": b"n" * 65},
    "name not UTF-8": {"name": b"\xc3("},
    "count 0": {"count": 0},
    "count past the records": {"count": 3},
    "count 257": {"count": 257},
    "padding not zero": {"padding": b"\x00" * 100 + b"\x01" + b"\x00" * 51},
}


@pytest.mark.parametrize("name", HOSTILE_BATCHES)
def test_signed_batch_with_a_bad_header_is_refused(name: str) -> None:
    plain = hand_plaintext([encode_record(TEXTS[0])], **HOSTILE_BATCHES[name])  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        open_batch(hand_seal(plain), E0)


@pytest.mark.parametrize(
    "records",
    [
        [encode_record(TEXTS[0]), encode_record(TEXTS[0])],
        [encode_record(TEXTS[0]), encode_record(Text(5, 9, TEXTS[0].message_id, 0, "same id"))],
        [encode_record(TEXTS[0]), encode_record(Text(5, 1, bytes(16), 0, "same seq"))],
        [encode_record(Presence(PresenceState.ONLINE))] * 2,
        [encode_record(MemberKey(BOB_X25519))] * 2,
    ],
)
def test_batch_repeating_what_must_be_unique_is_refused(records: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        open_batch(hand_seal(hand_plaintext(records)), E0)


def test_batch_signed_by_another_key_than_it_names_is_refused() -> None:
    plain = bytearray(hand_plaintext([encode_record(TEXTS[0])], identity=ALICE))
    plain[35:67] = BOB.public_key
    with pytest.raises(ProtocolError, match="signature"):
        open_batch(hand_seal(bytes(plain)), E0)


@pytest.mark.parametrize(
    "record",
    [
        Text(0, 1, bytes(16), 0, "x"),
        Text(1, 2**53, bytes(16), 0, "x"),
        Text(1, 1, bytes(15), 0, "x"),
        Text(1, 1, bytes(16), -1, "x"),
        Text(1, 1, bytes(16), 0, "\ud800"),
        Text(1, 1, bytes(16), 0, "x" * (MAX_TEXT_BYTES + 1)),
        Heads(1, 3, 1),
        RepairRequest(ALICE.public_key, 1, ()),
        RepairRequest(ALICE.public_key, 1, ((3, 4), (4, 5))),
        MemberKey(bytes(31)),
        Presence(PresenceState.ONLINE, 0),
    ],
)
def test_sender_cannot_seal_a_record_out_of_range(record: Record) -> None:
    with pytest.raises(ProtocolError):
        seal([record])


def test_sender_cannot_seal_an_empty_or_oversized_batch() -> None:
    with pytest.raises(ProtocolError):
        seal([])
    with pytest.raises(ProtocolError):
        seal([Text(1, n, n.to_bytes(16, "big"), 0, "") for n in range(1, MAX_RECORDS + 2)])
    with pytest.raises(ProtocolError):
        seal_batch(E0, ALICE, name="", records=TEXTS, sent_ms=0, random=counting_random())


# -- fuzzing -------------------------------------------------------------------------

FUZZ = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

texts = st.builds(
    Text,
    stream=st.integers(1, MAX_INT),
    seq=st.integers(1, MAX_INT),
    message_id=st.binary(min_size=16, max_size=16),
    timestamp_ms=st.integers(0, MAX_INT),
    text=st.text(max_size=300),
    repaired=st.booleans(),
)
control = st.one_of(
    st.builds(Heads, st.integers(1, MAX_INT), st.just(1), st.integers(0, MAX_INT), st.booleans()),
    st.builds(Presence, st.sampled_from(PresenceState), st.integers(1, 86400)),
    st.builds(MemberKey, st.binary(min_size=32, max_size=32).filter(any)),
    st.builds(
        RepairRequest,
        st.binary(min_size=32, max_size=32).filter(any),
        st.integers(1, MAX_INT),
        st.lists(st.integers(1, MAX_INT), min_size=1, max_size=64, unique=True).map(
            lambda xs: tuple(zip(sorted(xs)[::2], sorted(xs)[::2], strict=True))
        ),
    ),
)


def unique_batch(records: list[Record]) -> list[Record]:
    out: list[Record] = []
    seen: set[object] = set()
    for record in records:
        key: object = (
            (record.message_id, (record.stream, record.seq))
            if isinstance(record, Text)
            else type(record)
            if isinstance(record, Presence | MemberKey)
            else id(record)
        )
        parts = key if isinstance(key, tuple) else (key,)
        if not seen.intersection(parts):
            out.append(record)
            seen.update(parts)
    return out


@FUZZ
@given(records=st.lists(st.one_of(texts, control), min_size=1, max_size=20),
       cipher=st.sampled_from(CIPHERS), sent_ms=st.integers(0, MAX_INT))  # fmt: skip
def test_round_trip_of_any_valid_batch(records: list[Record], cipher: str, sent_ms: int) -> None:
    batch_records = unique_batch(records)
    payload = seal_batch(
        E0, BOB, name="bob \u00e5", records=batch_records, sent_ms=sent_ms,
        random=counting_random(), cipher=cipher,
    )  # fmt: skip
    batch = open_batch(payload, E0)
    assert batch.records == tuple(batch_records)
    assert (batch.sender_key, batch.sender_name, batch.sent_ms) == (
        BOB.public_key,
        "bob \u00e5",
        sent_ms,
    )


def opens_or_refuses(payload: bytes) -> Batch | None:
    try:
        return open_batch(payload, E0)
    except ProtocolError:
        return None


@FUZZ
@given(payload=st.one_of(
    st.binary(max_size=600),
    st.builds(bytes.__add__, st.sampled_from([b"\x02\x01", b"\x02\x02", b"\x02\x03"]),
              st.binary(min_size=280, max_size=600)),
))  # fmt: skip
def test_arbitrary_bytes_open_or_raise_protocol_error(payload: bytes) -> None:
    assert opens_or_refuses(payload) is None


@FUZZ
@given(plain=st.binary(min_size=256, max_size=256), cipher=st.sampled_from(CIPHERS))
def test_arbitrary_plaintext_under_the_right_key_raises_protocol_error(
    plain: bytes, cipher: str
) -> None:
    assert opens_or_refuses(hand_seal(plain, cipher=cipher)) is None


integers = st.one_of(
    st.integers(0, 3), st.integers(2**53 - 2, 2**53 + 1), st.integers(2**63 - 1, 2**64 - 1),
    st.integers(0, 2**64 - 1),
)  # fmt: skip


def hostile_body(kind: int, draw_ints: list[int], tail: bytes) -> bytes:
    packed = b"".join(struct.pack(">Q", n) for n in draw_ints)
    return record_bytes(kind, packed + tail)


@FUZZ
@given(
    parts=st.lists(
        st.tuples(st.integers(0, 9), st.lists(integers, max_size=4), st.binary(max_size=120)),
        min_size=1,
        max_size=6,
    ),
    sent_ms=integers,
)
def test_signed_hostile_records_open_in_range_or_raise(
    parts: list[tuple[int, list[int], bytes]], sent_ms: int
) -> None:
    """Validly signed and encrypted by a member: open with every value in range, or refuse."""
    plain = hand_plaintext([hostile_body(k, ns, tail) for k, ns, tail in parts], sent_ms=sent_ms)
    batch = opens_or_refuses(hand_seal(plain))
    if batch is None:
        return
    assert 0 <= batch.sent_ms <= MAX_INT
    for record in batch.records:
        for value in vars_of(record):
            if isinstance(value, int):
                assert 0 <= value <= MAX_INT


def vars_of(record: Record) -> list[object]:
    values: list[object] = [getattr(record, name) for name in record.__slots__]
    if isinstance(record, RepairRequest):
        values += [n for pair in record.ranges for n in pair]
    return values


def doc_without_white_space() -> str:
    """docs/protocol.md with all white space removed, so wrapped hex reads as one string."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
    return re.sub(r"\s+", "", doc.read_text(encoding="utf-8"))


def test_the_doc_shows_the_pinned_vectors() -> None:
    doc = doc_without_white_space()
    pinned = [payload.hex() for payload in PAYLOADS_B.values()]
    pinned += [
        PAYLOAD_C.hex(),
        EPOCH0_SECRET.hex(),
        AD_HEX,
        HEADS_RECORD_HEX,
        *EPOCH0_KEYS_HEX.values(),
    ]
    pinned += [PLAIN_B_HEX[-128:], EPOCH0_TAG, EPOCH1_TAG]
    for value in pinned:
        assert value in doc, value[:40]


@FUZZ
@given(kind=st.integers(0, 255), body=st.binary(max_size=300))
def test_any_record_body_decodes_or_raises_protocol_error(kind: int, body: bytes) -> None:
    try:
        record = decode_record(kind, body)
    except ProtocolError:
        return
    if record is None:
        assert kind > 7
    else:
        assert encode_record(record) == record_bytes(kind, body)  # one value, one encoding


@FUZZ
@given(token=st.binary(max_size=200), key=st.binary(min_size=32, max_size=32))
def test_any_fernet_token_opens_or_raises_protocol_error(token: bytes, key: bytes) -> None:
    for attempt in (fernet_token.open_raw, fernet_token.open_text):
        with pytest.raises(ProtocolError):
            attempt(key, token)
