"""Issue 17: what `chatctl ui` holds per room: unread counts, pages of history, members."""

from __future__ import annotations

from typing import Any

import pytest

from mqchat.client.ui.commands import parse_join, split_command
from mqchat.client.ui.state import ChatState
from mqchat.errors import UsageError


def message(room: str, seq: int, *, own: bool = False) -> dict[str, Any]:
    return {"type": "message", "room": room, "seq": seq, "own": own, "text": f"m{seq}"}


def presence(name: str, fp: str, *, online: bool, reason: str) -> dict[str, Any]:
    return {
        "type": "presence", "room": "a", "name": name, "fingerprint": fp, "verified": True,
        "online": online, "last_seen": "2026-11-26T09:00:00.000Z", "reason": reason,
    }  # fmt: skip


def two_rooms() -> ChatState:
    state = ChatState()
    state.add_room({"name": "a"}, [message("a", 5), message("a", 6)])
    state.add_room({"name": "b"}, [])
    return state


def test_unread_counts_others_messages_in_rooms_not_shown() -> None:
    state = two_rooms()
    assert state.current == "a"
    assert state.take(message("b", 1)) == "b"
    state.take(message("b", 2, own=True))  # sent from another terminal: already read
    state.take(message("a", 7))
    assert (state.rooms["a"].unread, state.rooms["b"].unread) == (0, 1)
    state.step(1)
    assert state.current == "b" and state.rooms["b"].unread == 0
    assert state.take(message("nowhere", 1)) is None


def test_older_pages_go_first_until_the_store_has_none() -> None:
    state = two_rooms()
    room = state.rooms["a"]
    assert room.more_above and room.oldest_seq == 5
    assert room.add_older([message("a", 3), message("a", 4), message("a", 5)]) == 2
    assert [e["seq"] for e in room.entries] == [3, 4, 5, 6] and room.more_above
    assert room.add_older([]) == 0  # retention pruned 1 and 2
    assert not room.more_above


def test_presence_seen_while_who_was_asked_is_kept_over_its_answer() -> None:
    state = two_rooms()
    room = state.rooms["a"]
    room.asking()
    state.take(presence("dave", "d" * 64, online=True, reason="joined"))
    room.answered([{"name": "bob", "fingerprint": "b" * 64, "verified": True, "online": True}])
    assert sorted(m["name"] for m in room.members or []) == ["bob", "dave"]
    state.take(presence("bob", "b" * 64, online=False, reason="leaving"))
    bob = next(m for m in room.members or [] if m["name"] == "bob")
    assert bob["online"] is False and len(room.members or []) == 2
    # A periodic announce changes the panel, not the log.
    before = len(room.entries)
    state.take(presence("bob", "b" * 64, online=True, reason="announce"))
    assert len(room.entries) == before


def test_join_command_words() -> None:
    assert split_command('/join "a b" --weak') == ("/join", ["a b", "--weak"])
    assert parse_join(["lobby", "--legacy", "--cipher", "aes-256-gcm"]) == {
        "room": "lobby", "cipher": "aes-256-gcm", "legacy": True, "weak": False,
    }  # fmt: skip
    with pytest.raises(UsageError):
        parse_join(["lobby", "--passphrase", "x"])
