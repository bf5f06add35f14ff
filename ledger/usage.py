"""Usage: what an agent has already used, derived from the ledger for the pre-trade checks.

Reservation = the `agent_trades` row (docs/ARCHITECTURE.md). Nothing is counted separately, so nothing
can drift: an order holds its reservation while its row is in an open status, and releases it by moving
to a final one. Per row status:
- open (pending_submit, new, accepted, pending_new, partially_filled, pending_cancel, held, unknown, ... and
  any status not known to be final): counts as a trade and reserves its whole reserved_notional in the
  rolling window; its unfilled part counts as open order quantity / notional;
- filled: counts as a trade, with its filled notional;
- canceled / expired / rejected / replaced: with filled_qty 0 it releases everything; partly filled, it
  counts as a trade with its filled part only.

The read does not grow with the agent's history: counts are COUNT(*) over index ranges, the rolling
notional of final rows is an exact integer SUM of agent_trades.window_micros (ledger/traded.py; amounts are
stored as text, whose SUM would be a float sum), and only bounded sets come back as rows: the account's open
orders, rows whose notional is not stored as an integer, at most one row for the duplicate check.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, Select, String, Table, bindparam, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from broker.base import OPEN_STATUSES, Quote
from ledger.db import execute
from ledger.fast_execute import prebuilt, prebuilt_statements
from ledger.legs import with_exit_holds
from ledger.models import AgentAccount, AgentOrderLeg, AgentPosition, AgentTrade, TradeProposal
from ledger.traded import (
    FILLED_STATUS,
    MICROS,
    OPEN_TRADE_STATUSES,
    RELEASED_STATUSES,
    filled_value,
    final_window_notional,
)
from policies.breakers import counts_as_denial
from policies.checks import Usage
from policies.limits import EffectiveLimits
from policies.market_hours import new_york_date, new_york_day_start
from policies.orders import OrderRequest

ZERO = Decimal(0)

DENIED_PROPOSAL_STATUS = "rejected"


def is_open(status: str) -> bool:
    """Unknown statuses count as open: a reservation is only released by a status known to be final."""
    return status != FILLED_STATUS and status not in RELEASED_STATUSES


@dataclass(frozen=True)
class _Row:
    """The part of an agent_trades row (and its proposal's order hash) the usage needs."""

    agent_id: str
    symbol: str
    side: str
    quantity: Decimal | None
    notional: Decimal | None
    reserved_notional: Decimal
    price: Decimal | None  # filled average price
    filled_qty: Decimal
    status: str
    created_at: datetime
    order_hash: str | None

    @property
    def open(self) -> bool:
        return is_open(self.status)

    @property
    def counts_as_trade(self) -> bool:
        return self.open or self.status == FILLED_STATUS or self.filled_qty > 0

    def filled_value(self) -> Decimal:
        return filled_value(self.quantity, self.reserved_notional, self.price, self.filled_qty)

    def window_notional(self) -> Decimal:
        """What the order counts in the rolling notional window."""
        if self.open:  # may still fill in full
            return max(self.reserved_notional, self.filled_value())
        if self.filled_qty > 0:  # filled, or final with a partial fill: what was traded
            return self.filled_value()
        return self.reserved_notional  # "filled" without a recorded fill: keep the reservation

    def remaining_notional(self) -> Decimal:
        """The unfilled part of the reservation of an open order."""
        if self.quantity is not None:
            if self.quantity <= 0:
                return ZERO
            left = max(self.quantity - self.filled_qty, ZERO)
            return self.reserved_notional * left / self.quantity
        if self.filled_qty > 0 and self.price is None:
            return self.reserved_notional  # cannot tell how much is left: keep it all reserved
        return max(self.reserved_notional - self.filled_value(), ZERO)

    def remaining_qty(self, mark: Decimal | None) -> Decimal | None:
        if self.quantity is not None:
            return max(self.quantity - self.filled_qty, ZERO)
        if mark is None or mark <= 0:
            return None
        return self.remaining_notional() / mark


def _mark(quote: Quote | None) -> Decimal | None:
    """The mid of a quote with both sides, else its last trade; None when it has no usable price."""
    if quote is None:
        return None
    if quote.bid > 0 and quote.ask > 0:
        return quote.mid
    if quote.last > 0:
        return quote.last
    return None


# The statements are built once, with bind parameters: load_usage runs in every decision, and building a
# statement costs more than running it on SQLite. They are written on the tables, not on the mapped classes:
# the same SQL (tests/ledger/test_usage_statements.py), built and compiled without the ORM's per-entity steps
# (and the mapper configuration those ask for first), which a server's first decision or status read paid.
_TRADES = cast(Table, AgentTrade.__table__)
_LEGS = cast(Table, AgentOrderLeg.__table__)
_PROPOSALS = cast(Table, TradeProposal.__table__)
_ACCOUNTS = cast(Table, AgentAccount.__table__)
_POSITIONS = cast(Table, AgentPosition.__table__)


def _literals(statuses: frozenset[str]) -> list[Any]:
    # literal() values, not a list: an IN over a list is re-rendered on every execution.
    return [literal(status) for status in sorted(statuses)]


KNOWN_STATUSES = OPEN_TRADE_STATUSES | {FILLED_STATUS} | RELEASED_STATUSES

# The read does not grow with the agent's history (issue 12). Rows come back to Python only where a value
# needs them: the open orders of the account (bounded by how many are open), the agent's rows of today in a
# status not known at all (they count as open: is_open), the agent's final rows of the rolling window that
# count as a trade (their notional is a Decimal sum, see _ROLLING_FINAL), and at most one row for the
# duplicate check. Counts are COUNT(*) over index ranges.
_OPEN_COLUMNS = (_TRADES.c.agent_id, _TRADES.c.symbol, _TRADES.c.side, _TRADES.c.quantity,
                 _TRADES.c.notional, _TRADES.c.reserved_notional, _TRADES.c.price, _TRADES.c.filled_qty,
                 _TRADES.c.status, _TRADES.c.created_at)


def _build_open_rows() -> Select[Any]:
    return select(*_OPEN_COLUMNS).where(or_(
        _TRADES.c.status.in_(_literals(OPEN_TRADE_STATUSES)),
        (_TRADES.c.agent_id == bindparam("agent_id")) & (_TRADES.c.created_at >= bindparam("unknown_since"))
        & _TRADES.c.status.not_in(_literals(KNOWN_STATUSES))))


def _gaps_between(statuses: frozenset[str]) -> list[ColumnElement[bool]]:
    """`status not in statuses` as the open ranges between them, in SQLite's binary collation."""
    known = sorted(statuses)
    gaps = [_TRADES.c.status < literal(known[0]), _TRADES.c.status > literal(known[-1])]
    gaps += [(_TRADES.c.status > literal(low)) & (_TRADES.c.status < literal(high))
             for low, high in itertools.pairwise(known)]
    return gaps


# The same on SQLite, where NOT IN walks every row of the agent since unknown_since: each gap between the known
# statuses is a range of (agent_id, status), empty unless a status is unknown, so the unknown rows are found by
# a fixed number of index seeks (without created_at, which would make SQLite walk (agent_id, created_at)
# instead; _open_rows drops the older ones). Not on PostgreSQL, whose collation need not order text the way
# Python does.
def _build_open_rows_sqlite() -> Select[Any]:
    return select(*_OPEN_COLUMNS).where(or_(
        _TRADES.c.status.in_(_literals(OPEN_TRADE_STATUSES)),
        *[(_TRADES.c.agent_id == bindparam("agent_id")) & gap for gap in _gaps_between(KNOWN_STATUSES)]))


# A server runs one dialect's open-rows statement only: each is built on its first use (both at import cost ~1.4 ms
# of CPU before a server's first answer), then kept and marked prebuilt like the module's other statements.
_open_rows_built: dict[bool, Select[Any]] = {}


def _open_rows_statement(sqlite: bool) -> Select[Any]:
    """The open-rows read: SQLite's (the gaps between the known statuses) or the others' (NOT IN)."""
    statement = _open_rows_built.get(sqlite)
    if statement is None:
        # setdefault: threads building it at once all get the one kept.
        statement = _open_rows_built.setdefault(sqlite, _build_open_rows_sqlite() if sqlite else _build_open_rows())
        prebuilt(statement)
    return statement


# The agent's final rows in the rolling window that count as a trade (filled, or released with a fill) whose
# notional is not stored as window_micros (ledger/traded.py: written without the ORM, finer than a
# micro-dollar, or older than migration 0011): summed exactly in Python. Normally none; the others are summed
# by SQL in _COUNTS.
_ROLLING_UNSTORED = (
    select(_TRADES.c.status, _TRADES.c.quantity, _TRADES.c.reserved_notional, _TRADES.c.price,
           _TRADES.c.filled_qty)
    .where(_TRADES.c.agent_id == bindparam("agent_id"), _TRADES.c.created_at >= bindparam("rolling_since"),
           _TRADES.c.window_micros.is_(None),
           or_(_TRADES.c.status == FILLED_STATUS,
               _TRADES.c.status.in_(_literals(RELEASED_STATUSES)) & (_TRADES.c.filled_qty != ZERO)))
)
# The legs ledger.legs.with_exit_holds reads (working exits of the agent in a symbol; a held leg holds nothing
# yet), its statuses as literals: PostgreSQL's fast path runs no IN list expanded at compile time.
_WORKING_EXITS = (select(literal(1)).select_from(_LEGS)
                  .where(_LEGS.c.agent_id == bindparam("agent_id"), _LEGS.c.symbol == bindparam("symbol"),
                         _LEGS.c.status.in_(_literals(frozenset(OPEN_STATUSES - {"held"})))))
# Every order sent counts toward the order rate however it ended; a trade today is any row of today but a
# released one without a fill; the rolling notional of final rows is the integer SUM of window_micros. Each
# an aggregate over an index range, (agent_id, created_at, window_micros) or (agent_id, status, created_at):
# nothing is read into Python.
_COUNT_COLUMNS = (
    select(func.sum(_TRADES.c.window_micros)).select_from(_TRADES)
    .where(_TRADES.c.agent_id == bindparam("agent_id"), _TRADES.c.created_at >= bindparam("rolling_since"))
    .scalar_subquery(),
    select(func.count()).select_from(_TRADES)
    .where(_TRADES.c.agent_id == bindparam("agent_id"), _TRADES.c.created_at >= bindparam("rate_since"))
    .scalar_subquery(),
    select(func.count()).select_from(_TRADES)
    .where(_TRADES.c.agent_id == bindparam("agent_id"), _TRADES.c.created_at >= bindparam("day_start"))
    .scalar_subquery(),
    select(func.count()).select_from(_TRADES)
    .where(_TRADES.c.agent_id == bindparam("agent_id"), _TRADES.c.status.in_(_literals(RELEASED_STATUSES)),
           _TRADES.c.created_at >= bindparam("day_start"), _TRADES.c.filled_qty == ZERO)
    .scalar_subquery(),
    # Whether _ROLLING_UNSTORED has anything to read (normally not): that statement runs only then.
    _ROLLING_UNSTORED.with_only_columns(literal(1)).exists(),
    # Whether the agent has working exits in the order's symbol (normally not): legs.with_exit_holds runs
    # only then.
    _WORKING_EXITS.exists(),
)
_COUNTS = select(*_COUNT_COLUMNS)
# Whether the agent sent the same order (same hash) in the duplicate window, however it ended: the window's
# rows by (agent_id, created_at), each joined to its proposal by primary key; at most one row comes back.
_DUPLICATE = (
    select(literal(1)).select_from(_TRADES)
    .join(_PROPOSALS, _PROPOSALS.c.id == _TRADES.c.proposal_id)
    .where(_TRADES.c.agent_id == bindparam("agent_id"), _TRADES.c.created_at >= bindparam("duplicate_since"),
           _PROPOSALS.c.order_hash == bindparam("order_hash"))
    .limit(1)
)


async def _open_rows(session: AsyncSession | AsyncConnection, agent_id: str, unknown_since: datetime) -> list[_Row]:
    """The rows _open_rows_statement reads."""
    # The dialect, without asking a session for its connection (execute finds the unit's).
    bind = session.bind if isinstance(session, AsyncSession) else session
    statement = _open_rows_statement(bind is not None and bind.dialect.name == "sqlite")
    rows = (await execute(session, statement, {"agent_id": agent_id, "unknown_since": unknown_since})).all()
    return [_Row(agent_id=r[0], symbol=r[1], side=r[2], quantity=r[3], notional=r[4],
                 reserved_notional=r[5] if r[5] is not None else ZERO, price=r[6],
                 filled_qty=r[7] if r[7] is not None else ZERO, status=r[8], created_at=r[9], order_hash=None)
            for r in rows if r[8] in OPEN_TRADE_STATUSES or r[9] >= unknown_since]


async def _rolling_unstored(session: AsyncSession | AsyncConnection, agent_id: str, rolling_since: datetime) -> Decimal:
    """Σ window notional of the rows _ROLLING_UNSTORED reads."""
    total = ZERO
    for r in (await execute(session, _ROLLING_UNSTORED, {"agent_id": agent_id, "rolling_since": rolling_since})):
        total += final_window_notional(r[0], r[1], r[2], r[3], r[4]) or ZERO
    return total


class _Marks(NamedTuple):
    """What persist_marks needs of the account row."""

    equity_peak: Decimal
    day: str


@dataclass(frozen=True)
class _Account:
    """The agent's account row, as load_usage reads it."""

    cash: Decimal
    equity_peak: Decimal
    day: str
    day_start_equity: Decimal


@dataclass(frozen=True)
class _Position:
    """One of the agent's positions, as load_usage reads it."""

    symbol: str
    qty: Decimal
    avg_entry_price: Decimal


# The agent (one row, whether or not it has an account row yet), its account and its positions: one statement
# in every case, so an agent that has only proposed so far costs no second read.
_AGENT = select(bindparam("agent_id", type_=String()).label("agent_id")).subquery("agent")
_BOOK = (
    select(_ACCOUNTS.c.cash, _ACCOUNTS.c.equity_peak, _ACCOUNTS.c.day, _ACCOUNTS.c.day_start_equity,
           _POSITIONS.c.symbol, _POSITIONS.c.qty, _POSITIONS.c.avg_entry_price)
    .select_from(_AGENT)
    .outerjoin(_ACCOUNTS, _ACCOUNTS.c.agent_id == _AGENT.c.agent_id)
    .outerjoin(_POSITIONS, _POSITIONS.c.agent_id == _AGENT.c.agent_id)
)
DENIALS_READ_MAX = 1000  # more denials than this in the window is a storm whatever their codes
_DENIALS = (select(_PROPOSALS.c.violations)
            .where(_PROPOSALS.c.agent_id == bindparam("agent_id"), _PROPOSALS.c.status == DENIED_PROPOSAL_STATUS,
                   _PROPOSALS.c.created_at >= bindparam("since"))
            .order_by(_PROPOSALS.c.created_at.desc()).limit(DENIALS_READ_MAX))
# What load_usage reads after the open rows, in ONE statement: the agent's cash and positions (_BOOK, a row per
# position) with the counts (_COUNT_COLUMNS, the same on every row; SQLite and PostgreSQL evaluate a subquery
# that names no outer column once), and the duplicate lookup when there is a duplicate window.
_BOOK_AND_COUNTS = _BOOK.add_columns(*_COUNT_COLUMNS)
_BOOK_COUNTS_AND_DUPLICATE = _BOOK_AND_COUNTS.add_columns(_DUPLICATE.exists())
_COUNTS_AT = len(_BOOK.selected_columns)  # where the counts begin in a row of those


def _book(rows: Sequence[Any]) -> tuple[_Account | None, list[_Position]]:
    """The agent's cash and positions from the rows of _BOOK (or a statement that extends it): one snapshot."""
    first = rows[0]
    # No account row (nothing booked yet, its day is NULL): the agent starts from its capital.
    account = (_Account(cash=first[0], equity_peak=first[1], day=first[2], day_start_equity=first[3])
               if first[2] is not None else None)
    return account, [_Position(r[4], r[5], r[6]) for r in rows if r[4] is not None]


async def count_denials(session: AsyncSession | AsyncConnection, *, agent_id: str, limits: EffectiveLimits,
                        now: datetime) -> int:
    """The agent's proposals with status 'rejected' created in the last denials_window_seconds, except those
    denied only for reasons that are not its misbehaviour (policies.breakers.EXCUSED_CODES)."""
    rows = (await execute(session, _DENIALS, {
        "agent_id": agent_id, "since": now - timedelta(seconds=limits.denials_window_seconds)})).scalars()
    return sum(1 for violations in rows
               if counts_as_denial([str(v.get("code")) for v in (violations or []) if isinstance(v, dict)]
                                   or ["?"]))


async def load_usage(session: AsyncSession | AsyncConnection, *, agent_id: str, order: OrderRequest,
                     limits: EffectiveLimits, quotes: Mapping[str, Quote], now: datetime, with_denials: bool = True,
                     exit_holds: bool = False, order_hash: str | None = None) -> Usage:
    """Usage of `agent_id` at `now`, for checking `order`, read inside the caller's transaction.

    Cost: COUNTs over index ranges, the account's open orders, and the final traded rows of the rolling
    window (an exact Decimal sum); nothing else is read into Python, however long the history.

    - trades_today: trades created since midnight New York of `now`'s New York date;
    - orders_in_rate_window: every order created in the last order_rate_window_seconds, however it ended;
      notional_in_rolling_window: trades created in the last rolling_notional_window_seconds;
    - open_buy_notional: unfilled reserved notional of the agent's open buys; account_open_buy_notional:
      the same over every agent;
    - position_qty: agent_positions for the order's symbol; open_symbol_*: the agent's open orders in it;
    - gross_exposure: Σ over symbols of max(|position value + open buys|, |position value - open sells|);
    - equity: agent cash + Σ qty × mark (quote mid; a held symbol without a quote at its avg_entry_price);
      daily_pnl = equity - agent_accounts.day_start_equity (if that row's day is not today the baseline is
      kept and day_start_stale is set, so older losses keep counting until someone rolls the day: see
      persist_marks); equity_peak = max(stored peak, equity);
    - recent_order_hashes: the order's own hash when an order of the agent with that hash was created in the
      last duplicate_window_seconds, however it ended (none when the window is 0): the only hash the
      duplicate check looks for, so the others are not read;
    - denials_in_window: count_denials (0 unless with_denials: only the breaker needs it, and only for an
      order that is denied, so a decision counts them when it has violations);
    - exit_holds: the agent's working exits in the order's symbol counted as open orders (ledger.legs.
      with_exit_holds), read only when the counts' statement says there are some.
    `order_hash`: order.order_hash() when the caller has worked it out already (it is not worked out twice).
    With no agent_accounts row the agent starts from limits.capital (cash, peak and day start).
    """
    day_start = new_york_day_start(now)
    rate_since = now - timedelta(seconds=limits.order_rate_window_seconds)
    rolling_since = now - timedelta(seconds=limits.rolling_notional_window_seconds)
    duplicate_since = now - timedelta(seconds=limits.duplicate_window_seconds)
    # Rows in a status not known at all count as open: those of today and of the windows.
    unknown_since = min(day_start, rate_since, rolling_since, duplicate_since)

    # Order matters under READ COMMITTED (PostgreSQL), where each statement sees its own snapshot: the open
    # rows are read first, so a fill committing in between can only be counted twice (still open, and
    # already final or in the position), never missed; cash and positions come from ONE statement, so equity
    # never mixes cash after a fill with positions before it (a false drawdown would trip the breaker).
    rows = await _open_rows(session, agent_id, unknown_since)
    # Cash and positions, the counts, and whether the rarely needed reads have anything to read: one statement.
    parameters = {"agent_id": agent_id, "rolling_since": rolling_since, "rate_since": rate_since,
                  "day_start": day_start, "symbol": order.symbol}
    hashes: set[str] = set()
    if limits.duplicate_window_seconds > 0:
        # The check only asks whether this order's hash is among the window's: that one is looked up.
        order_hash = order_hash or order.order_hash()
        parameters.update(duplicate_since=duplicate_since, order_hash=order_hash)
        book_rows = (await execute(session, _BOOK_COUNTS_AND_DUPLICATE, parameters)).all()
        (rolling_micros, orders_in_rate, rows_today, released_unfilled_today, unstored, working_exits,
         duplicate) = book_rows[0][_COUNTS_AT:]
        if duplicate:
            hashes.add(order_hash)
    else:
        book_rows = (await execute(session, _BOOK_AND_COUNTS, parameters)).all()
        (rolling_micros, orders_in_rate, rows_today, released_unfilled_today, unstored,
         working_exits) = book_rows[0][_COUNTS_AT:]
    account, positions = _book(book_rows)
    rolling = Decimal(rolling_micros or 0) / MICROS
    if unstored:
        rolling += await _rolling_unstored(session, agent_id, rolling_since)
    denials = await count_denials(session, agent_id=agent_id, limits=limits, now=now) if with_denials else 0

    marks: dict[str, Decimal] = {}
    for position in positions:
        marks[position.symbol] = _mark(quotes.get(position.symbol)) or position.avg_entry_price
    order_mark = _mark(quotes.get(order.symbol)) or marks.get(order.symbol)

    trades_today = int(rows_today) - int(released_unfilled_today)
    orders_in_rate = int(orders_in_rate)
    open_buy = account_open_buy = ZERO
    open_buy_qty = open_sell_qty = open_buy_sym_notional = open_sell_sym_notional = ZERO
    open_buy_by_symbol: dict[str, Decimal] = {}
    open_sell_by_symbol: dict[str, Decimal] = {}
    for row in rows:
        if row.side == "buy":
            account_open_buy += row.remaining_notional()
        if row.agent_id != agent_id:
            continue
        remaining = row.remaining_notional()
        book = open_buy_by_symbol if row.side == "buy" else open_sell_by_symbol
        book[row.symbol] = book.get(row.symbol, ZERO) + remaining
        if row.side == "buy":
            open_buy += remaining
        if row.symbol == order.symbol:
            qty = row.remaining_qty(order_mark)
            if row.side == "buy":
                open_buy_sym_notional += remaining
                open_buy_qty += qty if qty is not None else ZERO
            else:
                open_sell_sym_notional += remaining
                open_sell_qty += qty if qty is not None else ZERO
        if row.created_at >= rolling_since:
            rolling += row.window_notional()

    position_qty = ZERO
    position_value = ZERO
    gross = ZERO
    values: dict[str, Decimal] = {}
    for position in positions:
        value = position.qty * marks[position.symbol]
        values[position.symbol] = value
        position_value += value
        if position.symbol == order.symbol:
            position_qty = position.qty
    for symbol in set(values) | set(open_buy_by_symbol) | set(open_sell_by_symbol):
        value = values.get(symbol, ZERO)
        gross += max(abs(value + open_buy_by_symbol.get(symbol, ZERO)),
                     abs(value - open_sell_by_symbol.get(symbol, ZERO)))

    if account is None:
        cash, stored_peak, day_start_equity, stale = limits.capital, limits.capital, limits.capital, False
    else:
        cash, stored_peak, day_start_equity = account.cash, account.equity_peak, account.day_start_equity
        stale = account.day != new_york_date(now).isoformat()
    equity = cash + position_value

    usage = Usage(
        trades_today=trades_today,
        orders_in_rate_window=orders_in_rate,
        notional_in_rolling_window=rolling,
        open_buy_notional=open_buy,
        position_qty=position_qty,
        open_symbol_qty=open_buy_qty - open_sell_qty,
        open_symbol_notional=open_buy_sym_notional - open_sell_sym_notional,
        gross_exposure=gross,
        agent_cash=cash,
        daily_pnl=equity - day_start_equity,
        equity=equity,
        equity_peak=max(stored_peak, equity),
        recent_order_hashes=frozenset(hashes),
        denials_in_window=denials,
        account_open_buy_notional=account_open_buy,
        open_symbol_buy_qty=open_buy_qty,
        open_symbol_sell_qty=open_sell_qty,
        day_start_equity=day_start_equity,
        day_start_stale=stale,
        stored_equity_peak=account.equity_peak if account is not None else None,
        stored_day=account.day if account is not None else None,
    )
    return await with_exit_holds(session, agent_id, order.symbol, usage) if exit_holds and working_exits else usage


_ACCOUNT_MARKS = (select(_ACCOUNTS.c.equity_peak, _ACCOUNTS.c.day)
                  .where(_ACCOUNTS.c.agent_id == bindparam("agent_id")))
_SET_DAY = (update(_ACCOUNTS).where(_ACCOUNTS.c.agent_id == bindparam("agent"))
            .values(day=bindparam("new_day"), day_start_equity=bindparam("new_start"), updated_at=bindparam("now")))
_SET_PEAK = (update(_ACCOUNTS).where(_ACCOUNTS.c.agent_id == bindparam("agent"))
             .values(equity_peak=bindparam("new_peak"), updated_at=bindparam("now")))
_SET_DAY_AND_PEAK = (update(_ACCOUNTS).where(_ACCOUNTS.c.agent_id == bindparam("agent"))
                     .values(day=bindparam("new_day"), day_start_equity=bindparam("new_start"),
                             equity_peak=bindparam("new_peak"), updated_at=bindparam("now")))


async def persist_marks(session: AsyncSession, *, agent_id: str, usage: Usage, now: datetime,
                        account: Any = None, stored: bool = False) -> bool:
    """Write back what load_usage computed but does not store: a higher equity peak, and a new trading day
    (day = today in New York, day_start_equity = equity now) when the stored day is not today. Call it in
    the same transaction, after load_usage. Returns True when the row changed. No row: nothing to do.
    `account`: the row (with equity_peak and day) when the caller has just read it in this transaction;
    `stored=True`: `usage` was read in this transaction, so its stored peak and day are the row's (no read)."""
    if account is None and stored and usage.stored_day is not None and usage.stored_equity_peak is not None:
        account = _Marks(equity_peak=usage.stored_equity_peak, day=usage.stored_day)
    if account is None:
        account = (await execute(session, _ACCOUNT_MARKS, {"agent_id": agent_id})).first()
    if account is None:
        return False
    today = new_york_date(now).isoformat()
    new_day = account.day != today
    new_peak = usage.equity > account.equity_peak
    if not (new_day or new_peak):
        return False
    statement = _SET_DAY_AND_PEAK if new_day and new_peak else _SET_DAY if new_day else _SET_PEAK
    await execute(session, statement, {"agent": agent_id, "now": now, "new_day": today,
                                       "new_start": usage.equity, "new_peak": usage.equity})
    return True

# Every statement above is a constant of this module: prepared for the driver on its first run (fast_execute.prebuilt).
prebuilt_statements(globals())
