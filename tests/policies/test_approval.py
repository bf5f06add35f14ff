"""Approval rules (policies/approval.py): who must say yes, per mode, in paper and in live."""

from __future__ import annotations

from decimal import Decimal

import pytest

from policies.approval import ApprovalPolicy, ShrinkRefused, approval_for, default_policy, shrink
from policies.orders import OrderRequest


def test_live_defaults_to_an_operator_and_no_auto_approval() -> None:
    policy = default_policy(None, None, live=True)
    assert policy == ApprovalPolicy(mode="operator", auto_approve_max_notional=Decimal(0))
    assert approval_for(policy, Decimal("0.01")) == "pending_approval"


def test_paper_defaults_to_auto_up_to_1000() -> None:
    policy = default_policy(None, None, live=False)
    assert policy == ApprovalPolicy(mode="auto", auto_approve_max_notional=Decimal(1000))
    assert approval_for(policy, Decimal(1000)) == "approved"
    assert approval_for(policy, Decimal("1000.01")) == "pending_approval"


def test_auto_in_live_only_when_asked_for_and_even_then_no_ceiling_unless_given() -> None:
    assert approval_for(default_policy("auto", None, live=True), Decimal(1)) == "pending_approval"
    asked = default_policy("auto", Decimal(500), live=True)
    assert approval_for(asked, Decimal(500)) == "approved"
    assert approval_for(asked, Decimal(501)) == "pending_approval"


@pytest.mark.parametrize("mode", ["elicit", "operator"])
@pytest.mark.parametrize("live", [False, True])
def test_elicit_and_operator_always_need_a_person(mode: str, live: bool) -> None:
    policy = default_policy(mode, Decimal(1_000_000), live=live)
    assert approval_for(policy, Decimal(1)) == "pending_approval"


def test_an_unpriced_order_is_never_auto_approved() -> None:
    assert approval_for(default_policy("auto", Decimal(1_000_000), live=False), None) == "pending_approval"


# --- an approver shrinking an order ------------------------------------------------------------------

BUY_LIMIT = OrderRequest(symbol="AAPL", side="buy", qty=Decimal(10), order_type="limit", limit_price=Decimal(180))
SELL_LIMIT = BUY_LIMIT.model_copy(update={"side": "sell"})


def test_a_lower_qty_and_a_better_limit_price_are_accepted() -> None:
    assert shrink(BUY_LIMIT, qty=Decimal(4), limit_price=Decimal("179.5")) == BUY_LIMIT.model_copy(
        update={"qty": Decimal(4), "limit_price": Decimal("179.5")})
    assert shrink(SELL_LIMIT, limit_price=Decimal(181)).limit_price == Decimal(181)


def test_no_edit_is_the_same_order() -> None:
    assert shrink(BUY_LIMIT) == BUY_LIMIT


@pytest.mark.parametrize("qty", [Decimal(11), Decimal(0), Decimal(-1), Decimal("NaN"), Decimal("Infinity")])
def test_a_qty_not_lower_or_not_above_zero_is_refused(qty: Decimal) -> None:
    with pytest.raises(ShrinkRefused, match=r"^INVALID_ARGUMENT: qty must be above 0 and at most the proposed 10"):
        shrink(BUY_LIMIT, qty=qty)


@pytest.mark.parametrize(("order", "price"), [(BUY_LIMIT, Decimal("180.01")), (SELL_LIMIT, Decimal("179.99")),
                                              (BUY_LIMIT, Decimal(0))])
def test_a_worse_limit_price_is_refused(order: OrderRequest, price: Decimal) -> None:
    with pytest.raises(ShrinkRefused, match=r"^INVALID_ARGUMENT: a (buy|sell)'s limit price may only get better"):
        shrink(order, limit_price=price)


def test_a_limit_price_on_a_market_order_is_refused() -> None:
    market = OrderRequest(symbol="AAPL", side="buy", qty=Decimal(10))
    with pytest.raises(ShrinkRefused, match="applies to limit and stop_limit orders; this is a market order"):
        shrink(market, limit_price=Decimal(100))


def test_a_qty_on_a_dollar_amount_order_is_refused() -> None:
    notional = OrderRequest(symbol="AAPL", side="buy", notional=Decimal(500))
    with pytest.raises(ShrinkRefused, match="dollar amount"):
        shrink(notional, qty=Decimal(1))
