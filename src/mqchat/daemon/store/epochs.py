"""Epoch secrets and epoch state per room (docs/store.md, "room_epochs").

A table of its own, created here, beside the rooms table: one row per epoch a
room holds (the current one, old epochs and losing candidates in their grace
period) and one per epoch whose grace period ended (its secret gone: only its
topic is kept, to count what still arrives there as "old epoch"). The database
file is 0600, as every secret chatd stores.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from mqchat.daemon.store.connection import StoreConnection
from mqchat.daemon.store.staging import StagedStatements, Staging

CURRENT: Final = "current"
GRACE: Final = "grace"
EXPIRED: Final = "expired"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS room_epochs (
    room TEXT NOT NULL,
    tag TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    state TEXT NOT NULL,
    secret BLOB,
    topic TEXT NOT NULL,
    until_ms INTEGER,
    base_tag TEXT,
    rekeyer BLOB,
    recipients BLOB,
    best_rekey_id BLOB,
    PRIMARY KEY (room, tag)
) WITHOUT ROWID;
"""


class EpochRow(NamedTuple):
    """One epoch of one room. ``secret`` is None once its grace period ended."""

    room: str
    tag: str
    epoch: int
    state: str
    secret: bytes | None
    topic: str
    until_ms: int | None = None
    """End of the grace period (state "grace")."""
    base_tag: str | None = None
    """The tag of the epoch whose rekey made this one; None if created or joined."""
    rekeyer: bytes | None = None
    """Ed25519 key of the member whose rekey made this epoch."""
    recipients: bytes | None = None
    """The X25519 keys that rekey was sealed to, concatenated (32 bytes each)."""
    best_rekey_id: bytes | None = None
    """The lowest rekey id seen among the rekeys published in this epoch."""

    def __repr__(self) -> str:
        return f"EpochRow(room={self.room!r}, epoch={self.epoch}, state={self.state!r})"


class RoomEpochs(StagedStatements):
    """A room's epochs; written with the batch that changes them (mqchat.daemon.store.staging)."""

    def __init__(self, db: StoreConnection, staging: Staging) -> None:
        db.executescript(_SCHEMA)
        super().__init__(db, staging)

    def of(self, room: str) -> list[EpochRow]:
        rows = (
            self._reading()
            .execute(
                "SELECT room, tag, epoch, state, secret, topic, until_ms, base_tag, rekeyer, "
                "recipients, best_rekey_id FROM room_epochs WHERE room = ? ORDER BY epoch, tag",
                (room,),
            )
            .fetchall()
        )
        return [EpochRow(*row) for row in rows]

    def save(self, rows: list[EpochRow]) -> None:
        """Write ``rows`` (replacing rows of the same room and tag), all or none."""
        sql = "INSERT OR REPLACE INTO room_epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        self._stage(*[(sql, row) for row in rows])

    def forget_room(self, room: str) -> None:
        self._stage(("DELETE FROM room_epochs WHERE room = ?", (room,)))
