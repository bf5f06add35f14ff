"""The operator layer with exits (policies/operator.py decide): an approver may tighten a protective stop, never
loosen it; the tightened order passes every check again, the approval binds it and the broker gets exactly it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from ledger.models import SimOrder
from policies.operator import OperatorError
from tests.alpaca_env import read
from tests.conftest import agent, call, connect, make_config
from tests.tools.test_approval import approvals_of, operator, proposal_row, propose

D = Decimal


async def bracket(client: Any) -> tuple[str, Decimal]:
    bid = D((await call(client, "get_market_data", symbols=["AAPL"]))["data"][0]["bid"])
    stop = (bid - 10).quantize(D("0.01"))
    proposal_id = await propose(client, qty=5, time_in_force="gtc", stop_loss=str(stop),
                                take_profit=str((bid + 10).quantize(D("0.01"))))
    return proposal_id, stop


async def test_an_approver_tightens_the_stop_and_the_broker_gets_exactly_that(db_url: str,
                                                                              market_open: object) -> None:
    config = make_config(db_url, agent(approval="operator"))
    async with connect(config) as client:
        proposal_id, stop = await bracket(client)
        async with operator(config) as person:
            approved = await person.decide(proposal_id, approve=True, stop_loss=stop + 5)
        assert approved.exits is not None and approved.exits["stop_loss"]["stop_price"] == str(stop + 5)
        executed = await call(client, "execute_trade", proposal_id=proposal_id)
        assert executed["status"] == "filled"
    legs = {row.leg_role: row for row in await read(db_url, select(SimOrder).where(SimOrder.parent_id.is_not(None)))}
    assert legs["stop_loss"].stop_price == stop + 5
    [approval] = await approvals_of(db_url, proposal_id)
    assert approval.original_order is not None and str(stop) in approval.original_order


@pytest.mark.parametrize(("move", "reason"), [(D(-1), "the stop can only be tightened"),
                                              (D(30), "must be below the entry and the market")])
async def test_an_approver_cannot_loosen_the_stop_or_put_it_past_the_market(
        db_url: str, market_open: object, move: Decimal, reason: str) -> None:
    config = make_config(db_url, agent(approval="operator"))
    async with connect(config) as client:
        proposal_id, stop = await bracket(client)
        async with operator(config) as person:
            with pytest.raises(OperatorError, match=reason):
                await person.decide(proposal_id, approve=True, stop_loss=stop + move)
    row = await proposal_row(db_url, proposal_id)
    assert row.status == "pending_approval" and row.exits is not None
    assert row.exits["stop_loss"]["stop_price"] == str(stop)
    assert await approvals_of(db_url, proposal_id) == []
