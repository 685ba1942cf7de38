"""Repairing what the broker dropped, end to end (docs/protocol.md §14.2, §14.3, §20, §21).

Receiving: every text and heads record of another member passes through the
pure rules of mqchat.protocol.gaps, per (sender key, room, stream); the state
is in the store (mqchat.daemon.store.gaps). A text after a gap is held back
until the gap is filled or given up, then shown in the sender's order. Missing
numbers are asked for in the room after a random 0.2-1 s, then 2, 4 ... 64 s,
then every 10 minutes; a number is lost when the sender's heads say it no
longer holds it, or after ``give_up_s`` (24 h by default): when to ask and
when to give up is mqchat.daemon.repair_schedule's, woken by a deadline.

What a sender (or a key posing as one) can make us track is bounded: a heads
claims at most ``MAX_HEADS_AHEAD`` numbers past what we know, a sender key has
at most ``MAX_WANTING_PER_SENDER`` streams with missing numbers, and keys not
pinned to their name share ``MAX_WANTING_UNPINNED`` such streams
(mqchat.daemon.repair_wanting). Losses are told by mqchat.daemon.repair_losses.

Sending (heads, answers to requests): mqchat.daemon.repair_sending.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from mqchat.daemon.repair_losses import LossNotices
from mqchat.daemon.repair_schedule import RepairSchedule
from mqchat.daemon.repair_sending import RepairSender
from mqchat.daemon.repair_wanting import WantingIndex
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import Store, StoredMessage, StreamRow
from mqchat.daemon.store.gaps import StreamId
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.protocol import gaps
from mqchat.protocol.records import Heads, RepairRequest

log = logging.getLogger(__name__)


MAX_HELD = 4096
"""Texts held back behind a gap of one stream at most; past this the gap is lost."""
MAX_HEADS_AHEAD = gaps.MAX_MISSING
"""Numbers a heads may claim past the highest we know of its stream (4,096); a heads
claiming more is dropped (``dropped.heads_too_far``)."""


class Repair:
    def __init__(
        self,
        *,
        store: Store,
        rooms: RoomRegistry,
        own_key: bytes,
        work: UnitOfWork,
        clock_ms: Callable[[], int],
        give_up_s: int,
        fill_outbox: Callable[[], None],
        sending: RepairSender,
        show: Callable[[Room, StoredMessage], None],
        loop: asyncio.AbstractEventLoop,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``show``: numbers and shows a message (mqchat.daemon.timeline); ``sending``:
        heads and answers (mqchat.daemon.repair_sending), sharing our counts."""
        self._store = store
        self._gaps = store.gaps
        self._rooms = rooms
        self._own_key = own_key
        self._work = work
        self._clock_ms = clock_ms
        self._fill_outbox = fill_outbox
        self._monotonic = monotonic
        self._show = show
        self._wanting = WantingIndex(store.memory)
        self._schedule = RepairSchedule(
            gaps=store.gaps,
            give_up_s=give_up_s,
            clock_ms=clock_ms,
            monotonic=monotonic,
            loop=loop,
            run=self._run_due,
            unwanted=self._wanting.remove,
        )
        self._sending = sending
        self.counts = sending.counts
        self._losses = LossNotices(store.memory, work, self.counts, monotonic)

    # ------------------------------------------------------------------ status
    def count_mark(self) -> dict[str, int]:
        """The counts now, for ``count_undo``."""
        return dict(self.counts)

    def count_undo(self, mark: dict[str, int]) -> None:
        """The counts as they were at ``mark`` (in place: the sender shares them)."""
        self.counts.clear()
        self.counts.update(mark)

    def status(self) -> dict[str, Any]:
        wanting = self._gaps.wanting()
        return {
            **self.counts,
            "missing": sum(row.gaps.missing_count for _, row in wanting),
            "held": sum(row.held for _, row in wanting),
        }

    # ------------------------------------------------------------------ tracking
    def _put(self, sid: StreamId, row: StreamRow, *, was_missing: bool = True) -> None:
        """Store a stream's row and keep the indexes of what is wanted in step (they
        need no update when nothing was or is missing: a text in order, the usual)."""
        self._gaps.put(sid, row)
        if row.gaps.missing:
            self._wanting.add(sid, row.name)
        elif not was_missing:
            return
        else:
            self._wanting.remove(sid)
        self._schedule.changed(sid)

    # ------------------------------------------------------------------ receiving
    def admit(
        self, room: Room, sender_key: bytes, name: str, stream: int, seq: int, repaired: bool
    ) -> str:
        """Where a text of another member goes: ``"show"``, ``"hold"``, or a drop reason."""
        sid = (room.name, sender_key, stream)
        row = self._gaps.get(sid)
        if row is not None and not repaired and seq == row.gaps.hw + 1 and not row.gaps.missing:
            # The usual case, what gaps.receive's "new" step does for it: the next
            # number of a stream with nothing missing is shown, and nothing is wanted.
            next_gaps = gaps.StreamGaps(seq, (), row.gaps.final)
            self._gaps.put(sid, StreamRow(next_gaps, row.held, name))
            return "show"
        if row is None:
            floor = self._gaps.floor(room.name, sender_key)
            if repaired and floor is None:
                return "repaired_unwanted"  # from before we heard this sender (§20)
            if floor is not None and stream < floor:
                return "replay"
            if floor is None:
                self._gaps.set_floor(room.name, sender_key, stream)
            heard = floor is not None and (seq == 1 or self._wanting.may_add(sid, name))
            row = StreamRow(gaps.start(seq, heard_before=heard), 0, name)
        step = gaps.receive(row.gaps, seq, self._clock_ms())
        if step.outcome == "old":
            # A number the stream holds: the broker's copy of what came (routine after
            # a reconnect), or the sender's own re-signing of a number (harmless:
            # dropped). Its id is not asked (docs/security.md, "Replays").
            return "repaired_duplicate" if repaired else "duplicate"
        g, lost = step.gaps, step.lost
        if g.missing and not row.gaps.missing and not self._wanting.may_add(sid, name):
            # Over the sender's bound: this gap is not waited for.
            g, lost = (
                gaps.StreamGaps(g.hw, (), g.final),
                lost + tuple((gap.first, gap.last) for gap in g.missing),
            )
        hold = g.holds_back(seq)
        self._put(sid, StreamRow(g, row.held + hold, name), was_missing=bool(row.gaps.missing))
        if repaired:
            self.counts["repaired"] += 1
        self._losses.lost(sid, name, lost)
        return "hold" if hold else "show"

    def hold(self, sender_key: bytes, stream: int, seq: int, message: StoredMessage) -> None:
        self._store.held.add(stream, seq, sender_key, message)

    def release(self, room: Room, sender_key: bytes, stream: int) -> None:
        """Show what waited behind gaps that are filled or given up, in the sender's order."""
        sid = (room.name, sender_key, stream)
        row = self._gaps.get(sid)
        if row is None or row.held == 0:
            return
        g = row.gaps
        while row.held > MAX_HELD and g.missing:
            g, lost = gaps.give_up_first(g)
            self._losses.lost(sid, row.name, lost)
        below = g.first_missing
        ready = self._store.held.take(sid, below)
        self._put(sid, StreamRow(g, max(0, row.held - len(ready)), row.name))
        for message in ready:
            self._show(room, message)

    def on_heads(self, room: Room, sender_key: bytes, name: str, record: Heads) -> str | None:
        """Heads of another member's stream; a drop reason, or None."""
        if sender_key == self._own_key:
            return None
        sid = (room.name, sender_key, record.stream)
        row = self._gaps.get(sid)
        if row is None:
            floor = self._gaps.floor(room.name, sender_key)
            if floor is not None and record.stream < floor:
                return None  # a stream from before we heard the sender (heads(final) at its start)
            start = gaps.start_from_heads(record.lead, heard_before=floor is not None)
            row = StreamRow(start, 0, name)
        if record.lead > row.gaps.hw + MAX_HEADS_AHEAD:
            return "heads_too_far"
        if record.lead > row.gaps.hw and not self._wanting.may_add(sid, name):
            return "too_many_streams"
        if self._gaps.get(sid) is None and self._gaps.floor(room.name, sender_key) is None:
            self._gaps.set_floor(room.name, sender_key, record.stream)
        g, lost = gaps.heads(
            row.gaps,
            trail=record.trail,
            lead=record.lead,
            final=record.final,
            now_ms=self._clock_ms(),
        )
        if g != row.gaps or self._gaps.get(sid) is None:
            self._put(sid, StreamRow(g, row.held, name))
        self._losses.lost(sid, name, lost)
        self.release(room, sender_key, record.stream)
        return None

    # ------------------------------------------------------------------ asking
    def start(self) -> None:
        """What a previous run left missing: asked for when due, given up when too old.
        Our own previous streams' last numbers go out too (heads(final), §15)."""
        self._sending.final_heads_at_start()
        self.reload()

    def reload(self) -> None:
        """Which streams miss numbers is what the store says: at start, and after a
        rollback (the schedule drops what no longer misses any when it next looks)."""
        self._wanting.clear()
        for sid, row in self._gaps.wanting():
            if row.gaps.missing:
                self._wanting.add(sid, row.name)
            self._schedule.changed(sid)

    def close(self) -> None:
        self._schedule.close()

    def _run_due(self, expired: list[StreamId], due: list[StreamId], now: float) -> None:
        now_ms = self._clock_ms()
        with self._work.batch():
            for sid in expired:
                self._expire(sid, now_ms)
            for sid in due:
                self._ask(sid, now)
        self._fill_outbox()

    def _expire(self, sid: StreamId, now_ms: int) -> None:
        room = self._rooms.get(sid[0])
        row = self._gaps.get(sid)
        if room is None or row is None:
            self._schedule.drop(sid)
            return
        g, lost = gaps.expire(row.gaps, now_ms=now_ms, give_up_ms=self._schedule.give_up_ms)
        self._put(sid, StreamRow(g, row.held, row.name))
        self._schedule.expiry(sid, g)
        self._losses.lost(sid, row.name, lost)
        self.release(room, sid[1], sid[2])

    def _ask(self, sid: StreamId, now: float) -> None:
        room = self._rooms.get(sid[0])
        row = self._gaps.get(sid)
        if room is None or row is None or not row.gaps.missing:
            self._schedule.drop(sid)
            return
        self._sending.ask(room, RepairRequest(sid[1], sid[2], gaps.to_ask(row.gaps)))
        self.counts["asked"] += 1
        self._schedule.asked(sid, now)

    def on_request(self, room: Room, from_key: bytes, record: RepairRequest) -> None:
        """A repair request seen in the room (newer than the last from its sender:
        mqchat.daemon.control_order): ours to answer, or another member's."""
        if from_key == self._own_key:
            return
        if record.sender_key == self._own_key:
            self._sending.answer(room, from_key, record)
            return
        self._schedule.asked_by_another((room.name, record.sender_key, record.stream), record)

    def forget(self, room: Room) -> None:
        """``leave``: what we tracked of the room's senders goes."""
        self._gaps.forget_room(room.name)
        for sid in self._schedule.forget(room.name):
            self._wanting.remove(sid)
