"""Sending a member left behind what it missed (docs/protocol.md §26, §28).

A verified batch on an epoch the room has left, from someone who was in it, is
answered with the roster of that epoch's state and the winning commit out of
it, verbatim, on that epoch's topic; a newcomer's join with the roster of the
state it joins. Each answer waits a random 0.2-1 s and is held back when
another member's arrives first; at most one per room, epoch and member left
behind in 5 s (an answer to one member must not silence the next one: two
members may fall behind the same epoch seconds apart), and at most 4 per room
and epoch in 5 s however many keys speak there (a member with many throw-away
keys cannot make the others answer more). A newcomer with no
roster says its join again, with back-off.
"""

from __future__ import annotations

import asyncio
import logging
import random as random_module
from collections.abc import Callable

from mqchat.daemon.epoch_keeper import EpochKeeper
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.publisher import LinkEffects
from mqchat.daemon.room_logs import RoomLogs
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.protocol.batch import Batch, seal_batch
from mqchat.protocol.epochs import EpochKeys
from mqchat.protocol.membership import Join, Roster
from mqchat.protocol.records import PresenceState
from mqchat.protocol.roster import NO_STATE, RoomState
from mqchat.protocol.signing import SigningIdentity

log = logging.getLogger(__name__)

ANSWER_DELAY_S = (0.2, 1.0)
"""A member left behind is answered after a random delay in this range, so that one
member's answer can stand for all (an answer seen meanwhile holds ours back)."""
ANSWER_EVERY_S = 5.0
"""At most one answer per room, old epoch and asker (or state, for rosters) in this time."""
ANSWERS_PER_EPOCH = 4
"""Answers per room and old epoch in ANSWER_EVERY_S, whoever asks."""
ASKERS_KEPT = 4096
"""Askers remembered for those limits; past it, those not heard from in 5 s are forgotten."""
JOIN_AGAIN_S = 1.0
JOIN_TRIES = 8
"""A newcomer with no roster says its join again after 2, 4, … 256 s (8 times)."""


class CatchUp:
    def __init__(
        self,
        *,
        logs: RoomLogs,
        rooms: RoomRegistry,
        keeper: EpochKeeper,
        presence: PresenceKeeper,
        identity: SigningIdentity,
        name: str,
        clock_ms: Callable[[], int],
        random: Callable[[int], bytes],
        link: LinkEffects,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._logs = logs
        self._rooms = rooms
        self._keeper = keeper
        self._presence = presence
        self._identity = identity
        self._name = name
        self._clock_ms = clock_ms
        self._random = random
        self._jitter = random_module.Random()  # noqa: S311 -- timing jitter, not a secret
        self._asked: dict[tuple[str, str, bytes], float] = {}  # (room, tag, asker) -> answered
        self._answer_seen: dict[tuple[str, str], float] = {}  # (room, tag) -> last answer heard
        self._answers: dict[tuple[str, str], list[float]] = {}  # (room, tag) -> answers planned
        self._rosters_seen: dict[tuple[str, bytes], float] = {}
        self._link = link
        self._loop = loop

    def _now(self) -> float:
        return self._loop.time()

    # ------------------------------------------------------------------ old epochs
    def may_ask(self, room: Room, batch: Batch) -> bool:
        """Who is sent the way on from an old epoch: a member of that epoch's state, a
        newcomer admitted into it, anyone in an epoch that had no state (§28)."""
        state_hash = self._logs.tags(room).get(batch.room_tag)
        if state_hash is None or state_hash == NO_STATE:
            return True
        state = self._logs.book(room).state(state_hash)
        if state is None or state.member(batch.sender_key) is not None:
            return True
        return any(isinstance(r, Join) and r.state_hash == state_hash for r in batch.records)

    def answered(self, room: Room, tag: str) -> None:
        """A commit out of ``tag``'s epoch arrived again: someone answered, and whoever
        listens on that epoch's topic has it."""
        self._answer_seen[(room.name, tag)] = self._now()

    def answer_later(self, room: Room, tag: str, asker: bytes) -> None:
        """``asker`` still speaks in an epoch the room has left: send it the way on."""
        now = self._now()
        key = (room.name, tag, asker)
        last = self._asked.get(key)
        if last is not None and now - last < ANSWER_EVERY_S:
            return
        planned = [t for t in self._answers.get(key[:2], ()) if now - t < ANSWER_EVERY_S]
        if len(planned) >= ANSWERS_PER_EPOCH:
            return
        if len(self._asked) >= ASKERS_KEPT:
            self._asked = {k: t for k, t in self._asked.items() if now - t < ANSWER_EVERY_S}
            self._answers = {
                k: kept
                for k, times in self._answers.items()
                if (kept := [t for t in times if now - t < ANSWER_EVERY_S])
            }
        self._answers[key[:2]] = [*planned, now]
        self._asked[key] = now
        delay = self._jitter.uniform(*ANSWER_DELAY_S)
        self._loop.call_later(delay, self._answer, room.name, tag, now)

    def _answer(self, room_name: str, tag: str, asked: float) -> None:
        room = self._rooms.get(room_name)
        if room is None or not self._link.connected:
            return
        if self._answer_seen.get((room_name, tag), 0.0) > asked:
            return  # another member answered meanwhile
        state_hash = self._logs.tags(room).get(tag)
        if state_hash is None:
            return
        book = self._logs.book(room)
        nxt = next((c for c in book.path() if c.prev == state_hash), None)
        row = self._logs.row(room, nxt.id) if nxt is not None else None
        if nxt is None or row is None or row.payload is None or row.topic is None:
            return
        state = book.state(state_hash)
        if state is not None:
            self._send_roster(room, tag, state, row.topic)
        self._link.publish(row.topic, row.payload, 1)
        self._answer_seen[(room_name, tag)] = self._now()
        log.info("sent a member left behind the commit to epoch %d", nxt.state.epoch)

    # ------------------------------------------------------------------ rosters
    def roster_seen(self, room: Room, state_hash: bytes) -> None:
        self._rosters_seen[(room.name, state_hash)] = self._now()

    def roster_later(self, room: Room, state: RoomState) -> None:
        """A newcomer joined ``state``: send it the roster, unless another member does."""
        asked = self._now()
        seen = self._rosters_seen.get((room.name, state.hash))
        if seen is not None and asked - seen < ANSWER_EVERY_S:
            return
        delay = self._jitter.uniform(*ANSWER_DELAY_S)
        self._loop.call_later(delay, self._roster_now, room.name, state, asked)

    def _roster_now(self, room_name: str, state: RoomState, asked: float) -> None:
        """The roster goes out in its own epoch, where the newcomer listens."""
        room = self._rooms.get(room_name)
        if room is None or self._rosters_seen.get((room_name, state.hash), 0.0) > asked:
            return
        tag = next((t for t, h in self._logs.tags(room).items() if h == state.hash), None)
        row = self._keeper.row(room, tag) if tag is not None else None
        if tag is not None and row is not None:
            self._send_roster(room, tag, state, row.topic)

    def _send_roster(self, room: Room, tag: str, state: RoomState, topic: str) -> None:
        row = self._keeper.row(room, tag)
        if row is None or row.secret is None:
            return
        payload = seal_batch(
            EpochKeys(row.secret, row.epoch),
            self._identity,
            name=self._name,
            records=[Roster(state)],
            sent_ms=self._clock_ms(),
            random=self._random,
            cipher=room.cipher,
        )
        self.roster_seen(room, state.hash)
        self._link.publish(topic, payload, 1)

    # ------------------------------------------------------------------ our join
    def join_again_later(self, room: Room) -> None:
        self._loop.call_later(JOIN_AGAIN_S, self._join_again, room.name, 1)

    def _join_again(self, room_name: str, attempt: int) -> None:
        """No roster yet (lost, or nobody answered): say the join again, with back-off."""
        room = self._rooms.get(room_name)
        if room is None or self._logs.book(room).expect is None or attempt > JOIN_TRIES:
            return
        self._presence.announce(room, PresenceState.ONLINE)
        delay = JOIN_AGAIN_S * 2**attempt
        self._loop.call_later(delay, self._join_again, room_name, attempt + 1)
