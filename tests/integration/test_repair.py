"""Issue 12 item 5: what the broker drops after acknowledging it is found and repaired
end to end, or shown as lost (docs/protocol.md §14.2, §14.3, §20, §21; docs/store.md).

A real mosquitto with its default queue limit (``max_queued_messages 1000``),
real daemons; where a sender must stay silent, a forged sender (its own
Ed25519 key, batches sealed by hand) stands in for a daemon that is offline.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from forge import epoch_zero
from harness import PASSPHRASE, Broker, Daemon, wait_until
from mqchat.client.ipc_client import Client
from mqchat.protocol.batch import seal_batch
from mqchat.protocol.records import Heads, Record, Text
from mqchat.protocol.signing import SigningIdentity
from rawmqtt import RawClient

MakeDaemon = Callable[..., Daemon]
MakeBroker = Callable[..., Broker]
DEFAULT_QUEUE = ("max_queued_messages 1000",)
"""mosquitto's default (the harness raises it for other tests)."""


def history(d: Daemon, room: str) -> list[dict[str, Any]]:
    out = d.ok("tail", room, "--no-follow", "--json", "-n", "100000")
    return [json.loads(line) for line in out.splitlines() if line]


def is_notice(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "notice" and e.get("kind") == kind


def repair_status(d: Daemon) -> dict[str, Any]:
    status: dict[str, Any] = d.status()["repair"]
    return status


def test_a_broker_restart_mid_stream_loses_nothing(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str
) -> None:
    """The issue's test: 2,000 messages, one payload each, the broker restarted while
    they flow and the peer too slow to take them (paused), so that mosquitto's
    queue of 1,000 overflows; the peer ends with 2,000 of 2,000, once each, in
    the sender's order."""
    broker = make_broker(persistence=True, extra=DEFAULT_QUEUE)
    alice, bob = make_daemon("alice", on=broker), make_daemon("bob", on=broker)
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    texts = [f"stream {i:04d}" for i in range(2000)]
    with Client(alice.runtime_dir, 30) as client:
        for i, text in enumerate(texts):
            client.call("send", {"room": room, "text": text})  # one at a time: a payload each
            if i == 100:
                assert [m["text"] for m in tail.messages(101)] == texts[:101]
                os.kill(bob.pid, signal.SIGSTOP)  # a slow peer: the broker queues for it
            if i == 1500:
                broker.stop()
                broker.start()
    os.kill(bob.pid, signal.SIGCONT)
    rest = tail.messages(len(texts) - 101, timeout=120)
    assert [m["text"] for m in rest] == texts[101:]
    alice.ok("send", room, "marker")
    assert tail.messages(1)[0]["text"] == "marker"
    tail.assert_silent()
    stored = history(bob, room)
    assert [m["text"] for m in stored] == [*texts, "marker"]
    assert [m["seq"] for m in stored] == list(range(1, 2002))
    assert len({m["id"] for m in stored}) == 2001
    repaired = repair_status(bob)
    assert repaired["repaired"] > 0, "the broker dropped nothing: the test tested nothing"
    assert repaired["lost"] == repaired["missing"] == repaired["held"] == 0


def pause_while(d: Daemon, action: Callable[[], None]) -> None:
    """Run ``action`` while ``d`` is paused (SIGSTOP): a peer too slow to take what the
    broker queues for it, so that a small ``max_queued_messages`` drops the newest."""
    os.kill(d.pid, signal.SIGSTOP)
    try:
        action()
    finally:
        os.kill(d.pid, signal.SIGCONT)


def send_one_by_one(d: Daemon, room: str, texts: list[str]) -> None:
    with Client(d.runtime_dir, 30) as client:
        for text in texts:
            client.call("send", {"room": room, "text": text})


def test_a_lost_tail_is_found_by_heads_and_repaired(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str
) -> None:
    """Nothing follows the dropped messages: the sender's heads after the burst tell
    the peer they exist, and it asks for them."""
    broker = make_broker(persistence=True, extra=("max_queued_messages 5",))
    alice, bob = make_daemon("alice", on=broker), make_daemon("bob", on=broker)
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    alice.ok("send", room, "hello")
    assert tail.messages(1)[0]["text"] == "hello"
    texts = [f"tail {i:02d}" for i in range(40)]
    pause_while(bob, lambda: send_one_by_one(alice, room, texts))
    got = tail.messages(len(texts), timeout=60)
    assert [m["text"] for m in got] == texts
    tail.assert_silent()
    status = repair_status(bob)
    assert status["repaired"] > 0 and status["asked"] > 0
    assert status["lost"] == status["missing"] == 0
    assert [m["text"] for m in history(bob, room)] == ["hello", *texts]


def test_what_the_sender_purged_is_shown_as_lost(
    make_broker: MakeBroker, make_daemon: MakeDaemon, room: str
) -> None:
    """alice keeps her last 5 records only: bob gets back what she still holds, and a
    lost notice and counter for the rest; everything else in order."""
    broker = make_broker(persistence=True, extra=("max_queued_messages 5",))
    alice = make_daemon("alice", on=broker, start=False).write_config("[store]\nretention = 5\n")
    alice.start()
    bob = make_daemon("bob", on=broker)
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    alice.ok("send", room, "hello")
    assert tail.messages(1)[0]["text"] == "hello"
    texts = [f"purged {i:02d}" for i in range(40)]
    pause_while(bob, lambda: send_one_by_one(alice, room, texts))
    lost = tail.wait_for(is_notice("lost"), timeout=60)
    assert lost["sender"] == "alice" and lost["count"] >= 1
    wait_until(lambda: repair_status(bob)["missing"] == 0, "bob to stop waiting")
    status = repair_status(bob)
    assert status["lost"] == lost["count"] and status["held"] == 0
    shown = [m["text"] for m in history(bob, room)]
    assert shown[0] == "hello"
    assert shown[1:] == [t for t in texts if t in shown]  # the sender's order
    assert len(shown) - 1 + status["lost"] == len(texts)  # each shown or lost, once
    assert shown[-5:] == texts[-5:]  # what alice still held came back


def forged_sender(room: str) -> tuple[SigningIdentity, Callable[[list[Record]], bytes]]:
    keys = epoch_zero(PASSPHRASE, room)
    carol = SigningIdentity.generate(os.urandom)

    def seal(records: list[Record]) -> bytes:
        return seal_batch(keys, carol, name="carol", records=records, sent_ms=0, random=os.urandom)

    return carol, seal


def text(seq: int, *, repaired: bool = False, stream: int = 77) -> Text:
    mid = seq.to_bytes(16, "big")
    return Text(stream, seq, mid, 1_900_000_000_000, f"carol {seq}", repaired=repaired)


def test_a_sender_offline_past_the_limit_leaves_a_lost_notice_and_the_rest_in_order(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    """carol's second message never comes and she does not answer: bob holds back her
    third, asks, and after `[repair] give_up_after` shows the loss, then the third."""
    bob = make_daemon("bob", start=False).write_config("[repair]\ngive_up_after = 2\n")
    bob.start()
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    _, seal = forged_sender(room)
    with RawClient(broker) as raw:
        topic = epoch_zero(PASSPHRASE, room).topic("mqchat/v1")
        raw.publish(topic, seal([text(1)]))
        assert tail.messages(1)[0]["text"] == "carol 1"
        raw.publish(topic, seal([text(3), text(4)]))
        wait_until(lambda: repair_status(bob)["held"] == 2, "bob to hold back carol 3 and 4")
        assert repair_status(bob)["missing"] == 1
        wait_until(lambda: repair_status(bob)["asked"] >= 1, "bob to ask for carol 2")
        asks = [p for t, p in raw.captured if t == topic]
        assert len(asks) >= 3  # carol's two batches and bob's request
        lost = tail.wait_for(is_notice("lost"), timeout=20)
        assert (lost["sender"], lost["count"], lost["ranges"]) == ("carol", 1, [[2, 2]])
        assert [m["text"] for m in tail.messages(2)] == ["carol 3", "carol 4"]
    status = repair_status(bob)
    assert (status["lost"], status["missing"], status["held"]) == (1, 0, 0)
    assert "repair:   1 lost, 0 missing (0 held back)" in bob.ok("status")
    assert [m["text"] for m in history(bob, room)] == ["carol 1", "carol 3", "carol 4"]


def test_heads_find_a_loss_at_the_end_and_the_trail_gives_it_up(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    """Nothing follows carol's lost 2 and 3: her heads say she sent 3 and holds only 3,
    so 2 is lost at once, and 3 is asked for."""
    bob = make_daemon("bob")
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    _, seal = forged_sender(room)
    with RawClient(broker) as raw:
        topic = epoch_zero(PASSPHRASE, room).topic("mqchat/v1")
        raw.publish(topic, seal([text(1)]))
        assert tail.messages(1)[0]["text"] == "carol 1"
        raw.publish(topic, seal([Heads(77, 3, 3)]))
        lost = tail.wait_for(is_notice("lost"))
        assert (lost["count"], lost["ranges"]) == (1, [[2, 2]])
        wait_until(lambda: repair_status(bob)["missing"] == 1, "bob to wait for carol 3")
        raw.publish(topic, seal([text(3, repaired=True)]))
        assert tail.messages(1)[0]["text"] == "carol 3"
    assert repair_status(bob)["missing"] == 0


def test_repaired_duplicates_are_not_shown_twice(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    bob = make_daemon("bob")
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    _, seal = forged_sender(room)
    with RawClient(broker) as raw:
        topic = epoch_zero(PASSPHRASE, room).topic("mqchat/v1")
        raw.publish(topic, seal([text(1), text(2)]))
        assert [m["text"] for m in tail.messages(2)] == ["carol 1", "carol 2"]
        raw.publish(topic, seal([text(2, repaired=True), text(1, repaired=True)]))
        raw.publish(topic, seal([text(3)]))
        assert tail.messages(1)[0]["text"] == "carol 3"
    tail.assert_silent()
    assert bob.status()["dropped"].get("repaired_duplicate") == 2
    assert [m["text"] for m in history(bob, room)] == ["carol 1", "carol 2", "carol 3"]


@pytest.mark.parametrize("heard", [False, True])
def test_a_repair_from_before_we_heard_the_sender_is_not_shown(
    broker: Broker, make_daemon: MakeDaemon, room: str, heard: bool
) -> None:
    """Repairs go to the whole room: one of a stream we never tracked, from a sender
    never heard here, predates us and is dropped; from a sender heard before, it is a
    message we missed."""
    bob = make_daemon("bob")
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    _, seal = forged_sender(room)
    with RawClient(broker) as raw:
        topic = epoch_zero(PASSPHRASE, room).topic("mqchat/v1")
        if heard:
            raw.publish(topic, seal([text(1, stream=5)]))
            assert tail.messages(1)[0]["text"] == "carol 1"
        raw.publish(topic, seal([text(9, repaired=True)]))
        raw.publish(topic, seal([text(10)]))
        if heard:  # stream 77 is new, from a sender heard before: 1 to 8 are missing
            wait_until(lambda: repair_status(bob)["missing"] == 8, "bob to miss 1 to 8")
            assert repair_status(bob)["held"] == 2
        else:
            assert tail.messages(1)[0]["text"] == "carol 10"
            assert bob.status()["dropped"].get("repaired_unwanted") == 1
