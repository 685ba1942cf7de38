"""``chatctl members``: a room's state as a person reads it (docs/ipc.md, ``members``)."""

from __future__ import annotations

from typing import Any

from mqchat.daemon.epoch_keeper import EpochKeeper
from mqchat.daemon.room_logs import RoomLogs
from mqchat.daemon.rooms import RoomRegistry
from mqchat.daemon.store import Store
from mqchat.errors import UsageError
from mqchat.protocol.fingerprints import fingerprint
from mqchat.protocol.ipc_events import iso_ts
from mqchat.protocol.keybox import MemberKeyPair
from mqchat.protocol.signing import SigningIdentity


class MemberList:
    def __init__(
        self,
        *,
        store: Store,
        rooms: RoomRegistry,
        keeper: EpochKeeper,
        logs: RoomLogs,
        identity: SigningIdentity,
        name: str,
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._keeper = keeper
        self._logs = logs
        self._identity = identity
        self._own_key = identity.public_key
        self._member_key = MemberKeyPair.from_identity(identity).public_key
        self._name = name

    def members(self, room: str) -> dict[str, Any]:
        """Who is in the room, with roles and since when; newcomers not yet in a commit."""
        r = self._rooms.require(room)
        if r.legacy or r.epoch is None:
            raise UsageError("a legacy room has no members' keys")
        head = self._logs.head(r)
        online = {m.sender_key: m.online for m in self._store.members.in_room(r.name)}
        if head is None:
            rows = [self._me()] + [
                {
                    "name": m.name,
                    "fingerprint": fingerprint(m.sender_key),
                    "member_key": fingerprint(m.x25519_key) if m.x25519_key else None,
                    "online": m.online,
                    "role": None,
                }
                for m in self._store.members.in_room(r.name)
            ]
        else:
            pending = self._logs.book(r).pending(head.hash)
            rows = [
                {
                    "name": m.name,
                    "fingerprint": fingerprint(m.sign_key),
                    "member_key": fingerprint(m.x25519_key),
                    "online": True
                    if m.sign_key == self._own_key
                    else online.get(m.sign_key, False),
                    "role": m.role.name.lower() if m in head.members else "pending",
                    "since_epoch": m.since,
                    **({"you": True} if m.sign_key == self._own_key else {}),
                }
                for m in (*head.members, *pending)
            ]
        return {
            "room": r.name,
            "epoch": r.epoch.epoch,
            "tag": r.epoch.tag,
            "state": head.hash.hex() if head else None,
            "out": self._logs.out_reason(r),
            "grace": [
                {"epoch": g.keys.epoch, "tag": g.keys.tag, "until": iso_ts(g.until_ms)}
                for g in r.grace
            ],
            "grace_period_s": self._keeper.grace_ms // 1000,
            "members": rows,
        }

    def _me(self) -> dict[str, Any]:
        return {
            "name": self._name,
            "fingerprint": self._identity.fingerprint,
            "member_key": fingerprint(self._member_key),
            "online": True,
            "you": True,
            "role": None,
        }
