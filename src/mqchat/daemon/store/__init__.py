"""The store: SQLite in the state dir, WAL mode (docs/store.md).

``Store`` opens the one connection and holds a small object per concern:
``meta``, ``rooms``, ``messages``, ``outbox`` and ``memory`` (what a receiver
remembers: seen ids, sequence numbers, pins). Each method that changes state
commits before it returns unless it runs inside ``transaction()``, so what a
caller was told is stored survives a killed daemon. The WAL is checkpointed by
a ``Checkpointer`` that the daemon starts and stops itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mqchat.daemon.store.connection import Checkpointer, is_failure, open_database, transaction
from mqchat.daemon.store.memory import ReceiverMemory
from mqchat.daemon.store.messages import Messages
from mqchat.daemon.store.records import OutboxEntry, RoomRecord, StoredMessage
from mqchat.daemon.store.tables import Member, Members, Meta, Outbox, Rooms

__all__ = [
    "Checkpointer",
    "Member",
    "OutboxEntry",
    "RoomRecord",
    "Store",
    "StoredMessage",
    "is_failure",
]


class Store:
    def __init__(self, path: Path, retention: int) -> None:
        self.path = path
        self._db = open_database(path)
        self.meta = Meta(self._db)
        self.rooms = Rooms(self._db)
        self.messages = Messages(self._db, retention)
        self.outbox = Outbox(self._db)
        self.memory = ReceiverMemory(self._db)
        self.members = Members(self._db)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with transaction(self._db) as db:
            yield db

    def close(self) -> None:
        self._db.close()  # the last connection to close checkpoints what is left
