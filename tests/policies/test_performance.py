"""Agent performance from fills and marks: P&L, trades, win rate, drawdown, exposure, per strategy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from policies.performance import Fill, agent_performance, max_drawdown

T0 = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
D = Decimal


def fill(minute: int, side: str, qty: str, price: str, symbol: str = "SPY", strategy: str | None = "momentum",
         agent: str = "a1") -> Fill:
    return Fill(agent_id=agent, strategy=strategy, symbol=symbol, side=side, qty=D(qty), price=D(price),
                at=T0 + timedelta(minutes=minute))


def test_a_round_trip_realizes_its_gain_and_counts_as_a_win() -> None:
    result = agent_performance("a1", D(1000), [fill(0, "buy", "10", "100"), fill(1, "sell", "10", "110")], {}, NOW)
    assert result.metrics.realized_pl == D(100)
    assert result.metrics.unrealized_pl == 0 and result.metrics.exposure == 0
    assert (result.metrics.trades, result.metrics.wins, result.metrics.losses) == (2, 1, 0)
    assert result.metrics.win_rate == 1


def test_an_open_position_is_marked_at_the_quote() -> None:
    result = agent_performance("a1", D(1000), [fill(0, "buy", "10", "100")], {"SPY": D("95")}, NOW)
    assert result.metrics.unrealized_pl == D(-50)
    assert result.metrics.exposure == D(950)
    assert result.metrics.open_positions == 1 and result.marked_at_last_fill == []


def test_without_a_quote_the_position_is_marked_at_its_last_fill_and_says_so() -> None:
    result = agent_performance("a1", D(1000), [fill(0, "buy", "10", "100")], {}, NOW)
    assert result.metrics.unrealized_pl == 0 and result.metrics.exposure == D(1000)
    assert result.marked_at_last_fill == ["SPY"]


def test_win_rate_counts_gains_against_losses_of_closing_fills() -> None:
    fills = [fill(0, "buy", "10", "100"), fill(1, "sell", "5", "90"), fill(2, "sell", "5", "120"),
             fill(3, "buy", "1", "50", symbol="X"), fill(4, "sell", "1", "40", symbol="X")]
    result = agent_performance("a1", D(1000), fills, {}, NOW)
    assert (result.metrics.wins, result.metrics.losses) == (1, 2)
    assert result.metrics.win_rate == D(1) / D(3)
    assert result.metrics.realized_pl == D(-50) + D(100) + D(-10)


def test_no_closing_fill_means_no_win_rate() -> None:
    assert agent_performance("a1", D(1000), [fill(0, "buy", "1", "1")], {}, NOW).metrics.win_rate is None


def test_max_drawdown_is_the_largest_fall_from_a_running_peak() -> None:
    amount, pct = max_drawdown([D(100), D(120), D(90), D(130), D(110)])
    assert amount == D(30) and pct == D(25)


def test_drawdown_follows_the_equity_curve_of_the_fills() -> None:
    fills = [fill(0, "buy", "10", "100"), fill(1, "buy", "10", "80"), fill(2, "sell", "20", "95")]
    result = agent_performance("a1", D(10000), fills, {}, NOW)
    # equity: 10000, 10000 (bought at 100), 9800 (marked at 80), 10100 (sold at 95 against avg 90)
    assert [p.equity for p in result.equity_curve] == [D(10000), D(10000), D(9800), D(10100), D(10100)]
    assert result.max_drawdown == D(200) and result.max_drawdown_pct == D(2)


def test_each_strategy_keeps_its_own_book() -> None:
    fills = [fill(0, "buy", "10", "100", strategy="momentum"), fill(1, "buy", "10", "90", strategy="revert"),
             fill(2, "sell", "10", "95", strategy="revert")]
    result = agent_performance("a1", D(10000), fills, {"SPY": D(100)}, NOW)
    assert result.by_strategy["revert"].realized_pl == D(50)
    assert result.by_strategy["revert"].exposure == 0
    assert result.by_strategy["momentum"].realized_pl == 0
    assert result.by_strategy["momentum"].exposure == D(1000)


def test_other_agents_fills_are_ignored() -> None:
    result = agent_performance("a1", D(1000), [fill(0, "buy", "1", "10", agent="a2")], {}, NOW)
    assert result.metrics.trades == 0 and result.equity_curve == [] and result.max_drawdown == 0
