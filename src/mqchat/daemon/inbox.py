"""Payloads from the broker: opened, checked, de-duplicated, stored, published, acknowledged.

Runs on the event loop. Payloads queue up as paho hands them over and are
stored in one transaction per loop pass (each payload a part of it, its rows
written with the others' at the commit: mqchat.daemon.unit_of_work); each is
acknowledged to the broker only once it is stored, so a killed daemon gets it
again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple, TypeVar

from mqchat.daemon.broker import Incoming
from mqchat.daemon.control_order import SignedTimeOrder
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.events import EventPublisher, to_event
from mqchat.daemon.publisher import Publisher
from mqchat.daemon.repair import Repair
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import Store, StoredMessage, is_failure
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import PayloadTooLarge, ProtocolError
from mqchat.protocol import envelope
from mqchat.protocol import legacy as legacy_codec
from mqchat.protocol.batch import Batch, open_batch
from mqchat.protocol.epochs import EpochKeys
from mqchat.protocol.ipc import notice_event
from mqchat.protocol.kdf import RoomKeys
from mqchat.protocol.limits import MAX_TIMESTAMP_MS
from mqchat.protocol.receiving import Arrival, Verdict, judge, stream_key
from mqchat.protocol.records import Heads, RepairRequest, Text
from mqchat.protocol.signing import SigningIdentity, fingerprint, format_fingerprint

log = logging.getLogger(__name__)
T = TypeVar("T")

V2 = b"\x02"
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


class Opened(NamedTuple):
    """A payload opened and checked, before the receiving rules judge it."""

    room: Room
    arrival: Arrival
    text: str
    legacy: bool
    stream: int = 0
    """A version 2 text's stream (0: version 1 or legacy)."""
    repaired: bool = False
    control: Heads | RepairRequest | None = None
    """A record of the batch that is not a text, handled in order with its texts."""
    sent_ms: int = 0
    batch: int = 0
    """The signed time of a control record's batch, and the batch's number here
    (mqchat.daemon.control_order)."""
    membership: tuple[Batch, bytes] | None = None
    """A version 2 batch itself, with its payload: its membership records and presence
    (mqchat.daemon.membership), handled before its texts in the same unit of work."""


def legacy_id(payload: bytes) -> bytes:
    """Legacy payloads carry no id: a token's hash stands in (its IV makes it unique)."""
    return hashlib.sha256(payload).digest()[:16]


class Inbox:
    def __init__(
        self,
        *,
        store: Store,
        identity: SigningIdentity,
        events: EventPublisher,
        drops: DropCounter,
        rooms: RoomRegistry,
        work: UnitOfWork,
        clock_ms: Callable[[], int],
        on_fatal: Callable[[str], None],
        on_batch: Callable[[Room, Batch, bytes, int], None],
        hears: Callable[[Room, bytes], bool] = lambda room, sender: True,
    ) -> None:
        self.store = store
        self.memory = store.memory
        self.identity = identity
        self.events = events
        self.drops = drops
        self.rooms = rooms
        self._work = work
        self.clock_ms = clock_ms
        self._on_fatal = on_fatal
        self.on_batch = on_batch
        self.hears = hears
        """Whose texts are heard at all: a room's members (mqchat.daemon.membership)."""
        self.link: Publisher | None = None
        self.repair: Repair | None = None
        self._own_key = identity.public_key
        self._fingerprints: dict[bytes, str] = {}
        self._incoming: list[Incoming] = []
        self._failures = 0  # store failures in a row
        self._unsubscribed: set[str] = set()
        self.order = SignedTimeOrder()
        self._batches = 0  # batches opened, to number them for self.order

    def on_message(self, inc: Incoming) -> None:
        """Queue a payload; the queue is stored in one transaction per loop pass."""
        if not self._incoming and not self._failures:
            asyncio.get_running_loop().call_soon(self._receive_queued)
        self._incoming.append(inc)

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
        if self.link is not None:
            # Everything is acknowledged, stored or refused: a payload refused for
            # its content is never handed over again (issue 11).
            for inc in queued:
                self.link.ack(inc.mid, inc.qos)

    def _store_batch(self, queued: list[Incoming]) -> None:
        """Open every payload first (no store involved), then judge and store what
        opened in one transaction: the store is asked once for the whole batch's ids
        and seqs, and each message is a part of the batch (one that breaks is
        dropped alone). If writing the batch fails for a reason that is not the
        store's, go again writing each message as it is handled, to keep the rest."""
        opened = [o for inc in queued for o in self._isolated(self._open_one, inc) or ()]
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
            [o.arrival.message_id for o in opened if o.control is None and o.membership is None],
            [
                (key, o.arrival.seq)
                for o in opened
                if (key := o.arrival.numbered_by) is not None and o.arrival.seq is not None
            ],
        )
        for o in opened:
            self._isolated(self._accept_part, o, write_now)

    def _accept_part(self, o: Opened, write_now: bool) -> None:
        last_seq = o.room.last_seq
        try:
            with self._work.part():
                if o.membership is not None:
                    # The batch's membership records and presence first, in this unit
                    # of work: what they change is written and told with its texts.
                    self.on_batch(o.room, o.membership[0], o.membership[1], self.clock_ms())
                elif not self.hears(o.room, o.arrival.sender_key or b""):
                    # Only the room's members are heard, in every epoch and version (§27.4).
                    self.drops.drop("not_member", "a text or record from no member of the room")
                elif o.control is None:
                    self._accept(o)
                else:
                    self._control(o)
                if write_now:
                    self.store.flush()
        except BaseException:
            o.room.last_seq = last_seq  # the part is undone: its seq is free again
            raise

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

    def _open_one(self, inc: Incoming) -> list[Opened]:
        """The payload's messages, ready to be judged; none if it is dropped."""
        room = self.rooms.on_topic(inc.topic)
        if room is None:
            self.drops.drop("unknown_topic")
            if self.link is not None and inc.topic and inc.topic not in self._unsubscribed:
                # A subscription the broker kept for us (a room left while the
                # broker was down, a lost database): stop it coming.
                self._unsubscribed.add(inc.topic)
                self.link.unsubscribe(inc.topic)
            return []
        if room.legacy_key is not None:
            one = self._open_legacy(room, room.legacy_key, inc.payload)
        elif inc.topic in room.expired:
            # An epoch past its grace period (docs/protocol.md §17.4): its keys are gone.
            self.drops.drop("old_epoch")
            return []
        else:
            epoch_keys = room.epoch_keys_for(inc.topic)
            if epoch_keys is not None and inc.payload[:1] == V2:
                return self._open_v2(room, epoch_keys, inc.payload)
            # Version 1 payloads of a passphrase room, until its first rekey's grace
            # period ends (docs/protocol.md §17.4).
            if room.keys is None or not room.opens_v1:
                self.drops.drop("undecryptable", "not a version 2 payload of this room's epochs")
                return []
            one = self._open(room, room.keys, inc.payload)
        return [] if one is None else [one]

    def _opened(self, payload: bytes, opener: Callable[[], T]) -> T | None:
        """Run a decoder; count and drop what it refuses."""
        try:
            return opener()
        except PayloadTooLarge:
            self.drops.drop("oversized", f"{len(payload)} bytes")
        except ProtocolError as exc:
            self.drops.drop("undecryptable", str(exc))
        return None

    def _open(self, room: Room, keys: RoomKeys, payload: bytes) -> Opened | None:
        opened = self._opened(payload, lambda: envelope.open_payload(payload, keys))
        if opened is None:
            return None
        m = opened[1]
        arrival = Arrival(
            room.name, room.joined_ms, m.sender_name, m.sender_key, m.message_id, m.seq,
            m.timestamp_ms,
        )  # fmt: skip
        return Opened(room, arrival, m.text, legacy=False)

    def _open_v2(self, room: Room, keys: EpochKeys, payload: bytes) -> list[Opened]:
        """A version 2 batch (docs/protocol.md §19, §20): the batch itself (for its
        membership records and presence), then its texts and control records, each
        judged as a part of the unit of work like any message. Opening uses no store."""
        batch = self._opened(payload, lambda: open_batch(payload, keys))
        if batch is None:
            return []
        texts: list[Opened] = []
        self._batches += 1
        seq_keys: dict[int, bytes] = {}  # a batch's texts are mostly of one stream: hash once
        for record in batch.records:
            if isinstance(record, Text):
                if record.timestamp_ms > MAX_TIMESTAMP_MS:
                    # Version 1's bound (docs/protocol.md §6): no date after 9999-12-31.
                    self.drops.drop("undecryptable", "a text's timestamp is after 9999-12-31")
                    continue
                seq_key = seq_keys.get(record.stream)
                if seq_key is None:
                    seq_key = seq_keys[record.stream] = stream_key(
                        batch.sender_key, room.name, record.stream
                    )
                arrival = Arrival(
                    room.name, room.joined_ms, batch.sender_name, batch.sender_key,
                    record.message_id, record.seq, record.timestamp_ms, seq_key,
                )  # fmt: skip
                texts.append(
                    Opened(
                        room, arrival, record.text, legacy=False, stream=record.stream,
                        repaired=record.repaired,
                    )
                )  # fmt: skip
            elif isinstance(record, Heads | RepairRequest):
                arrival = Arrival(
                    room.name, room.joined_ms, batch.sender_name, batch.sender_key, b"", None, 0
                )
                texts.append(
                    Opened(
                        room, arrival, "", legacy=False, control=record,
                        sent_ms=batch.sent_ms, batch=self._batches,
                    )
                )  # fmt: skip
            # Rekeys go to on_batch (the epoch keeper).
        if batch.skipped:
            self.drops.drop("unknown_record", f"{batch.skipped} of an unknown kind")
        membership = Arrival(
            room.name, room.joined_ms, batch.sender_name, batch.sender_key, b"", None, 0
        )
        return [Opened(room, membership, "", legacy=False, membership=(batch, payload)), *texts]

    def _open_legacy(
        self, room: Room, key: legacy_codec.LegacyKey, payload: bytes
    ) -> Opened | None:
        lm = self._opened(payload, lambda: legacy_codec.open_legacy(payload, key))
        if lm is None:
            return None
        ts = lm.timestamp_s * 1000
        if not 0 <= ts <= MAX_TIMESTAMP_MS:
            self.drops.drop("undecryptable", "legacy timestamp out of range")
            return None
        arrival = Arrival(
            room.name, room.joined_ms, lm.sender_name, None, legacy_id(payload), None, ts
        )
        return Opened(room, arrival, lm.text, legacy=True)

    def _control(self, o: Opened) -> None:
        """Heads and repair requests (docs/protocol.md §20)."""
        key = o.arrival.sender_key
        if self.repair is None or key is None:
            return
        kind = "heads" if isinstance(o.control, Heads) else "request"
        if not self.order.accept(o.room.name, key, kind, o.sent_ms, o.batch):
            # A replay (or a batch overtaken by a newer one of the sender): it must
            # cost nothing, above all not a republication (issue 22 item 5).
            self.drops.drop("replayed_control", f"{kind} older than the sender's last")
            return
        if isinstance(o.control, Heads):
            dropped = self.repair.on_heads(o.room, key, o.arrival.sender_name, o.control)
            if dropped is not None:
                self.drops.drop(dropped)
        elif isinstance(o.control, RepairRequest):
            self.repair.on_request(o.room, key, o.control)

    def _accept(self, o: Opened) -> None:
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
        if o.stream and key is not None and not verdict.own and self.repair is not None:
            placed = self.repair.admit(
                room, key, arrival.sender_name, o.stream, arrival.seq or 0, o.repaired
            )
            if placed not in ("show", "hold"):
                self.drops.drop(placed)
                return
        now = self.clock_ms()
        message = StoredMessage(
            room.name,
            0,
            arrival.message_id.hex(),
            arrival.timestamp_ms,
            arrival.sender_name,
            self._fingerprint(key) if key is not None else "",
            verified=verdict.verified,
            own=verdict.own,
            legacy=legacy,
            text=text,
        )
        self._apply_pinning(arrival, verdict, now)
        self.store.memory.remember(arrival.message_id, now, arrival.numbered_by, arrival.seq)
        if placed == "hold" and key is not None and self.repair is not None:
            self.repair.hold(key, o.stream, arrival.seq or 0, message)
            self.repair.release(room, key, o.stream)  # bounds what is held
            return
        self.show(room, message)
        if o.stream and key is not None and self.repair is not None:
            self.repair.release(room, key, o.stream)

    def show(self, room: Room, message: StoredMessage) -> None:
        """Number a message in its room, store it and tell the tails."""
        message = replace(message, seq=room.last_seq + 1)
        self.store.messages.insert(message)
        room.last_seq = message.seq
        if self._work.wants_events:
            self._work.publish(room.name, to_event(message))

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
