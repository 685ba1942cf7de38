"""``chatctl tail``: history first, then live events, with no gap and no repeat.

Order of work (DESIGN.md, "Gap-free tail"): subscribe and wait for chatd to
confirm it, read each room's history page by page and print it as it comes,
then print live events; mqchat.client.room_feed fills every gap from the store.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from mqchat.client.ipc_client import Client
from mqchat.client.render import Renderer
from mqchat.client.room_feed import RoomFeed


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
        # SIGTERM ends a tail as Ctrl-C does, through its clean-up (it releases its
        # read marks: docs/ipc.md, ``unfollow``), not in the middle of it.
        signal.signal(signal.SIGTERM, _terminate)
        c.subscribe(rooms, notices=True, say_away=True)
    names = rooms if rooms is not None else [r["name"] for r in c.call("rooms")]
    feed = RoomFeed(c, names)
    for message in feed.history(lines=lines, since=since):
        out(renderer.message(message))
    if not follow:
        return
    try:
        for event in feed.follow():
            if event is None:
                continue
            if event["type"] == "message":
                out(renderer.message(event))
            elif event["type"] in ("notice", "presence"):
                notice = renderer.presence if event["type"] == "presence" else renderer.notice
                (out if renderer.as_json else err)(notice(event))
    except KeyboardInterrupt:
        return


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
