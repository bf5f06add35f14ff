"""aiosqlite's interface, run on the event loop's own thread.

aiosqlite hands every call to a worker thread and waits for the answer: ~80 µs per round trip, and a
statement takes three or four of them. SQLite itself answers in microseconds, so for an embedded database
the hops cost more than the work. This connection runs each call inline instead.

Waiting for another writer must never block the event loop (the writer may be a task on this very loop),
so the connection has no busy timeout: a locked database raises at once, and the call is retried after an
asynchronous sleep — the loop keeps serving while it waits, up to LOCK_WAIT_SECONDS.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Generator
from functools import partial
from typing import Any

import aiosqlite

LOCK_WAIT_SECONDS = 5.0  # then LEDGER_UNAVAILABLE: a call never waits long on another writer


def _locked(error: sqlite3.OperationalError) -> bool:
    text = str(error)
    return "locked" in text or "busy" in text


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite.Connection without the worker thread."""

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
                now = time.monotonic()
                deadline = deadline or now + LOCK_WAIT_SECONDS
                if now >= deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.02)

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
