"""The hot statements on SQLite's raw connection (ledger/fast_execute.py): the same answers and errors as SQLAlchemy."""

from __future__ import annotations

import asyncio
import gc
import importlib
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import String, TypeDecorator, bindparam, insert, select, text, type_coerce
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from ledger import db, fast_execute, group_commit, sqlite_inline
from ledger.models import GLOBAL_SCOPE, AgentPermissions, AgentPosition, AuditEvent, AuditHead, TradingState
from ledger.usage import _COUNTS
from policies.audit import _ADVANCE_HEAD, _INSERT_EVENT
from policies.failures import ledger_failure
from policies.gate import _AGENT_AND_HOLDINGS, _INSERT_PROPOSAL, _STATE_ROWS

T0 = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
# IN lists: one fixed in the statement (expanded once), one bound per call (left to SQLAlchemy).
STATES_IN_FIXED_LIST = select(TradingState.scope, TradingState.changed_at).where(
    TradingState.state.in_(["active", "halted"]), TradingState.changed_by == bindparam("by"))
# A value fixed in the statement next to one bound per call.
STATES_WITH_A_FIXED_VALUE = select(TradingState.scope, TradingState.state).where(
    TradingState.state == "active", TradingState.changed_by == bindparam("by"))
STATES_IN_BOUND_LIST = select(TradingState.scope).where(TradingState.state.in_(bindparam("states", expanding=True)))


async def seed_ledger(factory: async_sessionmaker[AsyncSession]) -> None:
    """The rows the hot statements read, the same on SQLite and PostgreSQL (test_fast_execute_postgres.py)."""
    async with db.transaction(factory) as session:
        await session.execute(insert(AgentPermissions).values(
            agent_id="a1", max_trade_size=Decimal("1000.50"), max_position_size=Decimal(5000), max_daily_trades=7,
            allowed_symbols=["AAPL", "MSFT"], allowed_strategies=[], risk_level="low", approval="auto",
            auto_approve_max_notional=Decimal("250.25"), limits={"rolling": {"seconds": 60}}, capital=Decimal(10000),
            enabled=True, source="config", token_hash=None, token_rotated_at=None, created_at=T0, updated_at=T0,
            operator_overrides={}))
        await session.execute(insert(AgentPosition).values(
            agent_id="a1", symbol="AAPL", qty=Decimal("3.5"), avg_entry_price=Decimal("101.01"),
            realized_pl=Decimal(0), updated_at=T0))
        await session.execute(insert(TradingState).values(
            scope=GLOBAL_SCOPE, state="active", reason=None, changed_by="system", changed_at=T0))
        await db.insert_if_absent(session, AuditHead, {"id": 1, "seq": 0, "hash": "0" * 64})


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    factory = db.session_factory(engine)
    await seed_ledger(factory)
    yield factory
    await engine.dispose()


def proposal(proposal_id: str) -> dict[str, Any]:
    return {"id": proposal_id, "agent_id": "a1", "symbol": "AAPL", "side": "buy", "qty": Decimal("1.25"),
            "notional": None, "order_type": "limit", "limit_price": Decimal("99.99"), "stop_price": None,
            "time_in_force": "day", "extended_hours": False, "strategy": None, "reasoning": "r",
            "confidence": 0.5, "status": "pending", "order_hash": "h" * 64, "reference_price": Decimal(100),
            "estimated_notional": Decimal("124.99"), "violations": [{"code": "X"}], "approval_mode": "auto",
            "trading_mode": "paper", "created_at": T0, "updated_at": T0, "expires_at": T0 + timedelta(minutes=5)}


def audit_row(seq: int) -> dict[str, Any]:
    return {"seq": seq, "event_id": f"e{seq}", "ts": T0, "actor": "system", "agent_id": None, "kind": "k",
            "tool": None, "payload": "{}", "prev_hash": "0" * 64, "hash": f"{seq:064d}"}


async def fast(connection: AsyncConnection, statement: Any, params: Any = None) -> Any:
    """The fast path's answer (the first sight of a statement is left to SQLAlchemy, the second is fast)."""
    result = await fast_execute.run(connection, statement, params)  # runs nothing when it returns None
    if result is None:
        result = await fast_execute.run(connection, statement, params)
    assert result is not None, "the statement was left to SQLAlchemy"
    return result


def typed(rows: Sequence[Any]) -> list[list[tuple[Any, type]]]:
    return [[(value, type(value)) for value in row] for row in rows]


async def same_rows(session: AsyncSession, statement: Any, params: Mapping[str, Any]) -> list[Any]:
    connection = await session.connection()
    fast_rows = (await fast(connection, statement, params)).all()
    slow = await connection.execute(statement, params)
    slow_rows = slow.all()
    assert typed(fast_rows) == typed(slow_rows)
    assert [row._fields for row in fast_rows] == [row._fields for row in slow_rows]
    return fast_rows


async def test_a_join_returns_what_sqlalchemy_returns(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.transaction(sessions) as session:
        rows = await same_rows(session, _AGENT_AND_HOLDINGS, {"agent_id": "a1"})
    assert rows[0].held_symbol == "AAPL" and rows[0].max_trade_size == Decimal("1000.50")
    assert rows[0].allowed_symbols == ["AAPL", "MSFT"] and rows[0].enabled is True
    assert rows[0].created_at == T0 and rows[0].token_hash is None


async def test_state_rows_come_back_with_timezone_aware_datetimes(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.transaction(sessions) as session:
        rows = await same_rows(session, _STATE_ROWS, {"agent_id": "a1"})
    assert [(row.scope, row.changed_at.tzinfo is not None) for row in rows] == [(GLOBAL_SCOPE, True)]


async def test_an_inserted_proposal_reads_back_as_sqlalchemy_wrote_it(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    from ledger.models import TradeProposal

    async with db.transaction(sessions) as session:
        connection = await session.connection()
        await connection.execute(_INSERT_PROPOSAL, proposal("p-slow"))
        assert (await fast(connection, _INSERT_PROPOSAL, proposal("p-fast"))).rowcount == 1
        assert (await fast_execute.run(connection, _INSERT_PROPOSAL, proposal("p-fast-2"))) is not None
    query = select(TradeProposal.__table__)
    async with sessions() as session:
        rows = {row.id: row for row in (await session.execute(query)).all()}
    assert set(rows) == {"p-slow", "p-fast", "p-fast-2"}
    assert typed([tuple(rows["p-fast"])[1:]]) == typed([tuple(rows["p-slow"])[1:]])


async def test_usage_counts_match(sessions: async_sessionmaker[AsyncSession]) -> None:
    params = {"agent_id": "a1", "rolling_since": T0 - timedelta(hours=1), "rate_since": T0 - timedelta(minutes=1),
              "day_start": T0 - timedelta(hours=6), "symbol": "AAPL"}
    async with db.transaction(sessions) as session:
        rows = await same_rows(session, _COUNTS, params)
    assert tuple(rows[0]) == (None, 0, 0, 0, False, False)  # and nothing for the rarer reads (ledger/usage.py)


async def test_audit_head_and_events_write_like_sqlalchemy(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.transaction(sessions) as session:
        connection = await session.connection()
        head = (await connection.execute(text("SELECT seq, hash FROM audit_head WHERE id = 1"))).one()
        moved = await fast(connection, _ADVANCE_HEAD, {"old_seq": head.seq, "old_hash": head.hash, "new_seq": 1000,
                                                      "new_hash": "f" * 64})
        assert moved.rowcount == 1
        stale = await fast(connection, _ADVANCE_HEAD, {"old_seq": head.seq, "old_hash": head.hash, "new_seq": 1001,
                                                      "new_hash": "e" * 64})
        assert stale.rowcount == 0
        await fast(connection, _INSERT_EVENT, [audit_row(1000), audit_row(1001)])  # executemany
    async with sessions() as session:
        rows = (await session.execute(select(AuditEvent.seq, AuditEvent.ts).where(AuditEvent.seq >= 1000))).all()
    assert rows == [(1000, T0), (1001, T0)]


async def test_a_duplicate_is_an_integrity_error(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.transaction(sessions) as session:
        connection = await session.connection()
        await fast(connection, _INSERT_EVENT, audit_row(2000))
    with pytest.raises(IntegrityError) as raised:
        async with db.transaction(sessions) as session:
            assert await fast_execute.run(await session.connection(), _INSERT_EVENT,
                                          audit_row(2001) | {"event_id": "e2000"}) is not None
    assert isinstance(raised.value.orig, sqlite3.IntegrityError)


async def test_a_failing_unit_in_a_group_rolls_back_alone(sessions: async_sessionmaker[AsyncSession],
                                                          monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    monkeypatch.setattr(group_commit, "MAX_GROUP_SECONDS", 5.0)
    async with db.transaction(sessions) as session:
        await fast(await session.connection(), _INSERT_EVENT, audit_row(3000))

    async def unit(seq: int, *, fail: bool) -> None:
        async with db.transaction(sessions) as session:
            assert await fast_execute.run(await session.connection(), _INSERT_EVENT, audit_row(seq)) is not None
            await asyncio.sleep(0)  # the other units queue into this group meanwhile
            if fail:
                raise ValueError("this unit fails")

    outcomes = await asyncio.gather(unit(3001, fail=False), unit(3002, fail=True), unit(3003, fail=False),
                                    return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [type(None), ValueError, type(None)]
    with sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///")) as connection:
        seqs = [row[0] for row in connection.execute("SELECT seq FROM audit_events WHERE seq >= 3000 ORDER BY seq")]
    assert seqs == [3000, 3001, 3003]


async def test_a_locked_database_fails_within_the_bound(db_url: str, sessions: async_sessionmaker[AsyncSession],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_inline, "LOCK_WAIT_SECONDS", 0.5)
    engine = db.create_engine(db_url, read_only=True)  # deferred transactions: the UPDATE asks for the lock
    stale = {"old_seq": -1, "old_hash": "", "new_seq": 0, "new_hash": ""}
    other = sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
    try:
        async with engine.connect() as connection:
            await fast(connection, _ADVANCE_HEAD, stale)  # matches no row
            await connection.rollback()
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            started = time.monotonic()
            with pytest.raises(OperationalError) as raised:
                await fast_execute.run(connection, _ADVANCE_HEAD, stale)
            waited = time.monotonic() - started
    finally:
        other.rollback()
        other.close()
        await engine.dispose()
    assert 0.4 <= waited < 3.0
    assert isinstance(raised.value.orig, sqlite3.OperationalError)
    assert "locked" in (ledger_failure(raised.value) or "")


async def test_a_statement_built_per_call_is_left_to_sqlalchemy(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.read(sessions) as connection:
        for _ in range(2):
            assert await fast_execute.run(connection, select(TradingState.scope), None) is None


async def test_a_prebuilt_statement_runs_on_the_driver_from_its_first_run(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    statement = select(TradingState.scope, TradingState.changed_at).where(TradingState.changed_by == bindparam("by"))
    fast_execute.prebuilt(statement)
    async with db.read(sessions) as connection:
        first = await fast_execute.run(connection, statement, {"by": "system"})
        assert first is not None, "the first run was left to SQLAlchemy"
        assert typed(first.all()) == typed((await connection.execute(statement, {"by": "system"})).all())


@pytest.mark.parametrize("module", ["policies.gate", "ledger.usage", "ledger.legs", "policies.audit",
                                    "ledger.accounting", "broker.simulated"])
def test_every_statement_a_module_of_the_call_path_builds_at_import_is_prebuilt(module: str) -> None:
    """Their first run is prepared for the driver: one compile per statement in a process, not two."""
    statements = {name: value for name, value in vars(importlib.import_module(module)).items()
                  if isinstance(value, fast_execute._CORE_STATEMENTS)}
    assert statements
    assert [name for name, value in statements.items() if value not in fast_execute._prebuilt] == []


async def test_an_in_list_fixed_in_the_statement_is_expanded_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.transaction(sessions) as session:
        rows = await same_rows(session, STATES_IN_FIXED_LIST, {"by": "system"})
    assert [tuple(row) for row in rows] == [(GLOBAL_SCOPE, T0)]


async def test_an_in_list_bound_per_call_is_left_to_sqlalchemy(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.read(sessions) as connection:
        for _ in range(2):
            assert await fast_execute.run(connection, STATES_IN_BOUND_LIST, {"states": ["active"]}) is None


async def test_a_value_fixed_in_the_statement_is_bound_with_the_calls_values(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.transaction(sessions) as session:
        rows = await same_rows(session, STATES_WITH_A_FIXED_VALUE, {"by": "system"})
        assert await same_rows(session, STATES_WITH_A_FIXED_VALUE, {"by": "nobody"}) == []
    assert [tuple(row) for row in rows] == [(GLOBAL_SCOPE, "active")]


async def test_a_plain_read_begins_a_transaction_sqlalchemy_knows_about(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    """The read's BEGIN runs on the driver without SQLAlchemy's greenlet, yet SQLAlchemy ends it as usual."""
    async with db.read(sessions) as connection:
        await fast(connection, _STATE_ROWS, {"agent_id": "a1"})
        raw = (await connection.get_raw_connection()).driver_connection.sqlite
        assert connection.in_transaction() and raw.in_transaction
        await connection.rollback()
        assert not raw.in_transaction


# Rows shared between calls with the same parameters that read the same values (fast_execute.share_rows), next to
# the same read unshared.
SHARED_PERMISSIONS = fast_execute.share_rows(
    select(AgentPermissions.__table__).where(AgentPermissions.__table__.c.agent_id == bindparam("agent_id")))
UNSHARED_PERMISSIONS = select(AgentPermissions.__table__).where(
    AgentPermissions.__table__.c.agent_id == bindparam("agent_id"))


async def _read(sessions: async_sessionmaker[AsyncSession], statement: Any, agent_id: str = "a1") -> Any:
    async with db.read(sessions) as connection:
        row = (await fast(connection, statement, {"agent_id": agent_id})).first()
        await connection.rollback()
    return row


async def test_a_shared_read_reuses_the_last_rows_while_the_stored_values_are_the_same(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    first, second = await _read(sessions, SHARED_PERMISSIONS), await _read(sessions, SHARED_PERMISSIONS)
    assert typed([first]) == typed([second]) == typed([await _read(sessions, UNSHARED_PERMISSIONS)])
    assert second.allowed_symbols is first.allowed_symbols  # the same objects: its callers never change them
    unshared = await _read(sessions, UNSHARED_PERMISSIONS), await _read(sessions, UNSHARED_PERMISSIONS)
    assert unshared[0].allowed_symbols is not unshared[1].allowed_symbols


async def test_agents_read_in_turn_each_keep_their_shared_rows(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Eight agents in one process read their permissions in turn: each one's rows are kept, not only the last."""
    first = await _read(sessions, SHARED_PERMISSIONS)
    assert await _read(sessions, SHARED_PERMISSIONS, "nobody") is None
    again = await _read(sessions, SHARED_PERMISSIONS)
    assert again.allowed_symbols is first.allowed_symbols and typed([again]) == typed([first])


async def test_a_shared_read_sees_a_changed_value_at_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    before = await _read(sessions, SHARED_PERMISSIONS)
    async with db.transaction(sessions) as session:
        await session.execute(text("UPDATE agent_trading_permissions SET allowed_symbols = '[\"AAPL\"]', "
                                   "max_trade_size = '1000.5' WHERE agent_id = 'a1'"))
    after = await _read(sessions, SHARED_PERMISSIONS)
    assert before.allowed_symbols == ["AAPL", "MSFT"] and after.allowed_symbols == ["AAPL"]
    assert typed([after]) == typed([await _read(sessions, UNSHARED_PERMISSIONS)])


class Shown(TypeDecorator[str]):
    """A value read back as its repr: 7 and 7.0 are equal, their reprs are not."""

    impl = String
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> str:
        return repr(value)


SHOWN = fast_execute.share_rows(select(type_coerce(bindparam("v"), Shown()).label("shown")))


async def test_a_shared_read_tells_an_equal_value_of_another_type_apart(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.read(sessions) as connection:
        shown = [(await fast(connection, SHOWN, {"v": value})).scalar_one() for value in (7, 7.0, 7.0, 7)]
        await connection.rollback()
    assert shown == ["7", "7.0", "7.0", "7"]


class Statement:
    """Stands for a statement object: weakly referenceable."""


def test_an_entry_of_prepared_forms_goes_with_its_statement() -> None:
    statement = Statement()
    key = id(statement)
    assert fast_execute._prepared_of(statement) is None
    forms = fast_execute._new_prepared(statement)
    assert fast_execute._prepared_of(statement) is forms and key in fast_execute._prepared
    del statement
    gc.collect()
    assert key not in fast_execute._prepared
    assert fast_execute._prepared_of(Statement()) is None  # another object, whatever its id


def test_a_statement_that_cannot_be_weakly_referenced_is_left_to_sqlalchemy() -> None:
    with pytest.raises(TypeError):
        fast_execute._prepared_of(object())
