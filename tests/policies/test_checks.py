"""The pre-trade checks, one behaviour per test: each limit holds exactly at its boundary (at the limit
passes, one cent / one share / one order / one second more is denied), and the known bypasses fail."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from broker.base import Account, Asset, Quote
from policies import checks
from policies.checks import CHECKS, PRICED_CHECKS, CheckInput, TradingStatus, Usage, price_order, run_checks
from policies.orders import OrderRequest
from policies.violations import Code
from tests.conftest import MODERATE_LIMITS

D = Decimal
NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)  # Monday, market open
QUOTE = Quote("AAPL", bid=D("99.99"), ask=D("100.00"), last=D("100.00"), as_of=NOW)
AAPL = Asset("AAPL", "us_equity", tradable=True, fractionable=True, shortable=True)
BTC = Asset("BTC/USD", "crypto", tradable=True, fractionable=True, shortable=False)
BTC_QUOTE = Quote("BTC/USD", bid=D("50000"), ask=D("50010"), last=D("50005"), as_of=NOW)

LIMITS = MODERATE_LIMITS
USAGE = Usage(agent_cash=D(100000), equity=D(100000), equity_peak=D(100000))
ACCOUNT = Account(cash=D(1000000), equity=D(1000000), buying_power=D(1000000))


def order(**fields: Any) -> OrderRequest:
    base: dict[str, Any] = {"symbol": "AAPL", "side": "buy", "qty": D(10)}
    if "notional" in fields and "qty" not in fields:
        base.pop("qty")
    return OrderRequest(**{**base, **fields})


def make(o: OrderRequest | None = None, *, limits: dict[str, Any] | None = None,
         usage: dict[str, Any] | None = None, **fields: Any) -> CheckInput:
    values: dict[str, Any] = {
        "order": o or order(), "strategy": None, "limits": dataclasses.replace(LIMITS, **(limits or {})),
        "quote": QUOTE, "asset": AAPL, "usage": dataclasses.replace(USAGE, **(usage or {})),
        "account": ACCOUNT, "status": TradingStatus(), "now": NOW, "market_open": True,
    }
    values.update(fields)
    return CheckInput(**values)


def codes(c: CheckInput) -> list[Code]:
    return [v.code for v in run_checks(c)]


def only(check: checks.Check, c: CheckInput) -> list[Code]:
    return [v.code for v in check(c)]


def message(check: checks.Check, c: CheckInput) -> str:
    found = check(c)
    assert len(found) == 1, found
    return found[0].message


# --- derived inputs --------------------------------------------------------------------------------

def test_an_inputs_pricing_is_worked_out_once_and_kept() -> None:
    c = make()
    assert c.pricing is c.pricing
    assert c.pricing == price_order(c.order, c.quote)
    assert c.position_change is c.position_change


def test_an_input_made_from_another_prices_its_own_order() -> None:
    c = make()
    assert c.pricing.estimated_notional == D(1000)
    bigger = dataclasses.replace(c, order=order(qty=D(20)))
    assert bigger.pricing.estimated_notional == D(2000) and c.pricing.estimated_notional == D(1000)


# --- baseline --------------------------------------------------------------------------------------

def test_an_order_within_every_limit_passes_every_check() -> None:
    assert run_checks(make()) == []


def test_every_violation_is_reported_at_once() -> None:
    c = make(order(qty=D(5000), order_type="limit", limit_price=D(130)), market_open=False,
             usage={"trades_today": 20})
    assert {Code.MARKET_CLOSED, Code.PRICE_COLLAR, Code.ORDER_NOTIONAL_EXCEEDS_MAX, Code.ORDER_QTY_EXCEEDS_MAX,
            Code.POSITION_EXCEEDS_MAX, Code.DAILY_TRADES_EXCEEDED} <= set(codes(c))


def test_a_check_that_raises_denies_the_order_instead_of_passing_it() -> None:
    def broken(c: CheckInput) -> list[checks.Violation]:
        raise ZeroDivisionError

    found = run_checks(make(), (broken,))
    assert [v.code for v in found] == [Code.RISK_CHECK_FAILED]
    assert "broken" in found[0].message


# --- trading state ---------------------------------------------------------------------------------

def test_trading_disabled_on_the_server_denies() -> None:
    assert only(checks.check_trading_enabled, make(status=TradingStatus(enabled=False))) == [Code.TRADING_DISABLED]


def test_a_global_halt_denies_with_its_reason() -> None:
    c = make(status=TradingStatus(global_state="halted", global_reason="fat finger"))
    assert only(checks.check_halts, c) == [Code.TRADING_HALTED]
    assert "fat finger" in message(checks.check_halts, c)


def test_an_agent_halt_denies_with_agent_halted() -> None:
    assert only(checks.check_halts, make(status=TradingStatus(agent_state="halted"))) == [Code.AGENT_HALTED]


def test_an_unknown_trading_state_fails_closed_as_halted() -> None:
    c = make(status=TradingStatus(global_state="paused", agent_state="???"))
    assert only(checks.check_halts, c) == [Code.TRADING_HALTED, Code.AGENT_HALTED]


def test_reduce_only_allows_a_sell_that_shrinks_a_long_position() -> None:
    c = make(order(side="sell", qty=D(10)), status=TradingStatus(agent_state="reducing"),
             usage={"position_qty": D(10)})
    assert run_checks(c) == []


def test_reduce_only_allows_a_buy_that_shrinks_a_short_position() -> None:
    c = make(order(side="buy", qty=D(5)), status=TradingStatus(agent_state="reducing"),
             usage={"position_qty": D(-10)})
    assert only(checks.check_reduce_only, c) == []


def test_reduce_only_denies_an_order_without_a_position() -> None:
    c = make(order(side="buy", qty=D(1)), status=TradingStatus(agent_state="reducing", agent_reason="breaker"))
    assert only(checks.check_reduce_only, c) == [Code.REDUCE_ONLY]
    assert "breaker" in message(checks.check_reduce_only, c)


def test_reduce_only_denies_an_order_that_adds_to_the_position() -> None:
    c = make(order(side="buy", qty=D(1)), status=TradingStatus(agent_state="reducing"),
             usage={"position_qty": D(10)})
    assert only(checks.check_reduce_only, c) == [Code.REDUCE_ONLY]


def test_reduce_only_denies_a_sell_that_crosses_into_a_short() -> None:
    c = make(order(side="sell", qty=D(11)), status=TradingStatus(agent_state="reducing"),
             usage={"position_qty": D(10)})
    assert only(checks.check_reduce_only, c) == [Code.REDUCE_ONLY]


def test_reduce_only_counts_open_sells_that_already_close_the_position() -> None:
    c = make(order(side="sell", qty=D(1)), status=TradingStatus(agent_state="reducing"),
             usage={"position_qty": D(10), "open_symbol_sell_qty": D(10), "open_symbol_qty": D(-10)})
    assert only(checks.check_reduce_only, c) == [Code.REDUCE_ONLY]


def test_a_global_reducing_state_applies_to_every_agent() -> None:
    c = make(status=TradingStatus(global_state="reducing", global_reason="drill"))
    assert only(checks.check_reduce_only, c) == [Code.REDUCE_ONLY]


# --- permissions and asset -------------------------------------------------------------------------

def test_a_symbol_outside_the_allowed_list_is_denied() -> None:
    c = make(limits={"allowed_symbols": frozenset({"MSFT"})})
    assert only(checks.check_symbol_allowed, c) == [Code.SYMBOL_NOT_ALLOWED]


def test_a_strategy_outside_the_allowed_list_is_denied() -> None:
    c = make(strategy="yolo", limits={"allowed_strategies": frozenset({"momentum"})})
    assert only(checks.check_strategy_allowed, c) == [Code.STRATEGY_NOT_ALLOWED]


def test_an_unknown_asset_is_not_tradable_and_the_message_says_unknown() -> None:
    c = make(order(symbol="NOPE"), asset=None)
    assert only(checks.check_asset_tradable, c) == [Code.ASSET_NOT_TRADABLE]
    assert "unknown" in message(checks.check_asset_tradable, c)


def test_an_asset_the_broker_marks_untradable_is_denied() -> None:
    c = make(asset=dataclasses.replace(AAPL, tradable=False))
    assert only(checks.check_asset_tradable, c) == [Code.ASSET_NOT_TRADABLE]


# --- order validity --------------------------------------------------------------------------------

INVALID_ORDERS = {
    "qty and notional": order(qty=D(1), notional=D(100)),
    "neither qty nor notional": order(qty=None),
    "zero qty": order(qty=D(0)),
    "negative qty": order(qty=D(-1)),
    "negative notional": order(notional=D(-100)),
    "more than 9 decimals": order(symbol="BTC/USD", qty=D("0.0000000001"), time_in_force="gtc"),
    "limit without limit price": order(order_type="limit"),
    "market with limit price": order(limit_price=D(100)),
    "stop without stop price": order(order_type="stop"),
    "limit with stop price": order(order_type="limit", limit_price=D(100), stop_price=D(99)),
    "stop_limit without stop price": order(order_type="stop_limit", limit_price=D(100)),
    "zero limit price": order(order_type="limit", limit_price=D(0)),
    "negative stop price": order(order_type="stop", stop_price=D(-1)),
    "sub-penny price above $1": order(order_type="limit", limit_price=D("100.001")),
    "more than 4 decimals below $1": order(order_type="limit", limit_price=D("0.12345")),
    "notional limit order": order(notional=D(100), order_type="limit", limit_price=D(100)),
    "notional equity gtc": order(notional=D(100), time_in_force="gtc"),
    "fractional limit order": order(qty=D("1.5"), order_type="limit", limit_price=D(100)),
    "fractional gtc order": order(qty=D("1.5"), time_in_force="gtc"),
    "extended hours market order": order(extended_hours=True),
    "extended hours gtc limit": order(order_type="limit", limit_price=D(100), time_in_force="gtc",
                                      extended_hours=True),
    "crypto day order": order(symbol="BTC/USD", qty=D(1), time_in_force="day"),
    "crypto stop order": order(symbol="BTC/USD", order_type="stop", stop_price=D(1), time_in_force="gtc"),
    "crypto extended hours": order(symbol="BTC/USD", order_type="limit", limit_price=D(1), time_in_force="gtc",
                                   extended_hours=True),
}


@pytest.mark.parametrize("bad", INVALID_ORDERS.values(), ids=INVALID_ORDERS.keys())
def test_an_invalid_order_is_denied(bad: OrderRequest) -> None:
    assert only(checks.check_order_valid, make(bad)) == [Code.INVALID_ORDER]


VALID_ORDERS = {
    "whole shares market day": (order(), AAPL),
    "notional market day": (order(notional=D("100.5")), AAPL),
    "fractional market day": (order(qty=D("0.123456789")), AAPL),
    "limit gtc whole shares": (order(order_type="limit", limit_price=D("99.5"), time_in_force="gtc"), AAPL),
    "stop_limit": (order(order_type="stop_limit", limit_price=D(101), stop_price=D(100)), AAPL),
    "sub-dollar price with 4 decimals": (order(order_type="limit", limit_price=D("0.1234")), AAPL),
    "extended hours limit day": (order(order_type="limit", limit_price=D(100), extended_hours=True), AAPL),
    "crypto qty limit gtc": (order(symbol="BTC/USD", qty=D("0.000000001"), order_type="limit",
                                   limit_price=D("50000.123"), time_in_force="gtc"), BTC),
    "crypto notional market ioc": (order(symbol="BTC/USD", notional=D(100), time_in_force="ioc"), BTC),
}


@pytest.mark.parametrize(("good", "asset"), VALID_ORDERS.values(), ids=VALID_ORDERS.keys())
def test_a_valid_order_passes_the_validity_check(good: OrderRequest, asset: Asset) -> None:
    assert only(checks.check_order_valid, make(good, asset=asset)) == []


def test_fractional_shares_of_a_non_fractionable_asset_are_invalid() -> None:
    c = make(order(qty=D("1.5")), asset=dataclasses.replace(AAPL, fractionable=False))
    assert only(checks.check_order_valid, c) == [Code.INVALID_ORDER]


def test_every_problem_of_an_order_is_listed_in_one_violation() -> None:
    text = message(checks.check_order_valid, make(order(qty=D(-1), order_type="limit", stop_price=D(1))))
    assert "qty must be positive" in text and "needs limit_price" in text and "takes no stop_price" in text


# --- market hours ----------------------------------------------------------------------------------

def test_an_equity_order_while_the_market_is_closed_is_denied() -> None:
    assert only(checks.check_market_hours, make(market_open=False)) == [Code.MARKET_CLOSED]


def test_an_unknown_market_state_fails_closed_for_equities() -> None:
    c = make(market_open=None)
    assert only(checks.check_market_hours, c) == [Code.MARKET_CLOSED]
    assert "cannot tell" in message(checks.check_market_hours, c)


def test_crypto_trades_while_the_equity_market_is_closed() -> None:
    c = make(order(symbol="BTC/USD", qty=D(1), time_in_force="gtc"), asset=BTC, quote=BTC_QUOTE, market_open=None)
    assert only(checks.check_market_hours, c) == []


def test_market_hours_are_not_enforced_when_switched_off() -> None:
    assert only(checks.check_market_hours, make(market_open=False, enforce_market_hours=False)) == []


# --- market data -----------------------------------------------------------------------------------

def test_no_quote_is_no_market_data() -> None:
    assert codes(make(quote=None)).count(Code.NO_MARKET_DATA) == 1


def test_a_quote_without_any_positive_price_is_no_market_data() -> None:
    c = make(quote=Quote("AAPL", D(0), D(0), D(0), NOW))
    assert only(checks.check_market_data, c) == [Code.NO_MARKET_DATA]


def test_a_quote_exactly_max_age_old_passes() -> None:
    c = make(quote=dataclasses.replace(QUOTE, as_of=NOW - timedelta(seconds=120)))
    assert only(checks.check_market_data, c) == []


def test_a_quote_one_second_older_than_max_age_is_stale() -> None:
    c = make(quote=dataclasses.replace(QUOTE, as_of=NOW - timedelta(seconds=121)))
    assert only(checks.check_market_data, c) == [Code.STALE_MARKET_DATA]
    assert "121 s old" in message(checks.check_market_data, c) and "120 s" in message(checks.check_market_data, c)


@pytest.mark.parametrize("check", PRICED_CHECKS, ids=lambda check: check.__name__)
def test_every_check_that_needs_a_price_denies_without_a_quote(check: checks.Check) -> None:
    assert only(check, make(quote=None)) == [Code.NO_MARKET_DATA]


def test_buys_are_priced_at_the_ask_and_sells_at_the_bid() -> None:
    assert price_order(order(side="buy"), QUOTE).reference_price == D("100.00")
    assert price_order(order(side="sell"), QUOTE).reference_price == D("99.99")


def test_an_empty_bid_falls_back_to_the_last_trade() -> None:
    quote = dataclasses.replace(QUOTE, bid=D(0), last=D("99.50"))
    assert price_order(order(side="sell"), quote).reference_price == D("99.50")


# --- price collar (10% around the reference quote) -------------------------------------------------

def test_a_buy_limit_exactly_at_the_collar_passes() -> None:
    c = make(order(order_type="limit", limit_price=D("110.00")))
    assert only(checks.check_price_collar, c) == []


def test_a_buy_limit_one_cent_above_the_collar_is_denied() -> None:
    c = make(order(order_type="limit", limit_price=D("110.01")))
    assert only(checks.check_price_collar, c) == [Code.PRICE_COLLAR]
    assert "$110.01" in message(checks.check_price_collar, c) and "$110.00" in message(checks.check_price_collar, c)


def test_a_sell_limit_exactly_at_the_collar_below_the_bid_passes() -> None:
    c = make(order(side="sell", order_type="limit", limit_price=D("90.00")),
             quote=dataclasses.replace(QUOTE, bid=D("100.00")), usage={"position_qty": D(10)})
    assert only(checks.check_price_collar, c) == []


def test_a_sell_limit_one_cent_below_the_collar_is_denied() -> None:
    c = make(order(side="sell", order_type="limit", limit_price=D("89.99")),
             quote=dataclasses.replace(QUOTE, bid=D("100.00")), usage={"position_qty": D(10)})
    assert only(checks.check_price_collar, c) == [Code.PRICE_COLLAR]


def test_a_buy_stop_far_above_the_market_is_collared() -> None:
    assert only(checks.check_price_collar, make(order(order_type="stop", stop_price=D("110.01")))) == [
        Code.PRICE_COLLAR]


def test_a_sell_stop_far_below_the_market_is_collared() -> None:
    c = make(order(side="sell", order_type="stop", stop_price=D("80")), usage={"position_qty": D(10)})
    assert only(checks.check_price_collar, c) == [Code.PRICE_COLLAR]


def test_a_buy_limit_below_the_market_is_not_collared() -> None:
    assert only(checks.check_price_collar, make(order(order_type="limit", limit_price=D("50")))) == []


def test_a_collar_computed_from_a_stale_quote_cannot_let_an_order_through() -> None:
    """A collar computed from a stale quote cannot pass: the stale quote denies the order."""
    stale = dataclasses.replace(QUOTE, ask=D(60), as_of=NOW - timedelta(hours=1))
    c = make(order(order_type="limit", limit_price=D(65)), quote=stale)
    assert only(checks.check_price_collar, c) == []  # within 10% of the stale ask...
    assert Code.STALE_MARKET_DATA in codes(c)  # ...but the order is still denied


# --- per order size --------------------------------------------------------------------------------

def test_an_order_notional_exactly_at_the_maximum_passes() -> None:
    assert only(checks.check_order_notional, make(order(qty=D(50)))) == []  # 50 × $100.00 = $5,000.00


def test_an_order_notional_one_cent_over_the_maximum_is_denied() -> None:
    c = make(order(qty=D(50)), limits={"max_trade_size": D("4999.99")})
    assert only(checks.check_order_notional, c) == [Code.ORDER_NOTIONAL_EXCEEDS_MAX]
    text = message(checks.check_order_notional, c)
    assert "$5,000.00" in text and "$4,999.99" in text and "50 shares" in text


def test_a_notional_order_exactly_at_the_maximum_passes() -> None:
    assert only(checks.check_order_notional, make(order(notional=D(5000)))) == []


def test_a_notional_order_one_cent_over_the_maximum_is_denied() -> None:
    c = make(order(notional=D("5000.01")))
    assert only(checks.check_order_notional, c) == [Code.ORDER_NOTIONAL_EXCEEDS_MAX]


def test_a_buy_limit_far_above_the_market_is_priced_at_its_limit() -> None:
    """Bypass: 10 shares at a $600 limit with the market at $100 is a $6,000 order, not $1,000."""
    c = make(order(qty=D(10), order_type="limit", limit_price=D(600)), limits={"price_collar_pct": D(1000)})
    assert only(checks.check_order_notional, c) == [Code.ORDER_NOTIONAL_EXCEEDS_MAX]
    assert "$6,000.00" in message(checks.check_order_notional, c)


def test_qty_meant_as_dollars_is_priced_as_shares() -> None:
    """Bypass: qty/notional confusion. qty=5000 is 5,000 shares ($500,000), never $5,000."""
    assert Code.ORDER_NOTIONAL_EXCEEDS_MAX in codes(make(order(qty=D(5000))))
    assert run_checks(make(order(notional=D(5000)))) == []


def test_an_order_qty_exactly_at_the_maximum_passes() -> None:
    c = make(order(qty=D(2000)), limits={"max_trade_size": D(10**9), "max_position_size": D(10**9)})
    assert only(checks.check_order_qty, c) == []


def test_an_order_qty_one_share_over_the_maximum_is_denied() -> None:
    c = make(order(qty=D(2001)))
    assert only(checks.check_order_qty, c) == [Code.ORDER_QTY_EXCEEDS_MAX]
    assert "2,001 shares" in message(checks.check_order_qty, c) and "2,000 shares" in message(checks.check_order_qty, c)


def test_a_notional_order_is_held_to_the_qty_maximum_by_its_estimated_qty() -> None:
    at = make(order(notional=D(10000)), limits={"max_order_qty": D(100)})
    over = make(order(notional=D("10000.01")), limits={"max_order_qty": D(100)})
    assert only(checks.check_order_qty, at) == []  # $10,000 / $100.00 ask = 100 shares
    assert only(checks.check_order_qty, over) == [Code.ORDER_QTY_EXCEEDS_MAX]


# --- position per symbol ---------------------------------------------------------------------------

POSITION_150_OPEN_40 = {"position_qty": D(150), "open_symbol_buy_qty": D(40), "open_symbol_qty": D(40)}


def test_a_resulting_position_exactly_at_the_maximum_passes() -> None:
    c = make(order(qty=D(10)), usage=POSITION_150_OPEN_40)  # (150 + 40 + 10) × $100 = $20,000
    assert only(checks.check_position_size, c) == []


def test_a_resulting_position_one_cent_over_the_maximum_is_denied() -> None:
    c = make(order(qty=D(10)), usage=POSITION_150_OPEN_40, limits={"max_position_size": D("19999.99")})
    assert only(checks.check_position_size, c) == [Code.POSITION_EXCEEDS_MAX]
    assert "$20,000.00" in message(checks.check_position_size, c)


def test_open_buy_orders_count_toward_the_position() -> None:
    c = make(order(qty=D(1)), usage={"position_qty": D(0), "open_symbol_buy_qty": D(200), "open_symbol_qty": D(200)})
    assert only(checks.check_position_size, c) == [Code.POSITION_EXCEEDS_MAX]


def test_open_sell_orders_do_not_make_room_for_buys() -> None:
    c = make(order(qty=D(1)),
             usage={"position_qty": D(200), "open_symbol_sell_qty": D(100), "open_symbol_qty": D(-100)})
    assert only(checks.check_position_size, c) == [Code.POSITION_EXCEEDS_MAX]


def test_a_sell_that_reduces_an_oversized_position_passes() -> None:
    c = make(order(side="sell", qty=D(10)), usage={"position_qty": D(500)})  # $50,000 held, max $20,000
    assert only(checks.check_position_size, c) == []


def test_a_buy_that_flips_a_short_into_an_oversized_long_is_denied() -> None:
    c = make(order(qty=D(500)), usage={"position_qty": D(-250)}, limits={"max_order_qty": D(10**6)})
    assert only(checks.check_position_size, c) == [Code.POSITION_EXCEEDS_MAX]  # 250 long × $100 > $20,000


def test_a_short_position_counts_toward_the_maximum() -> None:
    c = make(order(side="sell", qty=D(201)), limits={"allow_short": True})
    assert only(checks.check_position_size, c) == [Code.POSITION_EXCEEDS_MAX]


# --- gross exposure, buying power ------------------------------------------------------------------

def test_gross_exposure_exactly_at_the_maximum_passes() -> None:
    c = make(order(qty=D(50)), usage={"gross_exposure": D(95000)})
    assert only(checks.check_gross_exposure, c) == []


def test_gross_exposure_one_cent_over_the_maximum_is_denied() -> None:
    c = make(order(qty=D(50)), usage={"gross_exposure": D("95000.01")})
    assert only(checks.check_gross_exposure, c) == [Code.GROSS_EXPOSURE_EXCEEDS_MAX]
    assert "$100,000.01" in message(checks.check_gross_exposure, c)


def test_a_reducing_order_passes_gross_exposure_even_above_the_maximum() -> None:
    c = make(order(side="sell", qty=D(10)), usage={"gross_exposure": D(200000), "position_qty": D(100)})
    assert only(checks.check_gross_exposure, c) == []


def test_a_buy_using_exactly_the_agents_buying_power_passes() -> None:
    c = make(order(qty=D(50)), usage={"agent_cash": D(10000), "open_buy_notional": D(5000)})
    assert only(checks.check_agent_buying_power, c) == []


def test_a_buy_one_cent_over_the_agents_buying_power_is_denied() -> None:
    c = make(order(qty=D(50)), usage={"agent_cash": D(10000), "open_buy_notional": D("5000.01")})
    assert only(checks.check_agent_buying_power, c) == [Code.INSUFFICIENT_BUYING_POWER]
    assert "$4,999.99" in message(checks.check_agent_buying_power, c)


def test_a_sell_needs_no_buying_power() -> None:
    c = make(order(side="sell", qty=D(10)), usage={"agent_cash": D(0), "position_qty": D(10)})
    assert only(checks.check_agent_buying_power, c) == []


def test_an_unknown_account_fails_closed_with_insufficient_buying_power() -> None:
    c = make(account=None)
    assert only(checks.check_account_buying_power, c) == [Code.INSUFFICIENT_BUYING_POWER]
    assert "account state unknown" in message(checks.check_account_buying_power, c)


def test_a_buy_using_exactly_the_accounts_buying_power_after_open_orders_passes() -> None:
    c = make(order(qty=D(50)), account=dataclasses.replace(ACCOUNT, buying_power=D(10000)),
             usage={"account_open_buy_notional": D(5000)})
    assert only(checks.check_account_buying_power, c) == []


def test_a_buy_one_cent_over_the_accounts_buying_power_is_denied() -> None:
    c = make(order(qty=D(50)), account=dataclasses.replace(ACCOUNT, buying_power=D(10000)),
             usage={"account_open_buy_notional": D("5000.01")})
    assert only(checks.check_account_buying_power, c) == [Code.INSUFFICIENT_BUYING_POWER]


def test_a_blocked_broker_account_denies() -> None:
    c = make(account=dataclasses.replace(ACCOUNT, trading_blocked=True))
    assert only(checks.check_account_buying_power, c) == [Code.ACCOUNT_BLOCKED]


# --- short selling ---------------------------------------------------------------------------------

def test_selling_exactly_the_position_is_not_a_short_sale() -> None:
    assert only(checks.check_short_selling, make(order(side="sell", qty=D(10)), usage={"position_qty": D(10)})) == []


def test_selling_one_share_beyond_the_position_is_a_denied_short_sale() -> None:
    c = make(order(side="sell", qty=D(11)), usage={"position_qty": D(10)})
    assert only(checks.check_short_selling, c) == [Code.SHORT_SELLING_NOT_ALLOWED]
    assert "short 1 shares" in message(checks.check_short_selling, c)


def test_open_sells_count_against_the_position_available_to_sell() -> None:
    c = make(order(side="sell", qty=D(1)),
             usage={"position_qty": D(10), "open_symbol_sell_qty": D(10), "open_symbol_qty": D(-10)})
    assert only(checks.check_short_selling, c) == [Code.SHORT_SELLING_NOT_ALLOWED]


def test_a_short_sale_passes_when_allowed_and_the_asset_is_shortable() -> None:
    c = make(order(side="sell", qty=D(5)), limits={"allow_short": True})
    assert only(checks.check_short_selling, c) == []


def test_a_short_sale_of_a_non_shortable_asset_is_denied_even_when_allowed() -> None:
    c = make(order(side="sell", qty=D(5)), limits={"allow_short": True},
             asset=dataclasses.replace(AAPL, shortable=False))
    assert only(checks.check_short_selling, c) == [Code.SHORT_SELLING_NOT_ALLOWED]


def test_crypto_cannot_be_sold_short() -> None:
    c = make(order(symbol="BTC/USD", side="sell", qty=D(1), time_in_force="gtc"), asset=BTC, quote=BTC_QUOTE,
             limits={"allow_short": True})
    assert only(checks.check_short_selling, c) == [Code.SHORT_SELLING_NOT_ALLOWED]


def test_fractional_shares_cannot_be_sold_short() -> None:
    c = make(order(side="sell", qty=D("0.5")), limits={"allow_short": True})
    assert only(checks.check_short_selling, c) == [Code.SHORT_SELLING_NOT_ALLOWED]


# --- counts and windows ----------------------------------------------------------------------------

def test_the_last_trade_allowed_today_passes() -> None:
    assert only(checks.check_daily_trades, make(usage={"trades_today": 19})) == []


def test_one_trade_over_the_daily_maximum_is_denied() -> None:
    c = make(usage={"trades_today": 20})
    assert only(checks.check_daily_trades, c) == [Code.DAILY_TRADES_EXCEEDED]
    assert "trade 21" in message(checks.check_daily_trades, c) and "20 per day" in message(checks.check_daily_trades, c)


def test_the_last_order_allowed_in_the_rate_window_passes() -> None:
    assert only(checks.check_order_rate, make(usage={"orders_in_rate_window": 9})) == []


def test_one_order_over_the_rate_limit_is_denied() -> None:
    c = make(usage={"orders_in_rate_window": 10})
    assert only(checks.check_order_rate, c) == [Code.ORDER_RATE_EXCEEDED]
    assert "10 orders per 60 s" in message(checks.check_order_rate, c)


def test_rolling_notional_exactly_at_the_maximum_passes() -> None:
    c = make(order(qty=D(50)), usage={"notional_in_rolling_window": D(45000)})
    assert only(checks.check_rolling_notional, c) == []


def test_rolling_notional_one_cent_over_the_maximum_is_denied() -> None:
    c = make(order(qty=D(50)), usage={"notional_in_rolling_window": D("45000.01")})
    assert only(checks.check_rolling_notional, c) == [Code.ROLLING_NOTIONAL_EXCEEDED]
    assert "$50,000.01" in message(checks.check_rolling_notional, c)


def test_splitting_a_large_order_into_small_ones_hits_the_rolling_notional_cap() -> None:
    """Bypass: eleven $5,000 orders each pass the per-order cap; the eleventh breaks the $50,000 window."""
    outcomes = []
    for i in range(11):
        c = make(order(qty=D(50)), usage={"notional_in_rolling_window": D(5000) * i, "trades_today": i})
        outcomes.append(Code.ROLLING_NOTIONAL_EXCEEDED in codes(c))
        assert Code.ORDER_NOTIONAL_EXCEEDS_MAX not in codes(c)
    assert outcomes == [False] * 10 + [True]


def test_an_identical_order_within_the_duplicate_window_is_denied() -> None:
    c = make(usage={"recent_order_hashes": frozenset({order().order_hash()})})
    assert only(checks.check_duplicate, c) == [Code.DUPLICATE_ORDER]


def test_a_different_order_is_not_a_duplicate() -> None:
    c = make(order(qty=D(11)), usage={"recent_order_hashes": frozenset({order().order_hash()})})
    assert only(checks.check_duplicate, c) == []


# --- loss limits -----------------------------------------------------------------------------------

def test_a_daily_loss_one_cent_short_of_the_limit_still_trades() -> None:
    assert only(checks.check_daily_loss, make(usage={"daily_pnl": D("-1999.99")})) == []


def test_a_daily_loss_reaching_the_limit_blocks_orders_that_add_risk() -> None:
    c = make(usage={"daily_pnl": D("-2000.00")})
    assert only(checks.check_daily_loss, c) == [Code.DAILY_LOSS_LIMIT]
    assert "-$2,000.00" in message(checks.check_daily_loss, c)


def test_a_daily_loss_at_the_limit_still_lets_a_position_be_reduced() -> None:
    c = make(order(side="sell", qty=D(5)), usage={"daily_pnl": D(-5000), "position_qty": D(10)})
    assert only(checks.check_daily_loss, c) == []


def test_a_drawdown_just_short_of_the_limit_still_trades() -> None:
    assert only(checks.check_drawdown, make(usage={"equity": D("90000.01"), "equity_peak": D(100000)})) == []


def test_a_drawdown_reaching_the_limit_blocks_orders_that_add_risk() -> None:
    c = make(usage={"equity": D(90000), "equity_peak": D(100000)})
    assert only(checks.check_drawdown, c) == [Code.DRAWDOWN_LIMIT]
    assert "10%" in message(checks.check_drawdown, c) and "$100,000.00" in message(checks.check_drawdown, c)


def test_a_drawdown_at_the_limit_still_lets_a_position_be_reduced() -> None:
    c = make(order(side="sell", qty=D(5)),
             usage={"equity": D(50000), "equity_peak": D(100000), "position_qty": D(10)})
    assert only(checks.check_drawdown, c) == []


# --- run_checks as a whole -------------------------------------------------------------------------

def test_no_market_data_is_reported_once_although_several_checks_need_a_price() -> None:
    found = codes(make(quote=None))
    assert found.count(Code.NO_MARKET_DATA) == 1


def test_every_check_in_checks_is_a_named_function() -> None:
    names = [check.__name__ for check in CHECKS]
    assert len(set(names)) == len(names) and all(name.startswith("check_") for name in names)


def test_money_in_messages_keeps_fractions_of_a_cent_visible() -> None:
    assert checks.money(D("5000.004")) == "$5,000.004"
    assert checks.money(D("5000")) == "$5,000.00"
    assert checks.money(D("-12.5")) == "-$12.50"
