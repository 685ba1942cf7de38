"""Epochs of rooms: random-key rooms, invites, rekeys, switching and grace periods.

The daemon's side of docs/protocol.md §11 and §16-§18, over the pure codec
(mqchat.protocol.epochs, keybox, invite). This module owns each room's epoch
state (the store's ``room_epochs``) and keeps the ``Room`` objects in step with
it: ``Room.epoch`` and ``Room.v2_topic`` are the current epoch, what sending
uses; ``Room.grace`` the old epochs and losing candidates that are still opened;
``Room.expired`` the topics of epochs past their grace period.

- ``create`` makes a room whose epoch 0 secret is 256 random bits.
- ``invite`` prints the current epoch as one ``mqchat:`` line; ``join_invite``
  joins from one.
- ``rekey`` seals a fresh secret to every member's X25519 key (presence keeps
  them, in the store's ``members``), leaving out the removed, publishes it on the
  current epoch's topic, and switches at once.
- ``on_batch`` sees every verified batch first (the inbox calls it): a batch of
  an old epoch from a sender the last rekey left out goes no further; a rekey
  record is judged by the winner rule (lowest rekey id, §17.3), its box opened,
  and the room switched.
- ``run`` ends grace periods: their topics are unsubscribed and their keys
  forgotten.

Nothing here logs a secret, and secrets reach the store only (a 0600 file).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mqchat.daemon.broker import BrokerLink
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.events import EventPublisher, iso_ts
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.rooms import GraceEpoch, Room, RoomRegistry
from mqchat.daemon.store import Store
from mqchat.daemon.store.epochs import CURRENT, EXPIRED, GRACE, EpochRow
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import MqchatError, ProtocolError, UsageError
from mqchat.protocol import envelope
from mqchat.protocol.batch import Batch, seal_batch
from mqchat.protocol.epochs import (
    DEFAULT_CIPHER,
    EpochKeys,
    new_epoch_secret,
    passphrase_epoch_zero,
    rekey_id,
)
from mqchat.protocol.fingerprints import fingerprint
from mqchat.protocol.invite import Invite, encode_invite, parse_invite
from mqchat.protocol.ipc import notice_event
from mqchat.protocol.keybox import MemberKeyPair, build_rekey, secret_for
from mqchat.protocol.limits import normalize_name, normalize_room
from mqchat.protocol.records import (
    KEY_BYTES,
    MAX_REKEY_RECIPIENTS,
    MemberKey,
    PresenceState,
    Rekey,
)
from mqchat.protocol.signing import SigningIdentity

log = logging.getLogger(__name__)

TICK_S = 1.0
"""How often grace periods are checked for their end."""


class RekeyRefused(MqchatError):
    """The rekey was not made."""


def _prefix_of(topic: str) -> str:
    return topic.rpartition("/")[0]


def _recipients(rows: bytes | None) -> set[bytes]:
    data = rows or b""
    return {data[i : i + KEY_BYTES] for i in range(0, len(data), KEY_BYTES)}


class EpochKeeper:
    def __init__(
        self,
        *,
        store: Store,
        rooms: RoomRegistry,
        events: EventPublisher,
        work: UnitOfWork,
        drops: DropCounter,
        presence: PresenceKeeper,
        identity: SigningIdentity,
        name: str,
        topic_prefix: str,
        grace_s: int,
        clock_ms: Callable[[], int],
        random: Callable[[int], bytes],
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._events = events
        self._work = work
        self._drops = drops
        self._presence = presence
        self._identity = identity
        self._own_key = identity.public_key
        self._name = name
        self._prefix = topic_prefix
        self.grace_ms = grace_s * 1000
        self._clock_ms = clock_ms
        self._random = random
        self._member_key = MemberKeyPair.from_identity(identity)
        self._rows: dict[str, dict[str, EpochRow]] = {}
        self._keys: dict[tuple[str, str], EpochKeys] = {}
        self._removals: dict[str, tuple[str, ...]] = {}
        """Names our last rekey of a room left out: made again should it lose (§17.3)."""
        self.link: BrokerLink | None = None

    # ------------------------------------------------------------------ state
    def load(self) -> None:
        """Apply the stored epochs to the rooms a previous run joined (before subscribing)."""
        for room in list(self._rooms):
            rows = self._store.epochs.of(room.name)
            if rows:
                self._rows[room.name] = {r.tag: r for r in rows}
                self._apply(room)
        self.expire(self._clock_ms())

    def _rows_of(self, room: Room) -> dict[str, EpochRow]:
        """The room's epochs; a passphrase room never rekeyed has epoch 0 from its keys."""
        rows = self._rows.get(room.name)
        if rows is None:
            if room.keys is None or room.epoch is None or room.v2_topic is None:
                raise UsageError(f"room {room.name!r} has no epochs (a legacy room)")
            secret = passphrase_epoch_zero(room.keys)
            zero = EpochRow(room.name, room.epoch.tag, 0, CURRENT, secret, room.v2_topic)
            rows = self._rows[room.name] = {zero.tag: zero}
        return rows

    def _current(self, room: Room) -> EpochRow:
        return next(r for r in self._rows_of(room).values() if r.state == CURRENT)

    def _epoch_keys(self, row: EpochRow) -> EpochKeys:
        key = (row.room, row.tag)
        keys = self._keys.get(key)
        if keys is None:
            if row.secret is None:  # pragma: no cover - expired rows are never opened
                raise ValueError("an expired epoch has no keys")
            keys = self._keys[key] = EpochKeys(row.secret, row.epoch)
        return keys

    def _save(self, room: Room, changed: list[EpochRow]) -> None:
        rows = self._rows_of(room)
        for row in changed:
            rows[row.tag] = row
        self._store.epochs.save(changed)
        self._apply(room)

    def _apply(self, room: Room) -> None:
        """Make ``room`` (and the registry, and the broker's subscriptions) match its rows."""
        rows = self._rows[room.name]
        subscribed = room.topics
        before = (*subscribed, *room.expired)
        current = next(r for r in rows.values() if r.state == CURRENT)
        room.epoch = self._epoch_keys(current)
        room.v2_topic = current.topic
        if room.random_key:
            room.topic = current.topic
        room.grace = [
            GraceEpoch(self._epoch_keys(r), r.topic, r.until_ms or 0)
            for r in rows.values()
            if r.state == GRACE
        ]
        room.expired = {r.topic for r in rows.values() if r.state == EXPIRED}
        for row in rows.values():
            if row.state == EXPIRED:
                self._keys.pop((room.name, row.tag), None)
        if room.keys is not None and not room.opens_v1:
            room.expired.add(room.topic)
        self._rooms.retopic(room, before)
        if self.link is not None:
            after = room.topics
            for topic in after:
                if topic not in subscribed:
                    self.link.subscribe(topic, room.qos)
            for topic in subscribed:
                if topic not in after:
                    self.link.unsubscribe(topic)

    def forget(self, room: Room) -> None:
        """``leave``: the room's epochs, secrets included, are deleted."""
        self._rows.pop(room.name, None)
        self._removals.pop(room.name, None)
        for key in [k for k in self._keys if k[0] == room.name]:
            del self._keys[key]
        self._store.epochs.forget_room(room.name)

    def subscriptions_to_drop(self) -> list[str]:
        """Topics of ended epochs: a persistent session may still hold them."""
        return [topic for room in self._rooms for topic in room.expired]

    # ------------------------------------------------------------------ grace
    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.expire(self._clock_ms())

    def expire(self, now_ms: int) -> None:
        """End the grace periods that are over: forget their keys, leave their topics."""
        for room in list(self._rooms):
            rows = self._rows.get(room.name)
            if rows is None:
                continue
            ended = [
                r._replace(state=EXPIRED, secret=None, until_ms=None)
                for r in rows.values()
                if r.state == GRACE and (r.until_ms or 0) <= now_ms
            ]
            if ended:
                self._save(room, ended)
                log.info("a grace period ended in a room: %d old epoch(s) closed", len(ended))

    # ------------------------------------------------------------------ receiving
    def on_batch(self, room: Room, batch: Batch, now_ms: int) -> None:
        """Every verified batch of a room, before presence sees it (docs/protocol.md §20)."""
        if room.epoch is None:
            return
        rekey = next((r for r in batch.records if isinstance(r, Rekey)), None)
        if self.admits(room, batch):
            self._pin_inviter(room, batch)
            self._presence.on_batch(room, batch, now_ms)
        elif rekey is None:
            # An old epoch (or a losing candidate) from someone the last rekey left out.
            self._drops.drop("removed_sender", "a batch of an old epoch from a removed member")
            return
        if rekey is not None and batch.sender_key != self._own_key:
            # Every rekey of the epoch is judged, whoever made it: all members must
            # pick the same winner (§17.3), even one that has not heard the rekeyer yet.
            self._on_rekey(room, batch, rekey, now_ms)

    def admits(self, room: Room, batch: Batch) -> bool:
        """Whether ``batch``'s records are heard at all: any batch of the current epoch;
        in an old epoch or a losing candidate, only the winning rekey's author's and
        recipients' (docs/protocol.md §17.4), so a removed member cannot go on talking
        in the old epoch during the grace period."""
        if room.epoch is None or batch.room_tag == room.epoch.tag:
            return True
        if self.hears(room, batch.sender_key):
            return True
        announced = next((r for r in batch.records if isinstance(r, MemberKey)), None)
        recipients = _recipients(self._current(room).recipients)
        return announced is not None and announced.x25519_key in recipients

    def hears(self, room: Room, sender_key: bytes) -> bool:
        """Whether a text of an old epoch from ``sender_key`` is heard: only from the
        winning rekey's author and recipients (the inbox asks, for old epochs only)."""
        current = self._current(room) if room.epoch is not None else None
        if current is None or current.base_tag is None:
            return True
        if sender_key in (current.rekeyer, self._own_key):
            return True
        member = self._store.members.get(room.name, sender_key)
        return member is not None and member.x25519_key in _recipients(current.recipients)

    def _pin_inviter(self, room: Room, batch: Batch) -> None:
        """A room joined by invite pins the inviter's key under its name at its first batch."""
        rows = self._rows.get(room.name)
        if rows is None or not room.random_key:
            return
        invited = any(r.base_tag is None and r.rekeyer == batch.sender_key for r in rows.values())
        memory = self._store.memory
        if invited and memory.pin(room.name, batch.sender_name) is None:
            memory.set_pin(room.name, batch.sender_name, batch.sender_key)

    def _on_rekey(self, room: Room, batch: Batch, rekey: Rekey, now_ms: int) -> None:
        rows = self._rows_of(room)
        current = self._current(room)
        published_in = rows.get(batch.room_tag)
        if published_in is None or batch.room_tag not in (current.tag, current.base_tag):
            log.debug("a rekey in a losing or old epoch: ignored")
            return
        rid = rekey_id(
            rekeyer_key=batch.sender_key, epoch=batch.epoch, tag=batch.room_tag, rekey=rekey
        )
        best = published_in.best_rekey_id
        if best is not None and rid >= best:
            log.debug("a rekey that loses to one seen before: ignored")
            return
        try:
            secret = secret_for(
                rekey, self._member_key, tag=batch.room_tag, rekeyer_key=batch.sender_key
            )
        except ProtocolError as exc:
            self._drops.drop("bad_key_box", str(exc))
            return
        marked = published_in._replace(best_rekey_id=rid)
        if secret is None:
            self._save(room, [marked])
            self._notice(
                room,
                "left_out",
                f"{batch.sender_name} rekeyed {room.name} and left you out: nothing sent there "
                "from now on reaches you; ask a member for a new invite",
                sender=batch.sender_name,
            )
            return
        lost_own = current.rekeyer == self._own_key and current.base_tag == batch.room_tag
        self._switch(room, marked, secret, batch.sender_key, batch.sender_name, rekey, now_ms)
        removed = self._removals.pop(room.name, ())
        if lost_own and removed:
            # Our rekey lost: make it again on top of the winner, or the removal is undone.
            asyncio.get_running_loop().call_soon(self._rekey_again, room.name, removed)

    def _rekey_again(self, room_name: str, removed: tuple[str, ...]) -> None:
        room = self._rooms.get(room_name)
        if room is None:
            return
        try:
            with self._work.batch():
                self.rekey(room.name, list(removed), again=True)
        except MqchatError as exc:
            log.warning("could not make a lost rekey again: %s", exc.message)

    def _switch(
        self,
        room: Room,
        published_in: EpochRow,
        secret: bytes,
        rekeyer: bytes,
        rekeyer_name: str,
        rekey: Rekey,
        now_ms: int,
    ) -> None:
        """Move to the epoch ``rekey`` starts; the current one enters its grace period."""
        keys = EpochKeys(secret, rekey.new_epoch)
        topic = keys.topic(_prefix_of(published_in.topic))
        until = now_ms + self.grace_ms
        changed = [published_in]
        for row in self._rows_of(room).values():
            if row.state == CURRENT and row.tag != published_in.tag:
                changed.append(row._replace(state=GRACE, until_ms=until))
            elif row.state == CURRENT:
                changed[0] = published_in._replace(state=GRACE, until_ms=until)
        recipients = set(rekey.recipients)
        self._keys[(room.name, keys.tag)] = keys
        changed.append(
            EpochRow(
                room.name,
                keys.tag,
                keys.epoch,
                CURRENT,
                secret,
                topic,
                None,
                published_in.tag,
                rekeyer,
                b"".join(sorted(recipients)),
            )
        )
        self._save(room, changed)
        for member in self._store.members.in_room(room.name):
            if member.x25519_key is not None and member.x25519_key not in recipients:
                self._store.members.forget(room.name, member.sender_key)
        # On the new epoch, presence "online" and the member key first (§17.2).
        self._presence.announce(room, PresenceState.ONLINE)
        log.info("a room moved to a new epoch (%d)", keys.epoch)
        self._notice(
            room,
            "rekeyed",
            f"{rekeyer_name} rekeyed {room.name}: epoch {keys.epoch}",
            sender=rekeyer_name,
            epoch=keys.epoch,
        )

    def _notice(self, room: Room, kind: str, text: str, **extra: Any) -> None:
        self._events.publish(room.name, notice_event(room.name, kind, text, **extra))

    # ------------------------------------------------------------------ methods
    def _check_not_joined(self, name: str) -> None:
        if self._rooms.get(name) is not None:
            raise UsageError(
                f"you have already joined {name!r}; run `chatctl leave {name}` first, or pick "
                "another name"
            )

    def _enter(self, room: Room, row: EpochRow) -> None:
        """A new random-key room: stored, routed, subscribed and announced."""
        room.last_seq = self._store.messages.last_seq(room.name)
        self._store.rooms.save(room.to_record())
        self._rows[room.name] = {}
        self._rooms.add(room)
        self._save(room, [row])
        self._store.memory.set_pin(room.name, self._name, self._own_key)
        if self.link is not None:
            for topic in room.topics:
                self.link.subscribe(topic, room.qos)
        self._presence.announce(room, PresenceState.ONLINE)
        self._notice(room, "joined", f"joined {room.name}")

    def create(self, room: str, cipher: str | None) -> dict[str, Any]:
        """A room whose secret is 256 random bits (no passphrase, no key derivation)."""
        name = normalize_room(room)
        chosen = envelope.check_cipher(cipher or DEFAULT_CIPHER)
        self._check_not_joined(name)
        secret = new_epoch_secret(self._random)
        keys = EpochKeys(secret, 0)
        topic = keys.topic(self._prefix)
        new = Room.random_key_room(name, chosen, keys, topic, joined_ms=self._clock_ms())
        self._keys[(name, keys.tag)] = keys
        self._enter(new, EpochRow(name, keys.tag, 0, CURRENT, secret, topic))
        log.info("created a room (%s)", chosen)
        return {**self._info(new), "created": True}

    def invite(self, room: str) -> dict[str, Any]:
        r = self._rooms.require(room)
        if r.legacy:
            raise UsageError("a legacy room has no invites: its passphrase is its key")
        current = self._current(r)
        if current.secret is None:  # pragma: no cover - the current epoch has its secret
            raise ValueError("current epoch without a secret")
        line = encode_invite(
            Invite(
                room=r.name,
                epoch=current.epoch,
                secret=current.secret,
                cipher=r.cipher,
                topic_prefix=_prefix_of(current.topic),
                inviter_key=self._own_key,
            )
        )
        return {"room": r.name, "epoch": current.epoch, "invite": line}

    def join_invite(self, invite: str) -> dict[str, Any]:
        """Join the room an invite names, at its epoch (docs/protocol.md §18)."""
        parsed = parse_invite(invite)
        keys = EpochKeys(parsed.secret, parsed.epoch)
        old = self._rooms.get(parsed.room)
        if old is not None:
            known = {old.epoch.tag if old.epoch else None, *(g.keys.tag for g in old.grace)}
            if keys.tag in known:
                return {**self._info(old), "joined": False}
            raise UsageError(
                f"you have already joined {parsed.room!r} with another key; run "
                f"`chatctl leave {parsed.room}` first"
            )
        topic = keys.topic(parsed.topic_prefix)
        new = Room.random_key_room(
            parsed.room, parsed.cipher, keys, topic, joined_ms=self._clock_ms()
        )
        self._keys[(new.name, keys.tag)] = keys
        row = EpochRow(
            new.name,
            keys.tag,
            parsed.epoch,
            CURRENT,
            parsed.secret,
            topic,
            rekeyer=parsed.inviter_key,
        )
        self._enter(new, row)
        log.info("joined a room by invite (%s)", parsed.cipher)
        return {
            **self._info(new),
            "joined": True,
            "inviter_fingerprint": parsed.inviter_fingerprint,
        }

    def rekey(
        self, room: str, remove: list[str] | None = None, *, again: bool = False
    ) -> dict[str, Any]:
        """Start the next epoch with a fresh secret, sealed to each member but the removed.

        ``again``: our rekey lost to another (§17.3) and is made on top of the winner;
        the removed are no members any more, and stay out."""
        r = self._rooms.require(room)
        if r.legacy or r.epoch is None or r.v2_topic is None:
            raise UsageError("a legacy room cannot be rekeyed: its passphrase is its key")
        if self.link is None or not self.link.connected:
            raise RekeyRefused(
                "chatd is not connected to the broker, and a rekey must reach the room now: "
                "try again once `chatctl status` says connected"
            )
        current = self._current(r)
        if current.best_rekey_id is not None:
            raise RekeyRefused(f"a member's rekey of {r.name!r} left you out; ask for a new invite")
        removed = sorted({normalize_name(n) for n in remove or ()})
        if self._name in removed:
            raise UsageError(f"you cannot remove yourself; run `chatctl leave {r.name}`")
        members = self._store.members.in_room(r.name)
        unknown = [n for n in removed if n not in {m.name for m in members}]
        if unknown and not again:
            raise UsageError(
                f"no member named {', '.join(repr(n) for n in unknown)} in {r.name!r}; "
                f"`chatctl members {r.name}` lists them"
            )
        kept = [m for m in members if m.name not in removed]
        recipients = {m.x25519_key for m in kept if m.x25519_key is not None}
        recipients.add(self._member_key.public_key)
        if len(recipients) > MAX_REKEY_RECIPIENTS:
            raise RekeyRefused(f"a rekey reaches at most {MAX_REKEY_RECIPIENTS} members")
        unreachable = sorted({m.name for m in kept if m.x25519_key is None})
        secret = new_epoch_secret(self._random)
        record = build_rekey(
            secret,
            recipients,
            tag=r.epoch.tag,
            new_epoch=r.epoch.epoch + 1,
            rekeyer_key=self._own_key,
            random=self._random,
        )
        rid = rekey_id(
            rekeyer_key=self._own_key, epoch=r.epoch.epoch, tag=r.epoch.tag, rekey=record
        )
        payload = seal_batch(
            r.epoch,
            self._identity,
            name=self._name,
            records=[record],
            sent_ms=self._clock_ms(),
            random=self._random,
            cipher=r.cipher,
        )
        self.link.publish(r.v2_topic, payload, 1)
        for member in members:
            if member.name in removed:
                self._store.members.forget(r.name, member.sender_key)
        if removed:
            self._removals[r.name] = tuple(removed)
        else:
            self._removals.pop(r.name, None)
        marked = current._replace(best_rekey_id=rid)
        self._switch(r, marked, secret, self._own_key, self._name, record, self._clock_ms())
        log.info("rekeyed a room: epoch %d, %d recipients", record.new_epoch, len(recipients))
        sent_to = [{"name": self._name, "fingerprint": self._identity.fingerprint, "you": True}]
        sent_to += [
            {"name": m.name, "fingerprint": fingerprint(m.sender_key)}
            for m in kept
            if m.x25519_key is not None
        ]
        return {
            "room": r.name,
            "epoch": record.new_epoch,
            "sent_to": sent_to,
            "removed": removed,
            "unreachable": unreachable,
        }

    def members(self, room: str) -> dict[str, Any]:
        """Who the next rekey is sealed to, and who it cannot reach (no member key seen)."""
        r = self._rooms.require(room)
        if r.legacy or r.epoch is None:
            raise UsageError("a legacy room has no members' keys")
        me = {
            "name": self._name,
            "fingerprint": self._identity.fingerprint,
            "member_key": fingerprint(self._member_key.public_key),
            "online": True,
            "you": True,
        }
        others = [
            {
                "name": m.name,
                "fingerprint": fingerprint(m.sender_key),
                "member_key": fingerprint(m.x25519_key) if m.x25519_key else None,
                "online": m.online,
            }
            for m in self._store.members.in_room(r.name)
        ]
        return {
            "room": r.name,
            "epoch": r.epoch.epoch,
            "tag": r.epoch.tag,
            "grace": [
                {"epoch": g.keys.epoch, "tag": g.keys.tag, "until": iso_ts(g.until_ms)}
                for g in r.grace
            ],
            "grace_period_s": self.grace_ms // 1000,
            "members": [me, *others],
        }

    def _info(self, room: Room) -> dict[str, Any]:
        return {
            "name": room.name,
            "cipher": room.cipher,
            "legacy": False,
            "weak": False,
            "last_seq": room.last_seq,
            "warning": None,
            "epoch": room.epoch.epoch if room.epoch else 0,
        }
