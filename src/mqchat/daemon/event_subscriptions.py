"""What chatd lets libzmq keep for events.sock's subscriptions.

An XPUB records every subscription a connection sends, in a trie that costs up
to ~90 bytes per byte of topic (random bytes: 100,000 subscriptions of 16 bytes
took 110 MB), whether or not chatd enters it in the table that events are
matched against. ZeroMQ cannot close one connection, so chatd counts what all
connections hold, and over the budget it reopens the socket (mqchat.daemon.events),
which frees it all. A client that behaves holds a few subscriptions: its rooms,
the welcome topic and, for a moment, a sync topic.
"""

from __future__ import annotations

from mqchat.protocol.ipc_events import TopicKind

MAX_SUBSCRIPTIONS = 4096
"""Subscriptions held over all connections of events.sock."""
MAX_SUBSCRIBED_BYTES = 128 * 1024
"""Bytes of topic held over all connections (worst case ~12 MB of libzmq's trie)."""

_ENTERED: frozenset[TopicKind | None] = frozenset(
    ("every", "no_room", "room", "packed_every", "packed_room")
)


class SubscriptionBudget:
    """Counts subscriptions as libzmq records them: every one a connection sends, and
    the unsubscriptions it sends, or that libzmq sends for it when it goes."""

    max_count = MAX_SUBSCRIPTIONS
    max_bytes = MAX_SUBSCRIBED_BYTES

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.entered = 0
        """Subscriptions chatd entered for rooms and notices (not sync, welcome)."""
        self._held: dict[bytes, int] = {}
        """How many connections hold each entered topic (at most max_count topics): which
        of the two forms of a room's events anyone reads (mqchat.daemon.events)."""

    def added(self, topic: bytes, kind: TopicKind | None) -> bool:
        """Count a subscription; False when the budget is exceeded."""
        self.count += 1
        self.bytes += len(topic)
        if kind in _ENTERED:
            self.entered += 1
            self._held[topic] = self._held.get(topic, 0) + 1
        return self.count <= self.max_count and self.bytes <= self.max_bytes

    def removed(self, topic: bytes, kind: TopicKind | None) -> None:
        # A raw ZMTP peer may cancel what it never subscribed; never count below zero.
        self.count = max(0, self.count - 1)
        self.bytes = max(0, self.bytes - len(topic))
        if kind in _ENTERED:
            self.entered = max(0, self.entered - 1)
            held = self._held.get(topic, 0) - 1
            if held > 0:
                self._held[topic] = held
            else:
                self._held.pop(topic, None)

    def holds(self, topic: bytes) -> bool:
        """Whether any connection holds ``topic`` as it is (entered kinds only)."""
        return topic in self._held
