"""When the gate's audit records of a tool call are committed, relative to what the call changes.

A call that can act at the broker commits its intent before anything reaches the broker; every call commits its
intent with its first change (a proposal and the records of who asked for it are one transaction), and never
leaves a change without its records."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import policies.gate
from broker.base import BrokerOrder, SubmitOrder
from broker.simulated import SimulatedBroker
from ledger import db
from ledger.models import AuditEvent
from policies import audit
from server.app import create_server
from tests.conftest import call, call_error, connect, make_config
from tests.ledger_probe import count, ledger_rows


async def _records(db_url: str) -> list[AuditEvent]:
    engine = db.create_engine(db_url)
    try:
        async with db.session_factory(engine)() as session:
            return list((await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars())
    finally:
        await engine.dispose()


def _of_tool(records: list[AuditEvent], tool: str) -> list[AuditEvent]:
    return [r for r in records if r.tool == tool]


async def test_a_proposal_is_recorded_by_its_intent_then_its_outcome(db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url)) as client:
        proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="r")
    records = _of_tool(await _records(db_url), "propose_trade")
    assert [r.kind for r in records] == ["tool.intent", "tool.outcome"]
    assert json.loads(records[0].payload)["args"]["symbol"] == "AAPL"
    assert json.loads(records[1].payload)["proposal_id"] == proposal["proposal_id"]
    assert records[0].seq < records[1].seq


async def test_a_decision_that_fails_leaves_no_proposal_and_records_intent_and_failure(
        db_url: str, market_open: object, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken_usage(*_: Any, **__: Any) -> Any:
        raise RuntimeError("disk on fire")

    config = make_config(db_url)
    async with connect(config) as client:
        await call(client, "get_trading_status")  # the database exists before the failure
        monkeypatch.setattr(policies.gate, "load_usage", broken_usage)
        await call_error(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="r")
    assert (await ledger_rows(db_url))["proposals"] == 0
    records = _of_tool(await _records(db_url), "propose_trade")
    assert [r.kind for r in records] == ["tool.intent", "tool.failed"]  # the rolled-back intent, written again
    engine = db.create_engine(db_url)
    try:
        async with db.session_factory(engine)() as session:
            assert (await audit.verify(session)).ok
    finally:
        await engine.dispose()


async def test_a_read_only_call_leaves_one_intent_and_one_outcome(db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url)) as client:
        await call(client, "get_market_data", symbols=["AAPL"])
        await call(client, "get_positions")
    records = await _records(db_url)
    for tool in ("get_market_data", "get_positions"):
        assert [r.kind for r in _of_tool(records, tool)] == ["tool.intent", "tool.outcome"]


async def test_an_order_reaches_the_broker_only_after_the_calls_intent_is_committed(
        db_url: str, market_open: object) -> None:
    seen_before_submit: list[int] = []

    class Witness(SimulatedBroker):
        async def submit_order(self, request: SubmitOrder) -> BrokerOrder:
            seen_before_submit.append(await count(db_url, AuditEvent, AuditEvent.tool == "execute_trade",
                                                  AuditEvent.kind == "tool.intent"))
            return await super().submit_order(request)

    def witness(sessions: async_sessionmaker[AsyncSession], clock: Any) -> SimulatedBroker:
        return Witness(sessions, clock=clock)

    async with Client(create_server(make_config(db_url), agent_id="agent-1", broker=witness)) as client:
        proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="r")
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert executed["status"] == "filled"
    assert seen_before_submit == [1]  # read from another connection: committed, not only written


async def test_a_denied_call_of_an_unknown_agent_records_intent_and_denial(db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url), agent_id="nobody") as client:
        await call_error(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="r")
    records = _of_tool(await _records(db_url), "propose_trade")
    assert [r.kind for r in records] == ["tool.intent", "tool.denied"]
    assert records[0].actor == "agent:nobody"
