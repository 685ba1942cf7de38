"""Issue 25: every message that tells a user what to do next is right where it is printed.

One test per hint, each in the situation it is printed in, with real chatd
processes, a real mosquitto and the real chatctl.
"""

from __future__ import annotations

from collections.abc import Callable

from harness import Daemon

MakeDaemon = Callable[..., Daemon]


def invite_line(d: Daemon, room: str) -> str:
    return d.ok("invite", room).strip()


def test_after_leaving_an_invite_room_the_hint_asks_for_a_new_invite_not_a_passphrase_join(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.ok("create", room)
    bob.ok("join", "--invite", input=invite_line(alice, room) + "\n")
    bob.ok("leave", room)
    # Also after a restart: chatd keeps what it needs for the hint.
    bob.stop()
    bob.start()
    refused = bob.ctl("send", room, "hello?")
    assert refused.returncode == 1
    assert "new invite" in refused.stderr and "chatctl join --invite" in refused.stderr
    assert "another room" in refused.stderr  # the passphrase join is named as a trap
    # Doing it anyway is no longer silent.
    joined = bob.ctl("join", room, input="a passphrase for a new room\n")
    assert joined.returncode == 0
    assert "WARNING" in joined.stderr and "another room of that name" in joined.stderr


def test_a_room_never_joined_names_both_ways_in(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    refused = alice.ctl("send", room, "hello?")
    assert refused.returncode == 1
    assert "chatctl join --invite" in refused.stderr and f"chatctl join {room}" in refused.stderr
