"""What repair requests may make us republish: per requester and in all, in records
and in bytes (docs/security.md, "Control records and repairs").

A repair goes to the whole room, so one small request can make a sender publish
megabytes: each requester key gets its own token buckets (records and bytes a
second, refilled continuously, at most one second's worth saved up), and all
requesters together share a larger pair. A request answered in part is asked
again by its sender after its back-off; one key asking again and again spends
only its own budget, so a member's small request is still answered.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

PER_REQUESTER_RECORDS_S = 512
"""Records republished per second at most for one requester key."""
PER_REQUESTER_BYTES_S = 512 * 1024
"""Bytes of records republished per second at most for one requester key."""
ALL_RECORDS_S = 4096
"""Records republished per second at most for all requesters together."""
ALL_BYTES_S = 4 * 1024 * 1024
"""Bytes of records republished per second at most for all requesters together."""
MAX_REQUESTERS = 4096
"""Requester keys whose buckets are remembered; the least recently served is
forgotten past this (its next request starts from a full bucket, but the shared
bucket still bounds what all of them cost)."""


class Bucket:
    """``rate`` a second, refilled continuously, holding at most ``rate``."""

    __slots__ = ("level", "rate", "updated")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.level = rate
        self.updated = now

    def refill(self, now: float) -> float:
        self.level = min(self.rate, self.level + (now - self.updated) * self.rate)
        self.updated = now
        return self.level


class RepairBudget:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        now = monotonic()
        self._all = (Bucket(ALL_RECORDS_S, now), Bucket(ALL_BYTES_S, now))
        self._each: OrderedDict[bytes, tuple[Bucket, Bucket]] = OrderedDict()

    def allowance(self, requester: bytes) -> tuple[int, int]:
        """(records, bytes) that may be republished for ``requester`` now."""
        now = self._monotonic()
        own = self._each.get(requester)
        if own is None:
            own = (Bucket(PER_REQUESTER_RECORDS_S, now), Bucket(PER_REQUESTER_BYTES_S, now))
            self._each[requester] = own
            if len(self._each) > MAX_REQUESTERS:
                self._each.popitem(last=False)
        self._each.move_to_end(requester)
        records = min(own[0].refill(now), self._all[0].refill(now))
        size = min(own[1].refill(now), self._all[1].refill(now))
        return int(records), int(size)

    def spend(self, requester: bytes, records: int, size: int) -> None:
        own = self._each.get(requester)
        for bucket, amount in ((self._all[0], records), (self._all[1], size)):
            bucket.level -= amount
        if own is not None:
            own[0].level -= records
            own[1].level -= size
