"""`tradewarden positions`, `orders`, `orders cancel`, `performance`: what agents hold and did, the numbers
their own get_positions / get_orders show, through the operator layer (policies/operator.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import click

from server.cli_common import (
    CENT,
    config_option,
    json_option,
    money,
    operate,
    pct,
    plain,
    print_json,
    say,
    short,
    table,
    when,
)


@click.command()
@click.option("--agent", "agent_id", default=None, metavar="ID", help="Only this agent (default: every agent).")
@json_option
@config_option
@click.pass_context
def positions(ctx: click.Context, agent_id: str | None, as_json: bool) -> None:
    """Each agent's positions with P&L (marked at the broker's quotes), cash and equity.

    \b
    Example: tradewarden positions --agent momentum-1
    Example: tradewarden positions --json
    """
    books = operate(ctx, lambda op: op.positions(agent_id), broker=True)
    if as_json:
        print_json({"agents": books})
        return
    rows = []
    for book in books:
        for p in book.positions:
            rows.append((book.agent_id, p.symbol, plain(p.qty), money(p.avg_entry_price), money(p.market_value),
                         money(p.unrealized_pl), money(p.realized_pl)))
    table(["AGENT", "SYMBOL", "QTY", "AVG ENTRY", "MARKET VALUE", "UNREALIZED", "REALIZED"], rows,
          empty="no positions")
    for book in books:
        say(f"{book.agent_id}: cash {money(book.cash)}, equity {money(book.equity)} (capital {money(book.capital)})")


@click.group(invoke_without_command=True)
@click.option("--agent", "agent_id", default=None, metavar="ID", help="Only this agent (default: every agent).")
@click.option("--status", type=click.Choice(["open", "closed", "all"]), default="open", show_default=True,
              help="Which orders: open (not yet final), closed (filled, canceled, expired, rejected) or all.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="At most this many.")
@json_option
@config_option
@click.pass_context
def orders(ctx: click.Context, agent_id: str | None, status: str, limit: int, as_json: bool) -> None:
    """Orders (newest first) with their broker status; `orders cancel ORDER_ID` cancels one.

    \b
    Ids are shown shortened; any unique prefix of 8 or more characters is accepted.
    Example: tradewarden orders --status all --agent momentum-1
    Example: tradewarden orders cancel 3f2a9c1e-77b0
    """
    if ctx.invoked_subcommand is not None:
        return
    found = operate(ctx, lambda op: op.orders(agent_id, status, limit), broker=True)
    if as_json:
        print_json({"orders": [_order_json(t) for t in found]})
        return
    table(["ORDER", "AGENT", "SYMBOL", "SIDE", "TYPE", "QTY/NOTIONAL", "LIMIT", "STATUS", "FILLED", "AVG PRICE",
           "CREATED"],
          [(short(t.id), t.agent_id, t.symbol, t.side, t.order_type,
            plain(t.quantity) if t.quantity is not None else f"${money(t.notional)}", money(t.limit_price),
            t.status, plain(t.filled_qty), money(t.price), when(t.created_at)) for t in found],
          empty=f"no {status if status != 'all' else ''} orders".replace("  ", " "))


def _order_json(trade: Any) -> dict[str, Any]:
    """The keys of the agent's get_orders, plus the agent."""
    return {"order_id": trade.id, "agent_id": trade.agent_id, "symbol": trade.symbol, "side": trade.side,
            "order_type": trade.order_type, "time_in_force": trade.time_in_force, "qty": trade.quantity,
            "notional": trade.notional, "limit_price": trade.limit_price, "stop_price": trade.stop_price,
            "status": trade.status, "filled_qty": trade.filled_qty, "filled_avg_price": trade.price,
            "broker_order_id": trade.order_id, "strategy": trade.strategy, "created_at": trade.created_at}


@orders.command("cancel")
@click.argument("order_id")
@config_option
@click.pass_context
def orders_cancel(ctx: click.Context, order_id: str) -> None:
    """Cancel one open order of any agent (allowed while halted: a cancel reduces risk). Audited as
    operator:cli.

    \b
    ORDER_ID: the order's id, a unique prefix of 8+ characters, or the broker's order id.
    Example: tradewarden orders cancel 3f2a9c1e
    """
    trade = operate(ctx, lambda op: op.cancel_order(order_id), broker=True)
    if trade.status == "canceled":
        click.echo(f"order {trade.id} canceled")
    else:
        click.echo(f"order {trade.id} is {trade.status}; nothing left to cancel"
                   if trade.status in ("filled", "expired", "rejected")
                   else f"cancel requested; order {trade.id} is {trade.status}")


@click.command()
@click.option("--agent", "agent_id", default=None, metavar="ID", help="Only this agent (default: every agent).")
@json_option
@config_option
@click.pass_context
def performance(ctx: click.Context, agent_id: str | None, as_json: bool) -> None:
    """Per agent and strategy: realized and unrealized P&L, trades, win rate, max drawdown, exposure.

    \b
    Win rate: closing fills that realised a gain, of those that realised a gain or a loss. Drawdown: the
    largest fall from a peak of capital + P&L after each fill.
    Example: tradewarden performance --agent momentum-1
    """
    reports = operate(ctx, lambda op: op.performance(agent_id), broker=True)
    if as_json:
        print_json({"agents": [_performance_json(r) for r in reports]})
        return
    rows = []
    for r in reports:
        drawdown = f"{money(r.max_drawdown)} ({pct(r.max_drawdown_pct)})"
        rows.append((*_metric_row(r.agent_id, "(all)", r.metrics), drawdown))
        for strategy, metrics in r.by_strategy.items():
            rows.append((*_metric_row("", strategy or "(none)", metrics), ""))
    table(["AGENT", "STRATEGY", "REALIZED", "UNREALIZED", "TOTAL", "TRADES", "WIN RATE", "EXPOSURE", "MAX DRAWDOWN"],
          rows, empty="no agents")
    for r in reports:
        if r.marked_at_last_fill:
            say(f"{r.agent_id}: no current quote for {', '.join(r.marked_at_last_fill)}; marked at the last fill")


def _metric_row(agent: str, strategy: str, m: Any) -> tuple[str, ...]:
    return (agent, strategy, money(m.realized_pl), money(m.unrealized_pl), money(m.total_pl), str(m.trades),
            pct(m.win_rate * 100) if m.win_rate is not None else "-", money(m.exposure))


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT)


def _metrics_json(m: Any) -> dict[str, Any]:
    """Money to the cent, the win rate as a fraction to 4 places (no 28-digit thirds)."""
    return {"realized_pl": _cents(m.realized_pl), "unrealized_pl": _cents(m.unrealized_pl),
            "total_pl": _cents(m.total_pl), "trades": m.trades, "wins": m.wins, "losses": m.losses,
            "win_rate": m.win_rate.quantize(Decimal("0.0001")) if m.win_rate is not None else None,
            "exposure": _cents(m.exposure), "open_positions": m.open_positions}


def _performance_json(r: Any) -> dict[str, Any]:
    return {"agent_id": r.agent_id, "capital": r.capital, **_metrics_json(r.metrics),
            "max_drawdown": _cents(r.max_drawdown), "max_drawdown_pct": r.max_drawdown_pct.quantize(CENT),
            "equity_curve": [{"at": p.at, "equity": _cents(p.equity)} for p in r.equity_curve],
            "by_strategy": {name or "": _metrics_json(m) for name, m in r.by_strategy.items()},
            "marked_at_last_fill": r.marked_at_last_fill}
