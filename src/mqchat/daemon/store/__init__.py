"""The store: SQLite in the state dir, WAL mode (docs/store.md).

``Store`` opens the one connection and holds a small object per concern:
``meta``, ``rooms``, ``messages``, ``outbox``, ``sent`` (our own v2 records, for
repair), ``gaps`` and ``held`` (what a receiver lacks and holds back) and
``memory`` (what a receiver remembers: seen ids, sequence numbers, pins). Each
method that changes state
commits before it returns unless it runs inside ``batch()``, whose writes are
staged and written together just before its commit (mqchat.daemon.store.staging);
so what a caller was told is stored survives a killed daemon. The WAL is
checkpointed by a ``Checkpointer`` that the daemon starts and stops itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mqchat.daemon.store.connection import Checkpointer, is_failure, open_database, transaction
from mqchat.daemon.store.epochs import RoomEpochs
from mqchat.daemon.store.gaps import GapStreams, HeldTexts, StreamRow
from mqchat.daemon.store.memory import ReceiverMemory
from mqchat.daemon.store.messages import Messages
from mqchat.daemon.store.records import OutboxEntry, RoomRecord, StoredMessage
from mqchat.daemon.store.room_log import RoomLogRows
from mqchat.daemon.store.sent import SentRecords
from mqchat.daemon.store.staging import Mark, Staging
from mqchat.daemon.store.tables import Member, Members, Meta, Outbox, Rooms

__all__ = [
    "Checkpointer",
    "Mark",
    "Member",
    "OutboxEntry",
    "RoomRecord",
    "Store",
    "StoredMessage",
    "StreamRow",
    "is_failure",
]


class Store:
    def __init__(
        self,
        path: Path,
        retention: int,
        lowest_unread: Callable[[str], int | None] = lambda room: None,
    ) -> None:
        """``lowest_unread``: per room, the lowest seq a following tail has not shown
        (mqchat.daemon.followers); retention keeps it, within a bound."""
        self.path = path
        self._db = open_database(path)
        self.writers = self._db.writers
        """Held by each write transaction; the Checkpointer takes it to restart the WAL."""
        self._staging = Staging(self._db)
        self.meta = Meta(self._db, self._staging)
        # Tables write in the order they are made: a room's deletes before the outbox's
        # new rows. The outbox is made after the rooms, so it is found when called.
        self.rooms = Rooms(self._db, self._staging, on_delete=self._forget_room)
        self.messages = Messages(self._db, retention, self._staging, lowest_unread)
        self.outbox = Outbox(self._db, self._staging)
        self.sent = SentRecords(self._db, retention, self._staging)
        self.memory = ReceiverMemory(self._db, self._staging)
        self.members = Members(self._db, self._staging)
        self.gaps = GapStreams(self._db, self._staging)
        self.held = HeldTexts(self._db, self._staging)
        self.epochs = RoomEpochs(self._db, self._staging)
        self.room_log = RoomLogRows(self._db, self._staging)

    def _forget_room(self) -> None:
        self.outbox.forget_room()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction; the tables stage their writes and write them at its end."""
        with self._staging.batch():
            yield

    def mark(self) -> Mark:
        """Where the batch's staged writes end now; ``undo`` forgets what came after."""
        return self._staging.mark()

    def undo(self, mark: Mark) -> None:
        self._staging.undo(mark)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a batch: if it raises, what was written to the database within it (a
        flush, the held texts a release takes) is undone, and so is everything staged
        since, with the tables' caches (they may hold what a flush wrote). What was
        staged before is written first, so that this takes back its own writes alone."""
        self._staging.flush()
        try:
            with transaction(self._db):
                yield
        except BaseException:
            self._staging.forget()
            raise

    def flush(self) -> None:
        """Write the batch's staged rows now (a savepoint): a failure here leaves them
        staged, for the part that staged them to undo."""
        self._staging.flush()

    def close(self) -> None:
        self._db.close()  # the last connection to close checkpoints what is left
