"""How far each following tail has read, so that retention does not remove what it
has not shown yet (docs/store.md, "Retention and tails that follow").

A client that follows rooms (``tail``, ``chat``, the UI) sends ``read`` requests
on ctl.sock now and then: for a room, the highest seq it has shown, under a
follower id it drew once (docs/ipc.md). While a follower renews its marks, the
store's retention keeps every message above the lowest mark of a room, up to
``HELD_FOR_FOLLOWERS_TIMES`` times the room's retention more: a tail that stops
reading (stopped with SIGSTOP, or far slower than the burst) cannot make the
store grow without bound, and past that it is told what it skipped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from mqchat.errors import UsageError
from mqchat.protocol.limits import normalize_room

HELD_FOR_FOLLOWERS_TIMES: Final = 10
"""Messages of a room kept past its retention for tails that have not read them: at
most this many times the retention (100,000 with the default 10,000)."""
LEASE_MS: Final = 30_000
"""A follower's marks count while it renewed one within this time."""
MAX_FOLLOWERS: Final = 256
"""Followers kept; past this the one renewed longest ago is forgotten."""
MAX_ROOMS_PER_FOLLOWER: Final = 1024
FOLLOWER_ID_CHARS: Final = (16, 64)


class Followers:
    """The read marks of the followers, by follower id, with the time each renewed."""

    def __init__(self, clock_ms: Callable[[], int]) -> None:
        self._clock_ms = clock_ms
        self._read: OrderedDict[str, tuple[int, dict[str, int]]] = OrderedDict()

    def read(self, follower: str, room: str, seq: int) -> dict[str, Any]:
        """The ``read`` request: marks only move forward, so a late one cannot release
        what a newer one holds."""
        if not FOLLOWER_ID_CHARS[0] <= len(follower) <= FOLLOWER_ID_CHARS[1]:
            raise UsageError("a follower id is 16 to 64 characters")
        name = normalize_room(room)
        _, marks = self._read.pop(follower, (0, {}))
        if name in marks or len(marks) < MAX_ROOMS_PER_FOLLOWER:
            marks[name] = max(seq, marks.get(name, 0))
        self._read[follower] = (self._clock_ms(), marks)
        while len(self._read) > MAX_FOLLOWERS:
            self._read.popitem(last=False)
        return {}

    def unfollow(self, follower: str) -> dict[str, Any]:
        """The ``unfollow`` request: a client that closes releases its marks."""
        self._read.pop(follower, None)
        return {}

    def lowest_unread(self, room: str) -> int | None:
        """The lowest seq of ``room`` that a live follower has not shown yet."""
        live = self._clock_ms() - LEASE_MS
        marks = [m[room] for at, m in self._read.values() if at >= live and room in m]
        return min(marks) + 1 if marks else None
