"""The daemon's core: joined rooms, requests from local clients, the outbox.

Payloads from the broker go to ``mqchat.daemon.inbox``.

Everything here runs on the event loop thread. Handlers are synchronous except
``join`` (its key derivation runs in an executor), so requests from one client
are handled in the order they arrive: a stream of ``send`` keeps its order.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from mqchat import __version__
from mqchat.config import Settings
from mqchat.daemon.broker import BrokerLink
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.events import EventPublisher, iso_ts, to_event
from mqchat.daemon.inbox import Inbox, legacy_id
from mqchat.daemon.rooms import Room
from mqchat.daemon.state import SeqReservation
from mqchat.daemon.store import OutboxEntry, Store, StoredMessage
from mqchat.errors import NothingToTrust, NotJoined, UsageError
from mqchat.protocol import envelope
from mqchat.protocol import legacy as legacy_codec
from mqchat.protocol.fingerprints import MIN_FINGERPRINT_DIGITS, fingerprint_digits
from mqchat.protocol.ipc import Request, notice_event
from mqchat.protocol.kdf import DEFAULT_KDF, derive_room_keys, topic_for
from mqchat.protocol.limits import check_text, normalize_name, normalize_room
from mqchat.protocol.signing import SigningIdentity
from mqchat.protocol.signing import fingerprint as key_fingerprint

log = logging.getLogger(__name__)

SEND_SEQ_KEY = "send_seq"
OUTBOX_WINDOW = 100
"""Outbox entries the broker link holds at once (fewer if the broker's Receive
Maximum says so); PUBACKs make room for more."""
OUTBOX_PAGE = 256


class ChatService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        identity: SigningIdentity,
        events: EventPublisher,
        drops: DropCounter,
        *,
        on_fatal: Callable[[str], None],
        random: Callable[[int], bytes] = os.urandom,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.store = store
        self.identity = identity
        self.events = events
        self.drops = drops
        self.random = random
        self.clock_ms = clock_ms
        self.link: BrokerLink | None = None
        self.connected = False
        self.rooms: dict[str, Room] = {}
        self.by_topic: dict[str, Room] = {}
        self._inflight: dict[int, int] = {}  # paho mid -> outbox id
        self._in_batch = False
        self._after_commit: list[Callable[[], None]] = []
        self._published: list[int] = []  # outbox ids whose PUBACK came
        self._handed: set[int] = set()  # outbox ids paho holds
        self._refusals: dict[int, str] = {}  # outbox id -> the broker's reason
        self._cursor = 0  # the newest outbox id handed over since the last (re)connection
        self._fill_pending = False
        self.last_refusal: tuple[str, int] | None = None
        self._seqs = SeqReservation(settings.state_dir)
        # Past every number reserved before, whatever the database remembers.
        self._seq_floor = self._seqs.reserved
        self._send_seq = max(int(store.get_meta(SEND_SEQ_KEY) or 0), self._seq_floor)
        self.inbox = Inbox(
            store=store,
            identity=identity,
            events=events,
            drops=drops,
            by_topic=self.by_topic,
            batch=self.batch,
            clock_ms=clock_ms,
            on_fatal=on_fatal,
        )
        # One derivation at a time: two concurrent Argon2id runs deadlock inside
        # OpenSSL's thread pool on a 2-core machine (benchmarks/join.py found it),
        # and each holds 64 MiB anyway. The loop keeps serving meanwhile.
        self._kdf = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdf")
        for rec in store.rooms():
            room = Room.from_record(rec, store.last_seq(rec.name))
            if room.keys is not None:
                room.topic = topic_for(settings.topic_prefix, room.keys.tag)
            self._add_room(room)

    def _add_room(self, room: Room) -> None:
        self.rooms[room.name] = room
        self.by_topic[room.topic] = room

    def attach(self, link: BrokerLink) -> None:
        """Subscribe the joined rooms and hand over what a previous run left in the outbox.

        The outbox goes first, so a send made just after a restart cannot
        overtake older messages.
        """
        self.link = link
        self.inbox.link = link
        for room in self.rooms.values():
            link.subscribe(room.topic, room.qos)
        self._fill_window()

    # ------------------------------------------------------------------ requests
    def call(self, req: Request) -> Any | Awaitable[Any]:
        handler: Callable[..., Any] = getattr(self, f"rpc_{req.method}")
        return handler(**req.params)

    def _room(self, name: str) -> Room:
        room = self.rooms.get(normalize_room(name))
        if room is None:
            raise NotJoined(f"you have not joined room {name!r}: run `chatctl join {name}` first")
        return room

    def rpc_status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fingerprint": self.identity.fingerprint,
            "broker": {
                "url": str(self.settings.broker),
                "connected": self.connected,
                "outbox": self.store.outbox_depth(),
                "refused": len(self._refusals),
                "last_refusal": None
                if self.last_refusal is None
                else {"reason": self.last_refusal[0], "at": iso_ts(self.last_refusal[1])},
            },
            "rooms": sorted(self.rooms),
            "dropped": self.drops.as_dict(),
            "pid": os.getpid(),
            "version": __version__,
        }

    def rpc_identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fingerprint": self.identity.fingerprint,
            "public_key": self.identity.public_key.hex(),
        }

    def rpc_rooms(self) -> list[dict[str, Any]]:
        return [self._room_info(r) for _, r in sorted(self.rooms.items())]

    def _room_info(self, room: Room) -> dict[str, Any]:
        return {
            "name": room.name,
            "cipher": room.cipher,
            "legacy": room.legacy,
            "weak": room.weak,
            "last_seq": room.last_seq,
            "warning": room.warning,
        }

    async def rpc_join(
        self, room: str, passphrase: str, cipher: str, legacy: bool, weak: bool
    ) -> dict[str, Any]:
        name = normalize_room(room)
        envelope.check_cipher(cipher)
        now = self.clock_ms()
        if legacy:
            if cipher != "fernet":
                raise UsageError("legacy rooms use fernet, as the original program does")
            new = Room.legacy_room(name, legacy_codec.legacy_key(passphrase), joined_ms=now)
        else:
            loop = asyncio.get_running_loop()
            derive = functools.partial(derive_room_keys, passphrase, name, DEFAULT_KDF, weak=weak)
            keys = await loop.run_in_executor(self._kdf, derive)
            new = Room.passphrase_room(
                name,
                cipher,
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
            old.cipher = new.cipher
            self.store.save_room(old.to_record())
            return {**self._room_info(old), "joined": False}
        new.last_seq = self.store.last_seq(name)
        self.store.save_room(new.to_record())
        self._add_room(new)
        if not new.legacy:
            self.store.set_pin(name, self.name, self.identity.public_key)
        if self.link is not None:
            self.link.subscribe(new.topic, new.qos)
        log.info("joined a room (%s%s)", new.cipher, ", legacy" if new.legacy else "")
        self.events.publish(name, notice_event(name, "joined", f"joined {name}"))
        return {**self._room_info(new), "joined": True}

    def rpc_leave(self, room: str) -> dict[str, Any]:
        r = self._room(room)
        self.store.delete_room(r.name)
        del self.rooms[r.name]
        self.by_topic.pop(r.topic, None)
        if self.link is not None:
            self.link.unsubscribe(r.topic)
        self.events.publish(r.name, notice_event(r.name, "left", f"left {r.name}"))
        return {"room": r.name, "left": True}

    def rpc_send(self, room: str, text: str) -> dict[str, Any]:
        r = self._room(room)
        check_text(text)
        now = self.clock_ms()
        seq_after = self._send_seq
        if r.legacy_key is not None:
            payload = legacy_codec.seal_legacy(
                r.legacy_key, self.name, text, timestamp_s=now // 1000, iv=self.random(16)
            )
            id_bytes, fp = legacy_id(payload), ""
        elif r.keys is not None:
            seq_after += 1
            self._seqs.cover(seq_after)
            id_bytes, payload = envelope.seal(
                r.keys,
                self.identity,
                name=self.name,
                text=text,
                seq=seq_after,
                timestamp_ms=now,
                random=self.random,
                cipher=r.cipher,
            )
            fp = self.identity.fingerprint
        message = StoredMessage(
            r.name, r.last_seq + 1, id_bytes.hex(), now, self.name, fp, True, True, r.legacy, text
        )
        entry = OutboxEntry(0, r.name, r.topic, r.qos, payload)
        self.store.record_send(
            message=message,
            entry=entry,
            seq_key=SEND_SEQ_KEY,
            sender_seq=seq_after,
            id_bytes=id_bytes,
            now_ms=now,
            sender_key=None if r.legacy else self.identity.public_key,
        )
        self._send_seq = seq_after
        r.last_seq = message.seq
        self.events.publish(r.name, to_event(message))
        self._fill_window()
        return {"room": r.name, "seq": message.seq, "id": message.id, "queued": not self.connected}

    def rpc_history(self, room: str, limit: int | None, since: int | None) -> dict[str, Any]:
        r = self._room(room)
        if since is None and limit is None:
            limit = 10
        msgs, more = self.store.history(r.name, limit=limit, since=since)
        return {
            "room": r.name,
            "last_seq": r.last_seq,
            "messages": [to_event(m) for m in msgs],
            "more": more,
        }

    def rpc_trust(self, room: str, name: str, fingerprint: str | None) -> dict[str, Any]:
        r = self._room(room)
        sender = normalize_name(name)
        pin = self.store.pin(r.name, sender)
        pinned = pin[0] if pin is not None else None
        seen = self.store.keys_seen(r.name, sender)
        candidates = [
            {
                "fingerprint": key_fingerprint(key),
                "first_seen": iso_ts(first),
                "last_seen": iso_ts(last),
                "messages": count,
                "pinned": key == pinned,
            }
            for key, first, last, count in seen
        ]
        if pinned is not None and pinned not in [k for k, *_ in seen]:
            # Pinned before chatd kept a list of keys seen (or our own, pinned at join).
            candidates.insert(
                0,
                {
                    "fingerprint": key_fingerprint(pinned),
                    "first_seen": None,
                    "last_seen": None,
                    "messages": None,
                    "pinned": True,
                },
            )
        result: dict[str, Any] = {"room": r.name, "name": sender, "candidates": candidates}
        if fingerprint is None:
            return {**result, "trusted": None}
        key = self._key_named(r.name, sender, fingerprint, [k for k, *_ in seen])
        self.store.set_pin(r.name, sender, key)
        fp = key_fingerprint(key)
        self.events.publish(
            r.name,
            notice_event(
                r.name, "trusted", f"trusted {sender}'s key", sender=sender, fingerprint=fp
            ),
        )
        return {**result, "trusted": fp}

    @staticmethod
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

    # ------------------------------------------------------------------ broker side
    @contextmanager
    def batch(self) -> Iterator[None]:
        """Handle many requests or payloads as one: one commit, then their
        events, then what goes to the broker. If the commit fails, nothing of
        it is published and the in-memory counters are reloaded from the store.
        """
        if self._in_batch:
            yield
            return
        self._in_batch = True
        try:
            with self.events.held():
                try:
                    with self.store.transaction():
                        yield
                except BaseException:
                    self._reload_counters()
                    raise
        finally:
            self._in_batch = False
            after, self._after_commit = self._after_commit, []
        for action in after:
            action()

    def _reload_counters(self) -> None:
        self._after_commit.clear()
        self._send_seq = max(int(self.store.get_meta(SEND_SEQ_KEY) or 0), self._seq_floor)
        for room in self.rooms.values():
            room.last_seq = self.store.last_seq(room.name)

    def _fill_window(self) -> None:
        """Hand the broker link the oldest outbox entries it does not hold, up to the window.

        The durable outbox is the queue; paho holds only a bounded window of it
        (refilled on every PUBACK), no larger than the broker's Receive Maximum, so
        a long outage costs no memory, paho never runs out of packet ids and the
        broker's queue is never overrun. Entries go in outbox order.
        """
        if self._in_batch:
            if not self._fill_pending:
                self._fill_pending = True
                self._after_commit.append(self._fill_window)
            return
        self._fill_pending = False
        if self.link is None or not self.connected:
            return  # the outbox is the queue: paho holds nothing while offline
        window = min(OUTBOX_WINDOW, self.link.receive_maximum)
        while len(self._handed) < window:
            page = self.store.outbox_after(self._cursor, OUTBOX_PAGE)
            if not page:
                return
            for entry in page:
                if entry.id in self._handed:
                    self._cursor = entry.id
                    continue
                if len(self._handed) >= window:
                    return
                mid = self.link.publish(entry.topic, entry.payload, entry.qos)
                if mid is None:
                    return  # not taken now (QoS 0 while offline): the next connection
                self._cursor = entry.id
                self._inflight[mid] = entry.id
                self._handed.add(entry.id)

    def on_published(self, mid: int, refusal: str | None) -> None:
        entry_id = self._inflight.pop(mid, None)
        if entry_id is None:
            return
        self._handed.discard(entry_id)
        if refusal is not None:
            self._refused(entry_id, refusal)
            return
        self._refusals.pop(entry_id, None)
        if not self._published:
            asyncio.get_running_loop().call_soon(self._forget_published)
        self._published.append(entry_id)
        self._fill_window()

    def _refused(self, entry_id: int, reason: str) -> None:
        """The broker took the message but would not publish it (an ACL, a quota).

        It stays in the outbox and goes again on the next connection; `status`
        counts it and tails are told, so a refusal is never mistaken for delivery.
        """
        first = entry_id not in self._refusals
        self._refusals[entry_id] = reason
        self.last_refusal = (reason, self.clock_ms())
        log.warning("the broker refused to publish a message (%s); kept for a retry", reason)
        room = self.store.outbox_room(entry_id)
        if first and room is not None and room in self.rooms:
            self.events.publish(
                room,
                notice_event(
                    room,
                    "publish_refused",
                    f"the broker refused a message in {room} ({reason}); chatd keeps it and "
                    f"tries again when it reconnects",
                    reason=reason,
                ),
            )

    def _forget_published(self) -> None:
        """Remove every entry PUBACK'd since the last pass, in one transaction."""
        done, self._published = self._published, []
        self.store.remove_outbox(done)

    def on_broker_state(self, connected: bool, reason: str) -> None:
        changed = connected != self.connected
        self.connected = connected
        if not changed:
            log.debug("%s", reason)
            return
        if connected:
            log.info("%s", reason)
            self._cursor = 0  # refused or untaken entries go again, in order
            self._fill_window()
        else:
            log.warning("%s", reason)
        kind = "broker_up" if connected else "broker_down"
        self.events.publish(None, notice_event(None, kind, reason))

    # ------------------------------------------------------------------ upkeep
    def close(self) -> None:
        self._kdf.shutdown(wait=False, cancel_futures=True)

    def prune(self) -> None:
        self.store.prune_replay_memory(self.clock_ms())

    @property
    def inflight(self) -> int:
        return len(self._inflight)
