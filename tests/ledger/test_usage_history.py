"""load_usage does not grow with the agent's history (issue 12): thousands of trades in its windows come back
to Python as no more rows than none at all (the counts and the rolling sum are aggregates over an index
range), every statement finds agent_trades rows by index, and the rolling notional stays exact — also for rows
written without the ORM, whose notional is not stored as an integer."""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ledger import db
from ledger.models import AgentTrade, TradeProposal
from ledger.usage import load_usage
from policies.checks import Usage
from policies.orders import OrderRequest
from tests.conftest import MODERATE_LIMITS

D = Decimal
NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)  # 10:30 in New York
AGENT = "agent-1"
BUY_AAPL = OrderRequest(symbol="AAPL", side="buy", qty=D(10))
HISTORY = 3_000
ONE, PRICE = D(1), D("100.25")
Statement = tuple[str, Any]



@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db.session_factory(engine)


def rows(count: int, *, status: str = "filled", filled: Decimal = ONE, price: Decimal | None = PRICE,
         start: timedelta = timedelta(minutes=50)) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`count` orders of the agent spread over the `start` before NOW: proposal and trade rows."""
    proposals, trades = [], []
    for i in range(count):
        at = NOW - start + start * i / count
        pid = str(uuid.uuid4())
        proposals.append({
            "id": pid, "agent_id": AGENT, "symbol": "MSFT", "side": "buy", "qty": D(1), "notional": None,
            "order_type": "market", "limit_price": None, "stop_price": None, "time_in_force": "day",
            "extended_hours": False, "reasoning": "history", "status": "executed", "order_hash": f"{i:064d}",
            "approval_mode": "auto", "trading_mode": "paper", "created_at": at,
            "expires_at": at + timedelta(minutes=5), "updated_at": at})
        trades.append({
            "id": pid, "agent_id": AGENT, "proposal_id": pid, "client_order_id": pid, "symbol": "MSFT",
            "side": "buy", "quantity": D(1), "notional": None, "order_type": "market", "limit_price": None,
            "stop_price": None, "time_in_force": "day", "reserved_notional": D(101), "price": price,
            "filled_qty": filled, "reasoning": "history", "status": status, "created_at": at, "updated_at": at})
    return proposals, trades


async def add_with_orm(sessions: async_sessionmaker[AsyncSession], count: int, **kwargs: Any) -> None:
    """As the gate and the accounting write them: through the ORM, whose hook stores window_micros."""
    proposals, trades = rows(count, **kwargs)
    async with db.transaction(sessions) as session:
        session.add_all(TradeProposal(**p) for p in proposals)
        await session.flush()
        session.add_all(AgentTrade(**t) for t in trades)


async def add_without_orm(sessions: async_sessionmaker[AsyncSession], count: int, **kwargs: Any) -> None:
    """As a Core statement writes them (an older ledger, a raw INSERT): window_micros stays NULL."""
    proposals, trades = rows(count, **kwargs)
    async with db.transaction(sessions) as session:
        await session.execute(insert(TradeProposal), proposals)
        await session.execute(insert(AgentTrade), trades)


async def usage(sessions: async_sessionmaker[AsyncSession], **limits: Any) -> Usage:
    async with db.transaction(sessions) as session:
        return await load_usage(session, agent_id=AGENT, order=BUY_AAPL,
                                limits=dataclasses.replace(MODERATE_LIMITS, **limits), quotes={}, now=NOW)


async def captured_usage(sessions: async_sessionmaker[AsyncSession]) -> tuple[Usage, list[Statement]]:
    seen: list[Statement] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        found = await usage(sessions)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    return found, [s for s in seen if s[0].lstrip().upper().startswith("SELECT")]


def rows_returned(database: Path, statements: list[Statement]) -> int:
    connection = sqlite3.connect(database)
    try:
        return sum(len(connection.execute(sql, params).fetchall()) for sql, params in statements)
    finally:
        connection.close()


def plan(database: Path, statement: Statement) -> str:
    connection = sqlite3.connect(database)
    try:
        return "\n".join(row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + statement[0], statement[1]))
    finally:
        connection.close()


def sqlite_file(engine: AsyncEngine) -> Path:
    return Path(str(engine.url.database))


async def test_thousands_of_trades_in_the_windows_return_no_more_rows_than_none(db_url: str) -> None:
    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    try:
        fresh, statements = await captured_usage(sessions)
        fresh_rows = rows_returned(sqlite_file(engine), statements)
        await add_with_orm(sessions, HISTORY)
        await add_with_orm(sessions, HISTORY, status="canceled", filled=D(0), price=None)
        busy, statements = await captured_usage(sessions)
        assert rows_returned(sqlite_file(engine), statements) == fresh_rows
        assert (fresh.trades_today, fresh.orders_in_rate_window) == (0, 0)
        assert busy.trades_today == HISTORY and busy.notional_in_rolling_window == D("100.25") * HISTORY
    finally:
        await engine.dispose()


async def test_every_usage_statement_finds_agent_trades_by_index_and_aggregates_from_the_index_alone(
        db_url: str) -> None:
    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    try:
        await add_with_orm(sessions, 200)
        _, statements = await captured_usage(sessions)
        on_trades = [s for s in statements if "agent_trades" in s[0]]
        assert len(on_trades) >= 2  # the open orders; the counts, with whether the rarer reads are needed
        for statement in on_trades:
            steps = plan(sqlite_file(engine), statement)
            assert "SCAN agent_trades" not in steps, f"full scan of agent_trades:\n{statement[0]}\n{steps}"
            if "count(*)" in statement[0] or "sum(" in statement[0]:
                assert "USING COVERING INDEX" in steps, f"aggregate reads the table:\n{statement[0]}\n{steps}"
    finally:
        await engine.dispose()


async def test_rows_written_without_the_orm_are_summed_exactly(sessions: Any) -> None:
    # Finer than a micro-dollar, and without a stored integer: read and summed as Decimals.
    await add_without_orm(sessions, 30, price=D("100.1234567"))
    await add_with_orm(sessions, 20, price=D("99.5"))
    u = await usage(sessions)
    assert u.trades_today == 50
    assert u.notional_in_rolling_window == D("100.1234567") * 30 + D("99.5") * 20


async def test_a_sum_of_many_trades_is_exact_to_the_micro_dollar(sessions: Any) -> None:
    await add_with_orm(sessions, 1_000, filled=D("0.333333"), price=D("3.000001"))
    u = await usage(sessions, rolling_notional_max=D(10**9))
    assert u.notional_in_rolling_window == D("0.333333") * D("3.000001") * 1_000


async def test_released_orders_without_a_fill_count_in_the_rate_but_add_no_notional(sessions: Any) -> None:
    await add_with_orm(sessions, 40, status="canceled", filled=D(0), price=None, start=timedelta(seconds=50))
    u = await usage(sessions, order_rate_window_seconds=60)
    assert (u.trades_today, u.orders_in_rate_window, u.notional_in_rolling_window) == (0, 40, D(0))


async def test_a_status_not_known_at_all_reserves_inside_the_day_and_windows_only(sessions: Any) -> None:
    await add_with_orm(sessions, 1, status="new_broker_status", filled=D(0), price=None,
                       start=timedelta(hours=12))  # before the New York day and every window: not read
    assert (await usage(sessions)).open_buy_notional == 0
    await add_with_orm(sessions, 1, status="new_broker_status", filled=D(0), price=None)
    u = await usage(sessions)
    assert (u.open_buy_notional, u.trades_today, u.notional_in_rolling_window) == (D(101), 1, D(101))
