"""What each of chatd's dropped-input counters means, and whether it needs attention.

chatd counts everything it drops (docs/ipc.md, ``status.dropped``). Some of it
is part of normal operation: the broker hands over a message twice after a
reconnect, a repair brings a copy of what had arrived. Those are routine: chatd
logs them below WARNING, and ``chatctl status`` lists them apart from what a
user should look into. One table for both, in words a user understands.
Imports nothing: chatctl status loads it on every call.
"""

from __future__ import annotations

ROUTINE: dict[str, str] = {
    "duplicate": "copies the broker delivered again (normal after a reconnect)",
    "repaired_duplicate": "repaired copies of messages that had arrived already",
    "before_join": "messages sent before you joined the room",
    "old_epoch": "messages under a room key replaced by a rekey, after its grace period",
    "removed_sender": "messages from members a rekey removed: they can no longer write here",
    "not_member": "messages from keys that are no member of the room (removed members, "
    "or someone who only holds the key)",
    "unknown_topic": "messages for a room you have left",
    "rekey_without_commit": "rekeys from a chatd older than room membership: they move nobody",
    "stale_invite": "joins with an invite the room has moved on from",
}
"""Reason -> what the dropped things were: expected, nothing to do."""

ATTENTION: dict[str, str] = {
    "replay": "replayed messages (an old message sent again by someone)",
    "undecryptable": "payloads that did not decrypt (corrupt, or forged by someone "
    "without the room key)",
    "oversized": "payloads over the size limit",
    "bad_key_box": "rekeys whose key box did not open or check",
    "not_admin": "membership changes signed by someone who is no admin of the room",
    "bad_commit": "membership changes that break the room's rules",
    "bad_recipients": "rekeys not sealed to exactly the room's members",
    "unusable_key": "member keys that cannot be used (low order, wrong size)",
    "unknown_state": "membership changes of a room state this chatd does not hold",
    "bad_join": "joins without a valid admission from an admin",
    "too_many": "membership records over a bound (a flood)",
    "unknown_record": "records of a kind this chatd does not know (a newer mqchat?)",
    "bad_request": "malformed requests from local clients",
    "internal_error": "requests that failed inside chatd (see its log)",
    "store_failed": "messages the store could not save (see chatd's log)",
    "bad_subscription": "malformed subscriptions from local clients",
    "events_slow_reader": "events a slow local client missed (it reads them from the store)",
    "events_client_evicted": "local clients disconnected: too many at once",
    "events_over_total_budget": "events dropped: local clients together fell too far behind",
    "events_foreign_peer": "connections to the events socket from another user",
}
"""Reason -> what the dropped things were: worth a look (chatd logs them as WARNING)."""


def is_routine(reason: str) -> bool:
    return reason in ROUTINE


def describe(reason: str) -> str:
    """The words for ``reason``; an unknown one (a newer chatd) as its name."""
    return ROUTINE.get(reason) or ATTENTION.get(reason) or reason.replace("_", " ")
