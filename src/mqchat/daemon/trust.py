"""The IPC method ``trust``: list the keys that spoke under a name, or pin one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mqchat.daemon.rooms import RoomRegistry
from mqchat.daemon.store import Store
from mqchat.errors import NothingToTrust, UsageError
from mqchat.protocol.fingerprints import MIN_FINGERPRINT_DIGITS, fingerprint_digits
from mqchat.protocol.ipc_events import iso_ts, notice_event
from mqchat.protocol.limits import normalize_name
from mqchat.protocol.signing import fingerprint as key_fingerprint


class Trust:
    def __init__(
        self,
        *,
        store: Store,
        rooms: RoomRegistry,
        publish: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._publish = publish
        """Holds an event until the request's batch commits (UnitOfWork.publish)."""

    def trust(self, room: str, name: str, fingerprint: str | None) -> dict[str, Any]:
        r = self._rooms.require(room)
        sender = normalize_name(name)
        memory = self._store.memory
        pin = memory.pin(r.name, sender)
        pinned = pin.key if pin is not None else None
        seen = memory.keys_seen(r.name, sender)
        keys = [k for k, *_ in seen]
        if pinned is not None and pinned not in keys:
            # Pinned before chatd kept a list of keys seen (or from an invite, or our own).
            keys.insert(0, pinned)
        candidates = [self._key_seen(r.name, sender, key, key == pinned) for key in keys]
        result: dict[str, Any] = {"room": r.name, "name": sender, "candidates": candidates}
        if fingerprint is None:
            return {**result, "trusted": None}
        key = _key_named(r.name, sender, fingerprint, [k for k, *_ in seen])
        memory.set_pin(r.name, sender, key)
        fp = key_fingerprint(key)
        self._publish(
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
        count, first, last = self._store.messages.sent_as(room, sender, fp)
        return {
            "fingerprint": fp,
            "first_seen": None if first is None else iso_ts(first),
            "last_seen": None if last is None else iso_ts(last),
            "messages": count,
            "pinned": pinned,
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
