"""Who a proposal acts for, read in its own unit of work: a proposal begins on the agent as the gate last
identified it (no read of its own), and its unit of work reads the agent again, with the trading state, before it
decides. So whatever an operator changes between two calls (a limit, disabling the agent, the kill switch)
applies to the very next one, and a holding gained meanwhile is quoted before the agent's equity is marked.

The changes are made the way another process would make them (the command line): straight in the ledger,
behind the server's back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from mcp import Client
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.base import Quote
from broker.simulated import SimulatedBroker
from ledger import db
from ledger.models import AgentPermissions, AgentPosition, AuditEvent, TradeProposal, TradingState
from policies.violations import GateDenied
from server.app import create_server
from server.config import Config
from server.runtime import open_runtime
from tests.conftest import call, call_error, make_config

BUY_AAPL = {"symbol": "AAPL", "side": "buy", "qty": 2, "reasoning": "identity"}


@asynccontextmanager
async def behind_the_servers_back(url: str) -> AsyncIterator[AsyncSession]:
    """A unit of work of another process on the same ledger."""
    engine = db.create_engine(url)
    try:
        async with db.transaction(db.session_factory(engine)) as session:
            yield session
    finally:
        await engine.dispose()


async def set_permissions(url: str, **values: Any) -> None:
    async with behind_the_servers_back(url) as session:
        row = await session.get(AgentPermissions, "agent-1")
        assert row is not None
        for name, value in values.items():
            setattr(row, name, value)


async def stored(url: str, query: Any) -> Any:
    engine = db.create_engine(url)
    try:
        async with db.session_factory(engine)() as session:
            return (await session.execute(query)).scalar()
    finally:
        await engine.dispose()


def codes(result: dict[str, Any]) -> list[str]:
    return [v["code"] for v in result["violations"]]


async def test_a_limit_lowered_between_two_proposals_applies_to_the_next_one(
        database_url: str, market_open: object) -> None:
    async with Client(create_server(make_config(database_url), agent_id="agent-1")) as client:
        assert (await call(client, "propose_trade", **BUY_AAPL))["status"] == "approved"
        await set_permissions(database_url, max_trade_size=Decimal(100))
        second = await call(client, "propose_trade", **{**BUY_AAPL, "qty": 3})
        assert second["status"] == "rejected"
        assert "ORDER_NOTIONAL_EXCEEDS_MAX" in codes(second)
        await set_permissions(database_url, max_trade_size=Decimal(5000))
        assert (await call(client, "propose_trade", **{**BUY_AAPL, "qty": 4}))["status"] == "approved"


async def test_an_agent_disabled_between_two_proposals_is_refused_and_nothing_is_stored(
        database_url: str, market_open: object) -> None:
    async with Client(create_server(make_config(database_url), agent_id="agent-1")) as client:
        await call(client, "propose_trade", **BUY_AAPL)
        await set_permissions(database_url, enabled=False)
        error = await call_error(client, "propose_trade", **{**BUY_AAPL, "qty": 3})
        assert error.startswith("AGENT_DISABLED"), error
    assert await stored(database_url, select(func.count()).select_from(TradeProposal)) == 1
    denied = await stored(database_url, select(func.count()).select_from(AuditEvent)
                          .where(AuditEvent.tool == "propose_trade", AuditEvent.kind == "tool.denied"))
    assert denied == 1


async def test_an_agent_disabled_before_a_call_that_fails_early_is_refused_as_disabled(
        database_url: str, market_open: object) -> None:
    async with Client(create_server(make_config(database_url), agent_id="agent-1")) as client:
        await call(client, "propose_trade", **BUY_AAPL)
        await set_permissions(database_url, enabled=False)
        # The call fails before any unit of work (its reasoning is empty): still answered as a disabled agent.
        error = await call_error(client, "propose_trade", **{**BUY_AAPL, "reasoning": " "})
        assert error.startswith("AGENT_DISABLED"), error


async def test_a_halt_between_two_proposals_rejects_the_next_one(database_url: str, market_open: object) -> None:
    async with Client(create_server(make_config(database_url), agent_id="agent-1")) as client:
        await call(client, "propose_trade", **BUY_AAPL)
        async with behind_the_servers_back(database_url) as session:
            await session.merge(TradingState(scope="*", state="halted", reason="kill switch",
                                             changed_by="operator:ops", changed_at=datetime.now(UTC)))
        second = await call(client, "propose_trade", **{**BUY_AAPL, "qty": 3})
    assert second["status"] == "rejected"
    assert "TRADING_HALTED" in codes(second)


class QuoteLog(SimulatedBroker):
    """The simulated broker, noting the symbols of every quote request."""

    asked: ClassVar[list[list[str]]] = []

    async def get_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        QuoteLog.asked.append(list(symbols))
        return await super().get_quotes(symbols)


def _quote_log(sessions: async_sessionmaker[AsyncSession], clock: Any) -> SimulatedBroker:
    return QuoteLog(sessions, clock=clock)


async def test_a_holding_gained_since_the_last_identification_is_quoted_before_the_decision(
        db_url: str, market_open: object) -> None:
    QuoteLog.asked = []
    async with Client(create_server(make_config(db_url), agent_id="agent-1", broker=_quote_log)) as client:
        await call(client, "propose_trade", **BUY_AAPL)  # the gate now knows the agent: it holds nothing
        async with behind_the_servers_back(db_url) as session:
            session.add(AgentPosition(agent_id="agent-1", symbol="MSFT", qty=Decimal(5),
                                      avg_entry_price=Decimal(1), realized_pl=Decimal(0),
                                      updated_at=datetime.now(UTC)))
        QuoteLog.asked = []
        await call(client, "propose_trade", **{**BUY_AAPL, "qty": 3})
    # Asked for the order's symbol as last known, then again with the holding its unit of work found.
    assert QuoteLog.asked[-1] == ["AAPL", "MSFT"]


async def _gate_call(config: Config, operation: Any) -> tuple[Any, list[Any]]:
    """Run `operation` through Gate.handle as a proposal runs (acts_at_broker=False), after one call that
    identified the agent and a limit changed behind the gate's back; returns its result and the agents it
    was run with."""
    seen: list[Any] = []
    async with open_runtime(config, reconcile=False) as runtime:
        gate = runtime.gate

        async def first(agent: Any) -> None:
            return None

        await gate.handle("probe", "agent-1", {}, first, acts_at_broker=False)
        await set_permissions(config.server.database_url, max_trade_size=Decimal(123))

        async def noting(agent: Any) -> Any:
            seen.append(agent)
            return await operation(gate, agent)

        try:
            result: Any = await gate.handle("probe", "agent-1", {}, noting, acts_at_broker=False)
        except GateDenied as denied:
            result = denied
    return result, seen


async def test_a_call_whose_unit_finds_the_agent_changed_runs_again_on_the_agent_as_it_is(
        db_url: str, market_open: object) -> None:
    async def records_something(gate: Any, agent: Any) -> Decimal:
        async with gate._unit():
            pass
        return Decimal(agent.limits.max_trade_size)

    result, seen = await _gate_call(make_config(db_url), records_something)
    assert [agent.limits.max_trade_size for agent in seen] == [Decimal(5000), Decimal(123)]
    assert result == Decimal(123)


async def test_a_call_without_a_unit_is_answered_on_the_agent_as_it_is(db_url: str, market_open: object) -> None:
    async def answers(gate: Any, agent: Any) -> Decimal:
        return Decimal(agent.limits.max_trade_size)

    result, seen = await _gate_call(make_config(db_url), answers)
    assert result == Decimal(123)
    assert [agent.limits.max_trade_size for agent in seen] == [Decimal(5000), Decimal(123)]


async def test_a_proposal_reads_the_agent_once_with_the_trading_state(db_url: str, market_open: object) -> None:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    async with Client(create_server(make_config(db_url), agent_id="agent-1")) as client:
        await call(client, "propose_trade", **BUY_AAPL)
        event.listen(Engine, "before_cursor_execute", record)
        try:
            await call(client, "propose_trade", **{**BUY_AAPL, "qty": 3})
        finally:
            event.remove(Engine, "before_cursor_execute", record)
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    identity = [s for s in reads if "FROM agent_trading_permissions" in s]
    assert len(identity) == 1 and "trading_state" in identity[0]
    assert not [s for s in reads if "FROM trading_state" in s and "agent_trading_permissions" not in s]


# --- an execution of a proposal this server stored approved begins unread (Gate.approved_unread) -----------------

async def _sent_orders(url: str) -> int:
    from ledger.models import SimOrder
    return int(await stored(url, select(func.count()).select_from(SimOrder)))


async def test_an_agent_disabled_after_its_proposal_was_approved_is_refused_at_execution_and_nothing_is_sent(
        database_url: str, market_open: object) -> None:
    async with Client(create_server(make_config(database_url), agent_id="agent-1")) as client:
        proposal = await call(client, "propose_trade", **BUY_AAPL)
        assert proposal["status"] == "approved"
        await set_permissions(database_url, enabled=False)
        error = await call_error(client, "execute_trade", proposal_id=proposal["proposal_id"])
        assert error.startswith("AGENT_DISABLED"), error
    assert await _sent_orders(database_url) == 0


async def test_a_limit_lowered_after_a_proposal_was_approved_applies_to_its_execution(
        database_url: str, market_open: object) -> None:
    async with Client(create_server(make_config(database_url), agent_id="agent-1")) as client:
        proposal = await call(client, "propose_trade", **BUY_AAPL)
        assert proposal["status"] == "approved"
        await set_permissions(database_url, max_trade_size=Decimal(100))
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert executed["status"] == "rejected"
    assert "ORDER_NOTIONAL_EXCEEDS_MAX" in codes(executed)
    assert await _sent_orders(database_url) == 0


async def test_an_auto_approval_ceiling_lowered_after_a_proposal_was_approved_sends_it_back_to_a_person(
        database_url: str, market_open: object) -> None:
    async with Client(create_server(make_config(database_url), agent_id="agent-1")) as client:
        proposal = await call(client, "propose_trade", **BUY_AAPL)
        assert proposal["status"] == "approved"
        await set_permissions(database_url, auto_approve_max_notional=Decimal(1))
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert executed["status"] == "awaiting_approval"
    assert "APPROVAL_REQUIRED" in codes(executed)
    assert await _sent_orders(database_url) == 0


async def test_a_proposal_executed_twice_answers_its_one_order_the_second_time(
        database_url: str, market_open: object) -> None:
    async with Client(create_server(make_config(database_url), agent_id="agent-1")) as client:
        proposal = await call(client, "propose_trade", **BUY_AAPL)
        first = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
        second = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert first["status"] == second["status"] == "filled"
    assert first["order_id"] == second["order_id"]
    assert await _sent_orders(database_url) == 1
