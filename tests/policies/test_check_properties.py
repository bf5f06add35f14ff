"""Properties of the checks over random orders, limits, usage and quotes (hypothesis)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from broker.base import Account, Asset, Quote
from policies.checks import (
    CHECKS,
    PRICED_CHECKS,
    CheckInput,
    TradingStatus,
    Usage,
    position_change,
    price_order,
    run_checks,
)
from policies.limits import EffectiveLimits
from policies.orders import OrderRequest
from policies.violations import Code

D = Decimal
NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def money(low: int, high: int) -> st.SearchStrategy[Decimal]:
    return st.integers(low * 100, high * 100).map(lambda cents: D(cents) / 100)


def quantities(high: int = 400) -> st.SearchStrategy[Decimal]:
    return st.integers(1, high).map(D)


@st.composite
def orders(draw: st.DrawFn, sides: tuple[str, ...] = ("buy", "sell")) -> OrderRequest:
    side = draw(st.sampled_from(sides))
    kind = draw(st.sampled_from(["market", "limit", "stop", "stop_limit", "notional"]))
    price = draw(money(50, 150))
    if kind == "notional":
        return OrderRequest(symbol="AAPL", side=side, notional=draw(money(1, 40000)))
    fields: dict[str, object] = {"symbol": "AAPL", "side": side, "qty": draw(quantities()), "order_type": kind}
    if kind in ("limit", "stop_limit"):
        fields["limit_price"] = price
    if kind in ("stop", "stop_limit"):
        fields["stop_price"] = draw(money(50, 150))
    return OrderRequest(**fields)  # type: ignore[arg-type]


@st.composite
def limits(draw: st.DrawFn) -> EffectiveLimits:
    return EffectiveLimits(
        max_trade_size=draw(money(0, 50000)), max_position_size=draw(money(0, 60000)),
        max_daily_trades=draw(st.integers(0, 30)), allowed_symbols=frozenset({"*"}),
        allowed_strategies=frozenset({"*"}), max_order_qty=draw(quantities(500)),
        max_gross_exposure=draw(money(0, 200000)), max_orders_per_window=draw(st.integers(0, 20)),
        order_rate_window_seconds=60, rolling_notional_max=draw(money(0, 100000)),
        rolling_notional_window_seconds=3600, duplicate_window_seconds=30,
        daily_loss_limit=draw(money(0, 5000)), max_drawdown_pct=draw(st.integers(0, 50).map(D)),
        price_collar_pct=draw(st.integers(0, 100).map(D)), max_quote_age_seconds=120,
        allow_short=draw(st.booleans()), max_denials_per_window=20, denials_window_seconds=600,
        breaker_action="reducing", capital=D(100000))


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    position = draw(st.integers(-100, 300).map(D))
    open_buys = draw(st.integers(0, 100).map(D))
    open_sells = draw(st.integers(0, 100).map(D))
    equity = draw(money(50000, 150000))
    return Usage(
        trades_today=draw(st.integers(0, 30)), orders_in_rate_window=draw(st.integers(0, 20)),
        notional_in_rolling_window=draw(money(0, 100000)), open_buy_notional=draw(money(0, 50000)),
        position_qty=position, open_symbol_qty=open_buys - open_sells, open_symbol_buy_qty=open_buys,
        open_symbol_sell_qty=open_sells, gross_exposure=draw(money(0, 200000)),
        agent_cash=draw(money(0, 200000)), daily_pnl=draw(money(-6000, 6000)), equity=equity,
        equity_peak=equity + draw(money(0, 50000)), account_open_buy_notional=draw(money(0, 100000)))


@st.composite
def quotes(draw: st.DrawFn) -> Quote:
    bid = draw(money(50, 150))
    return Quote("AAPL", bid=bid, ask=bid + draw(money(0, 1)), last=bid,
                 as_of=NOW - timedelta(seconds=draw(st.integers(0, 200))))


@st.composite
def inputs(draw: st.DrawFn, sides: tuple[str, ...] = ("buy", "sell"), priced: bool = False) -> CheckInput:
    """priced: always with a quote. Tests that need one draw it rather than assume() it away: filtering
    out most inputs (no quote, or the wrong side) fails Hypothesis's filter_too_much health check at
    random."""
    return CheckInput(
        order=draw(orders(sides)), strategy=None, limits=draw(limits()),
        quote=draw(quotes() if priced else st.none() | quotes()),
        asset=Asset("AAPL", "us_equity", tradable=True, fractionable=True, shortable=draw(st.booleans())),
        usage=draw(usages()),
        account=Account(cash=D(10**6), equity=D(10**6), buying_power=draw(money(0, 200000))),
        status=TradingStatus(agent_state=draw(st.sampled_from(["active", "active", "reducing", "halted"]))),
        now=NOW, market_open=draw(st.sampled_from([True, True, False, None])))


@st.composite
def inputs_near_the_limits(draw: st.DrawFn) -> CheckInput:
    """Limits drawn around what the order needs: often exactly at the boundary, sometimes just below
    it, mostly above, so that many orders pass and the boundaries are exercised."""

    def around(needed: Decimal, unit: Decimal) -> Decimal:
        return max(needed + unit * draw(st.integers(-1, 20)), D(0))

    o = draw(orders())
    quote = dataclasses.replace(draw(quotes()), as_of=NOW - timedelta(seconds=draw(st.integers(0, 120))))
    u = draw(usages())
    pricing = price_order(o, quote)
    assert pricing.reference_price is not None and pricing.estimated_notional is not None
    notional, qty = pricing.estimated_notional, pricing.estimated_qty or D(0)
    price = max(pricing.reference_price, o.limit_price or 0, o.stop_price or 0)
    change = position_change(o, u, pricing)
    assert change.after is not None
    through = max((p - pricing.reference_price) / pricing.reference_price * 100 if o.side == "buy"
                  else (pricing.reference_price - p) / pricing.reference_price * 100
                  for p in (pricing.reference_price, o.limit_price or pricing.reference_price,
                            o.stop_price or pricing.reference_price))
    drawdown = (u.equity_peak - u.equity) / u.equity_peak * 100
    cent, share = D("0.01"), D(1)
    lim = EffectiveLimits(
        max_trade_size=around(notional, cent), max_position_size=around(abs(change.after) * price, cent),
        max_daily_trades=int(around(D(u.trades_today + 1), share)), allowed_symbols=frozenset({"*"}),
        allowed_strategies=frozenset({"*"}), max_order_qty=around(qty, share),
        max_gross_exposure=around(u.gross_exposure + notional, cent),
        max_orders_per_window=int(around(D(u.orders_in_rate_window + 1), share)), order_rate_window_seconds=60,
        rolling_notional_max=around(u.notional_in_rolling_window + notional, cent),
        rolling_notional_window_seconds=3600, duplicate_window_seconds=30,
        daily_loss_limit=around(max(-u.daily_pnl, D(0)), cent), max_drawdown_pct=around(drawdown, D(1)),
        price_collar_pct=around(max(through, D(0)), D(1)), max_quote_age_seconds=120,
        allow_short=draw(st.booleans()), max_denials_per_window=20, denials_window_seconds=600,
        breaker_action="reducing", capital=D(100000))
    u = dataclasses.replace(u, agent_cash=around(u.open_buy_notional + notional, cent))
    return CheckInput(
        order=o, strategy=None, limits=lim, quote=quote,
        asset=Asset("AAPL", "us_equity", tradable=True, fractionable=True, shortable=draw(st.booleans())),
        usage=u, account=Account(cash=D(10**6), equity=D(10**6),
                                 buying_power=around(u.account_open_buy_notional + notional, cent)),
        status=TradingStatus(agent_state=draw(st.sampled_from(["active", "active", "reducing"]))),
        now=NOW, market_open=True)


def codes(c: CheckInput) -> set[Code]:
    return {v.code for v in run_checks(c)}


def signed_qty(c: CheckInput) -> Decimal:
    p = c.pricing
    assert p.estimated_qty is not None
    return p.estimated_qty if c.order.side == "buy" else -p.estimated_qty


@SETTINGS
@given(inputs())
def test_run_checks_is_deterministic(c: CheckInput) -> None:
    fresh = dataclasses.replace(c)  # an equal input, without cached pricing
    assert run_checks(c) == run_checks(c) == run_checks(fresh)


@SETTINGS
@given(inputs())
def test_each_check_reports_each_code_at_most_once(c: CheckInput) -> None:
    for check in CHECKS:
        found = [v.code for v in check(c)]
        assert len(found) == len(set(found)), check.__name__


@SETTINGS
@given(inputs())
def test_run_checks_never_reports_the_same_violation_twice(c: CheckInput) -> None:
    found = [(v.code, v.message) for v in run_checks(c)]
    assert len(found) == len(set(found))


@SETTINGS
@given(inputs())
def test_no_order_passes_without_a_quote(c: CheckInput) -> None:
    c = dataclasses.replace(c, quote=None)
    assert Code.NO_MARKET_DATA in codes(c)
    for check in PRICED_CHECKS:
        assert [v.code for v in check(c)] == [Code.NO_MARKET_DATA], check.__name__


@SETTINGS
@given(inputs())
def test_no_order_passes_with_a_stale_quote(c: CheckInput) -> None:
    assume(c.quote is not None)
    assert c.quote is not None
    stale = dataclasses.replace(c.quote, as_of=NOW - timedelta(seconds=c.limits.max_quote_age_seconds + 1))
    assert Code.STALE_MARKET_DATA in codes(dataclasses.replace(c, quote=stale))


@SETTINGS
@given(inputs())
def test_no_order_passes_while_halted(c: CheckInput) -> None:
    c = dataclasses.replace(c, status=TradingStatus(agent_state="halted"))
    assert Code.AGENT_HALTED in codes(c)


@SETTINGS
@given(inputs())
def test_an_order_over_a_per_order_or_daily_limit_is_always_denied(c: CheckInput) -> None:
    assume(c.quote is not None)
    found = codes(c)
    notional = c.pricing.estimated_notional
    assert notional is not None
    if notional > c.limits.max_trade_size:
        assert Code.ORDER_NOTIONAL_EXCEEDS_MAX in found
    if (c.pricing.estimated_qty or 0) > c.limits.max_order_qty:
        assert Code.ORDER_QTY_EXCEEDS_MAX in found
    if c.usage.trades_today + 1 > c.limits.max_daily_trades:
        assert Code.DAILY_TRADES_EXCEEDED in found
    if c.usage.orders_in_rate_window + 1 > c.limits.max_orders_per_window:
        assert Code.ORDER_RATE_EXCEEDED in found
    if c.usage.notional_in_rolling_window + notional > c.limits.rolling_notional_max:
        assert Code.ROLLING_NOTIONAL_EXCEEDED in found


# A short flipped to a long one cent over the max: before < 0 but the buy adds risk (ask $100.00).
FLIP_OVER_THE_MAX = CheckInput(
    order=OrderRequest(symbol="AAPL", side="buy", qty=D(20)), strategy=None,
    limits=EffectiveLimits(
        max_trade_size=D(10**6), max_position_size=D("999.99"), max_daily_trades=30,
        allowed_symbols=frozenset({"*"}), allowed_strategies=frozenset({"*"}), max_order_qty=D(500),
        max_gross_exposure=D(10**6), max_orders_per_window=20, order_rate_window_seconds=60,
        rolling_notional_max=D(10**6), rolling_notional_window_seconds=3600, duplicate_window_seconds=30,
        daily_loss_limit=D(5000), max_drawdown_pct=D(50), price_collar_pct=D(10), max_quote_age_seconds=120,
        allow_short=True, max_denials_per_window=20, denials_window_seconds=600, breaker_action="reducing",
        capital=D(100000)),
    quote=Quote("AAPL", bid=D(100), ask=D(100), last=D(100), as_of=NOW),
    asset=Asset("AAPL", "us_equity", tradable=True, fractionable=True, shortable=True),
    usage=Usage(position_qty=D(-10), agent_cash=D(10**6), equity=D(10**5), equity_peak=D(10**5)),
    account=Account(cash=D(10**6), equity=D(10**6), buying_power=D(10**6)), status=TradingStatus(),
    now=NOW, market_open=True)


@SETTINGS
@given(inputs(sides=("buy",), priced=True))
@example(FLIP_OVER_THE_MAX)
def test_a_buy_that_would_make_the_position_too_large_is_always_denied(c: CheckInput) -> None:
    pricing = c.pricing
    assert pricing.reference_price is not None
    price = max(pricing.reference_price, c.order.limit_price or 0, c.order.stop_price or 0)
    before = c.usage.position_qty + c.usage.open_symbol_buy_qty
    resulting = before + signed_qty(c)
    reduces_a_short = before < 0 and resulting <= 0
    if not reduces_a_short and abs(resulting) * price > c.limits.max_position_size:
        assert Code.POSITION_EXCEEDS_MAX in codes(c)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(inputs_near_the_limits(), inputs()))
def test_an_order_that_passes_stays_within_every_limit(c: CheckInput) -> None:
    if run_checks(c):
        return
    u, lim, p = c.usage, c.limits, c.pricing
    assert c.quote is not None and p.reference_price is not None and p.estimated_notional is not None
    assert NOW - c.quote.as_of <= timedelta(seconds=lim.max_quote_age_seconds)
    assert c.status.agent_state != "halted" and c.market_open is True
    assert p.estimated_notional <= lim.max_trade_size
    assert (p.estimated_qty or 0) <= lim.max_order_qty
    assert u.trades_today + 1 <= lim.max_daily_trades
    assert u.orders_in_rate_window + 1 <= lim.max_orders_per_window
    assert u.notional_in_rolling_window + p.estimated_notional <= lim.rolling_notional_max
    price = max(p.reference_price, c.order.limit_price or 0, c.order.stop_price or 0)
    open_same = u.open_symbol_buy_qty if c.order.side == "buy" else -u.open_symbol_sell_qty
    before = u.position_qty + open_same
    after = before + signed_qty(c)
    only_reduces = before != 0 and abs(after) < abs(before) and (after == 0 or (after > 0) == (before > 0))
    if not only_reduces:
        assert abs(after) * price <= lim.max_position_size
        assert u.gross_exposure + p.estimated_notional <= lim.max_gross_exposure
        assert u.daily_pnl > -lim.daily_loss_limit
    if c.order.side == "buy":
        assert p.estimated_notional <= u.agent_cash - u.open_buy_notional
        assert c.account is not None
        assert p.estimated_notional <= c.account.buying_power - u.account_open_buy_notional
    elif not lim.allow_short:
        assert after >= min(before, 0)  # never opens or extends a short
    if c.status.agent_state == "reducing":
        assert only_reduces


def test_the_near_limit_strategy_produces_passing_orders() -> None:
    """Guards the property above: it must see many passing orders, not only denials."""
    outcomes: list[bool] = []

    @settings(max_examples=200, deadline=None, database=None)
    @given(inputs_near_the_limits())
    def record(c: CheckInput) -> None:
        outcomes.append(not run_checks(c))

    record()
    assert sum(outcomes) >= 20, f"only {sum(outcomes)} of {len(outcomes)} generated orders passed"
