"""policies/orders.py: the exits of an order, as text from a tool and as an approver may edit them."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.orders import (
    ExitsError,
    OrderRequest,
    StopLoss,
    TakeProfit,
    TrailingStop,
    decimal_text,
    exit_edit_problem,
    exits_from_json,
    parse_stop_loss,
    parse_trailing_stop,
)

D = Decimal
LONG = OrderRequest(symbol="AAPL", side="buy", qty=D(10), stop_loss=StopLoss(stop_price=D(95)),
                    take_profit=TakeProfit(limit_price=D(110)))


def test_exits_parse_from_their_text_forms() -> None:
    assert parse_stop_loss("95.5") == StopLoss(stop_price=D("95.5"))
    assert parse_stop_loss("95.5/95") == StopLoss(stop_price=D("95.5"), limit_price=D(95))
    assert parse_trailing_stop("2%") == TrailingStop(percent=D(2))
    assert parse_trailing_stop("1.50") == TrailingStop(price=D("1.50"))
    for bad in ("0", "-1", "abc", "100%"):
        with pytest.raises(ExitsError):
            parse_trailing_stop(bad)


def test_exits_are_part_of_the_order_hash_and_an_order_without_exits_keeps_its_old_hash() -> None:
    bare = OrderRequest(symbol="AAPL", side="buy", qty=D(10))
    assert "exits" not in bare.canonical_json()
    assert LONG.order_hash() != bare.order_hash()
    stored = OrderRequest(symbol="AAPL", side="buy", qty=D(10), **exits_from_json(LONG.exits_json()))
    assert stored.order_hash() == LONG.order_hash()


def test_an_approver_may_tighten_a_stop() -> None:
    assert exit_edit_problem(LONG, LONG.model_copy(update={"stop_loss": StopLoss(stop_price=D(97))})) is None


def test_an_approver_may_not_loosen_or_remove_a_stop() -> None:
    looser = LONG.model_copy(update={"stop_loss": StopLoss(stop_price=D(90))})
    assert "can only be tightened" in (exit_edit_problem(LONG, looser) or "")
    assert "cannot be removed" in (exit_edit_problem(LONG, LONG.model_copy(update={"stop_loss": None})) or "")


def test_for_a_short_tightening_lowers_the_stop() -> None:
    short = OrderRequest(symbol="AAPL", side="sell", qty=D(10), stop_loss=StopLoss(stop_price=D(105)))
    assert exit_edit_problem(short, short.model_copy(update={"stop_loss": StopLoss(stop_price=D(103))})) is None
    assert exit_edit_problem(short, short.model_copy(update={"stop_loss": StopLoss(stop_price=D(107))}))


def test_a_trailing_stop_may_be_narrowed_not_widened() -> None:
    trail = OrderRequest(symbol="AAPL", side="buy", qty=D(10), trailing_stop=TrailingStop(percent=D(3)))
    assert exit_edit_problem(trail, trail.model_copy(update={"trailing_stop": TrailingStop(percent=D(2))})) is None
    assert exit_edit_problem(trail, trail.model_copy(update={"trailing_stop": TrailingStop(percent=D(4))}))


def test_the_take_profit_is_not_the_approvers_to_change() -> None:
    moved = LONG.model_copy(update={"take_profit": TakeProfit(limit_price=D(120))})
    assert exit_edit_problem(LONG, moved) == "the take-profit cannot be changed by an approver"


AMOUNTS = st.one_of(st.none(), st.decimals(min_value=D("0.000000001"), max_value=D(10) ** 9, places=9))
ORDERS = st.builds(
    OrderRequest, symbol=st.text(min_size=1, max_size=8), side=st.sampled_from(["buy", "sell"]), qty=AMOUNTS,
    notional=AMOUNTS, order_type=st.sampled_from(["market", "limit", "stop", "stop_limit"]), limit_price=AMOUNTS,
    stop_price=AMOUNTS, time_in_force=st.sampled_from(["day", "gtc", "ioc", "fok"]), extended_hours=st.booleans(),
    stop_loss=st.one_of(st.none(), st.builds(StopLoss, stop_price=st.decimals(min_value=1, max_value=999, places=2))),
    take_profit=st.one_of(st.none(), st.builds(TakeProfit, limit_price=st.decimals(min_value=1, max_value=999,
                                                                                      places=2))))


@given(ORDERS)
def test_the_canonical_text_is_what_json_dumps_writes(order: OrderRequest) -> None:
    """The hash an approval binds never changes: the text is json.dumps's, whatever the order (unicode symbols
    escaped as json.dumps escapes them)."""
    fields: dict[str, Any] = {
        "symbol": order.symbol, "side": order.side, "qty": decimal_text(order.qty),
        "notional": decimal_text(order.notional), "order_type": order.order_type,
        "limit_price": decimal_text(order.limit_price), "stop_price": decimal_text(order.stop_price),
        "time_in_force": order.time_in_force, "extended_hours": order.extended_hours}
    if order.has_exits:
        fields["exits"] = order.exits_json()
    expected = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    assert order.canonical_json() == expected
    assert order.order_hash() == hashlib.sha256(expected.encode()).hexdigest()
