"""``chatctl tail``: history first, then live events, with no gap and no repeat.

Order of work (DESIGN.md, "Gap-free tail"): subscribe and wait for chatd to
confirm it, ask ``history`` for each room, print it, then print live events
whose seq is above what was printed. A live event that skips a seq (chatd
restarted, or events were dropped) is filled in from history before it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from mqchat.client.ipc_client import Client
from mqchat.client.render import Renderer
from mqchat.errors import DaemonRefused
from mqchat.protocol.ipc import NOT_JOINED


def _history(c: Client, room: str, *, lines: int, since: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {"room": room}
    if since is not None:
        params["since"] = since
    else:
        params["limit"] = lines
    result: dict[str, Any] = c.call("history", params)
    return result


def run_tail(
    c: Client,
    rooms: list[str] | None,
    renderer: Renderer,
    *,
    lines: int,
    since: int | None,
    follow: bool,
    out: Callable[[str], None],
    err: Callable[[str], None],
) -> None:
    if follow:
        c.subscribe(rooms, notices=True)
    names = rooms if rooms is not None else [r["name"] for r in c.call("rooms")]
    last: dict[str, int] = {}
    per_room: list[list[dict[str, Any]]] = []
    for room in names:
        h = _history(c, room, lines=lines, since=since)
        # History holds everything up to last_seq that was asked for, so live
        # events are new exactly when their seq is above it.
        last[room] = max(since or 0, h["last_seq"])
        per_room.append(h["messages"])
    # Each room stays in seq (arrival) order, as live events print; only rooms
    # are interleaved by timestamp. A sender's clock (a legacy token has whole
    # seconds) must not reorder a room.
    for event in heapq.merge(*per_room, key=lambda e: (e.get("ts", ""), e["room"])):
        out(renderer.message(event))
    if not follow:
        return
    try:
        for maybe in c.events():
            if maybe is None:
                continue
            event = maybe
            if event["type"] == "notice":
                line = renderer.notice(event)
                (out if renderer.as_json else err)(line)
                continue
            room = event["room"]
            seen = last.get(room)
            seq = event["seq"]
            if seen is not None and seq <= seen:
                continue
            if seen is not None and seq > seen + 1:
                for missed in _fill_gap(c, room, seen, seq):
                    out(renderer.message(missed))
            last[room] = seq
            out(renderer.message(event))
    except KeyboardInterrupt:
        return


def _fill_gap(c: Client, room: str, after: int, before: int) -> list[dict[str, Any]]:
    try:
        h = c.call("history", {"room": room, "since": after, "limit": before - after - 1})
    except DaemonRefused as exc:
        if exc.code == NOT_JOINED:
            return []
        raise
    return [m for m in h["messages"] if after < m["seq"] < before]
