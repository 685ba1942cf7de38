"""Room membership against an insider (issue 21): three real daemons, a real mosquitto.

A member holds the room key and its own signing key and can publish anything the
format allows; an ex-member holds old keys; the broker drops and replays. Each
test is one class of attack from docs/security.md's table, or a member left behind.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest

from harness import Daemon, wait_until
from integration.test_keys import drops, invite, join_by_invite, members, tag, texts
from mqchat.protocol.batch import seal_batch
from mqchat.protocol.epochs import EpochKeys, new_epoch_secret
from mqchat.protocol.invite import parse_invite
from mqchat.protocol.keybox import MemberKeyPair, build_rekey
from mqchat.protocol.membership import Commit, Op, OpKind
from mqchat.protocol.roster import Role, commitment
from mqchat.protocol.signing import SigningIdentity
from rawmqtt import RawClient

MakeMember = Callable[..., Daemon]


@pytest.fixture
def make_member(make_daemon: Callable[..., Daemon]) -> MakeMember:
    def make(name: str, grace: int = 3600, **kw: Any) -> Daemon:
        return make_daemon(name, extra_env={"MQCHAT_GRACE_PERIOD": str(grace)}, **kw)

    return make


def _secrets(d: Daemon, room: str) -> dict[int, tuple[bytes, str]]:
    db = sqlite3.connect(d.state_dir / "mqchat.db")
    try:
        rows = db.execute(
            "SELECT epoch, secret, topic FROM room_epochs WHERE room = ? AND secret IS NOT NULL",
            (room,),
        ).fetchall()
    finally:
        db.close()
    return {e: (bytes(s), t) for e, s, t in rows}


def _identity(d: Daemon) -> SigningIdentity:
    return SigningIdentity.from_private_bytes((d.state_dir / "identity.key").read_bytes())


def _state_hash(d: Daemon, room: str) -> bytes:
    return bytes.fromhex(members(d, room)["state"])


def _on(make_daemon: Callable[..., Daemon], broker: Any) -> MakeMember:
    """Members on a broker of the test's own (to pause or restart it)."""
    return lambda name: make_daemon(name, on=broker, extra_env={"MQCHAT_GRACE_PERIOD": "3600"})


def three_members(make_member: MakeMember, room: str) -> list[Daemon]:
    """alice creates and invites bob and carol; her first rekey makes them members."""
    alice, bob, carol = (make_member(n) for n in ("alice", "bob", "carol"))
    alice.ok("create", room)
    line = invite(alice, room)
    join_by_invite(bob, line)
    join_by_invite(carol, line)
    carol.tail(room, "--since", "0")

    def pending_seen() -> bool:
        roles = {m["name"]: m["role"] for m in members(alice, room)["members"]}
        return roles.get("bob") == "pending" and roles.get("carol") == "pending"

    wait_until(pending_seen, "alice to see bob's and carol's joins")
    alice.ok("rekey", room)
    for d in (bob, carol):
        wait_until(lambda d=d: tag(d, room) == tag(alice, room), f"{d.name} to be added")
    roles = {m["name"]: m["role"] for m in members(carol, room)["members"]}
    assert roles == {"alice": "admin", "bob": "member", "carol": "member"}
    return [alice, bob, carol]


def test_a_removed_member_cannot_take_the_room_back(
    make_member: MakeMember, room: str, broker: Any
) -> None:
    """carol, removed, still holds epoch 1 and its state: her own commit of that state,
    sealed to bob and herself and leaving alice out, is refused (she is no admin), and
    would lose anyway (it comes from the member alice's commit removed)."""
    alice, bob, carol = three_members(make_member, room)
    old = _secrets(carol, room)
    epoch = members(carol, room)["epoch"]
    state = _state_hash(carol, room)
    alice.ok("rekey", room, "--remove", "carol")
    wait_until(lambda: tag(bob, room) == tag(alice, room), "bob to follow alice")
    secret, topic = old[epoch]
    keys = EpochKeys(secret, epoch)
    me = _identity(carol)
    bob_x = MemberKeyPair.from_identity(_identity(bob)).public_key
    carol_x = MemberKeyPair.from_identity(me).public_key
    for _ in range(3):  # other ids, same class: none is followed
        new = new_epoch_secret(os.urandom)
        alice_key = _identity(alice).public_key
        commit = Commit(state, commitment(new, epoch + 1), (Op(OpKind.REMOVE, alice_key),))
        rekey = build_rekey(new, [bob_x, carol_x], tag=keys.tag, new_epoch=epoch + 1,
                            rekeyer_key=me.public_key, random=os.urandom)  # fmt: skip
        payload = seal_batch(keys, me, name="carol", records=[commit, rekey],
                             sent_ms=int(time.time() * 1000), random=os.urandom)  # fmt: skip
        with RawClient(broker) as raw:
            raw.publish(topic, payload)
    wait_until(lambda: drops(bob).get("not_admin", 0) >= 1, "bob to refuse carol's commit")
    assert tag(bob, room) == tag(alice, room)
    bob.ok("send", room, "still with alice")
    wait_until(lambda: "still with alice" in texts(alice, room), "alice to hear bob")
    assert "carol" not in {m["name"] for m in members(bob, room)["members"]}


def test_a_throwaway_identity_with_the_key_is_nobody(
    make_member: MakeMember, room: str, broker: Any
) -> None:
    """mallory holds an invite's secret but has no admission: a join under a member's
    name with a bad ticket, and a low-order member key, change nothing, and what she
    says is not shown."""
    alice, bob = make_member("alice"), make_member("bob")
    alice.ok("create", room)
    line = invite(alice, room)
    join_by_invite(bob, line)
    wait_until(lambda: "bob" in {m["name"] for m in members(alice, room)["members"]}, "bob's join")
    parsed = parse_invite(line)
    keys = EpochKeys(parsed.secret, parsed.epoch)
    topic = keys.topic(parsed.topic_prefix)
    from mqchat.protocol.membership import Join

    mallory = SigningIdentity.generate(os.urandom)
    assert parsed.admission is not None
    ticket = SigningIdentity.generate(os.urandom)  # not the invite's ticket
    join = Join(parsed.admission.state_hash, parsed.inviter_key, ticket.public_key, Role.MEMBER,
                parsed.admission.signature, bytes(32), bytes(64))  # fmt: skip
    payload = seal_batch(keys, mallory, name="bob", records=[join],
                         sent_ms=int(time.time() * 1000), random=os.urandom)  # fmt: skip
    with RawClient(broker) as raw:
        raw.publish(topic, payload)
    wait_until(lambda: drops(alice).get("bad_join", 0) >= 1, "alice to refuse the join")
    roster = members(alice, room)["members"]
    assert [m["name"] for m in roster].count("bob") == 1
    alice.ok("rekey", room)  # mallory cannot block it: she is in no state
    wait_until(lambda: tag(bob, room) == tag(alice, room), "bob to follow")


def test_an_invite_from_before_a_rekey_says_the_room_moved_on(
    make_member: MakeMember, room: str
) -> None:
    alice, bob, dave = make_member("alice"), make_member("bob"), make_member("dave")
    alice.ok("create", room)
    old_line = invite(alice, room)
    join_by_invite(bob, old_line)
    wait_until(lambda: "bob" in {m["name"] for m in members(alice, room)["members"]}, "bob")
    alice.ok("rekey", room)
    wait_until(lambda: tag(bob, room) == tag(alice, room), "bob to follow")
    joined = dave.ctl("join", "--invite", input=old_line + "\n")
    assert joined.returncode == 1
    assert "moved on since your invite" in joined.stderr
    assert "ask alice for a new one" in joined.stderr
    refused = dave.ctl("send", room, "hello?")
    assert refused.returncode == 1 and "moved on" in refused.stderr


def test_a_member_whose_session_lost_the_rekey_catches_up(
    make_daemon: Callable[..., Daemon], make_broker: Callable[..., Any], room: str
) -> None:
    """carol is away while alice rekeys, and the broker restarts without persistence:
    the commit queued for carol is gone. When carol is back and speaks on the old
    epoch, a member sends her the commit again, and she reads the new epoch."""
    private = make_broker()
    alice, bob, carol = three_members(_on(make_daemon, private), room)
    carol.stop()
    alice.ok("rekey", room)
    wait_until(lambda: tag(bob, room) == tag(alice, room), "bob to follow")
    private.stop()
    private.start()  # no persistence: carol's queued commit is lost
    for d in (alice, bob):
        d.wait_connected()
    carol.start()
    wait_until(lambda: tag(carol, room) == tag(alice, room), "carol to catch up", 30)
    carol.ok("send", room, "back on the new epoch")
    wait_until(lambda: "back on the new epoch" in texts(alice, room), "alice to hear carol")


def test_a_flood_of_commits_from_a_member_leaves_status_answering(
    make_member: MakeMember, room: str, broker: Any
) -> None:
    """bob, a member, publishes 2,000 commits of the current state: each is refused at
    the cost of one check (he is no admin); alice's `status` answers throughout."""
    alice, bob = make_member("alice"), make_member("bob")
    alice.ok("create", room)
    join_by_invite(bob, invite(alice, room))
    wait_until(lambda: members(bob, room)["state"], "bob to hold the state")
    epoch = members(bob, room)["epoch"]
    secret, topic = _secrets(bob, room)[epoch]
    keys = EpochKeys(secret, epoch)
    me = _identity(bob)
    state = _state_hash(bob, room)
    x = MemberKeyPair.from_identity(me).public_key
    payloads = []
    for _ in range(2000):
        new = new_epoch_secret(os.urandom)
        commit = Commit(state, commitment(new, epoch + 1), ())
        rekey = build_rekey(new, [x], tag=keys.tag, new_epoch=epoch + 1,
                            rekeyer_key=me.public_key, random=os.urandom)  # fmt: skip
        payloads.append(seal_batch(keys, me, name="bob", records=[commit, rekey],
                                   sent_ms=int(time.time() * 1000), random=os.urandom))  # fmt: skip
    before = members(alice, room)["tag"]
    with RawClient(broker) as raw:
        for i, payload in enumerate(payloads):
            raw.publish(topic, payload)
            if i % 500 == 0:
                assert alice.status()["name"] == "alice"  # answers during the flood
    wait_until(lambda: drops(alice).get("not_admin", 0) >= 2000, "alice to refuse them all", 60)
    assert members(alice, room)["tag"] == before
    assert len(members(alice, room)["grace"]) == 0


def test_a_room_from_before_the_membership_model_keeps_working(
    make_member: MakeMember, room: str
) -> None:
    """A store with epochs but no membership log (a room made before issue 21): the room
    has no state, everyone holding its key is heard; its next rekey makes its author
    the admin (a genesis commit), and the others follow."""
    alice, bob = make_member("alice"), make_member("bob")
    alice.ok("create", room)
    join_by_invite(bob, invite(alice, room))
    wait_until(lambda: members(bob, room)["state"], "bob to hold the state")
    for d in (alice, bob):
        d.stop()
        db = sqlite3.connect(d.state_dir / "mqchat.db")
        with db:
            db.execute("DELETE FROM room_log")
        db.close()
        d.start()
    assert members(alice, room)["state"] is None
    bob.ok("send", room, "from before")
    wait_until(lambda: "from before" in texts(alice, room), "alice to hear bob")
    wait_until(
        lambda: any(
            m["name"] == "bob" and m["member_key"] for m in members(alice, room)["members"]
        ),
        "alice to hear bob's member key",
    )
    alice.ok("rekey", room)
    wait_until(lambda: tag(bob, room) == tag(alice, room), "bob to follow the first commit")
    roles = {m["name"]: m["role"] for m in members(bob, room)["members"]}
    assert roles == {"alice": "admin", "bob": "member"}


def test_two_admins_commit_at_once_and_the_removal_wins(
    make_daemon: Callable[..., Daemon], make_broker: Callable[..., Any], room: str
) -> None:
    """alice makes bob an admin. With the broker paused, alice removes bob while bob
    rekeys: each has moved to its own epoch before it sees the other's commit. When
    the broker resumes, all three end where alice's removal leads: bob is out, told so,
    and alice and carol keep talking."""
    import signal

    private = make_broker()
    alice, bob, carol = three_members(_on(make_daemon, private), room)
    out = alice.ok("role", room, "bob", "admin")
    assert "bob is now an admin" in out
    wait_until(lambda: tag(bob, room) == tag(alice, room) == tag(carol, room), "all on epoch 2")
    assert private.proc is not None
    private.proc.send_signal(signal.SIGSTOP)
    try:
        alice.ok("rekey", room, "--remove", "bob")
        bob.ok("rekey", room)
        assert tag(alice, room) != tag(bob, room)
    finally:
        private.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: tag(carol, room) == tag(alice, room), "carol to follow alice's removal")
    wait_until(lambda: members(bob, room)["out"], "bob to learn he was removed")
    assert "alice removed you" in members(bob, room)["out"]
    assert "bob" not in {m["name"] for m in members(carol, room)["members"]}
    alice.ok("send", room, "after the race")
    wait_until(lambda: "after the race" in texts(carol, room), "carol to hear alice")


def test_in_a_passphrase_room_the_removed_are_not_heard_in_version_1_either(
    make_member: MakeMember, room: str, broker: Any
) -> None:
    """A passphrase room's first rekey leaves carol out and makes alice its admin; in
    the grace period the passphrase still opens version 1 payloads, but carol's,
    signed by her key, are dropped: she is in no state."""
    from integration.test_keys import _passphrase_keys
    from mqchat.protocol import envelope
    from mqchat.protocol.kdf import room_tag, topic_for

    alice, bob, carol = (make_member(n) for n in ("alice", "bob", "carol"))
    for d in (alice, bob, carol):
        d.join(room)
    wait_until(
        lambda: (
            {"bob", "carol"}
            <= {m["name"] for m in members(alice, room)["members"] if m["member_key"]}
        ),
        "alice to hear bob's and carol's member keys",
    )
    alice.ok("rekey", room, "--remove", "carol")
    wait_until(lambda: tag(bob, room) == tag(alice, room), "bob to follow")
    keys = _passphrase_keys(carol, room)
    _, payload = envelope.seal(
        keys, _identity(carol), name="carol", text="version 1, from the removed",
        seq=10**6, timestamp_ms=int(time.time() * 1000), random=os.urandom,
    )  # fmt: skip
    with RawClient(broker) as raw:
        raw.publish(topic_for("mqchat/v1", room_tag(keys.topic_key)), payload)
    wait_until(lambda: drops(bob).get("not_member", 0) >= 1, "bob to drop carol's")
    bob.ok("send", room, "after carol's")
    wait_until(lambda: "after carol's" in texts(alice, room), "alice to hear bob")
    assert "version 1, from the removed" not in texts(alice, room) + texts(bob, room)


def test_a_restart_finds_the_room_where_its_commits_led(make_member: MakeMember, room: str) -> None:
    """Several commits in the store (kept in no particular order): after a restart, a
    member is still on the head's epoch, with its members, and talks there."""
    alice, bob, _ = three_members(make_member, room)
    for _ in range(3):
        alice.ok("rekey", room)
        wait_until(lambda: tag(bob, room) == tag(alice, room), "bob to follow")
    before = members(bob, room)
    bob.stop()
    bob.start()
    after = members(bob, room)
    assert (after["epoch"], after["state"], after["tag"]) == (
        before["epoch"], before["state"], before["tag"]
    )  # fmt: skip
    bob.ok("send", room, "after my restart")
    wait_until(lambda: "after my restart" in texts(alice, room), "alice to hear bob")
