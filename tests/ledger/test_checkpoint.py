"""WAL checkpoints run in the background, not inside a call's commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import db
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
