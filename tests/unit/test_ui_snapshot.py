"""Issue 17: the look of `chatctl ui`'s main screen, kept by a snapshot (pytest-textual-snapshot).

The app is fed a fixed set of events through a link that stands in for chatd
(the integration tests drive it against a real one), at a fixed size, with a
fixed "today" and the UTC time zone: nothing on screen depends on the clock,
the machine or random ids. NO_COLOR is unset for the snapshot, set for the
test that shows the screen without colour.

`python tests/unit/test_ui_snapshot.py docs/ui.svg` writes README's screenshot
from the same events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from mqchat.client.ui.app import ChatApp
from mqchat.client.ui.link import Post
from mqchat.client.ui.widgets import HistoryInput

SIZE = (120, 30)
TODAY = dt.date(2026, 11, 26)
ALICE, BOB, CAROL, BOB_NEW = "a1" * 32, "b0" * 32, "c4" * 32, "f9" * 32


def _message(room: str, seq: int, ts: str, sender: str, text: str, **kw: Any) -> dict[str, Any]:
    fingerprint = {"alice": ALICE, "bob": BOB, "carol": CAROL}.get(sender, "")
    return {
        "type": "message",
        "room": room,
        "seq": seq,
        "id": f"{seq:032x}",
        "ts": ts,
        "sender": sender,
        "fingerprint": fingerprint,
        "verified": True,
        "own": sender == "alice",
        "legacy": False,
        "text": text,
        **kw,
    }


LOBBY = [
    _message("lobby", 41, "2026-11-25T22:10:07.000Z", "carol", "good night, all"),
    _message("lobby", 42, "2026-11-26T09:14:03.000Z", "bob", "morning! the release is out"),
    _message("lobby", 43, "2026-11-26T09:15:30.000Z", "alice", "great, trying it now"),
    _message("lobby", 44, "2026-11-26T09:16:02.000Z", "carol", "works here \x1b[31mred?\x1b[0m"),
]
KEY_CHANGED = {
    "type": "notice",
    "room": "lobby",
    "kind": "key_changed",
    "text": "bob in lobby now signs with another key (f9f9 f9f9 …); their messages show as "
    "unverified until you check that fingerprint with them",
    "sender": "bob",
    "fingerprint": BOB_NEW,
}
LIVE = [
    KEY_CHANGED,
    _message(
        "lobby", 45, "2026-11-26T09:17:45.000Z", "bob", "it's me, new laptop",
        verified=False, fingerprint=BOB_NEW,
    ),
    _message("dev", 8, "2026-11-26T09:18:00.000Z", "carol", "CI is green again"),
    _message("dev", 9, "2026-11-26T09:18:20.000Z", "bob", "merging"),
    {
        "type": "presence", "room": "lobby", "name": "dave", "fingerprint": "d" * 64,
        "verified": True, "online": True, "last_seen": "2026-11-26T09:19:00.000Z",
        "reason": "joined",
    },
]  # fmt: skip
ROOMS = [
    {"name": "dev", "cipher": "fernet", "legacy": False, "weak": False, "last_seq": 7},
    {"name": "lobby", "cipher": "fernet", "legacy": False, "weak": False, "last_seq": 44},
    {
        "name": "old-friends", "cipher": "fernet", "legacy": True, "weak": True, "last_seq": 0,
        "warning": "legacy room: anyone who knows the passphrase can read and forge",
    },
]  # fmt: skip
WHO = {
    "room": "lobby",
    "members": [
        {"name": "alice", "fingerprint": ALICE, "verified": True, "online": True,
         "last_seen": "2026-11-26T09:19:00.000Z"},
        {"name": "bob", "fingerprint": BOB, "verified": True, "online": False,
         "last_seen": "2026-11-26T08:02:11.000Z"},
        {"name": "bob", "fingerprint": BOB_NEW, "verified": False, "online": True,
         "last_seen": "2026-11-26T09:17:45.000Z"},
        {"name": "carol", "fingerprint": CAROL, "verified": True, "online": True,
         "last_seen": "2026-11-26T09:18:00.000Z"},
    ],
    "interval_s": 60,
    "offline_after_s": 180,
}  # fmt: skip


class FixedLink:
    """chatd's side for the snapshot: fixed events, and ``who`` as the presence contract says."""

    def __init__(self, *, presence: bool = True) -> None:
        self.presence = presence
        self.sent: list[dict[str, Any]] = []

    def listen(self, post: Post, stopped: Callable[[], bool]) -> None:
        post(
            "status",
            {"name": "alice", "broker": {"url": "mqtts://chat.example", "connected": True}},
        )
        held = {"dev": [], "lobby": LOBBY, "old-friends": []}
        post("rooms", [(r, held[r["name"]]) for r in ROOMS])
        for event in LIVE:
            post("event", event)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self.sent.append({"method": method, **(params or {})})
        return {"queued": False}

    def who(self, room: str) -> dict[str, Any] | None:
        if not self.presence:
            return None
        return WHO if room == "lobby" else {**WHO, "room": room, "members": WHO["members"][:1]}

    def older(self, room: str, before: int, count: int) -> list[dict[str, Any]]:
        return []

    def join(self, params: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("no joins here")

    def close(self) -> None:
        pass


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times on screen in UTC, whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def fixed_app(*, presence: bool = True) -> ChatApp:
    return ChatApp(FixedLink(presence=presence), room="lobby", today=lambda: TODAY)


async def settled(pilot: Pilot[Any]) -> None:
    """Every fixed event shown, the members asked, the cursor still."""
    app = pilot.app
    assert isinstance(app, ChatApp)
    app.query_one("#input", HistoryInput).cursor_blink = False
    deadline = time.monotonic() + 10
    while not (
        app.ready
        and app.state.rooms["dev"].unread == 2
        and app.state.presence is not None
        and any(e.get("type") == "presence" for e in app.state.rooms["lobby"].entries)
    ):
        if time.monotonic() > deadline:
            raise AssertionError("the fixed events were not all shown")
        await pilot.pause(0.02)  # a poll interval inside a deadline
    await pilot.pause()


def test_main_screen(snap_compare: Any, utc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert snap_compare(fixed_app(), terminal_size=SIZE, run_before=settled)


def _screenshot(app: ChatApp) -> str:
    async def run() -> str:
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot)
            return app.export_screenshot()

    return asyncio.run(run())


def test_peer_text_is_escaped_and_marks_are_characters(utc: None) -> None:
    svg = _screenshot(fixed_app())
    assert "\x1b" not in svg
    assert r"works&#160;here&#160;\x1b[31mred?\x1b[0m" in svg
    assert "&lt;bob?&gt;" in svg  # the unverified mark is a character, not just a colour
    assert "!legacy" in svg
    assert "2026-11-25&#160;22:10:07" in svg and "09:14:03" in svg  # a date only when not today


def test_no_color_draws_in_grey(utc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    svg = _screenshot(fixed_app())
    screen = re.sub(r"<circle[^>]*>", "", svg)  # the window's three buttons are not the app
    colours = set(re.findall(r"#([0-9a-f]{6})\b", screen))
    assert colours
    # Grey: equal channels, give or take the export's own default foreground (#c5c8c6).
    channels = [[int(c[i : i + 2], 16) for i in (0, 2, 4)] for c in colours]
    assert all(max(rgb) - min(rgb) <= 3 for rgb in channels), sorted(colours)


def test_members_panel_without_presence(utc: None) -> None:
    svg = _screenshot(fixed_app(presence=False))
    assert "presence&#160;not&#160;available" in svg


if __name__ == "__main__":  # python tests/unit/test_ui_snapshot.py docs/ui.svg
    os.environ.pop("NO_COLOR", None)
    os.environ["TZ"] = "UTC"
    time.tzset()
    Path(sys.argv[1]).write_text(_screenshot(fixed_app()))
