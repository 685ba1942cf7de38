"""Stream numbers (docs/protocol.md §15): reserved before use, never backwards while
the identity stays, floored on the clock, and a damaged file is one clear error."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from mqchat.daemon.store import Store
from mqchat.daemon.stream_numbers import STREAM_BLOCK, StreamReservation
from mqchat.errors import MqchatError


def test_streams_are_reserved_before_use_and_never_reused(tmp_path: Path) -> None:
    clock = [1_000]
    first = StreamReservation(tmp_path, lambda: clock[0])
    taken = [first.take() for _ in range(STREAM_BLOCK + 3)]
    assert taken == sorted(set(taken))
    on_disk = int((tmp_path / "streams").read_text())
    assert on_disk >= taken[-1]
    assert (tmp_path / "streams").stat().st_mode & 0o777 == 0o600
    # A restart (or a deleted database) starts past everything reserved, even
    # with a clock set back.
    clock[0] = 0
    again = StreamReservation(tmp_path, lambda: clock[0])
    assert again.take() > on_disk


def test_streams_are_floored_on_the_clock(tmp_path: Path) -> None:
    streams = StreamReservation(tmp_path, lambda: 1_800_000_000_000)
    assert streams.take() == 1_800_000_000_000


@pytest.mark.parametrize("content", ["", "x", "-5", "1e9", "99999999999999999999"])
def test_a_damaged_streams_file_is_one_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "streams").write_text(content)
    with pytest.raises(MqchatError, match="damaged"):
        StreamReservation(tmp_path, lambda: 0)


def test_a_store_of_schema_1_gains_what_version_2_needs(tmp_path: Path) -> None:
    path = tmp_path / "mqchat.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT NOT NULL,
            topic TEXT NOT NULL, qos INTEGER NOT NULL, payload BLOB NOT NULL
        );
        INSERT INTO outbox (room, topic, qos, payload) VALUES ('r', 't', 1, x'0102');
        """
    )
    db.commit()
    db.close()
    os.chmod(path, 0o600)
    store = Store(path, retention=100)
    try:
        (entry,) = store.outbox.after(0, 10)
        assert (entry.payload, entry.kind) == (b"\x01\x02", 0)  # a v1 payload, sent as it is
        assert store.meta.get("schema") == "3"  # 3: the repair tables (gap_streams, held)
        assert store.sent.streams("r") == []
        assert store.gaps.wanting() == [] and store.held.count() == 0
    finally:
        store.close()
