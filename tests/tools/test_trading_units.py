"""How many units of work (write transactions, ledger.db.UnitCounter) a trading call begins, through the real
MCP client: an execution is three (the gate's reservation, the broker's submit, the gate's outcome), or two when
the broker's orders are rows of our own database (the simulated broker's submit rides in the outcome's unit), a
proposal one, a denied execution at most two.

The simulated broker keeps its account in the same database and answers `get_account` from a unit of its own;
the gate asks for it at most once a second (policies/gate.py ACCOUNT_MAX_AGE), so whether a call asks depends
on the clock. Those units are counted apart and left out: they belong to the snapshot's cache, not to the call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, ClassVar

import pytest
import time_machine
from mcp import Client
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.base import Account, BrokerOrder, SubmitOrder
from broker.simulated import SimulatedBroker
from ledger import kept_reads
from ledger.db import UnitCounter
from server.app import create_server
from server.config import Config
from tests.conftest import agent, call, make_config
from tests.tools.test_approval import Human, elicit_config

BUY_AAPL = {"symbol": "AAPL", "side": "buy", "qty": 5, "reasoning": "units"}


class CountingBroker(SimulatedBroker):
    """The simulated broker, noting the units begun when an order is submitted and those its account reads
    begin."""

    account_units: ClassVar[int] = 0
    submits: ClassVar[list[tuple[int, int]]] = []  # units begun (before, after) each submit

    async def get_account(self) -> Account:
        before = UnitCounter.begun
        try:
            return await super().get_account()
        finally:
            CountingBroker.account_units += UnitCounter.begun - before

    async def submit_order(self, request: SubmitOrder) -> BrokerOrder:
        before = UnitCounter.begun
        order = await super().submit_order(request)
        CountingBroker.submits.append((before, UnitCounter.begun))
        return order


def _counting(sessions: async_sessionmaker[AsyncSession], clock: Any) -> SimulatedBroker:
    return CountingBroker(sessions, clock=clock)


@asynccontextmanager
async def _client(config: Config, **options: Any) -> AsyncIterator[Client]:
    CountingBroker.account_units, CountingBroker.submits = 0, []
    async with Client(create_server(config, agent_id="agent-1", broker=_counting), **options) as client:
        yield client


def _units_since(start: int) -> int:
    """Units begun since `start`, without the broker's account reads."""
    return UnitCounter.begun - start - CountingBroker.account_units


async def test_executing_an_approved_market_order_begins_two_units_the_broker_writing_in_the_second(
        db_url: str, market_open: object) -> None:
    """The simulated broker's orders are rows of our database: its writes ride in the outcome's unit (one COMMIT
    for the order and its outcome), after the unit that reserved the order and recorded its intent."""
    async with _client(make_config(db_url)) as client:
        proposal = await call(client, "propose_trade", **BUY_AAPL)
        CountingBroker.account_units = 0
        start = UnitCounter.begun
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
        units = _units_since(start)
    assert executed["status"] == "filled"
    assert units == 2
    [(before_submit, after_submit)] = CountingBroker.submits
    # the reservation, then the outcome's unit, in which the broker is sent the order and begins none of its own
    assert before_submit - start - CountingBroker.account_units == 2
    assert after_submit == before_submit


class OutsideBroker(CountingBroker):
    """A broker whose orders are not in our database (as Alpaca's are not): it cannot join a unit of work."""

    def joins_units_of(self, sessions: async_sessionmaker[AsyncSession]) -> bool:
        return False


async def test_executing_at_a_broker_outside_the_ledger_begins_three_units_with_the_broker_between(
        db_url: str, market_open: object) -> None:
    config = make_config(db_url)
    async with Client(create_server(config, agent_id="agent-1",
                                    broker=lambda sessions, clock: OutsideBroker(sessions, clock=clock))) as client:
        CountingBroker.account_units, CountingBroker.submits = 0, []
        proposal = await call(client, "propose_trade", **BUY_AAPL)
        CountingBroker.account_units = 0
        start = UnitCounter.begun
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
        units = _units_since(start)
    assert executed["status"] == "filled"
    assert units == 3
    [(before_submit, after_submit)] = CountingBroker.submits
    # one unit (the reservation) before the broker, the broker's own, one (the outcome) after
    assert before_submit - start - CountingBroker.account_units == 1
    assert after_submit - before_submit == 1


async def test_a_proposal_begins_one_unit(db_url: str, market_open: object) -> None:
    async with _client(make_config(db_url)) as client:
        await call(client, "propose_trade", **BUY_AAPL)
        CountingBroker.account_units = 0
        start = UnitCounter.begun
        proposal = await call(client, "propose_trade", **{**BUY_AAPL, "qty": 3})
        units = _units_since(start)
    assert proposal["status"] == "approved"
    assert units == 1


async def test_executing_a_proposal_rejected_when_proposed_begins_one_unit(db_url: str, market_open: object) -> None:
    async with _client(make_config(db_url)) as client:
        rejected = await call(client, "propose_trade", symbol="TSLA", side="buy", qty=1, reasoning="not allowed")
        CountingBroker.account_units = 0
        start = UnitCounter.begun
        executed = await call(client, "execute_trade", proposal_id=rejected["proposal_id"])
        units = _units_since(start)
    assert executed["status"] == "rejected"
    assert units <= 2
    assert CountingBroker.submits == []


async def test_an_execution_denied_by_the_checks_at_execution_begins_at_most_two_units(
        db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent(max_daily_trades=1, duplicate_window_seconds=0))
    async with _client(config) as client:
        first = await call(client, "propose_trade", **BUY_AAPL)
        second = await call(client, "propose_trade", **{**BUY_AAPL, "qty": 2})
        await call(client, "execute_trade", proposal_id=first["proposal_id"])
        CountingBroker.account_units = 0
        start = UnitCounter.begun
        denied = await call(client, "execute_trade", proposal_id=second["proposal_id"])
        units = _units_since(start)
    assert denied["status"] == "rejected"
    assert "DAILY_TRADES_EXCEEDED" in [v["code"] for v in denied["violations"]]
    assert units <= 2
    assert len(CountingBroker.submits) == 1  # the first order only


async def test_executing_an_expired_proposal_begins_one_unit(db_url: str,
                                                             market_open: time_machine.Coordinates) -> None:
    config = make_config(db_url)
    async with _client(config) as client:
        proposal = await call(client, "propose_trade", **BUY_AAPL)
        market_open.shift(timedelta(seconds=config.server.proposal_ttl_seconds + 1))
        start = UnitCounter.begun
        CountingBroker.account_units = 0
        expired = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
        units = _units_since(start)
    assert expired["status"] == "expired"
    assert units == 1  # the expiry, the call's intent and its outcome
    assert CountingBroker.submits == []


async def test_a_persons_decline_in_the_client_begins_one_unit(db_url: str, market_open: object) -> None:
    async with _client(elicit_config(db_url), elicitation_callback=Human(("decline", None))) as client:
        proposal = await call(client, "propose_trade", **BUY_AAPL)
        assert proposal["status"] == "pending_approval"
        start = UnitCounter.begun
        CountingBroker.account_units = 0
        declined = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
        units = _units_since(start)
    assert declined["status"] == "declined"
    assert units == 1  # the decision, the call's intent and its outcome
    assert CountingBroker.submits == []


@pytest.fixture
def no_kept_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads keep no connection between them (ledger/kept_reads.py), so each read opens one and is seen."""
    monkeypatch.setattr(kept_reads, "MAX_KEPT", 0)


def _noting_reads(reads: list[int]) -> Any:
    """A broker factory that notes, for every connection opened on the engine, the units begun so far. The
    test keeps no read connections (kept_reads.MAX_KEPT = 0), so every read opens one."""

    def broker(sessions: async_sessionmaker[AsyncSession], clock: Any) -> SimulatedBroker:
        engine = sessions.kw["bind"].sync_engine
        event.listen(engine, "engine_connect", lambda connection: reads.append(UnitCounter.begun))
        return CountingBroker(sessions, clock=clock)

    return broker


async def test_executing_an_order_approved_elsewhere_reads_the_agent_and_its_proposal_in_one_read_before_its_units(
        db_url: str, market_open: object, no_kept_reads: None) -> None:
    """The approval resolver reads the agent and the proposal in one read (a pooled connection), which the
    execution reuses before its units of work read both again under their locks: one read, not two. Here the
    proposal was made through another server (another process), so this one knows nothing of it."""
    reads: list[int] = []
    CountingBroker.account_units, CountingBroker.submits = 0, []
    async with Client(create_server(make_config(db_url), agent_id="agent-1", broker=_counting)) as elsewhere:
        proposal = await call(elsewhere, "propose_trade", **BUY_AAPL)
    async with Client(create_server(make_config(db_url), agent_id="agent-1", broker=_noting_reads(reads))) as client:
        await call(client, "propose_trade", **{**BUY_AAPL, "qty": 1})  # the broker's account is read (and kept)
        start, reads[:] = UnitCounter.begun, []
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert executed["status"] == "filled"
    assert reads.count(start) == 1  # connections opened before the execution's first unit of work: one read


async def test_executing_an_order_this_server_stored_approved_reads_nothing_before_its_units(
        db_url: str, market_open: object, no_kept_reads: None) -> None:
    """A proposal this server stored approved by policy a moment ago: nobody is asked about it, so the resolver
    reads neither it nor the agent; the execution's first unit of work reads both, under its locks."""
    reads: list[int] = []
    CountingBroker.account_units, CountingBroker.submits = 0, []
    async with Client(create_server(make_config(db_url), agent_id="agent-1", broker=_noting_reads(reads))) as client:
        proposal = await call(client, "propose_trade", **BUY_AAPL)
        start, reads[:] = UnitCounter.begun, []
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert executed["status"] == "filled"
    assert reads.count(start) == 0
    assert len(CountingBroker.submits) == 1


async def test_an_execution_reads_the_agents_account_row_once_to_decide_and_once_to_book_its_fill(
        db_url: str, market_open: object) -> None:
    """The decision's usage read brings the stored equity peak and trading day with the cash and positions, so
    keeping them current does not read the row again (the outcome's unit reads it with the position it books)."""
    statements: list[str] = []

    def broker(sessions: async_sessionmaker[AsyncSession], clock: Any) -> SimulatedBroker:
        engine = sessions.kw["bind"].sync_engine
        event.listen(engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *rest: statements.append(statement))
        return CountingBroker(sessions, clock=clock)

    CountingBroker.account_units, CountingBroker.submits = 0, []
    async with Client(create_server(make_config(db_url), agent_id="agent-1", broker=broker)) as client:
        first = await call(client, "propose_trade", **BUY_AAPL)
        await call(client, "execute_trade", proposal_id=first["proposal_id"])  # the account row exists from now
        proposal = await call(client, "propose_trade", **{**BUY_AAPL, "qty": 2})
        statements.clear()
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert executed["status"] == "filled"
    account_reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "agent_accounts" in s]
    assert len(account_reads) == 2
