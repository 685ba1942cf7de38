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

MAX_LINES_A_WRITE = 256
"""Lines held for one write at most: a burst is written at its end (one write and
flush for all the lines that came together), a long one every 256 lines."""


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
    held: list[str] = []

    def write_out() -> None:
        if held:
            text = "\n".join(held)
            held.clear()
            out(text)  # out adds the last newline, and flushes

    for message in feed.history(lines=lines, since=since):
        held.append(renderer.message(message))
        if len(held) >= MAX_LINES_A_WRITE:
            write_out()
    write_out()
    if not follow:
        return
    try:
        for event in feed.follow():
            if event is None:  # the end of a burst: nothing more waits
                write_out()
                continue
            if event["type"] == "message":
                held.append(renderer.message(event))
            elif event["type"] in ("notice", "presence"):
                notice = renderer.presence if event["type"] == "presence" else renderer.notice
                if renderer.as_json:
                    held.append(notice(event))
                else:
                    write_out()  # in order with the lines before it, on a terminal
                    err(notice(event))
            if len(held) >= MAX_LINES_A_WRITE:
                write_out()
    except KeyboardInterrupt:
        return
    finally:
        write_out()  # what came before Ctrl-C or SIGTERM


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
