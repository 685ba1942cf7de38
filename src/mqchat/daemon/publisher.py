"""What chatd's parts use of the broker link, and a stand-in for running without one.

The parts that publish, subscribe or acknowledge are given a ``Publisher`` when
they are built; chatd gives them its ``BrokerLink``. Tests and benchmarks that run
the core without a broker give them an ``OfflinePublisher``: never connected, so
the parts hold what they would send, as they do while the broker is away. What
handling a request or payload gives the broker goes through ``AfterCommit``:
held until its unit of work commits, dropped if it rolls back.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mqchat.daemon.unit_of_work import UnitOfWork


class Publisher(Protocol):
    """The broker link as the rest of chatd sees it (``daemon/broker.py``)."""

    @property
    def connected(self) -> bool:
        """A session is up: QoS 0 publishes go out, and the outbox may send."""

    @property
    def generation(self) -> int:
        """Counts paho clients made: a new one holds none of the old one's messages."""

    @property
    def receive_maximum(self) -> int:
        """How many QoS 1 publishes the broker takes unacknowledged (MQTT 5 CONNACK)."""

    def publish(self, topic: str, payload: bytes, qos: int) -> int | None:
        """Hand a message over; return its mid, or None if it was not taken."""

    def subscribe(self, topic: str, qos: int) -> None:
        """Receive ``topic`` from now on, and again after every reconnect."""

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic``, now or at the next CONNACK."""

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a message received (only once it is stored)."""

    def status(self) -> dict[str, Any]:
        """For `chatctl status`: the URL, the protocol, the last failure and since when."""


class OfflinePublisher:
    """A link that is never connected: takes nothing, acknowledges nothing."""

    connected = False
    generation = 0
    receive_maximum = 65535

    def publish(self, topic: str, payload: bytes, qos: int) -> int | None:
        return None

    def subscribe(self, topic: str, qos: int) -> None:
        pass

    def unsubscribe(self, topic: str) -> None:
        pass

    def ack(self, mid: int, qos: int) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"url": None, "protocol": None, "last_error": None, "failing_since_ms": None}


class LinkEffects(Protocol):
    """What a part that publishes or subscribes while handling a request or payload
    uses of the link: effects that must wait for that unit of work's commit."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, qos: int) -> None: ...

    def subscribe(self, topic: str, qos: int) -> None: ...

    def unsubscribe(self, topic: str) -> None: ...


class AfterCommit:
    """The link, with every publish and (un)subscription held until the unit of work
    in progress commits, and dropped if it rolls back (at once outside one): what a
    request or payload does to the broker is one of its effects, like its rows."""

    def __init__(self, link: Publisher, work: UnitOfWork) -> None:
        self._link = link
        self._work = work

    @property
    def connected(self) -> bool:
        return self._link.connected

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        self._work.after_commit(functools.partial(self._link.publish, topic, payload, qos))

    def subscribe(self, topic: str, qos: int) -> None:
        self._work.after_commit(functools.partial(self._link.subscribe, topic, qos))

    def unsubscribe(self, topic: str) -> None:
        self._work.after_commit(functools.partial(self._link.unsubscribe, topic))
