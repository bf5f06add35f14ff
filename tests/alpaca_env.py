"""A tradewarden configured for Alpaca, pointed at the Alpaca contract server (tests/broker/).

The real alpaca-py client talks HTTP to the contract server through the base-URL overrides; the keys are the
contract server's fake ones, put in the environment as an operator would (fixtures: tests/alpaca_fixtures.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import select

from ledger import db
from ledger.models import AgentPosition, AgentTrade, AuditEvent, KeyValue
from server.config import AgentConfig, Config
from tests.broker.alpaca_contract_server import FAKE_API_KEY, FAKE_SECRET_KEY, AlpacaContractServer
from tests.conftest import agent, make_config

T = TypeVar("T")
KEYS = (FAKE_API_KEY, FAKE_SECRET_KEY)


def trader(agent_id: str = "agent-1", **limits: Any) -> AgentConfig:
    return agent(agent_id, **{"allowed_symbols": ["*"], **limits})


def alpaca_config(db_url: str, server: AlpacaContractServer, *agents: AgentConfig, **options: Any) -> Config:
    options.setdefault("broker_timeout_seconds", 3.0)
    return make_config(db_url, *(agents or (trader(),)), broker="alpaca", alpaca_trading_url=server.trading_url,
                       alpaca_data_url=server.data_url, **options)


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, timeout: float = 10.0,
                     every: float = 0.05) -> T:
    """Poll `probe` until `done(result)`; fail after `timeout` seconds with the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout}s; last: {result!r}")
        await asyncio.sleep(every)


async def read(db_url: str, query: Any) -> list[Any]:
    engine = db.create_engine(db_url)
    try:
        async with db.session_factory(engine)() as session:
            return list((await session.execute(query)).scalars())
    finally:
        await engine.dispose()


async def trade(db_url: str, trade_id: str) -> AgentTrade:
    rows = await read(db_url, select(AgentTrade).where(AgentTrade.id == trade_id))
    assert rows, f"no trade {trade_id}"
    return rows[0]  # type: ignore[no-any-return]


async def positions(db_url: str) -> dict[tuple[str, str], Any]:
    return {(p.agent_id, p.symbol): p.qty for p in await read(db_url, select(AgentPosition)) if p.qty != 0}


async def audit_records(db_url: str, actor: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.seq)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    return await read(db_url, query)


async def reconciliation(db_url: str) -> dict[str, Any] | None:
    rows = await read(db_url, select(KeyValue).where(KeyValue.key == "reconciliation"))
    return rows[0].value if rows else None
