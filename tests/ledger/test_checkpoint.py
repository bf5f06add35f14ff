"""WAL checkpoints run in the background, not inside a call's commit."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import checkpoint, db
from ledger.checkpoint import AUTOCHECKPOINT_PAGES, background_checkpoints


async def _write_rows(engine: AsyncEngine, rows: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)"))
    for i in range(rows):
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": "x" * 500 + str(i)})


async def test_request_connections_leave_checkpoints_to_the_background(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    try:
        async with engine.connect() as conn:
            pages = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()
    finally:
        await engine.dispose()
    assert pages == AUTOCHECKPOINT_PAGES


async def test_background_checkpoints_copy_the_wal_into_the_database(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")  # open throughout: closing it would checkpoint
    try:
        await _write_rows(engine, 50)
        async with background_checkpoints(str(path), interval=0.02) as checkpointer:
            for _ in range(100):  # bounded wait: at most 2 s
                await asyncio.sleep(0.02)
                if checkpointer.last is not None:
                    break
            busy, frames, copied = checkpointer.last or (1, 0, 0)
        # The rows are in the database file itself (immutable=1 reads the file, ignoring the WAL).
        with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as plain:
            in_file = plain.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        await engine.dispose()
    assert busy == 0 and frames > 0 and copied == frames
    assert in_file == 50


async def test_checkpoints_stop_with_the_runtime(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with background_checkpoints(str(path), interval=0.01) as checkpointer:
        await asyncio.sleep(0.05)
    assert checkpointer.checkpoint() is None  # closed: no connection is opened again


def _wal_salt(path: Path) -> bytes:
    """The salt in the WAL's header: a new one each time the WAL starts over from its beginning."""
    return Path(f"{path}-wal").read_bytes()[16:24]


async def _write_units(engine: AsyncEngine, until: asyncio.Event) -> int:
    """Units of work (through group commit) one after the other until `until` is set; returns how many."""
    sessions = db.session_factory(engine)
    written = 0
    while not until.is_set():
        async with db.transaction(sessions) as session:
            await session.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": "x" * 3000 + str(written)})
        written += 1
    return written


async def _steady_writes_until(engine: AsyncEngine, done: Callable[[], bool], seconds: float = 10.0) -> int:
    stop = asyncio.Event()
    writer = asyncio.create_task(_write_units(engine, stop))
    try:
        for _ in range(int(seconds / 0.01)):  # bounded
            await asyncio.sleep(0.01)
            if done():
                break
    finally:
        stop.set()
    return await writer


@pytest.fixture
def small_wal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart after a few frames and a small file, so that a test's writes go round the WAL several times."""
    monkeypatch.setattr(checkpoint, "RESTART_FRAMES", 20)
    monkeypatch.setattr(checkpoint, "MAX_PREALLOCATE_BYTES", 1024 * 1024)


@pytest.mark.usefixtures("small_wal")
async def test_the_wal_starts_over_from_its_beginning_under_steady_writes(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await _write_rows(engine, 1)
        first_salt = _wal_salt(path)
        async with background_checkpoints(str(path), interval=0.02) as checkpointer:
            await _steady_writes_until(engine, lambda: checkpointer.restarts >= 3)
        restarted_salt = _wal_salt(path)
    finally:
        await engine.dispose()
    # Without the restarts the writes never leave a moment for SQLite to start the WAL over by itself.
    assert checkpointer.restarts >= 3
    assert restarted_salt != first_salt


async def _cycles(engine: AsyncEngine, checkpointer: checkpoint.Checkpointer, cycles: int) -> None:
    """`cycles` times: 5 units of work, then wait (bounded) for the checkpointer to restart the WAL."""
    sessions = db.session_factory(engine)
    for cycle in range(cycles):
        restarts = checkpointer.restarts
        for i in range(5):
            async with db.transaction(sessions) as session:
                await session.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": f"cycle {cycle} unit {i}"})
        for _ in range(500):  # at most 5 s
            if checkpointer.restarts > restarts:
                break
            await asyncio.sleep(0.01)
        assert checkpointer.restarts > restarts


@pytest.mark.usefixtures("small_wal")
async def test_once_grown_the_wal_file_is_overwritten_not_appended_to(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "RESTART_FRAMES", 3)
    path = tmp_path / "e.db"
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await _write_rows(engine, 1)
        async with background_checkpoints(str(path), interval=0.02) as checkpointer:
            await _cycles(engine, checkpointer, 3)  # the file grows to twice the largest WAL seen
            grown = Path(f"{path}-wal").stat().st_size
            await _cycles(engine, checkpointer, 5)  # as much WAL each cycle: written over the same blocks
            later = Path(f"{path}-wal").stat().st_size
    finally:
        await engine.dispose()
    assert checkpointer.preallocated > 0
    assert grown >= 2 * checkpointer.largest_wal * (4096 + 24)  # room ahead of the longest WAL written
    assert later == grown


@pytest.mark.usefixtures("small_wal")
async def test_a_crash_after_commits_into_the_grown_wal_loses_no_committed_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "RESTART_FRAMES", 3)
    path = tmp_path / "f.db"
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    copy = tmp_path / "crashed"
    copy.mkdir()
    try:
        await _write_rows(engine, 1)
        async with background_checkpoints(str(path), interval=0.02) as checkpointer:
            await _cycles(engine, checkpointer, 3)
            assert checkpointer.preallocated > 0
            # Stop the checkpoints, write a few more units, then take the files as a power cut would leave
            # them: the WAL with its frames followed by the zeros the checkpointer wrote (no -shm: rebuilt).
            checkpointer.close()
            sessions = db.session_factory(engine)
            for i in range(5):
                async with db.transaction(sessions) as session:
                    await session.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": f"last {i}"})
            with sqlite3.connect(path) as live:
                committed = live.execute("SELECT count(*) FROM t").fetchone()[0]
            shutil.copy(path, copy / "f.db")
            shutil.copy(f"{path}-wal", copy / "f.db-wal")
    finally:
        await engine.dispose()
    wal = (copy / "f.db-wal").read_bytes()
    page_size = struct.unpack(">I", wal[8:12])[0]
    assert wal[-(page_size + 24):] == bytes(page_size + 24)  # the copy ends in zeros past the last frame
    with sqlite3.connect(copy / "f.db") as recovered:
        assert recovered.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert recovered.execute("SELECT count(*) FROM t").fetchone()[0] == committed
        assert recovered.execute("SELECT count(*) FROM t WHERE v LIKE 'last %'").fetchone()[0] == 5


async def test_a_round_grows_the_wal_file_by_one_step_at_most(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "PREALLOCATE_STEP_BYTES", 64 * 1024)
    path = tmp_path / "g.db"
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    checkpointer = checkpoint.Checkpointer(str(path))
    try:
        await _write_rows(engine, 20)
        size = Path(f"{path}-wal").stat().st_size
        checkpointer.largest_wal = 1_000  # wants ~8 MB: far more than one step
        added = checkpointer.keep_wal(restart=False)
        checkpointer.sync_wal()
        grown = Path(f"{path}-wal").stat().st_size
    finally:
        checkpointer.close()
        await engine.dispose()
    # Units of this process wait while the zeros are written: one step of copying, not the whole growth.
    assert added == 64 * 1024
    assert grown == size + 64 * 1024
