"""Issue 12: nothing lost when things fail.

Each test breaks something the way it breaks for users (a deleted database, two
daemons on one store, ...) with real daemons and a real mosquitto.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable

import pytest

from harness import Broker, Daemon, Gate, PeakMemory, command, short_tmpdir, wait_until

MakeDaemon = Callable[..., Daemon]
MakeBroker = Callable[..., Broker]


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


def test_a_refused_publish_is_kept_shown_and_sent_again(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str
) -> None:
    """A PUBACK with a failure reason (here an ACL) used to delete the message."""
    broker = make_broker(persistence=True, acl="topic read #\n")
    alice, bob = make_daemon("alice", on=broker), make_daemon("bob", on=broker)
    alice.join(room)
    bob.join(room)
    watch = alice.tail(room, "--since", "0")
    alice.ok("send", room, "refused at first")
    # Seen in the tail: it is subscribed (it reads history only after that), so
    # the refusal of the next message cannot come before it listens.
    assert watch.messages(1)[0]["text"] == "refused at first"
    alice.ok("send", room, "refused too")
    notice = watch.wait_for(lambda e: e.get("kind") == "publish_refused")
    assert "not authorized" in notice["text"].lower()
    # Both texts are refused and kept (and, on a slow machine, the heads that follow
    # the first by a second: they are refused and kept too).
    wait_until(lambda: alice.status()["broker"]["refused"] >= 2, "both refusals counted")
    status = alice.status()["broker"]
    assert status["outbox"] >= 2
    assert "not authorized" in status["last_refusal"]["reason"].lower()
    assert re.search(r"\b\d+ refused by the broker \(Not authorized\)", alice.ok("status"))

    # The ACL changes with a broker restart. alice comes back only once bob is
    # connected again: what this test proves is that alice kept and resent both,
    # not how mosquitto queues for a session it restored from disk.
    alice.stop()
    broker.stop()
    bob.wait_connected(False)
    broker.acl = "topic readwrite #\n"
    broker.start()
    bob.wait_connected()
    alice.start()
    tail = bob.tail(room, "--since", "0")
    assert [m["text"] for m in tail.messages(2)] == ["refused at first", "refused too"]
    wait_until(lambda: alice.status()["broker"]["outbox"] == 0, "the outbox to empty")
    assert alice.status()["broker"]["refused"] == 0


def test_leaving_while_the_broker_is_down_stops_the_room_arriving(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str
) -> None:
    """The persistent session used to keep the subscription of a room left offline."""
    broker = make_broker(persistence=True)
    alice, bob = make_daemon("alice", on=broker), make_daemon("bob", on=broker)
    alice.join(room)
    bob.join(room)
    other = room + "-still-joined"
    alice.join(other)
    bob.join(other)
    broker.stop()
    alice.wait_connected(False)
    alice.ok("leave", room)
    broker.start()
    alice.wait_connected()
    bob.wait_connected()
    tail = alice.tail(other, "--since", "0")
    # What the session held from before the leave may still come once (bob's
    # presence, say); what is sent after the reconnection must not come at all.
    bob.ok("send", other, "first for alice")
    assert tail.messages(1)[0]["text"] == "first for alice"
    before = alice.status()["dropped"]
    for i in range(3):
        bob.ok("send", room, f"not for alice {i}")
    bob.ok("send", other, "second for alice")
    assert tail.messages(1)[0]["text"] == "second for alice"
    assert alice.status()["dropped"] == before


OUTAGE_SENDS = int(os.environ.get("MQCHAT_TEST_OUTAGE_SENDS", "100000"))


@pytest.mark.timeout(600)  # 100,000 messages through two daemons: about 70 s on 2 cores
def test_a_long_outage_is_sent_in_order_with_bounded_memory(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str
) -> None:
    """The whole outbox used to be handed to paho at once: past 65,535 pending
    packet ids paho refused, and memory grew with the outage."""
    # mosquitto 2.0.11 can put a QoS 1 message ahead of others queued for a
    # subscriber whose in-flight window (20) is full: seen once in 100,000 under
    # load (docs/brokers.md). This test is about chatd's outbox, so the window is off.
    broker = make_broker(extra=("max_inflight_messages 0",))
    gate = Gate(broker)  # alice's own outage: bob stays connected and sees arrival order
    alice = make_daemon("alice", extra_env={"MQCHAT_BROKER": gate.url})
    bob = make_daemon("bob", on=broker, start=False)
    # bob stores all of them: his tail may fall behind a burst that arrives in
    # batches of 256, and fills in from his store (retention would cut it at 10,000).
    bob.write_config(f"[store]\nretention = {OUTAGE_SENDS}\n").start()
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    gate.close()
    alice.wait_connected(False)
    lines = "".join(f"{i}\n" for i in range(OUTAGE_SENDS))
    with PeakMemory(alice.pid) as memory:
        result = alice.ctl("send", room, input=lines, timeout=600)
        assert result.returncode == 0, result.stderr
        assert alice.status()["broker"]["outbox"] == OUTAGE_SENDS
        gate.open()
        got = [int(m["text"]) for m in tail.messages(OUTAGE_SENDS, timeout=600)]
        assert got == list(range(OUTAGE_SENDS))
        wait_until(lambda: alice.status()["broker"]["outbox"] == 0, "alice's outbox to empty")
    assert memory.growth_mib < 50, f"chatd grew by {memory.growth_mib:.0f} MiB"
