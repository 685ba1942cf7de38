"""Issue 17, presence: who is in a room, online or last seen, and the events that say so.

Real daemons and a real mosquitto. The daemons announce every 2 s here (the
default is 60 s), so "offline after three silent intervals" is 6 s.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import pytest

from harness import Daemon, wait_until

MakeDaemon = Callable[..., Daemon]
INTERVAL_S = 2


def member(d: Daemon, room: str, name: str) -> dict[str, Any] | None:
    result = json.loads(d.ok("who", room, "--json"))
    found = [m for m in result["members"] if m["name"] == name and not m.get("you")]
    return found[0] if found else None


def online(d: Daemon, room: str, name: str) -> bool:
    m = member(d, room, name)
    return m is not None and m["online"]


def offline(d: Daemon, room: str, name: str) -> bool:
    m = member(d, room, name)
    return m is not None and not m["online"]


@pytest.fixture
def make_present(make_daemon: MakeDaemon) -> Callable[[str], Daemon]:
    def make(name: str) -> Daemon:
        d = make_daemon(name, start=False)
        return d.write_config(f"[presence]\ninterval = {INTERVAL_S}\n").start()

    return make


def test_two_daemons_see_each_other_and_a_clean_stop(
    make_present: Callable[[str], Daemon], room: str
) -> None:
    alice, bob = make_present("alice"), make_present("bob")
    alice.join(room)
    bob.join(room)
    events = bob.tail(room, "--since", "0")
    wait_until(lambda: online(bob, room, "alice"), "bob to see alice online")
    wait_until(lambda: online(alice, room, "bob"), "alice to see bob online")
    seen = member(bob, room, "alice")
    assert seen is not None
    assert seen["fingerprint"] == alice.status()["fingerprint"]
    plain = bob.ok("who", room)
    assert "alice" in plain and "online" in plain and "(you)" in plain

    alice.stop()  # SIGTERM: a clean stop says "leaving"
    wait_until(lambda: offline(bob, room, "alice"), "bob to see alice leave", timeout=5)
    left = events.wait_for(lambda e: e["type"] == "presence" and e["reason"] == "leaving")
    assert left["name"] == "alice" and left["online"] is False
    # Announcements are not messages: nothing in history, no seq used.
    assert bob.ok("tail", room, "--no-follow", "--json").strip() == ""
    assert json.loads(bob.ok("rooms", "--json"))[0]["last_seq"] == 0


def test_a_killed_daemon_shows_offline_after_the_documented_timeout(
    make_present: Callable[[str], Daemon], room: str
) -> None:
    alice, bob = make_present("alice"), make_present("bob")
    alice.join(room)
    bob.join(room)
    wait_until(lambda: online(bob, room, "alice"), "bob to see alice online")
    alice.stop(signal.SIGKILL)  # no "leaving": only silence
    wait_until(
        lambda: offline(bob, room, "alice"),
        "alice to time out",
        timeout=3 * INTERVAL_S * 1.1 + 3,
    )
    who = json.loads(bob.ok("who", room, "--json"))
    assert who["offline_after_s"] == 3 * INTERVAL_S


def test_a_member_that_joins_later_learns_who_is_there(
    make_present: Callable[[str], Daemon], room: str
) -> None:
    """An "online" is answered with "still here" within 2 s: no interval to wait."""
    alice, bob = make_present("alice"), make_present("bob")
    alice.join(room)
    bob.join(room)
    wait_until(lambda: online(alice, room, "bob"), "alice to see bob")
    carol = make_present("carol")
    carol.join(room)
    wait_until(lambda: online(carol, room, "alice"), "carol to see alice", timeout=2 + 2)
    wait_until(lambda: online(carol, room, "bob"), "carol to see bob", timeout=2 + 2)
    plain = carol.tail(room, "--since", "0")
    alice.ok("send", room, "hello carol")
    assert plain.messages(1)[0]["text"] == "hello carol"


def test_who_says_when_a_member_was_last_heard_to_the_latest_batch(
    make_present: Callable[[str], Daemon], room: str
) -> None:
    """A member heard again and again has its time written at most once a second
    (issue 24), but `who` tells the latest: never older than the last message bob
    received from it. Several messages within a second: most are not written."""
    alice, bob = make_present("alice"), make_present("bob")
    alice.join(room)
    bob.join(room)
    wait_until(lambda: online(bob, room, "alice"), "bob to see alice online")
    events = bob.tail(room)
    for i in range(6):
        alice.ok("send", room, f"quick {i}")
        got = events.messages(1)[0]
        assert got["text"] == f"quick {i}"
        seen = member(bob, room, "alice")
        assert seen is not None and seen["online"]
        assert seen["last_seen"] >= got["ts"], i  # both UTC to the millisecond
