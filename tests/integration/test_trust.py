"""Issue 5: sender identities pinned on first use, and replays dropped across restarts."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from forge import epoch_zero, texts_in
from harness import PASSPHRASE, Broker, Daemon, wait_until
from mqchat.protocol.batch import seal_batch
from mqchat.protocol.records import Text
from mqchat.protocol.signing import SigningIdentity, format_fingerprint
from rawmqtt import RawClient, first_payload, text_topic

MakeDaemon = Callable[..., Daemon]


def dropped(d: Daemon, reason: str) -> int:
    return int(d.status()["dropped"].get(reason, 0))


def test_new_key_under_a_pinned_name_is_unverified_until_trusted(
    make_daemon: MakeDaemon, room: str
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    forger = make_daemon("alice")  # same name and passphrase, another identity
    for d in (alice, bob, forger):
        d.join(room)
    tail = bob.tail(room)

    alice.ok("send", room, "the real alice")
    first = tail.messages(1)[0]
    assert first["sender"] == "alice" and first["verified"] is True

    forger.ok("send", room, "trust me, I am alice")
    notice = tail.wait_for(lambda e: e["type"] == "notice" and e.get("kind") == "key_changed")
    forged_fp = json.loads(forger.ok("identity", "--json"))["fingerprint"]
    assert notice["sender"] == "alice" and notice["fingerprint"] == forged_fp
    assert f"chatctl trust {room} alice FINGERPRINT" in notice["text"]
    assert format_fingerprint(forged_fp) in notice["text"]
    forged = tail.messages(1)[0]
    assert forged["text"] == "trust me, I am alice"
    assert forged["sender"] == "alice" and forged["verified"] is False
    assert forged["fingerprint"] == forged_fp != first["fingerprint"]

    plain = bob.ok("tail", room, "--no-follow").splitlines()
    assert plain[0].endswith("<alice> the real alice")
    assert plain[1].endswith("<alice?> trust me, I am alice")

    # The pin holds until the user names the new key by the fingerprint they checked.
    listing = bob.ctl("trust", room, "alice")
    assert listing.returncode == 1 and "1 key not trusted" in listing.stderr
    assert format_fingerprint(forged_fp) in listing.stdout
    assert format_fingerprint(first["fingerprint"]) in listing.stdout
    out = bob.ok("trust", room, "alice", format_fingerprint(forged_fp))
    assert format_fingerprint(forged_fp) in out and "alice" in out
    forger.ok("send", room, "now trusted")
    later = tail.messages(1)[0]
    assert later["text"] == "now trusted" and later["verified"] is True
    # The old key is now the stranger: its next message is the unverified one.
    alice.ok("send", room, "the old key again")
    tail.wait_for(lambda e: e["type"] == "notice" and e.get("kind") == "key_changed")
    old = tail.messages(1)[0]
    assert old["text"] == "the old key again" and old["verified"] is False

    # A name that never spoke has no key to trust: a clear refusal.
    result = bob.ctl("trust", room, "carol")
    assert result.returncode == 1
    assert "no key has spoken as carol" in result.stderr and "Traceback" not in result.stderr


def test_identity_shows_own_fingerprint(make_daemon: MakeDaemon) -> None:
    alice = make_daemon("alice")
    fp = alice.status()["fingerprint"]
    assert len(fp) == 64  # all of SHA-256: what `trust` takes
    assert alice.ok("identity").strip() == f"alice  {format_fingerprint(fp)}"
    assert json.loads(alice.ok("identity", "--json"))["fingerprint"] == fp


def test_replayed_payloads_are_dropped_also_after_restart(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    topic = text_topic(room, PASSPHRASE)
    with RawClient(broker) as raw:
        alice, bob = make_daemon("alice"), make_daemon("bob")
        tail, payload = first_payload(raw, alice, bob, room, "say it once")

        # A version 2 text is judged by its sender's stream, which holds (stream, seq 1).
        raw.publish(topic, payload)
        wait_until(lambda: dropped(bob, "duplicate") == 1, "bob to drop the republished payload")
        alice.ok("send", room, "second")
        assert tail.messages(1)[0]["text"] == "second"

        bob.stop()
        bob.start()
        raw.publish(topic, payload)
        wait_until(lambda: dropped(bob, "duplicate") == 1, "restarted bob to drop the replay")

        # A fresh id does not help: alice's (stream, seq 1) was seen before the restart too.
        identity = SigningIdentity.from_private_bytes(
            (alice.state_dir / "identity.key").read_bytes()
        )
        keys = epoch_zero(PASSPHRASE, room)
        (original,) = texts_in(payload, keys)
        now = time.time_ns() // 1_000_000
        resealed = seal_batch(
            keys,
            identity,
            name="alice",
            records=[Text(original.stream, original.seq, os.urandom(16), now, "say it once")],
            sent_ms=now,
            random=os.urandom,
        )
        raw.publish(topic, resealed)
        wait_until(lambda: dropped(bob, "duplicate") == 2, "bob to drop a replayed sequence number")

        tail = bob.tail(room)
        alice.ok("send", room, "third")
        assert tail.messages(3)[-1]["text"] == "third"
    texts = [
        json.loads(line)["text"]
        for line in bob.ok("tail", room, "--json", "--no-follow").splitlines()
    ]
    assert texts == ["say it once", "second", "third"]


def test_a_member_cannot_silence_another_by_taking_its_message_id(
    broker: Broker, make_daemon: MakeDaemon, room: str
) -> None:
    """An insider who sees alice's text first (the broker delivers it to her
    sooner, or holds it back from bob) publishes a text of her own under the same
    id. A version 2 text is judged by its sender's stream, not by its id: bob
    shows both. Until 2026-12-08 he dropped alice's as a duplicate, and every
    repair of it too, so it was lost for good.

    Both texts are sealed here with the members' own keys (a passphrase room: its
    passphrase makes a member), so that no heads or presence of a daemon of
    theirs reaches bob first and tells him of alice's stream."""
    topic = text_topic(room, PASSPHRASE)
    keys = epoch_zero(PASSPHRASE, room)
    bob = make_daemon("bob")
    bob.join(room)
    tail = bob.tail(room)

    def say(who: SigningIdentity, name: str, record: Text) -> None:
        raw.publish(
            topic,
            seal_batch(keys, who, name=name, records=[record], sent_ms=now, random=os.urandom),
        )

    with RawClient(broker) as raw:
        now = time.time_ns() // 1_000_000
        carol = SigningIdentity.generate(os.urandom)
        say(carol, "carol", Text(3, 1, os.urandom(16), now, "bob hears the room"))
        assert tail.messages(1)[0]["text"] == "bob hears the room"  # he is subscribed

        alice, mallory = SigningIdentity.generate(os.urandom), SigningIdentity.generate(os.urandom)
        taken = os.urandom(16)  # alice's id, which mallory saw first
        say(mallory, "mallory", Text(7, 1, taken, now, "same id, first"))
        say(alice, "alice", Text(5, 1, taken, now, "the real one"))
        shown = tail.messages(2)
    assert [(m["sender"], m["text"]) for m in shown] == [
        ("mallory", "same id, first"),
        ("alice", "the real one"),
    ]
    assert {m["id"] for m in shown} == {taken.hex()}
    assert dropped(bob, "duplicate") == 0
