"""Shared fixtures: a real SQLite file per test, a clock inside market hours, and MCP clients.

`db_url` is always SQLite. `database_url` runs a test twice, on SQLite and on PostgreSQL (a real server
started once per session by tests/postgres.py, a fresh database per test); `pg_url` is PostgreSQL only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import time_machine
from mcp import Client

from policies.limits import EffectiveLimits
from server.app import create_server
from server.config import AgentConfig, Config, ServerConfig
from tests.postgres import PostgresServer, PostgresUnavailable, postgres_required

# Monday 2026-11-23 10:30 New York: the US equity market is open.
MARKET_OPEN = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)


# The moderate risk level's limits on $100,000 of capital: the agent the pure tests of checks and usage use.
MODERATE_LIMITS = EffectiveLimits(
    max_trade_size=Decimal(5000), max_position_size=Decimal(20000), max_daily_trades=20,
    allowed_symbols=frozenset({"*"}), allowed_strategies=frozenset({"*"}),
    max_order_qty=Decimal(2000), max_gross_exposure=Decimal(100000), max_orders_per_window=10,
    order_rate_window_seconds=60, rolling_notional_max=Decimal(50000), rolling_notional_window_seconds=3600,
    duplicate_window_seconds=30, daily_loss_limit=Decimal(2000), max_drawdown_pct=Decimal(10),
    price_collar_pct=Decimal(10), max_quote_age_seconds=120, allow_short=False, max_denials_per_window=20,
    denials_window_seconds=600, breaker_action="reducing", capital=Decimal(100000),
)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'tradewarden.db'}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (started on first use, stopped at the end)."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as error:
        if postgres_required():
            pytest.fail(f"PostgreSQL is required (TRADEWARDEN_REQUIRE_POSTGRES=1) but unavailable: {error}")
        pytest.skip(f"PostgreSQL unavailable: {error}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh, empty PostgreSQL database for this test."""
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test runs on SQLite and again on PostgreSQL."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite+aiosqlite:///{tmp_path / 'tradewarden.db'}"


@pytest.fixture
def market_open() -> Iterator[time_machine.Coordinates]:
    """Freeze-free travel: time moves on from a moment the market is open."""
    with time_machine.travel(MARKET_OPEN, tick=True) as traveller:
        yield traveller


def agent(agent_id: str = "agent-1", **limits: Any) -> AgentConfig:
    defaults: dict[str, Any] = {"max_trade_size": 5000, "max_position_size": 20000, "max_daily_trades": 20,
                                "allowed_symbols": ["AAPL", "MSFT", "SPY", "BTC/USD"], "allowed_strategies": ["*"],
                                "approval": "auto", "auto_approve_max_notional": 5000}
    return AgentConfig(id=agent_id, **{**defaults, **limits})


def make_config(db_url: str, *agents: AgentConfig, **server: Any) -> Config:
    return Config(server=ServerConfig(database_url=db_url, **server), agents=list(agents) or [agent()])


@asynccontextmanager
async def connect(config: Config, agent_id: str | None = "agent-1", **options: Any) -> AsyncIterator[Client]:
    async with Client(create_server(config, agent_id=agent_id), **options) as client:
        yield client


@pytest.fixture
def config(db_url: str) -> Config:
    return make_config(db_url)


@asynccontextmanager
async def connected_in_own_task(config: Config, agent_id: str | None = "agent-1", **options: Any
                                ) -> AsyncIterator[Client]:
    """The client's task group must be entered and left in one task; a fixture's setup and teardown run in
    different tasks, so the client lives in a task of its own for the length of the test."""
    ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def hold() -> None:
        try:
            async with connect(config, agent_id, **options) as client:
                ready.set_result(client)
                await stop.wait()
        except BaseException as error:
            if not ready.done():
                ready.set_exception(error)
            raise

    holder = asyncio.create_task(hold())
    try:
        yield await ready
    finally:
        stop.set()
        await holder


@pytest.fixture
async def client(config: Config, market_open: time_machine.Coordinates) -> AsyncIterator[Client]:
    async with connected_in_own_task(config) as connected:
        yield connected


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured result."""
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    assert result.structured_content is not None
    return result.structured_content


async def call_error(client: Client, tool: str, **args: Any) -> str:
    """Call a tool that must fail; return its error text (which starts with a stable code)."""
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return result.content[0].text  # type: ignore[union-attr]
