"""Issue 22: repairs and control records that a hostile member or broker cannot turn
against the room, and repairs that do not wait for the sender to speak again.

A real mosquitto and real daemons; the hostile member is a forged sender (its own
Ed25519 key, batches sealed by hand with the room's key, as a member could), the
hostile broker a raw MQTT client that captures payloads and publishes them again.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from forge import epoch_zero
from forged_member import Forger, heads_of, texts_of
from harness import PASSPHRASE, Broker, Daemon, wait_until
from mqchat.client.ipc_client import Client
from mqchat.errors import ProtocolError
from mqchat.protocol.batch import open_batch
from mqchat.protocol.records import (
    Heads,
    Presence,
    PresenceState,
    Record,
    RepairRequest,
    Text,
)
from rawmqtt import RawClient

MakeDaemon = Callable[..., Daemon]


def test_an_idle_sender_answers_a_repair_request_at_once(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    """Item 8: alice sent three messages and is quiet; a request for them is answered
    within seconds, not at her next heads (10 s later) or her next message."""
    alice = make_daemon("alice")
    alice.join(room)
    carol = Forger(room)
    with RawClient(broker) as raw:
        alice.ok("send", room, "one", "two", "three")
        alice_key = wait_until(
            lambda: next((b.sender_key for b in carol.batches(raw) if b.records), None),
            "alice's texts on the broker",
        )
        sent = wait_until(lambda: texts_of(carol.batches(raw), alice_key, repaired=False), "texts")
        wait_until(lambda: heads_of(carol.batches(raw), alice_key), "alice's heads after 1 s")
        stream = sent[0].stream
        asked_at = time.monotonic()
        raw.publish(carol.topic, carol.seal([RepairRequest(alice_key, stream, ((1, 1),))]))
        repaired = wait_until(
            lambda: texts_of(carol.batches(raw), alice_key, repaired=True),
            "alice's answer",
            timeout=5,
        )
        assert time.monotonic() - asked_at < 5
        assert [t.seq for t in repaired] == [1]


def stream_of(raw: RawClient, forger: Forger, sender: str, count: int) -> tuple[bytes, int]:
    """(key, stream) of ``sender``'s texts, once ``count`` of them crossed the broker."""

    def seen() -> tuple[bytes, int] | None:
        texts = [
            (b.sender_key, r.stream)
            for b in forger.batches(raw)
            if b.sender_name == sender
            for r in b.records
            if isinstance(r, Text) and not r.repaired
        ]
        return texts[0] if len(texts) >= count else None

    found: tuple[bytes, int] = wait_until(seen, f"{count} texts of {sender} on the broker")
    return found


def lines(n: int, prefix: str) -> str:
    return "".join(f"{prefix} {i:04d}\n" for i in range(n))


def test_one_member_asking_again_and_again_spends_only_its_own_budget(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    """Items 1 and 2: mallory asks alice for all of her 3,000 messages 20 times in 2 s
    (each request newer than the last); alice republishes at most her per-requester
    budget (512 a second), and dave's small request in the middle is answered whole."""
    alice = make_daemon("alice")
    alice.join(room)
    mallory, dave = Forger(room, "mallory"), Forger(room, "dave")
    with RawClient(broker) as raw:
        alice.ok("send", room, input=lines(3000, "burst"))
        key, stream = stream_of(raw, mallory, "alice", 3000)
        started = time.monotonic()
        for i in range(20):
            raw.publish(mallory.topic, mallory.seal([RepairRequest(key, stream, ((1, 3000),))]))
            time.sleep(0.1)  # the attacker's pace, not a synchronisation
            if i == 10:
                raw.publish(dave.topic, dave.seal([RepairRequest(key, stream, ((2901, 2922),))]))
        elapsed = time.monotonic() - started
        wanted = set(range(2901, 2923))
        wait_until(
            lambda: wanted <= {t.seq for t in texts_of(mallory.batches(raw), key, repaired=True)},
            "dave's 22 numbers republished",
        )
    republished = alice.status()["repair"]["republished"]
    # 512 at once, 512 a second after, and dave's 22: the old code sent over 10,000.
    assert republished <= 512 * (2 + elapsed) + 22, republished


def pause_while(d: Daemon, action: Callable[[], None]) -> None:
    os.kill(d.pid, signal.SIGSTOP)
    try:
        action()
    finally:
        os.kill(d.pid, signal.SIGCONT)


def test_a_bogus_request_does_not_keep_a_real_gap_unrepaired(
    make_broker: Callable[..., Broker], make_daemon: MakeDaemon, room: str
) -> None:
    """Item 3: while mallory asks alice, every 0.2 s, for numbers alice never sent, bob's
    gap (the broker dropped alice's messages while bob was slow) is repaired anyway."""
    broker = make_broker(persistence=True, extra=("max_queued_messages 5",))
    alice, bob = make_daemon("alice", on=broker), make_daemon("bob", on=broker)
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    mallory = Forger(room, "mallory")
    with RawClient(broker) as raw:
        alice.ok("send", room, "hello")
        assert tail.messages(1)[0]["text"] == "hello"
        key, stream = stream_of(raw, mallory, "alice", 1)
        stop = threading.Event()

        def nag() -> None:
            while not stop.wait(0.2):
                bogus = RepairRequest(key, stream, ((1_000_000, 1_000_100),))
                raw.publish(mallory.topic, mallory.seal([bogus]))

        nagger = threading.Thread(target=nag, daemon=True)
        nagger.start()
        try:
            texts = [f"gap {i:02d}" for i in range(60)]

            def send() -> None:
                with Client(alice.runtime_dir, 30) as client:
                    for text in texts:
                        client.call("send", {"room": room, "text": text})

            pause_while(bob, send)
            got = tail.messages(len(texts), timeout=20)
        finally:
            stop.set()
            nagger.join()
    assert [m["text"] for m in got] == texts
    assert bob.status()["repair"]["repaired"] > 0, "the broker dropped nothing"


def test_invented_streams_and_far_heads_are_bounded_and_marked(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    """Item 4: heads for 1,000 invented streams make bob track at most 4 of them; a
    heads claiming 2^53 numbers is dropped; a loss claimed by a key posing as alice
    (pinned to another key) is marked as such."""
    bob = make_daemon("bob")
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    carol, fake_alice, alice = Forger(room), Forger(room, "alice"), Forger(room, "alice")
    with RawClient(broker) as raw:
        raw.publish(alice.topic, alice.seal([Text(1, 1, os.urandom(16), 1_900_000_000_000, "hi")]))
        raw.publish(carol.topic, carol.seal([Text(1, 1, os.urandom(16), 1_900_000_000_000, "c")]))
        assert [m["text"] for m in tail.messages(2)] == ["hi", "c"]
        for first in range(2, 1002, 200):
            heads: list[Record] = [Heads(s, 1, 4096) for s in range(first, first + 200)]
            raw.publish(carol.topic, carol.seal(heads))
        fake = Text(1, 1, os.urandom(16), 1_900_000_000_000, "not alice")
        raw.publish(fake_alice.topic, fake_alice.seal([fake]))
        assert tail.messages(1)[0]["verified"] is False
        raw.publish(fake_alice.topic, fake_alice.seal([Heads(2, 2**53 - 1, 2**53 - 1)]))
        raw.publish(fake_alice.topic, fake_alice.seal([Heads(3, 41, 41)]))
        lost = tail.wait_for(is_notice("lost"))
    assert lost["count"] == 40 and lost["verified"] is False
    assert "not pinned to alice" in lost["text"]
    status = bob.status()
    assert status["dropped"].get("too_many_streams", 0) >= 990
    assert status["dropped"].get("heads_too_far") == 1
    assert status["repair"]["missing"] <= 4 * 4096 + 1


def is_notice(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "notice" and e.get("kind") == kind


def who(d: Daemon, room: str) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = json.loads(d.ok("who", room, "--json"))["members"]
    return members


def online(d: Daemon, room: str, name: str) -> bool | None:
    found = [m["online"] for m in who(d, room) if m["name"] == name and not m.get("you")]
    return found[0] if found else None


def presence_payloads(
    raw: RawClient, forger: Forger, sender: str, state: PresenceState
) -> list[bytes]:
    found = []
    for payload in raw.on_topic(forger.topic):
        try:
            batch = open_batch(payload, forger.keys)
        except ProtocolError:
            continue
        if batch.sender_name == sender and Presence(state) in [
            Presence(r.state) for r in batch.records if isinstance(r, Presence)
        ]:
            found.append(payload)
    return found


def replayed(d: Daemon, what: str = "control") -> int:
    count: int = d.status()["dropped"].get(f"replayed_{what}", 0)
    return count


def test_the_broker_cannot_replay_presence_or_a_repair_request(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    """Item 5, as the broker: a captured "leaving" replayed while bob runs, an old
    "online" replayed after he stopped, and a repair request replayed three times
    change nothing; each replay is counted."""
    alice, bob = make_daemon("alice"), make_daemon("bob")
    carol = Forger(room)
    with RawClient(broker) as raw:
        alice.join(room)
        bob.join(room)
        wait_until(lambda: online(alice, room, "bob"), "alice to see bob online")
        old_online = wait_until(
            lambda: presence_payloads(raw, carol, "bob", PresenceState.ONLINE), "bob's online"
        )[0]
        bob.stop()
        leaving = wait_until(
            lambda: presence_payloads(raw, carol, "bob", PresenceState.LEAVING), "bob's leaving"
        )[0]
        wait_until(lambda: online(alice, room, "bob") is False, "alice to see bob leave")
        raw.publish(carol.topic, old_online)
        wait_until(lambda: replayed(alice, "presence") == 1, "the old online refused")
        assert online(alice, room, "bob") is False
        bob.start()
        wait_until(lambda: online(alice, room, "bob"), "alice to see bob back")
        raw.publish(carol.topic, leaving)
        wait_until(lambda: replayed(alice, "presence") == 2, "the old leaving refused")
        assert online(alice, room, "bob") is True

        alice.ok("send", room, "one")
        key, stream = stream_of(raw, carol, "alice", 1)
        request = carol.seal([RepairRequest(key, stream, ((1, 1),))])
        raw.publish(carol.topic, request)
        wait_until(lambda: alice.status()["repair"]["republished"] == 1, "alice's answer")
        for n in range(3):
            time.sleep(0.6)  # the broker's pace: past the 0.5 s in which a repeat is free
            raw.publish(carol.topic, request)
            wait_until(lambda n=n: replayed(alice) == 1 + n, "the replayed request refused")
    assert alice.status()["repair"]["republished"] == 1


def test_throw_away_identities_cannot_grow_the_member_list(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    """Item 6: 300 throw-away keys saying "online" leave at most 256 member rows."""
    alice = make_daemon("alice")
    alice.join(room)
    with RawClient(broker) as raw:
        keys = epoch_zero(PASSPHRASE, room)
        for i in range(300):
            f = Forger(room, f"ghost{i}", keys)
            raw.publish(f.topic, f.seal([Presence(PresenceState.ONLINE)]))
        wait_until(
            lambda: alice.status()["dropped"].get("too_many_members", 0) == 300 - 256,
            "the ghosts past 256 refused",
        )
    assert len(who(alice, room)) == 256 + 1  # and alice herself


def test_a_member_back_online_is_repaired_without_waiting_for_the_sender(
    make_broker: Callable[..., Broker], make_daemon: MakeDaemon, room: str
) -> None:
    """Item 9: bob is away while alice sends 5, and the broker (no persistence) loses
    its queue when it restarts; bob comes back and gets all 5 within seconds, though
    alice says nothing more."""
    broker = make_broker(persistence=False)
    alice, bob = make_daemon("alice", on=broker), make_daemon("bob", on=broker)
    alice.join(room)
    bob.join(room)
    tail = bob.tail(room, "--since", "0")
    alice.ok("send", room, "before")
    assert tail.messages(1)[0]["text"] == "before"
    tail.stop()
    bob.stop()
    texts = [f"away {i}" for i in range(5)]
    for text in texts:
        alice.ok("send", room, text)
    broker.stop()
    broker.start()
    alice.wait_connected()
    # Past alice's heads 1 s after her last send: her next is 10 s after it, later
    # than the 5 s bob is given.
    time.sleep(1.5)
    bob.start()
    back = bob.tail(room, "--since", "1")
    got = back.messages(5, timeout=5)
    assert [m["text"] for m in got] == texts
