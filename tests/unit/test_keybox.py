"""Member keys, the key box, rekey records and the rekey winner rule.

Known answers are docs/protocol.md §23.4. A box must open only for its
recipient, in its room, for its epoch, inside the rekey of the member who made
it; anything else is a ProtocolError.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from mqchat.errors import ProtocolError
from mqchat.protocol.batch import open_batch, seal_batch
from mqchat.protocol.epochs import EpochKeys, rekey_id
from mqchat.protocol.keybox import MemberKeyPair, build_rekey, open_box, seal_box, secret_for
from mqchat.protocol.records import (
    MAX_REKEY_RECIPIENTS,
    KeyBox,
    MemberKey,
    Record,
    Rekey,
    Text,
    encode_record,
)
from mqchat.protocol.signing import SigningIdentity

ALICE = SigningIdentity.from_private_bytes(bytes(range(32)))
BOB = SigningIdentity.from_private_bytes(bytes(range(32, 64)))
CAROL = SigningIdentity.from_private_bytes(bytes(range(64, 96)))
EPOCH0_SECRET = bytes.fromhex("c0df649b835b92800f69e6fc78010871dd298a5a07646a9ee80e9ab9ca781692")
E0 = EpochKeys(EPOCH0_SECRET, 0)
NEW_SECRET = bytes(range(0x40, 0x60))

ALICE_X25519_PRIVATE = "ce67b4a725f2d2cf6824a9300387add474a843f960f0f96c25f0445fe7f18a53"
ALICE_X25519 = bytes.fromhex("a5e77d1d655875683b7f53d35ed061e012199522f2d155f9d58717e12fc2cd37")
BOB_X25519_PRIVATE = "951b9862b1d8f1203c10128d920dd8882b55f7c669f25c333a74574ec59872cb"
BOB_X25519 = bytes.fromhex("d35a2ff8f0af0d859c2cbf153399e69662be8ad63e44169745e635418ed51f53")
BOB_BOX_EPHEMERAL = "493e82fc74464a59268817623d2053c5eb8e2cc4a988b4fee179ec6b010d531d"
BOB_BOX_SHARED = "cc9092bedcd90f6ea469dc6e3dbc6251d0f109607729ce02a81bbebdcefd9d66"
BOB_BOX_KEY = "eb3dbc69f4a0cfd88c3a9701da810630ad5b95b9b17bb4cb2000ab00c8f31dbe"
BOB_BOX_NONCE = "f4493f49ccc5ea39ba8da3ec"
BOB_BOX_SEALED = (
    "8cdc70887a8f1108212d62c36d7daac4f831fc7e5eeecd60abc9e228df84fac7"
    "f62f74bf863040bfd5c2c5c90a83608b"
)
REKEY_RECORD_HEX = (
    "0600ea00000000000000010002a5e77d1d655875683b7f53d35ed061e012199522f2d155f9d58717e12fc2"
    "cd37675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52f46d52202d578d0fbd3"
    "4771ce28bd63c946767f0712c57cf2028e410024d8c290f891bd20e36581b1cf6d6ee051f2f9ced35a2ff8"
    "f0af0d859c2cbf153399e69662be8ad63e44169745e635418ed51f53493e82fc74464a59268817623d2053"
    "c5eb8e2cc4a988b4fee179ec6b010d531d8cdc70887a8f1108212d62c36d7daac4f831fc7e5eeecd60abc9"
    "e228df84fac7f62f74bf863040bfd5c2c5c90a83608b"
)
REKEY_ID = "70675376f29462f0f14a53f74305cab5c97fe9320eb5975714d280782402a1c6"
REKEY_PAYLOAD_SHA256 = "ed5874e31160ee8e67f67bdb65420dd9180a113e4e50c33d3d835210ccae53c3"


def counting_random(start: int = 0) -> Callable[[int], bytes]:
    position = start

    def take(n: int) -> bytes:
        nonlocal position
        out = bytes((position + i) & 0xFF for i in range(n))
        position += n
        return out

    return take


def pinned_rekey() -> Rekey:
    return build_rekey(
        NEW_SECRET, [BOB_X25519, ALICE_X25519], tag=E0.tag, new_epoch=1,
        rekeyer_key=ALICE.public_key, random=counting_random(0x60),
    )  # fmt: skip


def box_for(recipient: bytes, **overrides: object) -> KeyBox:
    args: dict[str, object] = {
        "tag": E0.tag, "new_epoch": 1, "rekeyer_key": ALICE.public_key,
        "random": counting_random(0x80),
    }  # fmt: skip
    args.update(overrides)
    return seal_box(NEW_SECRET, recipient, **args)  # type: ignore[arg-type]


BOB_KEYS = MemberKeyPair.from_identity(BOB)


# -- known answers ----------------------------------------------------------------


def test_member_keys_derive_from_the_identity_seed() -> None:
    for identity, private_hex, public in (
        (ALICE, ALICE_X25519_PRIVATE, ALICE_X25519),
        (BOB, BOB_X25519_PRIVATE, BOB_X25519),
    ):
        seed = HKDF(hashes.SHA256(), 32, None, b"mqchat/v2 x25519 member key").derive(
            identity.private_bytes()
        )
        assert seed.hex() == private_hex
        assert MemberKeyPair.from_identity(identity).public_key == public


def test_key_box_known_answer_by_the_doc() -> None:
    """Rebuild bob's box of the pinned rekey from the doc with plain cryptography."""
    ephemeral = X25519PrivateKey.from_private_bytes(bytes(range(0x80, 0xA0)))
    bob_private = X25519PrivateKey.from_private_bytes(bytes.fromhex(BOB_X25519_PRIVATE))
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(BOB_X25519))
    assert shared.hex() == BOB_BOX_SHARED
    assert (
        bob_private.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(BOB_BOX_EPHEMERAL)))
        == shared
    )
    info = (
        b"mqchat/v2 key box\x00" + E0.tag.encode() + struct.pack(">Q", 1) + ALICE.public_key
        + bytes.fromhex(BOB_BOX_EPHEMERAL) + BOB_X25519
    )  # fmt: skip
    okm = HKDF(hashes.SHA256(), 44, None, info).derive(shared)
    assert (okm[:32].hex(), okm[32:].hex()) == (BOB_BOX_KEY, BOB_BOX_NONCE)
    assert AESGCM(okm[:32]).encrypt(okm[32:], NEW_SECRET, None).hex() == BOB_BOX_SEALED
    box = box_for(BOB_X25519)
    assert (box.ephemeral.hex(), box.sealed.hex()) == (BOB_BOX_EPHEMERAL, BOB_BOX_SEALED)


def test_rekey_record_and_id_known_answer() -> None:
    rekey = pinned_rekey()
    assert rekey.recipients == (ALICE_X25519, BOB_X25519)  # sorted, whatever the input order
    assert encode_record(rekey).hex() == REKEY_RECORD_HEX
    rid = rekey_id(rekeyer_key=ALICE.public_key, epoch=0, tag=E0.tag, rekey=rekey)
    assert rid.hex() == REKEY_ID
    by_hand = hashlib.sha256(
        b"mqchat/v2 rekey id\x00" + ALICE.public_key + bytes(8) + E0.tag.encode()
        + bytes.fromhex(REKEY_RECORD_HEX)[3:]
    ).digest()  # fmt: skip
    assert rid == by_hand


def test_rekey_batch_known_answer_and_bob_finds_the_new_secret() -> None:
    payload = seal_batch(
        E0, ALICE, name="alice", records=[pinned_rekey()], sent_ms=1_800_000_000_789,
        random=counting_random(0xE0),
    )  # fmt: skip
    assert hashlib.sha256(payload).hexdigest() == REKEY_PAYLOAD_SHA256
    batch = open_batch(payload, E0)
    (rekey,) = batch.records
    assert isinstance(rekey, Rekey)
    found = secret_for(rekey, BOB_KEYS, tag=batch.room_tag, rekeyer_key=batch.sender_key)
    assert found == NEW_SECRET
    assert EpochKeys(found, rekey.new_epoch).tag == "x5lwap2kzxgbag2fzskhptw4iu"


# -- a box opens only where it belongs ---------------------------------------------


def test_removed_member_finds_no_box() -> None:
    carol = MemberKeyPair.from_identity(CAROL)
    assert secret_for(pinned_rekey(), carol, tag=E0.tag, rekeyer_key=ALICE.public_key) is None


def test_box_moved_to_another_member_does_not_open() -> None:
    carol = MemberKeyPair.from_identity(CAROL)
    box = box_for(BOB_X25519)
    moved = KeyBox(carol.public_key, box.ephemeral, box.sealed)
    with pytest.raises(ProtocolError):
        open_box(moved, carol, tag=E0.tag, new_epoch=1, rekeyer_key=ALICE.public_key)
    with pytest.raises(ProtocolError, match="another member"):
        open_box(box, carol, tag=E0.tag, new_epoch=1, rekeyer_key=ALICE.public_key)


@pytest.mark.parametrize(
    "context",
    [
        {"tag": "a" * 26},
        {"new_epoch": 2},
        {"rekeyer_key": CAROL.public_key},
    ],
)
def test_box_does_not_open_in_another_room_epoch_or_rekey(context: dict[str, object]) -> None:
    box = box_for(BOB_X25519)
    where: dict[str, object] = {"tag": E0.tag, "new_epoch": 1, "rekeyer_key": ALICE.public_key}
    where.update(context)
    with pytest.raises(ProtocolError, match="does not open"):
        open_box(box, BOB_KEYS, **where)  # type: ignore[arg-type]


def test_every_flipped_bit_of_a_box_is_detected() -> None:
    box = box_for(BOB_X25519)
    for field in ("ephemeral", "sealed"):
        value = getattr(box, field)
        for position in range(len(value)):
            for bit in range(8):
                flipped = bytearray(value)
                flipped[position] ^= 1 << bit
                tampered = KeyBox(box.recipient, box.ephemeral, box.sealed)
                object.__setattr__(tampered, field, bytes(flipped))
                with pytest.raises(ProtocolError):
                    open_box(tampered, BOB_KEYS, tag=E0.tag, new_epoch=1,
                             rekeyer_key=ALICE.public_key)  # fmt: skip


@pytest.mark.parametrize("low_order", [bytes(32), bytes([1]) + bytes(31)])
def test_low_order_keys_are_refused(low_order: bytes) -> None:
    with pytest.raises(ProtocolError):
        box_for(low_order)
    box = box_for(BOB_X25519)
    with pytest.raises(ProtocolError):
        open_box(KeyBox(BOB_X25519, low_order, box.sealed), BOB_KEYS, tag=E0.tag, new_epoch=1,
                 rekeyer_key=ALICE.public_key)  # fmt: skip


def test_member_key_repr_hides_the_private_key() -> None:
    text = repr(BOB_KEYS)
    assert BOB_X25519_PRIVATE not in text
    assert "fingerprint" in text


# -- rekey records ------------------------------------------------------------------


def test_rekey_limits() -> None:
    with pytest.raises(ProtocolError):
        build_rekey(NEW_SECRET, [], tag=E0.tag, new_epoch=1, rekeyer_key=ALICE.public_key,
                    random=counting_random())  # fmt: skip
    many = [i.to_bytes(32, "big") for i in range(9, 9 + MAX_REKEY_RECIPIENTS + 1)]
    with pytest.raises(ProtocolError):
        build_rekey(NEW_SECRET, many, tag=E0.tag, new_epoch=1, rekeyer_key=ALICE.public_key,
                    random=counting_random())  # fmt: skip


def test_largest_rekey_fits_in_one_batch() -> None:
    recipients = [
        MemberKeyPair(X25519PrivateKey.from_private_bytes(i.to_bytes(32, "big"))).public_key
        for i in range(1, MAX_REKEY_RECIPIENTS + 1)
    ]
    rekey = build_rekey(NEW_SECRET, recipients, tag=E0.tag, new_epoch=1,
                        rekeyer_key=ALICE.public_key, random=counting_random())  # fmt: skip
    payload = seal_batch(E0, ALICE, name="n" * 64, records=[rekey], sent_ms=0,
                         random=counting_random())  # fmt: skip
    assert open_batch(payload, E0).records == (rekey,)


def test_rekey_must_name_the_next_epoch() -> None:
    rekey = build_rekey(NEW_SECRET, [BOB_X25519], tag=E0.tag, new_epoch=2,
                        rekeyer_key=ALICE.public_key, random=counting_random())  # fmt: skip
    with pytest.raises(ProtocolError, match="epoch after"):
        seal_batch(E0, ALICE, name="alice", records=[rekey], sent_ms=0, random=counting_random())


def test_rekey_boxes_must_be_sorted_and_unique() -> None:
    rekey = pinned_rekey()
    for boxes in (rekey.boxes[::-1], rekey.boxes[:1] * 2):
        with pytest.raises(ProtocolError, match="sorted"):
            encode_record(Rekey(1, boxes))


def test_rekey_travels_with_other_records() -> None:
    records: list[Record] = [
        MemberKey(ALICE_X25519),
        pinned_rekey(),
        Text(3, 1, bytes(16), 0, "rekeyed"),
    ]
    payload = seal_batch(E0, ALICE, name="alice", records=records, sent_ms=0,
                         random=counting_random())  # fmt: skip
    assert open_batch(payload, E0).records == tuple(records)


def doc_without_white_space() -> str:
    """docs/protocol.md with all white space removed, so wrapped hex reads as one string."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
    return re.sub(r"\s+", "", doc.read_text(encoding="utf-8"))


def test_the_doc_shows_the_pinned_vectors() -> None:
    doc = doc_without_white_space()
    pinned = [REKEY_RECORD_HEX, REKEY_ID, REKEY_PAYLOAD_SHA256, BOB_BOX_SHARED, BOB_BOX_KEY]
    pinned += [BOB_BOX_NONCE, BOB_BOX_SEALED, BOB_X25519_PRIVATE, ALICE_X25519_PRIVATE]
    for value in pinned:
        assert value in doc, value[:40]


@settings(max_examples=200, deadline=None, database=None)
@given(
    ephemeral=st.binary(max_size=40),
    sealed=st.binary(max_size=60),
    new_epoch=st.integers(0, 2**53 - 1),
)
def test_any_box_opens_or_raises_protocol_error(
    ephemeral: bytes, sealed: bytes, new_epoch: int
) -> None:
    box = KeyBox(BOB_X25519, ephemeral, sealed)
    with pytest.raises(ProtocolError):
        open_box(box, BOB_KEYS, tag=E0.tag, new_epoch=new_epoch, rekeyer_key=ALICE.public_key)
