"""Positions marked to market: the one computation the agent's get_positions and the operators' views share."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from broker.base import Quote
from ledger.models import AgentPosition
from policies.positions import position_lines

NOW = datetime(2026, 11, 30, 15, tzinfo=UTC)


def held(symbol: str, qty: str, avg: str, realized: str = "0") -> AgentPosition:
    return AgentPosition(agent_id="a", symbol=symbol, qty=Decimal(qty), avg_entry_price=Decimal(avg),
                         realized_pl=Decimal(realized), updated_at=NOW)


def quote(symbol: str, bid: str, ask: str) -> Quote:
    return Quote(symbol=symbol, bid=Decimal(bid), ask=Decimal(ask), last=Decimal(bid), as_of=NOW)


def test_a_position_is_marked_at_the_mid_and_adds_to_equity() -> None:
    lines, equity = position_lines([held("AAPL", "10", "100")], {"AAPL": quote("AAPL", "109", "111")},
                                   Decimal("1000"))
    assert (lines[0].market_value, lines[0].unrealized_pl) == (Decimal("1100.00"), Decimal("100.00"))
    assert equity == Decimal("2100.00")


def test_a_position_without_a_quote_counts_at_cost_and_shows_no_market_value() -> None:
    lines, equity = position_lines([held("MSFT", "2", "300")], {}, Decimal("0"))
    assert (lines[0].market_value, lines[0].unrealized_pl, equity) == (None, None, Decimal("600.00"))


def test_a_closed_position_shows_only_when_it_realized_something() -> None:
    lines, _ = position_lines([held("SPY", "0", "0"), held("QQQ", "0", "0", realized="-12.5")], {}, Decimal("0"))
    assert [(line.symbol, line.realized_pl) for line in lines] == [("QQQ", Decimal("-12.50"))]
