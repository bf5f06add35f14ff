"""Per-agent positions and cash, built from fills. The broker account is shared by several agents, so
each agent's book is kept here, from the fills of its own orders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Row, Table, and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.base import BrokerOrder
from ledger.db import execute, insert_if_absent
from ledger.fast_execute import prebuilt_statements
from ledger.models import AgentAccount, AgentOrderLeg, AgentPosition, AgentTrade

ZERO = Decimal(0)


@dataclass(frozen=True)
class Book:
    qty: Decimal
    avg_entry_price: Decimal
    realized_pl: Decimal


@dataclass(frozen=True)
class Held:
    """The agent's position in a symbol and its cash, as its caller read them in this transaction (SQLite, whose
    writers are serialized, so nothing needs locking): book_fill writes without reading them again."""

    position: Book
    cash: Decimal


def apply_fill(book: Book, side: str, qty: Decimal, price: Decimal) -> Book:
    """Average-cost accounting. Fills that reduce a position realise P&L; ones that cross zero open the
    other side at the fill price."""
    signed = qty if side == "buy" else -qty
    if book.qty == 0 or (book.qty > 0) == (signed > 0):
        new_qty = book.qty + signed
        avg = (abs(book.qty) * book.avg_entry_price + qty * price) / abs(new_qty)
        return Book(new_qty, avg, book.realized_pl)
    closing = min(abs(signed), abs(book.qty))
    direction = Decimal(1) if book.qty > 0 else Decimal(-1)
    realized = book.realized_pl + closing * (price - book.avg_entry_price) * direction
    new_qty = book.qty + signed
    if new_qty == 0:
        return Book(ZERO, ZERO, realized)
    if (new_qty > 0) == (book.qty > 0):
        return Book(new_qty, book.avg_entry_price, realized)
    return Book(new_qty, price, realized)


def fill_delta(trade: AgentTrade | AgentOrderLeg, order: BrokerOrder) -> tuple[Decimal, Decimal] | None:
    """The part of the order filled since we last looked: (qty, average price of that part)."""
    new_qty = order.filled_qty or ZERO
    old_qty = trade.filled_qty or ZERO
    if new_qty <= old_qty or order.filled_avg_price is None:
        return None
    old_value = old_qty * (trade.price or ZERO)
    new_value = new_qty * order.filled_avg_price
    delta_qty = new_qty - old_qty
    return delta_qty, (new_value - old_value) / delta_qty


async def ensure_agent_account(session: AsyncSession, agent_id: str, capital: Decimal, day: str,
                               now: datetime, *, lock: bool = False) -> AgentAccount:
    """The agent's account row, created (once, even by concurrent callers) with its capital. lock=True locks
    it for a read-modify-write (PostgreSQL; SQLite's writers are serialized already)."""
    account = await session.get(AgentAccount, agent_id)
    if account is None:
        await insert_if_absent(session, AgentAccount, {
            "agent_id": agent_id, "cash": capital, "equity_peak": capital, "day": day, "day_start_equity": capital,
            "updated_at": now})
    if account is None or lock:
        query = select(AgentAccount).where(AgentAccount.agent_id == agent_id)
        if lock:
            query = query.with_for_update()
        account = (await session.execute(query.execution_options(populate_existing=True))).scalar_one()
    return account


async def apply_order_update(session: AsyncSession, trade: AgentTrade | AgentOrderLeg, order: BrokerOrder,
                             now: datetime, capital: Decimal, day: str) -> bool:
    """Bring our trade row in line with the broker's order, booking any new fill to the agent's position
    and cash. Returns True when anything changed. Idempotent: the same update twice books nothing twice."""
    # Lock the trade row and read it again: two updates of one order (a refresh racing a cancel, two replicas
    # refreshing at once) must not both book the same fill. Pending changes are flushed first, not lost.
    model = type(trade)  # an AgentTrade, or a bracket leg (AgentOrderLeg) with the same columns
    await session.execute(select(model).where(model.id == trade.id).with_for_update()
                          .execution_options(populate_existing=True))
    delta = fill_delta(trade, order)
    if delta is not None:
        qty, price = delta
        position = (await session.execute(
            select(AgentPosition).where(AgentPosition.agent_id == trade.agent_id,
                                        AgentPosition.symbol == trade.symbol).with_for_update()
            .execution_options(populate_existing=True)
        )).scalar_one_or_none()
        if position is None:  # the first fill in this symbol; a concurrent first fill may create it too
            await insert_if_absent(session, AgentPosition, {
                "agent_id": trade.agent_id, "symbol": trade.symbol, "qty": ZERO, "avg_entry_price": ZERO,
                "realized_pl": ZERO, "updated_at": now})
            position = (await session.execute(
                select(AgentPosition).where(AgentPosition.agent_id == trade.agent_id,
                                            AgentPosition.symbol == trade.symbol).with_for_update()
                .execution_options(populate_existing=True))).scalar_one()
        book = apply_fill(Book(position.qty, position.avg_entry_price, position.realized_pl), trade.side, qty,
                          price)
        position.qty, position.avg_entry_price, position.realized_pl = book.qty, book.avg_entry_price, \
            book.realized_pl
        position.updated_at = now
        account = await ensure_agent_account(session, trade.agent_id, capital, day, now, lock=True)
        cash_flow = qty * price
        account.cash = account.cash - cash_flow if trade.side == "buy" else account.cash + cash_flow
        account.updated_at = now
    changes = order_changes(order_id=trade.order_id, status=trade.status, executed_at=trade.executed_at,
                            order=order, now=now, filled=delta is not None)
    for name, value in changes.items():
        setattr(trade, name, value)
    return bool(changes)


def order_changes(*, order_id: str | None, status: str, executed_at: datetime | None, order: BrokerOrder,
                  now: datetime, filled: bool) -> dict[str, Any]:
    """What the broker's view of an order changes on our row (its id, status, fill and times), given the row's
    current order_id, status and executed_at; `filled`: a new fill was booked (fill_delta). Empty if nothing."""
    changes: dict[str, Any] = {}
    if filled:
        changes.update(filled_qty=order.filled_qty, price=order.filled_avg_price)
    if order.broker_order_id and order_id != order.broker_order_id:
        changes["order_id"] = order.broker_order_id
    if status != order.status:
        changes["status"] = order.status
        if order.status == "rejected":
            changes["reject_reason"] = order.reject_reason
    if order.status == "filled" and executed_at is None:
        changes["executed_at"] = order.updated_at or now
    if changes:
        changes["updated_at"] = now
    return changes


async def position_after_fill(session: AsyncSession, trade: AgentTrade) -> dict[str, object]:
    """The agent's position in the trade's symbol as it stands in this transaction (for the event stream)."""
    position = await session.get(AgentPosition, (trade.agent_id, trade.symbol))
    return {"order_id": trade.id, "symbol": trade.symbol, "qty": position.qty if position else ZERO,
            "avg_entry_price": position.avg_entry_price if position else ZERO,
            "realized_pl": position.realized_pl if position else ZERO}


# The same bookkeeping as Core statements, built once, for the gate's execution path (policies/gate.py): the ORM
# session's own work costs as much as these statements on SQLite. Rows come back as rows.
_ACCOUNTS = cast(Table, AgentAccount.__table__)
_POSITIONS = cast(Table, AgentPosition.__table__)
_ACCOUNT = (select(_ACCOUNTS.c.cash, _ACCOUNTS.c.equity_peak, _ACCOUNTS.c.day, _ACCOUNTS.c.day_start_equity)
            .where(_ACCOUNTS.c.agent_id == bindparam("agent_id")))
_ACCOUNT_LOCKED = _ACCOUNT.with_for_update()
_SET_CASH = (update(_ACCOUNTS).where(_ACCOUNTS.c.agent_id == bindparam("agent"))
             .values(cash=bindparam("new_cash"), updated_at=bindparam("now")))
_POSITION_LOCKED = (select(_POSITIONS.c.qty, _POSITIONS.c.avg_entry_price, _POSITIONS.c.realized_pl)
                    .where(_POSITIONS.c.agent_id == bindparam("agent_id"), _POSITIONS.c.symbol == bindparam("symbol"))
                    .with_for_update())
# SQLite: an order's trade row with the agent's position in its symbol and its account, in one read (unit (c) of
# an execution: policies/gate.py). `columns`: the trade columns wanted; the others come as position_* / cash.
def trade_with_holdings(columns: tuple[str, ...]) -> Any:
    trades = cast(Table, AgentTrade.__table__)
    return (select(*(trades.c[name] for name in columns), _POSITIONS.c.qty.label("position_qty"),
                   _POSITIONS.c.avg_entry_price.label("position_avg_entry_price"),
                   _POSITIONS.c.realized_pl.label("position_realized_pl"), _ACCOUNTS.c.cash.label("account_cash"))
            .select_from(trades.outerjoin(_POSITIONS, and_(_POSITIONS.c.agent_id == trades.c.agent_id,
                                                            _POSITIONS.c.symbol == trades.c.symbol))
                         .outerjoin(_ACCOUNTS, _ACCOUNTS.c.agent_id == trades.c.agent_id))
            .where(trades.c.id == bindparam("trade_id")))


def held_of(row: Any) -> Held | None:
    """The Held of a trade_with_holdings row (None when the position or the account does not exist yet)."""
    if row.position_qty is None or row.account_cash is None:
        return None
    return Held(Book(row.position_qty, row.position_avg_entry_price, row.position_realized_pl), row.account_cash)


_SET_POSITION = (update(_POSITIONS)
                 .where(_POSITIONS.c.agent_id == bindparam("agent"), _POSITIONS.c.symbol == bindparam("sym"))
                 .values(qty=bindparam("new_qty"), avg_entry_price=bindparam("new_avg"),
                         realized_pl=bindparam("new_realized"), updated_at=bindparam("now")))


async def account_row(session: AsyncSession, agent_id: str, capital: Decimal, day: str, now: datetime, *,
                      lock: bool = False) -> Row[Any]:
    """ensure_agent_account as a row (cash, equity_peak, day, day_start_equity), by Core statements."""
    statement = _ACCOUNT_LOCKED if lock else _ACCOUNT
    row = (await execute(session, statement, {"agent_id": agent_id})).first()
    if row is None:
        await insert_if_absent(session, AgentAccount, {
            "agent_id": agent_id, "cash": capital, "equity_peak": capital, "day": day, "day_start_equity": capital,
            "updated_at": now})
        row = (await execute(session, statement, {"agent_id": agent_id})).one()
    return row


async def book_fill(session: AsyncSession, *, agent_id: str, symbol: str, side: str, qty: Decimal, price: Decimal,
                    capital: Decimal, day: str, now: datetime, held: Held | None = None) -> Book:
    """Book a fill of `qty` at `price` to the agent's position and cash, as apply_order_update does (the same
    rows locked in the same order: position, then account), by Core statements. Returns the position after it.
    `held`: both rows as the caller read them in this transaction (they exist): they are not read again."""
    cash_flow = qty * price
    if held is not None:
        book = apply_fill(held.position, side, qty, price)
        await execute(session, _SET_POSITION, {"agent": agent_id, "sym": symbol, "new_qty": book.qty,
                                               "new_avg": book.avg_entry_price, "new_realized": book.realized_pl,
                                               "now": now})
        await execute(session, _SET_CASH, {"agent": agent_id, "now": now, "new_cash": held.cash - cash_flow
                                           if side == "buy" else held.cash + cash_flow})
        return book
    keys = {"agent_id": agent_id, "symbol": symbol}
    position = (await execute(session, _POSITION_LOCKED, keys)).first()
    if position is None:  # the first fill in this symbol; a concurrent first fill may create it too
        await insert_if_absent(session, AgentPosition, {
            "agent_id": agent_id, "symbol": symbol, "qty": ZERO, "avg_entry_price": ZERO, "realized_pl": ZERO,
            "updated_at": now})
        position = (await execute(session, _POSITION_LOCKED, keys)).one()
    book = apply_fill(Book(position.qty, position.avg_entry_price, position.realized_pl), side, qty, price)
    await execute(session, _SET_POSITION, {"agent": agent_id, "sym": symbol, "new_qty": book.qty,
                                           "new_avg": book.avg_entry_price, "new_realized": book.realized_pl,
                                           "now": now})
    account = await account_row(session, agent_id, capital, day, now, lock=True)
    await execute(session, _SET_CASH, {"agent": agent_id, "now": now, "new_cash": account.cash - cash_flow
                                       if side == "buy" else account.cash + cash_flow})
    return book

# Every statement above is a constant of this module: prepared for the driver on its first run (fast_execute.prebuilt).
prebuilt_statements(globals())
