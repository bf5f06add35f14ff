"""Pre-trade risk checks: pure functions from (order, limits, market snapshot, usage) to violations.

Each check is one named function returning the violations it finds (usually zero or one), with a message
an LLM can act on: what the limit is and what the order would have made it. `run_checks` runs them all
and reports every violation at once. No I/O here: the gate gathers the inputs and passes them in.
Adding a control is adding one function to CHECKS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from broker.base import Account, Asset, Quote
from policies.limits import EffectiveLimits
from policies.orders import OrderRequest, decimal_text
from policies.violations import Code, Violation

TradingStateName = str  # "active" | "reducing" | "halted"


@dataclass(frozen=True)
class Usage:
    """What the agent has already used, counting live reservations (orders not yet rejected/cancelled)."""

    trades_today: int = 0
    orders_in_rate_window: int = 0
    notional_in_rolling_window: Decimal = Decimal(0)
    open_buy_notional: Decimal = Decimal(0)  # reserved by the agent's open buy orders
    position_qty: Decimal = Decimal(0)  # the agent's position in this order's symbol
    open_symbol_qty: Decimal = Decimal(0)  # signed qty of the agent's open orders in this symbol
    open_symbol_notional: Decimal = Decimal(0)  # signed notional of those orders
    gross_exposure: Decimal = Decimal(0)  # sum of |position value| plus open order notional, all symbols
    agent_cash: Decimal = Decimal(0)
    daily_pnl: Decimal = Decimal(0)  # realized + unrealized since the start of the trading day
    equity: Decimal = Decimal(0)
    equity_peak: Decimal = Decimal(0)
    recent_order_hashes: frozenset[str] = frozenset()  # orders within the duplicate window
    denials_in_window: int = 0
    account_open_buy_notional: Decimal = Decimal(0)  # every agent's open buy orders (shared account)


@dataclass(frozen=True)
class TradingStatus:
    enabled: bool = True  # enable_agent_trading
    global_state: TradingStateName = "active"
    global_reason: str | None = None
    agent_state: TradingStateName = "active"
    agent_reason: str | None = None


@dataclass(frozen=True)
class CheckInput:
    order: OrderRequest
    strategy: str | None
    limits: EffectiveLimits
    quote: Quote | None
    asset: Asset | None
    usage: Usage
    account: Account | None
    status: TradingStatus
    now: datetime
    market_open: bool | None = None  # None: unknown (fails closed for equities)
    enforce_market_hours: bool = True
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Pricing:
    reference_price: Decimal | None
    estimated_notional: Decimal | None
    estimated_qty: Decimal | None


def price_order(order: OrderRequest, quote: Quote | None) -> Pricing:
    """Price an order at the larger of its limit/stop price and the reference quote, so a buy limit far
    above the market cannot slip past a notional cap. Buys reference the ask, sells the bid."""
    if quote is None:
        return Pricing(None, order.notional, None)
    reference = quote.ask if order.side == "buy" else quote.bid
    if reference <= 0:
        reference = quote.last
    worst = max([p for p in (reference, order.limit_price, order.stop_price) if p is not None])
    if order.notional is not None:
        qty = order.notional / reference if reference > 0 else None
        return Pricing(reference, order.notional, qty)
    qty = order.qty or Decimal(0)
    return Pricing(reference, qty * worst, qty)


def money(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.01')):,}"


def _v(code: Code, message: str) -> list[Violation]:
    return [Violation(code=code, message=message)]


# --- trading state ---------------------------------------------------------------------------------

def check_trading_enabled(c: CheckInput) -> list[Violation]:
    if not c.status.enabled:
        return _v(Code.TRADING_DISABLED, "agent trading is disabled on this server (enable_agent_trading = false)")
    return []


def check_halts(c: CheckInput) -> list[Violation]:
    found: list[Violation] = []
    if c.status.global_state == "halted":
        found += _v(Code.TRADING_HALTED, f"all trading is halted by an operator: {c.status.global_reason or 'no reason given'}"
                    "; only a person can resume it")
    if c.status.agent_state == "halted":
        found += _v(Code.AGENT_HALTED, f"this agent is halted: {c.status.agent_reason or 'no reason given'}"
                    "; only a person can resume it")
    return found


# --- permissions -----------------------------------------------------------------------------------

def check_symbol_allowed(c: CheckInput) -> list[Violation]:
    if not c.limits.allows_symbol(c.order.symbol):
        allowed = ", ".join(sorted(c.limits.allowed_symbols)) or "none"
        return _v(Code.SYMBOL_NOT_ALLOWED, f"{c.order.symbol} is not in this agent's allowed symbols ({allowed})")
    return []


def check_strategy_allowed(c: CheckInput) -> list[Violation]:
    if not c.limits.allows_strategy(c.strategy):
        allowed = ", ".join(sorted(c.limits.allowed_strategies)) or "none"
        return _v(Code.STRATEGY_NOT_ALLOWED,
                  f"strategy {c.strategy!r} is not allowed for this agent (allowed: {allowed})")
    return []


# --- per order -------------------------------------------------------------------------------------

def check_order_notional(c: CheckInput) -> list[Violation]:
    pricing = price_order(c.order, c.quote)
    if pricing.estimated_notional is not None and pricing.estimated_notional > c.limits.max_trade_size:
        return _v(Code.ORDER_NOTIONAL_EXCEEDS_MAX,
                  f"order notional {money(pricing.estimated_notional)} exceeds the maximum per order "
                  f"{money(c.limits.max_trade_size)}")
    return []


# --- per agent over time ---------------------------------------------------------------------------

def check_position_size(c: CheckInput) -> list[Violation]:
    pricing = price_order(c.order, c.quote)
    if pricing.reference_price is None or pricing.estimated_qty is None or c.order.side != "buy":
        return []
    price = max(pricing.reference_price, c.order.limit_price or Decimal(0), c.order.stop_price or Decimal(0))
    resulting_qty = c.usage.position_qty + c.usage.open_symbol_qty + pricing.estimated_qty
    resulting = abs(resulting_qty) * price
    if resulting > c.limits.max_position_size:
        return _v(Code.POSITION_EXCEEDS_MAX,
                  f"resulting position in {c.order.symbol} would be {money(resulting)} "
                  f"({decimal_text(resulting_qty)} units incl. open orders); the maximum is "
                  f"{money(c.limits.max_position_size)}")
    return []


def check_daily_trades(c: CheckInput) -> list[Violation]:
    if c.usage.trades_today + 1 > c.limits.max_daily_trades:
        return _v(Code.DAILY_TRADES_EXCEEDED,
                  f"{c.usage.trades_today} trades today already; the maximum is {c.limits.max_daily_trades} per day")
    return []


Check = Callable[[CheckInput], list[Violation]]

CHECKS: tuple[Check, ...] = (
    check_trading_enabled,
    check_halts,
    check_symbol_allowed,
    check_strategy_allowed,
    check_order_notional,
    check_position_size,
    check_daily_trades,
)


def run_checks(c: CheckInput, checks: tuple[Check, ...] = CHECKS) -> list[Violation]:
    """Every violation of the order, in a stable order, none hidden behind the first."""
    found: list[Violation] = []
    for check in checks:
        found.extend(check(c))
    return found
