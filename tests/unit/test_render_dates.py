"""Issue 11 finding 5: plain output shows the date of a message that is not from today.

A replayed or long-delayed message must not look like one that just arrived.
Times are local: the tests build timestamps from local datetimes, so they hold
in any time zone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mqchat.client.render import Renderer, check_template, local_date, local_time, when


def stamp(local: dt.datetime) -> str:
    """The event timestamp (UTC, as chatd writes it) of a local wall-clock time."""
    utc = local.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def event(ts: str, **kw: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "room": "lobby",
        "seq": 1,
        "id": "ab" * 16,
        "ts": ts,
        "sender": "alice",
        "fingerprint": "cd" * 16,
        "verified": True,
        "own": False,
        "legacy": False,
        "text": "hi",
        **kw,
    }


def plain(*, colour: bool = False) -> Renderer:
    return Renderer(as_json=False, template=None, colour=colour, show_room=False)


def test_a_message_of_today_shows_its_time_only() -> None:
    now = dt.datetime.now().astimezone()
    line = plain().message(event(stamp(now)))
    assert line == f"{now:%H:%M:%S} <alice> hi"


def test_an_old_message_shows_its_date() -> None:
    old = dt.datetime(2026, 11, 20, 14, 3, 11).astimezone()
    assert plain().message(event(stamp(old))) == "2026-11-20 14:03:11 <alice> hi"
    coloured = plain(colour=True).message(event(stamp(old)))
    assert "2026-11-20 14:03:11" in coloured


@pytest.mark.parametrize(
    ("local", "shown"),
    [
        (dt.datetime(2026, 3, 9, 0, 0, 0), "00:00:00"),
        (dt.datetime(2026, 3, 9, 23, 59, 59), "23:59:59"),
        (dt.datetime(2026, 3, 8, 23, 59, 59), "2026-03-08 23:59:59"),
        (dt.datetime(2026, 3, 10, 0, 0, 1), "2026-03-10 00:00:01"),  # from the future: dated
        (dt.datetime(2025, 3, 9, 12, 0, 0), "2025-03-09 12:00:00"),  # same day, last year
    ],
)
def test_today_is_the_local_calendar_day(local: dt.datetime, shown: str) -> None:
    assert when(stamp(local.astimezone()), today=dt.date(2026, 3, 9)) == shown


@pytest.mark.parametrize("ts", ["", "garbage", "2026-13-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_a_bad_or_extreme_timestamp_never_raises(ts: str) -> None:
    shown = when(ts)  # 9999-12-31 in UTC is year 10000 east of it: unknown, not an error
    assert shown == "??:??:??" or shown.startswith("9999-12-31 ")
    assert plain().message(event(ts)).endswith("<alice> hi")


def test_templates_keep_time_and_gain_date() -> None:
    old = stamp(dt.datetime(2026, 11, 20, 14, 3, 11).astimezone())
    r = Renderer(as_json=False, template="{date} {time} {text}", colour=False, show_room=False)
    assert r.message(event(old)) == "2026-11-20 14:03:11 hi"
    assert local_date(old) == "2026-11-20"
    assert local_time(old) == "14:03:11"
    assert local_date("nonsense") == "????-??-??"
    assert check_template("{date}") == "{date}"


def test_json_output_is_unchanged() -> None:
    old = stamp(dt.datetime(2026, 11, 20, 14, 3, 11).astimezone())
    line = Renderer(as_json=True, template=None, colour=False, show_room=False).message(event(old))
    assert '"date"' not in line and f'"ts": "{old}"' in line
