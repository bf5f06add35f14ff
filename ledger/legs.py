"""Bracket legs in our ledger: the exits of an entry order (agent_order_legs), brought in line with the
broker's view of the entry and its legs. A leg's fill is booked like any other order's (apply_order_update):
the agent's position, cash and realized P&L follow every leg."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from broker.base import OPEN_STATUSES, BrokerOrder
from ledger.accounting import apply_order_update
from ledger.db import execute
from ledger.fast_execute import prebuilt_statements
from ledger.ids import new_random_id
from ledger.models import AgentOrderLeg, AgentTrade
from policies.checks import Usage

# A leg may still fill in these statuses ("held": waiting for its entry to fill).
LIVE_LEG_STATUSES = frozenset(OPEN_STATUSES | {"pending_submit", "unknown"})
# The entries whose exits may still fill: they are followed (refreshed, reconciled) like open orders.
# On the table rather than the mapped class: the same SQL, built and compiled without the ORM's per-entity step.
_LEGS = cast(Table, AgentOrderLeg.__table__)
PARENTS_OF_LIVE_LEGS = select(_LEGS.c.parent_id).where(_LEGS.c.status.in_(sorted(OPEN_STATUSES)))
ROLE_ORDER = {"stop_loss": 0, "trailing_stop": 1, "take_profit": 2}


async def legs_of(session: AsyncSession, parent_ids: Iterable[str]) -> dict[str, list[AgentOrderLeg]]:
    """The legs of these entries, by entry id, stop first."""
    ids = list(parent_ids)
    if not ids:
        return {}
    rows = (await session.execute(select(AgentOrderLeg).where(AgentOrderLeg.parent_id.in_(ids)))).scalars()
    found: dict[str, list[AgentOrderLeg]] = {}
    for row in rows:
        found.setdefault(row.parent_id, []).append(row)
    for legs in found.values():
        legs.sort(key=lambda leg: ROLE_ORDER.get(leg.role, 9))
    return found


async def apply_leg_updates(session: AsyncSession, parent: AgentTrade, order: BrokerOrder, now: datetime,
                            capital: Decimal, day: str) -> list[dict[str, Any]]:
    """Create or update the entry's leg rows from the broker's legs, booking their fills. Returns one
    audit payload per leg that changed (a new leg, a status change, a fill), for an ``order.updated`` record."""
    changes: list[dict[str, Any]] = []
    if not order.legs:
        return changes
    existing = {leg.role: leg for leg in (await legs_of(session, [parent.id])).get(parent.id, [])}
    for broker_leg in order.legs:
        role = broker_leg.leg_role or broker_leg.order_type
        row = existing.get(role)
        before, before_qty = (row.status, row.filled_qty) if row is not None else (None, Decimal(0))
        if row is None:
            row = AgentOrderLeg(
                id=new_random_id(), parent_id=parent.id, agent_id=parent.agent_id, role=role, order_id=None,
                symbol=parent.symbol, side=broker_leg.side, quantity=broker_leg.qty, order_type=broker_leg.order_type,
                limit_price=broker_leg.limit_price, stop_price=broker_leg.stop_price,
                trail_percent=broker_leg.trail_percent, trail_price=broker_leg.trail_price, hwm=broker_leg.hwm,
                time_in_force=broker_leg.time_in_force, status="pending_submit", filled_qty=Decimal(0),
                created_at=now, updated_at=now)
            session.add(row)
            await session.flush()
        moved = (row.stop_price, row.hwm) != (broker_leg.stop_price, broker_leg.hwm)
        if moved:  # a trailing stop follows its high-water mark
            row.stop_price, row.hwm = broker_leg.stop_price, broker_leg.hwm
        changed = await apply_order_update(session, row, broker_leg, now, capital, day)
        if changed or before is None:
            changes.append({"order_id": row.id, "parent_order_id": parent.id, "proposal_id": parent.proposal_id,
                            "role": role,
                            "broker_order_id": row.order_id, "from": before, "to": row.status,
                            "filled_qty_before": before_qty, "filled_qty": row.filled_qty,
                            "filled_avg_price": row.price, "stop_price": row.stop_price})
    return changes


_WORKING_EXITS = (select(_LEGS.c.parent_id, _LEGS.c.side, _LEGS.c.quantity, _LEGS.c.filled_qty)
                  .where(_LEGS.c.agent_id == bindparam("agent_id"), _LEGS.c.symbol == bindparam("symbol"),
                         _LEGS.c.status.in_(sorted(OPEN_STATUSES - {"held"}))))


async def with_exit_holds(session: AsyncSession | AsyncConnection, agent_id: str, symbol: str, usage: Usage) -> Usage:
    """Usage with the agent's working exits in `symbol` counted as open orders on their side (once per
    bracket: one of them can fill). They hold the position's shares, as at Alpaca: a hand-made sell of those
    shares would leave the agent short once an exit fills, so it is checked as a short sale until the exits
    are cancelled. Held legs (entry not filled) hold nothing yet. Exits never make room for an order on the
    other side (check.position_change counts only the order's own side)."""
    rows = (await execute(session, _WORKING_EXITS, {"agent_id": agent_id, "symbol": symbol})).all()
    if not rows:
        return usage
    held: dict[tuple[str, str], Decimal] = {}
    for parent_id, side, quantity, filled in rows:
        left = max((quantity or Decimal(0)) - (filled or Decimal(0)), Decimal(0))
        held[(parent_id, side)] = max(held.get((parent_id, side), Decimal(0)), left)
    sells = sum((qty for (_, side), qty in held.items() if side == "sell"), Decimal(0))
    buys = sum((qty for (_, side), qty in held.items() if side == "buy"), Decimal(0))
    return replace(usage, open_symbol_sell_qty=usage.open_symbol_sell_qty + sells,
                   open_symbol_buy_qty=usage.open_symbol_buy_qty + buys)

# Every statement above is a constant of this module: prepared for the driver on its first run (fast_execute.prebuilt).
prebuilt_statements(globals())
