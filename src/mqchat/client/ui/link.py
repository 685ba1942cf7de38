"""chatctl ui's side of chatd: requests, and the event stream read gap-free.

The interface is one more client of chatd (docs/ipc.md): requests on ctl.sock
through mqchat.client.ipc_client, events from events.sock through
mqchat.client.room_feed, which fills every gap from the store as ``tail``
does. Everything here blocks, so it runs in Textual's worker threads; it
knows nothing of Textual and hands what it reads to a ``post`` callback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from mqchat.client.ipc_client import Client
from mqchat.client.room_feed import RoomFeed, history_pages
from mqchat.client.ui.members import ask_who
from mqchat.errors import MqchatError

Event = dict[str, Any]
Post = Callable[[str, Any], None]
"""``post(kind, data)``: what the listener read, for the interface (see ``listen``)."""

HISTORY_LINES = 100
"""Messages of each room shown at start; older ones come a page at a time."""
PAGE = 100
POLL_S = 0.2
"""How often a waiting listener checks that the interface still runs."""


class Link(Protocol):
    """What the interface needs from chatd (ChatdLink; a test may give fixed events)."""

    def listen(self, post: Post, stopped: Callable[[], bool]) -> None: ...
    def call(self, method: str, params: dict[str, Any] | None = None) -> Any: ...
    def who(self, room: str) -> dict[str, Any] | None: ...
    def older(self, room: str, before: int, count: int) -> list[Event]: ...
    def join(self, params: dict[str, Any]) -> dict[str, Any]: ...
    def close(self) -> None: ...


class _Listener(Client):
    """A Client that reports, before RoomFeed fills them in, events the stream lost."""

    def __init__(self, runtime_dir: Path, timeout: float, on_dropped: Callable[[Event], None]):
        super().__init__(runtime_dir, timeout)
        self._on_dropped = on_dropped

    def events(self, timeout: float | None = None) -> Iterator[Event | None]:
        for event in super().events(timeout):
            if event is not None and event.get("type") == "dropped":
                self._on_dropped(event)
            yield event


class ChatdLink:
    """chatd, as the interface uses it. ``call`` may come from any thread."""

    def __init__(self, runtime_dir: Path, timeout: float) -> None:
        self.runtime_dir = runtime_dir
        self.timeout = timeout
        self._requests = Client(runtime_dir, timeout)  # DaemonUnavailable: not running
        # One ZeroMQ socket is for one thread at a time; requests are rare and short.
        self._lock = threading.Lock()

    def close(self) -> None:
        self._requests.close()

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with self._lock:
            return self._requests.call(method, params)

    def who(self, room: str) -> dict[str, Any] | None:
        with self._lock:
            return ask_who(self._requests, room)

    def older(self, room: str, before: int, count: int) -> list[Event]:
        """Up to ``count`` messages of ``room`` just before seq ``before``, oldest first."""
        since = max(0, before - 1 - count)
        messages: list[Event] = []
        with self._lock:
            for page in history_pages(self._requests, room, since=since, limit=before - 1 - since):
                messages.extend(m for m in page["messages"] if m["seq"] < before)
        return messages

    def join(self, params: dict[str, Any]) -> dict[str, Any]:
        # A connection of its own: the key derivation takes seconds, and sends
        # on the shared one must not wait for it.
        with Client(self.runtime_dir, self.timeout) as c:
            result: dict[str, Any] = c.call("join", params)
        return result

    def listen(self, post: Post, stopped: Callable[[], bool]) -> None:
        """Read chatd's events until ``stopped()``, and post what the interface shows.

        Posts, in order: ``("status", status)``; ``("rooms", [(room, messages)])``
        with each joined room's last messages; then ``("event", event)`` for
        each message, notice or presence event, ``("room_added", (room,
        messages))`` before a room joined meanwhile shows its first event,
        ``("room_removed", name)``, ``("dropped", event)`` before the store
        fills what the stream lost, and ``("lost", reason)`` if the stream ends.
        """
        listener: Client | None = None
        try:
            listener = _Listener(self.runtime_dir, self.timeout, lambda e: post("dropped", e))
            # Subscribe first, then read history: nothing falls in between (docs/ipc.md).
            listener.subscribe(None, notices=True)
            post("status", listener.call("status"))
            rooms: list[Event] = listener.call("rooms")
            feed = RoomFeed(listener, [r["name"] for r in rooms])
            held: dict[str, list[Event]] = {r["name"]: [] for r in rooms}
            for message in feed.history(lines=HISTORY_LINES, since=None):
                held[message["room"]].append(message)
            post("rooms", [(r, held[r["name"]]) for r in rooms])
            for event in feed.follow(timeout=POLL_S):
                if stopped():
                    return
                if event is None:
                    continue
                self._follow_rooms(listener, feed, event, post)
                post("event", event)
        except MqchatError as exc:
            post("lost", exc.message)
        finally:
            if listener is not None:
                listener.close()

    @staticmethod
    def _follow_rooms(listener: Client, feed: RoomFeed, event: Event, post: Post) -> None:
        """Keep the feed's rooms in step with joins and leaves made anywhere."""
        if event.get("type") != "notice":
            return
        room = event.get("room")
        if not isinstance(room, str):
            return
        if event.get("kind") == "joined" and room not in feed.last:
            info = next((r for r in listener.call("rooms") if r["name"] == room), None)
            if info is None:  # left again already
                return
            added = RoomFeed(listener, [room])
            messages = list(added.history(lines=HISTORY_LINES, since=None))
            feed.last[room] = added.last.get(room, 0)
            post("room_added", (info, messages))
        elif event.get("kind") == "left":
            feed.last.pop(room, None)
            post("room_removed", room)
