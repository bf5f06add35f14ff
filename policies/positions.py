"""An agent's positions marked to market, as its get_positions shows them and operators see them. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.base import Quote
    from ledger.models import AgentPosition

CENT = Decimal("0.01")
PRICE = Decimal("0.0001")


@dataclass(frozen=True)
class PositionLine:
    """One position as the agent's get_positions shows it."""

    symbol: str
    qty: Decimal
    avg_entry_price: Decimal
    market_value: Decimal | None
    unrealized_pl: Decimal | None
    realized_pl: Decimal


def position_lines(rows: list[AgentPosition], quotes: dict[str, Quote], cash: Decimal
                   ) -> tuple[list[PositionLine], Decimal]:
    """Positions marked at the quotes' mid, and the equity they make with `cash` (a position without a quote
    counts at its cost). Closed positions that never realized anything are left out."""
    lines: list[PositionLine] = []
    equity = cash
    for row in rows:
        if row.qty == 0 and row.realized_pl == 0:
            continue
        quote = quotes.get(row.symbol)
        value = (row.qty * quote.mid).quantize(CENT) if quote else None
        unrealized = ((quote.mid - row.avg_entry_price) * row.qty).quantize(CENT) if quote else None
        equity += value if value is not None else row.qty * row.avg_entry_price
        lines.append(PositionLine(symbol=row.symbol, qty=row.qty, avg_entry_price=row.avg_entry_price.quantize(PRICE),
                                  market_value=value, unrealized_pl=unrealized,
                                  realized_pl=row.realized_pl.quantize(CENT)))
    return lines, equity.quantize(CENT)
