"""Read marks of following tails: parsed strictly, only moving forward, forgotten
with their connection (mqchat.daemon.followers)."""

from __future__ import annotations

import pytest

from mqchat.daemon.followers import MAX_MARKS, Followers, parse_read


def test_marks_move_forward_and_the_lowest_holds() -> None:
    f = Followers()
    a, b = object(), object()
    f.mark(a, {"lobby": 10})
    f.mark(a, {"lobby": 4})  # late: cannot release what 10 held
    f.mark(b, {"lobby": 7, "other": 1})
    assert f.lowest_unread("lobby") == 8
    f.forget(b)
    assert f.lowest_unread("lobby") == 11
    assert f.lowest_unread("nobody follows") is None


@pytest.mark.parametrize(
    "line",
    [
        b"[]",
        b'{"read": []}',
        b'{"read": {"lobby": -1}}',
        b'{"read": {"lobby": true}}',
        b'{"read": {"lobby": 9223372036854775808}}',
        b'{"read": {"a/b": 1}}',
        b'{"read": {}, "more": 1}',
        b"not json",
    ],
)
def test_bad_read_lines_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):  # each reason is a sentence of its own
        parse_read(line)


def test_a_read_line_names_at_most_1024_rooms() -> None:
    many = ", ".join(f'"r{i}": 1' for i in range(MAX_MARKS + 1))
    with pytest.raises(ValueError, match="more than 1024 rooms"):
        parse_read(("{" + f'"read": {{{many}}}' + "}").encode())
    assert parse_read(b'{"read": {"lobby": 3}}') == {"lobby": 3}
