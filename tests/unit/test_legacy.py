"""Legacy rooms speak the original program's format, byte for byte.

The original program took a passphrase, padded it with "0" or cut it to 32
characters, used the base64url of that as a Fernet key, and sent the token of
"name: text". Tokens here are made with plain ``cryptography.fernet`` and that
rule, not with mqchat's code.
"""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet

from mqchat.errors import PayloadTooLarge, ProtocolError, WeakPassphrase
from mqchat.protocol.legacy import legacy_key, legacy_topic, open_legacy, seal_legacy
from mqchat.protocol.limits import MAX_PAYLOAD_BYTES

PASSPHRASE = "correct horse battery staple"
LEGACY_KEY = b"Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZTAwMDA="
LEGACY_TOKEN = (
    b"gAAAAABrSdIAAAECAwQFBgcICQoLDA0OD0q6JTTaBsOPTNzSR_1V0tqcYhT2kV58p7s4VP8D2yChRgJaSRhYRDVwuzj4"
    b"uY4nsJeN2NRS76uJFBiUVXQtpU8="
)
TIMESTAMP_S = 1_800_000_000


def original_key(passphrase: str) -> bytes:
    """The original program's rule, written out independently."""
    if len(passphrase) < 32:
        passphrase += "0" * (32 - len(passphrase))
    return base64.urlsafe_b64encode(passphrase[:32].encode())


def test_key_rule_known_answer() -> None:
    assert original_key(PASSPHRASE) == LEGACY_KEY
    assert base64.urlsafe_b64decode(LEGACY_KEY) == b"correct horse battery staple0000"


@pytest.mark.parametrize(
    "passphrase",
    ["hunter2", "x", PASSPHRASE, "a" * 32, "a much longer passphrase than thirty-two characters"],
)
def test_token_from_the_original_program_opens(passphrase: str) -> None:
    token = Fernet(original_key(passphrase)).encrypt(b"bob: hi there")
    message = open_legacy(token, legacy_key(passphrase))
    assert message.sender_name == "bob"
    assert message.text == "hi there"


def test_passphrases_beyond_32_characters_are_cut() -> None:
    token = Fernet(original_key("b" * 32)).encrypt(b"bob: same key")
    assert open_legacy(token, legacy_key("b" * 32 + "anything after")).text == "same key"


@pytest.mark.parametrize("passphrase", ["hunter2", PASSPHRASE, "z" * 40])
def test_sealed_token_opens_with_the_original_program(passphrase: str) -> None:
    token = seal_legacy(
        legacy_key(passphrase), "carol", "hello: world", timestamp_s=TIMESTAMP_S, iv=bytes(16)
    )
    fernet = Fernet(original_key(passphrase))
    assert fernet.decrypt(token) == b"carol: hello: world"
    assert fernet.extract_timestamp(token) == TIMESTAMP_S


def test_sealed_token_known_answer() -> None:
    token = seal_legacy(
        legacy_key(PASSPHRASE), "alice", "hello, room", timestamp_s=TIMESTAMP_S, iv=bytes(range(16))
    )
    assert token == LEGACY_TOKEN
    message = open_legacy(token, legacy_key(PASSPHRASE))
    assert (message.sender_name, message.text, message.timestamp_s) == (
        "alice",
        "hello, room",
        TIMESTAMP_S,
    )


def test_text_keeps_later_colons() -> None:
    token = Fernet(LEGACY_KEY).encrypt(b"dave: see: this")
    message = open_legacy(token, legacy_key(PASSPHRASE))
    assert (message.sender_name, message.text) == ("dave", "see: this")


@pytest.mark.parametrize("plain", [b"no colon here", b": starts with a colon", b"a\nb: c"])
def test_plaintext_without_a_name_gets_an_unknown_sender(plain: bytes) -> None:
    message = open_legacy(Fernet(LEGACY_KEY).encrypt(plain), legacy_key(PASSPHRASE))
    assert message.sender_name == "?"
    assert message.text == plain.decode()


def test_non_utf8_plaintext_is_decoded_with_replacement() -> None:
    token = Fernet(LEGACY_KEY).encrypt(b"eve: caf\xe9 \xff\xfe")
    message = open_legacy(token, legacy_key(PASSPHRASE))
    assert message.sender_name == "eve"
    assert message.text == "caf\ufffd \ufffd\ufffd"


def test_wrong_key_is_refused() -> None:
    token = Fernet(LEGACY_KEY).encrypt(b"bob: secret")
    with pytest.raises(ProtocolError):
        open_legacy(token, legacy_key("another passphrase entirely"))


@pytest.mark.parametrize("payload", [b"", b"not a token", b"gAAAAA", LEGACY_TOKEN[:-5]])
def test_garbage_is_refused(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        open_legacy(payload, legacy_key(PASSPHRASE))


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        open_legacy(LEGACY_TOKEN + b"A" * MAX_PAYLOAD_BYTES, legacy_key(PASSPHRASE))


@pytest.mark.parametrize("passphrase", ["p\u00e4ssphrase", "\u5bc6\u7801", ""])
def test_non_ascii_or_empty_passphrase_is_refused(passphrase: str) -> None:
    with pytest.raises(WeakPassphrase):
        legacy_key(passphrase)


def test_short_passphrase_is_allowed_as_the_original_did() -> None:
    assert legacy_key("a").fernet_key == original_key("a")


def test_topic_is_the_original_programs() -> None:
    assert legacy_topic("lobby") == "movantchat/lobby"


def test_key_is_never_shown() -> None:
    key = legacy_key(PASSPHRASE)
    for text in (repr(key), str(key), f"{key}"):
        assert LEGACY_KEY.decode() not in text
        assert PASSPHRASE not in text
