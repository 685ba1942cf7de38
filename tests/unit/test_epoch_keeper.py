"""The epoch keeper's rules without a broker: the winner of two rekeys, tampered key
boxes, the removed member's old-epoch batches, grace periods (docs/protocol.md §17)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mqchat.daemon.drops import DropCounter
from mqchat.daemon.epoch_keeper import EpochKeeper
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import Member, Store
from mqchat.errors import MqchatError
from mqchat.protocol.batch import Batch
from mqchat.protocol.epochs import EpochKeys, new_epoch_secret, rekey_id
from mqchat.protocol.kdf import KdfParams, RoomKeys
from mqchat.protocol.keybox import MemberKeyPair, build_rekey
from mqchat.protocol.records import KeyBox, MemberKey, Presence, PresenceState, Rekey
from mqchat.protocol.signing import SigningIdentity

ROOM = "lobby"
GRACE_S = 60


class Events:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def publish(self, room: str | None, event: dict[str, Any]) -> None:
        self.sent.append(event)


class Presence_:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def on_batch(self, room: Room, batch: Batch, now_ms: int) -> None:
        self.batches.append(batch)

    def announce(self, room: Room, state: PresenceState) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


class World:
    def __init__(self, home: Path) -> None:
        self.me = SigningIdentity.generate(os.urandom)
        self.store = Store(home / "mqchat.db", 1000)
        self.rooms = RoomRegistry()
        self.events = Events()
        self.presence = Presence_()
        self.drops = DropCounter()
        self.clock = Clock()
        self.keeper = EpochKeeper(
            store=self.store,
            rooms=self.rooms,
            events=self.events,  # type: ignore[arg-type]
            work=None,  # type: ignore[arg-type]
            drops=self.drops,
            presence=self.presence,  # type: ignore[arg-type]
            identity=self.me,
            name="me",
            topic_prefix="mqchat/v1",
            grace_s=GRACE_S,
            clock_ms=self.clock,
            random=os.urandom,
        )
        self.keeper.create(ROOM, None)

    @property
    def room(self) -> Room:
        room = self.rooms.get(ROOM)
        assert room is not None
        return room

    def member(self, name: str) -> SigningIdentity:
        """Another member, heard in the room with its member key."""
        other = SigningIdentity.generate(os.urandom)
        x25519 = MemberKeyPair.from_identity(other).public_key
        self.store.members.save(
            Member(ROOM, other.public_key, name, x25519, self.clock(), 60, True)
        )
        return other

    def rekey_by(
        self, sender: SigningIdentity, name: str, recipients: list[bytes], keys: EpochKeys
    ) -> Batch:
        record = build_rekey(
            new_epoch_secret(os.urandom),
            recipients,
            tag=keys.tag,
            new_epoch=keys.epoch + 1,
            rekeyer_key=sender.public_key,
            random=os.urandom,
        )
        return self.batch(sender, name, keys, record)

    def batch(self, sender: SigningIdentity, name: str, keys: EpochKeys, *records: Any) -> Batch:
        return Batch(
            "aes-256-gcm", keys.tag, keys.epoch, sender.public_key, name, 0, tuple(records)
        )

    def receive(self, batch: Batch) -> None:
        self.keeper.on_batch(self.room, batch, self.clock())


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


def rid(batch: Batch) -> bytes:
    record = next(r for r in batch.records if isinstance(r, Rekey))
    return rekey_id(
        rekeyer_key=batch.sender_key, epoch=batch.epoch, tag=batch.room_tag, rekey=record
    )


def own_x(world: World) -> bytes:
    return MemberKeyPair.from_identity(world.me).public_key


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_two_rekeys_of_one_epoch_end_on_the_lowest_id_in_any_order(
    world: World, order: tuple[int, int]
) -> None:
    bob, carol = world.member("bob"), world.member("carol")
    zero = world.room.epoch
    assert zero is not None
    everyone = [own_x(world)] + [MemberKeyPair.from_identity(i).public_key for i in (bob, carol)]
    rekeys = [
        world.rekey_by(bob, "bob", everyone, zero),
        world.rekey_by(carol, "carol", everyone, zero),
    ]
    winner = min(rekeys, key=rid)
    for i in order:
        world.receive(rekeys[i])
    room = world.room
    assert room.epoch is not None and room.epoch.epoch == 1
    # The winner's epoch is current; epoch 0 and the loser (if we switched to it) in grace.
    assert world.keeper.members(ROOM)["epoch"] == 1
    rows = {r.tag: r for r in world.store.epochs.of(ROOM)}
    cur = next(r for r in rows.values() if r.state == "current")
    assert cur.rekeyer == winner.sender_key
    assert zero.tag in {g.keys.tag for g in room.grace}


def test_a_rekey_that_leaves_us_out_is_a_notice_and_no_switch(world: World) -> None:
    bob = world.member("bob")
    zero = world.room.epoch
    assert zero is not None
    world.receive(world.rekey_by(bob, "bob", [MemberKeyPair.from_identity(bob).public_key], zero))
    assert world.room.epoch is zero
    assert world.events.sent[-1]["kind"] == "left_out"


def test_a_tampered_key_box_is_refused_and_counted(world: World) -> None:
    bob = world.member("bob")
    zero = world.room.epoch
    assert zero is not None
    good = world.rekey_by(bob, "bob", [own_x(world)], zero)
    record = good.records[0]
    assert isinstance(record, Rekey)
    box = record.boxes[0]
    bad_box = KeyBox(box.recipient, box.ephemeral, bytes([box.sealed[0] ^ 1]) + box.sealed[1:])
    bad = replace(good, records=(Rekey(record.new_epoch, (bad_box,)),))
    world.receive(bad)
    assert world.drops.counts["bad_key_box"] == 1
    assert world.room.epoch is zero


def test_after_a_removal_the_removed_members_old_epoch_batches_go_no_further(
    world: World,
) -> None:
    bob, carol = world.member("bob"), world.member("carol")
    zero = world.room.epoch
    assert zero is not None
    world.keeper.link = _Link()  # type: ignore[assignment]
    world.keeper.rekey(ROOM, ["carol"])
    assert {m.name for m in world.store.members.in_room(ROOM)} == {"bob"}
    before = len(world.presence.batches)
    carol_x = MemberKeyPair.from_identity(carol).public_key
    world.receive(
        world.batch(
            carol, "carol", zero, Presence(PresenceState.STILL_HERE, 60), MemberKey(carol_x)
        )
    )
    assert world.drops.counts["removed_sender"] == 1
    assert len(world.presence.batches) == before  # carol is not a member again
    world.receive(world.batch(bob, "bob", zero, Presence(PresenceState.STILL_HERE, 60)))
    assert len(world.presence.batches) == before + 1


def test_the_grace_period_ends_and_its_topic_counts_as_old_epoch(world: World) -> None:
    world.member("bob")
    world.keeper.link = _Link()  # type: ignore[assignment]
    old_topic = world.room.v2_topic
    world.keeper.rekey(ROOM, [])
    assert old_topic in world.room.topics
    world.clock.now += GRACE_S * 1000 - 1
    world.keeper.expire(world.clock())
    assert old_topic in world.room.topics
    world.clock.now += 1
    world.keeper.expire(world.clock())
    assert old_topic not in world.room.topics and old_topic in world.room.expired
    assert world.rooms.on_topic(old_topic or "") is world.room
    assert world.room.epoch_keys_for(old_topic or "") is None
    link = world.keeper.link
    assert isinstance(link, _Link) and old_topic in link.unsubscribed


class _Link:
    connected = True

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.subscribed: list[str] = []
        self.unsubscribed: list[str] = []

    def publish(self, topic: str, payload: bytes, qos: int) -> int:
        self.published.append((topic, payload))
        return 1

    def subscribe(self, topic: str, qos: int) -> None:
        self.subscribed.append(topic)

    def unsubscribe(self, topic: str) -> None:
        self.unsubscribed.append(topic)


class _Work:
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        yield


def test_a_lost_rekey_that_removed_someone_is_made_again_on_the_winner(world: World) -> None:
    """§17.3: otherwise the winner, sealed to carol, would undo her removal."""
    bob, carol = world.member("bob"), world.member("carol")
    zero = world.room.epoch
    assert zero is not None
    link = world.keeper.link = _Link()  # type: ignore[assignment]
    world.keeper._work = _Work()  # type: ignore[assignment]
    world.keeper.rekey(ROOM, ["carol"])
    ours = world.store.epochs.of(ROOM)
    mine = next(r for r in ours if r.tag == zero.tag).best_rekey_id
    assert mine is not None
    everyone = [own_x(world)] + [MemberKeyPair.from_identity(i).public_key for i in (bob, carol)]
    while rid(theirs := world.rekey_by(bob, "bob", everyone, zero)) >= mine:
        pass  # one in two is lower

    async def arrive() -> None:
        world.receive(theirs)
        await asyncio.sleep(0)  # the rekey made again runs next

    asyncio.run(arrive())
    room = world.room
    assert room.epoch is not None and room.epoch.epoch == 2
    assert len(link.published) == 2
    current = next(r for r in world.store.epochs.of(ROOM) if r.state == "current")
    carol_x = MemberKeyPair.from_identity(carol).public_key
    assert carol_x not in current.recipients  # type: ignore[operator]


def test_rekey_is_refused_while_the_broker_is_not_connected(world: World) -> None:
    link = world.keeper.link = _Link()  # type: ignore[assignment]
    link.connected = False
    with pytest.raises(MqchatError, match="not connected"):
        world.keeper.rekey(ROOM, [])
    assert world.room.epoch is not None and world.room.epoch.epoch == 0


def test_a_restart_finds_the_epochs_where_they_were(world: World) -> None:
    """The rooms table holds no key of a random-key room; room_epochs holds its epochs."""
    world.member("bob")
    world.keeper.link = _Link()  # type: ignore[assignment]
    old_topic = world.room.v2_topic
    world.keeper.rekey(ROOM, [])
    before = world.room
    record = before.to_record()
    assert record.key_a == b"" and record.key_b is None and not record.legacy
    rooms = RoomRegistry()
    rooms.load(world.store.rooms.all(), world.store.messages.last_seq, "mqchat/v1")
    again = EpochKeeper(
        store=world.store,
        rooms=rooms,
        events=world.events,  # type: ignore[arg-type]
        work=None,  # type: ignore[arg-type]
        drops=world.drops,
        presence=world.presence,  # type: ignore[arg-type]
        identity=world.me,
        name="me",
        topic_prefix="mqchat/v1",
        grace_s=GRACE_S,
        clock_ms=world.clock,
        random=os.urandom,
    )
    again.load()
    room = rooms.get(ROOM)
    assert room is not None and room.random_key and room.keys is None
    assert room.epoch is not None and before.epoch is not None
    assert (room.epoch.epoch, room.epoch.tag) == (1, before.epoch.tag)
    assert room.topics == before.topics and old_topic in room.topics
    assert rooms.on_topic(old_topic or "") is room
    assert again.invite(ROOM)["invite"] == world.keeper.invite(ROOM)["invite"]


def test_a_passphrase_room_stops_opening_version_1_when_its_first_grace_period_ends(
    world: World,
) -> None:
    keys = RoomKeys(os.urandom(32), os.urandom(32))
    room = Room.passphrase_room(
        "ops", "aes-256-gcm", keys, KdfParams(0, 0, 0), "mqchat/v1", weak=False, joined_ms=0
    )
    world.rooms.add(room)
    world.store.members.save(
        Member("ops", b"\x01" * 32, "bob", own_x(world), world.clock(), 60, True)
    )
    world.keeper.link = _Link()  # type: ignore[assignment]
    v1_topic, zero_topic = room.topic, room.v2_topic
    assert room.opens_v1 and v1_topic in room.topics
    world.keeper.rekey("ops", [])
    assert room.epoch is not None and room.epoch.epoch == 1
    assert room.opens_v1 and {v1_topic, zero_topic} <= set(room.topics)  # in grace
    world.clock.now += GRACE_S * 1000
    world.keeper.expire(world.clock())
    assert not room.opens_v1
    assert v1_topic not in room.topics and v1_topic in room.expired
    assert zero_topic in room.expired
    assert world.rooms.on_topic(v1_topic) is room  # counted as old_epoch by the inbox
