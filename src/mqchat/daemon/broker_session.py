"""What the broker link delivers, and what it keeps across reconnects: the topics
chatd wants, and the payloads of its own that a 3.1.1 broker will send back.
No paho in it."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

ECHO_MEMORY = 65536
"""Payloads of ours remembered, by their first bytes, to drop their 3.1.1 echoes."""
ECHO_PREFIX = 48


class Incoming(NamedTuple):
    """A received PUBLISH (a NamedTuple: one is built for every payload)."""

    topic: str
    payload: bytes
    mid: int
    qos: int


@dataclass(frozen=True)
class LinkSinks:
    """Where the link delivers, given to ``BrokerLink.start``."""

    on_messages: Callable[[list[Incoming]], None]
    """The payloads paho read in a row, in its order (one wake-up's, at most)."""
    on_state: Callable[[bool, str], None]
    """(connected, why): each change, and each failure while down."""
    on_published: Callable[[int, str | None], None]
    """(mid, the broker's refusal or None): a QoS 1 publish was acknowledged."""


class Delivery:
    """The sinks, each called on the loop with ``call_soon``: never inside paho (whose
    state is half updated in its callbacks), and in the order paho saw things.
    Nothing is delivered before ``attach``: nothing happens before the link starts.

    Payloads that come in a row go together, in one call: the inbox stores them
    in that call rather than a loop pass later (issue 24)."""

    def __init__(self, on_fatal: Callable[[str], None]) -> None:
        self._on_fatal = on_fatal
        self._call_soon: Callable[..., object] = lambda *_: None
        self._sinks = LinkSinks(lambda _: None, lambda *_: None, lambda *_: None)
        self._row: list[Incoming] | None = None
        """The payloads of the delivery not yet made, while nothing else came after."""

    def attach(self, loop: asyncio.AbstractEventLoop, sinks: LinkSinks) -> None:
        self._call_soon = loop.call_soon
        self._sinks = sinks

    def message(self, incoming: Incoming) -> None:
        if self._row is None:
            self._row = []
            self._call_soon(self._deliver, self._row)
        self._row.append(incoming)

    def _deliver(self, row: list[Incoming]) -> None:
        if row is self._row:
            self._row = None
        self._sinks.on_messages(row)

    def state(self, connected: bool, why: str) -> None:
        self._row = None  # a payload after this is delivered after it
        self._call_soon(self._sinks.on_state, connected, why)

    def published(self, mid: int, refusal: str | None) -> None:
        self._row = None
        self._call_soon(self._sinks.on_published, mid, refusal)

    def fatal(self, reason: str) -> None:
        self._row = None
        self._call_soon(self._on_fatal, reason)


class Subscriptions:
    """The topics chatd wants, sent at each CONNACK; and those it no longer wants
    but that a persistent session taken up while away would keep delivering."""

    def __init__(self) -> None:
        self._topics: dict[str, int] = {}
        self._dropped: set[str] = set()

    def want(self, topic: str, qos: int) -> None:
        self._topics[topic] = qos
        self._dropped.discard(topic)

    def drop(self, topic: str, *, at_next_connack: bool) -> None:
        """Forget ``topic``; unless it is unsubscribed now, do it at the next CONNACK."""
        self._topics.pop(topic, None)
        if at_next_connack:
            self._dropped.add(topic)

    def at_connack(self) -> tuple[list[tuple[str, int]], list[str]]:
        """A session came up: what to subscribe, and what to unsubscribe (once)."""
        dropped = sorted(self._dropped)
        self._dropped.clear()
        return list(self._topics.items()), dropped


class Echoes:
    """Our own payloads, by their first bytes (a random nonce or IV), to recognise
    when a broker without noLocal sends them back."""

    def __init__(self, memory: int = ECHO_MEMORY, prefix: int = ECHO_PREFIX) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._memory = memory
        self._prefix = prefix

    def sent(self, payload: bytes) -> None:
        self._seen[payload[: self._prefix]] = None
        if len(self._seen) > self._memory:
            self._seen.popitem(last=False)

    def is_echo(self, payload: bytes) -> bool:
        """Whether ``payload`` is one of ours, come back (each is recognised once)."""
        return self._seen.pop(payload[: self._prefix], False) is None
