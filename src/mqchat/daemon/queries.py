"""The IPC methods that only read: status, identity, rooms, history, who."""

from __future__ import annotations

import os
from typing import Any

from mqchat import __version__
from mqchat.config import Settings
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.outbox_window import OutboxWindow
from mqchat.daemon.presence import PresenceKeeper
from mqchat.daemon.publisher import Publisher
from mqchat.daemon.repair import Repair
from mqchat.daemon.rooms import Room, RoomRegistry
from mqchat.daemon.store import Store
from mqchat.protocol.ipc_events import iso_ts, to_event
from mqchat.protocol.signing import SigningIdentity


class Queries:
    def __init__(
        self,
        *,
        settings: Settings,
        identity: SigningIdentity,
        store: Store,
        rooms: RoomRegistry,
        outbox: OutboxWindow,
        presence: PresenceKeeper,
        repair: Repair,
        drops: DropCounter,
        link: Publisher,
    ) -> None:
        self._settings = settings
        self._identity = identity
        self._store = store
        self._rooms = rooms
        self._outbox = outbox
        self._presence = presence
        self._repair = repair
        self._drops = drops
        self._link_status = link.status

    def status(self) -> dict[str, Any]:
        return {
            "name": self._settings.name,
            "fingerprint": self._identity.fingerprint,
            "broker": {
                "url": str(self._settings.broker),
                "connected": self._outbox.connected,
                **self._outbox.status(),
                **self._link(),
            },
            "rooms": sorted(self._rooms.names()),
            "dropped": self._drops.as_dict(),
            "repair": self._repair.status(),
            "pid": os.getpid(),
            "version": __version__,
        }

    def _link(self) -> dict[str, Any]:
        status = self._link_status()
        if not status:
            return {}
        error, since = status.pop("last_error"), status.pop("failing_since_ms")
        status["last_error"] = (
            None if error is None else {"reason": error["reason"], "at": iso_ts(error["at_ms"])}
        )
        status["failing_since"] = None if since is None else iso_ts(since)
        return status

    def identity(self) -> dict[str, Any]:
        return {
            "name": self._settings.name,
            "fingerprint": self._identity.fingerprint,
            "public_key": self._identity.public_key.hex(),
        }

    def rooms(self) -> list[dict[str, Any]]:
        return [room_info(r) for r in self._rooms]

    def history(self, room: str, limit: int | None, since: int | None) -> dict[str, Any]:
        r = self._rooms.require(room)
        if since is None and limit is None:
            limit = 10
        msgs, more = self._store.messages.history(r.name, limit=limit, since=since)
        return {
            "room": r.name,
            "last_seq": r.last_seq,
            "messages": [to_event(m) for m in msgs],
            "more": more,
        }

    def who(self, room: str) -> dict[str, Any]:
        return self._presence.who(self._rooms.require(room))


def room_info(room: Room) -> dict[str, Any]:
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
