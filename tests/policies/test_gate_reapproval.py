"""An auto-approval is judged again at execution on the price then (policies/gate.py): a proposal approved
automatically at $900 does not fill at $1,700 without a person; it goes back to waiting for approval."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.base import Quote
from broker.simulated import SimulatedBroker
from server.config import Config
from tests.conftest import agent, call, make_config
from tests.ledger_probe import broker_orders
from tests.policies.test_gate import Clock, connect_with_broker
from tests.tools.test_approval import approvals_of, audit_records, operator, proposal_row


def repriced(symbol: str) -> tuple[Callable[[async_sessionmaker[AsyncSession], Clock], SimulatedBroker],
                                   Callable[[Decimal], None]]:
    """The simulated market with a dial that sets one symbol's quote (bid a cent under the ask)."""
    price: dict[str, Decimal] = {}

    class PricedFeed(SimulatedBroker):
        async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
            quotes = await super().get_quotes(symbols)
            if "now" in price and symbol in quotes:
                ask = price["now"]
                quotes[symbol] = replace(quotes[symbol], bid=ask - Decimal("0.01"), ask=ask, last=ask)
            return quotes

    return (lambda sessions, clock: PricedFeed(sessions, clock=clock)), (lambda p: price.update(now=p))


def auto_config(db_url: str) -> Config:
    return make_config(db_url, agent(approval="auto", auto_approve_max_notional=1000, max_trade_size=5000))


async def test_an_auto_approval_above_the_limit_at_the_price_then_waits_for_a_person(
        db_url: str, market_open: object) -> None:
    feed, set_price = repriced("AAPL")
    set_price(Decimal(900))
    async with connect_with_broker(auto_config(db_url), feed) as client:
        proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="r")
        set_price(Decimal(1700))
        result = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert proposal["status"] == "approved" and Decimal(proposal["estimated_notional"]) == 900
    assert result["status"] == "awaiting_approval"
    [violation] = result["violations"]
    assert violation["code"] == "APPROVAL_REQUIRED"
    assert "auto-approved at $900.00" in violation["message"] and "$1,700.00" in violation["message"]
    assert "auto-approval limit of $1,000.00" in violation["message"]
    row = await proposal_row(db_url, proposal["proposal_id"])
    assert (row.status, row.decided_by, row.estimated_notional) == ("pending_approval", None, Decimal(1700))
    assert await broker_orders(db_url) == 0
    [(_kind, actor, payload)] = await audit_records(db_url, "approval.withdrawn")
    assert (actor, payload["approved_notional"], payload["notional_now"]) == ("policy:auto", "900", "1700")


async def test_a_price_still_under_the_limit_fills_as_approved(db_url: str, market_open: object) -> None:
    feed, set_price = repriced("AAPL")
    set_price(Decimal(900))
    async with connect_with_broker(auto_config(db_url), feed) as client:
        proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="r")
        set_price(Decimal(990))
        result = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert result["status"] == "filled" and await broker_orders(db_url) == 1


async def test_once_a_person_approves_it_the_order_goes_once(db_url: str, market_open: object) -> None:
    config = auto_config(db_url)
    feed, set_price = repriced("AAPL")
    set_price(Decimal(900))
    async with connect_with_broker(config, feed) as client:
        proposal_id = (await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="r")
                       )["proposal_id"]
        set_price(Decimal(1700))
        waiting = await asyncio.gather(*(call(client, "execute_trade", proposal_id=proposal_id) for _ in range(3)))
        assert {r["status"] for r in waiting} == {"awaiting_approval"}
        async with operator(config) as person:
            await person.decide(proposal_id, approve=True, note="seen at 1700")
        executed = await call(client, "execute_trade", proposal_id=proposal_id)
        again = await call(client, "execute_trade", proposal_id=proposal_id)
    assert executed["status"] == again["status"] == "filled"
    assert await broker_orders(db_url) == 1
    assert len(await audit_records(db_url, "approval.withdrawn")) == 1
    assert [(a.via, a.trust) for a in await approvals_of(db_url, proposal_id)] == [("auto", "auto"),
                                                                                   ("operator", "operator")]
