"""The Broker protocol: everything the gate needs from a broker, and nothing more.

Brokers never decide whether an order may be sent: the gate does. A broker only executes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol, runtime_checkable

from policies.orders import OrderRequest

Timeframe = Literal["1Min", "5Min", "15Min", "1Hour", "1Day"]
TIMEFRAMES: tuple[Timeframe, ...] = ("1Min", "5Min", "15Min", "1Hour", "1Day")

# Broker-side order statuses, normalised (Alpaca's names; others map onto them).
OrderStatus = Literal[
    "new", "accepted", "pending_new", "partially_filled", "filled", "canceled", "expired", "rejected",
    "pending_cancel", "replaced", "done_for_day", "stopped", "suspended", "calculated", "held",
]
OPEN_STATUSES = frozenset({"new", "accepted", "pending_new", "partially_filled", "pending_cancel", "held",
                           "calculated", "suspended", "done_for_day", "stopped"})
FINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})


@dataclass(frozen=True)
class Quote:
    """The latest quote of a symbol: bid, ask and last trade."""

    symbol: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    as_of: datetime  # timezone-aware UTC

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


@dataclass(frozen=True)
class Bar:
    """One OHLCV bar; `start` is when its interval began."""

    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    vwap: Decimal | None = None


@dataclass(frozen=True)
class Asset:
    """What the broker says about a symbol: its class and whether it can be traded, in fractions, short."""

    symbol: str
    asset_class: Literal["us_equity", "crypto"]
    tradable: bool
    fractionable: bool
    shortable: bool
    name: str = ""


@dataclass(frozen=True)
class Account:
    """The broker account's cash, equity and buying power."""

    cash: Decimal
    equity: Decimal
    buying_power: Decimal
    currency: str = "USD"
    trading_blocked: bool = False


@dataclass(frozen=True)
class BrokerPosition:
    """A position the broker holds for the account."""

    symbol: str
    qty: Decimal
    avg_entry_price: Decimal
    market_value: Decimal | None = None


@dataclass(frozen=True)
class BrokerOrder:
    """A broker's view of one order. client_order_id is always our proposal id."""

    broker_order_id: str
    client_order_id: str
    symbol: str
    side: Literal["buy", "sell"]
    order_type: str
    status: str
    qty: Decimal | None
    notional: Decimal | None
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str = "day"
    submitted_at: datetime | None = None
    updated_at: datetime | None = None
    reject_reason: str | None = None
    # Brackets: the entry's class ("simple", "bracket", "oto", "oco") and its exits; a leg's role
    # ("stop_loss", "take_profit", "trailing_stop") and, for a trailing stop, its trail and high-water mark.
    order_class: str = "simple"
    legs: tuple[BrokerOrder, ...] = ()
    leg_role: str | None = None
    trail_percent: Decimal | None = None
    trail_price: Decimal | None = None
    hwm: Decimal | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class MarketClock:
    """Whether the market is open now, and its next open and close."""

    is_open: bool
    next_open: datetime | None = None
    next_close: datetime | None = None


class BrokerError(Exception):
    """A broker refused or failed. `code` is a SPEC violation code; `message` is safe to show (no secrets)."""

    def __init__(self, message: str, *, code: str = "BROKER_ERROR", status: int | None = None,
                 retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.retryable = retryable


class BrokerTimeout(BrokerError):
    """The broker did not answer in time: the outcome of a submission is unknown until looked up."""

    def __init__(self, message: str = "broker did not answer in time"):
        super().__init__(message, code="BROKER_ERROR", retryable=True)


@dataclass(frozen=True)
class SubmitOrder:
    """What the gate hands a broker: the checked order plus our idempotency key."""

    client_order_id: str  # == proposal id: the broker rejects a second order with the same id
    order: OrderRequest
    agent_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Broker(Protocol):
    """Implemented by broker.simulated.SimulatedBroker and broker.alpaca.AlpacaBroker."""

    name: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    # Market data
    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        """Latest quote per symbol; a symbol with no data is simply absent."""
        ...

    async def get_bars(self, symbol: str, timeframe: Timeframe, limit: int) -> list[Bar]:
        """The latest `limit` bars, oldest first."""
        ...

    async def get_asset(self, symbol: str) -> Asset | None:
        """None when the broker does not know the symbol."""
        ...

    async def get_clock(self) -> MarketClock: ...

    # Trading
    async def submit_order(self, request: SubmitOrder) -> BrokerOrder:
        """Submit once. A duplicate client_order_id must never create a second order."""
        ...

    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None: ...

    async def list_orders(self, status: Literal["open", "closed", "all"] = "all", limit: int = 500,
                          after: datetime | None = None) -> list[BrokerOrder]: ...

    async def cancel_order(self, broker_order_id: str) -> BrokerOrder: ...

    async def get_account(self) -> Account: ...

    async def get_positions(self) -> list[BrokerPosition]: ...
