"""Payloads from the broker: opened, checked, de-duplicated, stored, published, acknowledged.

Runs on the event loop. Payloads queue up as paho hands them over and are
stored in one transaction per loop pass; each is acknowledged to the broker
only once it is stored, so a killed daemon gets it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

from mqchat.daemon.broker import BrokerLink, Incoming
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.events import EventPublisher, to_event
from mqchat.daemon.rooms import Room
from mqchat.daemon.store import Store, StoredMessage
from mqchat.errors import PayloadTooLarge, ProtocolError
from mqchat.protocol import envelope
from mqchat.protocol import legacy as legacy_codec
from mqchat.protocol.ipc import notice_event
from mqchat.protocol.signing import SigningIdentity, fingerprint

log = logging.getLogger(__name__)
T = TypeVar("T")

RECEIVE_BATCH = 512
"""Payloads stored per transaction; more wait for the next loop pass."""
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


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
        by_topic: dict[str, Room],
        batch: Callable[[], AbstractContextManager[None]],
        clock_ms: Callable[[], int],
    ) -> None:
        self.store = store
        self.identity = identity
        self.events = events
        self.drops = drops
        self.by_topic = by_topic
        self._batch = batch
        self.clock_ms = clock_ms
        self.link: BrokerLink | None = None
        self._incoming: list[Incoming] = []

    def on_message(self, inc: Incoming) -> None:
        """Queue a payload; the queue is stored in one transaction per loop pass."""
        if not self._incoming:
            asyncio.get_running_loop().call_soon(self._receive_queued)
        self._incoming.append(inc)

    def _receive_queued(self) -> None:
        queued, self._incoming = self._incoming[:RECEIVE_BATCH], self._incoming[RECEIVE_BATCH:]
        if self._incoming:
            asyncio.get_running_loop().call_soon(self._receive_queued)
        try:
            with self._batch():
                stored = [inc for inc in queued if self._receive_one(inc)]
        except Exception:
            # Not acknowledged: the broker hands them over again after a
            # reconnect, so a failing store (a full disk) does not lose them.
            self.drops.drop("internal_error")
            log.exception("could not store received payloads (left unacknowledged)")
            return
        if self.link is not None:
            for inc in stored:
                self.link.ack(inc.mid, inc.qos)

    def _receive_one(self, inc: Incoming) -> bool:
        """Handle one payload; False leaves it unacknowledged."""
        try:
            room = self.by_topic.get(inc.topic)
            if room is None:
                self.drops.drop("unknown_topic")
            elif room.legacy_key is not None:
                self._receive_legacy(room, room.legacy_key, inc.payload)
            elif room.keys is not None:
                self._receive(room, inc.payload)
        except Exception:
            self.drops.drop("internal_error")
            log.exception("error while handling a payload (left unacknowledged)")
            return False
        return True

    def _opened(self, payload: bytes, opener: Callable[[], T]) -> T | None:
        """Run a decoder; count and drop what it refuses."""
        try:
            return opener()
        except PayloadTooLarge:
            self.drops.drop("oversized", f"{len(payload)} bytes")
        except ProtocolError as exc:
            self.drops.drop("undecryptable", str(exc))
        return None

    def _receive(self, room: Room, payload: bytes) -> None:
        keys = room.keys
        if keys is None:  # pragma: no cover - guarded by the caller
            return
        opened = self._opened(payload, lambda: envelope.open_payload(payload, keys))
        if opened is None:
            return
        m = opened[1]
        if self.store.is_seen(m.message_id):
            self.drops.drop("duplicate")
            return
        if self.store.is_replayed_seq(m.sender_key, m.seq):
            self.drops.drop("replay")
            return
        now = self.clock_ms()
        own = m.sender_key == self.identity.public_key
        verified = own or self._check_pin(room, m.sender_name, m.sender_key)
        ts = m.timestamp_ms if 0 <= m.timestamp_ms <= MAX_TS_MS else now
        message = StoredMessage(
            room.name,
            room.last_seq + 1,
            m.message_id.hex(),
            ts,
            m.sender_name,
            m.fingerprint,
            verified,
            own,
            False,
            m.text,
        )
        self.store.record_received(
            message=message,
            id_bytes=m.message_id,
            now_ms=now,
            sender_key=m.sender_key,
            sender_seq=m.seq,
        )
        room.last_seq = message.seq
        self.events.publish(room.name, to_event(message))

    def _check_pin(self, room: Room, sender: str, key: bytes) -> bool:
        pin = self.store.pin(room.name, sender)
        if pin is None:
            self.store.set_pin(room.name, sender, key)
            return True
        pinned, pending = pin
        if pinned == key:
            return True
        if pending != key:
            self.store.set_pending(room.name, sender, key)
            fp = fingerprint(key)
            self.events.publish(
                room.name,
                notice_event(
                    room.name,
                    "key_changed",
                    f"{sender} in {room.name} now signs with another key ({fp[:16]}); "
                    f"their messages show as unverified until you run "
                    f"`chatctl trust {room.name} {sender}`",
                    sender=sender,
                    fingerprint=fp,
                ),
            )
        return False

    def _receive_legacy(self, room: Room, key: legacy_codec.LegacyKey, payload: bytes) -> None:
        lm = self._opened(payload, lambda: legacy_codec.open_legacy(payload, key))
        if lm is None:
            return
        id_bytes = legacy_id(payload)
        if self.store.is_seen(id_bytes):
            self.drops.drop("duplicate")
            return
        now = self.clock_ms()
        ts = lm.timestamp_s * 1000 if 0 <= lm.timestamp_s * 1000 <= MAX_TS_MS else now
        message = StoredMessage(
            room.name,
            room.last_seq + 1,
            id_bytes.hex(),
            ts,
            lm.sender_name,
            "",
            False,
            False,
            True,
            lm.text,
        )
        self.store.record_received(
            message=message, id_bytes=id_bytes, now_ms=now, sender_key=None, sender_seq=None
        )
        room.last_seq = message.seq
        self.events.publish(room.name, to_event(message))
