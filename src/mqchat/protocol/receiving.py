"""The receiving rules: what becomes of a message once it has been opened.

Pure, in the spirit of h11: an ``Arrival`` (who sent what, with which numbers)
and a read-only view of what the receiver remembers go in; a ``Verdict`` comes
out. Nothing here touches a store, a socket or a clock: the daemon implements
``Memory`` with its store, applies the verdict in its own transaction, and
raises the notices the verdict asks for (docs/protocol.md §6, steps 13-14).

What a verdict depends on, besides the message itself, is exactly what
docs/protocol.md says: which ids and (sender key, seq) pairs were seen, the
highest seq seen from the sender (the replay window), which key a name is
pinned to in the room (the first key seen wins until the user trusts another),
and when the receiver joined the room. Nothing else, arrival order included,
changes which messages are shown.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Protocol

REPLAY_WINDOW = 4096
"""A sender's seq this far below the highest seen from it is too old: a replay."""

JOIN_SKEW_MS = 10 * 60 * 1000
"""A message may claim a time this much before its receiver joined the room
(clocks disagree); anything older is traffic captured before, replayed."""


def stream_key(sender_key: bytes, room: str, stream: int) -> bytes:
    """What a version 2 message's seq is judged under: its sender's stream in its room.

    Version 1 numbers a sender's messages once across rooms, so its seq is judged
    under the sender key itself; version 2 numbers them per (room, stream)
    (docs/protocol.md §15). A local name for that, never sent.
    """
    return hashlib.sha256(
        b"mqchat stream\x00" + sender_key + room.encode() + b"\x00" + stream.to_bytes(8, "big")
    ).digest()


class Pin(NamedTuple):
    """The key a (room, sender name) is pinned to, and a newer key seen under it."""

    key: bytes
    pending: bytes | None


class Memory(Protocol):
    """What the receiver remembers; the daemon answers from its store."""

    def seen_id(self, message_id: bytes) -> bool: ...

    def seen_seq(self, sender_key: bytes, seq: int) -> bool: ...

    def highest_seq(self, sender_key: bytes) -> int | None: ...

    def pin(self, room: str, name: str) -> Pin | None: ...


class Arrival(NamedTuple):
    """An opened, signature-checked message, as the rules need to see it.

    Legacy messages have no sender key and no seq: only their id (a hash of the
    token) and their time are judged, and they are never verified.
    """

    room: str
    joined_ms: int
    sender_name: str
    sender_key: bytes | None
    message_id: bytes
    seq: int | None
    timestamp_ms: int
    seq_key: bytes | None = None
    """Version 2: the stream ``seq`` counts in (``stream_key``), whose state judges
    it (§20); None for version 1, where ``seq`` counts under the sender key."""


class Verdict(NamedTuple):
    """Show it (``dropped`` is None) or drop it for the reason given.

    For a message that is shown, the caller must remember its id and, when it
    has one, its (sender key, seq), in the same transaction as the message; and
    do what the other fields say: pin the name to ``pin``, mark ``pending`` as
    the name's newer key, record ``key_seen`` as a key seen under the name, and
    raise a key-changed notice when ``key_changed``.
    """

    dropped: str | None
    verified: bool = False
    pin: bytes | None = None
    pending: bytes | None = None
    key_seen: bytes | None = None
    key_changed: bool = False


DUPLICATE = Verdict("duplicate")
REPLAY = Verdict("replay")
BEFORE_JOIN = Verdict("before_join")
SHOWN_LEGACY = Verdict(None)
SHOWN_VERIFIED = Verdict(None, verified=True)
"""The usual verdicts, built once: a NamedTuple with keywords costs ~1 µs a text."""


def judge(arrival: Arrival, memory: Memory, *, own_key: bytes) -> Verdict:
    """The verdict on one message. The checks run in the order of docs/protocol.md §6.

    A message signed with our own key is ours: it was stored when it was sent, so
    one that comes from the broker is an echo (a broker without MQTT 5's noLocal)
    or a replay, and is a duplicate whatever its id and seq (§6 step 13); our own
    texts need no seen ids or seqs to be refused.

    A version 2 text is judged by its stream's state alone (§20), never by its id:
    an id is the sender's to choose, so a member who took another's id first
    would otherwise have that message dropped as a duplicate, and every repair
    of it too (docs/security.md, "Replays")."""
    if arrival.sender_key == own_key:
        return DUPLICATE
    if arrival.seq_key is None and memory.seen_id(arrival.message_id):
        return DUPLICATE
    key, seq = arrival.sender_key, arrival.seq
    # Version 1: one seq per sender key, remembered here. A version 2 text's (stream,
    # seq) is judged by its stream's state instead (§20: mqchat.daemon.repair), which
    # holds every number received or missing, with no window.
    if (
        arrival.seq_key is None
        and key is not None
        and seq is not None
        and _replayed(memory, key, seq)
    ):
        return REPLAY
    if arrival.timestamp_ms < arrival.joined_ms - JOIN_SKEW_MS:
        return BEFORE_JOIN
    if key is None:
        return SHOWN_LEGACY  # legacy: shown, never verified
    return _pinning(memory.pin(arrival.room, arrival.sender_name), key)


def _replayed(memory: Memory, key: bytes, seq: int) -> bool:
    highest = memory.highest_seq(key)
    if highest is not None and seq <= highest - REPLAY_WINDOW:
        return True
    return memory.seen_seq(key, seq)


def _pinning(pin: Pin | None, key: bytes) -> Verdict:
    """Trust on first use: the first key under a name is pinned; another is unverified."""
    if pin is None:
        return Verdict(None, verified=True, pin=key, key_seen=key)
    if pin.key == key:
        return SHOWN_VERIFIED
    first_time = pin.pending != key
    return Verdict(
        None,
        verified=False,
        pending=key if first_time else None,
        key_seen=key,
        key_changed=first_time,
    )
