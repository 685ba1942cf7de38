"""Issue 25: `chatctl ui` at 80x24 and 200x50: what fits, what folds, what /who shows.

The same fixed events as test_ui_snapshot, at the two sizes a user meets most,
each kept by a snapshot; the rest reads the screen as text.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from rich.console import Console
from test_ui_snapshot import FixedLink, fixed_app, settled
from textual.pilot import Pilot

from mqchat.client.ui.app import ChatApp
from mqchat.client.ui.lines import WELCOME
from mqchat.client.ui.link import Post

SMALL, LARGE = (80, 24), (200, 50)


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times on screen in UTC, whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class NoRooms(FixedLink):
    def listen(self, post: Post, stopped: Callable[[], bool]) -> None:
        post("status", {"name": "alice", "broker": {"url": "mqtt://localhost", "connected": True}})
        post("rooms", [])


def screen_text(app: ChatApp) -> list[str]:
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text().splitlines()


def run(app: ChatApp, size: tuple[int, int], script: Callable[[Pilot[Any]], Awaitable[None]]):
    async def go() -> list[str]:
        async with app.run_test(size=size) as pilot:
            await script(pilot)
            await pilot.pause()
            return screen_text(app)

    return asyncio.run(go())


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
def test_main_screen_at_common_sizes(
    snap_compare: Any, utc: None, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert snap_compare(fixed_app(), terminal_size=size, run_before=settled)


def test_at_80_columns_the_members_panel_gives_way_and_f4_brings_it_back(utc: None) -> None:
    lines = run(fixed_app(), SMALL, settled)
    panel = "○ bob"  # the members panel's own line (the footer says "Members" too)
    assert not any(panel in line for line in lines)
    # The messages get the room: a line of 60 characters is not cut.
    assert any("09:14:03 <bob> morning! the release is out" in line for line in lines)

    async def toggled(pilot: Pilot[Any]) -> None:
        await settled(pilot)
        await pilot.press("f4")

    assert any(panel in line for line in run(fixed_app(), SMALL, toggled))
    assert any(panel in line for line in run(fixed_app(), LARGE, settled))


def test_wrapped_lines_hang_under_the_text(utc: None) -> None:
    lines = run(fixed_app(), SMALL, settled)
    first = next(i for i, line in enumerate(lines) if "-- bob in lobby now signs" in line)
    column = lines[first].index("bob in lobby")
    follow = lines[first + 1]
    assert follow[column - 1] == " " and follow[column] != " ", (lines[first], follow)


def test_who_shows_the_members_in_the_log_with_their_fingerprints(utc: None) -> None:
    async def who(pilot: Pilot[Any]) -> None:
        await settled(pilot)
        await pilot.press(*"/who", "enter")
        app = pilot.app
        assert isinstance(app, ChatApp)
        deadline = asyncio.get_running_loop().time() + 10
        while not any("members of lobby" in str(e.get("text")) for e in app.state.room.entries):  # type: ignore[union-attr]
            assert asyncio.get_running_loop().time() < deadline, "no /who answer"
            await pilot.pause(0.02)

    text = "\n".join(run(fixed_app(), SMALL, who))
    assert "members of lobby: 4" in text
    assert "a1a1 a1a1 a1a1" in text  # fingerprints, as many digits as trust takes


def test_the_empty_screen_shows_the_whole_recommended_flow_at_80_columns() -> None:
    async def ready(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, ChatApp)
        while not app.ready:
            await pilot.pause(0.02)

    app = ChatApp(NoRooms(), today=lambda: dt.date(2026, 11, 26))
    text = "\n".join(run(app, SMALL, ready))
    for line in WELCOME:
        assert line.strip() in text, line
