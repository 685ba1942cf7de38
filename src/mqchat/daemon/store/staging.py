"""Writes held back for the batch in progress, then written with one statement per table.

chatd handles requests and received payloads in batches, one transaction each
(mqchat.daemon.unit_of_work). Inside a batch the tables only *stage* what a
message writes (its row, its outbox entry, its seen id and seq...); the batch
writes each table's rows with one ``executemany`` just before its commit, and
per-batch work (retention, the send seq, high-water marks) once. Outside a
batch, a write is staged and written at once, in a transaction of its own, so
what a caller was told is stored is committed either way.

Each request or payload is a *part* of its batch: ``mark`` before it and
``undo`` if it fails, and nothing it staged is written, while the parts before
and after it are. Caches of what is committed (pins, high-water marks) are
filled only from written rows and dropped by ``forget`` when a batch rolls
back, so they never hold what the store does not.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from mqchat.daemon.store.connection import StoreConnection, transaction


class StagedTable(Protocol):
    """What a table that stages rows does for the batch."""

    def staged(self) -> bool:
        """Whether anything waits to be written."""
        ...

    def mark(self) -> int:
        """Where the staged rows end now (``undo`` goes back to it)."""
        ...

    def undo(self, mark: int) -> None:
        """Forget what was staged since ``mark`` (a failed part)."""
        ...

    def write(self, db: sqlite3.Connection) -> None:
        """Write every staged row (inside the caller's transaction); keep them staged."""
        ...

    def written(self) -> None:
        """The rows were written: forget them, and let caches know what they hold now."""
        ...

    def forget(self) -> None:
        """The batch rolled back: forget the staged rows and every cached value."""
        ...


class StagedRows:
    """A table whose staged rows are a plain list: everything of StagedTable but ``write``.

    A subclass sets up ``_db`` and calls ``__init__`` with the batch's Staging.
    """

    def __init__(self, db: StoreConnection, staging: Staging) -> None:
        self._db = db
        self._staging = staging
        self._staged: list[Any] = []
        staging.register(self)

    def staged(self) -> bool:
        return bool(self._staged)

    def mark(self) -> int:
        return len(self._staged)

    def undo(self, mark: int) -> None:
        del self._staged[mark:]

    def write(self, db: sqlite3.Connection) -> None:
        raise NotImplementedError

    def written(self) -> None:
        self._staged.clear()

    forget = written


class StagedStatements(StagedRows):
    """A table whose writes are statements, staged in order and run at the batch's end
    (outside a batch: at once, in a transaction of their own). A read that must see
    the batch's own writes calls ``_reading`` first, which writes what is staged."""

    def _stage(self, *statements: tuple[str, Sequence[Any]]) -> None:
        """Stage ``(sql, params)`` statements, all or none (outside a batch, one
        transaction)."""
        self._staged.extend(statements)
        self._staging.settle()

    def _reading(self) -> sqlite3.Connection:
        self._staging.flush()
        return self._db

    def write(self, db: sqlite3.Connection) -> None:
        for sql, params in self._staged:
            db.execute(sql, params)


Mark = tuple[int, ...]
"""Where a part began: the flushes so far, then where each table's staged rows
ended (a plain tuple: a part begins for every text received, issue 24)."""


class Staging:
    def __init__(self, db: StoreConnection) -> None:
        self._db = db
        self._tables: list[StagedTable] = []
        self._row_tables: list[StagedTable] = []
        self._row_lists: list[list[Any]] = []
        """The staged lists of the tables whose mark is their length (most): a part's
        mark reads them all in one map(len), not one method call a table (issue 24)."""
        self._other_tables: list[StagedTable] = []
        self._flushes = 0
        self.active = False

    def register(self, table: StagedTable) -> None:
        self._tables.append(table)
        if isinstance(table, StagedRows) and type(table).mark is StagedRows.mark:
            self._row_tables.append(table)
            self._row_lists.append(table._staged)
        else:
            self._other_tables.append(table)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction: rows are staged while the block runs and written at its end.

        If anything fails, the commit included, nothing of it is written and the
        caches are dropped (they may hold values of the rolled-back rows).
        """
        if self.active:
            yield
            return
        try:
            with transaction(self._db):
                self.active = True
                yield
                if self._staged():  # no savepoint: a failure rolls back the whole batch
                    self._write_all(self._db)
        except BaseException:
            self.forget()
            raise
        finally:
            self.active = False

    def settle(self) -> None:
        """Called by a table after staging: outside a batch, write it now and commit."""
        if self.active:
            return
        try:
            self.flush()
        except BaseException:
            self.forget()
            raise

    def flush(self) -> None:
        """Write what is staged now (a savepoint inside the batch, else a transaction).

        Reads that must see the batch's own rows (history, the outbox) call this
        first; if the writes fail, the rows stay staged for the part to undo.
        """
        if self._staged():
            with transaction(self._db) as db:
                self._write_all(db)

    def _staged(self) -> bool:
        return any(table.staged() for table in self._tables)

    def _write_all(self, db: sqlite3.Connection) -> None:
        for table in self._tables:
            table.write(db)
        for table in self._tables:
            table.written()
        self._flushes += 1

    def mark(self) -> Mark:
        others = [table.mark() for table in self._other_tables]
        return (self._flushes, *map(len, self._row_lists), *others)

    def undo(self, mark: Mark) -> None:
        """Forget what was staged since ``mark``. If a flush came in between, whatever
        is staged now came after it, within the same part: all of it goes (what the
        flush wrote stays: parts that write, then read, then fail are not undone)."""
        flushed = mark[0] != self._flushes
        tables = [*self._row_tables, *self._other_tables]  # in the mark's order
        for table, end in zip(tables, mark[1:], strict=True):
            table.undo(0 if flushed else end)

    def forget(self) -> None:
        for table in self._tables:
            table.forget()
