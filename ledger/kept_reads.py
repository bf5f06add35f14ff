"""Pooled reads on a SQLite file keep their connection for the next read, for a moment.

A pooled read (`ledger.db.read()`) is usually one small statement (~20 µs on SQLite), but taking a connection
from the pool and giving it back costs several times that: SQLAlchemy's AsyncConnection start and close, two
hops through its greenlet, the pool's reset. So on a SQLite file a read that ended cleanly ends its transaction
(its WAL snapshot: the next read sees every commit since) and leaves the connection checked out for the next
read, up to MAX_KEPT at once; they go back to the pool once no read ended for IDLE_RELEASE_SECONDS, and are
closed when their engine is disposed of (so nothing is left checked out when a command's loop ends). A read that
failed, or a connection invalidated, goes back to the pool as before. PostgreSQL, in-memory and read-only SQLite
engines are left as they were. MAX_KEPT = 0 turns the keeping off (every read opens its connection again).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util.concurrency import in_greenlet

IDLE_RELEASE_SECONDS = 0.01  # as the group-commit writer's connection (ledger/group_commit.py)
MAX_KEPT = 2  # connections kept between reads: reads rarely overlap; more than this go back to the pool


def close_at_dispose(connection: AsyncConnection) -> None:
    """Close a connection kept checked out (a kept read's, the group-commit writer's) while its engine is being
    disposed of, in SQLAlchemy's greenlet: invalidated, so the disposed pool does not take it back, and its
    driver's connection closed now."""
    sync = connection.sync_connection
    if sync is not None and in_greenlet():
        sync.invalidate()
        sync.close()


class KeptReads:
    """The connections kept between the pooled reads of one engine."""

    def __init__(self) -> None:
        self._idle: list[AsyncConnection] = []
        self._last_end = 0.0
        self._check: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def take(self) -> AsyncConnection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.invalidated and connection.sync_connection is not None:
                return connection
        return None

    async def give_back(self, connection: AsyncConnection) -> None:
        """A read ended cleanly: end its transaction and keep the connection (or close it when enough are kept)."""
        sync = connection.sync_connection
        if sync is None or connection.invalidated or len(self._idle) >= MAX_KEPT:
            await connection.close()
            return
        if sync._transaction is not None:
            await connection.rollback()  # the read's snapshot ends: the next read sees every commit since
        self._idle.append(connection)
        self._last_end = time.monotonic()
        if self._check is None:
            self._check = asyncio.get_running_loop().call_later(IDLE_RELEASE_SECONDS, self._check_idle)

    def _check_idle(self) -> None:
        self._check = None
        if not self._idle:
            return
        idle_for = time.monotonic() - self._last_end
        if idle_for < IDLE_RELEASE_SECONDS:
            self._check = asyncio.get_running_loop().call_later(IDLE_RELEASE_SECONDS - idle_for, self._check_idle)
            return
        kept, self._idle = self._idle, []
        for connection in kept:
            closing = asyncio.get_running_loop().create_task(connection.close(), name="tradewarden-read-release")
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def disposed(self) -> None:
        """The engine is being disposed of (in SQLAlchemy's greenlet): close the kept connections now."""
        kept, self._idle = self._idle, []
        for connection in kept:
            close_at_dispose(connection)


_kept: weakref.WeakKeyDictionary[Any, KeptReads] = weakref.WeakKeyDictionary()  # sync engine → its kept reads


def attach(engine: AsyncEngine) -> None:
    """Pooled reads on `engine` (a SQLite file, read-write) keep their connections between reads."""
    kept = _kept[engine.sync_engine] = KeptReads()
    event.listen(engine.sync_engine, "engine_disposed", lambda _engine: kept.disposed())


def of(engine: AsyncEngine) -> KeptReads | None:
    return _kept.get(engine.sync_engine)
