"""Sizes and names every part of mqchat agrees on."""

from __future__ import annotations

import pytest

from mqchat.errors import InvalidRoomName, MessageTooLong, UsageError
from mqchat.protocol.limits import (
    MAX_PAYLOAD_BYTES,
    MAX_TEXT_BYTES,
    check_text,
    normalize_name,
    normalize_room,
)


def test_documented_sizes() -> None:
    assert MAX_TEXT_BYTES == 16 * 1024
    assert MAX_PAYLOAD_BYTES == 64 * 1024


def test_text_up_to_16_kib_of_utf8_is_accepted() -> None:
    assert check_text("x" * MAX_TEXT_BYTES) == b"x" * MAX_TEXT_BYTES
    assert check_text("") == b""
    assert check_text("h\u00e9") == "h\u00e9".encode()


def test_text_over_16_kib_of_utf8_is_refused_with_its_size() -> None:
    with pytest.raises(MessageTooLong, match="16385"):
        check_text("x" * (MAX_TEXT_BYTES + 1))


def test_text_limit_counts_bytes_not_characters() -> None:
    check_text("\u00e9" * (MAX_TEXT_BYTES // 2))
    with pytest.raises(MessageTooLong):
        check_text("\u00e9" * (MAX_TEXT_BYTES // 2 + 1))
    with pytest.raises(MessageTooLong):
        check_text("\U0001f600" * (MAX_TEXT_BYTES // 4) + "x")


def test_text_that_is_not_unicode_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        check_text("lone surrogate \udc80")


@pytest.mark.parametrize(
    "room", ["lobby", "a", "r" * 64, "caf\u00e9 corner", "\u5ba2\u5385", "a.b-c_d"]
)
def test_valid_room_names(room: str) -> None:
    assert normalize_room(room) == room


def test_room_name_is_nfc() -> None:
    assert normalize_room("cafe\u0301") == "caf\u00e9"


@pytest.mark.parametrize(
    "room",
    [
        "",
        "r" * 65,
        " lobby",
        "lobby ",
        "a/b",
        "a+b",
        "a#b",
        "tab\there",
        "nl\n",
        "zw\u200bj",
        "\x00",
    ],
)
def test_invalid_room_names(room: str) -> None:
    with pytest.raises(InvalidRoomName):
        normalize_room(room)


def test_invalid_room_name_is_a_usage_error() -> None:
    assert issubclass(InvalidRoomName, UsageError)


@pytest.mark.parametrize(
    ("name", "expected"), [("alice", "alice"), ("  bob  ", "bob"), ("e\u0301ve", "\u00e9ve")]
)
def test_valid_sender_names(name: str, expected: str) -> None:
    assert normalize_name(name) == expected


@pytest.mark.parametrize("name", ["", "   ", "n" * 65, "\u00e9" * 33, "bell\x07", "new\nline"])
def test_invalid_sender_names(name: str) -> None:
    with pytest.raises(UsageError):
        normalize_name(name)


def test_sender_name_limit_is_64_bytes() -> None:
    assert normalize_name("n" * 64) == "n" * 64
    assert normalize_name("\u00e9" * 32) == "\u00e9" * 32
