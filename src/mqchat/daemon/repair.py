"""Repairing what the broker dropped, end to end (docs/protocol.md §14.2, §14.3, §20, §21).

Receiving: every text and heads record of another member passes through the
pure rules of mqchat.protocol.gaps, per (sender key, room, stream); the state
is in the store (mqchat.daemon.store.gaps). A text after a gap is held back
until the gap is filled or given up, then shown in the sender's order. Missing
numbers are asked for in the room after a random 0.2-1 s, then 2, 4 ... 64 s,
then every 10 minutes; a number is lost when the sender's heads say it no
longer holds it, or after ``give_up_s`` (24 h by default). Asks and give-ups
wait in heaps by when they are due: a pass costs what is due, not what is tracked.

What a sender (or a key posing as one) can make us track is bounded: a heads
claims at most ``MAX_HEADS_AHEAD`` numbers past what we know, a sender key has
at most ``MAX_WANTING_PER_SENDER`` streams with missing numbers, and keys not
pinned to their name share ``MAX_WANTING_UNPINNED`` such streams. A request of
another member for the same numbers postpones ours (PGM's NAK suppression) only
when it covers every number we miss, and at most ``MAX_SUPPRESSED`` times.

Sending (heads, answers to requests): mqchat.daemon.repair_sending.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random as random_module
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from mqchat.daemon.repair_budget import PER_REQUESTER_RECORDS_S
from mqchat.daemon.repair_sending import RepairSender
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import Store, StoredMessage, StreamRow
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.protocol import gaps
from mqchat.protocol.ipc import notice_event
from mqchat.protocol.records import Heads, RepairRequest
from mqchat.protocol.signing import fingerprint, format_fingerprint

log = logging.getLogger(__name__)

StreamId = tuple[str, bytes, int]

ASK_FIRST_S = (0.2, 1.0)
"""The first request for a gap goes out after a random delay in this range, so
that one member's request can stand for all (§20)."""
ASK_BACKOFF_S = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
ASK_EVERY_S = 600.0
"""After the back-off, a gap is asked for this often until it is repaired or lost."""
MAX_HELD = 4096
"""Texts held back behind a gap of one stream at most; past this the gap is lost."""
MAX_HEADS_AHEAD = gaps.MAX_MISSING
"""Numbers a heads may claim past the highest we know of its stream (4,096); a heads
claiming more is dropped (``dropped.heads_too_far``)."""
MAX_WANTING_PER_SENDER = 4
"""Streams with missing numbers of one sender key in a room; past it (or the two
below) a heads opening another is dropped (``too_many_streams``), a text's gap lost."""
MAX_WANTING_UNPINNED = 256  # of all keys not pinned to their name
MAX_WANTING = 1024  # of all keys (a fresh name is pinned to a fresh key)
MAX_SUPPRESSED = 3
"""Times another member's request may postpone ours for one gap."""
TICK_S = 0.1
LOG_LOST_EVERY_S = 10.0


class Asking(NamedTuple):
    next_at: float
    step: int
    suppressed: int = 0


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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._gaps = store.gaps
        self._rooms = rooms
        self._own_key = own_key
        self._work = work
        self._clock_ms = clock_ms
        self.give_up_ms = give_up_s * 1000
        self._fill_outbox = fill_outbox
        self._monotonic = monotonic
        self._jitter = random_module.Random()  # noqa: S311 -- timing jitter, not a secret
        self.show: Callable[[Room, StoredMessage], None] = lambda room, message: None
        """Numbers and shows a message (the inbox sets it)."""
        self.counts = {"asked": 0, "republished": 0, "repaired": 0, "lost": 0}
        self._lost_logged_at, self._lost_unlogged = float("-inf"), 0
        self.sending = RepairSender(
            store=store,
            rooms=rooms,
            work=work,
            fill_outbox=fill_outbox,
            counts=self.counts,
            monotonic=monotonic,
        )
        self._changed: set[StreamId] = set()
        self._asking: dict[StreamId, Asking] = {}
        self._ask_heap: list[tuple[float, int, StreamId]] = []
        self._expiry_heap: list[tuple[int, int, StreamId]] = []
        self._order = itertools.count()  # ties in the heaps
        self._wanting: dict[tuple[str, bytes], set[int]] = {}
        """Streams with missing numbers, per (room, sender key)."""
        self._unpinned: set[StreamId] = set()  # of those, of keys not pinned to their name

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        wanting = self._gaps.wanting()
        return {
            **self.counts,
            "missing": sum(row.gaps.missing_count for _, row in wanting),
            "held": sum(row.held for _, row in wanting),
        }

    # ------------------------------------------------------------------ tracking
    def _pinned(self, room: str, name: str, key: bytes) -> bool:
        pin = self._store.memory.pin(room, name)
        return pin is not None and pin.key == key

    def _may_want(self, sid: StreamId, name: str) -> bool:
        """Whether one more stream of ``sid``'s sender may have missing numbers."""
        room, key, stream = sid
        streams = self._wanting.get((room, key), set())
        if stream in streams:
            return True
        if len(streams) >= MAX_WANTING_PER_SENDER:
            return False
        if sum(len(wanted) for wanted in self._wanting.values()) >= MAX_WANTING:
            return False
        return self._pinned(room, name, key) or len(self._unpinned) < MAX_WANTING_UNPINNED

    def _put(self, sid: StreamId, row: StreamRow) -> None:
        """Store a stream's row and keep the indexes of what is wanted in step."""
        self._gaps.put(sid, row)
        room, key, stream = sid
        if row.gaps.missing:
            self._wanting.setdefault((room, key), set()).add(stream)
            if not self._pinned(room, row.name, key):
                self._unpinned.add(sid)
        else:
            self._unwant(sid)
        self._changed.add(sid)

    def _unwant(self, sid: StreamId) -> None:
        streams = self._wanting.get(sid[:2])
        if streams is not None:
            streams.discard(sid[2])
            if not streams:
                del self._wanting[sid[:2]]
        self._unpinned.discard(sid)

    # ------------------------------------------------------------------ receiving
    def admit(
        self, room: Room, sender_key: bytes, name: str, stream: int, seq: int, repaired: bool
    ) -> str:
        """Where a text of another member goes: ``"show"``, ``"hold"``, or a drop reason."""
        sid = (room.name, sender_key, stream)
        row = self._gaps.get(sid)
        if row is None:
            floor = self._gaps.floor(room.name, sender_key)
            if repaired and floor is None:
                return "repaired_unwanted"  # from before we heard this sender (§20)
            if floor is not None and stream < floor:
                return "replay"
            if floor is None:
                self._gaps.set_floor(room.name, sender_key, stream)
            heard = floor is not None and (seq == 1 or self._may_want(sid, name))
            row = StreamRow(gaps.start(seq, heard_before=heard), 0, name)
        step = gaps.receive(row.gaps, seq, self._clock_ms())
        if step.outcome == "old":
            return "repaired_duplicate" if repaired else "replay"
        g, lost = step.gaps, step.lost
        if g.missing and not row.gaps.missing and not self._may_want(sid, name):
            # Over the sender's bound: this gap is not waited for.
            g, lost = (
                gaps.StreamGaps(g.hw, (), g.final),
                lost + tuple((gap.first, gap.last) for gap in g.missing),
            )
        hold = g.holds_back(seq)
        self._put(sid, StreamRow(g, row.held + hold, name))
        if repaired:
            self.counts["repaired"] += 1
        self._lost(sid, name, lost)
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
            self._lost(sid, row.name, lost)
        below = g.first_missing
        ready = self._store.held.take(sid, below)
        self._put(sid, StreamRow(g, max(0, row.held - len(ready)), row.name))
        for message in ready:
            self.show(room, message)

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
        if record.lead > row.gaps.hw and not self._may_want(sid, name):
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
        self._lost(sid, name, lost)
        self.release(room, sender_key, record.stream)
        return None

    def _lost(self, sid: StreamId, name: str, ranges: tuple[gaps.Range, ...]) -> None:
        if not ranges:
            return
        room, key, stream = sid
        n = gaps.count(ranges)
        self.counts["lost"] += n
        fp = fingerprint(key)
        what = "message" if n == 1 else "messages"
        verified = self._pinned(room, name, key)
        # A key not pinned to the name it claims must not put a loss under that
        # name unmarked (issue 22 item 4).
        who = name if verified else f"{name}? (key {format_fingerprint(fp)}, not pinned to {name})"
        now = self._monotonic()
        self._lost_unlogged += n
        if now - self._lost_logged_at >= LOG_LOST_EVERY_S:
            # A member's heads can give numbers up again and again: one line per 10 s.
            log.warning("%d messages could not be repaired; shown as lost", self._lost_unlogged)
            self._lost_logged_at, self._lost_unlogged = now, 0
        self._work.publish(
            room,
            notice_event(
                room,
                "lost",
                f"{n} {what} from {who} in {room} could not be repaired and are lost "
                f"(the sender no longer has them, or did not answer in time)",
                sender=name,
                fingerprint=fp,
                verified=verified,
                count=n,
                stream=stream,
                ranges=[list(r) for r in ranges],
            ),
        )

    # ------------------------------------------------------------------ asking
    async def run(self) -> None:
        """Ask for what is missing when it is due; give up what waited too long."""
        for sid, row in self._gaps.wanting():
            self._changed.add(sid)
            if row.gaps.missing:
                self._wanting.setdefault(sid[:2], set()).add(sid[2])
                if not self._pinned(sid[0], row.name, sid[1]):
                    self._unpinned.add(sid)
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()

    def _schedule(self, sid: StreamId, asking: Asking) -> None:
        self._asking[sid] = asking
        heapq.heappush(self._ask_heap, (asking.next_at, next(self._order), sid))

    def _schedule_expiry(self, sid: StreamId, g: gaps.StreamGaps) -> None:
        if g.missing:
            due = min(gap.found_ms for gap in g.missing) + self.give_up_ms
            heapq.heappush(self._expiry_heap, (due, next(self._order), sid))

    def tick(self) -> None:
        now = self._monotonic()
        for sid in self._changed:
            row = self._gaps.get(sid)
            if row is not None and row.gaps.missing:
                if sid not in self._asking:
                    self._schedule(sid, Asking(now + self._jitter.uniform(*ASK_FIRST_S), 0))
                    self._schedule_expiry(sid, row.gaps)
            else:
                self._asking.pop(sid, None)
                self._unwant(sid)
        self._changed.clear()
        now_ms = self._clock_ms()
        expired: list[StreamId] = []
        while self._expiry_heap and self._expiry_heap[0][0] <= now_ms:
            _, _, sid = heapq.heappop(self._expiry_heap)
            row = self._gaps.get(sid)
            if row is not None and row.gaps.missing and sid not in expired:
                expired.append(sid)
        due: list[StreamId] = []
        while self._ask_heap and self._ask_heap[0][0] <= now:
            at, _, sid = heapq.heappop(self._ask_heap)
            asking = self._asking.get(sid)
            if asking is not None and asking.next_at == at:
                due.append(sid)
        if not due and not expired:
            return
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
            self._asking.pop(sid, None)
            return
        g, lost = gaps.expire(row.gaps, now_ms=now_ms, give_up_ms=self.give_up_ms)
        self._put(sid, StreamRow(g, row.held, row.name))
        self._schedule_expiry(sid, g)
        self._lost(sid, row.name, lost)
        self.release(room, sid[1], sid[2])

    def _ask(self, sid: StreamId, now: float) -> None:
        room = self._rooms.get(sid[0])
        row = self._gaps.get(sid)
        asking = self._asking.get(sid)
        if room is None or row is None or not row.gaps.missing or asking is None:
            self._asking.pop(sid, None)
            return
        self.sending.ask(room, RepairRequest(sid[1], sid[2], gaps.to_ask(row.gaps)))
        self.counts["asked"] += 1
        delay = ASK_BACKOFF_S[asking.step] if asking.step < len(ASK_BACKOFF_S) else ASK_EVERY_S
        self._schedule(sid, Asking(now + delay, asking.step + 1, asking.suppressed))

    def on_request(self, room: Room, from_key: bytes, record: RepairRequest) -> None:
        """A repair request seen in the room (newer than the last from its sender:
        mqchat.daemon.control_order): ours to answer, or another member's."""
        if from_key == self._own_key:
            return
        if record.sender_key == self._own_key:
            self.sending.answer(room, from_key, record)
            return
        # Someone asked the same sender: the repair goes to the whole room, so our
        # own request may wait one more back-off (PGM's NAK suppression), but only
        # for a request that asks for every number we miss, small enough to be
        # answered whole, and only a few times: a bogus request cannot keep us quiet.
        sid = (room.name, record.sender_key, record.stream)
        asking = self._asking.get(sid)
        row = self._gaps.get(sid)
        if asking is None or row is None or asking.suppressed >= MAX_SUPPRESSED:
            return
        if gaps.count(record.ranges) > PER_REQUESTER_RECORDS_S:
            return
        if not all(gaps.covered(gap, record.ranges) for gap in row.gaps.missing):
            return
        now = self._monotonic()
        delay = ASK_BACKOFF_S[min(asking.step, len(ASK_BACKOFF_S) - 1)]
        later = max(asking.next_at, now + delay)
        self._schedule(sid, Asking(later, asking.step, asking.suppressed + 1))

    # ------------------------------------------------------------------ sending
    def sent(self, room: Room) -> None:
        self.sending.sent(room)

    def forget(self, room: Room) -> None:
        """``leave``: what we tracked of the room's senders goes."""
        self._gaps.forget_room(room.name)
        for sid in [s for s in self._asking if s[0] == room.name]:
            del self._asking[sid]
            self._unwant(sid)
        self.sending.forget(room)
