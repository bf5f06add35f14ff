"""What the gate answers: the structured results of the MCP tools (their output schemas).

Field names follow SPEC.md. Money and quantities are decimals, serialised as strings.

No `from __future__ import annotations`: pydantic evaluates string annotations again for every field of every
model; written as Python evaluates them, the models build with less CPU before a server's first answer.
"""

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema

from policies.violations import Violation


def plain(value: Decimal) -> str:
    """Positional notation, never an exponent; a zero is "0" (not "0E-11" nor "0.00000000000"); amounts
    quantized to cents keep their cents."""
    if value == 0:
        return "0"
    return format(value, "f")


def price_text(value: Decimal) -> Decimal:
    """A price rounded as markets quote it: cents (up to 4 places if they are there) from $1 up, six
    significant digits below $1 — no float noise like 499.99996401606."""
    if not value.is_finite() or value == 0:
        return value
    if abs(value) >= 1:
        four = value.quantize(Decimal("0.0001"), ROUND_HALF_EVEN)
        cents = four.quantize(Decimal("0.01"), ROUND_HALF_EVEN)
        return cents if cents == four else four
    exponent = value.adjusted() - 5
    return value.quantize(Decimal(1).scaleb(exponent), ROUND_HALF_EVEN)


Dec = Annotated[Decimal, PlainSerializer(plain, return_type=str, when_used="json"),
               WithJsonSchema({"type": "string"})]
TradingMode = Literal["paper", "live"]


class Result(BaseModel):
    # defer_build: a model is built when a call first answers with it, not by every start for every tool.
    model_config = ConfigDict(frozen=True, defer_build=True)


class BarOut(Result):
    t: datetime
    o: Dec
    h: Dec
    l: Dec  # noqa: E741 - the usual OHLC name
    c: Dec
    v: Dec


class SymbolData(Result):
    symbol: str
    last_price: Dec | None = None
    bid: Dec | None = None
    ask: Dec | None = None
    as_of: datetime | None = None
    bars: list[BarOut] = []
    indicators: dict[str, Dec | None] = {}
    notes: dict[str, str] = {}  # why an indicator is null, e.g. "needs 26 bars, limit is 20"
    error: str | None = None


class MarketDataResult(Result):
    data: list[SymbolData]

    def audit_summary(self) -> dict[str, object]:
        """What the audit log keeps of it: which symbols, how many bars, which indicators (not the data: a
        read must not write hundreds of kilobytes of audit)."""
        return {"symbols": [d.symbol for d in self.data], "bars": sum(len(d.bars) for d in self.data),
                "indicators": sorted({name for d in self.data for name in d.indicators}),
                "errors": [d.error for d in self.data if d.error][:5]}


class ProposeResult(Result):
    proposal_id: str
    status: Literal["approved", "pending_approval", "rejected"]
    violations: list[Violation]
    estimated_notional: Dec | None
    reference_price: Dec | None
    expires_at: datetime
    trading_mode: TradingMode
    message: str


class ExecuteResult(Result):
    proposal_id: str
    status: Literal["submitted", "filled", "partially_filled", "awaiting_approval", "rejected", "declined",
                    "expired", "canceled"]
    order_id: str | None = None
    filled_qty: Dec | None = None
    filled_avg_price: Dec | None = None
    violations: list[Violation] = []
    trading_mode: TradingMode
    message: str


class PositionOut(Result):
    symbol: str
    qty: Dec
    avg_entry_price: Dec
    market_value: Dec | None
    unrealized_pl: Dec | None
    realized_pl: Dec


class PositionsResult(Result):
    positions: list[PositionOut]
    cash: Dec
    equity: Dec
    capital: Dec
    account_cash: Dec | None = None
    account_equity: Dec | None = None
    account_buying_power: Dec | None = None
    trading_mode: TradingMode


class OrderOut(Result):
    order_id: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    qty: Dec | None
    notional: Dec | None
    limit_price: Dec | None
    stop_price: Dec | None
    status: str
    filled_qty: Dec
    filled_avg_price: Dec | None
    broker_order_id: str | None
    created_at: datetime
    strategy: str | None
    reject_reason: str | None = None  # why the broker (or reconciliation) rejected it
    role: str | None = None  # an exit: stop_loss | take_profit | trailing_stop (a trailing stop's stop moves)
    legs: list["OrderOut"] = []  # an entry's exits (a bracket): one cancels the other


class OrdersResult(Result):
    orders: list[OrderOut]
    trading_mode: TradingMode


class CancelResult(Result):
    order_id: str
    status: str
    violations: list[Violation] = []
    trading_mode: TradingMode
    message: str


class MarketOut(Result):
    open: bool
    next_open: datetime | None = None  # None for a market that never closes (crypto)
    next_close: datetime | None = None


class TradingStatusResult(Result):
    agent_id: str
    trading_mode: TradingMode
    trading_enabled: bool
    halted: bool
    state: Literal["active", "reducing", "halted"]
    reason: str | None
    approval_mode: str
    auto_approve_max_notional: Dec
    limits: dict[str, str | int | bool | list[str]]
    used_today: dict[str, str | int]
    broker: str
    market: dict[str, MarketOut] = {}  # per asset class: "us_equity", "crypto"
    market_hours_enforced: bool = True
