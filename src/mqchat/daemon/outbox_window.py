"""What of the durable outbox the broker link holds, and what the broker said of it.

The outbox in the store is the queue. The broker link (paho) holds only a
bounded window of it, refilled on every PUBACK and never larger than the
broker's Receive Maximum, so a long outage costs no memory, paho never runs out
of packet ids and the broker's queue is never overrun. Entries go in outbox
order. Version 2 records waiting in a row for one room are sealed into one
batch as they are handed over (mqchat.daemon.sealing): the window counts
payloads, so the more that waits, the larger the batches. A PUBACK removes the
entries of its payload; a refusal (an ACL, a quota) keeps them for the next
connection, counts them and tells the room's tails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mqchat.daemon.publisher import Publisher
from mqchat.daemon.sealing import BatchSealer
from mqchat.daemon.store import OutboxEntry, Store, is_failure
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.protocol.batch import MAX_RECORDS
from mqchat.protocol.ipc_events import iso_ts, notice_event

log = logging.getLogger(__name__)

WINDOW = 100
"""Payloads the broker link holds at once (fewer if the broker's Receive Maximum
says so); PUBACKs make room for more."""
PAGE = 512
"""Outbox entries read at a time: two batches' worth of records at most."""
FORGET_AFTER = 256
"""Entries PUBACK'd that are removed from the outbox in one transaction..."""
FORGET_WITHIN_S = 1.0
"""...or, when fewer came, this long after the first of them: removing them at
every PUBACK cost an idle sender a second transaction for each message."""


class OutboxWindow:
    def __init__(
        self,
        store: Store,
        work: UnitOfWork,
        clock_ms: Callable[[], int],
        room_names: Callable[[], set[str]],
        sealer: BatchSealer,
        link: Publisher,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._work = work
        self._clock_ms = clock_ms
        self._room_names = room_names
        self._link = link
        self.connected = False
        self._inflight: dict[int, list[int]] = {}  # paho mid -> the outbox ids it carries
        self._handed: set[int] = set()  # outbox ids paho holds
        self._published: list[int] = []  # outbox ids whose PUBACK came, not yet removed
        self._refill_scheduled = False
        self._forget_timer: asyncio.TimerHandle | None = None
        self._refusals: dict[int, str] = {}  # outbox id -> the broker's reason
        self._cursor = 0  # the newest outbox id handed over since the last connection
        self._read_to_end: tuple[int, int] | None = None  # (outbox additions, cursor)
        self._generation = 0  # the link's paho client that holds what we handed
        self.last_refusal: tuple[str, int] | None = None

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def status(self) -> dict[str, Any]:
        self._forget_published()
        last = self.last_refusal
        return {
            "outbox": self._store.outbox.depth(),
            "refused": len(self._refusals),
            "last_refusal": None if last is None else {"reason": last[0], "at": iso_ts(last[1])},
        }

    def set_connected(self, connected: bool) -> None:
        self.connected = connected
        self._forget_published()  # before the cursor goes back to the oldest entry
        if not connected:
            return
        if self._link.generation != self._generation:
            # A new paho client (another protocol or broker URL) holds nothing of
            # what the old one was given: everything unacknowledged goes again.
            self._generation = self._link.generation
            self._inflight.clear()
            self._handed.clear()
        self._cursor = 0  # refused or untaken entries go again, in order
        self.fill()

    def fill(self) -> None:
        """Hand the link the oldest entries it does not hold, up to the window."""
        if self._work.active:
            self._work.after_commit(self.fill)
            return
        if not self.connected:
            return  # paho holds nothing while offline
        window = min(WINDOW, self._link.receive_maximum)
        outbox = self._store.outbox
        while len(self._inflight) < window:
            if self._read_to_end == (outbox.additions, self._cursor):
                return  # nothing was added since the outbox was read to its end
            page = outbox.after(self._cursor, PAGE)
            if len(page) < PAGE:
                # Handed over whole (below), this page is the outbox's end.
                end = (outbox.additions, page[-1].id if page else self._cursor)
            else:
                end = None
            at = 0
            while at < len(page):
                if len(self._inflight) >= window:
                    return
                if page[at].id in self._handed:
                    self._cursor = page[at].id
                    at += 1
                    continue
                taken = self._hand_over(page, at)
                if taken == 0:
                    return  # not taken now (QoS 0 while offline): the next connection
                at += taken
            if end is not None and self._cursor == end[1]:
                self._read_to_end = end

    def _hand_over(self, page: list[OutboxEntry], at: int) -> int:
        """Publish ``page[at]`` (with the records after it, sealed in one batch);
        return how many entries went, 0 if the link took none."""
        entry = page[at]
        if entry.kind == 0:
            group, topic, payload = [entry], entry.topic, entry.payload
        else:
            group = _records_in_a_row(page, at, self._handed)
            sealed = self._sealer.seal(group)
            if sealed is None:
                # The room is gone (left in this batch): nothing can send them.
                self._cursor = group[-1].id
                self._store.outbox.remove([e.id for e in group])
                return len(group)
            group, topic, payload = group[: sealed.count], sealed.topic, sealed.payload
        mid = self._link.publish(topic, payload, entry.qos)
        if mid is None:
            return 0
        ids = [e.id for e in group]
        self._cursor = ids[-1]
        self._inflight[mid] = ids
        self._handed.update(ids)
        return len(ids)

    def on_published(self, mid: int, refusal: str | None) -> None:
        entry_ids = self._inflight.pop(mid, None)
        if entry_ids is None:
            return
        self._handed.difference_update(entry_ids)
        if refusal is not None:
            self._refused(entry_ids, refusal)
            return
        for entry_id in entry_ids:
            self._refusals.pop(entry_id, None)
        if not self._refill_scheduled:
            # Once per loop pass for all the PUBACKs that came in it.
            self._refill_scheduled = True
            asyncio.get_running_loop().call_soon(self._refill)
        self._published.extend(entry_ids)

    def _refused(self, entry_ids: list[int], reason: str) -> None:
        """The broker took the payload but would not publish it (an ACL, a quota)."""
        first = any(i not in self._refusals for i in entry_ids)
        for entry_id in entry_ids:
            self._refusals[entry_id] = reason
        self.last_refusal = (reason, self._clock_ms())
        log.warning("the broker refused to publish a message (%s); kept for a retry", reason)
        room = self._store.outbox.room_of(entry_ids[0])
        if first and room is not None and room in self._room_names():
            self._work.publish(
                room,
                notice_event(
                    room,
                    "publish_refused",
                    f"the broker refused a message in {room} ({reason}); chatd keeps it and "
                    f"tries again when it reconnects",
                    reason=reason,
                ),
            )

    def _refill(self) -> None:
        """Hand the link as many entries as were PUBACK'd, and now and then remove them.

        Entries PUBACK'd are removed FORGET_AFTER at a time, or FORGET_WITHIN_S after
        the first of them: a transaction each loop pass, or each PUBACK of an idle
        sender, cost more than anything but the signatures. One that is still
        there after a crash goes again, and its receivers drop it as a duplicate.
        """
        self._refill_scheduled = False
        if len(self._published) >= FORGET_AFTER:
            self._forget_published()
        elif self._published and self._forget_timer is None:
            self._forget_timer = asyncio.get_running_loop().call_later(
                FORGET_WITHIN_S, self._forget_due
            )
        self.fill()

    def _forget_due(self) -> None:
        self._forget_timer = None
        self._forget_published()

    def close(self) -> None:
        """At shutdown: remove what the broker acknowledged, so nothing goes twice."""
        if self._forget_timer is not None:
            self._forget_timer.cancel()
            self._forget_timer = None
        try:
            self._forget_published()
        except Exception as exc:  # the store failing must not stop the rest of shutdown
            if not is_failure(exc):
                raise
            log.warning(
                "could not remove acknowledged messages from the outbox (%s); they go "
                "again at the next start and their receivers drop them as duplicates",
                exc,
            )

    def _forget_published(self) -> None:
        """Remove every entry PUBACK'd and not removed yet, in one transaction."""
        if self._published:
            done, self._published = self._published, []
            self._store.outbox.remove(done)


def _records_in_a_row(page: list[OutboxEntry], at: int, handed: set[int]) -> list[OutboxEntry]:
    """``page[at]`` and the version 2 records of the same room right after it."""
    first = page[at]
    group = [first]
    for entry in page[at + 1 : at + MAX_RECORDS]:
        if entry.kind == 0 or entry.room != first.room or entry.id in handed:
            break
        group.append(entry)
    return group
