"""Read-only tool calls through the gate (Gate.handle_read): the agent is identified and the ledger read in one
read transaction, the broker asked outside it, and the call's intent and outcome appended together in ONE
unit of work afterwards. A read writes nothing else, unless the broker reports a change to one of the agent's
orders (a reconciliation, audited as such and after the call's intent)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from mcp import Client
from sqlalchemy import select

import policies.gate
from ledger import db
from ledger.models import AgentAccount, AuditEvent
from policies import audit
from tests.alpaca_env import alpaca_config, eventually, trade
from tests.broker.alpaca_contract_server import FAKE_SECRET_KEY, AlpacaContractServer
from tests.conftest import agent, call, call_error, connect, make_config
from tests.ledger_probe import count

pytest_plugins = ["tests.alpaca_fixtures"]  # the alpaca_server and alpaca_keys fixtures

READS: dict[str, dict[str, Any]] = {
    "get_positions": {}, "get_orders": {"status": "all"}, "get_trading_status": {},
    "get_market_data": {"symbols": ["AAPL"], "data": "bars", "limit": 5, "indicators": ["sma_3"]},
}
# The simulated broker keeps its book in the ledger: its account (get_positions asks for it) is a unit of
# its own. These three ask it nothing that touches the database.
SIMULATED_READS = ("get_orders", "get_trading_status", "get_market_data")


async def _records(db_url: str) -> list[AuditEvent]:
    engine = db.create_engine(db_url)
    try:
        async with db.session_factory(engine)() as session:
            return list((await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars())
    finally:
        await engine.dispose()


async def _units_of(work: Callable[[], Awaitable[Any]]) -> int:
    before = db.UnitCounter.begun
    await work()
    return db.UnitCounter.begun - before


async def _buy(client: Client, **order: Any) -> dict[str, Any]:
    proposal = await call(client, "propose_trade", **{"symbol": "AAPL", "side": "buy", "qty": 2,
                                                      "reasoning": "r", **order})
    return await call(client, "execute_trade", proposal_id=proposal["proposal_id"])


@pytest.mark.parametrize("tool", SIMULATED_READS)
async def test_a_read_tool_begins_one_unit_of_work(tool: str, database_url: str, market_open: object) -> None:
    async with connect(make_config(database_url, reconcile_interval_seconds=3600)) as client:
        await _buy(client)  # a filled order and a position, nothing left for the broker to move
        await call(client, tool, **READS[tool])
        assert await _units_of(lambda: call(client, tool, **READS[tool])) == 1


async def test_reads_next_to_resting_orders_and_positions_begin_one_unit_each(
        database_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.set_price("AAPL", "190.00")
    async with connect(alpaca_config(database_url, alpaca_server, reconcile_interval_seconds=3600)) as client:
        bought = await _buy(client)
        await eventually(lambda: trade(database_url, bought["order_id"]), lambda t: t.status == "filled")
        for limit_price in ("150", "151"):  # two resting orders: the broker is asked for its open orders
            await _buy(client, order_type="limit", limit_price=limit_price, time_in_force="gtc")
        for tool, args in READS.items():
            await call(client, tool, **args)
            assert await _units_of(partial(call, client, tool, **args)) == 1, tool
        open_orders = (await call(client, "get_orders", status="open"))["orders"]
    assert sorted(o["limit_price"] for o in open_orders) == ["150", "151"]


async def test_a_read_records_its_intent_and_outcome_next_to_each_other(db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url)) as client:
        await call(client, "get_market_data", **READS["get_market_data"])
        await call(client, "get_orders", status="closed", limit=7)
    records = await _records(db_url)
    for tool in ("get_market_data", "get_orders"):
        intent, outcome = [r for r in records if r.tool == tool]
        assert (intent.kind, outcome.kind) == ("tool.intent", "tool.outcome")
        assert outcome.seq == intent.seq + 1 and intent.actor == outcome.actor == "agent:agent-1"
    orders_intent = next(r for r in records if r.tool == "get_orders")
    assert json.loads(orders_intent.payload)["args"] == {"status": "closed", "limit": 7}
    market = next(r for r in records if r.tool == "get_market_data" and r.kind == "tool.outcome")
    assert json.loads(market.payload)["bars"] == 5  # bulky answers are summarised (a count), not copied


async def test_an_agent_that_only_reads_gets_its_capital_as_cash_and_no_account_row(
        db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url, agent(capital=25000))) as client:
        positions = await call(client, "get_positions")
        status = await call(client, "get_trading_status")
        assert await count(db_url, AgentAccount) == 0  # created by the agent's first decision, not by a look
        await _buy(client)
        assert await count(db_url, AgentAccount) == 1
    assert positions["cash"] == "25000.00" and positions["positions"] == []
    assert Decimal(status["used_today"]["daily_pnl"]) == 0 and status["used_today"]["trades"] == 0


async def test_a_read_by_an_unknown_agent_records_its_intent_and_denial_in_one_unit(
        db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url), agent_id="nobody") as client:
        units = await _units_of(lambda: call_error(client, "get_positions"))
    records = [r for r in await _records(db_url) if r.tool == "get_positions"]
    assert units == 1
    assert [r.kind for r in records] == ["tool.intent", "tool.denied"]
    assert {r.actor for r in records} == {"agent:nobody"}
    assert json.loads(records[1].payload)["codes"] == ["AGENT_UNKNOWN"]


async def test_a_read_by_a_disabled_agent_is_denied_and_recorded(db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url, agent(enabled=False))) as client:
        text = await call_error(client, "get_trading_status")
    assert text.startswith("AGENT_DISABLED")
    records = [r for r in await _records(db_url) if r.tool == "get_trading_status"]
    assert [r.kind for r in records] == ["tool.intent", "tool.denied"]
    assert json.loads(records[1].payload)["codes"] == ["AGENT_DISABLED"]


async def test_a_read_with_bad_arguments_records_its_intent_and_denial(db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url)) as client:
        text = await call_error(client, "get_market_data", symbols=["AAPL"], indicators=["sma_0"])
    assert text.startswith("INVALID_ARGUMENT")
    records = [r for r in await _records(db_url) if r.tool == "get_market_data"]
    assert [r.kind for r in records] == ["tool.intent", "tool.denied"]
    assert json.loads(records[0].payload)["args"]["indicators"] == ["sma_0"]


async def test_a_fill_a_read_finds_is_booked_after_the_reads_intent(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.set_price("AAPL", "190.00")
    async with connect(alpaca_config(db_url, alpaca_server, reconcile_interval_seconds=3600)) as client:
        resting = await _buy(client, order_type="limit", limit_price="189.50", time_in_force="gtc")
        alpaca_server.fill_order(resting["order_id"], price="189.40")
        orders = await call(client, "get_orders", status="all")
        positions = await call(client, "get_positions")
    assert [o["status"] for o in orders["orders"]] == ["filled"]
    assert [p["qty"] for p in positions["positions"]] == ["2"]
    records = await _records(db_url)
    start = next(i for i, r in enumerate(records) if r.tool == "get_orders")
    assert [(r.kind, r.actor) for r in records[start:start + 2]] == [("tool.intent", "agent:agent-1"),
                                                                     ("order.updated", "system:sync")]
    assert [r.kind for r in records if r.tool == "get_orders"] == ["tool.intent", "tool.outcome"]
    engine = db.create_engine(db_url)
    try:
        async with db.session_factory(engine)() as session:
            assert (await audit.verify(session)).ok
    finally:
        await engine.dispose()


async def test_a_read_while_another_process_holds_the_write_lock_answers_ledger_unavailable_within_its_bound(
        db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url)) as client:
        await call(client, "get_trading_status")  # the runtime is open
        holder = sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock and does not let go
            started = time.monotonic()
            text = await call_error(client, "get_orders")
            elapsed = time.monotonic() - started
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert text.startswith("LEDGER_UNAVAILABLE"), text
        assert "could not be recorded" in text and elapsed < 8.0, (text, elapsed)
        await call(client, "get_orders")  # and answers again once the lock is let go
    assert [r.kind for r in await _records(db_url) if r.tool == "get_orders"] == ["tool.intent", "tool.outcome"]


async def test_a_read_that_fails_records_its_failure_with_the_brokers_secret_masked(
        db_url: str, alpaca_server: AlpacaContractServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def leaking_usage(*_: Any, **__: Any) -> Any:
        raise RuntimeError(f"could not read usage with secret={FAKE_SECRET_KEY}")

    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        await call(client, "get_trading_status")
        monkeypatch.setattr(policies.gate, "load_usage", leaking_usage)
        text = await call_error(client, "get_trading_status")
    records = [r for r in await _records(db_url) if r.tool == "get_trading_status"]
    assert [r.kind for r in records][-2:] == ["tool.intent", "tool.failed"]
    assert FAKE_SECRET_KEY not in records[-1].payload and FAKE_SECRET_KEY not in text
    assert json.loads(records[-1].payload)["error"] == "RuntimeError"
