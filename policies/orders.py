"""The canonical order: what an agent asks for, in one exact, hashable form."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["day", "gtc", "ioc", "fok"]


def normalize_symbol(symbol: str) -> str:
    return symbol.strip().upper()


def is_crypto_symbol(symbol: str) -> bool:
    return "/" in symbol


def decimal_text(value: Decimal | None) -> str | None:
    """Decimals without exponent or trailing zeros, so equal amounts hash equally."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


class OrderRequest(BaseModel):
    """An order exactly as it would be sent to a broker (before any client_order_id)."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    side: Side
    qty: Decimal | None = None
    notional: Decimal | None = None
    order_type: OrderType = "market"
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce = "day"
    extended_hours: bool = False

    @property
    def is_crypto(self) -> bool:
        return is_crypto_symbol(self.symbol)

    def canonical_json(self) -> str:
        fields = {
            "symbol": self.symbol,
            "side": self.side,
            "qty": decimal_text(self.qty),
            "notional": decimal_text(self.notional),
            "order_type": self.order_type,
            "limit_price": decimal_text(self.limit_price),
            "stop_price": decimal_text(self.stop_price),
            "time_in_force": self.time_in_force,
            "extended_hours": self.extended_hours,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    def order_hash(self) -> str:
        """Binds an approval to this exact order: any change gives another hash."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def describe(self) -> str:
        amount = f"{decimal_text(self.qty)} shares" if self.qty is not None else f"${decimal_text(self.notional)}"
        if self.is_crypto and self.qty is not None:
            amount = f"{decimal_text(self.qty)} units"
        prices = ""
        if self.limit_price is not None:
            prices += f" limit {decimal_text(self.limit_price)}"
        if self.stop_price is not None:
            prices += f" stop {decimal_text(self.stop_price)}"
        return f"{self.side.upper()} {amount} of {self.symbol} {self.order_type}{prices} {self.time_in_force}"
