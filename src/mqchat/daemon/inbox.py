"""Payloads from the broker: opened, checked, de-duplicated, stored, published, acknowledged.

Runs on the event loop. Payloads queue up as paho hands them over and are
stored in one transaction per loop pass (each payload a part of it, its rows
written with the others' at the commit: mqchat.daemon.unit_of_work); each is
acknowledged to the broker only once it is stored, so a killed daemon gets it
again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from mqchat.daemon.broker import Incoming
from mqchat.daemon.control_order import SignedTimeOrder
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.opening import Opened, PayloadOpener
from mqchat.daemon.publisher import Publisher
from mqchat.daemon.repair import Repair
from mqchat.daemon.rooms import Room
from mqchat.daemon.store import Store, StoredMessage, is_failure
from mqchat.daemon.timeline import Timeline
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.protocol.batch import Batch
from mqchat.protocol.ipc_events import notice_event
from mqchat.protocol.receiving import Arrival, Verdict, judge
from mqchat.protocol.records import Heads, RepairRequest
from mqchat.protocol.signing import SigningIdentity, fingerprint, format_fingerprint

log = logging.getLogger(__name__)
T = TypeVar("T")

RECEIVE_BATCH = 512
"""Payloads stored per transaction; more wait for the next loop pass."""
RECEIVE_BATCH_BYTES = 256 * 1024
"""And at most about this many bytes of them: a batch holds its texts (and their
events) in memory until its commit. A version 2 payload carries up to 256
texts, so this, not the count, bounds a transaction to a few thousand messages:
far below a room's retention, so that a tail told it missed events finds them
in the store."""
FINGERPRINTS_CACHED = 4096
"""Senders' fingerprints kept; past this the cache starts again empty."""
STORE_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
"""When the store itself fails, received payloads stay unacknowledged and are
tried again after these delays; then chatd gives up and exits non-zero."""


class Inbox:
    def __init__(
        self,
        *,
        store: Store,
        identity: SigningIdentity,
        drops: DropCounter,
        work: UnitOfWork,
        opener: PayloadOpener,
        timeline: Timeline,
        repair: Repair,
        link: Publisher,
        clock_ms: Callable[[], int],
        on_fatal: Callable[[str], None],
        on_batch: Callable[[Room, Batch, bytes, int], None],
        hears: Callable[[Room, bytes], bool],
    ) -> None:
        self.store = store
        self.memory = store.memory
        self.drops = drops
        self._work = work
        self._opener = opener
        self._timeline = timeline
        self._repair = repair
        self._link = link
        self.clock_ms = clock_ms
        self._on_fatal = on_fatal
        self._on_batch = on_batch
        """A verified batch's membership records and presence (mqchat.daemon.membership)."""
        self._hears = hears
        """Whose texts are heard at all: a room's members (mqchat.daemon.room_logs)."""
        self._own_key = identity.public_key
        self._fingerprints: dict[bytes, str] = {}
        self._incoming: list[Incoming] = []
        self._failures = 0  # store failures in a row
        self.order = SignedTimeOrder(journal=work.on_undo)

    def on_messages(self, row: list[Incoming]) -> None:
        """Payloads that came in a row (mqchat.daemon.broker): stored now, in one
        transaction, unless others still wait (their pass is due) or the store is
        failing (its retry is due)."""
        idle = not self._incoming and not self._failures
        self._incoming.extend(row)
        if idle:
            self._receive_queued()

    def _receive_queued(self) -> None:
        count = size = 0
        for inc in self._incoming[:RECEIVE_BATCH]:
            count += 1
            size += len(inc.payload)
            if size >= RECEIVE_BATCH_BYTES:
                break
        queued, self._incoming = self._incoming[:count], self._incoming[count:]
        try:
            self._store_batch(queued)
        except Exception as exc:
            if not is_failure(exc):
                raise  # _store_batch isolates payloads; anything else is a bug
            self._retry_later(queued, exc)
            return
        self._failures = 0
        if self._incoming:
            asyncio.get_running_loop().call_soon(self._receive_queued)
        # Everything is acknowledged, stored or refused: a payload refused for its
        # content is never handed over again (issue 11).
        for inc in queued:
            self._link.ack(inc.mid, inc.qos)

    def _store_batch(self, queued: list[Incoming]) -> None:
        """Open every payload first (no store involved), then judge and store what
        opened in one transaction: the store is asked once for the whole batch's ids
        and seqs, and each message is a part of the batch (one that breaks is
        dropped alone). If writing the batch fails for a reason that is not the
        store's, go again writing each message as it is handled, to keep the rest."""
        opened = [o for inc in queued for o in self._isolated(self._opener.open, inc) or ()]
        try:
            with self._work.batch():
                self._accept_all(opened, write_now=False)
            return
        except Exception as exc:
            if is_failure(exc):
                raise
            log.error("a batch of received messages could not be written; one at a time")
        with self._work.batch():
            self._accept_all(opened, write_now=True)

    def _accept_all(self, opened: list[Opened], *, write_now: bool) -> None:
        self.memory.prefetch(
            [  # version 1's and legacy ids; version 2's texts are judged by their streams
                o.arrival.message_id
                for o in opened
                if o.control is None and o.membership is None and o.arrival.seq_key is None
            ],
            [  # version 1's (sender key, seq); version 2's streams are repair's (§20)
                (key, o.arrival.seq)
                for o in opened
                if o.arrival.seq_key is None
                and (key := o.arrival.sender_key) is not None
                and o.arrival.seq is not None
            ],
        )
        if write_now:
            for o in opened:
                self._isolated(self._accept_part, o, True)
            return
        texts: list[Opened] = []
        for o in opened:
            if o.membership is None and o.control is None:
                texts.append(o)
                continue
            self._accept_texts(texts)
            texts = []
            self._isolated(self._accept_part, o, False)
        self._accept_texts(texts)

    def _accept_texts(self, texts: list[Opened]) -> None:
        """Texts in a row, as one part: if one of them breaks, the part is undone and
        they go again one part each, so that it is dropped alone and each text's
        drops and repair counts are counted once.

        A part costs about 3 µs (its mark of every table); a batch holds up to 256
        texts, nearly always none that breaks (issue 24)."""
        if len(texts) < 2:
            for o in texts:
                self._isolated(self._accept_part, o, False)
            return
        last_seqs = [(o.room, o.room.last_seq) for o in texts]
        counted, repair_counted = self.drops.mark(), self._repair.count_mark()
        now = self.clock_ms()  # one time for the run, as for one text: one transaction
        try:
            # The part undoes what the run staged; the savepoint, inside it, what the
            # run wrote (a flush, held texts a release took) before the part reloads.
            with self._work.part(), self.store.savepoint():
                for o in texts:
                    self._accept_text(o, now)
        except Exception as exc:
            self._undo_seqs(last_seqs)
            if is_failure(exc):
                raise
            self.drops.undo(counted)
            self._repair.count_undo(repair_counted)
            for o in texts:
                self._isolated(self._accept_part, o, False)
        except BaseException:
            self._undo_seqs(last_seqs)
            raise

    @staticmethod
    def _undo_seqs(last_seqs: list[tuple[Room, int]]) -> None:
        for room, last_seq in reversed(last_seqs):  # the first one of each room wins
            room.last_seq = last_seq

    def _accept_part(self, o: Opened, write_now: bool) -> None:
        last_seq = o.room.last_seq
        try:
            with self._work.part():
                if o.membership is not None:
                    # The batch's membership records and presence first, in this unit
                    # of work: what they change is written and told with its texts.
                    self._on_batch(o.room, o.membership[0], o.membership[1], self.clock_ms())
                elif o.control is None:
                    self._accept_text(o, self.clock_ms())
                elif self._heard(o):
                    self._control(o)
                if write_now:
                    self.store.flush()
        except BaseException:
            o.room.last_seq = last_seq  # the part is undone: its seq is free again
            raise

    def _heard(self, o: Opened) -> bool:
        """Only the room's members are heard, in every epoch and version (§27.4)."""
        if self._hears(o.room, o.arrival.sender_key or b""):
            return True
        self.drops.drop("not_member", "a text or record from no member of the room")
        return False

    def _accept_text(self, o: Opened, now: int) -> None:
        if self._heard(o):
            self._accept(o, now)

    def _isolated(self, handle: Callable[..., T], *args: Any) -> T | None:
        """Run ``handle``; a failure that is not the store's drops this payload alone."""
        try:
            return handle(*args)
        except Exception as exc:
            if is_failure(exc):
                raise
            # A bug that a payload can trigger can be triggered for every payload:
            # its traceback is logged as rarely as the drop's own line.
            if self.drops.drop("internal_error", type(exc).__name__):
                log.error("a payload could not be handled; dropped", exc_info=True)
            return None

    def _retry_later(self, queued: list[Incoming], exc: Exception) -> None:
        """Keep the payloads unacknowledged and try again later, a bounded number of times."""
        self._incoming[:0] = queued
        if self._failures >= len(STORE_RETRY_DELAYS_S):
            self._on_fatal(f"the store {self.store.path} keeps failing: {exc}")
            return
        delay = STORE_RETRY_DELAYS_S[self._failures]
        self._failures += 1
        self.drops.drop("store_failed", str(exc))
        log.warning("could not store received payloads (%s); trying again in %g s", exc, delay)
        asyncio.get_running_loop().call_later(delay, self._receive_queued)

    def _control(self, o: Opened) -> None:
        """Heads and repair requests (docs/protocol.md §20)."""
        key = o.arrival.sender_key
        if key is None:
            return
        kind = "heads" if isinstance(o.control, Heads) else "request"
        if not self.order.accept(o.room.name, key, kind, o.sent_ms, o.batch):
            # A replay (or a batch overtaken by a newer one of the sender): it must
            # cost nothing, above all not a republication (issue 22 item 5).
            self.drops.drop("replayed_control", f"{kind} older than the sender's last")
            return
        if isinstance(o.control, Heads):
            dropped = self._repair.on_heads(o.room, key, o.arrival.sender_name, o.control)
            if dropped is not None:
                self.drops.drop(dropped)
        elif isinstance(o.control, RepairRequest):
            self._repair.on_request(o.room, key, o.control)

    def _accept(self, o: Opened, now: int) -> None:
        """Judge an opened message by the receiving rules; store and show what they keep.

        A version 2 text of another member goes through its stream's gaps as well
        (mqchat.daemon.repair): one that comes after a missing number is stored
        but held back, and shown once the gap is filled or given up.
        """
        room, arrival, text, legacy = o.room, o.arrival, o.text, o.legacy
        verdict = judge(arrival, self.memory, own_key=self._own_key)
        if verdict.dropped is not None:
            repeated = verdict.dropped in ("duplicate", "replay")
            self.drops.drop("repaired_duplicate" if o.repaired and repeated else verdict.dropped)
            return
        key = arrival.sender_key
        placed = "show"
        if o.stream and key is not None:
            placed = self._repair.admit(
                room, key, arrival.sender_name, o.stream, arrival.seq or 0, o.repaired
            )
            if placed not in ("show", "hold"):
                self.drops.drop(placed)
                return
        message = StoredMessage(  # positional: a NamedTuple's keywords cost ~0.5 µs more
            room.name,
            room.last_seq + 1 if placed == "show" else 0,  # Timeline.show's number
            arrival.message_id.hex(),
            arrival.timestamp_ms,
            arrival.sender_name,
            self._fingerprint(key) if key is not None else "",
            verdict.verified,
            False,  # own: ours are never shown from the broker (stored when sent)
            legacy,
            text,
        )
        self._apply_pinning(arrival, verdict, now)
        if arrival.seq_key is None:  # version 1 and legacy: the id, and the key's seq
            self.store.memory.remember(arrival.message_id, now, arrival.sender_key, arrival.seq)
        # Version 2: nothing; its (stream, seq) is in its stream's state (repair).
        if placed == "hold" and key is not None:
            self._repair.hold(key, o.stream, arrival.seq or 0, message)
            self._repair.release(room, key, o.stream)  # bounds what is held
            return
        self._timeline.show(room, message)
        if o.stream and key is not None:
            self._repair.release(room, key, o.stream)

    def _fingerprint(self, key: bytes) -> str:
        """A sender's fingerprint, hashed once per key rather than once per message."""
        fp = self._fingerprints.get(key)
        if fp is None:
            if len(self._fingerprints) >= FINGERPRINTS_CACHED:
                self._fingerprints.clear()
            fp = self._fingerprints[key] = fingerprint(key)
        return fp

    def _apply_pinning(self, arrival: Arrival, verdict: Verdict, now_ms: int) -> None:
        room, sender = arrival.room, arrival.sender_name
        if verdict.pin is not None:
            self.memory.set_pin(room, sender, verdict.pin)
        if verdict.key_seen is not None:
            self.memory.saw_key(room, sender, verdict.key_seen, now_ms)
        if verdict.pending is not None:
            self.memory.set_pending(room, sender, verdict.pending)
        if verdict.key_changed and arrival.sender_key is not None:
            fp = self._fingerprint(arrival.sender_key)
            self._work.publish(
                room,
                notice_event(
                    room,
                    "key_changed",
                    f"{sender} in {room} now signs with another key "
                    f"({format_fingerprint(fp)}); their messages show as unverified until you "
                    f"check that fingerprint with them and run "
                    f"`chatctl trust {room} {sender} FINGERPRINT`",
                    sender=sender,
                    fingerprint=fp,
                ),
            )
