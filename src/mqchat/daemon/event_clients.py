"""The connections on events.sock: what each one asked for, and what it may cost chatd.

A client connects to events.sock (a Unix stream socket) and writes one JSON
line saying which rooms it wants; chatd answers with a ``sync`` line and from
then on writes it the events of those rooms, one JSON object a line
(docs/ipc.md, "Events"). Everything a client can make chatd hold is bounded:
its request line, its number of rooms, the number of connections and of room
entries over all of them, and the bytes of events waiting for it. A client
that falls CLIENT_BUDGET_BYTES behind loses events, counted per reason; the
next line it gets says how many, so it can read them from the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from collections import OrderedDict
from collections.abc import Iterable
from itertools import chain
from typing import Any, NamedTuple

from mqchat.daemon.drops import DropCounter
from mqchat.daemon.followers import Followers, parse_read
from mqchat.errors import InvalidRoomName
from mqchat.protocol.limits import normalize_room

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
"""A subscribe line longer than this closes the connection unread."""
MAX_ROOMS = 1024
"""Rooms in one subscription; more is refused (ask for every room with null)."""
MAX_CLIENTS = 256
"""Connections chatd keeps; a new one beyond this closes the least recently subscribed."""
MAX_ROOM_ENTRIES = 16_384
"""Room names held over all subscriptions; past it, the least recently subscribed go."""
CLIENT_BUDGET_BYTES = 4 * 1024 * 1024
"""Event bytes chatd queues for one client that does not read; the rest is dropped."""
TOTAL_BUDGET_BYTES = 64 * 1024 * 1024
"""Event bytes chatd queues for all clients together."""
CHUNK_BYTES = 256 * 1024
"""Events of one batch are written (or dropped) in chunks of about this size."""
PAUSE_BYTES = CLIENT_BUDGET_BYTES // 2
RESUME_BYTES = 256 * 1024
"""Backlog above which a client's requests wait, and below which they are read again."""

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Subscription(NamedTuple):
    rooms: frozenset[str] | None
    """None: every room."""
    notices: bool
    """Also the notices that belong to no room (broker up and down)."""
    id: int | str | None
    """Echoed in the sync answer, so a client can tell which request it answers."""


def parse_subscription(line: bytes) -> Subscription:
    """A subscribe request, or ValueError with a short reason that never quotes the input."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        raise ValueError("not a JSON object") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("subscribe"), dict):
        raise ValueError('expected {"subscribe": {...}}')
    if set(obj) - {"id", "subscribe"}:
        raise ValueError("unknown keys in the request")
    req_id = obj.get("id")
    if not (
        req_id is None
        or (isinstance(req_id, int) and not isinstance(req_id, bool) and abs(req_id) < 2**53)
        or (isinstance(req_id, str) and len(req_id) <= 64)
    ):
        raise ValueError("id must be null, an integer or a string of at most 64 characters")
    sub: dict[str, Any] = obj["subscribe"]
    if set(sub) - {"rooms", "notices"}:
        raise ValueError("unknown keys in subscribe")
    notices = sub.get("notices", True)
    if not isinstance(notices, bool):
        raise ValueError("notices must be true or false")
    rooms = sub.get("rooms")
    if rooms is None:
        return Subscription(None, notices, req_id)
    if not isinstance(rooms, list):
        raise ValueError("rooms must be a list of room names, or null for every room")
    if len(rooms) > MAX_ROOMS:
        raise ValueError(f"more than {MAX_ROOMS} rooms; use null for every room")
    names: set[str] = set()
    for room in rooms:
        if not isinstance(room, str):
            raise ValueError("rooms must be strings")
        try:
            names.add(normalize_room(room))
        except InvalidRoomName:
            raise ValueError("a room name is not valid") from None
    return Subscription(frozenset(names), notices, req_id)


def event_line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _peer_uid(transport: asyncio.BaseTransport) -> int | None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(raw)[1])


class EventClient(asyncio.Protocol):
    """One connection on events.sock."""

    def __init__(self, registry: EventClients) -> None:
        self._registry = registry
        self._transport: asyncio.Transport | None = None
        self._inbox = bytearray()
        self._paused = False
        self.subscription: Subscription | None = None
        self.dropped = 0
        """Events dropped since the last line that reached this client."""

    # asyncio callbacks ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover - a stream server's are
            transport.close()
            return
        self._transport = transport
        uid = _peer_uid(transport)
        if uid is not None and uid not in (0, os.getuid()):
            # The runtime dir is 0700, so this needs a mistake elsewhere; refuse anyway.
            self._registry.drops.drop("events_foreign_peer", f"uid {uid}")
            transport.abort()
            return
        transport.set_write_buffer_limits(high=PAUSE_BYTES, low=RESUME_BYTES)
        self._registry.add(self)

    def data_received(self, data: bytes) -> None:
        self._inbox += data
        while not self.closing:
            end = self._inbox.find(b"\n")
            if (end if end >= 0 else len(self._inbox)) > MAX_REQUEST_BYTES:
                self._registry.drops.drop(
                    "bad_subscription", f"request over {MAX_REQUEST_BYTES} bytes"
                )
                self.close()
            elif end < 0:
                return
            else:
                line = bytes(self._inbox[:end])
                del self._inbox[: end + 1]
                self._registry.request(self, line)
        self._inbox.clear()  # closing: what else it sent is not read

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.remove(self)
        self._transport = None

    def pause_writing(self) -> None:
        # Over PAUSE_BYTES behind: read no more requests until it catches up, so
        # a client that does not read cannot make chatd answer it either.
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self._tell_dropped()

    # writing -------------------------------------------------------------
    @property
    def closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    @property
    def backlog(self) -> int:
        """Bytes written to this client that the kernel has not taken yet."""
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    def send_events(self, lines: list[bytes]) -> None:
        """Write event lines, or drop (and count) what would exceed the budgets."""
        if self.closing:
            return
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > CHUNK_BYTES:
                self._write_chunk(chunk, size)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._write_chunk(chunk, size)

    def _write_chunk(self, chunk: list[bytes], size: int) -> None:
        backlog = self.backlog
        if backlog + size > CLIENT_BUDGET_BYTES:
            self._drop(len(chunk), "events_slow_reader")
            return
        if self._registry.over_total(size):
            self._drop(len(chunk), "events_over_total_budget")
            return
        data = chunk[0] if len(chunk) == 1 else b"".join(chunk)
        if self.dropped:
            data = event_line({"type": "dropped", "count": self.dropped}) + data
            self.dropped = 0
        self._write(data, backlog)

    def _drop(self, count: int, reason: str) -> None:
        for _ in range(count):
            self._registry.drops.drop(reason)
        self.dropped += count
        if not self._paused:
            self._tell_dropped()  # else resume_writing tells, once the backlog is small

    def _tell_dropped(self) -> None:
        if self.dropped and not self.closing:
            line = event_line({"type": "dropped", "count": self.dropped})
            if self.backlog + len(line) <= CLIENT_BUDGET_BYTES:
                self.dropped = 0
                self._write(line, self.backlog)

    def send_control(self, event: dict[str, Any]) -> None:
        """A sync or error line. A client too far behind to take one is closed."""
        if self.closing:
            return
        line = event_line(event)
        backlog = self.backlog
        if backlog + len(line) > CLIENT_BUDGET_BYTES:
            self._registry.drops.drop("events_slow_reader", "a client that does not read")
            self.close()
            return
        self._write(line, backlog)

    def _write(self, data: bytes, backlog_before: int) -> None:
        if self._transport is None:
            return
        self._transport.write(data)
        self._registry.grew(self.backlog - backlog_before)

    def close(self) -> None:
        """Close now; a backlog that has not reached the client is discarded, not kept."""
        if self._transport is None or self._transport.is_closing():
            return
        if self.backlog:
            self._transport.abort()
        else:
            self._transport.close()


class EventClients:
    """Every connection on events.sock, who wants which rooms, and the limits over them."""

    def __init__(self, drops: DropCounter) -> None:
        self.drops = drops
        self._order: OrderedDict[EventClient, None] = OrderedDict()  # least recent first
        self._by_room: dict[str, set[EventClient]] = {}
        self._every_room: set[EventClient] = set()
        self._roomless: set[EventClient] = set()
        self._room_entries = 0
        self._backlog_estimate = 0  # over all clients; recounted when it looks too high
        self.followers = Followers()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, client: EventClient) -> None:
        self._order[client] = None
        while len(self._order) > MAX_CLIENTS:
            self._evict(f"chatd keeps at most {MAX_CLIENTS} event connections")

    def remove(self, client: EventClient) -> None:
        self._unsubscribe(client)
        self.followers.forget(client)
        self._order.pop(client, None)

    def request(self, client: EventClient, line: bytes) -> None:
        if line.startswith(b'{"read"'):
            self._read(client, line)
            return
        try:
            sub = parse_subscription(line)
        except ValueError as exc:
            self.drops.drop("bad_subscription", str(exc))
            client.send_control({"type": "error", "error": f"bad subscribe request: {exc}"})
            return
        self._unsubscribe(client)
        client.subscription = sub
        self._order.move_to_end(client)
        if sub.rooms is None:
            self._every_room.add(client)
        else:
            for room in sub.rooms:
                self._by_room.setdefault(room, set()).add(client)
            self._room_entries += len(sub.rooms)
        if sub.notices:
            self._roomless.add(client)
        while self._room_entries > MAX_ROOM_ENTRIES:
            self._evict(f"chatd keeps at most {MAX_ROOM_ENTRIES} subscribed room names")
        client.send_control({"type": "sync", "id": sub.id})

    def _read(self, client: EventClient, line: bytes) -> None:
        """A follower says how far it has shown its rooms (mqchat.daemon.followers)."""
        try:
            marks = parse_read(line)
        except ValueError as exc:
            self.drops.drop("bad_subscription", str(exc))
            return
        sub = client.subscription
        if sub is not None and sub.rooms is not None:
            marks = {room: seq for room, seq in marks.items() if room in sub.rooms}
        if sub is not None:
            self.followers.mark(client, marks)

    def _unsubscribe(self, client: EventClient) -> None:
        sub = client.subscription
        if sub is None:
            return
        client.subscription = None
        self._every_room.discard(client)
        self._roomless.discard(client)
        if sub.rooms is not None:
            self._room_entries -= len(sub.rooms)
            for room in sub.rooms:
                members = self._by_room.get(room)
                if members is not None:
                    members.discard(client)
                    if not members:
                        del self._by_room[room]

    def _evict(self, why: str) -> None:
        oldest = next(iter(self._order))
        self.drops.drop("events_client_evicted", why)
        oldest.send_control({"type": "error", "error": f"{why}; this one was closed"})
        oldest.close()
        self.remove(oldest)

    def targets(self, room: str | None) -> Iterable[EventClient]:
        """The clients that asked for this room's events (None: a notice of no room)."""
        if room is None:
            return self._roomless
        members = self._by_room.get(room)
        if members is None:
            return self._every_room
        return chain(members, self._every_room) if self._every_room else members

    def over_total(self, size: int) -> bool:
        """Would ``size`` more bytes take all clients' backlogs over TOTAL_BUDGET_BYTES?"""
        if self._backlog_estimate + size <= TOTAL_BUDGET_BYTES:
            return False
        # The estimate only grows (writes that the kernel did not take at once);
        # recount the real backlogs before refusing anything.
        self._backlog_estimate = sum(c.backlog for c in self._order)
        return self._backlog_estimate + size > TOTAL_BUDGET_BYTES

    def grew(self, delta: int) -> None:
        if delta > 0:
            self._backlog_estimate += delta

    def close_all(self) -> None:
        for client in list(self._order):
            client.close()
        self._order.clear()
