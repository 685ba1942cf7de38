"""Issue 17: in `chatctl chat`, a line starting with / is a command, never a message."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable

from harness import DEADLINE_S, Daemon, Terminal, command

MakeDaemon = Callable[..., Daemon]


def test_commands_act_and_unknown_ones_send_nothing(make_daemon: MakeDaemon, room: str) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    bob_tail = bob.tail(room, "--since", "0")
    term = Terminal([command("chatctl"), "chat", room], alice.env)
    try:
        term.read_until(f"{room}> ".encode())
        term.type("/bogus and some words\n")
        term.read_until(b"unknown command /bogus: nothing was sent")
        term.type("/help\n")
        term.read_until(b"list the room's members")
        term.type("/who\n")
        # chatd answers `who` once it reports presence; until then, a one-line hint.
        _read_until_any(term, (b"/who is not available yet", b"members of " + room.encode()))
        term.type("//x marks the spot\n")
        term.type("a real message\n")
        first, second = bob_tail.messages(2)
        # The first message to reach bob is the escaped one: neither /bogus,
        # /help nor /who went to the room.
        assert first["text"] == "/x marks the spot"
        assert first["sender"] == "alice"
        assert second["text"] == "a real message"
        term.read_until(b"<alice> a real message")
        term.type("/quit\n")
        term.read_until(None)
    finally:
        status = term.wait()
    assert status == 0
    assert b"Traceback" not in term.screen
    assert all(e["type"] != "message" for e in _rest(bob, room))


def _read_until_any(term: Terminal, wanted: tuple[bytes, ...]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not any(w in term.screen for w in wanted):
        if not select.select([term.fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise AssertionError(f"none of {wanted} on the terminal: {term.screen!r}")
        term.screen += os.read(term.fd, 4096)


def _rest(bob: Daemon, room: str) -> list[dict[str, object]]:
    """Every message in bob's store after the two: there are none."""
    import json

    lines = bob.ok("tail", room, "--since", "2", "--no-follow", "--json").splitlines()
    return [json.loads(line) for line in lines]
