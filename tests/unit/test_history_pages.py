"""The client side of paged history (docs/ipc.md, ``history``): follow ``more``.

chatd's paging is another change in flight; this stand-in answers ``history``
as docs/ipc.md says a paging chatd does, so the client's loop is checked now,
including against a chatd that does not page (no ``more``: one reply).
"""

from __future__ import annotations

from typing import Any

import pytest

from mqchat.client.room_feed import RoomFeed, history_pages


def message(room: str, seq: int) -> dict[str, Any]:
    return {"type": "message", "room": room, "seq": seq, "ts": f"2026-01-01T00:00:{seq:02d}Z"}


class PagingChatd:
    """Answers ``history`` from a list of seqs, ``page`` messages at a time."""

    def mark_read(self, marks: dict[str, int]) -> None:
        """A tail tells chatd how far it has shown (nothing to hold here)."""

    def __init__(self, seqs: dict[str, list[int]], page: int | None) -> None:
        """``page``: messages per reply; None answers as today's chatd, without ``more``."""
        self.seqs = seqs
        self.page = page
        self.calls: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert method == "history"
        self.calls.append(params)
        room, since, limit = params["room"], params.get("since"), params.get("limit")
        seqs = self.seqs[room]
        if since is None:
            wanted = seqs[-(limit if limit is not None else 10) :] if limit != 0 else []
        else:
            wanted = [s for s in seqs if s > since][:limit]
        result: dict[str, Any] = {"room": room, "last_seq": seqs[-1] if seqs else 0}
        if self.page is None:
            result["messages"] = [message(room, s) for s in wanted]
        else:
            result["messages"] = [message(room, s) for s in wanted[: self.page]]
            result["more"] = len(wanted) > self.page
        return result


def seqs_of(pages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for p in pages for m in p["messages"]]


@pytest.mark.parametrize("page", [None, 1, 3, 1000])
def test_since_reads_every_page_once(page: int | None) -> None:
    chatd: Any = PagingChatd({"a": list(range(1, 11))}, page)
    pages = list(history_pages(chatd, "a", since=2))
    assert seqs_of(pages) == list(range(3, 11))


@pytest.mark.parametrize("page", [None, 1, 3, 1000])
def test_a_limit_is_shared_out_over_the_pages(page: int | None) -> None:
    chatd: Any = PagingChatd({"a": list(range(1, 11))}, page)
    assert seqs_of(list(history_pages(chatd, "a", since=0, limit=7))) == list(range(1, 8))
    chatd.calls.clear()
    assert seqs_of(list(history_pages(chatd, "a", limit=4))) == [7, 8, 9, 10]
    assert all(c.get("limit", 0) > 0 for c in chatd.calls)


def test_pages_are_asked_for_one_at_a_time() -> None:
    chatd: Any = PagingChatd({"a": list(range(1, 11))}, 3)
    pages = history_pages(chatd, "a", since=0)
    next(pages)
    assert len(chatd.calls) == 1  # the next page is asked for only when it is wanted
    assert seqs_of(list(pages)) == list(range(4, 11))
    assert [c.get("since") for c in chatd.calls] == [0, 3, 6, 9]


def test_tail_history_merges_rooms_and_knows_where_each_ends() -> None:
    chatd: Any = PagingChatd({"a": [1, 3, 5, 7], "b": [2, 4, 6]}, 2)
    # The stand-in's timestamps follow seq, so merging by time interleaves the rooms.
    feed = RoomFeed(chatd, ["a", "b"])
    shown = [(m["room"], m["seq"]) for m in feed.history(lines=10, since=0)]
    assert shown == [("a", 1), ("b", 2), ("a", 3), ("b", 4), ("a", 5), ("b", 6), ("a", 7)]
    assert feed.last == {"a": 7, "b": 6}


class StreamingChatd(PagingChatd):
    """A PagingChatd whose event stream is a fixed list (what a SUB read)."""

    def __init__(self, seqs: dict[str, list[int]], stream: list[dict[str, Any]]) -> None:
        super().__init__(seqs, 2)
        self.stream = stream

    def events(self, timeout: float | None = None) -> Any:
        yield from self.stream


def test_a_head_past_what_was_shown_fills_the_end_of_a_burst_from_the_store() -> None:
    """The last events of a burst were dropped on the way and nothing came after them:
    the room's head says so, and the rest comes from the store, once each."""
    stream = [
        message("a", 1),
        message("a", 2),
        {"type": "head", "room": "a", "seq": 5},
        {"type": "head", "room": "a", "seq": 5},  # repeated a second later: nothing new
        message("a", 5),  # late, already filled: skipped
    ]
    chatd: Any = StreamingChatd({"a": [1, 2, 3, 4, 5]}, stream)
    feed = RoomFeed(chatd, ["a"])
    feed.last["a"] = 0
    shown = [e["seq"] for e in feed.follow() if e is not None]
    assert shown == [1, 2, 3, 4, 5]
