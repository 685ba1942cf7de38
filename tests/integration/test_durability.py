"""Issue 4, "Nothing lost": broker outages, daemon restarts and crashes lose no
message, and a tail never skips or repeats one (docs/store.md).

A real mosquitto (with persistence where it restarts), real chatd processes,
the real chatctl. Restarts reuse the same Daemon object, so the same state dir,
client id and identity; a restarted broker keeps its port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from forge import epoch_zero, texts_in
from harness import PASSPHRASE, Broker, Daemon, Tail, command, wait_until
from mqchat.daemon.identity_file import load_identity
from mqchat.protocol.batch import seal_batch
from mqchat.protocol.records import Text

MakeDaemon = Callable[..., Daemon]
MakeBroker = Callable[..., Broker]


def persistent_broker(make_broker: MakeBroker) -> Broker:
    """A mosquitto that keeps sessions and queued messages across its restarts."""
    return make_broker(persistence=True)


def history(d: Daemon, room: str, *args: str) -> list[dict[str, Any]]:
    """The room's stored messages as ``chatctl tail --no-follow --json`` prints them."""
    out = d.ok("tail", room, "--no-follow", "--json", *args)
    return [json.loads(line) for line in out.splitlines() if line]


def is_notice(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "notice" and e.get("kind") == kind


def broker_state(d: Daemon) -> dict[str, Any]:
    broker: dict[str, Any] = d.status()["broker"]
    return broker


def test_stopped_daemon_gets_what_was_sent_while_it_was_down(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    bob.stop()
    texts = [f"while you were out {i:02d}" for i in range(20)]
    alice.ok("send", room, input="\n".join(texts) + "\n")
    bob.start()
    tail = bob.tail(room, "--since", "0")
    got = tail.messages(20)
    assert [m["text"] for m in got] == texts
    assert [m["seq"] for m in got] == list(range(1, 21))
    assert all(m["sender"] == "alice" and m["verified"] for m in got)
    alice.ok("send", room, "marker")
    marker = tail.messages(1)[0]
    assert (marker["text"], marker["seq"]) == ("marker", 21)
    tail.assert_silent()
    stored = history(bob, room, "-n", "1000")
    assert [m["text"] for m in stored] == [*texts, "marker"]
    assert len({m["id"] for m in stored}) == 21


def test_outage_sends_are_queued_and_sent_when_the_broker_returns(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str
) -> None:
    broker = persistent_broker(make_broker)
    alice, bob = make_daemon("alice", on=broker), make_daemon("bob", on=broker)
    alice.join(room)
    bob.join(room)
    alice.ok("send", room, "before")
    notices, bob_tail = alice.tail(), bob.tail(room, "--since", "0")
    for t in (notices, bob_tail):  # printed history: the tail is subscribed
        assert t.messages(1)[0]["text"] == "before"
    broker.stop()
    notices.wait_for(is_notice("broker_down"))
    alice.wait_connected(False)
    result = alice.ctl("send", room, "sent in the dark")
    assert result.returncode == 0, result.stderr
    assert "queued" in result.stderr
    state = broker_state(alice)
    assert state["connected"] is False
    # The text waits in the outbox (with, on a slow machine, the heads that follow
    # "before" by a second: they wait for the broker too).
    assert state["outbox"] >= 1
    assert notices.messages(1)[0]["text"] == "sent in the dark"  # own echo, stored at once
    broker.start()
    notices.wait_for(is_notice("broker_up"))
    got = bob_tail.messages(1)
    assert got[0]["text"] == "sent in the dark"
    wait_until(lambda: broker_state(alice)["outbox"] == 0, "alice's outbox to drain")
    assert broker_state(alice)["connected"] is True
    alice.ok("send", room, "marker")
    assert bob_tail.messages(1)[0]["text"] == "marker"
    bob_tail.assert_silent()
    assert [m["seq"] for m in history(bob, room, "-n", "100")] == [1, 2, 3]


def test_outage_sends_survive_sigkill_and_a_broker_restart(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str
) -> None:
    broker = persistent_broker(make_broker)
    alice, bob = make_daemon("alice", on=broker), make_daemon("bob", on=broker)
    alice.join(room)
    bob.join(room)
    alice.ok("send", room, "before")
    bob_tail = bob.tail(room, "--since", "0")
    assert bob_tail.messages(1)[0]["text"] == "before"  # the tail is subscribed
    broker.stop()
    bob_tail.wait_for(is_notice("broker_down"))
    alice.wait_connected(False)
    texts = [f"queued {i}" for i in range(10)]
    first = alice.ctl("send", room, texts[0])
    assert first.returncode == 0, first.stderr
    assert "queued" in first.stderr
    rest = alice.ctl("send", room, input="\n".join(texts[1:]) + "\n")
    assert rest.returncode == 0, rest.stderr
    assert rest.stderr.count("queued") == 1  # one note for a stream, not one per line
    state = broker_state(alice)
    assert (state["connected"], state["outbox"]) == (False, 10)
    assert alice.stop(signal.SIGKILL) == -signal.SIGKILL

    broker.start()
    bob_tail.wait_for(is_notice("broker_up"))
    alice.start()
    got = bob_tail.messages(10)
    assert [m["text"] for m in got] == texts
    assert [m["seq"] for m in got] == list(range(2, 12))
    wait_until(lambda: broker_state(alice)["outbox"] == 0, "alice's outbox to drain")
    alice.ok("send", room, "marker")
    assert bob_tail.messages(1)[0]["seq"] == 12
    bob_tail.assert_silent()
    everything = ["before", *texts, "marker"]
    assert [m["text"] for m in history(bob, room, "-n", "100")] == everything
    mine = history(alice, room, "-n", "100")
    assert [(m["seq"], m["text"], m["own"]) for m in mine] == [
        (i + 1, t, True) for i, t in enumerate(everything)
    ]


def test_history_survives_a_restart(make_daemon: MakeDaemon, room: str) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room)
    alice.ok("send", room, input="one\ntwo\nthree\nfour\nfive\n")
    tail.messages(5)
    bob.stop()
    bob.start()
    assert [(m["seq"], m["text"]) for m in history(bob, room, "-n", "3")] == [
        (3, "three"),
        (4, "four"),
        (5, "five"),
    ]
    assert [m["seq"] for m in history(bob, room, "--since", "3")] == [4, 5]
    tail = bob.tail(room, "-n", "2")
    assert [m["text"] for m in tail.messages(2)] == ["four", "five"]
    alice.ok("send", room, "six")
    assert [(m["seq"], m["text"]) for m in tail.messages(1)] == [(6, "six")]  # seq goes on
    tail.assert_silent()


def test_tail_started_mid_stream_has_no_gap_and_no_repeat(
    make_daemon: MakeDaemon, room: str
) -> None:
    total, window, late_at, hold_at = 300, 4, 100, 280
    alice, bob = make_daemon("alice"), make_daemon("bob")
    alice.join(room)
    bob.join(room)
    first = bob.tail(room, "--since", "0")
    texts = [f"stream {i:03d}" for i in range(1, total + 1)]
    sender = subprocess.Popen(
        [command("chatctl"), "send", room],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=alice.env,
        text=True,
        bufsize=1,
    )
    assert sender.stdin is not None
    late: Tail | None = None
    late_lines: list[dict[str, Any]] = []
    streamed: list[dict[str, Any]] = []
    written = 0
    try:
        # Paced by what bob has received, so messages keep flowing while the
        # late tail starts, subscribes and reads history; held at hold_at until
        # it has printed, so it must merge live events after its history.
        while len(streamed) < total:
            while written < total and written - len(streamed) < window:
                if written >= hold_at and late is not None and not late_lines:
                    late_lines.append(late.next_json())
                sender.stdin.write(texts[written] + "\n")
                written += 1
            sender.stdin.flush()
            streamed += first.messages(1)
            if late is None and len(streamed) >= late_at:
                late = bob.tail(room, "-n", "20")
        sender.stdin.close()
        assert sender.wait(30) == 0, sender.stderr.read() if sender.stderr else ""
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    assert [(m["seq"], m["text"]) for m in streamed] == list(enumerate(texts, 1))
    assert late is not None and late_lines
    late_lines += late.messages(total - late_lines[0]["seq"])
    seqs = [m["seq"] for m in late_lines]
    start = seqs[0]
    assert late_at - 20 < start <= hold_at - 19, seqs[:5]
    assert seqs == list(range(start, total + 1))
    assert [m["text"] for m in late_lines] == texts[start - 1 :]
    alice.ok("send", room, "marker")
    assert late.messages(1)[0]["seq"] == total + 1
    late.assert_silent()


def test_since_prints_exactly_the_messages_after_seq(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice")
    alice.join(room)
    texts = [f"m{i}" for i in range(1, 31)]
    alice.ok("send", room, input="\n".join(texts) + "\n")
    after_17 = history(alice, room, "--since", "17")
    assert [(m["seq"], m["text"]) for m in after_17] == [(i, f"m{i}") for i in range(18, 31)]
    assert history(alice, room, "--since", "30") == []
    assert [m["seq"] for m in history(alice, room, "--since", "0")] == list(range(1, 31))
    tail = alice.tail(room, "--since", "27")
    assert [m["seq"] for m in tail.messages(3)] == [28, 29, 30]
    alice.ok("send", room, "m31")
    assert [(m["seq"], m["text"]) for m in tail.messages(1)] == [(31, "m31")]
    tail.assert_silent()


def test_replayed_message_is_dropped_also_after_a_restart(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    captured: list[tuple[str, bytes]] = []
    got_one = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        captured.append((msg.topic, bytes(msg.payload)))
        got_one.set()

    subscribed = threading.Event()
    spy = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"spy-{room}")
    spy.on_message = on_message
    spy.on_subscribe = lambda *a: subscribed.set()
    spy.connect("127.0.0.1", broker.port)
    spy.loop_start()
    try:
        alice, bob = make_daemon("alice"), make_daemon("bob")
        alice.join(room)
        bob.join(room)
        spy.subscribe("mqchat/v1/#", qos=1)
        assert subscribed.wait(10)
        keys = epoch_zero(PASSPHRASE, room)
        alice.ok("send", room, "original")
        wait_until(
            lambda: any(texts_in(p, keys) for _, p in captured), "the spy to see alice's text"
        )
        topic, payload = next((t, p) for t, p in captured if texts_in(p, keys))
        (original,) = texts_in(payload, keys)
        bob.stop()
        bob.start()
        # The same payload again (same id), and a fresh batch re-using alice's
        # (stream, seq) under a new id: both must be dropped.
        assert keys.topic("mqchat/v1") == topic
        forged = Text(
            original.stream, original.seq, os.urandom(16), original.timestamp_ms, "forged"
        )
        same_seq = seal_batch(
            keys,
            load_identity(alice.state_dir, os.urandom),
            name="alice",
            records=[forged],
            sent_ms=original.timestamp_ms,
            random=os.urandom,
        )
        for replay in (payload, same_seq):
            spy.publish(topic, replay, qos=1).wait_for_publish(10)
        tail = bob.tail(room, "--since", "0")
        assert tail.messages(1)[0]["text"] == "original"
        wait_until(lambda: sum(bob.status()["dropped"].values()) >= 2, "bob to drop both replays")
        dropped = bob.status()["dropped"]
        # Each is a number alice's stream holds: a copy (docs/security.md, "Replays").
        assert dropped.get("duplicate") == 2 and "replay" not in dropped, dropped
        alice.ok("send", room, "fresh")
        assert [(m["seq"], m["text"]) for m in tail.messages(1)] == [(2, "fresh")]
        tail.assert_silent()
    finally:
        spy.loop_stop()
        spy.disconnect()


def test_retention_keeps_the_last_n_messages_per_room(make_daemon: MakeDaemon, room: str) -> None:
    alice = make_daemon("alice", start=False).write_config("[store]\nretention = 5\n")
    alice.start()
    alice.join(room)
    alice.ok("send", room, input="".join(f"r{i}\n" for i in range(1, 13)))
    kept = history(alice, room, "-n", "100")
    assert [(m["seq"], m["text"]) for m in kept] == [(i, f"r{i}") for i in range(8, 13)]
    alice.ok("send", room, "r13")
    assert [m["seq"] for m in history(alice, room, "--since", "0")] == list(range(9, 14))
