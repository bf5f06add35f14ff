"""The gate's statements on the path of every call are written on the tables, not on the mapped classes
(policies/gate.py, ledger/legs.py): the same statements as their ORM forms (kept here as the reference),
compiled and run without the ORM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from sqlalchemy import Table, and_, bindparam, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as postgresql_dialect
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.base import OPEN_STATUSES
from ledger import db, legs
from ledger.models import (
    GLOBAL_SCOPE,
    AgentAccount,
    AgentOrderLeg,
    AgentPermissions,
    AgentPosition,
    AuditEvent,
    TradingState,
)
from policies import gate
from tests.ledger.test_fast_execute import seed_ledger
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
