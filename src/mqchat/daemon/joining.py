"""The IPC methods ``join`` and ``leave``: a room by passphrase (or the original
program's legacy mode), and forgetting one.

``join`` is the one handler that awaits: its key derivation runs on the
``KeyDerivation`` thread. Leaving tells every part that keeps something per room
(``forget``), so nothing of a room outlives it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from mqchat.config import Settings
from mqchat.daemon.key_derivation import KeyDerivation
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.publisher import LinkEffects
from mqchat.daemon.queries import room_info
from mqchat.daemon.rooms import LEFT_INVITE_ROOMS_KEY, Room, RoomRegistry, another_room_warning
from mqchat.daemon.store import Store
from mqchat.daemon.unit_of_work import UnitOfWork
from mqchat.errors import UsageError
from mqchat.protocol import envelope
from mqchat.protocol import legacy as legacy_codec
from mqchat.protocol.ipc_events import notice_event
from mqchat.protocol.kdf import DEFAULT_KDF
from mqchat.protocol.limits import normalize_room
from mqchat.protocol.records import PresenceState
from mqchat.protocol.signing import SigningIdentity

log = logging.getLogger(__name__)


class RoomJoining:
    def __init__(
        self,
        *,
        settings: Settings,
        identity: SigningIdentity,
        store: Store,
        rooms: RoomRegistry,
        kdf: KeyDerivation,
        presence: PresenceKeeper,
        link: LinkEffects,
        work: UnitOfWork,
        forgetters: Sequence[Callable[[Room], None]],
        clock_ms: Callable[[], int],
    ) -> None:
        self._settings = settings
        self._identity = identity
        self._store = store
        self._rooms = rooms
        self._kdf = kdf
        self._presence = presence
        self._link = link
        self._work = work
        self._forgetters = tuple(forgetters)
        """Every part that keeps something per room: told when we leave it."""
        self._clock_ms = clock_ms

    async def join(
        self, room: str, passphrase: str, cipher: str | None, legacy: bool, weak: bool
    ) -> dict[str, Any]:
        """Join a room. Without ``cipher``: a new room uses the default, a legacy room
        fernet, and a room joined already keeps the cipher it has."""
        name = normalize_room(room)
        if cipher is not None:
            envelope.check_cipher(cipher)
        now = self._clock_ms()
        if legacy:
            if cipher not in (None, "fernet"):
                raise UsageError("legacy rooms use fernet, as the original program does")
            new = Room.legacy_room(name, legacy_codec.legacy_key(passphrase), joined_ms=now)
        else:
            keys = await self._kdf.derive(passphrase, name, DEFAULT_KDF, weak=weak)
            new = Room.passphrase_room(
                name,
                cipher or envelope.DEFAULT_CIPHER,
                keys,
                DEFAULT_KDF,
                self._settings.topic_prefix,
                weak=weak,
                joined_ms=now,
            )
        old = self._rooms.get(name)
        if old is not None:
            if not old.same_key(new) or old.legacy != new.legacy:
                raise UsageError(
                    f"you have already joined {name!r} with another passphrase or mode; "
                    f"run `chatctl leave {name}` first"
                )
            if cipher is not None:
                old.cipher = cipher
            self._store.rooms.save(old.to_record())
            return {**room_info(old), "joined": False}
        new.last_seq = self._store.messages.last_seq(name)
        self._store.rooms.save(new.to_record())
        self._rooms.add(new)
        if not new.legacy:
            self._store.memory.set_pin(name, self._settings.name, self._identity.public_key)
        for topic in new.topics:
            self._link.subscribe(topic, new.qos)
        self._presence.announce(new, PresenceState.ONLINE)
        log.info("joined a room (%s%s)", new.cipher, ", legacy" if new.legacy else "")
        self._work.publish(name, notice_event(name, "joined", f"joined {name}"))
        info = room_info(new)
        if name in self._rooms.left_by_invite:
            info["warning"] = "; ".join(filter(None, (another_room_warning(name), info["warning"])))
        return {**info, "joined": True}

    def leave(self, room: str) -> dict[str, Any]:
        r = self._rooms.require(room)
        self._presence.announce(r, PresenceState.LEAVING)
        self._store.rooms.delete(r.name)
        self._presence.forget(r)
        for forget in self._forgetters:
            forget(r)
        self._rooms.remove(r)
        self._rooms.left(r)
        self._store.meta.set(LEFT_INVITE_ROOMS_KEY, json.dumps(self._rooms.left_by_invite))
        for topic in r.topics:
            self._link.unsubscribe(topic)
        self._work.publish(r.name, notice_event(r.name, "left", f"left {r.name}"))
        return {"room": r.name, "left": True}
