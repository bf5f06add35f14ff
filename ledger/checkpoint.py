"""SQLite WAL checkpoints off the request path.

By default SQLite checkpoints inside whichever commit makes the WAL pass 1,000 pages: that commit copies the
pages into the database file and syncs it, on the event loop's thread (ledger/sqlite_inline.py), so about one
call in a hundred paid several milliseconds for everybody's writes. Instead, the request connections only
checkpoint as a safety net (AUTOCHECKPOINT_PAGES), and a worker thread with its own connection runs a PASSIVE
checkpoint every CHECKPOINT_INTERVAL seconds. sqlite3 releases the GIL while SQLite works, so the copy runs on
another core; PASSIVE never blocks writers or readers, it copies what it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator

import structlog

log = structlog.get_logger("tradewarden.checkpoint")

CHECKPOINT_INTERVAL = 0.5  # seconds
# Request connections still checkpoint when the WAL passes this many pages (~40 MB): a bound on the WAL if
# the background checkpoints cannot keep up or are not running (a one-shot command).
AUTOCHECKPOINT_PAGES = 10_000


class Checkpointer:
    """Checkpoints one SQLite database in the background while the runtime is open."""

    def __init__(self, path: str, interval: float = CHECKPOINT_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one checkpoint at a time, and none after close
        self._closed = False
        self.last: tuple[int, int, int] | None = None  # (busy, frames in the WAL, frames copied)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.checkpoint)
            except sqlite3.Error as error:  # e.g. the file went away; the safety net still bounds the WAL
                log.warning("wal_checkpoint_failed", error=str(error))

    def checkpoint(self) -> tuple[int, int, int] | None:
        """One PASSIVE checkpoint: (busy, frames in the WAL, frames copied), or None once closed."""
        with self._lock:
            if self._closed:
                return None
            if self._connection is None:
                self._connection = sqlite3.connect(self.path, timeout=0, isolation_level=None,
                                                   check_same_thread=False)
                self._connection.execute("PRAGMA synchronous=FULL")  # like every ledger connection (ledger/db.py)
            busy, frames, copied = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.last = (busy, frames, copied)
            return self.last

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None


@contextlib.asynccontextmanager
async def background_checkpoints(path: str, interval: float = CHECKPOINT_INTERVAL) -> AsyncIterator[Checkpointer]:
    """Checkpoints of the database at `path` while the block runs."""
    checkpointer = Checkpointer(path, interval)
    task = asyncio.create_task(checkpointer.run(), name="tradewarden-wal-checkpoints")
    try:
        yield checkpointer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(checkpointer.close)
