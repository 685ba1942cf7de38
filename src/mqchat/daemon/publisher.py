"""What chatd's parts use of the broker link, and a link that is never up.

Every part that publishes is given a ``Publisher`` when it is built (the broker
link, made first); code that runs the core without a broker (tests, the storage
benchmark) gives it ``OfflinePublisher``, so no part checks whether it has a link.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mqchat.daemon.unit_of_work import UnitOfWork


class Publisher(Protocol):
    @property
    def connected(self) -> bool:
        """Whether a session is up now."""

    @property
    def generation(self) -> int:
        """Counts clients made: a new one holds none of the old one's messages."""

    @property
    def receive_maximum(self) -> int:
        """How many QoS 1 publishes the broker takes unacknowledged."""

    def publish(self, topic: str, payload: bytes, qos: int) -> int | None:
        """The message id, or None when it was not handed to a session."""

    def subscribe(self, topic: str, qos: int) -> None: ...

    def unsubscribe(self, topic: str) -> None: ...

    def ack(self, mid: int, qos: int) -> None: ...


class OfflinePublisher:
    """A link that never comes up: publishes nothing, subscribes to nothing."""

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
