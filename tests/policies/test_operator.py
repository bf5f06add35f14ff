"""The operator layer (policies/operator.py): an approver may shrink an order when approving it. Every check runs
again on the edited order, the approval binds the edited order, the record keeps both, and execution sends
exactly the approved order."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from ledger import db
from ledger.models import AgentTrade, SimOrder
from policies.operator import OperatorError
from policies.orders import OrderRequest
from tests.conftest import agent, call, connect, make_config
from tests.ledger_probe import broker_orders
from tests.tools.test_approval import (
    approvals_of,
    audit_records,
    change_proposal,
    operator,
    proposal_row,
    propose,
)


def operator_config(db_url: str, **limits: Any) -> Any:
    return make_config(db_url, agent(approval="operator", **limits))


async def sent_orders(db_url: str) -> list[SimOrder]:
    engine = db.create_engine(db_url)
    try:
        async with db.session_factory(engine)() as session:
            return list((await session.execute(select(SimOrder))).scalars())
    finally:
        await engine.dispose()


async def test_a_lower_qty_is_approved_recorded_beside_the_original_and_sent_exactly(
        db_url: str, market_open: object) -> None:
    config = operator_config(db_url)
    async with connect(config) as client:
        proposal_id = await propose(client, qty=10)
        before = await proposal_row(db_url, proposal_id)
        async with operator(config) as person:
            approved = await person.decide(proposal_id, approve=True, note="half, please", qty=Decimal(4))
        executed = await call(client, "execute_trade", proposal_id=proposal_id)
    original = OrderRequest(symbol="AAPL", side="buy", qty=Decimal(10))
    edited = OrderRequest(symbol="AAPL", side="buy", qty=Decimal(4))
    assert (approved.status, approved.qty, approved.order_hash) == ("approved", Decimal(4), edited.order_hash())
    assert before.order_hash == original.order_hash()
    assert approved.estimated_notional is not None and before.estimated_notional is not None
    assert approved.estimated_notional < before.estimated_notional
    [approval] = await approvals_of(db_url, proposal_id)
    assert (approval.order_hash, approval.original_order_hash) == (edited.order_hash(), original.order_hash())
    assert approval.original_order is not None and json.loads(approval.original_order)["qty"] == "10"
    assert (approval.decided_by, approval.trust, approval.note) == ("operator:test", "operator", "half, please")
    [(kind, actor, payload)] = await audit_records(db_url, "approval.")
    assert (kind, actor) == ("approval.approved", "operator:test")
    assert json.loads(payload["original_order"])["qty"] == "10" and json.loads(payload["approved_order"])["qty"] == "4"
    assert payload["order_hash"] == edited.order_hash()
    assert executed["status"] == "filled" and Decimal(executed["filled_qty"]) == 4
    [sent] = await sent_orders(db_url)
    assert sent.qty == Decimal(4)


async def test_a_better_limit_price_is_approved_and_sent(db_url: str, market_open: object) -> None:
    config = operator_config(db_url)
    async with connect(config) as client:
        quote = await call(client, "get_market_data", symbols=["AAPL"], data="quote")
        ask = Decimal(str(quote["data"][0]["ask"]))
        limit = (ask * Decimal("1.01")).quantize(Decimal("0.01"))
        better = (ask * Decimal("0.90")).quantize(Decimal("0.01"))
        proposal_id = await propose(client, qty=2, order_type="limit", limit_price=str(limit))
        async with operator(config) as person:
            await person.decide(proposal_id, approve=True, limit_price=better)
        await call(client, "execute_trade", proposal_id=proposal_id)
    [sent] = await sent_orders(db_url)
    assert (sent.qty, sent.limit_price) == (Decimal(2), better)


@pytest.mark.parametrize(("edit", "reason"), [
    ({"qty": Decimal(11)}, "qty must be above 0 and at most the proposed 10"),
    ({"qty": Decimal(0)}, "qty must be above 0"),
    ({"limit_price": Decimal(100)}, "applies to limit and stop_limit orders"),
])
async def test_an_edit_that_adds_risk_is_refused_and_changes_nothing(db_url: str, market_open: object,
                                                                     edit: dict[str, Decimal], reason: str) -> None:
    config = operator_config(db_url)
    async with connect(config) as client:
        proposal_id = await propose(client, qty=10)
        async with operator(config) as person:
            with pytest.raises(OperatorError, match=f"^INVALID_ARGUMENT: .*{reason}"):
                await person.decide(proposal_id, approve=True, **edit)
    row = await proposal_row(db_url, proposal_id)
    assert (row.status, row.qty) == ("pending_approval", Decimal(10))
    assert await approvals_of(db_url, proposal_id) == []


async def test_a_worse_limit_price_is_refused(db_url: str, market_open: object) -> None:
    config = operator_config(db_url)
    async with connect(config) as client:
        proposal_id = await propose(client, qty=1, order_type="limit", limit_price="100")
        async with operator(config) as person:
            with pytest.raises(OperatorError, match="a buy's limit price may only get better: at most 100"):
                await person.decide(proposal_id, approve=True, limit_price=Decimal("100.01"))
    assert await approvals_of(db_url, proposal_id) == []


async def test_an_edited_order_that_fails_a_check_is_not_approved_and_the_codes_are_given(
        db_url: str, market_open: object) -> None:
    config = operator_config(db_url, max_daily_trades=1)
    async with connect(config) as client:
        first = await propose(client, qty=1)
        second = await propose(client, qty=10, reasoning="another one")
        async with operator(config) as person:
            await person.decide(first, approve=True)
            assert (await call(client, "execute_trade", proposal_id=first))["status"] == "filled"
            with pytest.raises(OperatorError, match=r"^DAILY_TRADES_EXCEEDED: the edited order fails the checks"):
                await person.decide(second, approve=True, qty=Decimal(5))
    row = await proposal_row(db_url, second)
    assert (row.status, row.qty) == ("pending_approval", Decimal(10))
    assert await approvals_of(db_url, second) == []
    refused = [payload for kind, _, payload in await audit_records(db_url, "approval.refused_checks")]
    assert [r["codes"] for r in refused] == [["DAILY_TRADES_EXCEEDED"]]
    assert await broker_orders(db_url) == 1


async def test_the_stored_order_edited_behind_the_approvers_back_is_not_approved(db_url: str,
                                                                              market_open: object) -> None:
    """The approval binds the order the approver judged: execution sends the approved order or nothing."""
    config = operator_config(db_url)
    async with connect(config) as client:
        proposal_id = await propose(client, qty=10)
        async with operator(config) as person:
            await person.decide(proposal_id, approve=True, qty=Decimal(3))
        await change_proposal(db_url, proposal_id, qty=Decimal(10))
        result = await call(client, "execute_trade", proposal_id=proposal_id)
    assert [v["code"] for v in result["violations"]] == ["PROPOSAL_CHANGED"]
    engine = db.create_engine(db_url)
    try:
        async with db.session_factory(engine)() as session:
            assert (await session.execute(select(AgentTrade))).first() is None
    finally:
        await engine.dispose()
    assert await broker_orders(db_url) == 0
