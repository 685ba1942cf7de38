"""Dropped input is always counted, but logged at most once per reason per interval."""

from __future__ import annotations

import logging

import pytest

from mqchat.daemon.drops import DropCounter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mqchat.daemon.drops"]


def test_first_drop_is_logged_with_its_detail(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    drops = DropCounter(10.0, clock)
    with caplog.at_level(logging.WARNING):
        drops.drop("oversized", "70000 bytes")
    assert lines(caplog) == ["dropped oversized (70000 bytes)"]
    assert drops.as_dict() == {"oversized": 1}


def test_a_flood_is_counted_but_logged_once_per_interval(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    drops = DropCounter(10.0, clock)
    with caplog.at_level(logging.WARNING):
        for i in range(10_000):
            clock.now = 1000.0 + i / 1000  # ten seconds of flood
            drops.drop("undecryptable", "payload does not decrypt")
        assert len(lines(caplog)) == 1
        clock.now = 1010.0  # ten seconds after the first line
        drops.drop("undecryptable")
        clock.now += 0.1
        drops.drop("undecryptable")
    assert lines(caplog)[1] == "dropped undecryptable; 9999 more since the last report"
    assert len(lines(caplog)) == 2
    assert drops.as_dict() == {"undecryptable": 10_002}


def test_reasons_are_limited_separately(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    drops = DropCounter(10.0, clock)
    with caplog.at_level(logging.INFO):
        for reason in ("duplicate", "replay", "duplicate", "bad_request", "replay"):
            drops.drop(reason)
    assert lines(caplog) == ["dropped duplicate", "dropped replay", "dropped bad request"]
    assert drops.as_dict() == {"duplicate": 2, "replay": 2, "bad_request": 1}


def test_quiet_reason_logs_again_after_the_interval(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    drops = DropCounter(10.0, clock)
    with caplog.at_level(logging.WARNING):
        drops.drop("replay")
        clock.now += 9.99
        drops.drop("replay")
        clock.now += 0.01
        drops.drop("replay")
        clock.now += 60
        drops.drop("replay")
    assert lines(caplog) == [
        "dropped replay",
        "dropped replay; 1 more since the last report",
        "dropped replay",
    ]


def test_counters_start_empty() -> None:
    assert DropCounter().as_dict() == {}


def test_drop_says_whether_it_logged(clock: Clock) -> None:
    """A caller logs its traceback only with the drop's own line, as rarely."""
    drops = DropCounter(10.0, clock)
    assert drops.drop("internal_error") is True
    assert drops.drop("internal_error") is False
    clock.now += 10
    assert drops.drop("internal_error") is True


def test_a_time_past_9999_is_shown_at_the_end_of_9999() -> None:
    """A row stored before version 2 texts were bounded must not fail the history."""
    from mqchat.protocol.ipc_events import iso_ts

    assert iso_ts(2**62) == "9999-12-31T23:59:59.999Z"
    assert iso_ts(-5) == "1970-01-01T00:00:00.000Z"
