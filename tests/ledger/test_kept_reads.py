"""Pooled reads on a SQLite file keep their connection for the next read, for a moment."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from ledger import db, kept_reads
from tests.ledger.loop_endings import ENDINGS, end_loop_after


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.create_engine(db_url)
    factory = db.session_factory(engine)
    async with db.transaction(factory) as session:
        await session.execute(text("CREATE TABLE notes (unit TEXT NOT NULL)"))
    yield factory
    await engine.dispose()


def driver_of(connection: AsyncConnection) -> sqlite3.Connection:
    sync = connection.sync_connection
    assert sync is not None
    raw: Any = sync.connection.driver_connection
    return raw.sqlite  # type: ignore[no-any-return]


def checked_out(sessions: async_sessionmaker[AsyncSession]) -> int:
    pool: Any = sessions.kw["bind"].sync_engine.pool
    return int(pool.checkedout())


async def notes(sessions: async_sessionmaker[AsyncSession]) -> tuple[list[str], sqlite3.Connection]:
    async with db.read(sessions) as connection:
        rows = (await connection.execute(text("SELECT unit FROM notes ORDER BY unit"))).all()
        return [row[0] for row in rows], driver_of(connection)


async def write_note(sessions: async_sessionmaker[AsyncSession], unit: str) -> None:
    async with db.transaction(sessions) as session:
        await session.execute(text("INSERT INTO notes (unit) VALUES (:unit)"), {"unit": unit})


async def test_the_next_read_runs_on_the_kept_connection_and_sees_what_committed_since(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    first, kept = await notes(sessions)
    assert first == []
    assert not kept.in_transaction  # its snapshot ended with the read
    await write_note(sessions, "a")
    second, again = await notes(sessions)
    assert again is kept
    assert second == ["a"]


async def test_kept_read_connections_go_back_to_the_pool_once_reads_stop(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    await asyncio.sleep(kept_reads.IDLE_RELEASE_SECONDS * 3)  # the writer's connection too
    await notes(sessions)
    assert checked_out(sessions) >= 1
    deadline = time.monotonic() + 5
    while checked_out(sessions) and time.monotonic() < deadline:
        await asyncio.sleep(kept_reads.IDLE_RELEASE_SECONDS)
    assert checked_out(sessions) == 0


async def test_overlapping_reads_keep_at_most_max_kept_connections(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    await asyncio.sleep(kept_reads.IDLE_RELEASE_SECONDS * 3)  # the writer's connection back in the pool
    entered = asyncio.Event()
    inside = 0

    async def overlapping() -> None:
        nonlocal inside
        async with db.read(sessions) as connection:
            await connection.execute(text("SELECT 1"))
            inside += 1
            if inside == 5:
                entered.set()
            await entered.wait()

    await asyncio.gather(*(overlapping() for _ in range(5)))
    assert checked_out(sessions) == kept_reads.MAX_KEPT


async def test_a_failed_read_gives_its_connection_back_to_the_pool(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    _, kept = await notes(sessions)
    with pytest.raises(ValueError, match="the read fails"):
        async with db.read(sessions) as connection:
            assert driver_of(connection) is kept
            await connection.execute(text("SELECT 1"))
            raise ValueError("the read fails")
    _, after = await notes(sessions)
    assert not after.in_transaction


async def test_disposing_of_the_engine_closes_the_kept_read_connection(db_url: str) -> None:
    engine = db.create_engine(db_url)
    sessions = db.session_factory(engine)
    async with db.transaction(sessions) as session:
        await session.execute(text("CREATE TABLE notes (unit TEXT NOT NULL)"))
    _, kept = await notes(sessions)
    await engine.dispose()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        kept.execute("SELECT 1")


async def test_in_memory_sqlite_keeps_no_read_connection() -> None:
    engine = db.create_engine("sqlite+aiosqlite://")
    try:
        assert kept_reads.of(engine) is None
    finally:
        await engine.dispose()


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_command_that_reads_then_ends_its_loop_leaves_stderr_clean(tmp_path: Path, ending: str) -> None:
    done = end_loop_after(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", """
        async with db.transaction(sessions) as session:
            await session.execute(text("CREATE TABLE notes (unit TEXT)"))
        async with db.read(sessions) as connection:
            await connection.execute(text("SELECT count(*) FROM notes"))
    """, idle_seconds="kept_reads.IDLE_RELEASE_SECONDS", ending=ending)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""
