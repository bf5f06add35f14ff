"""PostgreSQL: the hot statements of a unit of work run on asyncpg directly (ledger/fast_execute.py), with the
answers, transaction and errors SQLAlchemy gives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger import db, fast_execute
from ledger.usage import _COUNTS
from policies.audit import _ADVANCE_HEAD, _INSERT_EVENT
from policies.failures import ledger_failure
from policies.gate import _AGENT_AND_HOLDINGS, _LOCK_GLOBAL_STATE, _STATE_ROWS
from tests.ledger.test_fast_execute import T0, audit_row, seed_ledger, typed

pytestmark = pytest.mark.postgres


@pytest.fixture
async def sessions(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    monkeypatch.setattr(db, "LOCK_WAIT_SECONDS", 0.5)  # the lock wait bound, short for the test
    engine = db.create_engine(pg_url)
    await db.upgrade(engine)
    factory = db.session_factory(engine)
    await seed_ledger(factory)
    yield factory
    await engine.dispose()


async def on_asyncpg(session: AsyncSession, statement: Any, params: Any) -> Any:
    """The statement run by the asyncpg path of the current unit (its first sight is left to SQLAlchemy)."""
    unit = fast_execute.current_unit.get()
    assert unit is not None and unit.current(session) and unit.asyncpg is not None
    result = await fast_execute.run_in_unit(unit, statement, params)
    if result is None:
        result = await fast_execute.run_in_unit(unit, statement, params)
    assert result is not None, "the statement was left to SQLAlchemy"
    return result


@pytest.mark.parametrize(("statement", "params"), [
    (_AGENT_AND_HOLDINGS, {"agent_id": "a1"}),
    (_STATE_ROWS, {"agent_id": "a1"}),
    (_COUNTS, {"agent_id": "a1", "rolling_since": T0, "rate_since": T0, "day_start": T0, "symbol": "AAPL"}),
])
async def test_rows_come_back_as_sqlalchemy_returns_them(sessions: async_sessionmaker[AsyncSession], statement: Any,
                                                         params: dict[str, Any]) -> None:
    async with db.transaction(sessions) as session:
        fast_rows = (await on_asyncpg(session, statement, params)).all()
        slow = await (await session.connection()).execute(statement, params)
        slow_rows = slow.all()
    assert fast_rows and typed(fast_rows) == typed(slow_rows)
    assert [row._fields for row in fast_rows] == [row._fields for row in slow_rows]


async def test_writes_commit_with_their_unit_and_roll_back_with_it(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.transaction(sessions) as session:
        assert (await on_asyncpg(session, _INSERT_EVENT, audit_row(1))).rowcount == 1
        moved = await on_asyncpg(session, _ADVANCE_HEAD, {"old_seq": 0, "old_hash": "0" * 64, "new_seq": 1,
                                                          "new_hash": "1" * 64})
        assert moved.rowcount == 1
    with pytest.raises(ValueError, match="the unit fails"):
        async with db.transaction(sessions) as session:
            await on_asyncpg(session, _INSERT_EVENT, audit_row(2))
            raise ValueError("the unit fails")
    async with sessions() as session:
        seqs = (await session.execute(text("SELECT seq FROM audit_events ORDER BY seq"))).scalars().all()
        head = (await session.execute(text("SELECT seq FROM audit_head"))).scalar_one()
    assert seqs == [1] and head == 1


async def test_a_duplicate_is_an_integrity_error(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.transaction(sessions) as session:
        await on_asyncpg(session, _INSERT_EVENT, audit_row(10))
    with pytest.raises(IntegrityError) as raised:
        async with db.transaction(sessions) as session:
            await on_asyncpg(session, _INSERT_EVENT, audit_row(11) | {"event_id": "e10"})
    assert ledger_failure(raised.value) is None  # a bug to report, not an unavailable ledger


async def test_a_locked_row_fails_within_the_bound_as_an_unavailable_ledger(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    holding, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with db.transaction(sessions) as session:
            await db.execute(session, _LOCK_GLOBAL_STATE)
            holding.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await holding.wait()
    try:
        started = time.monotonic()
        with pytest.raises(DBAPIError) as raised:
            async with db.transaction(sessions) as session:
                await on_asyncpg(session, _LOCK_GLOBAL_STATE, None)
        waited = time.monotonic() - started
        with pytest.raises(DBAPIError) as through_sqlalchemy:
            async with db.transaction(sessions) as session:
                await session.execute(_LOCK_GLOBAL_STATE)
    finally:
        release.set()
        await task
    assert 0.4 <= waited < 3.0
    assert type(raised.value) is type(through_sqlalchemy.value)
    assert type(raised.value.orig) is type(through_sqlalchemy.value.orig)
    assert ledger_failure(raised.value) is not None  # LEDGER_UNAVAILABLE to an agent


async def test_a_pooled_read_runs_on_asyncpg_and_ends_with_its_connection(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.read(sessions) as connection:
        result = await fast_execute.run(connection, _STATE_ROWS, {"agent_id": "a1"})
        if result is None:  # its first sight is left to SQLAlchemy (and runs nothing)
            result = await fast_execute.run(connection, _STATE_ROWS, {"agent_id": "a1"})
        assert result is not None
        fast_rows = result.all()
        assert connection.in_transaction()
        slow_rows = (await connection.execute(_STATE_ROWS, {"agent_id": "a1"})).all()
        adapter = (await connection.get_raw_connection()).dbapi_connection
    assert fast_rows and typed(fast_rows) == typed(slow_rows)
    assert adapter._transaction is None  # rolled back when the connection went back to the pool
