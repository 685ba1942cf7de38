"""Epochs of rooms: their secrets, keys and topics, switching and grace periods.

The daemon's side of docs/protocol.md §11 and §17.2-§17.4. This module owns
each room's epoch rows (the store's ``room_epochs``) and keeps the ``Room``
objects and the broker's subscriptions in step with them: ``Room.epoch`` and
``Room.v2_topic`` are the current epoch, what sending uses; ``Room.grace`` the
old epochs and losing candidates still opened; ``Room.expired`` the topics of
epochs past their grace period. *Which* epoch is current is decided by the
membership log (mqchat.daemon.membership); this module only moves there.

Nothing here logs a secret, and secrets reach the store only (a 0600 file).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from mqchat.daemon.deadline import Deadline
from mqchat.daemon.publisher import LinkEffects
from mqchat.daemon.rooms import GraceEpoch, Room, RoomRegistry
from mqchat.daemon.store import Store
from mqchat.daemon.store.epochs import CURRENT, EXPIRED, GRACE, EpochRow
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import UsageError
from mqchat.protocol.epochs import EpochKeys, passphrase_epoch_zero

log = logging.getLogger(__name__)

"""How often grace periods are checked for their end."""
MAX_GRACE_EPOCHS = 8
"""Old epochs and losing candidates a room keeps open at once; past this the oldest
closes early (a flood of rekeys cannot grow the subscriptions)."""


def prefix_of(topic: str) -> str:
    return topic.rpartition("/")[0]


class EpochKeeper:
    def __init__(
        self,
        *,
        store: Store,
        rooms: RoomRegistry,
        link: LinkEffects,
        grace_s: int,
        clock_ms: Callable[[], int],
        on_expire: Callable[[Room, list[EpochRow], list[EpochRow]], None],
        work: UnitOfWork,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """``on_expire(room, closed, all its epochs)``: told which epochs closed (the
        membership log settles on what follows them)."""
        self._store = store
        self._rooms = rooms
        self.grace_ms = grace_s * 1000
        self._clock_ms = clock_ms
        self._rows: dict[str, dict[str, EpochRow]] = {}
        self._keys: dict[tuple[str, str], EpochKeys] = {}
        self._link = link
        self._on_expire = on_expire
        self._work = work
        self._loop = loop
        self._grace_ends = Deadline(loop, loop.time, self._grace_ended)
        """Wakes us when the first grace period ends (and not before)."""

    # ------------------------------------------------------------------ state
    def load(self) -> None:
        """Apply the stored epochs to the rooms a previous run joined (before subscribing),
        and end the grace periods that ended while chatd was down."""
        self.reload()
        self.expire(self._clock_ms())

    def reload(self) -> None:
        """The epochs the store holds (the rooms' keys and topics follow): at start,
        and after a rollback."""
        self._rows.clear()
        self._keys.clear()
        for room in list(self._rooms):
            rows = self._store.epochs.of(room.name)
            if rows:
                self._rows[room.name] = {r.tag: r for r in rows}
                self._apply(room)
        self._wake_at_grace_end(r for rows in self._rows.values() for r in rows.values())

    def rows_of(self, room: Room) -> dict[str, EpochRow]:
        """The room's epochs; a passphrase room never rekeyed has epoch 0 from its keys."""
        rows = self._rows.get(room.name)
        if rows is None:
            if room.keys is None or room.epoch is None or room.v2_topic is None:
                raise UsageError(f"room {room.name!r} has no epochs (a legacy room)")
            secret = passphrase_epoch_zero(room.keys)
            zero = EpochRow(room.name, room.epoch.tag, 0, CURRENT, secret, room.v2_topic)
            rows = self._rows[room.name] = {zero.tag: zero}
        return rows

    def current(self, room: Room) -> EpochRow:
        return next(r for r in self.rows_of(room).values() if r.state == CURRENT)

    def row(self, room: Room, tag: str) -> EpochRow | None:
        return self.rows_of(room).get(tag)

    def epoch_keys(self, row: EpochRow) -> EpochKeys:
        key = (row.room, row.tag)
        keys = self._keys.get(key)
        if keys is None:
            if row.secret is None:  # pragma: no cover - expired rows are never opened
                raise ValueError("an expired epoch has no keys")
            keys = self._keys[key] = EpochKeys(row.secret, row.epoch)
        return keys

    def _save(self, room: Room, changed: list[EpochRow]) -> None:
        rows = self.rows_of(room)
        for row in changed:
            rows[row.tag] = row
        self._store.epochs.save(changed)
        self._apply(room)
        self._wake_at_grace_end(changed)

    def _wake_at_grace_end(self, rows: Iterable[EpochRow]) -> None:
        ends = [r.until_ms or 0 for r in rows if r.state == GRACE]
        if ends:
            self._grace_ends.at(self._loop.time() + max(0, min(ends) - self._clock_ms()) / 1000)

    def _apply(self, room: Room) -> None:
        """Make ``room`` (and the registry, and the broker's subscriptions) match its rows."""
        rows = self._rows[room.name]
        subscribed = room.topics
        before = (*subscribed, *room.expired)
        current = next(r for r in rows.values() if r.state == CURRENT)
        room.epoch = self.epoch_keys(current)
        room.v2_topic = current.topic
        if room.random_key:
            room.topic = current.topic
        room.grace = [
            GraceEpoch(self.epoch_keys(r), r.topic, r.until_ms or 0)
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
        after = room.topics
        for topic in after:
            if topic not in subscribed:
                self._link.subscribe(topic, room.qos)
        for topic in subscribed:
            if topic not in after:
                self._link.unsubscribe(topic)

    def enter(self, room: Room, row: EpochRow) -> None:
        """A new random-key room's first epoch."""
        self._rows[room.name] = {}
        self._keys[(room.name, row.tag)] = EpochKeys(row.secret or b"", row.epoch)
        self._save(room, [row])

    def forget(self, room: Room) -> None:
        """``leave``: the room's epochs, secrets included, are deleted."""
        self._rows.pop(room.name, None)
        for key in [k for k in self._keys if k[0] == room.name]:
            del self._keys[key]
        self._store.epochs.forget_room(room.name)

    def subscriptions_to_drop(self) -> list[str]:
        """Topics of ended epochs: a persistent session may still hold them."""
        return [topic for room in self._rooms for topic in room.expired]

    # ------------------------------------------------------------------ switching
    def switch(self, room: Room, keys: EpochKeys, secret: bytes, now_ms: int) -> bool:
        """Make ``keys``' epoch current (a new one, or a candidate already held); the
        current one enters its grace period. False if it is current already."""
        rows = self.rows_of(room)
        target = rows.get(keys.tag)
        if target is not None and target.state == CURRENT:
            return False
        until = now_ms + self.grace_ms
        old = self.current(room)
        topic = keys.topic(prefix_of(old.topic))
        self._keys[(room.name, keys.tag)] = keys
        changed = [
            old._replace(state=GRACE, until_ms=until),
            EpochRow(room.name, keys.tag, keys.epoch, CURRENT, secret, topic),
        ]
        graced = sorted(
            (r for r in rows.values() if r.state == GRACE and r.tag != keys.tag),
            key=lambda r: (r.until_ms or 0, r.tag),
        )
        excess = len(graced) + 1 - MAX_GRACE_EPOCHS
        closed = [r._replace(state=EXPIRED, secret=None, until_ms=None) for r in graced[:excess]]
        self._save(room, changed + closed)
        if closed:
            self._on_expire(room, closed, list(self.rows_of(room).values()))
        log.info("a room moved to epoch %d", keys.epoch)
        return True

    # ------------------------------------------------------------------ grace
    def _grace_ended(self) -> None:
        with self._work.batch():
            self.expire(self._clock_ms())
        self._wake_at_grace_end(r for rows in self._rows.values() for r in rows.values())

    def close(self) -> None:
        self._grace_ends.cancel()

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
                self._on_expire(room, ended, list(self.rows_of(room).values()))
                log.info("a grace period ended in a room: %d old epoch(s) closed", len(ended))
