"""The JSON-RPC methods of chatd (docs/ipc.md): thin handlers over the daemon's parts.

Rooms live in a ``RoomRegistry``, what is to be sent in the store's outbox and
the ``OutboxWindow``, transactions in the ``UnitOfWork``; payloads from the
broker go to ``mqchat.daemon.inbox``. Everything here runs on the event loop
thread. Handlers are synchronous except ``join`` (its key derivation runs on the
``KeyDerivation`` thread), so one client's requests are handled in the order they
arrive: a stream of ``send`` keeps its order. The IPC server runs each request as
a part of its batch (mqchat.daemon.unit_of_work): what a handler writes is staged
and written with the batch, and a handler that raises leaves nothing behind.
Handlers read before they write (a read may write what the batch staged so far).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from mqchat import __version__
from mqchat.config import Settings
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.events import EventPublisher, iso_ts, to_event
from mqchat.daemon.inbox import legacy_id
from mqchat.daemon.key_derivation import KeyDerivation
from mqchat.daemon.outbox_window import OutboxWindow
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.publisher import Publisher
from mqchat.daemon.repair import Repair
from mqchat.daemon.rooms import LEFT_INVITE_ROOMS_KEY, Room, RoomRegistry, another_room_warning
from mqchat.daemon.state import StreamReservation
from mqchat.daemon.store import OutboxEntry, Store, StoredMessage
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import MessageTooLong, NotAMember, NothingToTrust, UsageError
from mqchat.protocol import envelope
from mqchat.protocol import legacy as legacy_codec
from mqchat.protocol.fingerprints import MIN_FINGERPRINT_DIGITS, fingerprint_digits
from mqchat.protocol.ipc import Request, notice_event
from mqchat.protocol.kdf import DEFAULT_KDF
from mqchat.protocol.limits import MAX_INT, check_text, normalize_name, normalize_room
from mqchat.protocol.receiving import stream_key
from mqchat.protocol.records import MESSAGE_ID_BYTES, PresenceState, Text, record_body
from mqchat.protocol.signing import SigningIdentity
from mqchat.protocol.signing import fingerprint as key_fingerprint

log = logging.getLogger(__name__)


class Outgoing(NamedTuple):
    """One text as queued: its id, its outbox entry, and its (seq key, seq) if any."""

    message_id: bytes
    entry: OutboxEntry
    seq: int | None
    seq_key: bytes | None


class ChatService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        identity: SigningIdentity,
        *,
        rooms: RoomRegistry,
        events: EventPublisher,
        work: UnitOfWork,
        outbox: OutboxWindow,
        kdf: KeyDerivation,
        presence: PresenceKeeper,
        drops: DropCounter,
        random: Callable[[int], bytes] = os.urandom,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.store = store
        self.identity = identity
        self.rooms = rooms
        self.events = events
        self.work = work
        self.outbox = outbox
        self.kdf = kdf
        self.presence = presence
        self.drops = drops
        self.random = random
        self.clock_ms = clock_ms
        self.link: Publisher | None = None
        self.repair: Repair | None = None
        self.handlers: dict[str, Callable[..., Any]] = {}
        """Methods served by other parts (the epoch keeper's create, invite, rekey...)."""
        self.on_leave: list[Callable[[Room], None]] = []
        self.refusal: Callable[[Room], str | None] = lambda room: None
        """Why a room no longer takes our messages (removed, left out), or None."""
        self._streams = StreamReservation(settings.state_dir, clock_ms)
        # Computed once: every message we send carries them.
        self._own_key = identity.public_key
        self._own_fp = identity.fingerprint
        work.on_rollback(self._reload_counters)

    def _reload_counters(self) -> None:
        for room in self.rooms:
            room.last_seq = self.store.messages.last_seq(room.name)
            if room.stream:
                room.sent_seq = self.store.sent.last_seq(room.name, room.stream)

    def call(self, req: Request) -> Any | Awaitable[Any]:
        handler: Callable[..., Any] = self.handlers.get(req.method) or getattr(
            self, f"rpc_{req.method}"
        )
        return handler(**req.params)

    # ------------------------------------------------------------------ reading
    def rpc_status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fingerprint": self.identity.fingerprint,
            "broker": {
                "url": str(self.settings.broker),
                "connected": self.outbox.connected,
                **self.outbox.status(),
                **self._link_status(),
            },
            "rooms": sorted(self.rooms.names()),
            "dropped": self.drops.as_dict(),
            "repair": self.repair.status() if self.repair is not None else {},
            "pid": os.getpid(),
            "version": __version__,
        }

    def _link_status(self) -> dict[str, Any]:
        if self.link is None:
            return {}
        status = self.link.status()
        error, since = status.pop("last_error"), status.pop("failing_since_ms")
        status["last_error"] = (
            None if error is None else {"reason": error["reason"], "at": iso_ts(error["at_ms"])}
        )
        status["failing_since"] = None if since is None else iso_ts(since)
        return status

    def rpc_identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fingerprint": self.identity.fingerprint,
            "public_key": self.identity.public_key.hex(),
        }

    def rpc_rooms(self) -> list[dict[str, Any]]:
        return [_room_info(r) for r in self.rooms]

    def rpc_history(self, room: str, limit: int | None, since: int | None) -> dict[str, Any]:
        r = self.rooms.require(room)
        if since is None and limit is None:
            limit = 10
        msgs, more = self.store.messages.history(r.name, limit=limit, since=since)
        return {
            "room": r.name,
            "last_seq": r.last_seq,
            "messages": [to_event(m) for m in msgs],
            "more": more,
        }

    def rpc_who(self, room: str) -> dict[str, Any]:
        return self.presence.who(self.rooms.require(room))

    # ------------------------------------------------------------------ rooms
    async def rpc_join(
        self, room: str, passphrase: str, cipher: str | None, legacy: bool, weak: bool
    ) -> dict[str, Any]:
        """Join a room. Without ``cipher``: a new room uses the default, a legacy room
        fernet, and a room joined already keeps the cipher it has."""
        name = normalize_room(room)
        if cipher is not None:
            envelope.check_cipher(cipher)
        now = self.clock_ms()
        if legacy:
            if cipher not in (None, "fernet"):
                raise UsageError("legacy rooms use fernet, as the original program does")
            new = Room.legacy_room(name, legacy_codec.legacy_key(passphrase), joined_ms=now)
        else:
            keys = await self.kdf.derive(passphrase, name, DEFAULT_KDF, weak=weak)
            new = Room.passphrase_room(
                name,
                cipher or envelope.DEFAULT_CIPHER,
                keys,
                DEFAULT_KDF,
                self.settings.topic_prefix,
                weak=weak,
                joined_ms=now,
            )
        old = self.rooms.get(name)
        if old is not None:
            if not old.same_key(new) or old.legacy != new.legacy:
                raise UsageError(
                    f"you have already joined {name!r} with another passphrase or mode; "
                    f"run `chatctl leave {name}` first"
                )
            if cipher is not None:
                old.cipher = cipher
            self.store.rooms.save(old.to_record())
            return {**_room_info(old), "joined": False}
        new.last_seq = self.store.messages.last_seq(name)
        self.store.rooms.save(new.to_record())
        self.rooms.add(new)
        if not new.legacy:
            self.store.memory.set_pin(name, self.name, self.identity.public_key)
        if self.link is not None:
            for topic in new.topics:
                self.link.subscribe(topic, new.qos)
        self.presence.announce(new, PresenceState.ONLINE)
        log.info("joined a room (%s%s)", new.cipher, ", legacy" if new.legacy else "")
        self.events.publish(name, notice_event(name, "joined", f"joined {name}"))
        info = _room_info(new)
        if name in self.rooms.left_by_invite:
            info["warning"] = "; ".join(filter(None, (another_room_warning(name), info["warning"])))
        return {**info, "joined": True}

    def rpc_leave(self, room: str) -> dict[str, Any]:
        r = self.rooms.require(room)
        self.presence.announce(r, PresenceState.LEAVING)
        self.store.rooms.delete(r.name)
        self.presence.forget(r)
        for forget in self.on_leave:
            forget(r)
        self.rooms.remove(r)
        self.rooms.left(r)
        self.store.meta.set(LEFT_INVITE_ROOMS_KEY, json.dumps(self.rooms.left_by_invite))
        if self.link is not None:
            for topic in r.topics:
                self.link.unsubscribe(topic)
        self.work.publish(r.name, notice_event(r.name, "left", f"left {r.name}"))
        return {"room": r.name, "left": True}

    # ------------------------------------------------------------------ sending
    def rpc_send(
        self, room: str, text: str | None = None, texts: list[str] | None = None
    ) -> dict[str, Any]:
        """Send ``text``, or each of ``texts`` in order (docs/ipc.md, ``send``).

        Everything that can fail (checks, sealing, reserving seq numbers) comes
        first; only then are the messages staged, all of them or none, so a send
        that fails leaves nothing behind.
        """
        r = self.rooms.require(room)
        why = self.refusal(r)
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
        now = self.clock_ms()
        sealed = self._seal_all(r, wanted, now)
        first_seq = r.last_seq + 1
        messages = [
            StoredMessage(
                r.name, first_seq + i, one_sealed.message_id.hex(), now, self.name,
                "" if r.legacy else self._own_fp, True, True, r.legacy, one,
            )
            for i, (one, one_sealed) in enumerate(zip(wanted, sealed, strict=True))
        ]  # fmt: skip
        events = [to_event(m) for m in messages] if self.work.wants_events else []
        for message, one_sealed in zip(messages, sealed, strict=True):
            self.store.messages.insert(message)
            self.store.outbox.add(one_sealed.entry)
            if one_sealed.seq is not None:
                self.store.sent.add(r.name, r.stream, one_sealed.seq, one_sealed.entry.payload)
            # Our own (stream, seq) too: a replay of our message after its id left
            # the seen-id memory is still refused.
            self.store.memory.remember(
                one_sealed.message_id, now, one_sealed.seq_key, one_sealed.seq
            )
        last_sent = sealed[-1].seq
        if last_sent is not None:  # legacy messages have none
            r.sent_seq = last_sent
            if self.repair is not None:
                self.repair.sent(r)
        r.last_seq = messages[-1].seq
        for event in events:
            self.work.publish(r.name, event)
        self.outbox.fill()
        queued = not self.outbox.connected
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
                    r.legacy_key, self.name, one, timestamp_s=now // 1000, iv=self.random(16)
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
        for seq, one in enumerate(texts, start=r.sent_seq + 1):
            record = Text(r.stream, seq, self.random(MESSAGE_ID_BYTES), now, one)
            kind, body = record_body(record)
            entry = OutboxEntry(0, r.name, r.v2_topic, r.qos, body, kind)
            outgoing.append(Outgoing(record.message_id, entry, seq, seq_key))
        return outgoing

    # ------------------------------------------------------------------ trust
    def rpc_trust(self, room: str, name: str, fingerprint: str | None) -> dict[str, Any]:
        r = self.rooms.require(room)
        sender = normalize_name(name)
        pin = self.store.memory.pin(r.name, sender)
        pinned = pin.key if pin is not None else None
        seen = self.store.memory.keys_seen(r.name, sender)
        keys = [k for k, *_ in seen]
        if pinned is not None and pinned not in keys:
            # Pinned before chatd kept a list of keys seen (or from an invite, or our own).
            keys.insert(0, pinned)
        candidates = [self._key_seen(r.name, sender, key, key == pinned) for key in keys]
        result: dict[str, Any] = {"room": r.name, "name": sender, "candidates": candidates}
        if fingerprint is None:
            return {**result, "trusted": None}
        key = _key_named(r.name, sender, fingerprint, [k for k, *_ in seen])
        self.store.memory.set_pin(r.name, sender, key)
        fp = key_fingerprint(key)
        self.work.publish(
            r.name,
            notice_event(
                r.name, "trusted", f"trusted {sender}'s key", sender=sender, fingerprint=fp
            ),
        )
        return {**result, "trusted": fp}

    def _key_seen(self, room: str, sender: str, key: bytes, pinned: bool) -> dict[str, Any]:
        """One key that spoke as ``sender``: counted from the messages stored, so
        that every message counts (the pins table notes a key once, not each use)."""
        fp = key_fingerprint(key)
        count, first, last = self.store.messages.sent_as(room, sender, fp)
        return {
            "fingerprint": fp,
            "first_seen": None if first is None else iso_ts(first),
            "last_seen": None if last is None else iso_ts(last),
            "messages": count,
            "pinned": pinned,
        }

    # ------------------------------------------------------------------ upkeep
    def prune(self) -> None:
        self.store.memory.prune(self.clock_ms())


def _room_info(room: Room) -> dict[str, Any]:
    return {
        "name": room.name,
        "cipher": room.cipher,
        "legacy": room.legacy,
        "weak": room.weak,
        "last_seq": room.last_seq,
        "warning": room.warning,
        # How one comes back after leaving: the hints of chatctl and the UI say it.
        "key": "legacy" if room.legacy else "random" if room.random_key else "passphrase",
    }


def _key_named(room: str, sender: str, given: str, keys: list[bytes]) -> bytes:
    """The one key seen under ``sender`` whose fingerprint starts with ``given``."""
    digits = fingerprint_digits(given)
    if len(digits) < MIN_FINGERPRINT_DIGITS or any(c not in "0123456789abcdef" for c in digits):
        raise UsageError(
            f"give the fingerprint {sender} reads from `chatctl identity`: at least "
            f"{MIN_FINGERPRINT_DIGITS} hex digits"
        )
    matches = [k for k in keys if key_fingerprint(k).startswith(digits)]
    if not matches:
        raise NothingToTrust(
            f"no key with that fingerprint has spoken as {sender!r} in {room!r}; "
            f"run `chatctl trust {room} {sender}` to list the keys seen"
        )
    return matches[0]
