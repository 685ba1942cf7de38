"""Read marks of following tails: only moving forward, counted while renewed, bounded
(mqchat.daemon.followers)."""

from __future__ import annotations

import pytest

from mqchat.daemon.followers import LEASE_MS, MAX_FOLLOWERS, Followers
from mqchat.errors import UsageError

A, B = "a" * 16, "b" * 16


def test_marks_move_forward_and_the_lowest_holds_while_renewed() -> None:
    now = [1_000_000]
    f = Followers(lambda: now[0])
    f.read(A, "lobby", 10)
    f.read(A, "lobby", 4)  # late: cannot release what 10 held
    f.read(B, "lobby", 7)
    assert f.lowest_unread("lobby") == 8
    now[0] += LEASE_MS // 2
    f.read(A, "lobby", 10)  # A renews, B does not
    now[0] += LEASE_MS // 2 + 1
    assert f.lowest_unread("lobby") == 11
    assert f.lowest_unread("nobody follows") is None


def test_followers_are_bounded_and_ids_checked() -> None:
    f = Followers(lambda: 0)
    for i in range(MAX_FOLLOWERS + 10):
        f.read(f"{i:016d}", "lobby", i + 1)
    assert f.lowest_unread("lobby") == 12  # the 10 oldest were forgotten
    with pytest.raises(UsageError):
        f.read("short", "lobby", 1)
