"""Read the ledger directly in tests: what was written, and what reached the broker."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from ledger import db
from ledger.models import AgentTrade, AuditEvent, SimOrder, TradeProposal


async def count(db_url: str, model: Any, *where: Any) -> int:
    engine = db.create_engine(db_url)
    try:
        async with db.session_factory(engine)() as session:
            query = select(func.count()).select_from(model)
            for condition in where:
                query = query.where(condition)
            return int((await session.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def broker_orders(db_url: str) -> int:
    """Orders that reached the simulated broker."""
    return await count(db_url, SimOrder)


async def ledger_rows(db_url: str) -> dict[str, int]:
    return {"proposals": await count(db_url, TradeProposal), "trades": await count(db_url, AgentTrade),
            "broker_orders": await count(db_url, SimOrder)}


async def audit_kinds(db_url: str) -> list[str]:
    engine = db.create_engine(db_url)
    try:
        async with db.session_factory(engine)() as session:
            rows = await session.execute(select(AuditEvent.kind).order_by(AuditEvent.seq))
            return [r[0] for r in rows]
    finally:
        await engine.dispose()
