"""Invites: one mqchat: line; truncated, damaged or altered ones are refused with a reason.

The known answer is docs/protocol.md §23.5.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqchat.errors import ProtocolError, UsageError
from mqchat.protocol.epochs import epoch_key
from mqchat.protocol.invite import InvalidInvite, Invite, encode_invite, parse_invite
from mqchat.protocol.limits import normalize_room
from mqchat.protocol.records import MAX_INT
from mqchat.protocol.signing import SigningIdentity

ALICE = SigningIdentity.from_private_bytes(bytes(range(32)))
SECRET = bytes(range(0x40, 0x60))
INVITE = Invite("café", 1, SECRET, "aes-256-gcm", "mqchat/v1", ALICE.public_key)
LINE = (
    "mqchat:invite?v=1&room=caf%C3%A9&epoch=1&cipher=aes-256-gcm&prefix=mqchat%2Fv1"
    "&inviter=A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
    "&secret=QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8&check=eTNtNfQmSph6xHbPDirS_Q"
)
CHECK_KEY = "a339ca28b41528019a46f8ea47603255c891436b8909aeebebd40267824b41bb"


def with_check(signed_part: str, secret: bytes = SECRET, epoch: int = 1) -> str:
    """Append a valid check by the doc, for invites the encoder would refuse."""
    mac = hmac.new(epoch_key(secret, epoch, "invite check"), signed_part.encode(), hashlib.sha256)
    check = base64.urlsafe_b64encode(mac.digest()[:16]).decode().rstrip("=")
    return f"{signed_part}&check={check}"


def test_known_answer() -> None:
    assert encode_invite(INVITE) == LINE
    assert parse_invite(LINE) == INVITE
    assert epoch_key(SECRET, 1, "invite check").hex() == CHECK_KEY
    assert with_check(LINE[: LINE.index("&check=")]) == LINE


def test_invite_carries_the_inviters_full_key() -> None:
    invite = parse_invite(LINE)
    assert invite.inviter_key == ALICE.public_key
    assert invite.inviter_fingerprint == ALICE.fingerprint


def test_surrounding_white_space_is_ignored() -> None:
    assert parse_invite(f"  {LINE}\r\n") == INVITE


def test_secret_is_not_in_repr() -> None:
    assert SECRET.hex() not in repr(INVITE)
    assert "QEFCQ0RF" not in repr(INVITE)


def test_invalid_invite_is_a_protocol_error_with_exit_status_1() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_invite("nonsense")
    assert isinstance(caught.value, InvalidInvite)
    assert caught.value.exit_code == 1


def test_every_truncation_is_refused_with_a_reason() -> None:
    for length in range(len(LINE)):
        with pytest.raises(InvalidInvite) as caught:
            parse_invite(LINE[:length])
        message = str(caught.value)
        assert message.startswith(("invite is truncated", "this is not an mqchat invite",
                                   "invite is damaged", "invite check"))  # fmt: skip
    for length in range(LINE.index("&check="), len(LINE)):
        with pytest.raises(InvalidInvite, match="truncated"):
            parse_invite(LINE[:length])


def test_every_altered_character_is_refused() -> None:
    for position in range(len(LINE)):
        for replacement in {"A", "%", "&", "0", "_"} - {LINE[position]}:
            altered = LINE[:position] + replacement + LINE[position + 1 :]
            with pytest.raises(InvalidInvite):
                parse_invite(altered)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("https://example.org/?v=1", "not an mqchat invite"),
        (LINE.replace("v=1", "v=7"), "format '7' is not supported"),
        (LINE.replace("&epoch=1", "&epoch=2"), "check does not match"),
        (LINE.replace("room=caf%C3%A9", "room=cafe"), "check does not match"),
        (LINE.replace("A6EHv_POEL4dcN0Y", "B6EHv_POEL4dcN0Y"), "check does not match"),
        (LINE.replace("&cipher=aes-256-gcm", "&cipher=fernet"), "check does not match"),
        (LINE.replace("&epoch=1&cipher", "&cipher"), "fields must be"),
        (LINE.replace("v=1&", "v=1&v=1&"), "fields must be"),
        (LINE + "&more=1", "fields must be"),
        (LINE[:40] + " " + LINE[40:], "paste it as one line"),
        (LINE[:40] + "\n" + LINE[40:], "paste it as one line"),
        (LINE.replace("check=eTNt", "check=eTN"), "truncated"),
    ],
)
def test_refusals_say_why(line: str, reason: str) -> None:
    with pytest.raises(InvalidInvite, match=reason):
        parse_invite(line)


@pytest.mark.parametrize(
    ("signed_part", "reason"),
    [
        (LINE[: LINE.index("&check=")].replace("caf%C3%A9", "a%2Fb"), "room name"),
        (LINE[: LINE.index("&check=")].replace("caf%C3%A9", "caf%c3%a9"), "bad character"),
        (LINE[: LINE.index("&check=")].replace("caf%C3%A9", "c%61f%C3%A9"), "canonical"),
        (LINE[: LINE.index("&check=")].replace("caf%C3%A9", "cafe%CC%81"), "NFC"),
        (LINE[: LINE.index("&check=")].replace("caf%C3%A9", "caf%FF"), "UTF-8"),
        (LINE[: LINE.index("&check=")].replace("mqchat%2Fv1", "mqchat%2F%23"), "topic prefix"),
        (LINE[: LINE.index("&check=")].replace("mqchat%2Fv1", "mqchat%2F"), "topic prefix"),
        (LINE[: LINE.index("&check=")].replace("mqchat%2Fv1", "mq%00chat"), "topic prefix"),
        (LINE[: LINE.index("&check=")].replace("aes-256-gcm", "rot13"), "cipher"),
    ],
)
def test_invite_with_a_good_check_but_a_bad_field_is_refused(signed_part: str, reason: str) -> None:
    with pytest.raises(InvalidInvite, match=reason):
        parse_invite(with_check(signed_part))


@pytest.mark.parametrize("epoch", ["01", "-1", str(MAX_INT + 1), "1e3", "", "9" * 17])
def test_epoch_must_be_a_canonical_number_in_range(epoch: str) -> None:
    signed_part = LINE[: LINE.index("&check=")].replace("&epoch=1&", f"&epoch={epoch}&")
    with pytest.raises(InvalidInvite, match="epoch"):
        parse_invite(with_check(signed_part))


def test_encoder_refuses_what_the_parser_would() -> None:
    for bad in (
        Invite("a/b", 0, SECRET, "fernet", "mqchat/v1", ALICE.public_key),
        Invite("lobby", -1, SECRET, "fernet", "mqchat/v1", ALICE.public_key),
        Invite("lobby", 0, SECRET[:31], "fernet", "mqchat/v1", ALICE.public_key),
        Invite("lobby", 0, SECRET, "fernet", "mqchat/+", ALICE.public_key),
        Invite("lobby", 0, SECRET, "des", "mqchat/v1", ALICE.public_key),
    ):
        with pytest.raises(InvalidInvite):
            encode_invite(bad)


def _valid_room(room: str) -> bool:
    try:
        return normalize_room(room) == room
    except UsageError:
        return False


rooms = st.text(min_size=1, max_size=64).filter(_valid_room)


@settings(max_examples=200, deadline=None, database=None)
@given(
    room=rooms,
    epoch=st.integers(0, MAX_INT),
    secret=st.binary(min_size=32, max_size=32),
    cipher=st.sampled_from(["fernet", "aes-256-gcm", "chacha20-poly1305"]),
    prefix=st.sampled_from(["mqchat/v1", "mqchat/v2", "acme/chat", "ü/ß"]),
    inviter=st.binary(min_size=32, max_size=32),
)
def test_round_trip(
    room: str, epoch: int, secret: bytes, cipher: str, prefix: str, inviter: bytes
) -> None:
    invite = Invite(room, epoch, secret, cipher, prefix, inviter)
    line = encode_invite(invite)
    assert line.isascii()
    assert not any(c.isspace() for c in line)
    assert parse_invite(line) == invite


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.one_of(st.text(max_size=400), st.text(max_size=300).map(lambda t: LINE[:150] + t)))
def test_any_text_parses_or_raises_invalid_invite(text: str) -> None:
    try:
        parse_invite(text)
    except InvalidInvite:
        return


def doc_without_white_space() -> str:
    """docs/protocol.md with all white space removed, so wrapped hex reads as one string."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
    return re.sub(r"\s+", "", doc.read_text(encoding="utf-8"))


def test_the_doc_shows_the_pinned_invite() -> None:
    doc = doc_without_white_space()
    assert LINE in doc
    assert CHECK_KEY in doc
