"""The system of record under concurrency, on SQLite and on PostgreSQL (every test here runs on both).

What must hold on both engines: limits are never exceeded by simultaneous calls, one proposal gives one
order, the audit log stays one valid hash chain, concurrent writers of the same agent's book lose nothing,
start-up and registration are safe when several processes do them at once, and the schema built by the
migrations is the models'. On PostgreSQL (READ COMMITTED) this rests on row locks and ON CONFLICT inserts
(ledger/db.py); several "servers" below share one database in one process, as replicas do.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from mcp import Client
from sqlalchemy import func, select, text

from broker.base import Account, Asset, BrokerOrder, Quote
from ledger import db
from ledger.models import (
    SCHEMA_REVISION,
    AgentAccount,
    AgentPermissions,
    AgentPosition,
    AgentTrade,
    AuditEvent,
    Base,
    TradeProposal,
    TradingState,
)
from policies import audit
from policies.agents import RegistryError, add_agent
from policies.operator import Operator
from policies.operators import OperatorIdentity, Role
from server.config import AgentConfig
from server.runtime import open_runtime
from tests.conftest import agent, call, call_error, connect, make_config
from tests.ledger_probe import broker_orders, count

BUY = {"symbol": "AAPL", "side": "buy", "qty": 1, "reasoning": "concurrency test"}


def _limited(agent_id: str = "agent-1", **limits: Any) -> AgentConfig:
    return agent(agent_id, **{"max_orders_per_window": 1000, "duplicate_window_seconds": 0, **limits})


async def _proposals(client: Client, n: int, **order: Any) -> list[str]:
    ids = []
    for i in range(n):
        result = await call(client, "propose_trade", **{**BUY, **order, "reasoning": f"split {i}"})
        assert result["status"] == "approved", result
        ids.append(result["proposal_id"])
    return ids


async def _verify(url: str) -> audit.VerifyReport:
    engine = db.create_engine(url)
    try:
        async with db.session_factory(engine)() as session:
            return await audit.verify(session)
    finally:
        await engine.dispose()


# --- limits and at-most-once under concurrency ---------------------------------------------------

async def test_twenty_concurrent_executions_against_five_daily_trades_give_five_orders(
        database_url: str, market_open: object) -> None:
    config = make_config(database_url, _limited(max_daily_trades=5))
    async with connect(config) as client:
        proposals = await _proposals(client, 20)
        results = await asyncio.gather(*(client.call_tool("execute_trade", {"proposal_id": p}) for p in proposals))
    statuses = [r.structured_content["status"] for r in results if r.structured_content]
    assert statuses.count("filled") == 5, statuses
    assert statuses.count("rejected") == 15, statuses
    assert await broker_orders(database_url) == 5
    assert await count(database_url, AgentTrade) == 5
    assert (await _verify(database_url)).ok


async def test_one_proposal_executed_concurrently_gives_one_order(database_url: str, market_open: object) -> None:
    config = make_config(database_url, _limited())
    async with connect(config) as client:
        [proposal] = await _proposals(client, 1)
        results = await asyncio.gather(*(client.call_tool("execute_trade", {"proposal_id": proposal})
                                         for _ in range(12)))
    assert all(not r.is_error for r in results), [r.content for r in results if r.is_error]
    assert {r.structured_content["order_id"] for r in results} == {proposal}
    assert await broker_orders(database_url) == 1


async def test_two_servers_on_one_database_share_the_daily_limit(database_url: str, market_open: object) -> None:
    """Two servers (as two replicas) on one database: executions split across them still give 5 orders."""
    config = make_config(database_url, _limited(max_daily_trades=5))
    async with connect(config) as first, connect(config) as second:
        proposals = await _proposals(first, 16)
        results = await asyncio.gather(*(
            (first if i % 2 else second).call_tool("execute_trade", {"proposal_id": p})
            for i, p in enumerate(proposals)))
        # The same proposals again, crosswise: nothing more is sent.
        again = await asyncio.gather(*(
            (second if i % 2 else first).call_tool("execute_trade", {"proposal_id": p})
            for i, p in enumerate(proposals)))
    statuses = [r.structured_content["status"] for r in results if r.structured_content]
    assert statuses.count("filled") == 5, statuses
    assert [r.structured_content["status"] for r in again] == statuses
    assert await broker_orders(database_url) == 5


async def test_account_wide_buying_power_holds_across_agents(database_url: str, market_open: object) -> None:
    """Different agents serialize on the global row: together they cannot spend more than their capital."""
    agents = [_limited(f"a{i}", capital=3000, max_trade_size=5000, max_daily_trades=50) for i in range(3)]
    config = make_config(database_url, *agents)
    clients: dict[str, Client] = {}
    async with connect(config, "a0") as c0, connect(config, "a1") as c1, connect(config, "a2") as c2:
        clients = {"a0": c0, "a1": c1, "a2": c2}
        proposals = {name: await _proposals(client, 8, notional=900, qty=None) for name, client in clients.items()}
        results = await asyncio.gather(*(clients[name].call_tool("execute_trade", {"proposal_id": p})
                                         for name, ids in proposals.items() for p in ids))
    assert all(not r.is_error for r in results)
    engine = db.create_engine(database_url)
    async with db.session_factory(engine)() as session:
        for name in clients:
            account = await session.get(AgentAccount, name)
            assert account is not None and account.cash >= 0, (name, account and account.cash)
    await engine.dispose()
    filled = [r for r in results if r.structured_content["status"] == "filled"]
    assert len(filled) == 9  # three $900 orders fit in each agent's $3000


# --- the audit chain --------------------------------------------------------------------------------

async def test_audit_chain_is_one_valid_chain_after_many_concurrent_calls(database_url: str,
                                                                         market_open: object) -> None:
    config = make_config(database_url, _limited("a"), _limited("b"))
    async with connect(config, "a") as a1, connect(config, "b") as b1, connect(config, "a") as a2:
        calls = []
        for i in range(15):
            client = (a1, b1, a2)[i % 3]
            calls.append(client.call_tool("propose_trade", {**BUY, "reasoning": f"r{i}"}))
            calls.append(client.call_tool("get_trading_status", {}))
            calls.append(client.call_tool("get_positions", {}))
        results = await asyncio.gather(*calls)
        proposals = [r.structured_content["proposal_id"] for r in results
                     if r.structured_content and "proposal_id" in r.structured_content]
        await asyncio.gather(*((a1 if i % 2 else a2).call_tool("execute_trade", {"proposal_id": p})
                               for i, p in enumerate(proposals)))
    report = await _verify(database_url)
    assert report.ok, report.problems
    total = await count(database_url, AuditEvent)
    assert report.records == total == report.head_seq
    assert total >= 2 * len(results)  # intent and outcome of every call


# --- writers of one agent's book ------------------------------------------------------------------

async def test_concurrent_first_fills_of_one_agent_book_every_fill(database_url: str, market_open: object) -> None:
    """Ten fills in one symbol at once, for an agent with no position and no account row yet."""
    config = make_config(database_url, _limited(max_daily_trades=50))
    async with connect(config) as client:
        proposals = await _proposals(client, 10)
        results = await asyncio.gather(*(client.call_tool("execute_trade", {"proposal_id": p}) for p in proposals))
        assert [r.structured_content["status"] for r in results] == ["filled"] * 10, [r.content for r in results]
        positions = await call(client, "get_positions")
    [position] = positions["positions"]
    assert Decimal(position["qty"]) == 10
    spent = sum(Decimal(r.structured_content["filled_avg_price"]) for r in results)
    assert Decimal(positions["cash"]) == Decimal(positions["capital"]) - spent
    assert await count(database_url, AgentAccount) == 1  # ten first fills at once create one account


async def test_concurrent_first_reads_of_a_new_agent_answer_and_write_no_account(database_url: str,
                                                                        market_open: object) -> None:
    config = make_config(database_url, _limited())
    async with connect(config) as client:
        results = await asyncio.gather(*(client.call_tool(tool, {}) for tool in
                                         ["get_positions", "get_trading_status"] * 6))
    assert all(not r.is_error for r in results), [r.content for r in results if r.is_error]
    # A read writes only its audit records: the agent's account row is made by its first fill.
    assert await count(database_url, AgentAccount) == 0


class _FilledLater:
    """A broker whose one order has filled since we last looked (for refresh races)."""

    def __init__(self, order: BrokerOrder):
        self.order = order

    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder:
        await asyncio.sleep(0)
        return self.order

    async def submit_order(self, request: Any) -> BrokerOrder:
        raise NotImplementedError

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        return {}

    async def get_asset(self, symbol: str) -> Asset | None:
        return None

    async def get_account(self) -> Account:
        raise NotImplementedError


async def test_concurrent_refreshes_book_a_fill_once(database_url: str) -> None:
    """Two replicas (or a refresh and a cancel) seeing the same fill at once book it once."""
    now = datetime.now(UTC)
    config = make_config(database_url, _limited())
    order = BrokerOrder(broker_order_id="b-1", client_order_id="11111111-1111-1111-1111-111111111111",
                        symbol="AAPL", side="buy", order_type="limit", time_in_force="day", status="filled",
                        qty=Decimal(10), notional=None, limit_price=Decimal(100), stop_price=None,
                        filled_qty=Decimal(10), filled_avg_price=Decimal("99.5"), submitted_at=now, updated_at=now)
    async with open_runtime(config, broker=_FilledLater(order)) as runtime:  # type: ignore[arg-type]
        trade_id = order.client_order_id
        async with db.transaction(runtime.sessions) as session:
            session.add(TradeProposal(
                id=trade_id, agent_id="agent-1", symbol="AAPL", side="buy", qty=Decimal(10), order_type="limit",
                limit_price=Decimal(100), time_in_force="day", reasoning="r", status="executed", order_hash="h",
                approval_mode="auto", trading_mode="paper", created_at=now, expires_at=now + timedelta(hours=1),
                updated_at=now))
            await session.flush()
            session.add(AgentTrade(
                id=trade_id, agent_id="agent-1", proposal_id=trade_id, client_order_id=trade_id, order_id="b-1",
                symbol="AAPL", side="buy", quantity=Decimal(10), order_type="limit", limit_price=Decimal(100),
                time_in_force="day", reserved_notional=Decimal(1000), filled_qty=Decimal(0), reasoning="r",
                status="new", created_at=now, updated_at=now))
        async with runtime.sessions() as session:
            trade = await session.get(AgentTrade, trade_id)
        assert trade is not None
        await asyncio.gather(*(runtime.gate.refresh_trade(trade) for _ in range(8)))
        async with runtime.sessions() as session:
            position = await session.get(AgentPosition, ("agent-1", "AAPL"))
            account = await session.get(AgentAccount, "agent-1")
            updates = (await session.execute(select(func.count()).select_from(AuditEvent)
                                             .where(AuditEvent.kind == "order.updated"))).scalar_one()
    assert position is not None and position.qty == 10 and position.avg_entry_price == Decimal("99.5")
    assert account is not None and account.cash == Decimal(100000) - Decimal(995)
    assert updates == 1


# --- start-up and registration, several processes at once ---------------------------------------

async def test_servers_starting_together_on_an_empty_database(database_url: str) -> None:
    config = make_config(database_url, _limited("a"), _limited("b"))

    async def start() -> None:
        async with open_runtime(config):
            pass

    await asyncio.gather(*(start() for _ in range(4)))
    assert await count(database_url, AgentPermissions) == 2
    assert await count(database_url, TradingState) == 1
    assert (await _verify(database_url)).ok


async def test_concurrent_registrations_never_exceed_max_agents(database_url: str) -> None:
    config = make_config(database_url, _limited("a"), max_agents_per_account=4)
    async with open_runtime(config) as runtime:

        async def register(i: int) -> str | None:
            try:
                async with db.transaction(runtime.sessions) as session:
                    return await add_agent(session, AgentConfig(id=f"new-{i}"), max_agents=4, actor="operator:t",
                                           now=runtime.clock())
            except RegistryError:
                return None

        tokens = await asyncio.gather(*(register(i) for i in range(8)))
    assert sum(t is not None for t in tokens) == 3
    assert await count(database_url, AgentPermissions) == 4


# --- halts ----------------------------------------------------------------------------------------

async def test_a_halt_made_through_one_server_stops_the_other_at_once(database_url: str,
                                                                       market_open: object) -> None:
    config = make_config(database_url, _limited())
    async with connect(config) as client, open_runtime(config) as operator_side:
        [proposal] = await _proposals(client, 1)
        await Operator(operator_side.gate, OperatorIdentity("ops", Role.ADMIN)).halt(None, "test halt")
        executed = await call(client, "execute_trade", proposal_id=proposal)
        proposed = await call(client, "propose_trade", **BUY)
    assert executed["status"] == "rejected"
    assert "TRADING_HALTED" in [v["code"] for v in executed["violations"]]
    assert "TRADING_HALTED" in [v["code"] for v in proposed["violations"]]
    assert await broker_orders(database_url) == 0


# --- schema and column types --------------------------------------------------------------------

async def test_migrations_build_the_models_schema_from_an_empty_database(database_url: str) -> None:
    engine = db.create_engine(database_url)
    try:
        assert await db.current_revision(engine) is None
        await asyncio.gather(db.upgrade(engine), db.upgrade(engine))  # two at once: one migrates
        assert await db.current_revision(engine) == SCHEMA_REVISION
        async with engine.connect() as conn:
            diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync),
                                                                     Base.metadata))
    finally:
        await engine.dispose()
    assert diff == []


async def test_decimals_stay_exact_and_times_stay_utc_aware(database_url: str) -> None:
    engine = db.create_engine(database_url)
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    new_york = datetime(2026, 11, 23, 10, 30, 0, 123456, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("America/New_York"))
    try:
        async with db.transaction(sessions) as session:
            session.add(AgentPosition(agent_id="x", symbol="BTC/USD", qty=Decimal("0.000000000000000001"),
                                      avg_entry_price=Decimal("1234567890123456789.123456789"),
                                      realized_pl=Decimal("-0.10"), updated_at=new_york))
        async with sessions() as session:
            row = (await session.execute(select(AgentPosition))).scalar_one()
            later = (await session.execute(select(func.count()).select_from(AgentPosition).where(
                AgentPosition.updated_at.between(datetime(2026, 11, 23, 10, 30, tzinfo=UTC),
                                                 datetime(2026, 11, 23, 10, 31, tzinfo=UTC))))).scalar_one()
    finally:
        await engine.dispose()
    assert row.qty == Decimal("0.000000000000000001")
    assert row.avg_entry_price == Decimal("1234567890123456789.123456789")
    assert row.realized_pl == Decimal("-0.1")
    assert row.updated_at == new_york and row.updated_at.tzinfo is not None
    assert row.updated_at.utcoffset() == timedelta(0)
    assert later == 1


async def test_overlong_text_arguments_fail_closed(database_url: str, market_open: object) -> None:
    """PostgreSQL enforces column lengths (SQLite does not): an over-long strategy or symbol must never
    reach the broker, and a later execute of whatever was stored sends nothing unexpected."""
    config = make_config(database_url, _limited())
    async with connect(config) as client:
        results = [await client.call_tool("propose_trade", {**BUY, "strategy": "s" * 200}),
                   await client.call_tool("propose_trade", {**BUY, "symbol": "A" * 200})]
        for result in results:
            if not result.is_error and result.structured_content["status"] == "approved":
                await call(client, "execute_trade", proposal_id=result.structured_content["proposal_id"])
    assert await broker_orders(database_url) <= 1  # at most the long-strategy AAPL order (SQLite stores it)
    assert (await _verify(database_url)).ok


# --- bounded lock waits (PostgreSQL) -----------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.parametrize(("held_row", "tool"), [
    ("SELECT * FROM trading_state FOR UPDATE", "execute_trade"),  # executions lock it (check-and-reserve)
    ("SELECT * FROM agent_trading_permissions WHERE agent_id = 'agent-1' FOR UPDATE", "execute_trade"),
    ("SELECT * FROM audit_head FOR UPDATE", "propose_trade"),  # every audited decision appends under it
])
async def test_a_row_held_by_another_transaction_answers_ledger_unavailable_within_the_bound(
        pg_url: str, market_open: object, held_row: str, tool: str) -> None:
    config = make_config(pg_url, _limited())
    async with connect(config) as client:
        [proposal] = await _proposals(client, 1)
        arguments = {"proposal_id": proposal} if tool == "execute_trade" else {**BUY, "reasoning": "row locked"}
        holder = db.create_engine(pg_url)
        try:
            async with holder.begin() as connection:
                await connection.execute(text(held_row))  # another replica (or a stuck session) does not let go
                started = time.monotonic()
                answer = await call_error(client, tool, **arguments)
                elapsed = time.monotonic() - started
        finally:
            await holder.dispose()
        assert answer.startswith("LEDGER_UNAVAILABLE: the database stayed locked"), answer
        assert elapsed < db.LOCK_WAIT_SECONDS + 3, elapsed
        # Released: nothing was half-written, and the same call now goes through.
        if tool == "execute_trade":
            assert (await call(client, tool, **arguments))["status"] == "filled"
        else:
            assert (await call(client, tool, **arguments))["status"] == "approved"
    assert (await _verify(pg_url)).ok


@pytest.mark.postgres
async def test_servers_starting_while_another_holds_the_start_up_locks_wait_beyond_the_bound(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica migrating or registering slowly makes the others wait their turn, never fail."""
    monkeypatch.setattr(db, "LOCK_WAIT_SECONDS", 0.3)  # row-lock bound of the engines created below
    config = make_config(pg_url, _limited("a"), _limited("b"))
    holder = db.create_engine(pg_url)
    started = asyncio.Event()

    async def hold_start_up_locks() -> None:
        async with holder.begin() as connection:
            await connection.execute(text("SET LOCAL lock_timeout = 0"))
            for key in (db.MIGRATION_LOCK, db.REGISTRY_LOCK):
                await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            started.set()
            await asyncio.sleep(1.5)  # five times the bound

    async def start() -> None:
        await started.wait()
        async with open_runtime(config):
            pass

    try:
        await asyncio.gather(hold_start_up_locks(), start(), start())
    finally:
        await holder.dispose()
    assert await count(pg_url, AgentPermissions) == 2
    assert (await _verify(pg_url)).ok
