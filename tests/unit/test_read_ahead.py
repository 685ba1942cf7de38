"""chatctl send's stdin read-ahead (mqchat.client.sending): lines are taken in
batches, in order, and an input error comes after the lines read before it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from mqchat.client.sending import READ_AHEAD, _ReadAhead


def test_the_lines_that_wait_are_taken_at_once_in_order() -> None:
    source = _ReadAhead(f"line {i}\n" for i in range(1, 1001))
    taken: list[tuple[int, str]] = []
    takes = 0
    while not source.ended:
        got = source.take(wait=True)
        takes += bool(got)
        taken.extend(got)
    assert taken == [(i, f"line {i}\n") for i in range(1, 1001)]
    assert takes < 1000  # many lines a take, not one


def test_an_input_error_comes_after_the_lines_before_it() -> None:
    def lines() -> Iterator[str]:
        yield "one\n"
        yield "two\n"
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    source = _ReadAhead(lines())
    taken: list[tuple[int, str]] = []
    while len(taken) < 2:
        taken.extend(source.take(wait=True))
    assert taken == [(1, "one\n"), (2, "two\n")]
    with pytest.raises(UnicodeDecodeError):
        source.take(wait=True)


def test_reading_stops_ahead_of_the_stream_and_goes_on_when_it_takes() -> None:
    read = 0
    more = threading.Event()

    def lines() -> Iterator[str]:
        nonlocal read
        for i in range(3 * READ_AHEAD):
            read += 1
            if read == READ_AHEAD + 1:
                more.set()  # the reader got past the bound: it waits for room now
            yield f"{i}\n"

    source = _ReadAhead(lines())
    assert more.wait(10)
    first = source.take(wait=True)
    assert len(first) <= READ_AHEAD
    total = len(first)
    while not source.ended:
        total += len(source.take(wait=True))
    assert total == 3 * READ_AHEAD
