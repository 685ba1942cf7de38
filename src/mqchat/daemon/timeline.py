"""A room's timeline: the one place a received message is numbered, stored and told.

The inbox shows what arrives in order; repair (mqchat.daemon.repair) shows what
it held back once a gap is filled or given up. Both write through here, in the
unit of work of the payload that caused it.
"""

from __future__ import annotations

from mqchat.daemon.rooms import Room
from mqchat.daemon.store import Store, StoredMessage
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.protocol.ipc_events import to_event


class Timeline:
    def __init__(self, store: Store, work: UnitOfWork) -> None:
        self._store = store
        self._work = work

    def show(self, room: Room, message: StoredMessage) -> None:
        """Number a message in its room, store it and tell the tails (after the commit)."""
        m = message  # built field by field: dataclasses.replace costs 3x as much, per text
        message = StoredMessage(
            m.room, room.last_seq + 1, m.id, m.ts_ms, m.sender, m.fingerprint,
            m.verified, m.own, m.legacy, m.text,
        )  # fmt: skip
        self._store.messages.insert(message)
        room.last_seq = message.seq
        if self._work.wants_events:
            self._work.publish(room.name, to_event(message))
