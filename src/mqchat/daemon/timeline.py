"""A room's timeline: the one place a received message is numbered, stored and told.

The inbox shows what arrives in order; repair (mqchat.daemon.repair) shows what
it held back once a gap is filled or given up. Both write through here, in the
unit of work of the payload that caused it.
"""

from __future__ import annotations

from mqchat.daemon.rooms import Room
from mqchat.daemon.store import Store, StoredMessage
from mqchat.daemon.unit_of_work import UnitOfWork


class Timeline:
    def __init__(self, store: Store, work: UnitOfWork) -> None:
        self._store = store
        self._work = work

    def show(self, room: Room, message: StoredMessage) -> None:
        """Number a message in its room, store it and tell the tails (after the commit).

        A caller that knows the message is shown now builds it with ``room.last_seq +
        1`` already, so that it is not built twice (a text held back has another)."""
        if message.seq != room.last_seq + 1:
            message = message._replace(seq=room.last_seq + 1)
        self._store.messages.insert(message)
        room.last_seq = message.seq
        if self._work.wants_events:
            self._work.publish(room.name, message)  # its event, built once it is sent
