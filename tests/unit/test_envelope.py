"""Sealing and opening payloads: known answers, tampering, limits, fuzzing.

The known answers are reproduced in docs/protocol.md ("Test vectors"). The
invariant under test, after h11: any bytes either open to a verified Message or
raise ProtocolError.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forge import build_inner, encrypt_body
from mqchat.errors import PayloadTooLarge, ProtocolError
from mqchat.protocol.envelope import open_payload, seal
from mqchat.protocol.inner import Message
from mqchat.protocol.kdf import RoomKeys, cipher_key, derive_room_keys
from mqchat.protocol.limits import MAX_PAYLOAD_BYTES, MAX_SEQ, MAX_TEXT_BYTES, MAX_TIMESTAMP_MS
from mqchat.protocol.signing import SigningIdentity

CIPHERS = ("fernet", "aes-256-gcm", "chacha20-poly1305")
CIPHER_IDS = {"fernet": 1, "aes-256-gcm": 2, "chacha20-poly1305": 3}

PASSPHRASE = "correct horse battery staple"
ROOM = "lobby"
OTHER_ROOM = "kitchen"
SEED = bytes(range(32))
MALLORY_SEED = bytes(range(100, 132))
NAME = "alice"
TEXT = "hello, room"
SEQ = 7
TIMESTAMP_MS = 1_800_000_000_123

MESSAGE_KEY_HEX = "4e19ed25ad7da875008ec3750c65c2097b477ae0fef4fb9bda199efd44f8275a"
ROOM_TAG = "eqh3lzdzealsvb3uvhauubrofa"
PUBLIC_KEY_HEX = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
INNER_HEX = (
    "01657168336c7a647a65616c7376623375766861757562726f666103a107bff3ce10be1d70dd18e74bc0"
    "9967e4d6309ba50d5f1ddc8664125531b8000102030405060708090a0b0c0d0e0f000000000000000700"
    "0001a3185c507b05616c6963650000000b68656c6c6f2c20726f6f6d004e" + "00" * 78 + "b106bfdfeb"
    "3637253c1f127fc88ac77715cf036f302e96518b4f9d49b7b5b6c9d3ff120195df3ce919b0fb67485c10"
    "c4a971dacaafd1f4b5cca4644307b74903"
)
FERNET_PAYLOAD = b"\x01\x01" + (
    b"gAAAAABrSdIAEBESExQVFhcYGRobHB0eHxWaKQzo04EHArAibO3OTpeiyYPUpRA2tjzYW599epbtSPWRJDjThI"
    b"GlVHTI6v1ZzdrRc-bj3MHLzhg2itPI53oz1VYy_wjWnS09EFdRwrWhy_9YQwUdleylPOrRq7-1QAMX2XsJOFGC"
    b"KTBArjVCr5KprXVX1MBmaCTvI7L6ZAi3JUcFel7EkJS-WOB8Rd6Z9J8Rjm5Z5zoGVfthsUqsmZNdDVsvGz1vFm"
    b"krRs1UApp2N-JzQcrOrlw0WFOLO5wtFl4WzvDyyYjeYERntXXrekdfnGEF1aN99YwfXrReOOHeHUByRMElYh-z"
    b"pkvrTzsPbOqfpASRtaIJ7CYre8OFVsZJus3zMF7ndqkT60phI13OgPNddnVNKpBlbppIwTe6lTdHgyyVUqNDLe"
    b"KaXiwWzFQ="
)
AES_GCM_PAYLOAD_HEX = (
    "0102101112131415161718191a1b51a7e6b0d827ea418146baba5ad42e6ccb0922230328aacfa17a898194"
    "39122ea9ae389ac9a80da10824dfc142d28b701c2eaf79faf65d0c8768882aca74d52cd62d4b808fdeae04"
    "8029b0990e9ee4129679e136fe5103f5b569722f8f0f35fe7a1312ae84b5fa4d121091dd86e9823264995c"
    "f8edafb300788b45bb4388b9ac002c1b9bbd267d5f1f167c2b77a240a6ea509089b82e1f7e56514beca0fc"
    "87a55e1824f37c3e763700dffaedd6baf60407f6b1c647997fba447781d80ac79e6329ab71b1eb0a246e1a"
    "d4b6b3f6e22eaf5430ce5a2e47c7790c733e3be518284f399d9a8371d6097ca38c33a075450d4963ef7556"
    "c7e42c8c0665e974c88292edb3dafc79fd065f3378f1346f656bf44d"
)
CHACHA_PAYLOAD_HEX = (
    "0103101112131415161718191a1b9c30a3fec35dec8feb59d0ab1fff2fab80fba036b37cf0657bef4e7dd7"
    "c4b720cdd25869575f5dc374a538657f9c39a416e717e5dd8b5c878be0549eeafdaa4398bfd4b2e033b47c"
    "668ea71d22199016031a657f7c556cc9670ed440bbcfa8ef1191981c58a702a4efd068a29dfed8596a798a"
    "4cf770a458fd2f2a4a2b682d1e6dfe15e6a291bacd15be8a0115a37fa5ea61073bb739506a43850f636484"
    "925a52b69902ec86af85f2d90acc02fa2bbe7537881ad7c4ccb97dc99887d8d4d706e34998ecefb314a061"
    "3a564b8ed8a176caa692cda1aa20b013e933fbd22fd66183441ed7398d2a73c0bb2e4ac4d133642e9485e9"
    "060e651c5b250fc83d601f1e473c9dcc0b4c912c11f6ad51613b9169"
)
PINNED_PAYLOADS = {
    "fernet": FERNET_PAYLOAD,
    "aes-256-gcm": bytes.fromhex(AES_GCM_PAYLOAD_HEX),
    "chacha20-poly1305": bytes.fromhex(CHACHA_PAYLOAD_HEX),
}


def counting_random() -> Callable[[int], bytes]:
    """Deterministic randomness: the bytes 00 01 02 ... (mod 256), in order."""
    position = 0

    def take(n: int) -> bytes:
        nonlocal position
        out = bytes((position + i) & 0xFF for i in range(n))
        position += n
        return out

    return take


@pytest.fixture(scope="module")
def keys() -> RoomKeys:
    return derive_room_keys(PASSPHRASE, ROOM)


@pytest.fixture(scope="module")
def other_room_keys() -> RoomKeys:
    """Same passphrase, another room."""
    return derive_room_keys(PASSPHRASE, OTHER_ROOM)


@pytest.fixture(scope="module")
def alice() -> SigningIdentity:
    return SigningIdentity.from_private_bytes(SEED)


@pytest.fixture(scope="module")
def mallory() -> SigningIdentity:
    return SigningIdentity.from_private_bytes(MALLORY_SEED)


def sealed(
    keys: RoomKeys,
    identity: SigningIdentity,
    cipher: str,
    text: str = TEXT,
    name: str = NAME,
) -> bytes:
    _, payload = seal(
        keys,
        identity,
        name=name,
        text=text,
        seq=SEQ,
        timestamp_ms=TIMESTAMP_MS,
        random=counting_random(),
        cipher=cipher,
    )
    return payload


def decrypt_body(keys: RoomKeys, payload: bytes) -> bytes:
    """Decrypt a payload as docs/protocol.md says, without open_payload()."""
    cipher = {v: k for k, v in CIPHER_IDS.items()}[payload[1]]
    key = cipher_key(keys.message_key, cipher)
    if cipher == "fernet":
        return Fernet(base64.urlsafe_b64encode(key)).decrypt(payload[2:])
    aead = AESGCM(key) if cipher == "aes-256-gcm" else ChaCha20Poly1305(key)
    return aead.decrypt(payload[2:14], payload[14:], b"mqchat/v1" + payload[:2] + keys.tag.encode())


# -- known answers -------------------------------------------------------------


def test_fixture_keys_are_the_pinned_ones(keys: RoomKeys, alice: SigningIdentity) -> None:
    assert keys.message_key.hex() == MESSAGE_KEY_HEX
    assert keys.tag == ROOM_TAG
    assert alice.public_key.hex() == PUBLIC_KEY_HEX


@pytest.mark.parametrize("cipher", CIPHERS)
def test_sealed_payload_known_answer(keys: RoomKeys, alice: SigningIdentity, cipher: str) -> None:
    message_id, payload = seal(
        keys,
        alice,
        name=NAME,
        text=TEXT,
        seq=SEQ,
        timestamp_ms=TIMESTAMP_MS,
        random=counting_random(),
        cipher=cipher,
    )
    assert message_id == bytes(range(16))
    assert payload == PINNED_PAYLOADS[cipher]


@pytest.mark.parametrize("cipher", CIPHERS)
def test_pinned_payload_decrypts_to_pinned_inner_message(keys: RoomKeys, cipher: str) -> None:
    assert decrypt_body(keys, PINNED_PAYLOADS[cipher]).hex() == INNER_HEX


def test_inner_message_layout_is_as_documented(keys: RoomKeys) -> None:
    inner = bytes.fromhex(INNER_HEX)
    assert len(inner) == 256
    assert inner[0] == 1
    assert inner[1:27] == ROOM_TAG.encode()
    assert inner[27:59].hex() == PUBLIC_KEY_HEX
    assert inner[59:75] == bytes(range(16))
    assert struct.unpack(">QQ", inner[75:91]) == (SEQ, TIMESTAMP_MS)
    assert inner[91] == len(NAME)
    assert inner[92:97] == NAME.encode()
    assert struct.unpack(">I", inner[97:101]) == (len(TEXT),)
    assert inner[101:112] == TEXT.encode()
    (pad,) = struct.unpack(">H", inner[112:114])
    assert inner[114 : 114 + pad] == bytes(pad)
    assert 114 + pad + 64 == 256
    signed, signature = inner[:-64], inner[-64:]
    alice = SigningIdentity.from_private_bytes(SEED)
    assert alice.sign(b"mqchat/v1 signature\x00" + signed) == signature


def test_fernet_body_is_a_standard_fernet_token(keys: RoomKeys) -> None:
    key = base64.urlsafe_b64encode(cipher_key(keys.message_key, "fernet"))
    fernet = Fernet(key)
    assert fernet.extract_timestamp(FERNET_PAYLOAD[2:]) == TIMESTAMP_MS // 1000
    assert fernet.decrypt(FERNET_PAYLOAD[2:]).hex() == INNER_HEX


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize(
    "text", ["", TEXT, "h\u00e9llo \U0001f600 w\u00f6rld", "line one\nline two", "x" * 5000]
)
def test_round_trip(keys: RoomKeys, alice: SigningIdentity, cipher: str, text: str) -> None:
    message_id, payload = seal(
        keys,
        alice,
        name="\u00e5sa",
        text=text,
        seq=2**63 - 1,  # the largest a sender may use (docs/protocol.md §4)
        timestamp_ms=TIMESTAMP_MS,
        random=counting_random(),
        cipher=cipher,
    )
    opened_cipher, message = open_payload(payload, keys)
    assert opened_cipher == cipher
    assert message.text == text
    assert message.sender_name == "\u00e5sa"
    assert message.sender_key == alice.public_key
    assert message.fingerprint == alice.fingerprint
    assert message.message_id == message_id
    assert message.seq == 2**63 - 1
    assert message.timestamp_ms == TIMESTAMP_MS
    assert message.room_tag == keys.tag


@pytest.mark.parametrize("cipher", CIPHERS)
def test_longest_text_fits(keys: RoomKeys, alice: SigningIdentity, cipher: str) -> None:
    text = "\u00e9" * (MAX_TEXT_BYTES // 2)
    payload = sealed(keys, alice, cipher, text=text)
    assert len(payload) <= MAX_PAYLOAD_BYTES
    assert open_payload(payload, keys)[1].text == text


def test_text_over_the_limit_is_not_sealed(keys: RoomKeys, alice: SigningIdentity) -> None:
    with pytest.raises(ProtocolError):
        sealed(keys, alice, "aes-256-gcm", text="x" * (MAX_TEXT_BYTES + 1))


def test_cipher_is_read_from_the_header(keys: RoomKeys, alice: SigningIdentity) -> None:
    """One RoomKeys opens every cipher: a room's members may each pick their own."""
    opened = {open_payload(sealed(keys, alice, c), keys)[0] for c in CIPHERS}
    assert opened == set(CIPHERS)


def test_fresh_randomness_gives_fresh_payloads(keys: RoomKeys, alice: SigningIdentity) -> None:
    random = counting_random()
    first = seal(keys, alice, name=NAME, text=TEXT, seq=1, timestamp_ms=0, random=random)
    second = seal(keys, alice, name=NAME, text=TEXT, seq=1, timestamp_ms=0, random=random)
    assert first[0] != second[0]
    assert first[1] != second[1]


# -- padding -------------------------------------------------------------------


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305"])
def test_padding_hides_length_within_a_256_byte_bucket(
    keys: RoomKeys, alice: SigningIdentity, cipher: str
) -> None:
    # name 5 bytes: 91 + 1 + 5 + 4 + len(text) + 2 + 64 = 167 + len(text)
    sizes = {n: len(sealed(keys, alice, cipher, text="a" * n)) for n in range(0, 700, 7)}
    for n, size in sizes.items():
        bucket = -(-(167 + n) // 256) * 256
        assert size == 2 + 12 + bucket + 16
    assert len(set(sizes.values())) == 4


@pytest.mark.parametrize("cipher", CIPHERS)
def test_inner_message_is_a_whole_number_of_buckets(
    keys: RoomKeys, alice: SigningIdentity, cipher: str
) -> None:
    for n in (0, 89, 90, 345, 346, 1000):
        plain = decrypt_body(keys, sealed(keys, alice, cipher, text="b" * n))
        assert len(plain) % 256 == 0
        assert len(plain) - 256 < 167 + n <= len(plain)


# -- tampering -----------------------------------------------------------------


def test_every_flipped_bit_is_detected_aes_gcm(keys: RoomKeys) -> None:
    payload = PINNED_PAYLOADS["aes-256-gcm"]
    for position in range(len(payload)):
        for bit in range(8):
            tampered = bytearray(payload)
            tampered[position] ^= 1 << bit
            with pytest.raises(ProtocolError):
                open_payload(bytes(tampered), keys)


@pytest.mark.parametrize("cipher", ["fernet", "chacha20-poly1305"])
def test_a_flipped_bit_at_every_position_is_detected(keys: RoomKeys, cipher: str) -> None:
    payload = PINNED_PAYLOADS[cipher]
    for position in range(len(payload)):
        for bit in (0, 1, 5, 7) if position % 3 == 0 else (position % 8,):
            tampered = bytearray(payload)
            tampered[position] ^= 1 << bit
            with pytest.raises(ProtocolError):
                open_payload(bytes(tampered), keys)


def test_fernet_token_must_be_canonical_base64(keys: RoomKeys) -> None:
    """Stray bytes or unused low bits would give one token many spellings."""
    token = FERNET_PAYLOAD[2:]
    # The last data character before "=" carries 2 unused bits: 'Q' and 'R'
    # decode to the same bytes under a lenient decoder.
    assert token.endswith(b"Q=")
    variants = [
        FERNET_PAYLOAD[:-2] + b"R=",
        FERNET_PAYLOAD[:100] + b"\n" + FERNET_PAYLOAD[100:],
        FERNET_PAYLOAD[:-1],
        FERNET_PAYLOAD + b"=",
        b"\x01\x01" + token.replace(b"-", b"+").replace(b"_", b"/"),
    ]
    for variant in variants:
        with pytest.raises(ProtocolError):
            open_payload(variant, keys)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_truncated_payload_is_refused(keys: RoomKeys, cipher: str) -> None:
    payload = PINNED_PAYLOADS[cipher]
    for length in range(len(payload)):
        with pytest.raises(ProtocolError):
            open_payload(payload[:length], keys)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_trailing_bytes_are_refused(keys: RoomKeys, cipher: str) -> None:
    with pytest.raises(ProtocolError):
        open_payload(PINNED_PAYLOADS[cipher] + b"\x00", keys)


@pytest.mark.parametrize(
    "header", [b"\x00\x01", b"\x02\x01", b"\x01\x00", b"\x01\x04", b"\xff\xff"]
)
def test_unknown_version_or_cipher_is_refused(keys: RoomKeys, header: bytes) -> None:
    with pytest.raises(ProtocolError):
        open_payload(header + FERNET_PAYLOAD[2:], keys)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_wrong_passphrase_is_refused(keys: RoomKeys, alice: SigningIdentity, cipher: str) -> None:
    wrong = RoomKeys(message_key=bytes(32), topic_key=keys.topic_key)
    with pytest.raises(ProtocolError):
        open_payload(sealed(keys, alice, cipher), wrong)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_payload_from_another_room_with_the_same_passphrase_is_refused(
    keys: RoomKeys, other_room_keys: RoomKeys, alice: SigningIdentity, cipher: str
) -> None:
    with pytest.raises(ProtocolError):
        open_payload(sealed(keys, alice, cipher), other_room_keys)
    with pytest.raises(ProtocolError):
        open_payload(sealed(other_room_keys, alice, cipher), keys)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_room_tag_is_bound_even_under_the_same_message_key(
    keys: RoomKeys, alice: SigningIdentity, cipher: str
) -> None:
    """Fernet has no associated data, so the tag inside the plaintext must be checked."""
    elsewhere = RoomKeys(message_key=keys.message_key, topic_key=bytes(32))
    with pytest.raises(ProtocolError):
        open_payload(sealed(keys, alice, cipher), elsewhere)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_member_cannot_sign_as_another_sender(
    keys: RoomKeys, alice: SigningIdentity, mallory: SigningIdentity, cipher: str
) -> None:
    """Mallory knows the room key, signs with her own key, and claims Alice's key."""
    plain = decrypt_body(keys, sealed(keys, mallory, cipher, name="alice"))
    assert open_payload(encrypt_body(keys, cipher, plain), keys)[1].sender_key == mallory.public_key

    forged = plain[:27] + alice.public_key + plain[59:]
    with pytest.raises(ProtocolError):
        open_payload(encrypt_body(keys, cipher, forged), keys)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_member_cannot_alter_a_signed_message(
    keys: RoomKeys, alice: SigningIdentity, cipher: str
) -> None:
    plain = bytearray(decrypt_body(keys, sealed(keys, alice, cipher)))
    for position in (0, 30, 60, 80, 95, 105, 200, 255):
        altered = bytearray(plain)
        altered[position] ^= 0x20
        with pytest.raises(ProtocolError):
            open_payload(encrypt_body(keys, cipher, bytes(altered)), keys)


def test_documented_inner_layout_reproduces_the_pinned_message(alice: SigningIdentity) -> None:
    built = build_inner(alice, tag=ROOM_TAG, name=NAME.encode(), text=TEXT.encode())
    assert built.hex() == INNER_HEX


@pytest.mark.parametrize("cipher", CIPHERS)
def test_independently_built_message_opens(
    keys: RoomKeys, alice: SigningIdentity, cipher: str
) -> None:
    plain = build_inner(alice, tag=keys.tag, name="b\u00f6b".encode(), text=b"x" * 300, seq=9)
    message = open_payload(encrypt_body(keys, cipher, plain), keys)[1]
    assert (message.sender_name, message.text, message.seq) == ("b\u00f6b", "x" * 300, 9)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (b"", b"hi"),
        (b"n" * 65, b"hi"),
        (b"\xff", b"hi"),
        (b"alice", b"\xc3"),
        (b"alice", b"x" * (MAX_TEXT_BYTES + 1)),
    ],
)
def test_signed_message_with_bad_fields_is_refused(
    keys: RoomKeys, alice: SigningIdentity, name: bytes, text: bytes
) -> None:
    plain = build_inner(alice, tag=keys.tag, name=name, text=text)
    with pytest.raises(ProtocolError):
        open_payload(encrypt_body(keys, "aes-256-gcm", plain), keys)


def test_nonzero_padding_is_refused(keys: RoomKeys, alice: SigningIdentity) -> None:
    plain = bytearray(build_inner(alice, tag=keys.tag, name=b"alice", text=b"hi"))
    signed = bytes(plain[:-64])
    signed = signed[:-1] + b"\x01"
    plain = bytearray(signed + alice.sign(b"mqchat/v1 signature\x00" + signed))
    with pytest.raises(ProtocolError):
        open_payload(encrypt_body(keys, "aes-256-gcm", bytes(plain)), keys)


def test_payload_over_64_kib_is_refused_before_decryption(keys: RoomKeys) -> None:
    # A valid payload with junk appended: were it decrypted, it would still fail,
    # but with a plain ProtocolError. The size check comes first.
    oversized = PINNED_PAYLOADS["aes-256-gcm"] + bytes(MAX_PAYLOAD_BYTES)
    with pytest.raises(PayloadTooLarge):
        open_payload(oversized, keys)
    assert issubclass(PayloadTooLarge, ProtocolError)

    at_limit = PINNED_PAYLOADS["aes-256-gcm"].ljust(MAX_PAYLOAD_BYTES, b"\x00")
    with pytest.raises(ProtocolError) as excinfo:
        open_payload(at_limit, keys)
    assert not isinstance(excinfo.value, PayloadTooLarge)


# -- secrets -------------------------------------------------------------------


def test_identity_never_shows_its_private_key(alice: SigningIdentity) -> None:
    for text in (repr(alice), str(alice), f"{alice}"):
        assert SEED.hex() not in text
        assert repr(SEED) not in text
        assert alice.fingerprint in text


def test_message_repr_hides_the_text(keys: RoomKeys) -> None:
    message = open_payload(PINNED_PAYLOADS["fernet"], keys)[1]
    assert isinstance(message, Message)
    for text in (repr(message), str(message)):
        assert TEXT not in text
        assert NAME in text


# -- fuzzing -------------------------------------------------------------------

FUZZ = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def assert_opens_or_refuses(payload: bytes, keys: RoomKeys) -> Message | None:
    try:
        return open_payload(payload, keys)[1]
    except ProtocolError:
        return None


@FUZZ
@given(
    payload=st.one_of(
        st.binary(max_size=2048),
        st.builds(
            bytes.__add__,
            st.sampled_from([b"\x01\x01", b"\x01\x02", b"\x01\x03", b"\x01\x01gAAAAA"]),
            st.binary(max_size=2048),
        ),
    )
)
def test_arbitrary_bytes_open_or_raise_protocol_error(keys: RoomKeys, payload: bytes) -> None:
    assert assert_opens_or_refuses(payload, keys) is None


@FUZZ
@given(
    cipher=st.sampled_from(CIPHERS),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete"]),
            st.integers(min_value=0, max_value=500),
            st.integers(min_value=0, max_value=255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_payloads_open_only_if_unchanged(
    keys: RoomKeys, cipher: str, edits: list[tuple[str, int, int]]
) -> None:
    original = PINNED_PAYLOADS[cipher]
    mutated = bytearray(original)
    for kind, where, value in edits:
        position = where % (len(mutated) + 1)
        if kind == "insert":
            mutated.insert(position, value)
        elif position < len(mutated):
            if kind == "set":
                mutated[position] = value
            else:
                del mutated[position]
    message = assert_opens_or_refuses(bytes(mutated), keys)
    if message is not None:
        assert bytes(mutated) == original
        assert message.text == TEXT


# -- every field of the inner message, as a hostile member would set it ---------


@settings(max_examples=200, deadline=None, database=None)
@given(
    seq=st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]),
    timestamp_ms=st.integers(0, 2**64 - 1) | st.sampled_from([0, MAX_TIMESTAMP_MS + 1]),
    name=st.binary(max_size=70),
    text=st.binary(max_size=40),
    message_id=st.binary(min_size=16, max_size=16),
)
def test_any_signed_fields_open_in_range_or_raise(
    keys: RoomKeys,
    alice: SigningIdentity,
    seq: int,
    timestamp_ms: int,
    name: bytes,
    text: bytes,
    message_id: bytes,
) -> None:
    plain = build_inner(
        alice,
        tag=keys.tag,
        name=name,
        text=text,
        message_id=message_id,
        seq=seq,
        timestamp_ms=timestamp_ms,
    )
    try:
        message = open_payload(encrypt_body(keys, "aes-256-gcm", plain), keys)[1]
    except ProtocolError:
        return
    assert 1 <= message.seq <= MAX_SEQ
    assert 0 <= message.timestamp_ms <= MAX_TIMESTAMP_MS
    assert 1 <= len(message.sender_name.encode()) <= 64


@pytest.mark.parametrize(
    ("seq", "timestamp_ms"),
    [(0, 1), (2**63, 1), (2**64 - 1, 1), (1, MAX_TIMESTAMP_MS + 1), (1, 2**63)],
)
def test_numbers_out_of_range_are_refused_by_sender_and_receiver(
    keys: RoomKeys, alice: SigningIdentity, seq: int, timestamp_ms: int
) -> None:
    plain = build_inner(
        alice, tag=keys.tag, name=b"alice", text=b"hi", seq=seq, timestamp_ms=timestamp_ms
    )
    with pytest.raises(ProtocolError):
        open_payload(encrypt_body(keys, "aes-256-gcm", plain), keys)
    with pytest.raises(ProtocolError):
        seal(
            keys,
            alice,
            name="alice",
            text="hi",
            seq=seq,
            timestamp_ms=timestamp_ms,
            random=counting_random(),
        )
