"""aiosqlite's interface, run on the event loop's own thread.

aiosqlite hands every call to a worker thread and waits for the answer: ~80 µs per round trip, and a
statement takes three or four of them. SQLite itself answers in microseconds, so for an embedded database
the hops cost more than the work. This connection runs each call inline instead.

Waiting for another writer must never block the event loop (the writer may be a task on this very loop),
so the connection has no busy timeout: a locked database raises at once, and the call is retried after an
asynchronous sleep — the loop keeps serving while it waits, up to LOCK_WAIT_SECONDS (or the earlier
deadline a caller set in `wait_until`).

A connection made with commits_off_loop=True (the group-commit writer, ledger/group_commit.py) runs its
COMMIT in a worker thread instead: with synchronous=FULL the COMMIT syncs the WAL to disk, milliseconds the
loop must not stand still for. sqlite3 releases the GIL while SQLite works; nothing else uses the
connection until the COMMIT returns (the writer's turn is held).
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

# COMMITs of commits_off_loop connections, one at a time (only one group commits per writer at a time).
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


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite.Connection without the worker thread."""

    commits_off_loop = False

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

    async def commit(self) -> None:
        if not self.commits_off_loop:
            await super().commit()
            return
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        loop = asyncio.get_running_loop()
        deadline = None
        while True:
            try:
                await loop.run_in_executor(_COMMITS, self._connection.commit)
                return
            except sqlite3.OperationalError as error:
                if not _locked(error):
                    raise
                deadline = _deadline(deadline)
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.001)

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


def inline_connector(path: str, *, commits_off_loop: bool = False) -> Callable[[], Any]:
    """An `async_creator` for create_async_engine: connections to `path` with no busy timeout.
    commits_off_loop: their COMMITs run in a worker thread (the group-commit writer's connection)."""

    async def create() -> InlineConnection:
        connector = partial(sqlite3.connect, path, timeout=0, isolation_level=None, check_same_thread=False)
        connection = await InlineConnection(connector, 64)
        connection.commits_off_loop = commits_off_loop
        return connection

    return create
