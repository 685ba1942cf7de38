"""Who is in a room: presence announcements out, presence and member keys in.

Wire format version 2 (docs/protocol.md §14.4, §14.6, §20, §21): a daemon
announces itself in each joined passphrase room with a signed batch holding a
presence record ("online" on join and whenever its link comes up, "still here"
every interval, "leaving" on `leave` and on a clean stop) and its X25519 member
key. The batches travel on the room's v2 topic, padded to the same buckets as
messages. Receivers keep who was heard, when, and with which key; a member is
offline after three intervals without a batch from it, at once on "leaving".
Presence never counts as a message and never enters history: it reaches
clients as ``presence`` events and through the ``who`` method.
"""

from __future__ import annotations

import asyncio
import logging
import random as random_module
from collections.abc import Callable, Sequence
from typing import Any

from mqchat.daemon.control_order import SignedTimeOrder
from mqchat.daemon.deadline import Deadline
from mqchat.daemon.publisher import LinkEffects
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import Member, Store
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.protocol.batch import Batch, seal_batch
from mqchat.protocol.ipc_events import iso_ts
from mqchat.protocol.keybox import MemberKeyPair
from mqchat.protocol.records import MemberKey, Presence, PresenceState, Record
from mqchat.protocol.signing import SigningIdentity, fingerprint

log = logging.getLogger(__name__)

MAX_MEMBER_ROWS = 256
"""Member rows kept per room: past this a new key first evicts the member offline the
longest, and is not kept when all are online (issue 22: 20,000 throw-away keys)."""
OFFLINE_AFTER_INTERVALS = 3
"""A member not heard from for this many of its own intervals is offline."""
REPLY_WITHIN_S = 2.0
"""An "online" from another member is answered with "still here" within this."""
SEEN_STORED_EVERY_MS = 1000
"""A member online, heard again with nothing new to say, has the time it was heard
written at most this often (kept in memory meanwhile): its stored "last seen" is at
most this old, also after a crash."""
HEARD_KEPT = 4096
"""Members whose newer "last heard" is kept in memory; past this it starts again."""
OFFLINE_SLACK_S = 0.05
"""A member is looked at this long after it may have gone silent: past, not at, its time."""


class PresenceKeeper:
    def __init__(
        self,
        *,
        store: Store,
        rooms: RoomRegistry,
        work: UnitOfWork,
        loop: asyncio.AbstractEventLoop,
        identity: SigningIdentity,
        name: str,
        interval_s: int,
        clock_ms: Callable[[], int],
        random: Callable[[int], bytes],
        link: LinkEffects,
        signed_ms: Callable[[], int],
        extra_records: Sequence[Callable[[Room], list[Record]]],
        refused: Callable[[str, str], object],
        came_online: Callable[[Room, bytes], None],
    ) -> None:
        """``signed_ms``: the time our batches are signed with (mqchat.daemon.
        control_order.SignedClock); ``extra_records``: more records for every presence
        batch of a room (heads, our join until a commit adds us); ``refused``: counts a
        batch refused here (the drop counter's ``drop``); ``came_online``: a member said
        "online" (repair sends it our heads)."""
        self._store = store
        self._rooms = rooms
        self._work = work
        self._loop = loop
        self._announcing: asyncio.TimerHandle | None = None
        self._offline_due = Deadline(loop, loop.time, self._silence_ends)
        self._identity = identity
        self._name = name
        self.interval_s = interval_s
        self._clock_ms = clock_ms
        self._random = random
        self._jitter = random_module.Random()  # noqa: S311 -- timing jitter, not a secret
        self._member_key = MemberKeyPair.from_identity(identity)
        self._replies: set[str] = set()
        self._link = link
        self._extra_records = tuple(extra_records)
        self._signed_ms = signed_ms
        self.order = SignedTimeOrder(journal=work.on_undo)
        self._refused = refused
        self._came_online = came_online
        self._batches = 0
        self._heard_at: dict[tuple[str, bytes], int] = {}
        """When a member was last heard, where that is later than its stored
        ``last_seen_ms`` (at most SEEN_STORED_EVERY_MS later)."""

    # ------------------------------------------------------------------ sending
    def announce(self, room: Room, state: PresenceState) -> None:
        """Publish one presence batch in ``room``, if the link is up (never queued:
        an announcement that waited out an outage would say nothing true)."""
        if room.epoch is None or room.v2_topic is None or not self._link.connected:
            return
        found: list[Record] = [Presence(state, self.interval_s)]
        if state != PresenceState.LEAVING:
            found.append(MemberKey(self._member_key.public_key))
        for more in self._extra_records:
            found.extend(more(room))
        payload = seal_batch(
            room.epoch,
            self._identity,
            name=self._name,
            records=found,
            sent_ms=self._signed_ms(),
            random=self._random,
            cipher=room.cipher,
        )
        self._link.publish(room.v2_topic, payload, 1)

    def announce_all(self, state: PresenceState) -> None:
        for room in self._rooms:
            self.announce(room, state)

    def start(self) -> None:
        """Say "still here" every interval (±10%); mark the silent offline when the
        first of them is due (members a previous run saw online: at once)."""
        self._announcing = self._loop.call_later(self._next_interval(), self._still_here)
        self._offline_due.at(self._loop.time())

    def _still_here(self) -> None:
        self.announce_all(PresenceState.STILL_HERE)
        self._announcing = self._loop.call_later(self._next_interval(), self._still_here)

    def _silence_ends(self) -> None:
        with self._work.batch():
            self.expire(self._clock_ms())
        for member in self._store.members.online():
            self._offline_at(member)

    def _offline_at(self, member: Member) -> None:
        """Be woken when ``member`` has been silent too long, unless woken before."""
        silent_ms = OFFLINE_AFTER_INTERVALS * member.interval_s * 1000
        due_ms = member.last_seen_ms + silent_ms - self._clock_ms()
        self._offline_due.at(self._loop.time() + max(0, due_ms) / 1000 + OFFLINE_SLACK_S)

    def close(self) -> None:
        if self._announcing is not None:
            self._announcing.cancel()
        self._offline_due.cancel()

    def _next_interval(self) -> float:
        return self.interval_s * self._jitter.uniform(0.9, 1.1)

    # ------------------------------------------------------------------ receiving
    def on_batch(self, room: Room, batch: Batch, now_ms: int) -> None:
        """Any batch says its sender is alive; a presence record says more."""
        if batch.sender_key == self._identity.public_key:
            return
        presence = next((r for r in batch.records if isinstance(r, Presence)), None)
        self._batches += 1
        if not self.order.accept(
            room.name, batch.sender_key, "alive", batch.sent_ms, self._batches
        ):
            # Replayed, or older than what we heard from it (issue 22 item 5): says
            # nothing of whether the sender is here now. (Its texts and control
            # records are counted where they are refused.)
            if presence is not None:
                self._refused("replayed_presence", "older than the sender's last batch")
            return
        member_key = next((r for r in batch.records if isinstance(r, MemberKey)), None)
        before = self._store.members.get(room.name, batch.sender_key)
        leaving = presence is not None and presence.state == PresenceState.LEAVING
        interval = (
            presence.interval_s
            if presence is not None
            else (before.interval_s if before else self.interval_s)
        )
        if before is None and not self._room_for_one_more(room.name):
            self._refused("too_many_members", f"over {MAX_MEMBER_ROWS} in a room")
            return
        member = Member(
            room.name,
            batch.sender_key,
            batch.sender_name,
            member_key.x25519_key if member_key is not None else None,
            now_ms,
            interval,
            not leaving,
        )
        if self._only_seen_again(before, member, presence):
            if len(self._heard_at) >= HEARD_KEPT:
                self._heard_at.clear()  # their stored times are at most 1 s older
            self._heard_at[(room.name, batch.sender_key)] = now_ms
            self._offline_at(member)
            return
        self._heard_at.pop((room.name, batch.sender_key), None)
        self._store.members.save(member)
        if member.online:
            self._offline_at(member)
        if before is None or before.online != member.online:
            reason = "leaving" if leaving else ("joined" if before is None else "announce")
            self._publish(member, reason)
        if presence is not None and presence.state == PresenceState.ONLINE:
            self._reply_soon(room.name)
            self._came_online(room, batch.sender_key)

    @staticmethod
    def _only_seen_again(before: Member | None, now: Member, presence: Presence | None) -> bool:
        """A batch that says nothing new of a member online and stored within the last
        SEEN_STORED_EVERY_MS: its time is kept in memory (``_heard_at``), not written.
        (A write for every batch received cost a lone message ~25 us: issue 24.)"""
        return (
            presence is None
            and before is not None
            and before.online
            and now.last_seen_ms - before.last_seen_ms < SEEN_STORED_EVERY_MS
            and now.name == before.name
            and now.interval_s == before.interval_s
            and now.x25519_key in (None, before.x25519_key)
        )

    def _seen(self, member: Member) -> Member:
        """``member`` with the time it was last heard, stored or not yet."""
        heard = self._heard_at.get((member.room, member.sender_key), 0)
        return member._replace(last_seen_ms=heard) if heard > member.last_seen_ms else member

    def _room_for_one_more(self, room_name: str) -> bool:
        members = self._store.members
        return members.count(room_name) < MAX_MEMBER_ROWS or members.evict_one_offline(room_name)

    def _reply_soon(self, room_name: str) -> None:
        """Answer a member that just came online, so it learns who is here."""
        if room_name in self._replies:
            return
        self._replies.add(room_name)
        delay = self._jitter.uniform(0, REPLY_WITHIN_S)
        self._loop.call_later(delay, self._reply, room_name)

    def _reply(self, room_name: str) -> None:
        self._replies.discard(room_name)
        room = self._rooms.get(room_name)
        if room is not None:
            self.announce(room, PresenceState.STILL_HERE)

    def expire(self, now_ms: int) -> None:
        for stored in self._store.members.online():
            member = self._seen(stored)
            silent_ms = now_ms - member.last_seen_ms
            if silent_ms > OFFLINE_AFTER_INTERVALS * member.interval_s * 1000:
                offline = member._replace(online=False)
                self._heard_at.pop((member.room, member.sender_key), None)
                self._store.members.save(offline)
                self._publish(offline, "timeout")

    def _publish(self, member: Member, reason: str) -> None:
        if self._rooms.get(member.room) is None:
            return
        self._work.publish(
            member.room, {"type": "presence", **self._view(member), "reason": reason}
        )

    # ------------------------------------------------------------------ asking
    def _verified(self, member: Member) -> bool | None:
        """True: the member's key is the one pinned for its name; False: another key
        is; None: nothing is pinned for the name yet (no message of theirs received,
        no key trusted), which is not a warning."""
        pin = self._store.memory.pin(member.room, member.name)
        return None if pin is None else pin.key == member.sender_key

    def _view(self, member: Member) -> dict[str, Any]:
        return {
            "room": member.room,
            "name": member.name,
            "fingerprint": fingerprint(member.sender_key),
            "verified": self._verified(member),
            "online": member.online,
            "last_seen": iso_ts(member.last_seen_ms),
        }

    def who(self, room: Room) -> dict[str, Any]:
        me = {
            "room": room.name,
            "name": self._name,
            "fingerprint": self._identity.fingerprint,
            "verified": True,
            "online": True,
            "last_seen": iso_ts(self._clock_ms()),
            "you": True,
        }
        others = [self._view(self._seen(m)) for m in self._store.members.in_room(room.name)]
        return {
            "room": room.name,
            "members": [me, *others],
            "interval_s": self.interval_s,
            "offline_after_s": OFFLINE_AFTER_INTERVALS * self.interval_s,
        }

    def forget(self, room: Room) -> None:
        self._store.members.forget_room(room.name)
