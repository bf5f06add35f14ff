"""The checks of order exits (policies/checks.py: check_exits, check_stop_loss_required,
check_risk_per_trade): brackets only where a broker takes them, exits on the right side, a required stop,
and the money at risk per trade."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from policies.checks import check_exits, check_risk_per_trade, check_stop_loss_required, run_checks
from policies.limits import RiskBudget
from policies.orders import StopLoss, TakeProfit, TrailingStop
from policies.violations import Code
from tests.policies.test_checks import BTC, BTC_QUOTE, make, message, only, order

D = Decimal
STOP = StopLoss(stop_price=D(95))
TAKE = TakeProfit(limit_price=D(110))


def bracket(**fields: Any) -> Any:
    return order(**{"stop_loss": STOP, "take_profit": TAKE, **fields})


def test_a_bracket_buy_with_its_exits_on_the_right_sides_passes_every_check() -> None:
    assert run_checks(make(bracket())) == []


def test_a_buy_stop_at_or_above_the_market_is_invalid() -> None:
    c = make(bracket(stop_loss=StopLoss(stop_price=D("99.99"))))
    assert only(check_exits, c) == [Code.INVALID_ORDER]
    assert "stop_loss $99.99 must be below the entry and the market" in message(check_exits, c)


def test_a_buy_take_profit_below_the_entry_is_invalid() -> None:
    c = make(bracket(take_profit=TakeProfit(limit_price=D(100))))
    assert "take_profit $100.00 must be above the entry" in message(check_exits, c)


def test_a_sell_bracket_mirrors_the_sides() -> None:
    short = order(side="sell", stop_loss=StopLoss(stop_price=D(105)), take_profit=TakeProfit(limit_price=D(90)))
    assert only(check_exits, make(short, limits={"allow_short": True})) == []
    wrong = order(side="sell", stop_loss=StopLoss(stop_price=D(95)))
    assert "must be above the entry and the market" in message(check_exits, make(wrong))


def test_a_stop_limit_exit_needs_its_limit_beyond_its_stop() -> None:
    c = make(bracket(stop_loss=StopLoss(stop_price=D(95), limit_price=D(96))))
    assert "the stop-loss limit $96.00 must be at or below its stop $95.00" in message(check_exits, c)


def test_crypto_cannot_carry_exits() -> None:
    c = make(order(symbol="BTC/USD", qty=D(1), time_in_force="gtc", stop_loss=StopLoss(stop_price=D(49000))),
             asset=BTC, quote=BTC_QUOTE)
    assert "crypto orders cannot carry exits" in message(check_exits, c)


def test_exits_need_a_whole_share_market_or_limit_entry() -> None:
    assert "whole-number qty" in message(check_exits, make(order(qty=None, notional=D(500), stop_loss=STOP)))
    assert "market or limit entry" in message(
        check_exits, make(order(order_type="stop", stop_price=D(101), stop_loss=STOP)))


def test_a_stop_and_a_trailing_stop_together_are_invalid() -> None:
    c = make(order(stop_loss=STOP, trailing_stop=TrailingStop(percent=D(2))))
    assert "give stop_loss or trailing_stop, not both" in message(check_exits, c)


def test_exits_on_an_order_that_only_reduces_a_position_are_invalid() -> None:
    c = make(order(side="sell", qty=D(5), stop_loss=StopLoss(stop_price=D(105))), usage={"position_qty": D(10)})
    assert "only reduces one" in message(check_exits, c)


def test_require_stop_loss_denies_an_opening_order_without_a_stop() -> None:
    assert only(check_stop_loss_required, make(order(), limits={"require_stop_loss": True})) == [
        Code.STOP_LOSS_REQUIRED]
    assert only(check_stop_loss_required, make(bracket(), limits={"require_stop_loss": True})) == []
    trailing = order(trailing_stop=TrailingStop(percent=D(3)))
    assert only(check_stop_loss_required, make(trailing, limits={"require_stop_loss": True})) == []


def test_require_stop_loss_lets_a_reducing_order_through() -> None:
    c = make(order(side="sell", qty=D(5)), usage={"position_qty": D(10)}, limits={"require_stop_loss": True})
    assert only(check_stop_loss_required, c) == []


def test_risk_per_trade_is_qty_times_distance_to_the_stop_and_holds_at_its_boundary() -> None:
    # 10 shares x ($100.00 ask - $95 stop) = $50 at risk.
    at_limit = {"max_risk_per_trade": RiskBudget(D(50), percent=False)}
    assert only(check_risk_per_trade, make(bracket(), limits=at_limit)) == []
    over = {"max_risk_per_trade": RiskBudget(D("49.99"), percent=False)}
    text = message(check_risk_per_trade, make(bracket(), limits=over))
    assert text.startswith("money at risk $50.00")
    assert "the largest qty with this stop is 9" in text


def test_risk_per_trade_in_percent_is_of_the_agents_capital() -> None:
    # 1 % of $100,000 = $1,000: 200 shares x $5 passes, 201 does not.
    limits = {"max_risk_per_trade": RiskBudget(D(1), percent=True)}
    assert only(check_risk_per_trade, make(bracket(qty=D(200)), limits=limits)) == []
    assert only(check_risk_per_trade, make(bracket(qty=D(201)), limits=limits)) == [Code.RISK_PER_TRADE_EXCEEDED]


def test_an_opening_order_without_a_stop_counts_its_whole_notional_as_at_risk() -> None:
    limits = {"max_risk_per_trade": RiskBudget(D(999), percent=False)}
    text = message(check_risk_per_trade, make(order(), limits=limits))  # 10 x $100 = $1,000
    assert "no stop: the whole notional is at risk" in text


def test_a_trailing_stop_risks_its_trail() -> None:
    limits = {"max_risk_per_trade": RiskBudget(D(20), percent=False)}
    assert only(check_risk_per_trade, make(order(trailing_stop=TrailingStop(percent=D(2))), limits=limits)) == []
    assert only(check_risk_per_trade, make(order(trailing_stop=TrailingStop(percent=D("2.01"))),
                                           limits=limits)) == [Code.RISK_PER_TRADE_EXCEEDED]
