"""One transaction for many requests or payloads, and what waits for its commit.

chatd handles the requests (or received payloads) that are already waiting as
one batch: one commit, then their events, then what goes to the broker. If the
commit fails, nothing of it is published, nothing after it runs, and the
in-memory counters that the batch moved are reloaded from the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mqchat.daemon.events import EventPublisher
from mqchat.daemon.store import Store


class UnitOfWork:
    def __init__(self, store: Store, events: EventPublisher) -> None:
        self._store = store
        self._events = events
        self._after_commit: list[Callable[[], None]] = []
        self._on_rollback: list[Callable[[], None]] = []
        self.active = False

    def on_rollback(self, reload: Callable[[], None]) -> None:
        """Register what reloads in-memory state from the store after a failed batch."""
        self._on_rollback.append(reload)

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the current batch has committed (now, if there is none)."""
        if self.active:
            if action not in self._after_commit:
                self._after_commit.append(action)
        else:
            action()

    @contextmanager
    def batch(self) -> Iterator[None]:
        if self.active:
            yield
            return
        self.active = True
        try:
            with self._events.held():
                try:
                    with self._store.transaction():
                        yield
                except BaseException:
                    self._after_commit.clear()
                    for reload in self._on_rollback:
                        reload()
                    raise
        finally:
            self.active = False
            after, self._after_commit = self._after_commit, []
        for action in after:
            action()
