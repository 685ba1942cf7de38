"""One transaction for many requests or payloads, and what waits for its commit.

chatd handles the requests (or received payloads) that are already waiting as
one batch: the store stages what each writes and writes it all with one
statement per table, then one commit, then what goes to the broker (it has the
longest way to go), then their events (and the IPC server's replies). If the
commit fails, nothing of it is published, nothing after it runs, and the
in-memory counters that the batch moved are reloaded from the store.

Each request or payload is a ``part`` of the batch: if it fails, what it staged,
the events it published and what it held for the broker are forgotten, and the
other parts still commit. That is what a SAVEPOINT per message used to give,
without a statement.

State the store does not hold (which batch and time a sender's control records
were last taken from) cannot be reloaded: a change to it registers how to take
it back (``on_undo``), and is taken back when its part or its batch fails.

In-memory state is the store's cache: the parts that keep some register a
``reload`` (``on_rollback``), run when a batch rolls back and when a part fails
with anything but an expected error. An expected error (an ``MqchatError``: a
bad request, a refused payload) comes before its handler changes anything, so it
costs no reload. The first failed part of a batch reloads at once; further ones
in the same batch reload once, after its commit, so payloads that each trip a
bug cost one reload a batch, not one each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from mqchat.daemon.events import Event, EventPublisher
from mqchat.daemon.store import Store
from mqchat.errors import MqchatError

log = logging.getLogger(__name__)


class UnitOfWork:
    def __init__(self, store: Store, events: EventPublisher) -> None:
        self._store = store
        self._events = events
        self._after_commit: list[Callable[[], object]] = []
        self._on_rollback: list[Callable[[], None]] = []
        self._undo: list[Callable[[], None]] = []
        self._held: list[tuple[str | None, Event]] = []
        self.active = False
        self._reloaded = False
        self._reload_due = False

    def on_rollback(self, reload: Callable[[], None]) -> None:
        """Register what reloads in-memory state from the store after a failed batch."""
        self._on_rollback.append(reload)

    def on_undo(self, undo: Callable[[], None]) -> None:
        """Register how to take back an in-memory change that no reload can restore:
        run, newest first, if the part or batch that made it fails."""
        if self.active:
            self._undo.append(undo)

    def _take_back(self, mark: int) -> None:
        while len(self._undo) > mark:
            self._undo.pop()()

    def after_commit(self, action: Callable[[], object]) -> None:
        """Run ``action`` once the current batch has committed (now, if there is none)."""
        if self.active:
            if action not in self._after_commit:
                self._after_commit.append(action)
        else:
            action()

    @property
    def wants_events(self) -> bool:
        """False while no client subscribed on events.sock: an event need not be built.

        Nobody can connect in the middle of a batch: both run on the event loop.
        """
        return self._events.listening

    def publish(self, room: str | None, event: Event) -> None:
        """Publish an event once the batch has committed (now, if there is none)."""
        if self.active:
            self._held.append((room, event))
        else:
            self._events.publish(room, event)

    @contextmanager
    def batch(self) -> Iterator[None]:
        if self.active:
            yield
            return
        self.active = True
        self._reloaded = self._reload_due = False
        try:
            try:
                with self._store.batch():
                    yield
            except BaseException:
                self._take_back(0)
                self._after_commit.clear()
                self._held.clear()
                self.active = False  # what a reload holds for the broker goes now
                self.reload()
                raise
            # Committed: first what goes to the broker (it has the longest way to
            # go), then the batch's events, written to each client at once. Events
            # are held here alone, not again by the publisher.
            held, self._held = self._held, []
            self._undo.clear()
            self.active = False
            if self._reload_due:
                self.reload()
            self._run_after_commit()
            self._events.publish_all(held)
        finally:
            self.active = False
            self._held.clear()
            self._after_commit.clear()
            self._undo.clear()

    def reload(self) -> None:
        """In-memory state from the store again (what a failed part or batch left)."""
        for reload in self._on_rollback:
            reload()

    def part_failed(self) -> None:
        """A part of the batch failed unexpectedly: reload now, the first time in a
        batch; after its commit, the next times."""
        if self._reloaded:
            self._reload_due = True
            return
        self._reloaded = True
        self.reload()

    def _run_after_commit(self) -> None:
        after, self._after_commit = self._after_commit, []
        for action in after:
            try:
                action()
            except Exception:
                # The batch is committed and its callers are told so; what failed
                # here (handing the outbox to the link) is tried again later.
                log.exception("an action after a commit failed")

    def part(self) -> AbstractContextManager[None]:
        """One request or payload of the batch: if it raises, it leaves nothing behind.

        Its staged writes and held events are forgotten; the exception goes on to
        the caller, which answers or counts it. Outside a batch, a batch of its own.
        """
        if not self.active:
            return self.batch()
        return _Part(self, self._store, self._held, self._after_commit)


class _Part:
    """``UnitOfWork.part`` inside a batch. A class, not a generator: it runs once per
    message, and costs a third of what contextlib's machinery does."""

    __slots__ = ("_actions", "_after", "_events", "_held", "_mark", "_store", "_undos", "_work")

    def __init__(
        self,
        work: UnitOfWork,
        store: Store,
        held: list[tuple[str | None, Event]],
        after: list[Callable[[], object]],
    ) -> None:
        self._work = work
        self._store = store
        self._held = held
        self._after = after

    def __enter__(self) -> None:
        self._mark = self._store.mark()
        self._events = len(self._held)
        self._actions = len(self._after)
        self._undos = len(self._work._undo)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self._store.undo(self._mark)
            del self._held[self._events :]
            del self._after[self._actions :]
            self._work._take_back(self._undos)
            if not issubclass(kind, MqchatError):
                self._work.part_failed()
