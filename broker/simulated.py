"""The simulated broker: the embedded default when no Alpaca account is configured.

Market data comes from broker.sim_market (deterministic from the seed). Orders and the account live in
the database tables sim_orders and sim_account, so a restart keeps them; cash and positions are never
stored but derived from the fills, so they cannot drift from the orders. A running broker keeps the result
in memory and applies only newer fills (SettledFills), so a read does not cost more with every order ever
placed.

Execution model
- Market orders fill at once at the quote: buys at the ask, sells at the bid. A notional order buys
  notional / price units, rounded down to 9 decimals.
- A limit order that is marketable on arrival fills at once at the quote; otherwise ioc/fok limit orders
  are canceled and day/gtc ones rest with status "new". Stop and stop_limit orders always rest.
- Resting orders are advanced whenever the broker's orders, positions or account are read: the minute
  price path is scanned from the order's evaluation mark up to now. A limit buy fills at its limit in the
  first minute whose price is at or below it (a sell at or above). A stop triggers in the first minute
  whose price is at or beyond the stop (buy: >=, sell: <=); a stop then fills at that minute's price and
  a stop_limit becomes a limit order at its limit price. There is no partial fill: liquidity is unlimited.
- Day orders expire at the close (16:00 New York) of the session they were placed in or, placed outside
  a session, of the next one; gtc orders after 90 days, as at Alpaca. That also bounds every scan.
- For an open order, `updated_at` is its evaluation mark: the path has been checked up to that time.
  A triggered stop_limit keeps its mark at the trigger minute, because no column records the trigger:
  each scan finds it again (the path is deterministic) and continues as a limit order.
- A running broker also keeps, per open order, how far it has walked the path from the stored row with nothing
  happening (PathProgress: the minute, a stop_limit's trigger, a trailing stop's mark), keyed by the order's id
  and the stored row exactly as read: a call walks only the minutes since the last call, however long ago the
  mark was stored. A row that differs (written by another process, or by a unit of ours that rolled back) is
  walked from its stored mark as before. Walking on from there finds what the full walk finds: each minute is
  checked alone, given that state (tests/broker/test_simulated_walks.py compares the two).
- Buys are rejected when their cost exceeds buying power (cash less what open buy orders reserve); the
  account is shared by all agents. Sells beyond the position of an asset that is not shortable are
  rejected too; shortable assets may be sold short (no margin requirement is modelled).

Every method that writes runs in one transaction from ledger.db.transaction; on SQLite that takes the write
lock (BEGIN IMMEDIATE), so do not call them while holding another transaction open. get_account and
get_positions and list_orders are plain reads unless the price path moved an order to another status or far along (see
_read_book).
Statements are prebuilt Core statements; the pure functions below work on transient SimOrder objects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from operator import itemgetter
from typing import Any, Literal, cast

from sqlalchemy import Integer, Table, bindparam, func, literal_column, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from broker import sim_market
from broker.base import (
    FINAL_STATUSES,
    OPEN_STATUSES,
    Account,
    Asset,
    Bar,
    BrokerError,
    BrokerOrder,
    BrokerPosition,
    MarketClock,
    Quote,
    SubmitOrder,
    Timeframe,
)
from ledger import shared_unit
from ledger.db import dialect_name, execute, read, transaction
from ledger.fast_execute import prebuilt_statements
from ledger.ids import new_random_id
from ledger.models import SimAccount, SimOrder
from ledger.rows import loaded_values, transient
from policies.orders import OrderRequest, decimal_text

ACCOUNT_ID = 1  # the simulated broker has exactly one account
GTC_LIFETIME = timedelta(days=90)
SCAN_CHUNK_MINUTES = 1440  # scan a day of minutes at a time, so an early fill stops the work early
QTY_STEP = Decimal("0.000000001")  # 9 decimals, Alpaca's fractional precision
_CENT = Decimal("0.01")
_PRICE_PLACES = Decimal("0.0001")
_ZERO = Decimal(0)
_STEP_SECONDS = 0.0005  # get_bars hands the event loop back after this much work
# A read that advances a resting order's evaluation mark by this much stores it (takes a unit), so reads that
# never write do not scan an ever longer stretch of the price path.
STORE_MARK_AFTER = timedelta(minutes=30)


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- resting orders: where the price path takes them ----------------------------------------------

@dataclass(frozen=True)
class Fill:
    at: datetime
    price: Decimal


@dataclass(frozen=True)
class Expiry:
    at: datetime


@dataclass(frozen=True)
class StillResting:
    evaluated_through: datetime  # the new evaluation mark (stored as the order's updated_at)
    hwm: Decimal | None = None  # a trailing stop's high-water mark (low-water for a buy) and its stop
    stop_price: Decimal | None = None


def order_expiry(order: SimOrder) -> datetime:
    if order.time_in_force == "day":
        return sim_market.session_close_after(order.submitted_at)
    return order.submitted_at + GTC_LIFETIME


def _stop_crossed(order: SimOrder, price: Decimal) -> bool:
    assert order.stop_price is not None
    return price >= order.stop_price if order.side == "buy" else price <= order.stop_price


def _limit_reached(order: SimOrder, price: Decimal) -> bool:
    assert order.limit_price is not None
    return price <= order.limit_price if order.side == "buy" else price >= order.limit_price


@dataclass(frozen=True)
class PathProgress:
    """How far an order's price path has been walked from its stored row (its evaluation mark, a trailing stop's
    high-water mark) with nothing happening: minutes up to `through` inclusive. A walk that resumes from it scans
    only the minutes after `through` and finds exactly what a walk from the stored mark finds (the path is
    deterministic and each minute is checked alone, given the state carried here)."""

    through: int  # the last minute walked
    expires_at: datetime  # order_expiry of the order (a function of its stored row)
    trigger_minute: int | None = None  # a stop_limit's trigger, once crossed (it then waits as a limit order)
    hwm: Decimal | None = None  # a trailing stop's best price through `through`


class PathWalk:
    """Price-path minutes walked for resting orders in this process (tests and benchmarks count a call's work)."""

    minutes = 0


def _resume_from(since: PathProgress | None, now: datetime) -> PathProgress | None:
    """`since`, if a walk up to `now` can resume from it: not when the clock went back before what it walked."""
    return since if since is not None and since.through <= sim_market.minute_index(now) else None


def _walked_through(since: PathProgress, now: datetime) -> bool:
    """Whether `since` already covers every minute up to `now`'s, with the order still live at `now`."""
    return now < since.expires_at and since.through == sim_market.minute_index(now)


def resting_order_outcome(seed: int, order: SimOrder, now: datetime) -> Fill | Expiry | StillResting:
    """What happened to a resting order between its evaluation mark and `now`. Pure: the same inputs
    always give the same outcome, so evaluating twice (two processes, a retried transaction) is harmless."""
    return walk_resting_order(seed, order, now)[0]


def walk_resting_order(seed: int, order: SimOrder, now: datetime, since: PathProgress | None = None
                       ) -> tuple[Fill | Expiry | StillResting, PathProgress | None]:
    """resting_order_outcome, resumed from `since` (a walk of this same stored row that found nothing) when
    given, and how far the path is now walked (None once the order filled or expired)."""
    mark = order.updated_at
    if now <= mark:
        return StillResting(mark), since
    since = _resume_from(since, now)
    if since is not None and _walked_through(since, now):  # the usual case: a call in the same minute as the last
        if since.trigger_minute is not None:
            return StillResting(_fill_time(order, since.trigger_minute)), since
        return StillResting(now), since
    expires_at = since.expires_at if since is not None else order_expiry(order)
    # inclusive from the mark: see the module notes on triggered stop_limits
    first = since.through + 1 if since is not None else sim_market.minute_index(mark)
    # At its expiry an order is no longer live, so the minute starting at the expiry is not scanned.
    last = sim_market.minute_index(now) if now < expires_at else sim_market.minute_index(expires_at) - 1
    trigger_minute = since.trigger_minute if since is not None else None
    triggered = order.order_type == "limit" or trigger_minute is not None
    for chunk_first in range(first, last + 1, SCAN_CHUNK_MINUTES):
        chunk_last = min(chunk_first + SCAN_CHUNK_MINUTES - 1, last)
        PathWalk.minutes += chunk_last - chunk_first + 1
        prices = sim_market.minute_prices(seed, order.symbol, chunk_first, chunk_last)
        for minute, price in enumerate(prices, start=chunk_first):
            if not triggered:
                if not _stop_crossed(order, price):
                    continue
                triggered, trigger_minute = True, minute
                if order.order_type == "stop":
                    return Fill(_fill_time(order, minute), price), None
            if _limit_reached(order, price):
                assert order.limit_price is not None
                return Fill(_fill_time(order, minute), order.limit_price), None
    if now >= expires_at:
        return Expiry(expires_at), None
    progress = PathProgress(max(last, first - 1), expires_at, trigger_minute)
    if trigger_minute is not None:
        return StillResting(_fill_time(order, trigger_minute)), progress
    return StillResting(now), progress


def _fill_time(order: SimOrder, minute: int) -> datetime:
    return max(order.submitted_at, sim_market.minute_start(minute))


# --- brackets: exits that work once their entry fills ---------------------------------------------

LEG_SUFFIX = {"stop_loss": "sl", "take_profit": "tp", "trailing_stop": "ts"}
ROLE_PRIORITY = {"stop_loss": 0, "trailing_stop": 1, "take_profit": 2}  # same minute: the stop wins


def trail_stop(order: SimOrder, hwm: Decimal) -> Decimal:
    """The stop a trailing stop stands at for a high-water mark (a low-water mark for a buy)."""
    offset = hwm * order.trail_percent / 100 if order.trail_percent is not None else (order.trail_price or _ZERO)
    stop = hwm - offset if order.side == "sell" else hwm + offset
    return stop.quantize(_CENT, ROUND_HALF_EVEN)


def trailing_outcome(seed: int, order: SimOrder, now: datetime) -> Fill | Expiry | StillResting:
    """A trailing stop on the price path: its mark follows the best price since it started working (the
    highest for a sell, the lowest for a buy); it fills at the first minute's price that crosses the stop."""
    return walk_trailing(seed, order, now)[0]


def walk_trailing(seed: int, order: SimOrder, now: datetime, since: PathProgress | None = None
                  ) -> tuple[Fill | Expiry | StillResting, PathProgress | None]:
    """trailing_outcome, resumed from `since` when given (as walk_resting_order)."""
    mark = order.updated_at
    assert order.hwm is not None, "a working trailing stop has a high-water mark"
    if now <= mark:
        return StillResting(mark, order.hwm, trail_stop(order, order.hwm)), since
    since = _resume_from(since, now)
    hwm = since.hwm if since is not None and since.hwm is not None else order.hwm
    if since is not None and _walked_through(since, now):
        return StillResting(now, hwm, trail_stop(order, hwm)), since
    expires_at = since.expires_at if since is not None else order_expiry(order)
    first = since.through + 1 if since is not None else sim_market.minute_index(mark)
    last = sim_market.minute_index(now) if now < expires_at else sim_market.minute_index(expires_at) - 1
    sell = order.side == "sell"
    for chunk_first in range(first, last + 1, SCAN_CHUNK_MINUTES):
        chunk_last = min(chunk_first + SCAN_CHUNK_MINUTES - 1, last)
        PathWalk.minutes += chunk_last - chunk_first + 1
        prices = sim_market.minute_prices(seed, order.symbol, chunk_first, chunk_last)
        for minute, price in enumerate(prices, start=chunk_first):
            hwm = max(hwm, price) if sell else min(hwm, price)
            stop = trail_stop(order, hwm)
            if (price <= stop) if sell else (price >= stop):
                return Fill(_fill_time(order, minute), price), None
    if now >= expires_at:
        return Expiry(expires_at), None
    return StillResting(now, hwm, trail_stop(order, hwm)), PathProgress(max(last, first - 1), expires_at, hwm=hwm)


def leg_outcome(seed: int, leg: SimOrder, now: datetime) -> Fill | Expiry | StillResting:
    return walk_leg(seed, leg, now)[0]


def walk_leg(seed: int, leg: SimOrder, now: datetime, since: PathProgress | None = None
             ) -> tuple[Fill | Expiry | StillResting, PathProgress | None]:
    if leg.order_type == "trailing_stop":
        return walk_trailing(seed, leg, now, since)
    return walk_resting_order(seed, leg, now, since)


def leg_rows(parent: SimOrder, order: OrderRequest) -> list[SimOrder]:
    """The exits of an entry, held until it fills: same qty and time in force, on the other side."""
    def leg(role: str, order_type: str, **prices: Decimal | None) -> SimOrder:
        return SimOrder(id=new_random_id(), client_order_id=f"{parent.client_order_id}-{LEG_SUFFIX[role]}",
                        symbol=parent.symbol, side=order.exit_side, qty=parent.qty, notional=None,
                        order_type=order_type, time_in_force=parent.time_in_force, status="held",
                        filled_qty=_ZERO, filled_avg_price=None, submitted_at=parent.submitted_at,
                        updated_at=parent.submitted_at, filled_at=None, parent_id=parent.id, leg_role=role,
                        **{"limit_price": None, "stop_price": None, **prices})

    legs = []
    if order.stop_loss is not None:
        sl = order.stop_loss
        legs.append(leg("stop_loss", "stop" if sl.limit_price is None else "stop_limit",
                        stop_price=sl.stop_price, limit_price=sl.limit_price))
    if order.trailing_stop is not None:
        legs.append(leg("trailing_stop", "trailing_stop", trail_percent=order.trailing_stop.percent,
                        trail_price=order.trailing_stop.price))
    if order.take_profit is not None:
        legs.append(leg("take_profit", "limit", limit_price=order.take_profit.limit_price))
    return legs


def advance_legs(seed: int, parent: SimOrder, legs: Sequence[SimOrder], now: datetime,
                 walked: dict[str, PathProgress] | None = None) -> None:
    """Move an entry's open legs along the price path: held while the entry is open; canceled with an entry
    that ended unfilled; working from the entry's fill; the first exit to fill cancels the others (OCO).
    `walked`: how far each leg's path was walked before (by leg id, for the leg's stored row as it is now),
    resumed from and updated; a leg that ends leaves it. Each leg found nothing up to there, so the first fill
    among the legs is the same as from their stored marks."""
    if parent.status in OPEN_STATUSES:
        return
    if parent.status != "filled":
        for leg in legs:
            leg.status, leg.updated_at = "canceled", parent.updated_at
        return
    assert parent.filled_at is not None
    for leg in legs:
        if leg.status == "held":  # the entry filled: the exit starts working from that moment
            leg.status, leg.submitted_at, leg.updated_at = "new", parent.filled_at, parent.filled_at
            if leg.order_type == "trailing_stop":
                leg.hwm = parent.filled_avg_price
                leg.stop_price = trail_stop(leg, cast(Decimal, parent.filled_avg_price))
    outcomes = []
    for leg in legs:
        outcome, progress = walk_leg(seed, leg, now, walked.get(leg.id) if walked is not None else None)
        outcomes.append((leg, outcome))
        if walked is not None:
            if progress is not None:
                walked[leg.id] = progress
            else:
                walked.pop(leg.id, None)
    fills = [(outcome.at, ROLE_PRIORITY.get(leg.leg_role or "", 9), leg, outcome) for leg, outcome in outcomes
             if isinstance(outcome, Fill)]
    if fills:
        at, _, winner, fill = min(fills, key=lambda found: (found[0], found[1]))
        winner.status, winner.filled_qty, winner.filled_avg_price = "filled", winner.qty or _ZERO, fill.price
        winner.filled_at = winner.updated_at = at
        for leg in legs:
            if leg is not winner:
                leg.status, leg.updated_at = "canceled", at
        return
    for leg, outcome in outcomes:
        if isinstance(outcome, Expiry):
            leg.status, leg.updated_at = "expired", outcome.at
        elif isinstance(outcome, StillResting):
            if outcome.hwm is not None:
                leg.hwm, leg.stop_price = outcome.hwm, outcome.stop_price
            if sim_market.minute_index(outcome.evaluated_through) != sim_market.minute_index(leg.updated_at):
                leg.updated_at = outcome.evaluated_through


# --- the account, derived from fills ---------------------------------------------------------------

_ORDERS = cast(Table, SimOrder.__table__)
_FILLED = _ORDERS.c.status == "filled"
_COUNT_FILLED = select(func.count()).select_from(_ORDERS).where(_FILLED)
# SQLite: filled orders counted from a mark (FilledMark) instead of all over again. Rows get increasing rowids and
# are never deleted, and only an open order can become filled: the filled orders now are those counted up to the
# mark's rowid, the filled ones inserted after it, and those of the orders open at the mark that filled since.
# max(rowid) is one step down the table's b-tree; the rest are ranges of new rows and lookups of open orders.
_ROWID = literal_column("sim_orders.rowid", Integer)
_LAST_ROWID = select(func.max(_ROWID)).select_from(_ORDERS).scalar_subquery()
_COUNT_FROM_START = select(_LAST_ROWID, _COUNT_FILLED.scalar_subquery())
_COUNT_AFTER_MARK = select(_LAST_ROWID, select(func.count()).select_from(_ORDERS)
                           .where(_FILLED, bindparam("mark") < _ROWID).scalar_subquery())
_FILLED_AMONG = (select(func.count()).select_from(_ORDERS)
                 .where(_FILLED, _ORDERS.c.id.in_(bindparam("ids", expanding=True))))
_FILLS = (select(_ORDERS.c.id, _ORDERS.c.symbol, _ORDERS.c.side, _ORDERS.c.filled_qty, _ORDERS.c.filled_avg_price,
                 _ORDERS.c.filled_at, _ORDERS.c.submitted_at).where(_FILLED))
_FILLS_SINCE = _FILLS.where(_ORDERS.c.filled_at >= bindparam("since"))
_SETTLED_KEY = "sim_settled_fills"  # session.info: what a transaction learned, kept if it commits

# The statements of every call's path, built once: Core statements skip the ORM's per-statement work (unit of
# work, identity map, flush), which costs as much as the query itself on SQLite. Rows are turned into transient
# SimOrder objects (never added to a session) for the pure functions above, and changes are written back by
# these statements.
_ACCOUNT = cast(Table, SimAccount.__table__)
_STARTING_CASH = select(_ACCOUNT.c.starting_cash).where(_ACCOUNT.c.id == ACCOUNT_ID)
_LOCK_ACCOUNT = _STARTING_CASH.with_for_update()  # SQLite compiles it without FOR UPDATE (BEGIN IMMEDIATE)
_OPEN_ORDERS = select(_ORDERS).where(_ORDERS.c.status.in_(OPEN_STATUSES))
_ORDERS_BY_ID = select(_ORDERS).where(_ORDERS.c.id.in_(bindparam("ids", expanding=True)))
_ORDER_BY_CLIENT_ID = select(_ORDERS).where(_ORDERS.c.client_order_id == bindparam("client_order_id"))
_LEGS_OF = select(_ORDERS).where(_ORDERS.c.parent_id.in_(bindparam("ids", expanding=True)))
_INSERT_ORDER = _ORDERS.insert()
# What the price path changes on an open order (advance_legs and _synchronize write no other column).
_MOVING_COLUMNS = ("status", "filled_qty", "filled_avg_price", "filled_at", "submitted_at", "updated_at", "hwm",
                   "stop_price")
_STATUS, _UPDATED_AT = _MOVING_COLUMNS.index("status"), _MOVING_COLUMNS.index("updated_at")
_UPDATE_ORDER = _ORDERS.update().where(_ORDERS.c.id == bindparam("order_id"))
_COLUMN_KEYS = tuple(column.key for column in _ORDERS.columns)


def _from_row(row: Row[Any]) -> SimOrder:
    """A transient order of a row of select(_ORDERS) (its columns in table order: zipped with their keys, which
    costs a fraction of building the row's mapping)."""
    return transient(SimOrder, dict(zip(_COLUMN_KEYS, row, strict=True)))


def _row_values(order: SimOrder) -> dict[str, Any]:
    return loaded_values(order, _COLUMN_KEYS)


# A transient SimOrder (_from_row) holds every column in its __dict__, where setting an attribute stores it too:
# read there, the columns cost one C call, not an instrumented attribute lookup each (~40 a resting order a call).
_get_stored_values = itemgetter(*_COLUMN_KEYS)
_get_moving = itemgetter(*_MOVING_COLUMNS)


def _stored_values(order: SimOrder) -> tuple[Any, ...]:
    """A transient order's columns in the order a select of the table returns them."""
    return cast(tuple[Any, ...], _get_stored_values(order.__dict__))


def _moving(order: SimOrder) -> tuple[object, ...]:
    """What the price path may change on a transient order (_from_row)."""
    return cast(tuple[object, ...], _get_moving(order.__dict__))


@dataclass
class Holding:
    qty: Decimal = _ZERO
    avg_entry_price: Decimal = _ZERO  # average cost of the open position (long or short)

    def apply_fill(self, side: str, qty: Decimal, price: Decimal) -> None:
        signed = qty if side == "buy" else -qty
        new_qty = self.qty + signed
        if self.qty == 0 or (self.qty > 0) == (signed > 0):  # opening or adding: average the cost
            self.avg_entry_price = (self.avg_entry_price * abs(self.qty) + price * qty) / abs(new_qty)
        elif new_qty == 0:
            self.avg_entry_price = _ZERO
        elif (new_qty > 0) != (self.qty > 0):  # through zero: the remainder was opened at this price
            self.avg_entry_price = price
        self.qty = new_qty  # reducing keeps the average cost


@dataclass
class Book:
    """Cash, holdings and reservations as of the last fill."""

    cash: Decimal
    holdings: dict[str, Holding] = field(default_factory=dict)
    reserved_for_buys: Decimal = _ZERO  # cost of open buy orders at their limit (or stop) price
    open_sell_qty: dict[str, Decimal] = field(default_factory=dict)

    @property
    def buying_power(self) -> Decimal:
        return self.cash - self.reserved_for_buys

    @classmethod
    def from_fills(cls, fills: SettledFills, open_orders: Sequence[SimOrder]) -> Book:
        """The settled fills' cash and holdings, less what the open orders reserve."""
        book = cls(cash=fills.cash, holdings={symbol: replace(holding) for symbol, holding in fills.holdings.items()})
        held_by_exits: dict[str, tuple[str, Decimal]] = {}
        for order in open_orders:
            if order.status not in OPEN_STATUSES:
                continue
            remaining = (order.qty or _ZERO) - order.filled_qty
            if order.parent_id is not None:  # an exit: reduce-only, one of its OCO group can fill
                if order.side == "sell":
                    held = held_by_exits.get(order.parent_id, (order.symbol, _ZERO))[1]
                    held_by_exits[order.parent_id] = (order.symbol, max(held, remaining))
                continue
            if order.side == "buy":
                book.reserved_for_buys += remaining * _reservation_price(order)
            else:
                book.open_sell_qty[order.symbol] = book.open_sell_qty.get(order.symbol, _ZERO) + remaining
        for symbol, qty in held_by_exits.values():
            book.open_sell_qty[symbol] = book.open_sell_qty.get(symbol, _ZERO) + qty
        return book


@dataclass(frozen=True)
class FilledOrder:
    """What the account needs of a filled order (filled orders never change again)."""

    id: str
    symbol: str
    side: str
    filled_qty: Decimal
    price: Decimal
    filled_at: datetime
    submitted_at: datetime

    @property
    def key(self) -> tuple[datetime, datetime, str]:
        """Fills are applied in this order (it decides average entry prices)."""
        return self.filled_at, self.submitted_at, self.id


@dataclass(frozen=True)
class FilledMark:
    """SQLite: how many orders were filled among the rows up to `rowid` when it was taken, and which of those rows
    were open then (only they can fill later): the next count of filled orders starts from here."""

    rowid: int
    filled: int
    open_ids: frozenset[str]


@dataclass(frozen=True)
class SettledFills:
    """Cash and holdings after the first `count` filled orders in fill order, the last one being `last`."""

    starting_cash: Decimal
    count: int = 0
    last: tuple[datetime, datetime, str] | None = None
    cash: Decimal = _ZERO
    holdings: dict[str, Holding] = field(default_factory=dict)
    mark: FilledMark | None = None  # where the count of filled orders that gave `count` was taken (SQLite)

    @classmethod
    def replay(cls, starting_cash: Decimal, fills: Sequence[FilledOrder]) -> SettledFills:
        return cls(starting_cash=starting_cash, cash=starting_cash).extended(fills)

    def extended(self, fills: Sequence[FilledOrder]) -> SettledFills:
        """These fills applied after the ones already in (all of them later in fill order)."""
        cash, holdings, last = self.cash, {s: replace(h) for s, h in self.holdings.items()}, self.last
        for fill in sorted(fills, key=lambda f: f.key):
            if fill.filled_qty > 0:
                cost = fill.filled_qty * fill.price
                cash += -cost if fill.side == "buy" else cost
                holdings.setdefault(fill.symbol, Holding()).apply_fill(fill.side, fill.filled_qty, fill.price)
            last = fill.key
        return SettledFills(starting_cash=self.starting_cash, count=self.count + len(fills), last=last, cash=cash,
                            holdings=holdings, mark=self.mark)


def _open_ids(orders: Sequence[SimOrder]) -> frozenset[str]:
    return frozenset(order.id for order in orders if order.status in OPEN_STATUSES)


def _reservation_price(order: SimOrder) -> Decimal:
    price = order.limit_price if order.limit_price is not None else order.stop_price
    assert price is not None, "only limit and stop orders rest"
    return price


# --- validation ------------------------------------------------------------------------------------

def _invalid(message: str) -> BrokerError:
    return BrokerError(message, code="INVALID_ORDER", status=422)


def _has_fraction(value: Decimal) -> bool:
    return value != value.to_integral_value()


def validate_order(order: OrderRequest) -> sim_market.Listing:
    """The order's listing, or BrokerError for anything the simulated broker does not accept."""
    found = sim_market.listing(order.symbol)
    if found is None:
        raise BrokerError(f"unknown symbol {order.symbol!r} at the simulated broker",
                          code="ASSET_NOT_TRADABLE", status=422)
    if not found.tradable:
        raise BrokerError(f"{found.symbol} is not tradable (trading halted)", code="ASSET_NOT_TRADABLE",
                          status=422)
    if (order.qty is None) == (order.notional is None):
        raise _invalid("give exactly one of qty and notional")
    amount = order.qty if order.qty is not None else order.notional
    assert amount is not None
    if amount <= 0:
        raise _invalid("qty and notional must be positive")
    if order.qty is not None and order.qty != order.qty.quantize(QTY_STEP, ROUND_DOWN):
        raise _invalid("qty has more than 9 decimal places")
    if order.notional is not None and order.order_type != "market":
        raise _invalid("notional orders must be market orders; give qty for limit and stop orders")
    if not found.fractionable and (order.notional is not None or _has_fraction(amount)):
        raise _invalid(f"{found.symbol} is not fractionable: give a whole-number qty")
    needs_limit = order.order_type in ("limit", "stop_limit")
    needs_stop = order.order_type in ("stop", "stop_limit")
    if needs_limit != (order.limit_price is not None):
        raise _invalid("limit_price is required for limit and stop_limit orders and allowed for no other")
    if needs_stop != (order.stop_price is not None):
        raise _invalid("stop_price is required for stop and stop_limit orders and allowed for no other")
    for price in (order.limit_price, order.stop_price):
        if price is not None and price <= 0:
            raise _invalid("limit_price and stop_price must be positive")
    if needs_stop and order.time_in_force in ("ioc", "fok"):
        raise _invalid("stop and stop_limit orders take time_in_force day or gtc")
    if order.has_exits:
        if found.asset_class == "crypto":
            raise _invalid("crypto orders cannot carry exits (no bracket, OCO or OTO orders for crypto)")
        if order.qty is None or _has_fraction(order.qty):
            raise _invalid("an order with exits needs a whole-number qty")
        if order.order_type not in ("market", "limit") or order.time_in_force not in ("day", "gtc"):
            raise _invalid("an order with exits must be a market or limit order, time_in_force day or gtc")
        if order.stop_loss is not None and order.trailing_stop is not None:
            raise _invalid("an order takes a stop_loss or a trailing_stop, not both")
    return found


def _whole_units(qty: Decimal) -> Decimal:
    return qty.quantize(QTY_STEP, ROUND_DOWN)


# --- the broker ------------------------------------------------------------------------------------

class SimulatedBroker:
    """Implements broker.base.Broker against a deterministic simulated market and the database."""

    name = "simulated"
    # Quotes and assets are computed here, never awaited on I/O: the gate asks for them in turn (Gate.snapshot).
    market_data_in_process = True

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, seed: int = 42,
                 starting_cash: Decimal = Decimal(1000000), clock: Callable[[], datetime] = _utc_now):
        self._sessions = sessions
        self.seed = seed
        self.starting_cash = Decimal(starting_cash)
        self._clock = clock
        self._settled: SettledFills | None = None  # the account after the fills seen so far (committed)
        self._stored_cash: Decimal | None = None  # the account row's starting cash, once read (it never changes)
        # Per open order: its stored row (as read) and how far its price path has been walked from it with nothing
        # happening, so a call walks only the minutes since the last call, not since the stored evaluation mark.
        self._walked: dict[str, tuple[tuple[Any, ...], PathProgress]] = {}

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the simulated broker's clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    async def start(self) -> None:
        """Create the account row on first start; an existing account (and its starting cash) is kept. A restart
        finds it with a read, without a write unit."""
        async with read(self._sessions) as connection:
            if (await execute(connection, _STARTING_CASH)).scalar_one_or_none() is not None:
                return
        try:
            async with self._unit() as session:
                await self._lock_account(session, self._now())
        except IntegrityError:
            pass  # another process created it at the same moment

    async def close(self) -> None:
        """Nothing to release: the database engine belongs to the caller."""

    # --- market data ---

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        """Keyed by the symbols as asked for; unknown symbols are absent."""
        now = self._now()
        return {symbol: sim_market.quote(self.seed, symbol, now) for symbol in symbols
                if sim_market.listing(symbol) is not None}

    async def get_bars(self, symbol: str, timeframe: Timeframe, limit: int) -> list[Bar]:
        if sim_market.listing(symbol) is None:
            return []
        try:
            pending = sim_market.iter_bars(self.seed, symbol, timeframe, limit, self._now())
        except ValueError as error:
            raise BrokerError(str(error), code="BROKER_ERROR", status=422) from error
        # Bars not yet cached cost up to a millisecond each: the loop is handed back every few, so other
        # agents' calls are not held up behind a long request.
        bars: list[Bar] = []
        started = time.perf_counter()
        for bar in pending:
            bars.append(bar)
            if time.perf_counter() - started > _STEP_SECONDS:
                await asyncio.sleep(0)
                started = time.perf_counter()
        return bars

    async def get_asset(self, symbol: str) -> Asset | None:
        return sim_market.asset(symbol)

    async def get_clock(self) -> MarketClock:
        return sim_market.market_clock(self._now())

    # --- trading ---

    async def submit_order(self, request: SubmitOrder) -> BrokerOrder:
        order = request.order
        found = validate_order(order)
        now = self._now()
        try:
            async with self._unit() as session:
                # The statements run on the unit's connection through the session (ledger.db.execute finds it
                # without asking the session): a session that was never asked for its connection has no
                # transaction of its own to begin and commit (two greenlet hops an order).
                book = await self._synchronize(session, now)
                try:
                    row = self._execute_on_arrival(request, found, book, now)
                except BrokerError:
                    # A retried submission of an order that was accepted must answer DUPLICATE_ORDER, not
                    # the refusal its second copy would earn (e.g. the first one spent the buying power).
                    # Only refusals pay for this read; accepted orders rely on the unique constraint below.
                    if await self._by_client_id(session, request.client_order_id) is not None:
                        raise self._duplicate(request.client_order_id) from None
                    raise
                legs = leg_rows(row, order) if order.has_exits else []
                advance_legs(self.seed, row, legs, now)  # an entry filled on arrival arms its exits now
                # A duplicate client_order_id (earlier or concurrent) fails here, on its unique constraint.
                await execute(session, _INSERT_ORDER, _row_values(row))
                if legs:
                    await execute(session, _INSERT_ORDER, [_row_values(leg) for leg in legs])
                self._settle_own_fills(session, [row, *legs])
        except IntegrityError as error:
            async with self._unit() as session:
                exists = await self._by_client_id(session, request.client_order_id) is not None
            if exists:
                raise self._duplicate(request.client_order_id) from error
            raise BrokerError("the simulated broker could not store the order", status=500) from error
        return to_broker_order(row, legs)

    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        async with self._unit() as session:
            await self._synchronize(session, self._now())
            row = await self._by_client_id(session, client_order_id)
            legs = (await self._legs(session, [row.id])).get(row.id, []) if row is not None else []
        return to_broker_order(row, legs) if row is not None else None

    async def list_orders(self, status: Literal["open", "closed", "all"] = "all", limit: int = 500,
                          after: datetime | None = None) -> list[BrokerOrder]:
        """Newest first."""
        query = (select(_ORDERS).where(_ORDERS.c.parent_id.is_(None))  # legs are shown with their entry
                 .order_by(_ORDERS.c.submitted_at.desc(), _ORDERS.c.id.desc()).limit(limit))
        if status == "open":  # an entry whose exits still work is open too (Alpaca's nested view)
            working_legs = select(_ORDERS.c.parent_id).where(_ORDERS.c.parent_id.is_not(None),
                                                             _ORDERS.c.status.in_(OPEN_STATUSES))
            query = query.where(or_(_ORDERS.c.status.in_(OPEN_STATUSES), _ORDERS.c.id.in_(working_legs)))
        elif status == "closed":
            query = query.where(_ORDERS.c.status.in_(FINAL_STATUSES))
        if after is not None:
            query = query.where(_ORDERS.c.submitted_at > after)
        now = self._now()
        async with read(self._sessions) as connection:  # as _read_book: a unit only for a status move
            if connection.dialect.name == "postgresql":
                await connection.execution_options(isolation_level="REPEATABLE READ")
            advanced, _, to_store = await self._advanced_open_orders(connection, now)
            if not to_store:
                # Open orders are shown as the path leaves them (evaluation marks, trailing stops' marks),
                # exactly as a unit would have stored them before listing.
                current = {order.id: order for order in advanced}
                rows = [current.get(found.id) or _from_row(found)
                        for found in (await execute(connection, query)).all()]
                legs = {parent_id: [current.get(leg.id, leg) for leg in found]
                        for parent_id, found in (await self._legs(connection, [row.id for row in rows])).items()}
                return [to_broker_order(row, legs.get(row.id, [])) for row in rows]
        async with self._unit() as session:
            await self._synchronize(session, now)
            rows = [_from_row(found) for found in (await execute(session, query)).all()]
            legs = await self._legs(session, [row.id for row in rows])
        return [to_broker_order(row, legs.get(row.id, [])) for row in rows]

    async def cancel_order(self, broker_order_id: str) -> BrokerOrder:
        """An order that filled (on the path) before the cancel arrived stays filled: BrokerError 422."""
        now = self._now()
        async with self._unit() as session:
            await self._synchronize(session, now)
            found = (await execute(session, _ORDERS_BY_ID, {"ids": [broker_order_id]})).first()
            if found is None:
                raise BrokerError(f"order {broker_order_id} not found", code="ORDER_NOT_FOUND", status=404)
            row = _from_row(found)
            if row.status not in OPEN_STATUSES:
                raise BrokerError(f"order {broker_order_id} is already {row.status}; it cannot be canceled",
                                  code="BROKER_ERROR", status=422)
            row.status = "canceled"
            row.updated_at = now
            legs = (await self._legs(session, [row.id])).get(row.id, [])
            open_legs = [leg for leg in legs if leg.status in OPEN_STATUSES]
            advance_legs(self.seed, row, open_legs, now)
            await execute(session, _UPDATE_ORDER, [{"order_id": changed.id, **{key: getattr(changed, key)
                                                                              for key in _MOVING_COLUMNS}}
                                                   for changed in [row, *open_legs]])
        return to_broker_order(row, legs)

    async def get_account(self) -> Account:
        now = self._now()
        book = await self._read_book(now)
        market_value = sum((holding.qty * self._last_price(symbol, now)
                            for symbol, holding in book.holdings.items() if holding.qty != 0), _ZERO)
        return Account(cash=_money(book.cash), equity=_money(book.cash + market_value),
                       buying_power=_money(book.buying_power))

    async def get_positions(self) -> list[BrokerPosition]:
        now = self._now()
        book = await self._read_book(now)
        return [BrokerPosition(symbol=symbol, qty=holding.qty,
                               avg_entry_price=holding.avg_entry_price.quantize(_PRICE_PLACES, ROUND_HALF_EVEN),
                               market_value=_money(holding.qty * self._last_price(symbol, now)))
                for symbol, holding in sorted(book.holdings.items()) if holding.qty != 0]

    # --- internals ---

    def _last_price(self, symbol: str, now: datetime) -> Decimal:
        return sim_market.quote(self.seed, symbol, now).last

    @staticmethod
    def _duplicate(client_order_id: str) -> BrokerError:
        return BrokerError(f"an order with client_order_id {client_order_id} already exists",
                           code="DUPLICATE_ORDER", status=422)

    async def _lock_account(self, session: AsyncSession, now: datetime) -> Decimal:
        """The account's starting cash. Locking its row serializes this broker's writers on PostgreSQL; SQLite's
        BEGIN IMMEDIATE already does, so there the row is read only until its (unchanging) cash is known. The
        row is created if missing."""
        if self._stored_cash is not None and dialect_name(session) == "sqlite":
            return self._stored_cash
        starting_cash: Decimal | None = (await execute(session, _LOCK_ACCOUNT)).scalar_one_or_none()
        if starting_cash is None:
            session.add(SimAccount(id=ACCOUNT_ID, starting_cash=self.starting_cash, created_at=now))
            await session.flush()
            return self.starting_cash  # not kept in _stored_cash: this unit may yet roll back
        self._stored_cash = starting_cash
        return starting_cash

    @staticmethod
    async def _by_client_id(session: AsyncSession | AsyncConnection, client_order_id: str) -> SimOrder | None:
        found = (await execute(session, _ORDER_BY_CLIENT_ID, {"client_order_id": client_order_id})).first()
        return _from_row(found) if found is not None else None

    async def _synchronize(self, session: AsyncSession, now: datetime) -> Book:
        """Lock the account, bring every resting order up to `now`, and return the resulting book.
        Every database operation of this broker starts here. Its statements go through `session` (inside a unit
        of work ledger.db.execute runs them on the unit's connection), never through a connection asked of it."""
        starting_cash = await self._lock_account(session, now)
        db = session
        rows, moved, _ = await self._advanced_open_orders(db, now)
        if moved:
            await execute(db, _UPDATE_ORDER, [{"order_id": row.id, **{key: getattr(row, key)
                                                                     for key in _MOVING_COLUMNS}}
                                              for row in moved])
            # The walks go on from the rows as just written: a walk from a stored row advanced along the path
            # (its new mark, a trailing stop's new high-water mark) finds what the walk so far would find next.
            # Should this unit roll back, the stored rows differ from these and are walked from their marks.
            walked = self._walked
            for row in moved:
                if (entry := walked.get(row.id)) is not None:
                    walked[row.id] = (_stored_values(row), entry[1])
        fills = await self._settled_fills(db, starting_cash, _open_ids(rows))
        session.info[_SETTLED_KEY] = fills
        return Book.from_fills(fills, rows)

    async def _advanced_open_orders(self, db: AsyncSession | AsyncConnection, now: datetime
                                    ) -> tuple[list[SimOrder], list[SimOrder], bool]:
        """The open orders brought up to `now` on the price path, as transient objects; those whose row
        must be written back; and whether a read must store them: an order changed status (a fill, an expiry,
        an exit starting to work: the account changes) or its evaluation mark moved by STORE_MARK_AFTER."""
        found_rows = (await execute(db, _OPEN_ORDERS)).all()
        rows = [_from_row(found) for found in found_rows]
        # How far each order's path was walked before in this process, for its stored row exactly as read now:
        # a row another process (or a unit of ours) changed since is walked again from its stored mark.
        known = self._walked
        stored = {row.id: tuple(found) for row, found in zip(rows, found_rows, strict=True)}
        walked = {order_id: entry[1] for order_id, values in stored.items()
                  if (entry := known.get(order_id)) is not None and entry[0] == values}
        if not rows:
            self._walked = {}
            return rows, [], False
        # Read through __dict__ (a transient order holds every column there): an instrumented attribute read costs
        # ~0.25 µs, and this loop runs for every open order on every call.
        before = [_moving(row) for row in rows]
        for row in rows:
            if row.__dict__["parent_id"] is not None:
                continue  # legs move after their entries, below
            outcome, progress = walk_resting_order(self.seed, row, now, walked.get(row.id))
            if progress is not None:
                walked[row.id] = progress
            else:
                walked.pop(row.id, None)
            if isinstance(outcome, Fill):
                row.status, row.filled_qty, row.filled_avg_price = "filled", row.qty or _ZERO, outcome.price
                row.filled_at = row.updated_at = outcome.at
            elif isinstance(outcome, Expiry):
                row.status, row.updated_at = "expired", outcome.at
            elif sim_market.minute_index(outcome.evaluated_through) != sim_market.minute_index(row.updated_at):
                # Within the same minute there is nothing new. Set in __dict__: a snapshot never flushed needs no
                # change tracking (the instrumented set costs ~4 µs, once per open order and call).
                row.__dict__["updated_at"] = outcome.evaluated_through
        groups: dict[str, list[SimOrder]] = {}
        for row in rows:
            if row.parent_id is not None:
                groups.setdefault(row.parent_id, []).append(row)
        if groups:
            # An entry still open above is that same object, as it stands after its own move.
            parents = {row.id: row for row in rows if row.id in groups}
            closed = [parent_id for parent_id in groups if parent_id not in parents]
            if closed:
                parents.update((found.id, _from_row(found)) for found in
                               (await execute(db, _ORDERS_BY_ID, {"ids": closed})).all())
            for parent_id, legs in groups.items():
                advance_legs(self.seed, parents[parent_id], legs, now, walked)
        # Only orders still resting keep an entry (a fill or an expiry ends the walk; so does a leg canceled by
        # its entry or OCO: its row changes when stored, and a rolled-back change leaves the fact true).
        self._walked = {order_id: (stored[order_id], progress) for order_id, progress in walked.items()
                        if order_id in stored}
        changed = [(row, was) for row, was in zip(rows, before, strict=True) if _moving(row) != was]
        to_store = any(row.status != was[_STATUS]
                       or row.updated_at - cast(datetime, was[_UPDATED_AT]) >= STORE_MARK_AFTER for row, was in changed)
        return rows, [row for row, _ in changed], to_store

    async def _settled_fills(self, session: AsyncSession | AsyncConnection, starting_cash: Decimal,
                             open_ids: frozenset[str]) -> SettledFills:
        """Every filled order's effect on the account. Replaying them all on every read would cost more with
        every order ever placed, so the last result is kept and only newer fills are read; if the count of
        filled orders says one was missed (filled earlier than the last one applied, e.g. by another
        process), everything is replayed. `open_ids`: the orders open now, in this transaction (as written)."""
        known = self._settled
        if known is not None and known.starting_cash != starting_cash:
            known = None
        count, mark = await self._count_filled(session, known.mark if known is not None else None, open_ids)
        if known is not None and known.last is not None:
            if known.count == count:
                return replace(known, mark=mark)
            newer = [f for f in await self._fills(session, known.last[0]) if f.key > known.last]
            if known.count + len(newer) == count:
                return replace(known.extended(newer), mark=mark)
        return replace(SettledFills.replay(starting_cash, await self._fills(session, None)), mark=mark)

    @staticmethod
    async def _count_filled(session: AsyncSession | AsyncConnection, mark: FilledMark | None,
                            open_ids: frozenset[str]) -> tuple[int, FilledMark | None]:
        """How many orders are filled, and (SQLite) the mark to count from next time: counted from `mark` when
        there is one, so the count costs what came since, not the whole history (FilledMark). `open_ids`: every
        order open now, as this transaction sees (or wrote) them."""
        name = session.dialect.name if isinstance(session, AsyncConnection) else dialect_name(session)
        if name != "sqlite":
            return (await execute(session, _COUNT_FILLED)).scalar_one(), None
        if mark is None:
            last_rowid, count = (await execute(session, _COUNT_FROM_START)).one()
        else:
            last_rowid, filled_after = (await execute(session, _COUNT_AFTER_MARK, {"mark": mark.rowid})).one()
            # Of the orders open at the mark, those still open now (`open_ids`: every open order, read in this same
            # transaction) did not fill: only those that left the open set are looked up, usually none.
            closed_since = mark.open_ids - open_ids
            filled_since = ((await execute(session, _FILLED_AMONG, {"ids": sorted(closed_since)})).scalar_one()
                            if closed_since else 0)
            count = mark.filled + filled_after + filled_since
        return count, FilledMark(rowid=last_rowid or 0, filled=count, open_ids=open_ids)

    @staticmethod
    async def _fills(session: AsyncSession | AsyncConnection, since: datetime | None) -> list[FilledOrder]:
        query = _FILLS if since is None else _FILLS_SINCE
        rows = (await execute(session, query, {"since": since} if since is not None else None)).all()
        return [FilledOrder(id=r.id, symbol=r.symbol, side=r.side, filled_qty=r.filled_qty,
                            price=r.filled_avg_price, filled_at=r.filled_at, submitted_at=r.submitted_at)
                for r in rows if r.filled_avg_price is not None and r.filled_at is not None]

    @staticmethod
    async def _legs(session: AsyncSession | AsyncConnection, parent_ids: list[str]) -> dict[str, list[SimOrder]]:
        if not parent_ids:
            return {}
        found: dict[str, list[SimOrder]] = {}
        for leg in (_from_row(row) for row in (await execute(session, _LEGS_OF, {"ids": parent_ids})).all()):
            found.setdefault(cast(str, leg.parent_id), []).append(leg)
        for legs in found.values():
            legs.sort(key=lambda leg: ROLE_PRIORITY.get(leg.leg_role or "", 9))
        return found

    def joins_units_of(self, sessions: async_sessionmaker[AsyncSession]) -> bool:
        """Whether this broker's writes can ride in a unit of work of `sessions` (ledger/shared_unit.py): its
        orders are rows of the same database. The gate then sends an order from inside the unit that applies
        its outcome (one COMMIT for both), after the unit that recorded its intent committed."""
        bind = sessions.kw.get("bind")
        return bind is not None and bind is self._sessions.kw.get("bind")

    @asynccontextmanager
    async def _unit(self) -> AsyncIterator[AsyncSession]:
        """A transaction of this broker: its own, or a SAVEPOINT in the unit of work shared with this call
        (ledger/shared_unit.py). What it learned about settled fills is kept only once it commits (a
        rolled-back fill must not stay in the account)."""
        shared = shared_unit.joinable(self._sessions)
        if shared is not None:
            session = shared.session
            session.info.pop(_SETTLED_KEY, None)
            try:
                async with shared_unit.savepoint(session):
                    yield session
                fills = session.info.get(_SETTLED_KEY)
            finally:
                session.info.pop(_SETTLED_KEY, None)
            if fills is not None:
                shared.after_commit(lambda: setattr(self, "_settled", fills))
            return
        async with transaction(self._sessions) as session:
            yield session
        fills = session.info.get(_SETTLED_KEY)
        if fills is not None:
            self._settled = fills

    @staticmethod
    def _settle_own_fills(session: AsyncSession, orders: Sequence[SimOrder]) -> None:
        """Add this unit's own fills to what it learned, so the next call need not read them back. Only when
        they come after every fill applied (by fill order): otherwise the next call's count check finds the
        difference and reads or replays, as for another process's fills."""
        known: SettledFills | None = session.info.get(_SETTLED_KEY)
        filled = [FilledOrder(id=o.id, symbol=o.symbol, side=o.side, filled_qty=o.filled_qty,
                              price=o.filled_avg_price, filled_at=o.filled_at, submitted_at=o.submitted_at)
                  for o in orders if o.status == "filled" and o.filled_avg_price is not None
                  and o.filled_at is not None]
        if known is None or not filled:
            return
        if known.last is None or min(fill.key for fill in filled) > known.last:
            session.info[_SETTLED_KEY] = known.extended(filled)
        else:
            del session.info[_SETTLED_KEY]

    async def _read_book(self, now: datetime) -> Book:
        """The book without a unit of work: a read needs no write lock unless the price path moved an order
        to another status, which must be stored once (then it takes the unit, as every writer does). Without
        such a move the book is exactly what a unit would compute: advancing only evaluation marks and
        trailing high-water marks changes no cash, holding or reservation, and those marks are pure functions
        of the path that the next unit recomputes (a mark moved by STORE_MARK_AFTER is stored all the same,
        so a long run of reads does not rescan an ever longer path). The reads share one snapshot (SQLite: one deferred
        transaction in WAL; PostgreSQL: REPEATABLE READ), so the fills and the open orders agree."""
        async with read(self._sessions) as connection:
            if connection.dialect.name == "postgresql":
                await connection.execution_options(isolation_level="REPEATABLE READ")
            starting_cash = self._stored_cash
            if starting_cash is None:
                starting_cash = (await execute(connection, _STARTING_CASH)).scalar_one_or_none()
            if starting_cash is not None:
                rows, _, to_store = await self._advanced_open_orders(connection, now)
                if not to_store:
                    fills = await self._settled_fills(connection, starting_cash, _open_ids(rows))
                    self._settled = fills  # committed fills only: nothing here can be rolled back
                    return Book.from_fills(fills, rows)
        return await self._current_book(now)  # no account yet, or a move to store

    async def _current_book(self, now: datetime) -> Book:
        async with self._unit() as session:
            return await self._synchronize(session, now)

    def _execute_on_arrival(self, request: SubmitOrder, found: sim_market.Listing, book: Book,
                            now: datetime) -> SimOrder:
        """The new order's row: filled, canceled (an ioc/fok that could not fill) or resting.
        BrokerError if the account cannot take it."""
        order = request.order
        quote = sim_market.quote(self.seed, found.symbol, now)
        touch = quote.ask if order.side == "buy" else quote.bid  # the price a marketable order gets
        qty = order.qty if order.qty is not None else _whole_units(cast(Decimal, order.notional) / touch)
        if qty <= 0:
            raise _invalid(f"notional {decimal_text(order.notional)} buys less than 0.000000001 {found.symbol}")

        if order.side == "buy":
            cost = _buy_cost(order, qty, touch)
            if cost > book.buying_power:
                raise BrokerError(f"insufficient buying power: the order needs {_money(cost)}, the account "
                                  f"has {_money(book.buying_power)}", code="INSUFFICIENT_BUYING_POWER",
                                  status=403)
        elif not found.shortable:
            held = book.holdings.get(found.symbol, Holding()).qty
            available = max(held, _ZERO) - book.open_sell_qty.get(found.symbol, _ZERO)
            if qty > available:
                raise BrokerError(f"insufficient qty: {decimal_text(qty)} {found.symbol} to sell, "
                                  f"{decimal_text(max(available, _ZERO))} available; {found.symbol} "
                                  f"cannot be sold short", code="SHORT_SELLING_NOT_ALLOWED", status=403)

        row = transient(SimOrder, dict(
            id=new_random_id(), client_order_id=request.client_order_id, symbol=found.symbol, side=order.side,
            qty=order.qty, notional=order.notional, order_type=order.order_type, limit_price=order.limit_price,
            stop_price=order.stop_price, time_in_force=order.time_in_force, status="new", filled_qty=_ZERO,
            filled_avg_price=None, submitted_at=now, updated_at=now, filled_at=None))
        marketable = order.order_type == "market" or (
            order.order_type == "limit" and order.limit_price is not None
            and (touch <= order.limit_price if order.side == "buy" else touch >= order.limit_price))
        if marketable:
            row.status, row.filled_qty, row.filled_avg_price, row.filled_at = "filled", qty, touch, now
        elif order.time_in_force in ("ioc", "fok"):
            row.status = "canceled"
        return row


def _buy_cost(order: OrderRequest, qty: Decimal, ask: Decimal) -> Decimal:
    """What a buy may cost, as checked against buying power: a notional is its own cost; a limit order
    is priced at its limit (it never pays more), a stop order at its stop."""
    if order.notional is not None:
        return order.notional
    worst_price = ask if order.order_type == "market" else (order.limit_price or order.stop_price)
    assert worst_price is not None
    return qty * worst_price


def _money(value: Decimal) -> Decimal:
    return value.quantize(_CENT, ROUND_HALF_EVEN)


# The columns an order reports under the same names in a BrokerOrder (its id and legs aside).
_REPORTED_COLUMNS = ("client_order_id", "symbol", "side", "order_type", "status", "qty", "notional", "filled_qty",
                     "filled_avg_price", "limit_price", "stop_price", "time_in_force", "submitted_at", "updated_at",
                     "leg_role", "trail_percent", "trail_price", "hwm")


def to_broker_order(row: SimOrder, legs: Sequence[SimOrder] = ()) -> BrokerOrder:
    order_class = "simple"
    if legs:
        roles = {leg.leg_role for leg in legs}
        order_class = "bracket" if "take_profit" in roles and len(roles) > 1 else "oto"
    return BrokerOrder(broker_order_id=row.id, order_class=order_class,
                       legs=tuple(to_broker_order(leg) for leg in legs), **loaded_values(row, _REPORTED_COLUMNS))

# Every statement above is a constant of this module: prepared for the driver on its first run (fast_execute.prebuilt).
prebuilt_statements(globals())
