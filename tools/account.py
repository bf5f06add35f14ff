"""get_positions and get_trading_status: what the agent holds, and what it may still do."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import TYPE_CHECKING

from mcp.server.mcpserver import Context

from policies.orders import decimal_text
from policies.positions import position_lines
from policies.results import MarketOut, PositionOut, PositionsResult, TradingStatusResult, plain
from tools.common import read_through_gate

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from policies.checks import TradingStatus, Usage
    from policies.gate import Agent, BookRead, Gate

POSITIONS_DESCRIPTION = "This agent's positions with P&L, and its cash and equity."
STATUS_DESCRIPTION = ("Mode, halt state, this agent's limits and today's usage, and the market clock per asset "
                      "class (open, next_open, next_close).")
CENT = Decimal("0.01")


def money(value: Decimal) -> str:
    """Cents, plain: "1500.00", "0.00" (never "0E-11" nor "499.99996401606")."""
    return plain(value.quantize(CENT))


async def get_positions(ctx: Context) -> PositionsResult:
    async def read(gate: Gate, connection: AsyncConnection, agent: Agent) -> BookRead:
        return await gate.read_book(connection, agent)

    async def answer(gate: Gate, agent: Agent, book: BookRead) -> PositionsResult:
        # The book's quotes and the broker account are asked for together: one round trip to Alpaca, not two.
        (rows, quotes, cash), account = await asyncio.gather(gate.book_now(agent, book), gate.account())
        lines, equity = position_lines(rows, quotes, cash)
        positions = [PositionOut(symbol=line.symbol, qty=line.qty, avg_entry_price=line.avg_entry_price,
                                 market_value=line.market_value, unrealized_pl=line.unrealized_pl,
                                 realized_pl=line.realized_pl) for line in lines]
        return PositionsResult(positions=positions, cash=cash.quantize(CENT), equity=equity,
                               capital=agent.limits.capital,
                               account_cash=account.cash if account else None,
                               account_equity=account.equity if account else None,
                               account_buying_power=account.buying_power if account else None,
                               trading_mode=gate.settings.trading_mode)  # type: ignore[arg-type]

    return await read_through_gate(ctx, "get_positions", {}, read, answer)


async def get_trading_status(ctx: Context) -> TradingStatusResult:
    async def read(gate: Gate, connection: AsyncConnection, agent: Agent) -> tuple[TradingStatus, Usage]:
        return await gate.read_usage(connection, agent)

    async def answer(gate: Gate, agent: Agent, found: tuple[TradingStatus, Usage]) -> TradingStatusResult:
        status, usage = found
        clocks = await gate.market_clock()
        limits = agent.limits
        halted = status.global_state == "halted" or status.agent_state == "halted"
        state = "halted" if halted else ("reducing" if "reducing" in (status.global_state, status.agent_state)
                                         else "active")
        reason = status.global_reason if status.global_state != "active" else status.agent_reason
        return TradingStatusResult(
            agent_id=agent.id, trading_mode=gate.settings.trading_mode,  # type: ignore[arg-type]
            trading_enabled=status.enabled, halted=halted, state=state, reason=reason,  # type: ignore[arg-type]
            approval_mode=agent.approval.mode, auto_approve_max_notional=agent.approval.auto_approve_max_notional,
            limits={"max_trade_size": money(limits.max_trade_size),
                    "max_position_size": money(limits.max_position_size),
                    "max_daily_trades": limits.max_daily_trades,
                    "allowed_symbols": sorted(limits.allowed_symbols),
                    "allowed_strategies": sorted(limits.allowed_strategies),
                    "max_order_qty": plain(limits.max_order_qty.normalize()),
                    "max_orders_per_window": limits.max_orders_per_window,
                    "order_rate_window_seconds": limits.order_rate_window_seconds,
                    "rolling_notional_max": money(limits.rolling_notional_max),
                    "daily_loss_limit": money(limits.daily_loss_limit), "allow_short": limits.allow_short,
                    "require_stop_loss": limits.require_stop_loss, **_sizing(agent, usage)},
            used_today={"trades": usage.trades_today, "orders_in_rate_window": usage.orders_in_rate_window,
                        "rolling_notional": money(usage.notional_in_rolling_window),
                        "open_buy_notional": money(usage.open_buy_notional), "daily_pnl": money(usage.daily_pnl)},
            broker=gate.broker.name,
            market={asset_class: MarketOut(open=clock.is_open, next_open=clock.next_open,
                                           next_close=clock.next_close) for asset_class, clock in clocks.items()},
            market_hours_enforced=gate.settings.enforce_market_hours)

    return await read_through_gate(ctx, "get_trading_status", {}, read, answer)


def _sizing(agent: Agent, usage: Usage) -> dict[str, str]:
    """The money at risk a trade may carry, and the largest buy the agent's limits allow now (any symbol)."""
    from policies.sizing import buy_room_usd

    found: dict[str, str] = {}
    if agent.limits.max_risk_per_trade is not None:
        found["max_risk_per_trade"] = agent.limits.max_risk_per_trade.text()
        found["max_risk_per_trade_usd"] = decimal_text(agent.limits.max_risk_usd()) or "0"
    room = buy_room_usd(agent.limits, usage)
    binding = min(room, key=lambda name: room[name])
    found["largest_order_usd"] = f"{decimal_text(room[binding].quantize(Decimal('0.01')))} ({binding})"
    return found
