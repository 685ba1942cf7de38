"""Repairing what the broker dropped, end to end (docs/protocol.md §14.2, §14.3, §20, §21).

Receiving: every text and heads record of another member passes through the
pure rules of mqchat.protocol.gaps, per (sender key, room, stream); the state
is in the store (mqchat.daemon.store.gaps). A text after a gap is held back
(stored, not shown) until the gap is filled or given up, then shown in the
sender's order. Missing numbers are asked for with repair requests in the room,
first after a random 0.2-1 s, then after 2, 4, 8 ... 64 s and every 10 minutes;
a number is lost when the sender's heads say it no longer holds it, or after
``give_up_s`` (24 hours by default): a ``lost`` notice and a counter in
``status``.

Sending: heads of a room's current stream go out 1 s, 10 s and 60 s after the
last send (each reset by a new send), in presence batches when nothing of the
room waits in the outbox, and at start (``final``) for the previous streams. A
repair request for our key is answered from the ``sent`` table with repaired
texts (the same numbers asked again within 0.5 s are answered once, at most
4096 records a request), and with heads when some of the numbers are no longer
held. Everything is queued in the outbox as records, so it is sealed into
batches with whatever else waits for the room and sent in order after it.
"""

from __future__ import annotations

import asyncio
import logging
import random as random_module
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import OutboxEntry, Store, StoredMessage, StreamRow
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.protocol import gaps
from mqchat.protocol.ipc import notice_event
from mqchat.protocol.records import Heads, Kind, Record, RepairRequest, record_body
from mqchat.protocol.signing import fingerprint

log = logging.getLogger(__name__)

StreamId = tuple[str, bytes, int]

ASK_FIRST_S = (0.2, 1.0)
"""The first request for a gap goes out after a random delay in this range, so
that one member's request can stand for all (§20)."""
ASK_BACKOFF_S = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
ASK_EVERY_S = 600.0
"""After the back-off, a gap is asked for this often until it is repaired or lost."""
HEADS_AFTER_S = (1.0, 10.0, 60.0)
"""Heads of the current stream go out this long after the last send (§21)."""
ANSWER_ONCE_S = 0.5
"""The same numbers asked again within this are answered once."""
MAX_ANSWER = 4096
"""Records republished for one request at most."""
MAX_ANSWER_PER_S = 8192
"""Records republished per second at most, for all requests together: a member
asking again and again cannot make us flood the room (docs/protocol.md §22).
A request that finds the budget spent is not answered; its sender asks again."""
MAX_HELD = 4096
"""Texts held back behind a gap of one stream at most; past this the gap is lost."""
FINAL_HEADS_STREAMS = 4
"""Previous streams of a room announced with heads(final) at start."""
TICK_S = 0.1


class Asking(NamedTuple):
    next_at: float
    step: int


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
        self._changed: set[StreamId] = set()
        self._asking: dict[StreamId, Asking] = {}
        self._answered: deque[tuple[float, str, int, int, int]] = deque()
        self._republished: deque[tuple[float, int]] = deque()  # (when, how many), last 1 s
        self._heads_timers: dict[str, tuple[asyncio.TimerHandle, int]] = {}
        self.counts = {"asked": 0, "republished": 0, "repaired": 0, "lost": 0}

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        wanting = self._gaps.wanting()
        return {
            **self.counts,
            "missing": sum(row.gaps.missing_count for _, row in wanting),
            "held": sum(row.held for _, row in wanting),
        }

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
            row = StreamRow(gaps.start(seq, heard_before=floor is not None), 0, name)
        step = gaps.receive(row.gaps, seq, self._clock_ms())
        if step.outcome == "old":
            return "repaired_duplicate" if repaired else "replay"
        hold = step.gaps.holds_back(seq)
        self._gaps.put(sid, StreamRow(step.gaps, row.held + hold, name))
        if repaired:
            self.counts["repaired"] += 1
        self._lost(sid, name, step.lost)
        if step.gaps.missing or row.gaps.missing:
            self._changed.add(sid)
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
        self._gaps.put(sid, StreamRow(g, max(0, row.held - len(ready)), row.name))
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
            if floor is None:
                self._gaps.set_floor(room.name, sender_key, record.stream)
            start = gaps.start_from_heads(record.lead, heard_before=floor is not None)
            row = StreamRow(start, 0, name)
        g, lost = gaps.heads(
            row.gaps,
            trail=record.trail,
            lead=record.lead,
            final=record.final,
            now_ms=self._clock_ms(),
        )
        if g != row.gaps or self._gaps.get(sid) is None:
            self._gaps.put(sid, StreamRow(g, row.held, name))
        self._lost(sid, name, lost)
        if g.missing or row.gaps.missing:
            self._changed.add(sid)
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
        log.warning("%d %s of a sender could not be repaired; shown as lost", n, what)
        self._work.publish(
            room,
            notice_event(
                room,
                "lost",
                f"{n} {what} from {name} in {room} could not be repaired and are lost "
                f"(the sender no longer has them, or did not answer in time)",
                sender=name,
                fingerprint=fp,
                count=n,
                stream=stream,
                ranges=[list(r) for r in ranges],
            ),
        )

    # ------------------------------------------------------------------ asking
    async def run(self) -> None:
        """Ask for what is missing when it is due; give up what waited too long."""
        for sid, _ in self._gaps.wanting():
            self._changed.add(sid)
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()

    def tick(self) -> None:
        now = self._monotonic()
        for sid in self._changed:
            row = self._gaps.get(sid)
            if row is not None and row.gaps.missing:
                if sid not in self._asking:
                    self._asking[sid] = Asking(now + self._jitter.uniform(*ASK_FIRST_S), 0)
            else:
                self._asking.pop(sid, None)
        self._changed.clear()
        due = [sid for sid, a in self._asking.items() if a.next_at <= now]
        now_ms = self._clock_ms()
        expired = [
            sid
            for sid in self._asking
            if (row := self._gaps.get(sid)) is not None
            and any(now_ms - g.found_ms >= self.give_up_ms for g in row.gaps.missing)
        ]
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
        self._gaps.put(sid, StreamRow(g, row.held, row.name))
        self._lost(sid, row.name, lost)
        self._changed.add(sid)
        self.release(room, sid[1], sid[2])

    def _ask(self, sid: StreamId, now: float) -> None:
        room = self._rooms.get(sid[0])
        row = self._gaps.get(sid)
        asking = self._asking.get(sid)
        if room is None or row is None or not row.gaps.missing or asking is None:
            self._asking.pop(sid, None)
            return
        ranges = gaps.to_ask(row.gaps)
        self._queue(room, RepairRequest(sid[1], sid[2], ranges))
        self.counts["asked"] += 1
        delay = ASK_BACKOFF_S[asking.step] if asking.step < len(ASK_BACKOFF_S) else ASK_EVERY_S
        self._asking[sid] = Asking(now + delay, asking.step + 1)

    def _queue(self, room: Room, record: Record) -> None:
        self._queue_body(room, *record_body(record))

    def _queue_body(self, room: Room, kind: int, body: bytes) -> None:
        if room.v2_topic is not None:
            self._store.outbox.add(OutboxEntry(0, room.name, room.v2_topic, room.qos, body, kind))
            # Pushed at once (after the commit, when in a batch): a repair answer
            # queued by a sender that has nothing else to send must not wait for
            # its next message (issue 22 item 8).
            self._fill_outbox()

    def on_request(self, room: Room, from_key: bytes, record: RepairRequest) -> None:
        """A repair request seen in the room: ours to answer, or another member's."""
        if from_key == self._own_key:
            return
        if record.sender_key != self._own_key:
            # Someone asked the same sender: the repair goes to the whole room, so
            # our own request waits one more back-off (PGM's NAK suppression).
            sid = (room.name, record.sender_key, record.stream)
            asking = self._asking.get(sid)
            if asking is not None:
                now = self._monotonic()
                delay = ASK_BACKOFF_S[min(asking.step, len(ASK_BACKOFF_S) - 1)]
                self._asking[sid] = Asking(max(asking.next_at, now + delay), asking.step)
            return
        self._answer(room, record)

    def _answer(self, room: Room, record: RepairRequest) -> None:
        now = self._monotonic()
        while self._answered and self._answered[0][0] < now - ANSWER_ONCE_S:
            self._answered.popleft()
        recent = [
            (first, last)
            for _, r, s, first, last in self._answered
            if r == room.name and s == record.stream
        ]
        while self._republished and self._republished[0][0] < now - 1.0:
            self._republished.popleft()
        spent = sum(n for _, n in self._republished)
        budget = min(MAX_ANSWER, MAX_ANSWER_PER_S - spent)
        answered = 0
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
                if budget <= 0:
                    break
                if lo < trail:
                    below_trail = True
                bodies = self._store.sent.between(room.name, stream, lo, hi, budget)
                for body in bodies:
                    self._queue_body(room, Kind.REPAIRED_TEXT, body)
                budget -= len(bodies)
                answered += len(bodies)
                self.counts["republished"] += len(bodies)
                self._answered.append((now, room.name, stream, lo, hi))
        if answered:
            self._republished.append((now, answered))
        if below_trail:
            final = stream != room.stream
            self._queue(room, Heads(stream, trail, lead, final))

    def _edges(self, room: Room, stream: int) -> tuple[int, int]:
        """(trail, lead) of one of our streams in ``room``; trail = lead + 1 when none is held."""
        sent = self._store.sent
        lead = room.sent_seq if stream == room.stream else sent.last_seq(room.name, stream)
        trail = sent.trail(room.name, stream)
        return (lead + 1 if trail is None else trail), lead

    # ------------------------------------------------------------------ sending heads
    def sent(self, room: Room) -> None:
        """Texts went into the outbox: heads follow 1 s after the burst, then 10 s, 60 s."""
        old = self._heads_timers.pop(room.name, None)
        if old is not None:
            old[0].cancel()
        self._schedule_heads(room.name, 0)

    def _schedule_heads(self, room_name: str, stage: int) -> None:
        if stage >= len(HEADS_AFTER_S):
            return
        delay = HEADS_AFTER_S[stage] - (HEADS_AFTER_S[stage - 1] if stage else 0.0)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test driving the service by hand): no timers
            return
        handle = loop.call_later(delay, self._heads_due, room_name, stage)
        self._heads_timers[room_name] = (handle, stage)

    def _heads_due(self, room_name: str, stage: int) -> None:
        self._heads_timers.pop(room_name, None)
        room = self._rooms.get(room_name)
        if room is None or room.stream == 0:
            return
        try:
            with self._work.batch():
                trail, lead = self._edges(room, room.stream)
                self._queue(room, Heads(room.stream, trail, lead))
        except Exception:
            log.exception("could not queue heads")
        self._fill_outbox()
        self._schedule_heads(room_name, stage + 1)

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
        """``leave``: what we tracked of the room's senders goes."""
        self._gaps.forget_room(room.name)
        for sid in [s for s in self._asking if s[0] == room.name]:
            del self._asking[sid]
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
