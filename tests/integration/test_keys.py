"""Issue 16, key management: random-key rooms, invites, member keys, rekeys, removal,
races and grace periods. Real daemons and a real mosquitto.

The daemons here end an old epoch's grace period after GRACE_S seconds (the
documented default is 24 hours; MQCHAT_GRACE_PERIOD sets it).
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import Daemon, Terminal, command, wait_until
from mqchat.errors import ProtocolError
from mqchat.protocol.batch import open_batch, seal_batch
from mqchat.protocol.epochs import EpochKeys, new_epoch_secret, passphrase_epoch_zero
from mqchat.protocol.invite import parse_invite
from mqchat.protocol.kdf import RoomKeys
from mqchat.protocol.keybox import MemberKeyPair, build_rekey
from mqchat.protocol.records import KeyBox, Rekey
from mqchat.protocol.signing import SigningIdentity
from rawmqtt import RawClient

MakeDaemon = Callable[..., Daemon]
GRACE_S = 4


@pytest.fixture
def make_member(make_daemon: MakeDaemon) -> Callable[..., Daemon]:
    def make(name: str, grace: int = 3600, **kw: Any) -> Daemon:
        return make_daemon(name, extra_env={"MQCHAT_GRACE_PERIOD": str(grace)}, **kw)

    return make


def members(d: Daemon, room: str) -> dict[str, Any]:
    return dict(json.loads(d.ok("members", room, "--json")))


def keyed(d: Daemon, room: str, *names: str) -> bool:
    """``d`` has seen the member key of each of ``names`` in ``room``."""
    seen = {m["name"] for m in members(d, room)["members"] if m["member_key"]}
    return set(names) <= seen


def tag(d: Daemon, room: str) -> str:
    return str(members(d, room)["tag"])


def invite(d: Daemon, room: str) -> str:
    result = d.ctl("invite", room)
    assert result.returncode == 0, result.stderr
    assert "SECRET" in result.stderr
    line = result.stdout.strip()
    assert line.startswith("mqchat:invite?") and "\n" not in line
    return line


def join_by_invite(d: Daemon, line: str) -> str:
    return d.ok("join", "--invite", input=line + "\n")


def drops(d: Daemon) -> dict[str, int]:
    return dict(d.status()["dropped"])


def held_secrets(d: Daemon) -> list[tuple[bytes, int]]:
    """Every epoch secret ``d``'s store holds, as carol's daemon would have them."""
    db = sqlite3.connect(d.state_dir / "mqchat.db")
    try:
        rows = db.execute(
            "SELECT secret, epoch FROM room_epochs WHERE secret IS NOT NULL"
        ).fetchall()
        v1 = db.execute("SELECT key_a, key_b FROM rooms WHERE key_a != x''").fetchall()
    finally:
        db.close()
    found = [(bytes(s), e) for s, e in rows]
    found += [(passphrase_epoch_zero(RoomKeys(bytes(a), bytes(b or b""))), 0) for a, b in v1]
    return found


def opens(payload: bytes, secrets: list[tuple[bytes, int]]) -> bool:
    for secret, epoch in secrets:
        for e in {epoch, epoch + 1}:
            try:
                open_batch(payload, EpochKeys(secret, e))
            except ProtocolError:
                continue
            return True
    return False


def room_of_three(make_member: Callable[..., Daemon], room: str, **kw: Any) -> list[Daemon]:
    alice, bob, carol = (make_member(n, **kw) for n in ("alice", "bob", "carol"))
    assert "created" in alice.ok("create", room)
    line = invite(alice, room)
    join_by_invite(bob, line)
    join_by_invite(carol, line)
    carol.tail(room, "--since", "0")  # subscribed well before any rekey: carol.tails[0]
    for d, others in ((alice, ("bob", "carol")), (bob, ("alice", "carol"))):
        wait_until(lambda d=d, o=others: keyed(d, room, *o), f"{d.name} to see {others}' keys")
    wait_until(lambda: keyed(carol, room, "alice", "bob"), "carol to see the others' keys")
    return [alice, bob, carol]


def test_create_invite_join_and_members(make_member: Callable[..., Daemon], room: str) -> None:
    alice, bob = make_member("alice"), make_member("bob")
    out = alice.ok("create", room, "--cipher", "chacha20-poly1305")
    assert out.startswith(f"created {room} (chacha20-poly1305")
    line = invite(alice, room)
    parsed = parse_invite(line)
    assert parsed.room == room and parsed.epoch == 0 and parsed.cipher == "chacha20-poly1305"
    assert parsed.inviter_fingerprint == alice.status()["fingerprint"]
    joined = join_by_invite(bob, line)
    assert f"joined {room}" in joined and "by invite" in joined
    assert "already in" in join_by_invite(bob, line)
    wait_until(lambda: keyed(alice, room, "bob"), "alice to see bob's member key")
    wait_until(lambda: keyed(bob, room, "alice"), "bob to see alice's member key")
    # bob pinned alice from the invite: her key shows as verified at once.
    who = json.loads(bob.ok("who", room, "--json"))
    seen = next(m for m in who["members"] if m["name"] == "alice")
    assert seen["verified"] is True
    listing = alice.ok("members", room)
    assert "bob" in listing and "(you)" in listing and "NO MEMBER KEY" not in listing
    assert tag(alice, room) == tag(bob, room)
    # The invite file way: 0600 only.
    carol = make_member("carol")
    path = carol.home / "invite"
    path.write_text(line + "\n")
    path.chmod(0o644)
    loose = carol.ctl("join", "--invite-file", str(path))
    assert loose.returncode == 1 and "chmod 600" in loose.stderr, loose.stderr
    path.chmod(0o600)
    assert f"joined {room}" in carol.ok("join", "--invite-file", str(path))
    # A created room's name is taken: create again is refused, in one line.
    again = alice.ctl("create", room)
    assert again.returncode == 1 and "already joined" in again.stderr
    assert "Traceback" not in again.stderr


def _altered(line: str) -> list[tuple[str, str]]:
    secret_at = line.index("&secret=") + len("&secret=")
    flipped = line[:secret_at] + ("A" if line[secret_at] != "A" else "B") + line[secret_at + 1 :]
    return [
        ("truncated", line[: len(line) // 2]),
        ("truncated", line[: line.index("&check=")]),
        ("does not match", flipped),
        ("does not match", line.replace("room=", "room=x", 1)),
        ("not an mqchat invite", "https://example.com/" + line),
        ("spaces", line[:20] + " " + line[20:]),
    ]


def test_a_malformed_truncated_or_altered_invite_is_refused(
    make_member: Callable[..., Daemon], room: str
) -> None:
    alice, bob = make_member("alice"), make_member("bob")
    alice.ok("create", room)
    line = invite(alice, room)
    for reason, bad in _altered(line):
        result = bob.ctl("join", "--invite", input=bad + "\n")
        assert result.returncode == 1, (bad, result.stderr)
        assert reason in result.stderr and result.stderr.startswith("ERROR: ")
        assert result.stderr.count("\n") == 1, result.stderr
    # Never from argv: an invite given as ROOM is refused before anything is sent.
    on_argv = bob.ctl("join", line)
    assert on_argv.returncode == 2 and "never be on the command line" in on_argv.stderr
    with_room = bob.ctl("join", "--invite", room, input=line + "\n")
    assert with_room.returncode == 2 and "takes no ROOM" in with_room.stderr
    assert json.loads(bob.ok("rooms", "--json")) == []


def test_rekey_moves_everyone_to_a_new_epoch_and_topic(
    make_member: Callable[..., Daemon], room: str
) -> None:
    alice, bob, carol = room_of_three(make_member, room)
    old = tag(alice, room)
    out = alice.ok("rekey", room)
    assert "epoch 1" in out and "bob" in out and "carol" in out
    new = tag(alice, room)
    assert new != old
    for d in (bob, carol):
        wait_until(lambda d=d: tag(d, room) == new, f"{d.name} to switch to epoch 1")
        info = members(d, room)
        assert info["epoch"] == 1 and [g["tag"] for g in info["grace"]] == [old]
    notice = carol.tails[0].wait_for(lambda e: e["type"] == "notice" and e["kind"] == "rekeyed")
    assert notice["epoch"] == 1 and notice["sender"] == "alice"
    # The new epoch's members announce themselves there.
    wait_until(lambda: keyed(bob, room, "alice", "carol"), "bob to hear both on epoch 1")


def test_rekey_remove_leaves_the_removed_member_out(
    make_member: Callable[..., Daemon], room: str, broker: Any
) -> None:
    alice, bob, carol = room_of_three(make_member, room)
    carol_tail = carol.tails[0]
    with RawClient(broker) as raw:
        out = alice.ok("rekey", room, "--remove", "carol")
        assert "removed: carol" in out
        new = tag(alice, room)
        wait_until(lambda: tag(bob, room) == new, "bob to switch")
        left = carol_tail.wait_for(lambda e: e["type"] == "notice" and e["kind"] == "removed")
        assert left["sender"] == "alice" and "alice removed you" in left["text"]
        refused = carol.ctl("send", room, "still here?")
        assert refused.returncode == 1 and "alice removed you" in refused.stderr
        assert tag(carol, room) != new  # carol cannot even find the new topic
        names = [m["name"] for m in members(alice, room)["members"]]
        assert "carol" not in names
        wait_until(lambda: keyed(alice, room, "bob"), "alice to hear bob on epoch 1")
        alice.ok("rekey", room)  # the next rekey leaves carol out too
        newer = tag(alice, room)
        wait_until(lambda: tag(alice, room) == newer, "alice to switch to epoch 2")
        captured = [p for t, p in raw.captured if t.endswith(new) or t.endswith(newer)]
    assert captured, "nothing was captured on the new epochs' topics"
    secrets = held_secrets(carol)
    assert secrets
    assert not any(opens(p, secrets) for p in captured)
    assert members(carol, room)["epoch"] == 0  # carol stayed behind


def test_an_offline_member_catches_up_on_a_rekey(
    make_member: Callable[..., Daemon], room: str
) -> None:
    alice, bob, carol = room_of_three(make_member, room)
    carol.stop()
    alice.ok("rekey", room)
    new = tag(alice, room)
    wait_until(lambda: tag(bob, room) == new, "bob to switch")
    carol.start()
    wait_until(lambda: tag(carol, room) == new, "carol to find the rekey in her session")


def test_two_rekeys_at_once_by_one_admin_converge(
    make_member: Callable[..., Daemon], room: str
) -> None:
    alice, bob, carol = room_of_three(make_member, room)
    procs = [
        subprocess.Popen(
            [command("chatctl"), "rekey", room],
            env=d.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for d in (alice, alice)
    ]
    for p in procs:
        _, stderr = p.communicate(timeout=30)
        assert p.returncode == 0, stderr

    def converged() -> bool:
        return len({tag(d, room) for d in (alice, bob, carol)}) == 1

    # The daemon makes one after the other: epoch 2 on every member.
    wait_until(converged, "the three to agree on one epoch")
    assert members(carol, room)["epoch"] in (1, 2)


def test_an_old_epoch_payload_after_the_grace_period_is_dropped_and_counted(
    make_member: Callable[..., Daemon], room: str, broker: Any
) -> None:
    alice, bob = make_member("alice", GRACE_S), make_member("bob", GRACE_S)
    with RawClient(broker) as raw:
        bob.ok("create", room)  # bob is the admin who rekeys
        old = tag(bob, room)
        join_by_invite(alice, invite(bob, room))
        wait_until(lambda: keyed(bob, room, "alice"), "bob to see alice")
        wait_until(lambda: keyed(alice, room, "bob"), "alice to see bob")
        old_topic = next(t for t, _ in raw.captured if t.endswith(old))
        replay = raw.on_topic(old_topic)[0]
        bob.ok("rekey", room)  # bob's clock starts first
        wait_until(lambda: members(alice, room)["epoch"] == 1, "alice to switch")
        old_topic = next(t for t, _ in raw.captured if t.endswith(old))
        replay = raw.on_topic(old_topic)[-1]
        assert members(alice, room)["grace"][0]["tag"] == old
        alice.stop()  # her session keeps epoch 0's subscription
        raw.publish(old_topic, replay)  # alice's persistent session holds it
        wait_until(lambda: not members(bob, room)["grace"], "bob's grace period to end", 20)
        before = drops(bob).get("old_epoch", 0)
        raw.publish(old_topic, replay)  # bob left the topic: he never sees it
        assert drops(bob).get("old_epoch", 0) == before
        # alice's grace period ends while she is away (it began after bob's).
        wait_until(lambda: _grace_over(alice), "alice's grace to pass", 20)
        alice.start()
        wait_until(lambda: drops(alice).get("old_epoch", 0) >= 1, "alice to count it")
        assert members(alice, room)["grace"] == []


def _grace_over(d: Daemon) -> bool:
    db = sqlite3.connect(d.state_dir / "mqchat.db")
    try:
        row = db.execute("SELECT MAX(until_ms) FROM room_epochs WHERE state = 'grace'").fetchone()
    finally:
        db.close()
    return row[0] is None or row[0] < time.time() * 1000


def test_a_passphrase_room_can_be_rekeyed_and_the_passphrase_then_opens_nothing_new(
    make_member: Callable[..., Daemon], room: str, broker: Any
) -> None:
    alice, bob = make_member("alice"), make_member("bob")
    alice.join(room)
    bob.join(room)
    wait_until(lambda: keyed(alice, room, "bob"), "alice to see bob")
    before = tag(alice, room)
    with RawClient(broker) as raw:
        alice.ok("rekey", room)
        new = tag(alice, room)
        wait_until(lambda: tag(bob, room) == new, "bob to switch")
        wait_until(lambda: raw.on_topic(f"mqchat/v1/{new}"), "a batch on the new epoch")
        payloads = raw.on_topic(f"mqchat/v1/{new}")
    assert new != before
    zero = passphrase_epoch_zero(_passphrase_keys(alice, room))
    assert not any(opens(p, [(zero, 0)]) for p in payloads)
    # A passphrase room's invite carries the current epoch, not the passphrase.
    assert parse_invite(invite(alice, room)).epoch == 1


def _passphrase_keys(d: Daemon, room: str) -> RoomKeys:
    db = sqlite3.connect(d.state_dir / "mqchat.db")
    try:
        a, b = db.execute("SELECT key_a, key_b FROM rooms WHERE name = ?", (room,)).fetchone()
    finally:
        db.close()
    return RoomKeys(bytes(a), bytes(b))


def test_no_secret_reaches_a_log_or_the_broker_in_the_clear(
    make_member: Callable[..., Daemon], room: str, broker: Any
) -> None:
    with RawClient(broker) as raw:
        alice, bob, carol = room_of_three(make_member, room)
        line = invite(alice, room)
        alice.ok("rekey", room, "--remove", "carol")
        wait_until(lambda: members(bob, room)["epoch"] == 1, "bob to switch")
        secrets = [s for s, _ in held_secrets(alice)]
        secrets.append(parse_invite(line).secret)
        wire = b"".join(p for _, p in raw.captured)
    assert len(secrets) >= 2
    logs = "".join(d.log() for d in (alice, bob, carol)) + _mosquitto_log(broker)
    for secret in secrets:
        for form in (secret.hex(), base64.urlsafe_b64encode(secret).decode().rstrip("=")):
            assert form not in logs
        assert secret not in wire
    assert "mqchat:invite?" not in logs


def _mosquitto_log(broker: Any) -> str:
    path = Path(broker.dir) / "mosquitto.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_rekey_names_members_it_cannot_reach_and_refuses_unknown_names(
    make_member: Callable[..., Daemon], room: str
) -> None:
    alice = make_member("alice")
    alice.ok("create", room)
    unknown = alice.ctl("rekey", room, "--remove", "mallory")
    assert unknown.returncode == 1 and "no member named 'mallory'" in unknown.stderr
    self_removal = alice.ctl("rekey", room, "--remove", "alice")
    assert self_removal.returncode == 1 and "leave" in self_removal.stderr
    bare = alice.ctl("rekey", room, "bob")
    assert bare.returncode == 2 and "--remove" in bare.stderr
    assert "epoch 1" in alice.ok("rekey", room)
    legacy_room = f"{room}-legacy"
    alice.join(legacy_room, "a legacy passphrase", "--legacy")
    refused = alice.ctl("invite", legacy_room)
    assert refused.returncode == 1 and "legacy" in refused.stderr


def test_a_rekey_with_a_tampered_key_box_is_refused_and_counted(
    make_member: Callable[..., Daemon], room: str, broker: Any
) -> None:
    """Signed by someone who holds the epoch (here: from the invite), but bob's box is
    altered: bob cannot open it, counts it, and stays where he is."""
    alice, bob = make_member("alice"), make_member("bob")
    alice.ok("create", room)
    line = invite(alice, room)
    join_by_invite(bob, line)
    parsed = parse_invite(line)
    keys = EpochKeys(parsed.secret, parsed.epoch)
    mallory = SigningIdentity.generate(os.urandom)
    bob_seed = (bob.state_dir / "identity.key").read_bytes()
    bob_x = MemberKeyPair.from_identity(SigningIdentity.from_private_bytes(bob_seed)).public_key
    good = build_rekey(
        new_epoch_secret(os.urandom),
        [bob_x],
        tag=keys.tag,
        new_epoch=1,
        rekeyer_key=mallory.public_key,
        random=os.urandom,
    )
    box = good.boxes[0]
    sealed = bytes([box.sealed[0] ^ 1]) + box.sealed[1:]
    tampered = Rekey(1, (KeyBox(box.recipient, box.ephemeral, sealed),))
    payload = seal_batch(
        keys, mallory, name="mallory", records=[tampered], sent_ms=int(time.time() * 1000),
        random=os.urandom,
    )  # fmt: skip
    wait_until(lambda: keyed(bob, room, "alice"), "bob to hold the room's state")
    with RawClient(broker) as raw:
        raw.publish(keys.topic(parsed.topic_prefix), payload)
    # A rekey without a commit (a daemon from before the membership model, or someone
    # who merely holds the key) moves nobody.
    wait_until(lambda: drops(bob).get("rekey_without_commit", 0) == 1, "bob to refuse it")
    assert members(bob, room)["epoch"] == 0
    assert tag(bob, room) == tag(alice, room)


def test_join_invite_asks_with_a_hidden_prompt_on_a_terminal(
    make_member: Callable[..., Daemon], room: str
) -> None:
    alice, bob = make_member("alice"), make_member("bob")
    alice.ok("create", room)
    line = invite(alice, room)
    term = Terminal([command("chatctl"), "join", "--invite"], bob.env)
    term.read_until(b"Invite: ")
    term.type(line + "\n")
    screen = term.read_until(None)  # to the end of its output
    assert f"joined {room}".encode() in screen and b"inviter's key" in screen
    assert line.encode() not in screen  # not echoed
    assert term.wait() == 0
    # leave forgets the room's secrets; the same invite joins it again.
    bob.ok("leave", room)
    db = sqlite3.connect(bob.state_dir / "mqchat.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM room_epochs").fetchone()[0] == 0
    finally:
        db.close()
    assert f"joined {room}" in join_by_invite(bob, line)


def say(d: Daemon, room: str, text: str) -> None:
    d.ok("send", room, text)


def texts(d: Daemon, room: str) -> list[str]:
    """What ``d`` stored and shows of ``room``, oldest first."""
    out = d.ok("tail", room, "-n", "1000", "--no-follow", "--json")
    return [json.loads(line)["text"] for line in out.splitlines() if line]


def shows(d: Daemon, room: str, *wanted: str) -> bool:
    return set(wanted) <= set(texts(d, room))


def test_three_chat_in_a_created_room_and_keep_chatting_after_a_rekey(
    make_member: Callable[..., Daemon], room: str
) -> None:
    alice, bob, carol = room_of_three(make_member, room)
    bob_tail = bob.tail(room, "--since", "0")
    say(alice, room, "hello, epoch 0")
    got = bob_tail.messages(1)[0]
    assert got["text"] == "hello, epoch 0" and got["sender"] == "alice"
    assert got["verified"] is True  # bob pinned alice from the invite
    wait_until(lambda: shows(carol, room, "hello, epoch 0"), "carol to get it")
    alice.ok("rekey", room)
    new = tag(alice, room)
    for d in (bob, carol):
        wait_until(lambda d=d: tag(d, room) == new, f"{d.name} to switch")
    said = [f"{d.name} on epoch 1" for d in (bob, carol, alice)]
    for d, text in zip((bob, carol, alice), said, strict=True):
        say(d, room, text)
    for d in (alice, bob, carol):
        wait_until(lambda d=d: shows(d, room, *said), f"{d.name} to get all of epoch 1")


def test_after_remove_alice_and_bob_chat_and_carol_receives_nothing(
    make_member: Callable[..., Daemon], room: str
) -> None:
    alice, bob, carol = room_of_three(make_member, room)
    say(alice, room, "before")
    wait_until(lambda: shows(carol, room, "before"), "carol to get what came before")
    alice.ok("rekey", room, "--remove", "carol")
    wait_until(lambda: tag(bob, room) == tag(alice, room), "bob to switch")
    carol.tails[0].wait_for(lambda e: e["type"] == "notice" and e["kind"] == "removed")
    say(alice, room, "carol cannot read this")
    say(bob, room, "nor this")
    wait_until(lambda: shows(bob, room, "carol cannot read this"), "bob to get alice's")
    wait_until(lambda: shows(alice, room, "nor this"), "alice to get bob's")
    # What carol still says in the old epoch is not heard (alice and bob keep it open
    # for the grace period, but only for the members of the new one).
    assert carol.ctl("send", room, "still here?").returncode == 1
    say(alice, room, "after carol's")
    wait_until(lambda: shows(bob, room, "after carol's"), "bob to get alice's last")
    assert "still here?" not in texts(bob, room) + texts(alice, room)
    # carol's daemon stored and showed nothing said after her removal.
    assert texts(carol, room) == ["before"]
