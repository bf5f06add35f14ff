"""The running system: config, database, broker and gate, built once per process and closed at exit."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from broker.base import Broker
from ledger import db
from ledger.models import GLOBAL_SCOPE, AuditHead, TradingState
from policies.agents import sync_config_agents
from policies.audit import GENESIS_HASH
from policies.gate import Gate, GateSettings
from server.config import Config, ConfigError

log = structlog.get_logger("tradewarden.runtime")


def warm_up_calendar(now: datetime) -> None:
    from policies.market_hours import market_open_or_none

    market_open_or_none(now)


def utc_now() -> datetime:
    return datetime.now(UTC)


BrokerFactory = Callable[[async_sessionmaker[AsyncSession], Callable[[], datetime]], Broker]


@dataclass
class Runtime:
    config: Config
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    broker: Broker
    gate: Gate
    clock: Callable[[], datetime]


def build_broker(config: Config, sessions: async_sessionmaker[AsyncSession],
                 clock: Callable[[], datetime]) -> Broker:
    if config.server.broker == "simulated":
        from broker.simulated import SimulatedBroker

        return SimulatedBroker(sessions, seed=config.server.simulated_seed,
                               starting_cash=config.server.simulated_cash, clock=clock)
    from broker.alpaca import AlpacaBroker

    key, secret = os.environ.get("ALPACA_API_KEY"), os.environ.get("ALPACA_SECRET_KEY")
    if not key or not secret:
        raise ConfigError("broker is alpaca but ALPACA_API_KEY / ALPACA_SECRET_KEY are not set")
    return AlpacaBroker(api_key=key, secret_key=secret, paper=config.server.trading_mode == "paper",
                        trading_url=config.server.alpaca_trading_url, data_url=config.server.alpaca_data_url,
                        timeout=config.server.broker_timeout_seconds)


async def prepare_database(config: Config, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession],
                           clock: Callable[[], datetime]) -> None:
    """Migrate, make sure the global trading-state row exists (it is the check-and-reserve lock on
    PostgreSQL) and so does the audit head (the lock appends take), and bring configured agents in line with
    the file. Replicas and commands starting together do this one at a time (an advisory lock)."""
    await db.upgrade(engine)
    async with db.transaction(sessions) as session:
        await db.advisory_lock(session, db.REGISTRY_LOCK)
        if (await session.execute(select(TradingState).where(TradingState.scope == GLOBAL_SCOPE))
                ).scalar_one_or_none() is None:
            session.add(TradingState(scope=GLOBAL_SCOPE, state="active", reason=None, changed_by="system",
                                     changed_at=clock()))
        await db.insert_if_absent(session, AuditHead, {"id": 1, "seq": 0, "hash": GENESIS_HASH})
        await sync_config_agents(session, config.agents, clock())


@asynccontextmanager
async def open_runtime(config: Config, *, clock: Callable[[], datetime] = utc_now,
                       broker: Broker | BrokerFactory | None = None) -> AsyncIterator[Runtime]:
    engine = db.create_engine(config.server.database_url)
    sessions = db.session_factory(engine)
    try:
        await prepare_database(config, engine, sessions, clock)
        if broker is None:
            the_broker = build_broker(config, sessions, clock)
        elif hasattr(broker, "submit_order"):
            the_broker = broker  # type: ignore[assignment]
        else:  # a factory: tests wrap the simulated broker on this runtime's database
            the_broker = broker(sessions, clock)  # type: ignore[operator]
        await the_broker.start()
        settings = GateSettings(
            trading_mode=config.server.trading_mode, enable_agent_trading=config.server.enable_agent_trading,
            risk_multiplier=config.server.agent_risk_multiplier,
            proposal_ttl=timedelta(seconds=config.server.proposal_ttl_seconds),
            limit_proposal_ttl=timedelta(seconds=config.server.limit_proposal_ttl_seconds),
            broker_timeout=config.server.broker_timeout_seconds,
            enforce_market_hours=config.server.enforce_market_hours,
            is_postgres=not db.is_sqlite(config.server.database_url))
        gate = Gate(settings=settings, sessions=sessions, broker=the_broker, clock=clock)
        # The exchange calendar takes ~0.4 s to load (pandas): load it beside start-up, not in the first call.
        asyncio.get_running_loop().run_in_executor(None, warm_up_calendar, clock())
        try:
            yield Runtime(config=config, engine=engine, sessions=sessions, broker=the_broker, gate=gate,
                          clock=clock)
        finally:
            await the_broker.close()
    finally:
        await engine.dispose()
