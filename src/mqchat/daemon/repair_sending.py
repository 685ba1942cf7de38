"""The sending side of repair: heads that say where our streams stand, and answers
to repair requests for our key (docs/protocol.md §20, §21).

Heads of a room's current stream go out 1 s, 10 s and 60 s after the last send
(each reset by a new send), in presence batches when nothing of the room waits
in the outbox, at start (``final``) for the previous streams, and within
``HEADS_ON_ONLINE_S`` of another member saying "online", so that a member back
from an outage (or from a broker that lost its queue) learns at once what it
lacks. A repair request for our key is answered from the ``sent`` table with
repaired texts, within the requester's budget (mqchat.daemon.repair_budget), and
with heads when some of the numbers are no longer held. Everything is queued in
the outbox as records, sealed with whatever else waits for the room, and pushed
at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from mqchat.daemon.repair_budget import RepairBudget
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import OutboxEntry, Store
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.protocol import gaps
from mqchat.protocol.records import Heads, Kind, Record, RepairRequest, record_body

log = logging.getLogger(__name__)

HEADS_AFTER_S = (1.0, 10.0, 60.0)
"""Heads of the current stream go out this long after the last send (§21)."""
HEADS_ON_ONLINE_S = 0.5
"""Heads go out this long after a member says "online": one for all that do in it."""
ANSWER_ONCE_S = 0.5
"""The same numbers asked again within this are answered once (the answer went
to the whole room)."""
FINAL_HEADS_STREAMS = 4
"""Previous streams of a room announced with heads(final) at start."""


class RepairSender:
    def __init__(
        self,
        *,
        store: Store,
        rooms: RoomRegistry,
        work: UnitOfWork,
        fill_outbox: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._work = work
        self._fill_outbox = fill_outbox
        self._loop = loop
        self.counts = {"asked": 0, "republished": 0, "repaired": 0, "lost": 0}
        """What repair did, for `status` (the receiving side counts here too)."""
        self._monotonic = monotonic
        self.budget = RepairBudget(monotonic)
        self._answered: deque[tuple[float, str, int, int, int]] = deque()
        self._heads_timers: dict[str, tuple[asyncio.TimerHandle, int]] = {}
        self._heads_quiet_at: dict[str, float] = {}
        """When a room's burst of texts is 1 s old, on the loop's clock."""
        self._online_heads: set[str] = set()

    # ------------------------------------------------------------------ answering
    def answer(self, room: Room, requester: bytes, record: RepairRequest) -> None:
        """Republish what ``requester`` asked of our stream, within its budget."""
        now = self._monotonic()
        while self._answered and self._answered[0][0] < now - ANSWER_ONCE_S:
            self._answered.popleft()
        recent = [
            (first, last)
            for _, r, s, first, last in self._answered
            if r == room.name and s == record.stream
        ]
        records, size = self.budget.allowance(requester)
        spent_records = spent_size = 0
        stream = record.stream
        trail, lead = self._edges(room, stream)
        if trail > lead and stream != room.stream:
            # Nothing of this old stream is held any more (purged, or a lost
            # database): say so for every number asked.
            lead = max(lead, *(last for _, last in record.ranges))
            trail = lead + 1
        below_trail = False
        for first, last in record.ranges:
            for lo, hi in _subtract((first, last), recent):
                if lo < trail:
                    below_trail = True
                left = records - spent_records
                if left <= 0 or spent_size >= size:
                    break
                bodies = self._store.sent.between(room.name, stream, lo, hi, left)
                queued = 0
                for body in bodies:
                    if spent_size + len(body) > size:
                        break
                    self._queue_body(room, Kind.REPAIRED_TEXT, body)
                    queued += 1
                    spent_size += len(body)
                spent_records += queued
                if queued:
                    # Cut short by the budget: only what went out counts as answered.
                    whole = queued == len(bodies) and len(bodies) < left
                    self._answered.append(
                        (now, room.name, stream, lo, hi if whole else lo + queued - 1)
                    )
        self.budget.spend(requester, spent_records, spent_size)
        self.counts["republished"] += spent_records
        if below_trail:
            final = stream != room.stream
            self._queue(room, Heads(stream, trail, lead, final))

    def _edges(self, room: Room, stream: int) -> tuple[int, int]:
        """(trail, lead) of one of our streams in ``room``; trail = lead + 1 when none is held."""
        sent = self._store.sent
        lead = room.sent_seq if stream == room.stream else sent.last_seq(room.name, stream)
        trail = sent.trail(room.name, stream)
        return (lead + 1 if trail is None else trail), lead

    def _queue(self, room: Room, record: Record) -> None:
        self._queue_body(room, *record_body(record))

    def _queue_body(self, room: Room, kind: int, body: bytes) -> None:
        if room.v2_topic is not None:
            self._store.outbox.add(OutboxEntry(0, room.name, room.v2_topic, room.qos, body, kind))
            # Pushed at once (after the commit, when in a batch): a repair answer
            # queued by a sender that has nothing else to send must not wait for
            # its next message (issue 22 item 8).
            self._fill_outbox()

    def ask(self, room: Room, request: RepairRequest) -> None:
        """Queue our own repair request (mqchat.daemon.repair)."""
        self._queue(room, request)

    # ------------------------------------------------------------------ heads
    def sent(self, room: Room) -> None:
        """Texts went into the outbox: heads follow 1 s after the burst, then 10 s, 60 s.

        While the first timer waits, a text only moves when it is due; the timer
        looks when it fires (a timer cancelled and made again cost every send
        ~3 us and left a cancelled handle in the loop's heap: issue 24)."""
        self._heads_quiet_at[room.name] = self._loop.time() + HEADS_AFTER_S[0]
        old = self._heads_timers.get(room.name)
        if old is not None and old[1] == 0:
            return
        if old is not None:
            old[0].cancel()
        self._schedule_heads(room.name, 0)

    def _schedule_heads(self, room_name: str, stage: int) -> None:
        if stage >= len(HEADS_AFTER_S):
            return
        delay = HEADS_AFTER_S[stage] - (HEADS_AFTER_S[stage - 1] if stage else 0.0)
        handle = self._loop.call_later(delay, self._heads_due, room_name, stage)
        self._heads_timers[room_name] = (handle, stage)

    def _heads_due(self, room_name: str, stage: int) -> None:
        if stage == 0:
            left = self._heads_quiet_at.get(room_name, 0.0) - self._loop.time()
            if left > 0:  # texts went since the timer was set: 1 s after the last
                handle = self._loop.call_later(left, self._heads_due, room_name, 0)
                self._heads_timers[room_name] = (handle, 0)
                return
        self._heads_timers.pop(room_name, None)
        self._queue_heads(room_name)
        self._schedule_heads(room_name, stage + 1)

    def _queue_heads(self, room_name: str) -> None:
        room = self._rooms.get(room_name)
        if room is None or room.stream == 0 or room.legacy:
            return
        try:
            with self._work.batch():
                trail, lead = self._edges(room, room.stream)
                self._queue(room, Heads(room.stream, trail, lead))
        except Exception:
            log.exception("could not queue heads")

    def came_online(self, room: Room, member: bytes) -> None:
        """Another member said "online": it may have missed what we sent while it was
        away (or while the broker lost its queue), so heads go out at once rather
        than at our next message. One heads for every "online" of the next 0.5 s."""
        if room.name in self._online_heads or room.stream == 0:
            return
        self._online_heads.add(room.name)
        self._loop.call_later(HEADS_ON_ONLINE_S, self._online_heads_due, room.name)

    def _online_heads_due(self, room_name: str) -> None:
        self._online_heads.discard(room_name)
        self._queue_heads(room_name)

    def presence_heads(self, room: Room) -> list[Record]:
        """Heads of our current stream for a presence batch, when nothing of the room
        waits in the outbox (else they would announce numbers not yet sent)."""
        if room.stream == 0 or room.legacy or self._store.outbox.waiting(room.name):
            return []
        trail, lead = self._edges(room, room.stream)
        return [Heads(room.stream, trail, lead)]

    def final_heads_at_start(self) -> None:
        """heads(final) of each room's previous streams: a receiver learns of a lost
        tail of them even after our crash (§15)."""
        with self._work.batch():
            for room in self._rooms:
                if room.legacy or room.v2_topic is None:
                    continue
                streams = self._store.sent.streams(room.name)[-FINAL_HEADS_STREAMS:]
                for stream, trail, lead in streams:
                    if stream != room.stream:
                        self._queue(room, Heads(stream, trail, lead, True))

    def forget(self, room: Room) -> None:
        self._heads_quiet_at.pop(room.name, None)
        old = self._heads_timers.pop(room.name, None)
        if old is not None:
            old[0].cancel()


def _subtract(wanted: gaps.Range, done: list[gaps.Range]) -> list[gaps.Range]:
    """``wanted`` less every range of ``done``."""
    parts = [wanted]
    for lo, hi in done:
        parts = [
            piece
            for first, last in parts
            for piece in ((first, min(last, lo - 1)), (max(first, hi + 1), last))
            if piece[0] <= piece[1]
        ]
    return parts
