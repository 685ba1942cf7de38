"""The SQLite connection: opening, the schema, transactions, and what counts as a failure.

One connection, used only from the daemon's event loop thread. WAL mode, with
checkpoints left to a Checkpointer that the daemon starts and stops itself.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mqchat.errors import StoreError

log = logging.getLogger(__name__)

# A bool is bound as the integer it is either way; with an adapter registered, the
# sqlite3 module finds it in a dict instead of failing its adapter protocol first,
# ~0.5 µs a bool (a message row has three: issue 24).
sqlite3.register_adapter(bool, int)

SCHEMA_VERSION = 3
CHECKPOINT_INTERVAL_S = 1.0
WAL_RESTART_FRAMES = 16_384
"""A WAL longer than this (64 MiB of 4 KiB pages) after a PASSIVE checkpoint gets a
second one with the daemon's writers held off, so that the next write starts the
WAL over: it holds them for the frames written since the first and two syncs (a
few ms). At 16 MiB that came every second under a stream of single messages and
cost the idle p99 ~0.2 ms (benchmarks/latency.py); at 64 MiB it comes every few
seconds at most."""
WAL_KEEP_BYTES = 64 * 1024 * 1024
"""What of the WAL file is kept when it starts over (journal_size_limit): what a
stream fills between two restarts, so it reuses its blocks instead of growing the
file and cutting it back."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY,
    cipher TEXT NOT NULL,
    legacy INTEGER NOT NULL,
    weak INTEGER NOT NULL,
    kdf TEXT NOT NULL,
    key_a BLOB NOT NULL,
    key_b BLOB,
    topic TEXT NOT NULL,
    joined_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    sender TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    verified INTEGER NOT NULL,
    own INTEGER NOT NULL,
    legacy INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    topic TEXT NOT NULL,
    qos INTEGER NOT NULL,
    payload BLOB NOT NULL,
    kind INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sent (
    room TEXT NOT NULL,
    stream INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (room, stream, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gap_streams (
    room TEXT NOT NULL,
    sender_key BLOB NOT NULL,
    stream INTEGER NOT NULL,
    hw INTEGER NOT NULL,
    missing TEXT NOT NULL,
    final INTEGER NOT NULL,
    held INTEGER NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (room, sender_key, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gap_senders (
    room TEXT NOT NULL, sender_key BLOB NOT NULL, floor INTEGER NOT NULL,
    PRIMARY KEY (room, sender_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS held (
    room TEXT NOT NULL,
    sender_key BLOB NOT NULL,
    stream INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    sender TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    verified INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (room, sender_key, stream, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen_ids (id BLOB PRIMARY KEY, at_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen_seqs (
    sender_key BLOB NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (sender_key, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sender_high (sender_key BLOB PRIMARY KEY, seq INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sender_keys (
    room TEXT NOT NULL,
    name TEXT NOT NULL,
    sender_key BLOB NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (room, name, sender_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    room TEXT NOT NULL,
    sender_key BLOB NOT NULL,
    name TEXT NOT NULL,
    x25519_key BLOB,
    last_seen_ms INTEGER NOT NULL,
    interval_s INTEGER NOT NULL,
    online INTEGER NOT NULL,
    PRIMARY KEY (room, sender_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pins (
    room TEXT NOT NULL,
    name TEXT NOT NULL,
    sender_key BLOB NOT NULL,
    pending_key BLOB,
    PRIMARY KEY (room, name)
) WITHOUT ROWID;
"""


class WriteGate:
    """The daemon's write transactions and the Checkpointer's WAL restart, in turn.

    A plain lock would let a busy event loop take it again before the waiting
    Checkpointer thread wakes; a turn taken first makes the loop wait behind it.
    """

    def __init__(self) -> None:
        self._turn = threading.Lock()
        self._writers = threading.Lock()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """For one write transaction: uncontended but while the Checkpointer holds it."""
        with self._turn:
            pass
        with self._writers:
            yield

    @contextmanager
    def held_off(self) -> Iterator[None]:
        """No write transaction starts until this ends; one under way finishes first."""
        with self._turn, self._writers:
            yield


class StoreConnection(sqlite3.Connection):
    """The daemon's connection, with the gate its write transactions go through."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.writers = WriteGate()


def open_database(path: Path) -> StoreConnection:
    """Open (or create, 0600) the store, or raise StoreError naming the file."""
    try:
        return _open(path)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StoreError(f"cannot use the store {path}: {reason}") from None


def _open(path: Path) -> StoreConnection:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    db = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, factory=StoreConnection
    )
    try:
        _configure(db, path)
    except BaseException:
        db.close()
        raise
    return db


def _configure(db: sqlite3.Connection, path: Path) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a killed process; only power loss can
    # undo the last commits (docs/store.md says so).
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=OFF")
    # A checkpoint fsyncs the database: inside a commit on the event loop it
    # stalled every few hundred messages by ~20 ms (benchmarks/latency.py).
    # The Checkpointer thread does it instead.
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
    db.executescript(_SCHEMA)
    _migrate(db)
    db.execute(
        "INSERT INTO meta(key, value) VALUES ('schema', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )
    # Reading every table once now turns a damaged file into a clear error at
    # start-up rather than a failure in the middle of serving.
    for table in ("meta", "rooms", "outbox", "pins", "sent", "gap_streams", "gap_senders"):
        db.execute(f"SELECT * FROM {table}").fetchall()
    db.execute("SELECT MAX(seq) FROM messages").fetchone()
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.chmod(side, 0o600)


_ADDED_COLUMNS = (
    # (table, column, definition): columns later schema versions added to a table
    ("outbox", "kind", "INTEGER NOT NULL DEFAULT 0"),
)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a store of an earlier schema version up to this one: add what it lacks."""
    for table, column, definition in _ADDED_COLUMNS:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


@contextmanager
def transaction(db: StoreConnection) -> Iterator[StoreConnection]:
    """All or nothing. Nested inside another, it is a savepoint: the outer
    commit makes it durable, and its own failure undoes only itself."""
    if db.in_transaction:
        db.execute("SAVEPOINT part")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK TO part")
            db.execute("RELEASE part")
            raise
        db.execute("RELEASE part")
        return
    with db.writers.writing():
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            # A COMMIT that fails (a full disk, a busy lock) can leave the
            # transaction open; the next batch must not run inside it.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def is_failure(exc: BaseException) -> bool:
    """True when ``exc`` says the store itself failed (disk, lock, damage), so
    trying again later may succeed; False for a refused value, which will not."""
    if isinstance(exc, OSError | MemoryError | sqlite3.OperationalError):
        return True
    refused = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, refused)


class Checkpointer(threading.Thread):
    """Copies the WAL into the database now and then, off the event loop.

    PASSIVE checkpoints never block the daemon's own reads and writes; this
    thread's connection only ever checkpoints. The daemon starts and stops it.

    SQLite starts the WAL over only when a write begins with every frame already
    copied. Under a steady stream a commit lands during each PASSIVE checkpoint,
    so that never happened and the file grew without bound (4 KiB pages, about 48
    KiB of WAL a message received one at a time: 190 MB in 10 s at 400 msg/s).
    So a WAL still longer than WAL_RESTART_FRAMES after a PASSIVE checkpoint gets
    a second one while this thread holds the daemon's write lock
    (StoreConnection.writers): it copies what came since the first, and the next
    write starts the WAL over; journal_size_limit then cuts the file back to
    WAL_KEEP_BYTES. The event loop waits for that copy and its sync (a few ms) at
    most once a checkpoint interval, and only under such a stream.
    """

    def __init__(
        self,
        path: Path,
        writers: WriteGate,
        interval_s: float = CHECKPOINT_INTERVAL_S,
        restart_frames: int = WAL_RESTART_FRAMES,
    ) -> None:
        super().__init__(name="sqlite-checkpoint", daemon=True)
        self._path = path
        self._writers = writers
        self._interval = interval_s
        self._restart_frames = restart_frames
        self._stopping = threading.Event()

    def run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, timeout=1.0)
        try:
            while not self._stopping.wait(self._interval):
                try:
                    self.checkpoint(db)
                except sqlite3.Error as exc:
                    log.debug("checkpoint skipped: %s", exc)
        finally:
            db.close()

    def checkpoint(self, db: sqlite3.Connection) -> None:
        """PASSIVE; if the WAL is still long, again with the writers held off."""
        _busy, frames, _copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > self._restart_frames:
            with self._writers.held_off():
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def stop(self) -> None:
        self._stopping.set()
        self.join(5.0)
