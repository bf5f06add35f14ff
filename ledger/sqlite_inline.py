"""aiosqlite's interface, run on the event loop's own thread.

aiosqlite hands every call to a worker thread and waits for the answer: ~80 µs per round trip, and a
statement takes three or four of them. SQLite itself answers in microseconds, so for an embedded database
the hops cost more than the work. This connection runs each call inline instead.

Waiting for another writer must never block the event loop (the writer may be a task on this very loop),
so the connection has no busy timeout: a locked database raises at once, and the call is retried after an
asynchronous sleep — the loop keeps serving while it waits, up to LOCK_WAIT_SECONDS (or the earlier
deadline a caller set in `wait_until`).

Group commit (ledger/group_commit.py) opens a group on a connection (`begin_group`: BEGIN IMMEDIATE); each unit
of the group opens its own savepoint on it (`begin_unit`) and ends it (`release_unit`, or `rollback_unit`).
While a unit is open, the transaction SQLAlchemy begins and ends on that connection (a session's, for the
statements it runs itself) is the unit's: BEGIN does nothing (ledger/db.py's begin hook asks `unit_open`),
COMMIT does nothing (the unit releases its savepoint when it ends), ROLLBACK rolls back to the unit's savepoint;
SQLAlchemy's sessions work on it unchanged. The group's own COMMIT (`commit_group`) runs in a worker thread: with
synchronous=FULL it syncs the WAL to disk, which may take milliseconds the loop must not stand still for
(the writer commits inline only when that is bounded: group_commit.commit_inline). sqlite3 releases the GIL
while SQLite works; nothing else uses the connection until the COMMIT returns (the writer's turn is held).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from functools import partial
from typing import Any

import aiosqlite

LOCK_WAIT_SECONDS = 5.0  # then LEDGER_UNAVAILABLE: a call never waits long on another writer
# The longest pause between two tries for the lock. Another process's group-commit writer leaves the lock
# free for longer than this now and then (ledger/group_commit.FAIR_PAUSE_SECONDS), so a try lands in it.
LONGEST_RETRY_PAUSE = 0.01

# A monotonic deadline for the lock waits of the current task, earlier than LOCK_WAIT_SECONDS from now: a unit
# of work that already queued for the group-commit writer waits only for the rest of its bound.
wait_until: ContextVar[float | None] = ContextVar("tradewarden_sqlite_wait_until", default=None)

UNIT_SAVEPOINT = "tradewarden_unit"  # one unit at a time runs in a group: one name will do

# Groups' COMMITs, one at a time.
_COMMITS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tradewarden-sqlite-commit")


def _locked(error: sqlite3.OperationalError) -> bool:
    text = str(error)
    return "locked" in text or "busy" in text


def _deadline(deadline: float | None) -> float:
    """The end of a lock wait that began now (unless it began before: `deadline`)."""
    if deadline is not None:
        return deadline
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    bound = wait_until.get()
    return deadline if bound is None else min(deadline, bound)


def _timed_commit(connection: sqlite3.Connection) -> float:
    started = time.monotonic()
    connection.commit()
    return time.monotonic() - started


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite.Connection without the worker thread."""

    group_open = False  # a group's transaction is open (BEGIN IMMEDIATE ... COMMIT)
    unit_open = False  # a unit's savepoint in the group is open: SQLAlchemy's transactions here are the unit's

    @property
    def sqlite(self) -> sqlite3.Connection | None:
        """The driver's connection (the group-commit writer asks it whether its transaction is still open)."""
        return self._connection

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        deadline = None
        pause = 0.0005
        while True:
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as error:
                if not _locked(error):
                    raise
                deadline = _deadline(deadline)
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, LONGEST_RETRY_PAUSE)

    async def begin_group(self) -> None:
        """BEGIN IMMEDIATE (waiting for other processes, up to the bound), then units begin as savepoints."""
        assert self._connection is not None
        await self._execute(self._connection.execute, "BEGIN IMMEDIATE")
        self.group_open = True

    async def commit_group(self, *, inline: bool = False) -> float:
        """The group's COMMIT, in a worker thread (inline: on the loop's thread, which stands still for the
        sync; the writer decides when that is bounded). Returns how long SQLite took to commit (the sync,
        without the hand-over to the thread). On failure the group is still open: roll it back."""
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        loop = asyncio.get_running_loop()
        deadline = None
        while True:
            try:
                took = _timed_commit(self._connection) if inline else await loop.run_in_executor(
                    _COMMITS, _timed_commit, self._connection)
                self.group_open = False
                return took
            except sqlite3.OperationalError as error:
                if not _locked(error):
                    raise
                deadline = _deadline(deadline)
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.001)

    def commit_now(self) -> float:
        """The group's COMMIT on the loop's thread, once, without waiting (the writer's lone fast groups):
        returns how long SQLite took; raises as SQLite does (busy included), the group still open."""
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        took = _timed_commit(self._connection)
        self.group_open = False
        return took

    def rollback_group(self) -> None:
        self.group_open = self.unit_open = False
        if self._connection is not None:
            self._connection.rollback()

    def begin_unit(self) -> sqlite3.Connection:
        """A unit's savepoint in the open group (the group holds the write lock: nothing to wait for).
        Returns the driver's connection, on which the unit's statements run."""
        assert self.group_open and self._connection is not None
        self._connection.execute(f"SAVEPOINT {UNIT_SAVEPOINT}")
        self.unit_open = True
        return self._connection

    def release_unit(self) -> None:
        """The unit succeeded: its changes join the group's transaction."""
        assert self._connection is not None
        self._connection.execute(f"RELEASE {UNIT_SAVEPOINT}")
        self.unit_open = False

    def rollback_unit(self) -> None:
        """The unit failed: undo it alone (unless SQLite rolled back the whole group: the writer sees that)."""
        self.unit_open = False
        if self._connection is not None and self._connection.in_transaction:
            self._connection.execute(f"ROLLBACK TO {UNIT_SAVEPOINT}")
            self._connection.execute(f"RELEASE {UNIT_SAVEPOINT}")

    async def commit(self) -> None:
        if self.unit_open:  # a session's commit inside a unit: the unit's end releases its savepoint
            return
        await super().commit()

    async def rollback(self) -> None:
        if self.unit_open:  # a session's rollback inside a unit: back to the unit's start (it stays open)
            if self._connection is not None and self._connection.in_transaction:
                self._connection.execute(f"ROLLBACK TO {UNIT_SAVEPOINT}")
            return
        await super().rollback()

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._connect().__await__()  # no worker thread to start

    def stop(self) -> None:  # type: ignore[override]
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        self.stop()


def inline_connector(path: str) -> Callable[[], Any]:
    """An `async_creator` for create_async_engine: connections to `path` with no busy timeout."""

    async def create() -> InlineConnection:
        connector = partial(sqlite3.connect, path, timeout=0, isolation_level=None, check_same_thread=False)
        return await InlineConnection(connector, 64)

    return create
