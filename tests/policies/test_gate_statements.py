"""The gate's statements on the path of every call are written on the tables, not on the mapped classes
(policies/gate.py, ledger/legs.py): the same statements as their ORM forms (kept here as the reference),
compiled and run without the ORM."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, cast

import pytest
from sqlalchemy import Table, and_, bindparam, insert, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as postgresql_dialect
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from broker.base import OPEN_STATUSES
from ledger import db, legs
from ledger.models import (
    GLOBAL_SCOPE,
    AgentAccount,
    AgentOrderLeg,
    AgentPermissions,
    AgentPosition,
    AgentTrade,
    AuditEvent,
    TradeProposal,
    TradingState,
)
from ledger.rows import transient
from policies import gate
from tests.ledger.test_fast_execute import T0, seed_ledger
from tests.ledger.test_usage_statements import compiled_form

PERMISSIONS = cast(Table, AgentPermissions.__table__)


def state_of(column: Any, scope: Any) -> Any:
    return select(column).where(TradingState.__table__.c.scope == scope).scalar_subquery()


# The statements as they were built on the mapped classes before (the reference).
AGENT_AND_HOLDINGS = (
    select(PERMISSIONS, AgentPosition.symbol.label("held_symbol"))
    .select_from(PERMISSIONS)
    .outerjoin(AgentPosition, and_(AgentPosition.agent_id == PERMISSIONS.c.agent_id, AgentPosition.qty != 0))
    .where(PERMISSIONS.c.agent_id == bindparam("agent_id")))
AGENT_HOLDINGS_AND_STATE = AGENT_AND_HOLDINGS.add_columns(
    state_of(TradingState.state, GLOBAL_SCOPE).label("global_state"),
    state_of(TradingState.reason, GLOBAL_SCOPE).label("global_reason"),
    state_of(TradingState.state, bindparam("agent_id")).label("agent_state"),
    state_of(TradingState.reason, bindparam("agent_id")).label("agent_reason"))
PROPOSAL_TRADE_AND_RECORD = (
    gate._PROPOSAL_AND_TRADE.add_columns(AuditEvent.payload.label("record_payload"))
    .outerjoin(AuditEvent, AuditEvent.event_id == gate._PROPOSALS.c.audit_event_id))
ACCOUNT_CASH = select(AgentAccount.cash).where(AgentAccount.agent_id == bindparam("agent_id"))
PARENTS_OF_LIVE_LEGS = select(AgentOrderLeg.parent_id).where(AgentOrderLeg.status.in_(sorted(OPEN_STATUSES)))
WORKING_EXITS = (select(AgentOrderLeg.parent_id, AgentOrderLeg.side, AgentOrderLeg.quantity, AgentOrderLeg.filled_qty)
                 .where(AgentOrderLeg.agent_id == bindparam("agent_id"), AgentOrderLeg.symbol == bindparam("symbol"),
                        AgentOrderLeg.status.in_(sorted(OPEN_STATUSES - {"held"}))))

PAIRS: dict[str, tuple[Any, Any]] = {
    "gate._AGENT_AND_HOLDINGS": (gate._AGENT_AND_HOLDINGS, AGENT_AND_HOLDINGS),
    "gate._AGENT_HOLDINGS_AND_STATE": (gate._AGENT_HOLDINGS_AND_STATE, AGENT_HOLDINGS_AND_STATE),
    "gate._PROPOSAL_TRADE_AND_RECORD": (gate._PROPOSAL_TRADE_AND_RECORD, PROPOSAL_TRADE_AND_RECORD),
    "gate._ACCOUNT_CASH": (gate._ACCOUNT_CASH, ACCOUNT_CASH),
    "legs.PARENTS_OF_LIVE_LEGS": (legs.PARENTS_OF_LIVE_LEGS, PARENTS_OF_LIVE_LEGS),
    "legs._WORKING_EXITS": (legs._WORKING_EXITS, WORKING_EXITS),
}


@pytest.mark.parametrize("dialect", [sqlite_dialect(), postgresql_dialect()], ids=["sqlite", "postgresql"])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_a_statement_compiles_as_its_orm_form_did(name: str, dialect: Any) -> None:
    ours, reference = PAIRS[name]
    assert compiled_form(ours, dialect) == compiled_form(reference, dialect)


@pytest.mark.parametrize("module", [gate, legs], ids=["gate", "legs"])
def test_no_statement_of_the_call_path_is_compiled_through_the_orm(module: Any) -> None:
    """Nothing in them asks for the ORM's compile step (and the mapper configuration that comes first)."""
    statements = {name: value for name, value in vars(module).items() if hasattr(value, "_propagate_attrs")
                  and hasattr(value, "compile") and name.isupper()}
    assert statements
    assert [name for name, value in statements.items()
            if value._propagate_attrs.get("compile_state_plugin") == "orm"] == []


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(database_url)
    await db.upgrade(engine)
    await seed_ledger(db.session_factory(engine))  # an agent holding a position, the global trading state
    yield engine
    await engine.dispose()


@pytest.mark.parametrize("name", ["gate._AGENT_AND_HOLDINGS", "gate._AGENT_HOLDINGS_AND_STATE"])
@pytest.mark.parametrize("agent_id", ["a1", "nobody"])
async def test_an_identity_read_returns_what_its_orm_form_returned(engine: AsyncEngine, name: str,
                                                                   agent_id: str) -> None:
    async with db.read(db.session_factory(engine)) as connection:
        found = [[tuple(row) for row in (await connection.execute(statement, {"agent_id": agent_id})).all()]
                 for statement in PAIRS[name]]
    assert found[0] == found[1]
    assert found[0] != [] or agent_id == "nobody"


def _trade(agent_id: str, status: str) -> dict[str, Any]:
    trade_id = str(uuid.uuid4())
    return {"id": trade_id, "agent_id": agent_id, "proposal_id": trade_id, "client_order_id": trade_id,
            "symbol": "AAPL", "side": "buy", "quantity": Decimal(1), "notional": None, "order_type": "market",
            "limit_price": None, "stop_price": None, "time_in_force": "day", "reserved_notional": Decimal(100),
            "price": None, "filled_qty": Decimal(0), "reasoning": "r", "status": status, "created_at": T0,
            "updated_at": T0}


def _leg(parent: dict[str, Any], status: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "parent_id": parent["id"], "agent_id": parent["agent_id"], "role": "stop_loss",
            "order_id": None, "symbol": "AAPL", "side": "sell", "quantity": Decimal(1), "order_type": "stop",
            "limit_price": None, "stop_price": Decimal(90), "time_in_force": "gtc", "status": status,
            "filled_qty": Decimal(0), "created_at": T0, "updated_at": T0}


# The agent's trades (agent a1 unless named) and, for the first one, an exit leg in a status.
LEDGERS: dict[str, tuple[list[tuple[str, str]], str | None]] = {
    "no orders": ([], None),
    "only final orders": ([("a1", "filled"), ("a1", "canceled"), ("a1", "rejected")], None),
    "an order not sent yet": ([("a1", "pending_submit")], None),
    "an accepted order": ([("a1", "filled"), ("a1", "accepted")], None),
    "an order in doubt": ([("a1", "unknown")], None),
    "a filled entry with a working exit": ([("a1", "filled")], "new"),
    "a filled entry whose exit filled": ([("a1", "filled")], "filled"),
    "another agent's live order": ([("a2", "new"), ("a1", "filled")], None),
    "another agent's working exit": ([("a2", "filled")], "new"),
}


@pytest.mark.parametrize("ledger", sorted(LEDGERS))
async def test_the_live_order_check_finds_one_exactly_when_the_orm_read_of_live_orders_does(
        engine: AsyncEngine, ledger: str) -> None:
    trades, leg_status = LEDGERS[ledger]
    rows = [_trade(agent_id, status) for agent_id, status in trades]
    sessions = db.session_factory(engine)
    async with db.transaction(sessions) as session:
        if rows:
            await session.execute(insert(TradeProposal), [_proposal_of(row) for row in rows])
            await session.execute(insert(AgentTrade), rows)
        if leg_status is not None:
            await session.execute(insert(AgentOrderLeg), [_leg(rows[0], leg_status)])
    async with db.read(sessions) as connection:
        found = (await db.execute(connection, gate._ANY_LIVE_TRADE_OF_AGENT, {"agent_id": "a1"})).first()
        async with AsyncSession(bind=connection) as session:
            live = (await session.execute(select(AgentTrade).where(gate._live_rows_of(
                "a1", gate.LIVE_TRADE_STATUSES - {"pending_submit"})))).scalars().all()
    assert (found is not None) == bool(live)


def _proposal_of(trade: dict[str, Any]) -> dict[str, Any]:
    return {"id": trade["id"], "agent_id": trade["agent_id"], "symbol": "AAPL", "side": "buy", "qty": Decimal(1),
            "notional": None, "order_type": "market", "limit_price": None, "stop_price": None,
            "time_in_force": "day", "extended_hours": False, "reasoning": "r", "status": "executed",
            "order_hash": "h" * 64, "approval_mode": "auto", "trading_mode": "paper", "created_at": T0,
            "expires_at": T0, "updated_at": T0}


async def test_the_book_holds_the_positions_the_orm_read_of_them_holds(engine: AsyncEngine) -> None:
    sessions = db.session_factory(engine)
    async with db.read(sessions) as connection:
        ours = [transient(AgentPosition, row._mapping) for row in
                await db.execute(connection, gate._POSITIONS_OF_AGENT, {"agent_id": "a1"})]
        async with AsyncSession(bind=connection) as session:
            theirs = (await session.execute(select(AgentPosition).where(AgentPosition.agent_id == "a1")
                                            .order_by(AgentPosition.symbol))).scalars().all()
    columns = [column.key for column in AgentPosition.__table__.c]
    assert [[getattr(p, c) for c in columns] for p in ours] == [[getattr(p, c) for c in columns] for p in theirs]
    assert ours != []
