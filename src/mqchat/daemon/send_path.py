"""The IPC method ``send``: texts checked, sealed, numbered, stored and queued.

Everything that can fail (checks, sealing, reserving seq numbers) comes first;
only then are the messages staged in the request's part of the batch
(mqchat.daemon.unit_of_work), all of them or none, so a send that fails leaves
nothing behind. The outbox (mqchat.daemon.outbox_window) publishes them after
the batch commits: stored before acknowledged or shown.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from mqchat.daemon.opening import legacy_id
from mqchat.daemon.outbox_window import OutboxWindow
from mqchat.daemon.repair_sending import RepairSender
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import OutboxEntry, Store, StoredMessage
from mqchat.daemon.stream_numbers import StreamReservation
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import MessageTooLong, NotAMember, UsageError
from mqchat.protocol import legacy as legacy_codec
from mqchat.protocol.limits import MAX_INT, check_text
from mqchat.protocol.receiving import stream_key
from mqchat.protocol.records import MESSAGE_ID_BYTES, Text, record_body
from mqchat.protocol.signing import SigningIdentity


class Outgoing(NamedTuple):
    """One text as queued: its id, its outbox entry, and its (seq key, seq) if any."""

    message_id: bytes
    entry: OutboxEntry
    seq: int | None
    seq_key: bytes | None


class Sending:
    def __init__(
        self,
        *,
        name: str,
        state_dir: Path,
        identity: SigningIdentity,
        store: Store,
        rooms: RoomRegistry,
        work: UnitOfWork,
        outbox: OutboxWindow,
        repair: RepairSender,
        refusal: Callable[[Room], str | None],
        random: Callable[[int], bytes],
        clock_ms: Callable[[], int],
    ) -> None:
        self._name = name
        self._store = store
        self._rooms = rooms
        self._work = work
        self._outbox = outbox
        self._repair = repair
        self._refusal = refusal
        """Why a room no longer takes our messages (removed, left out), or None."""
        self._random = random
        self._clock_ms = clock_ms
        self._streams = StreamReservation(state_dir, clock_ms)
        # Computed once: every message we send carries them.
        self._own_key = identity.public_key
        self._own_fp = identity.fingerprint
        work.on_rollback(self._reload_counters)

    def _reload_counters(self) -> None:
        """The rooms' counters are the store's cache: a rollback reloads them."""
        for room in self._rooms:
            room.last_seq = self._store.messages.last_seq(room.name)
            if room.stream:
                room.sent_seq = self._store.sent.last_seq(room.name, room.stream)

    def send(
        self, room: str, text: str | None = None, texts: list[str] | None = None
    ) -> dict[str, Any]:
        """Send ``text``, or each of ``texts`` in order (docs/ipc.md, ``send``)."""
        r = self._rooms.require(room)
        why = self._refusal(r)
        if why is not None:
            raise NotAMember(f"{why}; run `chatctl leave {r.name}` to forget it")
        many = texts is not None
        wanted = texts if texts is not None else [text or ""]
        for i, one in enumerate(wanted):
            try:
                check_text(one)
            except (MessageTooLong, UsageError) as exc:
                if not many:
                    raise
                raise type(exc)(f"texts[{i}]: {exc.message}") from None
        now = self._clock_ms()
        sealed = self._seal_all(r, wanted, now)
        first_seq = r.last_seq + 1
        messages = [
            StoredMessage(
                r.name, first_seq + i, one_sealed.message_id.hex(), now, self._name,
                "" if r.legacy else self._own_fp, True, True, r.legacy, one,
            )
            for i, (one, one_sealed) in enumerate(zip(wanted, sealed, strict=True))
        ]  # fmt: skip
        store = self._store
        for message, one_sealed in zip(messages, sealed, strict=True):
            store.messages.insert(message)
            store.outbox.add(one_sealed.entry)
            if one_sealed.seq is not None:
                store.sent.add(r.name, r.stream, one_sealed.seq, one_sealed.entry.payload)
            if one_sealed.seq is None:
                # A legacy token has no key: its echo is known by its id alone. A
                # signed text of ours is refused by its key (receiving.judge).
                store.memory.remember(one_sealed.message_id, now, None, None)
        last_sent = sealed[-1].seq
        if last_sent is not None:  # legacy messages have none
            r.sent_seq = last_sent
            self._repair.sent(r)
        r.last_seq = messages[-1].seq
        if self._work.wants_events:
            for message in messages:  # each is its message event (EventPublisher)
                self._work.publish(r.name, message)
        self._outbox.fill()
        queued = not self._outbox.connected
        if not many:
            last = messages[-1]
            return {"room": r.name, "seq": last.seq, "id": last.id, "queued": queued}
        return {
            "room": r.name,
            "count": len(messages),
            "seqs": [m.seq for m in messages],
            "ids": [m.id for m in messages],
            "queued": queued,
        }

    def _seal_all(self, r: Room, texts: list[str], now: int) -> list[Outgoing]:
        """What to queue for each text, in order: a version 2 text record, sealed
        into a batch when the link is free (docs/protocol.md §21); in a legacy room
        the original program's token."""
        if r.legacy_key is not None:
            outgoing = []
            for one in texts:
                payload = legacy_codec.seal_legacy(
                    r.legacy_key, self._name, one, timestamp_s=now // 1000, iv=self._random(16)
                )
                entry = OutboxEntry(0, r.name, r.topic, r.qos, payload)
                outgoing.append(Outgoing(legacy_id(payload), entry, None, None))
            return outgoing
        if r.v2_topic is None:  # pragma: no cover - every other room has version 2 keys
            raise ValueError("room without version 2 keys")
        if r.stream == 0 or r.sent_seq + len(texts) > MAX_INT:
            # A new stream at every start and join (docs/protocol.md §15).
            r.stream, r.sent_seq = self._streams.take(), 0
        seq_key = stream_key(self._own_key, r.name, r.stream)
        outgoing = []
        ids = self._random(MESSAGE_ID_BYTES * len(texts))  # one system call, not one a text
        for i, one in enumerate(texts):
            seq = r.sent_seq + 1 + i
            message_id = ids[i * MESSAGE_ID_BYTES : (i + 1) * MESSAGE_ID_BYTES]
            record = Text(r.stream, seq, message_id, now, one)
            kind, body = record_body(record)
            entry = OutboxEntry(0, r.name, r.v2_topic, r.qos, body, kind)
            outgoing.append(Outgoing(record.message_id, entry, seq, seq_key))
        return outgoing
