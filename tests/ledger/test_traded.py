"""window_micros: a final agent_trades row's rolling-window notional as whole micro-dollars, exact or NULL, kept
in step with the row by the ORM on every write."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ledger import db
from ledger.models import AgentTrade, TradeProposal
from ledger.traded import ROW_MAX_MICROS, window_micros

D = Decimal
NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)


def test_a_filled_row_stores_filled_qty_times_price_in_micro_dollars() -> None:
    assert window_micros("filled", D(10), D(1000), D("95.5"), D(10)) == 955_000_000


def test_a_partly_filled_cancelled_row_stores_what_it_traded() -> None:
    assert window_micros("canceled", D(10), D(1000), D("95.5"), D(4)) == 382_000_000


def test_a_released_row_without_a_fill_stores_zero() -> None:
    assert window_micros("expired", D(10), D(1000), None, D(0)) == 0


def test_a_filled_row_without_a_recorded_fill_keeps_its_reservation() -> None:
    assert window_micros("filled", D(10), D("1000.5"), None, D(0)) == 1_000_500_000


@pytest.mark.parametrize("status", ["new", "pending_submit", "partially_filled", "unknown", "new_broker_status"])
def test_a_row_that_can_still_fill_stores_nothing(status: str) -> None:
    assert window_micros(status, D(10), D(1000), D(95), D(4)) is None


def test_an_amount_finer_than_a_micro_dollar_is_not_stored() -> None:
    assert window_micros("filled", D(1), D(100), D("100.1234567"), D(1)) is None


def test_an_amount_too_large_to_sum_safely_is_not_stored() -> None:
    assert window_micros("filled", D(1), D(1), D(ROW_MAX_MICROS + 1) / 1_000_000, D(1)) is None


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine: AsyncEngine = db.create_engine(database_url)
    await db.upgrade(engine)
    yield db.session_factory(engine)
    await engine.dispose()


async def test_the_orm_stores_nothing_while_an_order_is_open_and_its_notional_once_it_fills(sessions: Any) -> None:
    pid = str(uuid.uuid4())
    async with db.transaction(sessions) as session:
        session.add(TradeProposal(
            id=pid, agent_id="a", symbol="AAPL", side="buy", qty=D(10), order_type="market",
            time_in_force="day", extended_hours=False, reasoning="t", status="executed", order_hash="h",
            approval_mode="auto", trading_mode="paper", created_at=NOW, expires_at=NOW + timedelta(minutes=5),
            updated_at=NOW))
        await session.flush()
        session.add(AgentTrade(
            id=pid, agent_id="a", proposal_id=pid, client_order_id=pid, symbol="AAPL", side="buy", quantity=D(10),
            order_type="market", time_in_force="day", reserved_notional=D(1000), filled_qty=D(0), reasoning="t",
            status="pending_submit", created_at=NOW, updated_at=NOW))
    async with db.transaction(sessions) as session:
        assert (await session.execute(select(AgentTrade.window_micros))).scalar_one() is None
        trade = (await session.execute(select(AgentTrade))).scalar_one()
        trade.status, trade.filled_qty, trade.price = "filled", D(10), D("99.75")
    async with db.transaction(sessions) as session:
        assert (await session.execute(select(AgentTrade.window_micros))).scalar_one() == 997_500_000
