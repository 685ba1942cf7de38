"""Control records in the order of their signed time, so that a replay does nothing.

Presence, heads and repair requests carry no number of their own, but each
travels in a batch whose header holds the sender's signed ``sent_ms``
(docs/protocol.md §13). A broker (or anyone who captured a payload) can hand a
batch over again, but cannot change that time. So chatd keeps, per (room,
sender key, kind), the time of the newest batch it took that kind from, and
takes a record of that kind only from a batch with a later time, or from that
same batch (a batch holds many heads and requests). A replayed "leaving", an
old "online" or a repair request already answered is then refused and counted
(docs/security.md, "Control records and repairs").

Kept in memory for the ``MAX_SENDERS`` most recently heard (room, sender, kind);
after a restart, or for a sender evicted, the first batch is taken as it is. A
time taken from a batch that then did not commit (the store failed, or a bug
stopped its payload) is taken back through ``journal``: when the payload is
opened and handled again, it is not mistaken for its own replay.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_SENDERS = 16_384
"""(room, sender key, kind) whose newest signed time is remembered; the least
recently heard is forgotten past this."""


class SignedTimeOrder:
    def __init__(
        self,
        max_senders: int = MAX_SENDERS,
        journal: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._newest: OrderedDict[tuple[str, bytes, str], tuple[int, int]] = OrderedDict()
        self._max = max_senders
        self._journal = journal
        """Where each change registers how to take it back (UnitOfWork.on_undo)."""

    def accept(self, room: str, sender_key: bytes, kind: str, sent_ms: int, batch: int) -> bool:
        """Whether a ``kind`` record of the batch numbered ``batch`` (by the caller,
        one number per batch it opened), signed at ``sent_ms``, is new."""
        key = (room, sender_key, kind)
        newest = self._newest.get(key)
        if newest is not None:
            newest_ms, newest_batch = newest
            if sent_ms < newest_ms or (sent_ms == newest_ms and batch != newest_batch):
                return False
            self._newest.move_to_end(key)
        self._newest[key] = (sent_ms, batch)
        if self._journal is not None and newest != (sent_ms, batch):
            self._journal(lambda: self._restore(key, newest))
        if len(self._newest) > self._max:
            self._newest.popitem(last=False)
        return True

    def _restore(self, key: tuple[str, bytes, str], newest: tuple[int, int] | None) -> None:
        if newest is None:
            self._newest.pop(key, None)
        else:
            self._newest[key] = newest

    def forget_room(self, room: str) -> None:
        for key in [k for k in self._newest if k[0] == room]:
            del self._newest[key]


class SignedClock:
    """The ``sent_ms`` chatd signs: the wall clock, but always later than the last
    one it gave, so that no two of our batches carry the same time (a receiver takes
    control records from one batch per time)."""

    def __init__(self, clock_ms: Callable[[], int] | None = None) -> None:
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._last = 0

    def __call__(self) -> int:
        self._last = max(self._last + 1, self._clock_ms())
        return self._last
