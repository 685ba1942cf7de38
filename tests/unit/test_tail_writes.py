"""``chatctl tail`` writes a burst of lines at once, and tells chatd how far it has
shown only after writing them (issue 24): no line missing, none twice, in order."""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mqchat.client import room_feed
from mqchat.client.render import Renderer
from mqchat.client.tailing import MAX_LINES_A_WRITE, run_tail
from mqchat.errors import DaemonUnavailable


def message(seq: int) -> dict[str, Any]:
    return {
        "type": "message",
        "room": "a",
        "seq": seq,
        "ts": "2026-01-01T00:00:00.000Z",
        "sender": "bob",
        "verified": True,
        "text": f"m{seq}",
    }


class Chatd:
    """History up to seq 2, then the live stream given (None: a burst ends)."""

    def __init__(self, live: list[dict[str, Any] | float | None], log: list[str]) -> None:
        self.live = live
        self.log = log

    def subscribe(self, rooms: list[str] | None, **_kw: Any) -> None:
        self.log.append("subscribed")

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert method == "history"
        return {"room": "a", "last_seq": 2, "messages": [message(1), message(2)]}

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any] | None]:
        for item in self.live:
            if isinstance(item, float):
                time.sleep(item)  # a pause in the stream
            else:
                yield item
        raise KeyboardInterrupt

    def mark_read(self, marks: dict[str, int]) -> None:
        self.log.append(f"mark {marks['a']}")


def tail(live: list[dict[str, Any] | float | None]) -> list[str]:
    log: list[str] = []
    renderer = Renderer(as_json=False, template="{text}", colour=False, show_room=False)
    chatd: Any = Chatd(live, log)
    run_tail(
        chatd,
        ["a"],
        renderer,
        lines=10,
        since=None,
        follow=True,
        out=lambda text: log.append(f"write {text!r}"),
        err=lambda text: log.append(f"err {text!r}"),
    )
    return log


def test_a_burst_is_one_write_and_the_mark_follows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(room_feed, "MARK_EVERY_S", 0.0)
    log = tail([message(3), message(4), None, message(5), None])
    writes = [x for x in log if x.startswith("write")]
    assert writes == ["write 'm1\\nm2'", "write 'm3\\nm4'", "write 'm5'"]
    # chatd hears how far the tail has shown only once those lines are written
    assert log.index("write 'm3\\nm4'") < log.index("mark 4") < log.index("write 'm5'")


def test_a_gap_and_a_repeat_in_a_burst_print_each_line_once() -> None:
    log = tail([message(3), message(3), message(2), None])
    assert [x for x in log if x.startswith("write")] == ["write 'm1\\nm2'", "write 'm3'"]


def test_a_long_burst_is_written_every_max_lines_and_at_its_end() -> None:
    n = MAX_LINES_A_WRITE + 10
    log = tail([message(seq) for seq in range(3, 3 + n)])  # no pause, then Ctrl-C
    written = [ast.literal_eval(x[6:]) for x in log if x.startswith("write")]
    lines = [line for text in written for line in text.split("\n")]
    assert lines == [f"m{seq}" for seq in range(1, 3 + n)]


def test_no_mark_is_asked_for_after_a_notice_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """chatd went away: a request now would wait for it, and end the tail if it is slow
    to come back; only a burst of messages (chatd just sent them) is followed by one."""
    monkeypatch.setattr(room_feed, "MARK_EVERY_S", 0.2)
    away = {"type": "notice", "room": None, "kind": "chatd_away", "text": "away"}
    log = tail([message(3), None, 0.3, away, None])  # seq 3 shown, not marked yet
    assert [x for x in log if x.startswith("mark")] == ["mark 0"]
    assert log[-1] == "err '-- away'"


def test_a_mark_chatd_does_not_answer_does_not_end_the_tail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request sent as chatd dies is lost; a mark is advice for retention, so the
    tail goes on and marks again later."""
    monkeypatch.setattr(room_feed, "MARK_EVERY_S", 0.0)
    log: list[str] = []

    class Gone(Chatd):
        def mark_read(self, marks: dict[str, int]) -> None:
            log.append(f"mark {marks['a']}")
            if marks["a"] == 3:
                raise DaemonUnavailable("chatd did not answer")

    renderer = Renderer(as_json=False, template="{text}", colour=False, show_room=False)
    chatd: Any = Gone([message(3), None, message(4), None], log)
    run_tail(
        chatd, ["a"], renderer, lines=10, since=None, follow=True, out=log.append, err=log.append
    )
    assert log == ["subscribed", "mark 0", "m1\nm2", "m3", "mark 3", "m4", "mark 4"]
