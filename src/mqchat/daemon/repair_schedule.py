"""When repair asks for what is missing, and when it gives up (docs/protocol.md §20).

Missing numbers are asked for in the room after a random 0.2-1 s, then 2, 4 ... 64 s,
then every 10 minutes, until repaired or lost; a number is given up after
``give_up_s``. Asks and give-ups wait in heaps by when they are due, and one
deadline (mqchat.daemon.deadline) wakes us when the first is due: a pass costs
what is due, not what is tracked, and nothing runs while nothing is missing.

A request of another member for the same numbers postpones ours (PGM's NAK
suppression) only when it covers every number we miss, is small enough to be
answered whole, and at most ``MAX_SUPPRESSED`` times: a bogus request cannot keep
us quiet.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random as random_module
from collections.abc import Callable
from typing import NamedTuple

from mqchat.daemon.deadline import Deadline
from mqchat.daemon.repair_budget import PER_REQUESTER_RECORDS_S
from mqchat.daemon.store.gaps import GapStreams, StreamId
from mqchat.protocol import gaps
from mqchat.protocol.records import RepairRequest

ASK_FIRST_S = (0.2, 1.0)
"""The first request for a gap goes out after a random delay in this range, so
that one member's request can stand for all (§20)."""
ASK_BACKOFF_S = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
ASK_EVERY_S = 600.0
"""After the back-off, a gap is asked for this often until it is repaired or lost."""
MAX_SUPPRESSED = 3
"""Times another member's request may postpone ours for one gap."""
COALESCE_S = 0.1
"""Changes to what is missing are looked at together, this long after the first."""


class Asking(NamedTuple):
    next_at: float
    step: int
    suppressed: int = 0


class RepairSchedule:
    def __init__(
        self,
        *,
        gaps: GapStreams,
        give_up_s: int,
        clock_ms: Callable[[], int],
        monotonic: Callable[[], float],
        loop: asyncio.AbstractEventLoop,
        run: Callable[[list[StreamId], list[StreamId], float], None],
        unwanted: Callable[[StreamId], None],
    ) -> None:
        """``run(expired, due, now)``: give up what is too old, ask for what is due;
        ``unwanted``: a stream has nothing missing any more."""
        self._gaps = gaps
        self.give_up_ms = give_up_s * 1000
        self._clock_ms = clock_ms
        self._monotonic = monotonic
        self._run = run
        self._unwanted = unwanted
        self._deadline = Deadline(loop, monotonic, self._wake)
        self._jitter = random_module.Random()  # noqa: S311 -- timing jitter, not a secret
        self._changed: set[StreamId] = set()
        self._asking: dict[StreamId, Asking] = {}
        self._ask_heap: list[tuple[float, int, StreamId]] = []
        self._expiry_heap: list[tuple[int, int, StreamId]] = []
        self._order = itertools.count()  # ties in the heaps

    def changed(self, sid: StreamId) -> None:
        """What is missing of ``sid`` may have changed: looked at within COALESCE_S."""
        self._changed.add(sid)
        self._deadline.at(self._monotonic() + COALESCE_S)

    def close(self) -> None:
        self._deadline.cancel()

    def _wake(self) -> None:
        self.tick()
        now = self._monotonic()
        due = [self._ask_heap[0][0]] if self._ask_heap else []
        if self._expiry_heap:
            due.append(self._monotonic_of(self._expiry_heap[0][0]))
        if self._changed:
            due.append(now)
        if due:
            self._deadline.at(min(due))

    def _monotonic_of(self, at_ms: int) -> float:
        return self._monotonic() + max(0.0, (at_ms - self._clock_ms()) / 1000)

    def _schedule(self, sid: StreamId, asking: Asking) -> None:
        self._asking[sid] = asking
        heapq.heappush(self._ask_heap, (asking.next_at, next(self._order), sid))
        self._deadline.at(asking.next_at)

    def expiry(self, sid: StreamId, g: gaps.StreamGaps) -> None:
        """Give up ``sid``'s oldest gap when it has waited ``give_up_s``."""
        if g.missing:
            due = min(gap.found_ms for gap in g.missing) + self.give_up_ms
            heapq.heappush(self._expiry_heap, (due, next(self._order), sid))
            self._deadline.at(self._monotonic_of(due))

    def tick(self) -> None:
        now = self._monotonic()
        for sid in self._changed:
            row = self._gaps.get(sid)
            if row is not None and row.gaps.missing:
                if sid not in self._asking:
                    self._schedule(sid, Asking(now + self._jitter.uniform(*ASK_FIRST_S), 0))
                    self.expiry(sid, row.gaps)
            else:
                self._asking.pop(sid, None)
                self._unwanted(sid)
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
        if due or expired:
            self._run(expired, [sid for sid in due if sid in self._asking], now)

    def drop(self, sid: StreamId) -> None:
        self._asking.pop(sid, None)

    def asked(self, sid: StreamId, now: float) -> None:
        """We asked for ``sid``'s missing numbers: the next ask after the back-off."""
        asking = self._asking.get(sid)
        if asking is None:
            return
        delay = ASK_BACKOFF_S[asking.step] if asking.step < len(ASK_BACKOFF_S) else ASK_EVERY_S
        self._schedule(sid, Asking(now + delay, asking.step + 1, asking.suppressed))

    def asked_by_another(self, sid: StreamId, record: RepairRequest) -> None:
        """Another member asked ``sid``'s sender: the repair goes to the whole room, so
        ours may wait one more back-off, within the bounds above."""
        asking = self._asking.get(sid)
        row = self._gaps.get(sid)
        if asking is None or row is None or asking.suppressed >= MAX_SUPPRESSED:
            return
        if gaps.count(record.ranges) > PER_REQUESTER_RECORDS_S:
            return
        if not all(gaps.covered(gap, record.ranges) for gap in row.gaps.missing):
            return
        delay = ASK_BACKOFF_S[min(asking.step, len(ASK_BACKOFF_S) - 1)]
        later = max(asking.next_at, self._monotonic() + delay)
        self._schedule(sid, Asking(later, asking.step, asking.suppressed + 1))

    def forget(self, room: str) -> list[StreamId]:
        """``leave``: what we asked for in ``room`` goes; returns its streams."""
        gone = [sid for sid in self._asking if sid[0] == room]
        for sid in gone:
            del self._asking[sid]
        return gone
