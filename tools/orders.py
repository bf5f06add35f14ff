"""get_orders and cancel_order: the agent's own orders, with the broker's status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from mcp.server.mcpserver import Context
from pydantic import Field

from policies.results import CancelResult, OrderOut, OrdersResult
from policies.violations import Code, deny
from tools.common import read_through_gate, through_gate

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from ledger.models import AgentOrderLeg, AgentTrade
    from policies.gate import Agent, Gate, OrdersRead

MAX_ORDERS = 500
ORDERS_DESCRIPTION = "This agent's orders, newest first, with broker status; limit 1-500."
CANCEL_DESCRIPTION = "Cancel one of this agent's open orders; allowed even while halted or disabled."


def order_out(trade: AgentTrade, legs: list[AgentOrderLeg] | None = None) -> OrderOut:
    return OrderOut(order_id=trade.id, symbol=trade.symbol, side=trade.side, order_type=trade.order_type,
                    time_in_force=trade.time_in_force, qty=trade.quantity, notional=trade.notional,
                    limit_price=trade.limit_price, stop_price=trade.stop_price, status=trade.status,
                    filled_qty=trade.filled_qty, filled_avg_price=trade.price, broker_order_id=trade.order_id,
                    created_at=trade.created_at, strategy=trade.strategy,
                    reject_reason=trade.reject_reason if trade.status == "rejected" else None,
                    legs=[leg_out(trade, leg) for leg in legs or []])


def leg_out(parent: AgentTrade, leg: AgentOrderLeg) -> OrderOut:
    return OrderOut(order_id=leg.id, symbol=leg.symbol, side=leg.side, order_type=leg.order_type,
                    time_in_force=leg.time_in_force, qty=leg.quantity, notional=None, limit_price=leg.limit_price,
                    stop_price=leg.stop_price, status=leg.status, filled_qty=leg.filled_qty,
                    filled_avg_price=leg.price, broker_order_id=leg.order_id, created_at=leg.created_at,
                    strategy=parent.strategy, role=leg.role,
                    reject_reason=leg.reject_reason if leg.status == "rejected" else None)


async def get_orders(ctx: Context, status: Literal["open", "closed", "all"] = "open",
                     limit: Annotated[int, Field(ge=1, le=MAX_ORDERS)] = 50) -> OrdersResult:
    async def read(gate: Gate, connection: AsyncConnection, agent: Agent) -> OrdersRead:
        if not 1 <= limit <= MAX_ORDERS:
            raise deny(Code.INVALID_ARGUMENT, f"limit must be between 1 and {MAX_ORDERS}")
        return await gate.read_orders(connection, agent, status, limit)

    async def answer(gate: Gate, agent: Agent, found: OrdersRead) -> OrdersResult:
        trades, legs = await gate.orders_now(agent, found)
        return OrdersResult(orders=[order_out(t, legs.get(t.id)) for t in trades],
                            trading_mode=gate.settings.trading_mode)  # type: ignore[arg-type]

    return await read_through_gate(ctx, "get_orders", {"status": status, "limit": limit}, read, answer)


async def cancel_order(order_id: Annotated[str, Field(min_length=1, max_length=64)], ctx: Context) -> CancelResult:
    async def operation(gate: Gate, agent: Agent) -> CancelResult:
        trade = await gate.cancel(agent, order_id.strip())
        message = ("Canceled." if trade.status == "canceled"
                   else f"The order is {trade.status}; nothing left to cancel." if trade.status in
                   ("filled", "expired", "rejected") else f"Cancel requested; the order is {trade.status}.")
        return CancelResult(order_id=trade.id, status=trade.status,
                            trading_mode=gate.settings.trading_mode, message=message)  # type: ignore[arg-type]

    # A disabled (or halted) agent may still cancel its own orders: a cancel only reduces risk.
    return await through_gate(ctx, "cancel_order", {"order_id": order_id}, operation, allow_disabled=True)
