"""Agent performance (the seed's "agent performance metrics"), computed from fills and marks. Pure.

Fills are replayed in order with the ledger's own average-cost accounting (`ledger.accounting.apply_fill`),
per agent (its book, as `agent_positions` keeps it) and per (agent, strategy) (a strategy's own book):
- realized P&L: what closing fills realised; unrealized: open quantity × (mark − average entry);
- trades: filled orders; wins / losses: closing fills that realised a gain / a loss; win rate = wins ÷ both;
- equity curve: capital + realized + unrealized after each fill (marked at the latest fill price of each
  symbol), then now (marked at the current quotes); max drawdown: the largest fall from a peak of that curve;
- exposure: gross market value of the open positions (|qty| × mark).
A position whose symbol has no current quote is marked at its latest fill price (`marked_at_last_fill`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from ledger.accounting import Book, apply_fill

ZERO = Decimal(0)
EMPTY = Book(ZERO, ZERO, ZERO)


@dataclass(frozen=True)
class Fill:
    """An order's filled part: `qty` at the average price `price`."""

    agent_id: str
    strategy: str | None
    symbol: str
    side: str  # buy | sell
    qty: Decimal
    price: Decimal
    at: datetime


@dataclass(frozen=True)
class Metrics:
    realized_pl: Decimal
    unrealized_pl: Decimal
    trades: int
    wins: int
    losses: int
    exposure: Decimal
    open_positions: int

    @property
    def win_rate(self) -> Decimal | None:
        decided = self.wins + self.losses
        return Decimal(self.wins) / decided if decided else None

    @property
    def total_pl(self) -> Decimal:
        return self.realized_pl + self.unrealized_pl


@dataclass(frozen=True)
class EquityPoint:
    at: datetime
    equity: Decimal


@dataclass(frozen=True)
class AgentPerformance:
    agent_id: str
    capital: Decimal
    metrics: Metrics
    max_drawdown: Decimal  # money, >= 0
    max_drawdown_pct: Decimal  # of the peak, 0..100
    equity_curve: list[EquityPoint]
    by_strategy: dict[str, Metrics]  # "" for orders without a strategy
    marked_at_last_fill: list[str] = field(default_factory=list)


class _Ledger:
    """Books per symbol with their win/loss count, replayed fill by fill."""

    def __init__(self) -> None:
        self.books: dict[str, Book] = {}
        self.trades = 0
        self.wins = 0
        self.losses = 0

    def apply(self, fill: Fill) -> None:
        before = self.books.get(fill.symbol, EMPTY)
        after = apply_fill(before, fill.side, fill.qty, fill.price)
        self.books[fill.symbol] = after
        self.trades += 1
        gained = after.realized_pl - before.realized_pl
        if gained > 0:
            self.wins += 1
        elif gained < 0:
            self.losses += 1

    def realized(self) -> Decimal:
        return sum((book.realized_pl for book in self.books.values()), ZERO)

    def unrealized(self, marks: Mapping[str, Decimal]) -> Decimal:
        return sum(((marks[symbol] - book.avg_entry_price) * book.qty
                    for symbol, book in self.books.items() if book.qty != 0), ZERO)

    def metrics(self, marks: Mapping[str, Decimal]) -> Metrics:
        open_books = {symbol: book for symbol, book in self.books.items() if book.qty != 0}
        return Metrics(realized_pl=self.realized(), unrealized_pl=self.unrealized(marks), trades=self.trades,
                       wins=self.wins, losses=self.losses,
                       exposure=sum((abs(book.qty) * marks[symbol] for symbol, book in open_books.items()), ZERO),
                       open_positions=len(open_books))


def max_drawdown(curve: Iterable[Decimal]) -> tuple[Decimal, Decimal]:
    """The largest fall from a running peak: (amount, percent of that peak)."""
    peak: Decimal | None = None
    worst, worst_pct = ZERO, ZERO
    for equity in curve:
        if peak is None or equity > peak:
            peak = equity
            continue
        fall = peak - equity
        if fall > worst:
            worst = fall
            worst_pct = fall / peak * 100 if peak > 0 else ZERO
    return worst, worst_pct


def agent_performance(agent_id: str, capital: Decimal, fills: Iterable[Fill], quotes: Mapping[str, Decimal],
                      now: datetime) -> AgentPerformance:
    """One agent's performance from its fills (any order; replayed by time) and the current marks."""
    ordered = sorted((f for f in fills if f.agent_id == agent_id and f.qty > 0), key=lambda f: f.at)
    whole = _Ledger()
    strategies: dict[str, _Ledger] = {}
    last_price: dict[str, Decimal] = {}
    curve = [EquityPoint(ordered[0].at, capital)] if ordered else []
    for fill in ordered:
        whole.apply(fill)
        strategies.setdefault(fill.strategy or "", _Ledger()).apply(fill)
        last_price[fill.symbol] = fill.price
        curve.append(EquityPoint(fill.at, capital + whole.realized() + whole.unrealized(last_price)))
    marks = {**last_price, **{s: p for s, p in quotes.items() if s in last_price}}
    held = [symbol for symbol, book in whole.books.items() if book.qty != 0]
    stale = sorted(symbol for symbol in held if symbol not in quotes)
    if ordered:
        curve.append(EquityPoint(now, capital + whole.realized() + whole.unrealized(marks)))
    drawdown, drawdown_pct = max_drawdown(point.equity for point in curve)
    return AgentPerformance(agent_id=agent_id, capital=capital, metrics=whole.metrics(marks),
                            max_drawdown=drawdown, max_drawdown_pct=drawdown_pct, equity_curve=curve,
                            by_strategy={name: ledger.metrics(marks) for name, ledger in sorted(strategies.items())},
                            marked_at_last_fill=stale)
