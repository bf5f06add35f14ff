"""Pre-trade risk checks: pure functions from (order, limits, market snapshot, usage) to violations.

Each check is one named function returning the violations it finds (at most one per code), with a
message an LLM can act on: what the limit is and what the order would have made it. `run_checks` runs
them all and reports every violation at once. No I/O here: the gate gathers the inputs and passes them in.
Adding a control is adding one function to CHECKS.

Conventions every check follows:
- Fail closed. A check that needs a price returns NO_MARKET_DATA when the order cannot be priced (no
  quote, or a quote without any positive price), so no check passes silently for want of data; run_checks
  reports that violation once. Stale quotes are denied by check_market_data (STALE_MARKET_DATA).
- Orders are priced at the larger of their limit/stop price and the reference quote (the ask for buys,
  the bid for sells): see price_order. Notional orders are sized at notional / reference price.
- Limits are inclusive: an order that brings a quantity exactly to its limit passes; one cent, one share
  or one order more is denied. The exceptions are the loss limits (daily loss, drawdown): once reached,
  they block every order that adds risk.
- An order "adds risk" unless it only shrinks the agent's projected position in the symbol (position
  plus its open orders on the order's side) without crossing to the other side. Orders that only shrink
  a position pass the loss limits, the position and exposure caps, and reduce-only mode; a flip from
  short to long (or back) adds risk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any, Generic, TypeVar, overload
from zoneinfo import ZoneInfo

from broker.base import Account, Asset, Quote
from policies.limits import EffectiveLimits
from policies.orders import OrderRequest, decimal_text
from policies.violations import Code, Violation

TradingStateName = str  # "active" | "reducing" | "halted"
TRADING_STATES = frozenset({"active", "reducing", "halted"})

NEW_YORK = ZoneInfo("America/New_York")
ZERO = Decimal(0)
HUNDRED = Decimal(100)
MAX_DECIMAL_PLACES = 9  # Alpaca accepts up to 9 decimal places for qty and notional
CRYPTO_TIME_IN_FORCE = frozenset({"gtc", "ioc"})
CRYPTO_ORDER_TYPES = frozenset({"market", "limit", "stop_limit"})


@dataclass(frozen=True)
class Usage:
    """What the agent has already used, counting live reservations (orders not yet rejected/cancelled).
    Built by ledger.usage.load_usage; every field defaults to "nothing used"."""

    trades_today: int = 0
    orders_in_rate_window: int = 0
    notional_in_rolling_window: Decimal = ZERO
    open_buy_notional: Decimal = ZERO  # unfilled notional reserved by the agent's open buy orders
    position_qty: Decimal = ZERO  # the agent's position in this order's symbol (negative: short)
    open_symbol_qty: Decimal = ZERO  # net signed unfilled qty of the agent's open orders in this symbol
    open_symbol_notional: Decimal = ZERO  # net signed unfilled notional of those orders
    gross_exposure: Decimal = ZERO  # Σ over symbols of the worst-case |position value| incl. open orders
    agent_cash: Decimal = ZERO
    daily_pnl: Decimal = ZERO  # realized + unrealized since the start of the trading day
    equity: Decimal = ZERO
    equity_peak: Decimal = ZERO
    recent_order_hashes: frozenset[str] = frozenset()  # orders within the duplicate window
    denials_in_window: int = 0
    account_open_buy_notional: Decimal = ZERO  # every agent's open buy orders (shared account)
    # Added for the risk engine (all optional):
    open_symbol_buy_qty: Decimal = ZERO  # unfilled qty of the agent's open buys in this symbol (>= 0)
    open_symbol_sell_qty: Decimal = ZERO  # unfilled qty of the agent's open sells in this symbol (>= 0)
    day_start_equity: Decimal | None = None  # None: not known
    day_start_stale: bool = False  # agent_accounts.day is not today: daily_pnl is 0 until the day is rolled
    # agent_accounts' equity_peak and day as stored (None: no row yet), so a decision that writes them back
    # (ledger.usage.persist_marks) need not read the row again.
    stored_equity_peak: Decimal | None = None
    stored_day: str | None = None


@dataclass(frozen=True)
class TradingStatus:
    enabled: bool = True  # enable_agent_trading
    global_state: TradingStateName = "active"
    global_reason: str | None = None
    agent_state: TradingStateName = "active"
    agent_reason: str | None = None


@dataclass(frozen=True)
class Pricing:
    reference_price: Decimal | None
    estimated_notional: Decimal | None
    estimated_qty: Decimal | None


@dataclass(frozen=True)
class PositionChange:
    """How the order moves the agent's projected position in its symbol (signed quantities).

    before: position plus the agent's open orders on the order's side (what the order adds to);
    after: before plus this order. None when the order's size is unknown (a notional order, no price)."""

    qty: Decimal | None
    before: Decimal
    after: Decimal | None

    @property
    def only_reduces(self) -> bool:
        """Shrinks an existing position without crossing to the other side."""
        if self.after is None or self.before == 0:
            return False
        same_side = self.after == 0 or (self.after > 0) == (self.before > 0)
        return abs(self.after) < abs(self.before) and same_side

    @property
    def adds_risk(self) -> bool:
        """Everything but a pure reduction: growing the position, opening one, or crossing to the other
        side (a flip opens a new position). Unknown size: True."""
        return not self.only_reduces


T = TypeVar("T")


class computed_once(Generic[T]):
    """functools.cached_property without its lock: the value is worked out on the first read and kept in the
    instance's __dict__, which later reads find first (a non-data descriptor). Python 3.11's cached_property
    takes a lock shared by every instance on each first read (3.12 dropped it); the values here are pure
    functions of a frozen input, so two threads racing would only work out the same value twice."""

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> computed_once[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> T | computed_once[T]:
        if instance is None:
            return self
        value = self.compute(instance)
        instance.__dict__[self.name] = value
        return value


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
    next_open: datetime | None = None  # when the US equity market opens next (while it is closed)
    broker: str = "simulated"  # the broker's name: what order classes it takes (exits)

    @computed_once
    def pricing(self) -> Pricing:
        """price_order(order, quote), computed once per input."""
        return price_order(self.order, self.quote)

    @computed_once
    def position_change(self) -> PositionChange:
        return position_change(self.order, self.usage, self.pricing)


def price_order(order: OrderRequest, quote: Quote | None) -> Pricing:
    """Price an order at the larger of its limit/stop price and the reference quote, so a buy limit far
    above the market cannot slip past a notional cap. Buys reference the ask, sells the bid (the last
    trade when that side is empty). A quote without any positive price cannot price an order."""
    if quote is None:
        return Pricing(None, order.notional, None)
    reference = quote.ask if order.side == "buy" else quote.bid
    if reference <= 0:
        reference = quote.last
    if reference <= 0:
        return Pricing(None, order.notional, None)
    worst = max([p for p in (reference, order.limit_price, order.stop_price) if p is not None])
    if order.notional is not None:
        return Pricing(reference, order.notional, order.notional / reference)
    qty = order.qty or ZERO
    return Pricing(reference, qty * worst, qty)


def position_change(order: OrderRequest, usage: Usage, pricing: Pricing) -> PositionChange:
    """Open orders on the other side are not counted: they may be cancelled, so they cannot make room."""
    open_buys = max(usage.open_symbol_buy_qty, usage.open_symbol_qty, ZERO)
    open_sells = max(usage.open_symbol_sell_qty, -usage.open_symbol_qty, ZERO)
    before = usage.position_qty + open_buys if order.side == "buy" else usage.position_qty - open_sells
    qty = order.qty if order.notional is None else pricing.estimated_qty
    if qty is None:
        return PositionChange(None, before, None)
    after = before + qty if order.side == "buy" else before - qty
    return PositionChange(qty, before, after)


# --- message helpers -------------------------------------------------------------------------------

_CENT = Decimal("0.01")


def money(value: Decimal) -> str:
    """$1,234.50; amounts with fractions of a cent keep up to 4 places so a boundary stays visible."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    cents = value.quantize(_CENT, ROUND_HALF_EVEN)
    if cents != value:
        finer = value.quantize(Decimal("0.0001"), ROUND_HALF_EVEN)
        if finer != cents:
            whole, _, frac = f"{finer:,}".partition(".")
            return f"{sign}${whole}.{frac.rstrip('0')}"
    return f"{sign}${cents:,}"


def amount(value: Decimal, places: int = 6) -> str:
    """A quantity: 1,234.5 (up to `places` decimals, no trailing zeros)."""
    rounded = value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN) if value.is_finite() else value
    text = decimal_text(rounded) or "0"
    whole, _, frac = text.partition(".")
    sign = "-" if whole.startswith("-") else ""
    whole = f"{int(whole.lstrip('-')):,}"
    return f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"


def pct(value: Decimal) -> str:
    return f"{amount(value, 2)}%"


def units(order: OrderRequest, qty: Decimal) -> str:
    return f"{amount(qty)} {'units' if order.is_crypto else 'shares'}"


def _v(code: Code, message: str) -> list[Violation]:
    return [Violation(code=code, message=message)]


def _no_price(c: CheckInput) -> list[Violation]:
    """The one violation every price-dependent check returns when the order cannot be priced."""
    if c.quote is None:
        return _v(Code.NO_MARKET_DATA, f"no quote for {c.order.symbol}: the order cannot be priced, so it "
                  "cannot be checked; try again when market data is available")
    q = c.quote
    return _v(Code.NO_MARKET_DATA, f"the quote for {c.order.symbol} has no usable price (bid {money(q.bid)}, "
              f"ask {money(q.ask)}, last {money(q.last)}): the order cannot be priced")


# --- trading state ---------------------------------------------------------------------------------

def check_trading_enabled(c: CheckInput) -> list[Violation]:
    if not c.status.enabled:
        return _v(Code.TRADING_DISABLED,
                  "agent trading is disabled on this server (enable_agent_trading = false)")
    return []


def _halt_reason(state: str, reason: str | None) -> str:
    if state == "halted":
        return reason or "no reason given"
    return f"unknown trading state {state!r}"


def check_halts(c: CheckInput) -> list[Violation]:
    """Halted (or an unknown state, which fails closed): nothing but cancels, until a person resumes."""
    found: list[Violation] = []
    g, a = c.status.global_state, c.status.agent_state
    if g == "halted" or g not in TRADING_STATES:
        why = _halt_reason(g, c.status.global_reason)
        found += _v(Code.TRADING_HALTED, f"all trading is halted: {why}; only a person can resume it")
    if a == "halted" or a not in TRADING_STATES:
        why = _halt_reason(a, c.status.agent_reason)
        found += _v(Code.AGENT_HALTED, f"this agent is halted: {why}; only a person can resume it")
    return found


def check_reduce_only(c: CheckInput) -> list[Violation]:
    """Reducing (globally or for this agent): only orders that shrink an existing position pass."""
    scopes = []
    if c.status.global_state == "reducing":
        scopes.append(f"all agents: {c.status.global_reason or 'no reason given'}")
    if c.status.agent_state == "reducing":
        scopes.append(f"this agent: {c.status.agent_reason or 'no reason given'}")
    if not scopes:
        return []
    change = c.position_change
    if change.after is None:
        return _no_price(c)
    if change.only_reduces:
        return []
    return _v(Code.REDUCE_ONLY,
              f"trading is reduce-only ({'; '.join(scopes)}): only orders that shrink an existing position "
              f"pass; this order would take {c.order.symbol} from {units(c.order, change.before)} "
              f"(incl. open orders) to {units(c.order, change.after)}")


# --- permissions -----------------------------------------------------------------------------------

def check_symbol_allowed(c: CheckInput) -> list[Violation]:
    if not c.limits.allows_symbol(c.order.symbol):
        allowed = ", ".join(sorted(c.limits.allowed_symbols)) or "none"
        return _v(Code.SYMBOL_NOT_ALLOWED,
                  f"{c.order.symbol} is not in this agent's allowed symbols ({allowed})")
    return []


def check_strategy_allowed(c: CheckInput) -> list[Violation]:
    if not c.limits.allows_strategy(c.strategy):
        allowed = ", ".join(sorted(c.limits.allowed_strategies)) or "none"
        return _v(Code.STRATEGY_NOT_ALLOWED,
                  f"strategy {c.strategy!r} is not allowed for this agent (allowed: {allowed})")
    return []


def check_asset_tradable(c: CheckInput) -> list[Violation]:
    if c.asset is None:
        return _v(Code.ASSET_NOT_TRADABLE, f"{c.order.symbol} is an unknown symbol: the broker has no such "
                  "asset; check the spelling (crypto pairs look like BTC/USD)")
    if not c.asset.tradable:
        return _v(Code.ASSET_NOT_TRADABLE, f"{c.order.symbol} is not tradable at the broker")
    return []


# --- order validity --------------------------------------------------------------------------------

def _decimal_places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _amount_problems(name: str, value: Decimal | None, problems: list[str]) -> bool:
    """Appends what is wrong with a positive amount; True when it is usable."""
    if value is None:
        return False
    if not value.is_finite():
        problems.append(f"{name} must be a finite number")
        return False
    if value <= 0:
        problems.append(f"{name} must be positive (got {decimal_text(value)})")
        return False
    if _decimal_places(value) > MAX_DECIMAL_PLACES:
        problems.append(f"{name} has more than {MAX_DECIMAL_PLACES} decimal places ({decimal_text(value)})")
        return False
    return True


def order_problems(order: OrderRequest, asset: Asset | None) -> list[str]:
    """Everything wrong with the order's shape, in Alpaca's terms (kept simple and conservative):

    - exactly one of qty and notional, each positive, at most 9 decimal places;
    - limit_price required for limit and stop_limit, forbidden for market and stop; stop_price required
      for stop and stop_limit, forbidden for market and limit; prices positive; US equity prices in whole
      cents from $1.00 up and at most 4 decimals below (Reg NMS sub-penny rule);
    - notional orders only as market orders (and, for equities, time_in_force day);
    - fractional equity quantities only for fractionable assets, as market orders with time_in_force day;
    - crypto: time_in_force gtc or ioc only, order types market, limit or stop_limit;
    - extended_hours only for US equity limit orders with time_in_force day.
    """
    problems: list[str] = []
    crypto = order.is_crypto or (asset is not None and asset.asset_class == "crypto")
    if not order.symbol.strip():
        problems.append("symbol is empty")
    if (order.qty is None) == (order.notional is None):
        problems.append("give exactly one of qty (units) and notional (dollars)"
                        + (", not both" if order.qty is not None else ""))
    qty_ok = _amount_problems("qty", order.qty, problems)
    _amount_problems("notional", order.notional, problems)

    needs_limit = order.order_type in ("limit", "stop_limit")
    needs_stop = order.order_type in ("stop", "stop_limit")
    if needs_limit and order.limit_price is None:
        problems.append(f"a {order.order_type} order needs limit_price")
    if not needs_limit and order.limit_price is not None:
        problems.append(f"a {order.order_type} order takes no limit_price")
    if needs_stop and order.stop_price is None:
        problems.append(f"a {order.order_type} order needs stop_price")
    if not needs_stop and order.stop_price is not None:
        problems.append(f"a {order.order_type} order takes no stop_price")
    for name, price in (("limit_price", order.limit_price), ("stop_price", order.stop_price)):
        if _amount_problems(name, price, problems) and price is not None and not crypto:
            places, where = (2, "from $1.00 up") if price >= 1 else (4, "below $1.00")
            if _decimal_places(price) > places:
                problems.append(f"{name} {decimal_text(price)} has sub-penny increments: US equity prices "
                                f"take at most {places} decimal places {where}")

    if order.notional is not None:
        if order.order_type != "market":
            problems.append("notional (dollar) orders must be market orders; use qty for other types")
        elif not crypto and order.time_in_force != "day":
            problems.append("notional (dollar) orders for US equities must use time_in_force day")
    if crypto:
        if order.time_in_force not in CRYPTO_TIME_IN_FORCE:
            problems.append(f"crypto orders take time_in_force gtc or ioc, not {order.time_in_force}")
        if order.order_type not in CRYPTO_ORDER_TYPES:
            problems.append(f"crypto orders are market, limit or stop_limit, not {order.order_type}")
        if order.extended_hours:
            problems.append("extended_hours applies to US equities only (crypto trades around the clock)")
    else:
        fractional = order.notional is not None or (qty_ok and order.qty is not None and order.qty % 1 != 0)
        if fractional:
            if asset is not None and not asset.fractionable:
                problems.append(f"{order.symbol} is not fractionable: use a whole number of shares")
            if order.qty is not None and (order.order_type != "market" or order.time_in_force != "day"):
                problems.append("fractional share orders must be market orders with time_in_force day")
        if order.extended_hours and (order.order_type != "limit" or order.time_in_force != "day"):
            problems.append("extended_hours orders must be limit orders with time_in_force day")
    return problems


def check_order_valid(c: CheckInput) -> list[Violation]:
    problems = order_problems(c.order, c.asset)
    if problems:
        return _v(Code.INVALID_ORDER, f"invalid order ({c.order.describe()}): " + "; ".join(problems))
    return []


def check_stop_side(c: CheckInput) -> list[Violation]:
    """A stop triggers when the market reaches it: a buy stop above the last price, a sell stop below it.
    One on the wrong side would trigger at once (Alpaca refuses it), so it is refused with the price."""
    stop, quote = c.order.stop_price, c.quote
    if stop is None or quote is None or c.order.order_type not in ("stop", "stop_limit"):
        return []
    last = quote.last if quote.last > 0 else quote.mid
    if last <= 0:
        return []
    if c.order.side == "buy" and stop <= last:
        return _v(Code.INVALID_ORDER, f"a buy stop must be above the last price {money(last)} of {c.order.symbol} "
                  f"(stop_price {money(stop)} would trigger at once); use a limit order to buy below it")
    if c.order.side == "sell" and stop >= last:
        return _v(Code.INVALID_ORDER, f"a sell stop must be below the last price {money(last)} of "
                  f"{c.order.symbol} (stop_price {money(stop)} would trigger at once); use a limit order to sell "
                  "above it")
    return []


# --- market state ----------------------------------------------------------------------------------

def _is_crypto(c: CheckInput) -> bool:
    return c.order.is_crypto or (c.asset is not None and c.asset.asset_class == "crypto")


def check_market_hours(c: CheckInput) -> list[Violation]:
    """US equities trade in the regular session only; an unknown market state fails closed.
    Crypto never closes."""
    if not c.enforce_market_hours or _is_crypto(c) or c.market_open is True:
        return []
    if c.market_open is None:
        return _v(Code.MARKET_CLOSED, f"cannot tell whether the US equity market is open, so "
                  f"{c.order.symbol} cannot be traded now (fail closed); try again shortly")
    when = (f"it opens next at {opening_text(c.next_open)}" if c.next_open is not None
            else "regular hours are 09:30-16:00 New York time on trading days")
    return _v(Code.MARKET_CLOSED, f"the US equity market is closed, so {c.order.symbol} cannot be traded now; "
              f"{when}. Orders are not queued while it is closed: propose again after the open (crypto trades "
              "around the clock)")


def opening_text(moment: datetime) -> str:
    """'Mon 2026-11-30 09:30 New York time (14:30 UTC)'."""
    local = moment.astimezone(NEW_YORK)
    return f"{local:%a %Y-%m-%d %H:%M} New York time ({moment.astimezone(UTC):%Y-%m-%dT%H:%MZ})"


def check_market_data(c: CheckInput) -> list[Violation]:
    """A usable quote no older than max_quote_age_seconds (exactly that old still passes)."""
    if c.pricing.reference_price is None:
        return _no_price(c)
    assert c.quote is not None
    age = c.now - c.quote.as_of
    limit = timedelta(seconds=c.limits.max_quote_age_seconds)
    if age > limit:
        return _v(Code.STALE_MARKET_DATA,
                  f"the quote for {c.order.symbol} is {amount(Decimal(age.total_seconds()), 3)} s old "
                  f"(as of {c.quote.as_of.isoformat()}); the maximum age is "
                  f"{c.limits.max_quote_age_seconds} s, so the order cannot be priced safely; try again when "
                  "fresh data is available")
    return []


def check_price_collar(c: CheckInput) -> list[Violation]:
    """Limit and stop prices at most price_collar_pct through the reference quote: above it for buys,
    below it for sells. Prices on the passive side are not collared."""
    o = c.order
    if o.limit_price is None and o.stop_price is None:
        return []
    reference = c.pricing.reference_price
    if reference is None:
        return _no_price(c)
    collar = c.limits.price_collar_pct
    prices = [(n, p) for n, p in (("limit", o.limit_price), ("stop", o.stop_price)) if p is not None]
    if o.side == "buy":
        bound = reference * (1 + collar / HUNDRED)
        bad = [(n, p) for n, p in prices if p > bound]
        where, ref_name = "above", "ask"
    else:
        bound = reference * (1 - collar / HUNDRED)
        bad = [(n, p) for n, p in prices if p < bound]
        where, ref_name = "below", "bid"
    if not bad:
        return []
    parts = ", ".join(f"{n} price {money(p)} is {pct(abs(p - reference) / reference * HUNDRED)} {where} the "
                      f"{ref_name} {money(reference)}" for n, p in bad)
    return _v(Code.PRICE_COLLAR, f"{parts}; the collar allows at most {pct(collar)} ({money(bound)})")


# --- per order -------------------------------------------------------------------------------------

def check_order_notional(c: CheckInput) -> list[Violation]:
    pricing = c.pricing
    if pricing.reference_price is None or pricing.estimated_notional is None:
        return _no_price(c)
    if pricing.estimated_notional > c.limits.max_trade_size:
        how = ""
        if c.order.notional is None and pricing.estimated_qty:
            price = pricing.estimated_notional / pricing.estimated_qty
            how = f" ({units(c.order, pricing.estimated_qty)} at {money(price)})"
        return _v(Code.ORDER_NOTIONAL_EXCEEDS_MAX,
                  f"order notional {money(pricing.estimated_notional)}{how} exceeds the maximum per order "
                  f"{money(c.limits.max_trade_size)}")
    return []


def check_order_qty(c: CheckInput) -> list[Violation]:
    """Quantity cap; notional orders are sized at notional / reference price."""
    qty = c.position_change.qty
    if c.pricing.reference_price is None or qty is None:
        return _no_price(c)
    if qty > c.limits.max_order_qty:
        est = " (estimated from the notional)" if c.order.notional is not None else ""
        return _v(Code.ORDER_QTY_EXCEEDS_MAX,
                  f"order quantity {units(c.order, qty)}{est} exceeds the maximum per order "
                  f"{units(c.order, c.limits.max_order_qty)}")
    return []


# --- per agent over time ---------------------------------------------------------------------------

def _order_price(c: CheckInput) -> Decimal | None:
    """The price an order is valued at: the larger of its limit/stop price and the reference quote."""
    ref = c.pricing.reference_price
    if ref is None:
        return None
    return max(ref, c.order.limit_price or ZERO, c.order.stop_price or ZERO)


def check_position_size(c: CheckInput) -> list[Violation]:
    """|position + open orders on this side + order| × price, for orders that add risk."""
    price = _order_price(c)
    change = c.position_change
    if price is None or change.after is None:
        return _no_price(c)
    if not change.adds_risk:
        return []
    resulting = abs(change.after) * price
    if resulting > c.limits.max_position_size:
        return _v(Code.POSITION_EXCEEDS_MAX,
                  f"resulting position in {c.order.symbol} would be {money(resulting)} "
                  f"({units(c.order, change.after)} incl. open orders, at {money(price)}); the maximum is "
                  f"{money(c.limits.max_position_size)} per symbol")
    return []


def check_gross_exposure(c: CheckInput) -> list[Violation]:
    """All symbols: current gross exposure (positions and open orders) plus this order, if it adds risk."""
    notional = c.pricing.estimated_notional
    if c.pricing.reference_price is None or notional is None:
        return _no_price(c)
    if not c.position_change.adds_risk:
        return []
    resulting = c.usage.gross_exposure + notional
    if resulting > c.limits.max_gross_exposure:
        return _v(Code.GROSS_EXPOSURE_EXCEEDS_MAX,
                  f"gross exposure would be {money(resulting)} ({money(c.usage.gross_exposure)} now incl. "
                  f"open orders + {money(notional)} this order); the maximum is "
                  f"{money(c.limits.max_gross_exposure)}")
    return []


def check_agent_buying_power(c: CheckInput) -> list[Violation]:
    """Buys spend the agent's allocated capital: cash minus what its open buy orders reserve."""
    notional = c.pricing.estimated_notional
    if c.pricing.reference_price is None or notional is None:
        return _no_price(c)
    if c.order.side != "buy":
        return []
    available = c.usage.agent_cash - c.usage.open_buy_notional
    if notional > available:
        return _v(Code.INSUFFICIENT_BUYING_POWER,
                  f"this buy needs {money(notional)} but the agent's buying power is {money(available)} "
                  f"(cash {money(c.usage.agent_cash)} minus {money(c.usage.open_buy_notional)} reserved by "
                  "its open buy orders)")
    return []


def check_account_buying_power(c: CheckInput) -> list[Violation]:
    """The shared broker account: known, not blocked, and (for buys) enough buying power after every
    agent's open buy orders. Conservative: orders the broker already nets are subtracted again, since the
    account snapshot may predate them."""
    if c.account is None:
        return _v(Code.INSUFFICIENT_BUYING_POWER, "account state unknown: the broker account could not be "
                  "read, so buying power cannot be confirmed (fail closed); try again shortly")
    if c.account.trading_blocked:
        return _v(Code.ACCOUNT_BLOCKED,
                  "the broker account is blocked from trading; an operator must resolve it")
    notional = c.pricing.estimated_notional
    if c.pricing.reference_price is None or notional is None:
        return _no_price(c)
    if c.order.side != "buy":
        return []
    available = c.account.buying_power - c.usage.account_open_buy_notional
    if notional > available:
        return _v(Code.INSUFFICIENT_BUYING_POWER,
                  f"this buy needs {money(notional)} but the account's buying power is {money(available)} "
                  f"({money(c.account.buying_power)} minus {money(c.usage.account_open_buy_notional)} "
                  "reserved by open buy orders of all agents)")
    return []


def check_short_selling(c: CheckInput) -> list[Violation]:
    """A sell beyond the agent's position (less its open sells) is a short sale: it needs allow_short and
    a shortable asset (crypto cannot be shorted), and Alpaca does not short fractional shares."""
    if c.order.side != "sell":
        return []
    change = c.position_change
    if change.after is None:
        return _no_price(c)
    short_before = max(-change.before, ZERO)
    short_after = max(-change.after, ZERO)
    if short_after <= short_before:
        return []
    reasons = []
    if not c.limits.allow_short:
        reasons.append("short selling is not allowed for this agent")
    if _is_crypto(c):
        reasons.append("crypto cannot be sold short")
    elif c.asset is None or not c.asset.shortable:
        reasons.append(f"{c.order.symbol} is not shortable at the broker")
    elif (short_after - short_before) % 1 != 0 or c.order.notional is not None:
        reasons.append("fractional shares cannot be sold short")
    if not reasons:
        return []
    held = max(change.before, ZERO)
    return _v(Code.SHORT_SELLING_NOT_ALLOWED,
              f"selling {units(c.order, change.qty or ZERO)} of {c.order.symbol} would leave the agent short "
              f"{units(c.order, short_after)} (it holds {units(c.order, held)} not already being sold): "
              f"{'; '.join(reasons)}")


def check_daily_trades(c: CheckInput) -> list[Violation]:
    if c.usage.trades_today + 1 > c.limits.max_daily_trades:
        return _v(Code.DAILY_TRADES_EXCEEDED,
                  f"this would be trade {c.usage.trades_today + 1} today ({c.usage.trades_today} already); "
                  f"the maximum is {c.limits.max_daily_trades} per day (New York trading day)")
    return []


def check_order_rate(c: CheckInput) -> list[Violation]:
    window = c.limits.order_rate_window_seconds
    if c.usage.orders_in_rate_window + 1 > c.limits.max_orders_per_window:
        return _v(Code.ORDER_RATE_EXCEEDED,
                  f"this would be order {c.usage.orders_in_rate_window + 1} in the last {window} s; the "
                  f"maximum is {c.limits.max_orders_per_window} orders per {window} s; wait before sending "
                  "more")
    return []


def check_rolling_notional(c: CheckInput) -> list[Violation]:
    """Notional over a rolling window, so a large order split into small ones is still capped."""
    notional = c.pricing.estimated_notional
    if c.pricing.reference_price is None or notional is None:
        return _no_price(c)
    resulting = c.usage.notional_in_rolling_window + notional
    if resulting > c.limits.rolling_notional_max:
        window = c.limits.rolling_notional_window_seconds
        return _v(Code.ROLLING_NOTIONAL_EXCEEDED,
                  f"notional traded in the last {window} s would be {money(resulting)} "
                  f"({money(c.usage.notional_in_rolling_window)} already + {money(notional)} this order); "
                  f"the maximum is {money(c.limits.rolling_notional_max)} per {window} s")
    return []


def check_duplicate(c: CheckInput) -> list[Violation]:
    if c.usage.recent_order_hashes and c.order.order_hash() in c.usage.recent_order_hashes:
        return _v(Code.DUPLICATE_ORDER,
                  f"an identical order ({c.order.describe()}) was placed in the last "
                  f"{c.limits.duplicate_window_seconds} s; if you really want a second one, wait or change "
                  "it")
    return []


def daily_loss_reached(limits: EffectiveLimits, usage: Usage) -> bool:
    return usage.daily_pnl <= -limits.daily_loss_limit


def drawdown_pct(usage: Usage) -> Decimal:
    """How far equity is below its peak, in percent (0 with no peak)."""
    if usage.equity_peak <= 0 or usage.equity >= usage.equity_peak:
        return ZERO
    return (usage.equity_peak - usage.equity) / usage.equity_peak * HUNDRED


def drawdown_reached(limits: EffectiveLimits, usage: Usage) -> bool:
    return usage.equity_peak > 0 and drawdown_pct(usage) >= limits.max_drawdown_pct


def check_daily_loss(c: CheckInput) -> list[Violation]:
    """Once today's P&L (realized + unrealized) reaches -daily_loss_limit, only risk-reducing orders pass."""
    if not daily_loss_reached(c.limits, c.usage) or not c.position_change.adds_risk:
        return []
    return _v(Code.DAILY_LOSS_LIMIT,
              f"today's P&L is {money(c.usage.daily_pnl)}, at or beyond the daily loss limit "
              f"{money(-c.limits.daily_loss_limit)}: only orders that reduce a position are allowed today")


def check_drawdown(c: CheckInput) -> list[Violation]:
    """Once equity is max_drawdown_pct below its peak, only risk-reducing orders pass."""
    if not drawdown_reached(c.limits, c.usage) or not c.position_change.adds_risk:
        return []
    return _v(Code.DRAWDOWN_LIMIT,
              f"equity {money(c.usage.equity)} is {pct(drawdown_pct(c.usage))} below its peak "
              f"{money(c.usage.equity_peak)}; the maximum drawdown is {pct(c.limits.max_drawdown_pct)}: only "
              "orders that reduce a position are allowed")


# --- exits: protective stops and take-profits ------------------------------------------------------
# An order's exits (stop_loss, take_profit, trailing_stop) are reduce-only orders on the other side that
# work once the entry fills; they are never counted as orders that add risk (they are not in Usage at all,
# so they cannot make room under a position or exposure cap either).

EXIT_ENTRY_TYPES = frozenset({"market", "limit"})
EXIT_TIME_IN_FORCE = frozenset({"day", "gtc"})


def _entry_price(c: CheckInput) -> Decimal | None:
    """Where the entry fills at worst: its limit price, else the reference quote."""
    if c.order.order_type == "limit" and c.order.limit_price is not None:
        return c.order.limit_price
    return c.pricing.reference_price


def _exit_market(c: CheckInput) -> Decimal | None:
    """The price the exits would trade at now: the bid for a long's sell exits, the ask for a short's."""
    if c.quote is None:
        return None
    price = c.quote.bid if c.order.side == "buy" else c.quote.ask
    return price if price > 0 else (c.quote.last if c.quote.last > 0 else None)


def exit_problems(c: CheckInput) -> list[str]:
    """Why the order's exits cannot be sent as a bracket (empty when they can). Brokers take exits only on
    a whole-share US equity market or limit entry, day or gtc, outside extended hours (Alpaca refuses
    bracket, OCO and OTO orders for crypto), with each exit strictly beyond the entry: for a buy the stop
    below the entry and the market, the take-profit above the entry; mirrored for a sell."""
    o = c.order
    if not o.has_exits:
        return []
    problems: list[str] = []
    if o.stop_loss is not None and o.trailing_stop is not None:
        problems.append("give stop_loss or trailing_stop, not both")
    if o.trailing_stop is not None and c.broker == "alpaca":
        problems.append("Alpaca takes no trailing stop as an exit of an entry order (its bracket and OTO legs are "
                        "stop or stop-limit orders): use stop_loss")
    if _is_crypto(c):
        problems.append("crypto orders cannot carry exits: the broker takes bracket, OCO and OTO orders for "
                        "US equities only; place a separate stop_limit order after the fill")
    if o.notional is not None or (o.qty is not None and o.qty % 1 != 0):
        problems.append("an order with exits needs a whole-number qty (no notional, no fractional shares)")
    if o.order_type not in EXIT_ENTRY_TYPES:
        problems.append(f"an order with exits must be a market or limit entry, not {o.order_type}")
    if o.time_in_force not in EXIT_TIME_IN_FORCE:
        problems.append(f"an order with exits takes time_in_force day or gtc, not {o.time_in_force}")
    if o.extended_hours:
        problems.append("an order with exits cannot trade in extended hours")
    change = c.position_change
    if change.after is not None and change.only_reduces:
        problems.append("exits protect a position the order opens or adds to; this order only reduces one, "
                        "so send it without exits")
    entry, market = _entry_price(c), _exit_market(c)
    buy = o.side == "buy"
    prices = [(n, p) for n, p in (
        ("stop_loss", o.stop_loss.stop_price if o.stop_loss else None),
        ("stop_loss limit", o.stop_loss.limit_price if o.stop_loss else None),
        ("take_profit", o.take_profit.limit_price if o.take_profit else None)) if p is not None]
    for name, price in prices:
        if not _is_crypto(c) and _decimal_places(price) > (2 if price >= 1 else 4):
            problems.append(f"{name} {decimal_text(price)} has sub-penny increments")
    if entry is not None:
        where = "below" if buy else "above"
        stops = [("stop_loss", o.stop_loss.stop_price)] if o.stop_loss is not None else []
        for name, stop in stops:
            # Beyond both the entry and the market: a stop on the wrong side would fire at once.
            bound = min(entry, market) if buy and market is not None else (
                max(entry, market) if market is not None else entry)
            if (stop >= bound) if buy else (stop <= bound):
                problems.append(f"{name} {money(stop)} must be {where} the entry and the market "
                                f"({money(bound)}) for a {o.side}")
        if o.stop_loss is not None and o.stop_loss.limit_price is not None:
            limit, stop = o.stop_loss.limit_price, o.stop_loss.stop_price
            if (limit > stop) if buy else (limit < stop):
                problems.append(f"the stop-loss limit {money(limit)} must be at or {where} its stop "
                                f"{money(stop)}")
        if o.take_profit is not None:
            tp = o.take_profit.limit_price
            if (tp <= entry) if buy else (tp >= entry):
                problems.append(f"take_profit {money(tp)} must be {'above' if buy else 'below'} the entry "
                                f"{money(entry)} for a {o.side}")
        if o.trailing_stop is not None and o.trailing_stop.price is not None and o.trailing_stop.price >= entry:
            problems.append(f"the trailing stop offset {money(o.trailing_stop.price)} must be below the entry "
                            f"price {money(entry)}")
    return problems


def check_exits(c: CheckInput) -> list[Violation]:
    problems = exit_problems(c)
    if problems:
        return _v(Code.INVALID_ORDER, f"invalid exits ({c.order.describe()}): " + "; ".join(problems))
    return []


def check_stop_loss_required(c: CheckInput) -> list[Violation]:
    """require_stop_loss: an order that opens or adds to a position carries a stop_loss or trailing_stop."""
    if not c.limits.require_stop_loss or c.order.has_protective_stop or not c.position_change.adds_risk:
        return []
    return _v(Code.STOP_LOSS_REQUIRED,
              f"this agent must protect every opening order with a stop: add stop_loss (a price "
              f"{'below' if c.order.side == 'buy' else 'above'} the entry) or trailing_stop (e.g. '2%')")


def risk_distance(c: CheckInput) -> Decimal | None:
    """Money at risk per share: entry to the protective stop; without a stop, the whole entry price (the
    position's whole value is at risk). None without a price."""
    entry = _entry_price(c)
    if entry is None:
        return None
    o = c.order
    if o.stop_loss is not None:
        return abs(entry - o.stop_loss.stop_price)
    if o.trailing_stop is not None:
        t = o.trailing_stop
        return entry * t.percent / HUNDRED if t.percent is not None else (t.price or entry)
    return entry


def money_at_risk(c: CheckInput) -> Decimal | None:
    """qty x distance from the entry to the stop (notional orders sized at the reference price)."""
    distance, qty = risk_distance(c), c.position_change.qty
    if distance is None or qty is None:
        return None
    return qty * distance


def check_risk_per_trade(c: CheckInput) -> list[Violation]:
    """max_risk_per_trade (USD, or percent of capital) over what an opening order can lose before its stop."""
    budget = c.limits.max_risk_usd()
    if budget is None or not c.position_change.adds_risk:
        return []
    risk, distance = money_at_risk(c), risk_distance(c)
    if risk is None or distance is None:
        return _no_price(c)
    if risk <= budget:
        return []
    assert c.limits.max_risk_per_trade is not None
    limit_text = money(budget) + (f" ({c.limits.max_risk_per_trade.text()} of capital "
                                  f"{money(c.limits.capital)})" if c.limits.max_risk_per_trade.percent else "")
    stop = "" if c.order.has_protective_stop else " (no stop: the whole notional is at risk)"
    largest = (budget / distance).to_integral_value(ROUND_FLOOR) if distance > 0 else None
    hint = f"; the largest qty with this stop is {amount(largest)}" if largest is not None else ""
    return _v(Code.RISK_PER_TRADE_EXCEEDED,
              f"money at risk {money(risk)}{stop} ({units(c.order, c.position_change.qty or ZERO)} x "
              f"{money(distance)} to the stop) exceeds max_risk_per_trade {limit_text}{hint}")


Check = Callable[[CheckInput], list[Violation]]

CHECKS: tuple[Check, ...] = (
    check_trading_enabled,
    check_halts,
    check_reduce_only,
    check_symbol_allowed,
    check_strategy_allowed,
    check_asset_tradable,
    check_order_valid,
    check_stop_side,
    check_market_hours,
    check_market_data,
    check_price_collar,
    check_order_notional,
    check_order_qty,
    check_position_size,
    check_gross_exposure,
    check_agent_buying_power,
    check_account_buying_power,
    check_short_selling,
    check_daily_trades,
    check_order_rate,
    check_rolling_notional,
    check_duplicate,
    check_daily_loss,
    check_drawdown,
    check_exits,
    check_stop_loss_required,
    check_risk_per_trade,
)

# The checks that cannot decide without a price: each denies with NO_MARKET_DATA when there is none.
PRICED_CHECKS: tuple[Check, ...] = (
    check_market_data,
    check_order_notional,
    check_order_qty,
    check_position_size,
    check_gross_exposure,
    check_agent_buying_power,
    check_rolling_notional,
)


def run_checks(c: CheckInput, checks: tuple[Check, ...] = CHECKS) -> list[Violation]:
    """Every violation of the order, in a stable order, none hidden behind the first. A violation several
    checks share (NO_MARKET_DATA) is reported once. A check that raises denies the order (fail closed)."""
    found: list[Violation] = []
    seen: set[tuple[Code, str]] = set()
    for check in checks:
        try:
            result = check(c)
        except Exception as exc:  # a bug or malformed input must deny, never pass
            name = getattr(check, "__name__", "?")
            result = _v(Code.RISK_CHECK_FAILED, f"risk check {name} could not evaluate this order "
                        f"({type(exc).__name__}); it is denied to be safe")
        for violation in result:
            key = (violation.code, violation.message)
            if key not in seen:
                seen.add(key)
                found.append(violation)
    return found
