"""SQLite WAL checkpoints off the request path, and a WAL that is overwritten rather than appended to.

By default SQLite checkpoints inside whichever commit makes the WAL pass 1,000 pages: that commit copies the
pages into the database file and syncs it, on the event loop's thread (ledger/sqlite_inline.py), so about one
call in a hundred paid several milliseconds for everybody's writes. Instead, the request connections only
checkpoint as a safety net (AUTOCHECKPOINT_PAGES), and a worker thread with its own connection runs a PASSIVE
checkpoint every CHECKPOINT_INTERVAL seconds. sqlite3 releases the GIL while SQLite works, so the copy runs on
another core; PASSIVE never blocks writers or readers, it copies what it can.

The WAL's restart. SQLite starts writing a WAL from its beginning again only when a writer begins after a
checkpoint that copied every frame. Under steady load a COMMIT always lands during the checkpoint's copy and
sync, so the WAL never restarted: it grew to the safety net, where one call paid a checkpoint of up to 10,000
pages, and every COMMIT appended to the file, so its sync also had to commit the file's new size to the file
system's journal (measured on this disk, 17 pages: 0.30 ms appended against 0.17 ms overwritten when idle;
7.3 against 2.8 ms while other processes kept the disk busy). So once the WAL holds RESTART_FRAMES, a round
follows its PASSIVE copy with a RESTART checkpoint, which needs the write lock to copy the few frames written
since and sync the database file: it runs while this process's group-commit writer stands aside
(group_commit.GroupCommitWriter.alone: its units queue in memory meanwhile, none polls for the lock). It never
waits (timeout=0): another process's writer or a reader of old frames makes it give up until the next round.

The WAL file is kept large enough to be overwritten in place (SQLite never shrinks it: no journal_size_limit, no
TRUNCATE, but deletes it when its last connection closes, so each start grows it again). A round that finds it
smaller than twice the largest WAL seen (at most MAX_PREALLOCATE_BYTES) extends it by up to PREALLOCATE_STEP_BYTES
of written zeros (written, not a sparse or fallocated hole: a sync of unwritten extents commits metadata as an
append does), holding the write lock meanwhile so that no COMMIT writes past the file's end at the same time;
the file is synced after the lock is free again (a COMMIT's own sync covers the size of the file it wrote to,
so nothing depends on that sync but the cost of the next ones). SQLite ignores whatever follows its last valid
frame (each frame carries the WAL's salt and a checksum) and overwrites it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import AsyncIterator

from sqlalchemy.exc import SQLAlchemyError

from ledger import group_commit
from tradewarden.log import get_logger

log = get_logger("tradewarden.checkpoint")

CHECKPOINT_INTERVAL = 0.25  # seconds; one stdio agent writes ~10,000 WAL frames a second (17 a proposal)
# A round restarts the WAL once it holds this many frames (~8 MB of 4 KiB pages). Each restart holds this
# process's units back for about a millisecond (the copy of the last frames and the database file's sync).
RESTART_FRAMES = 2_000
MAX_PREALLOCATE_BYTES = 32 * 1024 * 1024
# Zeros written in one round, while this process's units wait: about a millisecond of copying to the page cache.
PREALLOCATE_STEP_BYTES = 4 * 1024 * 1024
_WAL_HEADER_BYTES, _FRAME_HEADER_BYTES = 32, 24
# Request connections still checkpoint when the WAL passes this many pages (~40 MB): a bound on the WAL if
# the background checkpoints cannot keep up or are not running (a one-shot command).
AUTOCHECKPOINT_PAGES = 10_000


class Checkpointer:
    """Checkpoints one SQLite database in the background while the runtime is open."""

    def __init__(self, path: str, interval: float = CHECKPOINT_INTERVAL) -> None:
        self.path = path
        self.wal = path + "-wal"
        self.interval = interval
        self._connection: sqlite3.Connection | None = None
        self._page_size = 0
        self._lock = threading.Lock()  # one checkpoint at a time, and none after close
        self._closed = False
        self.last: tuple[int, int, int] | None = None  # (busy, frames in the WAL, frames copied)
        self.largest_wal = 0  # the most frames a round found in the WAL
        self.restarts = 0  # RESTART checkpoints that succeeded (the next COMMIT writes from the WAL's start)
        self.preallocated = 0  # bytes of zeros added to the WAL file

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.round()
            # e.g. the file went away, or this process's writer stayed busy beyond its bound: the next round
            # tries again, and the safety net bounds the WAL meanwhile
            except (sqlite3.Error, OSError, SQLAlchemyError) as error:
                log.warning("wal_checkpoint_failed", error=str(error))

    async def round(self) -> None:
        """A PASSIVE copy without any lock; then, if the WAL is long or its file short, its restart and the
        file's growth, with this process's writer aside."""
        last = await asyncio.to_thread(self.checkpoint)
        if last is None:  # closed
            return
        self.largest_wal = max(self.largest_wal, last[1])
        restart = last[1] >= RESTART_FRAMES
        if not restart and self._wal_bytes() >= self._wanted_bytes():
            return
        writer = group_commit.writer_at(self.path)
        if writer is None:  # no unit of work ran on this loop: nothing to stand aside
            grown = await asyncio.to_thread(self.keep_wal, restart)
        else:
            async with writer.alone():
                grown = await asyncio.to_thread(self.keep_wal, restart)
        if grown:
            await asyncio.to_thread(self.sync_wal)

    def checkpoint(self) -> tuple[int, int, int] | None:
        """One PASSIVE checkpoint: (busy, frames in the WAL, frames copied), or None once closed."""
        with self._lock:
            return self._checkpoint("PASSIVE")

    def keep_wal(self, restart: bool) -> int:
        """RESTART the WAL (if `restart`), then grow its file towards the wanted size (see the module's text).
        Returns the bytes added (to be synced: `sync_wal`)."""
        with self._lock:
            if restart:
                last = self._checkpoint("RESTART")
                if last is not None and last[0] == 0:
                    self.restarts += 1
            return self._preallocate()

    def sync_wal(self) -> None:
        """Sync the WAL file's new blocks and size, without SQLite's write lock: COMMITs may go on meanwhile."""
        with self._lock:
            if self._closed:
                return
            descriptor = os.open(self.wal, os.O_WRONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def _checkpoint(self, mode: str) -> tuple[int, int, int] | None:
        connection = self._connect()
        if connection is None:
            return None
        busy, frames, copied = connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        self.last = (busy, frames, copied)
        return self.last

    def _wanted_bytes(self) -> int:
        frame = (self._page_size or 4096) + _FRAME_HEADER_BYTES
        return min(MAX_PREALLOCATE_BYTES, _WAL_HEADER_BYTES + 2 * self.largest_wal * frame)

    def _wal_bytes(self) -> int:
        try:
            return os.stat(self.wal).st_size
        except FileNotFoundError:
            return 0

    def _preallocate(self) -> int:
        wanted = self._wanted_bytes()
        connection = self._connect()
        if connection is None or self._wal_bytes() >= wanted:
            return 0
        try:
            connection.execute("BEGIN IMMEDIATE")  # no COMMIT of any process writes to the WAL meanwhile
        except sqlite3.OperationalError:  # another process writes: the next round tries again
            return 0
        try:
            # There: this connection has the database open in WAL mode. Opening and closing the file here is safe
            # for SQLite's locks: a close drops this process's POSIX locks on that file, and SQLite takes its WAL
            # locks on the -shm file and the database, never on the -wal file.
            descriptor = os.open(self.wal, os.O_WRONLY)
            try:
                size = os.fstat(descriptor).st_size
                end = min(wanted, size + PREALLOCATE_STEP_BYTES)
                chunk = bytes(1024 * 1024)
                for offset in range(size, end, len(chunk)):
                    os.pwrite(descriptor, chunk[:end - offset], offset)
            finally:
                os.close(descriptor)
        finally:
            connection.execute("ROLLBACK")
        added = max(0, end - size)
        self.preallocated += added
        return added

    def _connect(self) -> sqlite3.Connection | None:
        """The checkpointer's connection (None once closed). Called with the lock held."""
        if self._closed:
            return None
        if self._connection is None:
            self._connection = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            self._connection.execute("PRAGMA synchronous=FULL")  # like every ledger connection (ledger/db.py)
            self._page_size = self._connection.execute("PRAGMA page_size").fetchone()[0]
        return self._connection

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
