"""Issue 12: nothing lost when things fail.

Each test breaks something the way it breaks for users (a deleted database, two
daemons on one store, ...) with real daemons and a real mosquitto.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from harness import Daemon, command, short_tmpdir

MakeDaemon = Callable[..., Daemon]


def test_a_lost_database_does_not_silence_the_sender(make_daemon: MakeDaemon, room: str) -> None:
    """The send sequence number used to live in mqchat.db only: deleting it made
    peers drop the sender's next messages as replays (3 of 4 lost)."""
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    for i in range(3):
        alice.ok("send", room, f"before {i}")
    assert [m["text"] for m in tail.messages(3)] == [f"before {i}" for i in range(3)]
    alice.stop()
    for path in alice.state_dir.glob("mqchat.db*"):
        path.unlink()
    alice.start()
    alice.join(room)
    for i in range(4):
        alice.ok("send", room, f"after {i}")
    got = tail.messages(4)
    assert [m["text"] for m in got] == [f"after {i}" for i in range(4)]
    assert all(m["verified"] for m in got)
    assert "replay" not in bob.status()["dropped"]


def test_a_second_daemon_on_one_state_dir_is_refused(make_daemon: MakeDaemon, room: str) -> None:
    """With another runtime dir (a systemd unit and a shell without XDG_RUNTIME_DIR)
    both used to start and take the broker session from each other."""
    alice = make_daemon("alice")
    alice.join(room)
    env = {**alice.env, "MQCHAT_RUNTIME_DIR": str(short_tmpdir("mqrt-") / "run")}
    result = subprocess.run(
        [command("chatd")], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 1
    assert f"state directory {alice.state_dir} (pid {alice.pid})" in result.stderr
    assert "Traceback" not in result.stderr
    alice.ok("send", room, "the first one keeps working")
