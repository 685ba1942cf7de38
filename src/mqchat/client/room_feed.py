"""Rooms' messages from the store, then live, each exactly once and in seq order.

What ``tail`` and ``chat`` share (DESIGN.md, "Gap-free tail"). The caller
subscribes first; ``history`` then reads the store page by page, and
``follow`` passes on live events whose seq is above what was read. Whenever
the live stream cannot be trusted to be complete (a seq skips ahead, a room's
``head`` is past what was shown, or the stream was connected again), the missing
messages are read from the store before going on: the store is the source of
truth, the event stream only says that something new is there.

History comes in pages (docs/ipc.md, ``history``): a reply with ``"more":
true`` is followed by another request from its last seq, so neither chatd nor
chatctl holds a whole room in memory. Several rooms are merged lazily.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Iterator
from typing import Any

from mqchat.client.ipc_client import Client
from mqchat.errors import DaemonRefused, DaemonUnavailable
from mqchat.protocol.ipc import NOT_JOINED
from mqchat.protocol.ipc_events import notice_event

Event = dict[str, Any]


def history_pages(
    c: Client, room: str, *, since: int | None = None, limit: int | None = None
) -> Iterator[Event]:
    """Each ``history`` result of one read: with ``since``, the messages after it
    (at most ``limit``); without, the last ``limit``. Follows ``more`` until done.
    """
    params: dict[str, Any] = {"room": room}
    if since is not None:
        params["since"] = since
    if limit is not None:
        params["limit"] = limit
    while True:
        page: Event = c.call("history", params)
        yield page
        messages = page["messages"]
        if not page.get("more") or not messages:
            return
        params = {"room": room, "since": messages[-1]["seq"]}
        if limit is not None:
            limit -= len(messages)
            if limit <= 0:
                return
            params["limit"] = limit


def _in_time_order(per_room: Iterable[Iterator[Event]]) -> Iterator[Event]:
    # Each room stays in seq (arrival) order, as live events print; only rooms
    # are interleaved by timestamp. A sender's clock (a legacy token has whole
    # seconds) must not reorder a room.
    return heapq.merge(*per_room, key=lambda e: (e.get("ts", ""), e["room"]))


def _retention_notice(room: str, count: int) -> Event:
    """Messages this reader fell so far behind on that the store no longer holds them."""
    return notice_event(
        room,
        "skipped",
        f"{count} messages of {room} were removed by the store's retention before "
        f"they could be shown here (raise [store] retention to keep more)",
        count=count,
    )


MARK_EVERY_S = 0.1
"""How often at most chatd is told how far each room has been shown, once the
caller has taken a burst of live events (it has written them out by then)."""
MARK_BUSY_S = 1.0
"""How often at most while events keep coming with no pause (or history is read):
a request to chatd in the middle of a burst would hold back the lines after it."""


class RoomFeed:
    def __init__(self, c: Client, rooms: list[str]) -> None:
        self._c = c
        self._rooms = rooms
        self.last: dict[str, int] = {}
        """Per room, the highest seq passed on (or deliberately skipped, as by ``-n``)."""
        self._shown: dict[str, int] = {}
        """Per room, the highest seq the caller has taken (and so shown)."""
        self._marked_at = 0.0
        self._unmarked = False  # shown further than chatd was last told

    def _shown_up_to(self, room: str, seq: int, *, now: bool = False) -> None:
        """Say how far a room has been shown, so that chatd's retention keeps what
        follows while we read it (mqchat.daemon.followers): at most every second
        here, else at the end of a burst (``_mark_if_due``). A mark that is late only
        keeps more."""
        self._shown[room] = max(seq, self._shown.get(room, 0))
        self._unmarked = True
        if now or time.monotonic() - self._marked_at >= MARK_BUSY_S:
            self._mark()

    def _mark_if_due(self) -> None:
        """At the end of a burst of messages only: after a notice that chatd went away,
        a request would wait for chatd (and end the tail if it is not back in time)."""
        if self._unmarked and time.monotonic() - self._marked_at >= MARK_EVERY_S:
            self._mark()

    def _mark(self) -> None:
        self._marked_at = time.monotonic()
        self._unmarked = False
        try:
            self._c.mark_read(dict(self._shown))
        except DaemonUnavailable:
            # A request sent as chatd dies is lost with its connection. Marks are
            # advice for chatd's retention: the next ones say the same once it is
            # back; the tail goes on (the events say that chatd went away).
            self._unmarked = True

    def history(self, *, lines: int, since: int | None) -> Iterator[Event]:
        """The last ``lines`` messages of each room, or (``since``) all after that seq."""
        return _in_time_order(self._room_history(r, lines, since) for r in self._rooms)

    def _room_history(self, room: str, lines: int, since: int | None) -> Iterator[Event]:
        limit = None if since is not None else lines
        for page in history_pages(self._c, room, since=since, limit=limit):
            if room not in self._shown:
                first = page["messages"][0]["seq"] - 1 if page["messages"] else page["last_seq"]
                self._shown_up_to(room, first, now=True)
            # Everything up to the room's last_seq is now either shown or
            # deliberately left out (-n), so live events are new exactly when
            # their seq is above it.
            self.last[room] = max(self.last.get(room, 0), since or 0, page["last_seq"])
            for message in page["messages"]:
                self.last[room] = max(self.last[room], message["seq"])
                yield message
                self._shown_up_to(room, message["seq"])

    def follow(self, timeout: float | None = None) -> Iterator[Event | None]:
        """Live events, with every gap filled; None at the end of a burst (the caller
        may write out what it holds) and after ``timeout`` s of silence."""
        fresh = False  # messages passed on since the last None
        for event in self._c.events(timeout):
            if event is None:
                yield None
                if fresh:  # the caller has shown them by now, and chatd just sent them
                    fresh = False
                    self._mark_if_due()
                continue
            kind = event.get("type")
            if kind == "dropped":
                yield from self._catch_up()
                continue
            if kind == "head":
                # The room's last seq: anything above what was shown was lost on the way.
                head_room, head = event.get("room"), event.get("seq")
                if isinstance(head_room, str) and isinstance(head, int):
                    shown = self.last.get(head_room)
                    if shown is not None and head > shown:
                        yield from self._fill(head_room, shown, before=head + 1)
                continue
            if kind != "message":
                yield event
                continue
            room, seq = event["room"], event["seq"]
            seen = self.last.get(room)
            if seen is not None:
                if seq <= seen:
                    continue
                if seq > seen + 1:
                    yield from self._fill(room, seen, before=seq)
            self.last[room] = seq
            fresh = True
            yield event
            self._shown_up_to(room, seq)

    def _catch_up(self) -> Iterator[Event]:
        """Everything the store holds past what each room has shown."""
        rooms = list(self.last.items())
        return _in_time_order(self._fill(room, seen) for room, seen in rooms)

    def _fill(self, room: str, after: int, before: int | None = None) -> Iterator[Event]:
        limit = None if before is None else before - after - 1
        try:
            for page in history_pages(self._c, room, since=after, limit=limit):
                for message in page["messages"]:
                    seq = message["seq"]
                    if seq > self.last.get(room, after) and (before is None or seq < before):
                        gone = seq - self.last.get(room, after) - 1
                        if gone > 0:
                            yield _retention_notice(room, gone)
                        self.last[room] = seq
                        yield message
                        self._shown_up_to(room, seq)
            if before is not None and before - 1 > self.last.get(room, after):
                yield _retention_notice(room, before - 1 - self.last.get(room, after))
        except DaemonRefused as exc:
            if exc.code != NOT_JOINED:
                raise
