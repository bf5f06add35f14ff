"""ledger/accounting.py: booking a fill to an agent's position and cash, on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger import db
from ledger.accounting import Book, Held, book_fill
from ledger.models import AgentAccount, AgentPosition

NOW = datetime(2025, 3, 12, 15, 0, tzinfo=UTC)
CAPITAL = Decimal(100_000)


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    await db.upgrade(engine)
    yield db.session_factory(engine)
    await engine.dispose()


async def _holding(sessions: async_sessionmaker[AsyncSession], agent_id: str) -> tuple[Book, Decimal]:
    async with sessions() as session:
        position = await session.get(AgentPosition, (agent_id, "AAPL"))
        account = await session.get(AgentAccount, agent_id)
    assert position is not None and account is not None
    return Book(position.qty, position.avg_entry_price, position.realized_pl), account.cash


async def _agent_with_a_position(sessions: async_sessionmaker[AsyncSession], agent_id: str) -> None:
    async with db.transaction(sessions) as session:
        session.add(AgentAccount(agent_id=agent_id, cash=Decimal(90_000), equity_peak=CAPITAL, day="2025-03-12",
                                 day_start_equity=CAPITAL, updated_at=NOW))
        session.add(AgentPosition(agent_id=agent_id, symbol="AAPL", qty=Decimal(10), avg_entry_price=Decimal(100),
                                  realized_pl=Decimal(0), updated_at=NOW))


async def test_a_fill_booked_on_rows_already_read_writes_what_reading_them_again_would(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    for agent_id in ("reads", "knows"):
        await _agent_with_a_position(sessions, agent_id)
    booked: dict[str, Book] = {}
    for agent_id in ("reads", "knows"):
        async with db.transaction(sessions) as session:
            held = None
            if agent_id == "knows":  # as the gate's unit (c) read them (policies/gate.py _TRADE_STATE_AND_HOLDINGS)
                position, cash = await _holding(sessions, agent_id)
                held = Held(position, cash)
            booked[agent_id] = await book_fill(session, agent_id=agent_id, symbol="AAPL", side="sell",
                                               qty=Decimal(4), price=Decimal(110), capital=CAPITAL, day="2025-03-12",
                                               now=NOW, held=held)
    assert booked["knows"] == booked["reads"] == Book(Decimal(6), Decimal(100), Decimal(40))
    assert await _holding(sessions, "knows") == await _holding(sessions, "reads") == (booked["reads"],
                                                                                      Decimal(90_440))
