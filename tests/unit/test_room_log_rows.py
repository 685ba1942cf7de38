"""The membership log's rows belong to their unit of work (issue 26): written with the
batch that made them, not at all when their part fails or the batch rolls back."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from mqchat.daemon.control_order import SignedTimeOrder
from mqchat.daemon.drops import DropCounter
from mqchat.daemon.events import EventPublisher
from mqchat.daemon.store import Store
from mqchat.daemon.store.room_log import TAG_KIND, LogRow
from mqchat.daemon.unit_of_work import UnitOfWork


class Injected(Exception):
    """A failure put into the middle of a payload on purpose."""


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Store, UnitOfWork]:
    store = Store(tmp_path / "mqchat.db", retention=10)
    return store, UnitOfWork(store, EventPublisher(tmp_path / "ev.sock", DropCounter()))


def test_a_row_of_a_failed_part_is_not_written(parts: tuple[Store, UnitOfWork]) -> None:
    store, work = parts
    with work.batch():
        with work.part():
            store.room_log.save(LogRow("lobby", b"kept", TAG_KIND, b"x"))
        with contextlib.suppress(Injected), work.part():
            store.room_log.save(LogRow("lobby", b"undone", TAG_KIND, b"y"))
            raise Injected
    assert [r.id for r in store.room_log.of("lobby")] == [b"kept"]


def test_rows_of_a_batch_that_rolls_back_are_not_written(
    parts: tuple[Store, UnitOfWork],
) -> None:
    store, work = parts

    def batch_that_does_not_commit() -> None:
        with work.batch():
            store.room_log.save(LogRow("lobby", b"never", TAG_KIND, b"x"))
            raise sqlite3.OperationalError("disk I/O error")  # as a failed COMMIT would

    with pytest.raises(sqlite3.OperationalError):
        batch_that_does_not_commit()
    assert store.room_log.of("lobby") == []


def test_a_delete_after_a_save_in_one_batch_wins(parts: tuple[Store, UnitOfWork]) -> None:
    store, work = parts
    with work.batch():
        store.room_log.save(LogRow("lobby", b"a", TAG_KIND, b"x"))
        store.room_log.forget_room("lobby")
    assert store.room_log.of("lobby") == []


def test_a_signed_time_taken_in_a_batch_that_did_not_commit_is_taken_back(
    parts: tuple[Store, UnitOfWork],
) -> None:
    """A payload whose batch failed to commit (a full disk) is opened again, with a
    new batch number: its heads, repair requests and presence are not refused as
    their own replay. A replay after the commit still is."""
    _, work = parts
    order = SignedTimeOrder(journal=work.on_undo)

    def batch_that_fails() -> None:
        with work.batch():
            assert order.accept("room", b"k" * 32, "heads", 1_000, 1)
            raise Injected

    with pytest.raises(Injected):
        batch_that_fails()
    with work.batch():
        assert order.accept("room", b"k" * 32, "heads", 1_000, 2)
    assert not order.accept("room", b"k" * 32, "heads", 1_000, 3)


def test_a_signed_time_taken_by_a_failed_part_is_taken_back(
    parts: tuple[Store, UnitOfWork],
) -> None:
    _, work = parts
    order = SignedTimeOrder(journal=work.on_undo)
    with work.batch():
        assert order.accept("room", b"k" * 32, "alive", 1_000, 1)
        with contextlib.suppress(Injected), work.part():
            assert order.accept("room", b"k" * 32, "alive", 2_000, 2)
            raise Injected
        assert order.accept("room", b"k" * 32, "alive", 2_000, 3)  # the payload again
        assert not order.accept("room", b"k" * 32, "alive", 1_500, 4)
    assert not order.accept("room", b"k" * 32, "alive", 2_000, 5)
