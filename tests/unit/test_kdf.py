"""Room keys from a passphrase: known answers, the documented recipe, and refusals.

The known answers below are reproduced in docs/protocol.md ("Test vectors"); a
change to any of them is a change of wire format.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mqchat.errors import InvalidRoomName, WeakKdfParameters, WeakPassphrase
from mqchat.protocol.kdf import (
    DEFAULT_KDF,
    KdfParams,
    RoomKeys,
    check_passphrase,
    cipher_key,
    derive_room_keys,
    room_salt,
    room_tag,
    topic_for,
)

PASSPHRASE = "correct horse battery staple"
ROOM = "lobby"

SALT_HEX = "d1e34038699e3d900d1386ceea515f03"
MASTER_HEX = "c5072a46fc41fbe55c397ae11fb8c0916292304bf633167184b9faa454e4bd3c"
MESSAGE_KEY_HEX = "4e19ed25ad7da875008ec3750c65c2097b477ae0fef4fb9bda199efd44f8275a"
TOPIC_KEY_HEX = "7c88b429a98ff6a56c45dc32008bfdcfc57c4c97a4d549dd1aeb0ba7c649f188"
ROOM_TAG = "eqh3lzdzealsvb3uvhauubrofa"
CIPHER_KEYS_HEX = {
    "fernet": "4bc79fe0681ca34af18849a77b7c9d2fc98dc8ce04a09fc70a96718f6c8bab78",
    "aes-256-gcm": "cac3da594baa1299bb0b63fb0e59d00c824772dfef20fe6d08befd406de492f0",
    "chacha20-poly1305": "5e7f886eea080d539d3dbb0bddc8f65e4252e54c0133fcb33a9ac39762e23240",
}

# Cheap enough for tests that only need *some* keys; never acceptable without weak=True.
TINY = KdfParams(memory_kib=64, iterations=1, lanes=1)


@pytest.fixture(scope="module")
def lobby_keys() -> RoomKeys:
    """The one real (default-cost) derivation of this module."""
    return derive_room_keys(PASSPHRASE, ROOM)


def test_default_parameters_are_the_documented_ones() -> None:
    assert DEFAULT_KDF.as_dict() == {"memory_kib": 65536, "iterations": 3, "lanes": 4}


def test_room_salt_known_answer() -> None:
    assert room_salt(ROOM).hex() == SALT_HEX
    assert room_salt(ROOM) == hashlib.sha256(b"mqchat/v1/salt\x00lobby").digest()[:16]


def test_room_keys_known_answer(lobby_keys: RoomKeys) -> None:
    assert lobby_keys.message_key.hex() == MESSAGE_KEY_HEX
    assert lobby_keys.topic_key.hex() == TOPIC_KEY_HEX
    assert lobby_keys.tag == ROOM_TAG


def test_documented_recipe_matches_the_code(lobby_keys: RoomKeys) -> None:
    """Argon2id then HKDF-SHA256, computed here from docs/protocol.md alone."""
    master = Argon2id(
        salt=hashlib.sha256(b"mqchat/v1/salt\x00" + ROOM.encode()).digest()[:16],
        length=32,
        iterations=3,
        lanes=4,
        memory_cost=65536,
    ).derive(PASSPHRASE.encode())
    assert master.hex() == MASTER_HEX

    def hkdf(key: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)

    message_key = hkdf(master, b"mqchat/v1 message key")
    topic_key = hkdf(master, b"mqchat/v1 topic key")
    assert lobby_keys.message_key == message_key
    assert lobby_keys.topic_key == topic_key

    mac = hmac.new(topic_key, b"topic", hashlib.sha256).digest()[:16]
    assert lobby_keys.tag == base64.b32encode(mac).decode().rstrip("=").lower()

    for cipher, expected in CIPHER_KEYS_HEX.items():
        assert hkdf(message_key, b"mqchat/v1 cipher " + cipher.encode()).hex() == expected


def test_cipher_keys_known_answer() -> None:
    message_key = bytes.fromhex(MESSAGE_KEY_HEX)
    for cipher, expected in CIPHER_KEYS_HEX.items():
        assert cipher_key(message_key, cipher).hex() == expected
    assert len(set(CIPHER_KEYS_HEX.values())) == 3


def test_room_tag_is_26_lowercase_base32_characters() -> None:
    for seed in range(20):
        tag = room_tag(bytes([seed]) * 32)
        assert re.fullmatch(r"[a-z2-7]{26}", tag)


def test_topic_hides_the_room_name() -> None:
    assert topic_for("mqchat/v1", ROOM_TAG) == f"mqchat/v1/{ROOM_TAG}"
    assert topic_for("mqchat/v1/", ROOM_TAG) == f"mqchat/v1/{ROOM_TAG}"
    assert ROOM not in topic_for("mqchat/v1", ROOM_TAG)


def test_room_name_is_nfc_normalised_before_salting() -> None:
    assert room_salt("cafe\u0301") == room_salt("caf\u00e9")
    assert room_salt("lobby") != room_salt("Lobby")


def test_invalid_room_name_is_refused() -> None:
    with pytest.raises(InvalidRoomName):
        room_salt("a/b")
    with pytest.raises(InvalidRoomName):
        derive_room_keys(PASSPHRASE, "", TINY, weak=True)


def test_passphrase_is_nfc_normalised() -> None:
    composed = derive_room_keys("pass caf\u00e9 phrase", ROOM, TINY, weak=True)
    decomposed = derive_room_keys("pass cafe\u0301 phrase", ROOM, TINY, weak=True)
    assert composed == decomposed


def test_same_passphrase_in_two_rooms_gives_unrelated_keys() -> None:
    lobby = derive_room_keys(PASSPHRASE, "lobby", TINY, weak=True)
    kitchen = derive_room_keys(PASSPHRASE, "kitchen", TINY, weak=True)
    assert lobby.message_key != kitchen.message_key
    assert lobby.topic_key != kitchen.topic_key
    assert lobby.tag != kitchen.tag


def test_parameters_change_the_keys() -> None:
    one = derive_room_keys(PASSPHRASE, ROOM, TINY, weak=True)
    two = derive_room_keys(PASSPHRASE, ROOM, KdfParams(64, 2, 1), weak=True)
    assert one.message_key != two.message_key


@pytest.mark.parametrize("passphrase", ["", "short", "elevenchars", "e\u0301" * 6])
def test_short_passphrase_is_refused(passphrase: str) -> None:
    with pytest.raises(WeakPassphrase):
        derive_room_keys(passphrase, ROOM)


def test_passphrase_of_twelve_characters_is_enough() -> None:
    check_passphrase("twelve chars", weak=False)
    check_passphrase("\u00e9" * 12, weak=False)


def test_short_passphrase_is_accepted_with_weak() -> None:
    keys = derive_room_keys("hunter2", ROOM, TINY, weak=True)
    assert len(keys.message_key) == 32
    assert len(keys.topic_key) == 32


def test_empty_passphrase_is_refused_even_with_weak() -> None:
    with pytest.raises(WeakPassphrase):
        derive_room_keys("", ROOM, TINY, weak=True)


@pytest.mark.parametrize(
    "params",
    [
        KdfParams(memory_kib=32 * 1024, iterations=3, lanes=4),
        KdfParams(memory_kib=64 * 1024, iterations=2, lanes=4),
        TINY,
    ],
)
def test_weaker_parameters_are_refused(params: KdfParams) -> None:
    with pytest.raises(WeakKdfParameters):
        derive_room_keys(PASSPHRASE, ROOM, params)


@pytest.mark.parametrize("params", [KdfParams(64, 1, 0), KdfParams(64, 0, 1), KdfParams(16, 1, 4)])
def test_invalid_parameters_are_refused_even_with_weak(params: KdfParams) -> None:
    with pytest.raises(WeakKdfParameters):
        derive_room_keys(PASSPHRASE, ROOM, params, weak=True)


def test_parameters_survive_storage() -> None:
    params = KdfParams(memory_kib=128 * 1024, iterations=4, lanes=2)
    assert KdfParams.from_dict(params.as_dict()) == params
    assert not params.is_weaker_than(DEFAULT_KDF)


def test_room_keys_never_show_their_secrets(lobby_keys: RoomKeys) -> None:
    for text in (repr(lobby_keys), str(lobby_keys), f"{lobby_keys}"):
        assert MESSAGE_KEY_HEX not in text
        assert TOPIC_KEY_HEX not in text
        assert repr(lobby_keys.message_key) not in text
        assert repr(lobby_keys.topic_key) not in text
        assert ROOM_TAG in text
