"""Which streams have missing numbers, per sender: what bounds how much a sender
(or a key posing as one) can make us track (docs/security.md, repair)."""

from __future__ import annotations

from mqchat.daemon.store.gaps import StreamId
from mqchat.daemon.store.memory import ReceiverMemory

MAX_WANTING_PER_SENDER = 4
"""Streams with missing numbers of one sender key in a room; past it (or the two
below) a heads opening another is dropped (``too_many_streams``), a text's gap lost."""
MAX_WANTING_UNPINNED = 256  # of all keys not pinned to their name
MAX_WANTING = 1024  # of all keys (a fresh name is pinned to a fresh key)


class WantingIndex:
    def __init__(self, memory: ReceiverMemory) -> None:
        self._memory = memory
        self._wanting: dict[tuple[str, bytes], set[int]] = {}
        """Streams with missing numbers, per (room, sender key)."""
        self._count = 0  # of all streams in _wanting
        self._unpinned: set[StreamId] = set()  # of those, of keys not pinned to their name

    def clear(self) -> None:
        self._wanting.clear()
        self._count = 0
        self._unpinned.clear()

    def _pinned(self, room: str, name: str, key: bytes) -> bool:
        pin = self._memory.pin(room, name)
        return pin is not None and pin.key == key

    def may_add(self, sid: StreamId, name: str) -> bool:
        """Whether one more stream of ``sid``'s sender may have missing numbers."""
        room, key, stream = sid
        streams = self._wanting.get((room, key), set())
        if stream in streams:
            return True
        if len(streams) >= MAX_WANTING_PER_SENDER or self._count >= MAX_WANTING:
            return False
        return self._pinned(room, name, key) or len(self._unpinned) < MAX_WANTING_UNPINNED

    def add(self, sid: StreamId, name: str) -> None:
        room, key, stream = sid
        streams = self._wanting.setdefault((room, key), set())
        if stream not in streams:
            streams.add(stream)
            self._count += 1
        if not self._pinned(room, name, key):
            self._unpinned.add(sid)

    def remove(self, sid: StreamId) -> None:
        streams = self._wanting.get(sid[:2])
        if streams is not None and sid[2] in streams:
            streams.discard(sid[2])
            self._count -= 1
            if not streams:
                del self._wanting[sid[:2]]
        self._unpinned.discard(sid)
