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

Plain SELECTs, no dialect-specific SQL; amounts are stored as text, so sums are Decimal sums in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.base import OPEN_STATUSES, Quote
from ledger.db import execute
from ledger.models import AgentAccount, AgentPosition, AgentTrade, TradeProposal
from policies.breakers import counts_as_denial
from policies.checks import Usage
from policies.limits import EffectiveLimits
from policies.market_hours import new_york_date, new_york_day_start
from policies.orders import OrderRequest

ZERO = Decimal(0)

# Statuses in which an order can still fill (queried by index for the account-wide reservation).
OPEN_TRADE_STATUSES = frozenset(OPEN_STATUSES | {"pending_submit", "unknown", "pending_replace"})
FILLED_STATUS = "filled"
# Final without a fill of their own: they release whatever they did not fill.
RELEASED_STATUSES = frozenset({"canceled", "expired", "rejected", "replaced"})
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
        if self.filled_qty <= 0:
            return ZERO
        if self.price is not None:
            return self.filled_qty * self.price
        if self.quantity:  # no fill price recorded: the filled share of the reservation
            return self.reserved_notional * self.filled_qty / self.quantity
        return self.reserved_notional

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
# statement costs more than running it on SQLite.
def _literals(statuses: frozenset[str]) -> list[Any]:
    # literal() values, not a list: an IN over a list is re-rendered on every execution.
    return [literal(status) for status in sorted(statuses)]


KNOWN_STATUSES = OPEN_TRADE_STATUSES | {FILLED_STATUS} | RELEASED_STATUSES

# Read: every agent's open rows (the account is shared), the agent's rows inside the windows (since), and its
# rows of today in a status not known at all (they count as open: is_open). The agent's other rows of today
# are final and only count as trades: _OLDER_TRADES_TODAY counts them without reading them, so a decision late
# in a busy day does not read the whole day.
_TRADE_ROWS = (
    select(AgentTrade.agent_id, AgentTrade.symbol, AgentTrade.side, AgentTrade.quantity,
           AgentTrade.notional, AgentTrade.reserved_notional, AgentTrade.price, AgentTrade.filled_qty,
           AgentTrade.status, AgentTrade.created_at, TradeProposal.order_hash)
    .outerjoin(TradeProposal, TradeProposal.id == AgentTrade.proposal_id)
    .where(or_(AgentTrade.status.in_(_literals(OPEN_TRADE_STATUSES)),
               (AgentTrade.agent_id == bindparam("agent_id")) & (AgentTrade.created_at >= bindparam("since")),
               (AgentTrade.agent_id == bindparam("agent_id")) & (AgentTrade.created_at >= bindparam("day_start"))
               & AgentTrade.status.not_in(_literals(KNOWN_STATUSES))))
)
# The agent's final rows of today older than the windows that count as a trade: filled, or released with a fill.
_OLDER_TRADES_TODAY = (
    select(func.count()).select_from(AgentTrade)
    .where(AgentTrade.agent_id == bindparam("agent_id"), AgentTrade.created_at >= bindparam("day_start"),
           AgentTrade.created_at < bindparam("since"),
           or_(AgentTrade.status == FILLED_STATUS,
               AgentTrade.status.in_(_literals(RELEASED_STATUSES)) & (AgentTrade.filled_qty != ZERO)))
)


async def _trade_rows(session: AsyncSession, agent_id: str, since: datetime, day_start: datetime) -> list[_Row]:
    """The rows _TRADE_ROWS reads."""
    rows = (await execute(session, _TRADE_ROWS, {"agent_id": agent_id, "since": since,
                                                 "day_start": day_start})).all()
    return [_Row(agent_id=r[0], symbol=r[1], side=r[2], quantity=r[3], notional=r[4],
                 reserved_notional=r[5] if r[5] is not None else ZERO, price=r[6],
                 filled_qty=r[7] if r[7] is not None else ZERO, status=r[8], created_at=r[9],
                 order_hash=r[10])
            for r in rows]


@dataclass(frozen=True)
class _Account:
    cash: Decimal
    equity_peak: Decimal
    day: str
    day_start_equity: Decimal


@dataclass(frozen=True)
class _Position:
    symbol: str
    qty: Decimal
    avg_entry_price: Decimal


_BOOK = (
    select(AgentAccount.cash, AgentAccount.equity_peak, AgentAccount.day, AgentAccount.day_start_equity,
           AgentPosition.symbol, AgentPosition.qty, AgentPosition.avg_entry_price)
    .select_from(AgentAccount)
    .outerjoin(AgentPosition, AgentPosition.agent_id == AgentAccount.agent_id)
    .where(AgentAccount.agent_id == bindparam("agent_id"))
)
_POSITIONS_ONLY = (select(AgentPosition.symbol, AgentPosition.qty, AgentPosition.avg_entry_price)
                   .where(AgentPosition.agent_id == bindparam("agent_id")))
DENIALS_READ_MAX = 1000  # more denials than this in the window is a storm whatever their codes
_DENIALS = (select(TradeProposal.violations)
            .where(TradeProposal.agent_id == bindparam("agent_id"), TradeProposal.status == DENIED_PROPOSAL_STATUS,
                   TradeProposal.created_at >= bindparam("since"))
            .order_by(TradeProposal.created_at.desc()).limit(DENIALS_READ_MAX))


async def _book(session: AsyncSession, agent_id: str) -> tuple[_Account | None, list[_Position]]:
    """The agent's cash and positions from one consistent snapshot (a single SELECT)."""
    rows = (await execute(session, _BOOK, {"agent_id": agent_id})).all()
    if rows:
        first = rows[0]
        account = _Account(cash=first[0], equity_peak=first[1], day=first[2], day_start_equity=first[3])
        return account, [_Position(r[4], r[5], r[6]) for r in rows if r[4] is not None]
    # No account row (nothing booked yet): positions alone, the agent starts from its capital.
    only = (await execute(session, _POSITIONS_ONLY, {"agent_id": agent_id})).all()
    return None, [_Position(r[0], r[1], r[2]) for r in only]


async def count_denials(session: AsyncSession, *, agent_id: str, limits: EffectiveLimits, now: datetime) -> int:
    """The agent's proposals with status 'rejected' created in the last denials_window_seconds, except those
    denied only for reasons that are not its misbehaviour (policies.breakers.EXCUSED_CODES)."""
    rows = (await execute(session, _DENIALS, {
        "agent_id": agent_id, "since": now - timedelta(seconds=limits.denials_window_seconds)})).scalars()
    return sum(1 for violations in rows
               if counts_as_denial([str(v.get("code")) for v in (violations or []) if isinstance(v, dict)]
                                   or ["?"]))


async def load_usage(session: AsyncSession, *, agent_id: str, order: OrderRequest, limits: EffectiveLimits,
                     quotes: Mapping[str, Quote], now: datetime, with_denials: bool = True) -> Usage:
    """Usage of `agent_id` at `now`, for checking `order`, read inside the caller's transaction.

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
    - recent_order_hashes: order hashes of every order of the agent created in the last
      duplicate_window_seconds, however it ended (none when the window is 0);
    - denials_in_window: count_denials (0 unless with_denials: only the breaker needs it, and only for an
      order that is denied, so a decision counts them when it has violations).
    With no agent_accounts row the agent starts from limits.capital (cash, peak and day start).
    """
    day_start = new_york_day_start(now)
    rate_since = now - timedelta(seconds=limits.order_rate_window_seconds)
    rolling_since = now - timedelta(seconds=limits.rolling_notional_window_seconds)
    duplicate_since = now - timedelta(seconds=limits.duplicate_window_seconds)
    since = min(rate_since, rolling_since, duplicate_since)  # rows read; earlier ones of today are counted

    # Order matters under READ COMMITTED (PostgreSQL), where each statement sees its own snapshot: the
    # trades are read first, so a fill committing in between can only be counted twice (still open, and
    # already in the position; open when read, final when counted), never missed; cash and positions come
    # from ONE statement, so equity never mixes cash after a fill with positions before it (a false drawdown
    # would trip the breaker).
    rows = await _trade_rows(session, agent_id, since, day_start)
    older_trades_today = 0
    if since > day_start:
        older_trades_today = (await execute(session, _OLDER_TRADES_TODAY, {
            "agent_id": agent_id, "day_start": day_start, "since": since})).scalar_one()
    account, positions = await _book(session, agent_id)
    denials = await count_denials(session, agent_id=agent_id, limits=limits, now=now) if with_denials else 0

    marks: dict[str, Decimal] = {}
    for position in positions:
        marks[position.symbol] = _mark(quotes.get(position.symbol)) or position.avg_entry_price
    order_mark = _mark(quotes.get(order.symbol)) or marks.get(order.symbol)

    trades_today, orders_in_rate = int(older_trades_today), 0
    rolling = open_buy = account_open_buy = ZERO
    open_buy_qty = open_sell_qty = open_buy_sym_notional = open_sell_sym_notional = ZERO
    open_buy_by_symbol: dict[str, Decimal] = {}
    open_sell_by_symbol: dict[str, Decimal] = {}
    hashes: set[str] = set()
    for row in rows:
        if row.open and row.side == "buy":
            account_open_buy += row.remaining_notional()
        if row.agent_id != agent_id:
            continue
        if row.open:
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
        # Every order sent counts toward the order rate and the duplicate window however it ended (cancelled,
        # expired, unfilled IOC, rejected by the broker): otherwise place-and-cancel walks around both.
        if row.created_at >= rate_since:
            orders_in_rate += 1
        if limits.duplicate_window_seconds > 0 and row.created_at >= duplicate_since and row.order_hash:
            hashes.add(row.order_hash)
        if not row.counts_as_trade:
            continue
        if row.created_at >= day_start:
            trades_today += 1
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

    return Usage(
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
    )


async def persist_marks(session: AsyncSession, *, agent_id: str, usage: Usage, now: datetime) -> bool:
    """Write back what load_usage computed but does not store: a higher equity peak, and a new trading day
    (day = today in New York, day_start_equity = equity now) when the stored day is not today. Call it in
    the same transaction, after load_usage. Returns True when the row changed. No row: nothing to do."""
    account = (await session.execute(
        select(AgentAccount).where(AgentAccount.agent_id == agent_id))).scalar_one_or_none()
    if account is None:
        return False
    changed = False
    today = new_york_date(now).isoformat()
    if account.day != today:
        account.day, account.day_start_equity = today, usage.equity
        changed = True
    if usage.equity > account.equity_peak:
        account.equity_peak = usage.equity
        changed = True
    if changed:
        account.updated_at = now
    return changed
