"""How far each following tail has read, so that retention does not remove what it
has not shown yet (docs/store.md, "Retention and tails that follow").

A client on events.sock that follows rooms (``tail``, ``chat``, the UI) writes a
``read`` line now and then: per room, the highest seq it has passed on
(docs/ipc.md, "Events"). While it is connected, the store's retention keeps
every message above the lowest such mark of a room, up to
``HELD_FOR_FOLLOWERS_TIMES`` times the room's retention more: a tail that
stops reading (stopped with SIGSTOP, or far slower than the burst) cannot make
the store grow without bound, and past that it is told what it skipped.
"""

from __future__ import annotations

import json
from typing import Any

from mqchat.protocol.limits import MAX_SEQ, normalize_room

HELD_FOR_FOLLOWERS_TIMES = 10
"""Messages of a room kept past its retention for tails that have not read them: at
most this many times the retention (100,000 with the default 10,000)."""
MAX_MARKS = 1024
"""Rooms in one read line."""


def parse_read(line: bytes) -> dict[str, int]:
    """``{"read": {room: seq, ...}}``, or ValueError with a reason that never quotes it."""
    try:
        obj: Any = json.loads(line)
    except (ValueError, RecursionError):
        raise ValueError("not a JSON object") from None
    if not isinstance(obj, dict) or set(obj) != {"read"} or not isinstance(obj["read"], dict):
        raise ValueError('expected {"read": {room: seq, ...}}')
    marks: dict[str, Any] = obj["read"]
    if len(marks) > MAX_MARKS:
        raise ValueError(f"more than {MAX_MARKS} rooms in a read line")
    found: dict[str, int] = {}
    for room, seq in marks.items():
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
            raise ValueError(f"a read seq must be an integer in 0..{MAX_SEQ}")
        try:
            found[normalize_room(room)] = seq
        except Exception:
            raise ValueError("a read line names an invalid room") from None
    return found


class Followers:
    """The read marks of the connected clients, by client."""

    def __init__(self) -> None:
        self._read: dict[object, dict[str, int]] = {}

    def mark(self, client: object, marks: dict[str, int]) -> None:
        """Marks only move forward: a late line cannot release what a newer one holds."""
        read = self._read.setdefault(client, {})
        for room, seq in marks.items():
            read[room] = max(seq, read.get(room, 0))

    def forget(self, client: object) -> None:
        self._read.pop(client, None)

    def lowest_unread(self, room: str) -> int | None:
        """The lowest seq of ``room`` that a connected follower has not shown yet."""
        marks = [read[room] for read in self._read.values() if room in read]
        return min(marks) + 1 if marks else None
