"""The store's WAL starts over under a steady stream of small commits.

SQLite starts its WAL over only when a write begins with every frame already
copied into the database. With a commit landing during every PASSIVE checkpoint
that never happened, and the WAL grew by every page every commit wrote (190 MB
in 10 s of messages received one at a time). The Checkpointer now holds the
daemon's writers off for a second, short checkpoint when the WAL is long, so the
next write starts it over.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from mqchat.daemon.store.connection import (
    Checkpointer,
    StoreConnection,
    open_database,
    transaction,
)

MOST_COMMITS = 20_000
RESTARTS = 3


def _restarts(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: SQLite adds one each time the
    WAL starts over (https://sqlite.org/fileformat2.html#walformat)."""
    with wal.open("rb") as f:
        header = f.read(32)
    return struct.unpack(">I", header[12:16])[0] if len(header) == 32 else 0


def _stream_of_commits(db: StoreConnection, wal: Path) -> int:
    """Commit one row at a time, as the daemon does, until the WAL started over
    RESTARTS times or MOST_COMMITS are in; how many went in."""
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    for i in range(MOST_COMMITS):
        with transaction(db):  # the daemon's write transaction: through its gate
            db.execute("INSERT INTO t(body) VALUES (?)", (os.urandom(3900),))
        if i % 100 == 99 and _restarts(wal) >= RESTARTS:
            return i + 1
    return MOST_COMMITS


def test_a_steady_stream_of_commits_does_not_grow_the_wal_without_bound(tmp_path: Path) -> None:
    path = tmp_path / "mqchat.db"
    wal = Path(f"{path}-wal")
    db = open_database(path)
    # A short interval and a small threshold make seconds of a busy daemon happen in
    # this test's commits; the rule is the same.
    checkpointer = Checkpointer(path, db.writers, interval_s=0.01, restart_frames=256)
    checkpointer.start()
    try:
        committed = _stream_of_commits(db, wal)
        assert checkpointer.is_alive()
    finally:
        checkpointer.stop()
    assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == committed
    restarts = _restarts(wal)
    size = wal.stat().st_size
    db.close()
    assert restarts >= RESTARTS, (
        f"the WAL never started over in {committed} commits: {size / 1e6:.0f} MB"
    )


def test_the_store_limits_what_of_the_wal_file_is_kept(tmp_path: Path) -> None:
    """journal_size_limit is set: once the WAL starts over, SQLite cuts the file back
    to it rather than keeping what the longest burst left (SQLite's own behaviour;
    a file of more than 64 MiB is too slow to make here)."""
    db = open_database(tmp_path / "mqchat.db")
    limit = db.execute("PRAGMA journal_size_limit").fetchone()[0]
    db.close()
    assert 0 < limit <= 64 * 1024 * 1024
