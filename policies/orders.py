"""The canonical order: what an agent asks for, in one exact, hashable form."""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from typing import Any, Literal

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


class StopLoss(BaseModel):
    """A protective stop: a stop order, or a stop-limit when limit_price is given."""

    model_config = ConfigDict(frozen=True)

    stop_price: Decimal
    limit_price: Decimal | None = None


class TakeProfit(BaseModel):
    model_config = ConfigDict(frozen=True)

    limit_price: Decimal


class TrailingStop(BaseModel):
    """A stop that follows the best price since the entry filled (its high-water mark for a long), by a
    percentage or a price offset: exactly one of the two."""

    model_config = ConfigDict(frozen=True)

    percent: Decimal | None = None
    price: Decimal | None = None


_PRICE = r"\d{1,12}(\.\d{1,9})?"
# The tools' argument patterns: short (every client pays for tools/list); the parsers below are exact.
STOP_LOSS_PATTERN = r"^[0-9.]+(/[0-9.]+)?$"
PRICE_PATTERN = r"^[0-9.]+$"
TRAILING_PATTERN = r"^[0-9.]+%?$"


class ExitsError(ValueError):
    """An exit argument that cannot be read."""


def _price_text(name: str, text: str) -> Decimal:
    if not re.fullmatch(_PRICE, text.strip()):
        raise ExitsError(f"{name} must be a positive price like 95.50, not {text!r}")
    value = Decimal(text.strip())
    if value <= 0:
        raise ExitsError(f"{name} must be positive, not {text!r}")
    return value


def parse_stop_loss(text: str) -> StopLoss:
    """'95.50' (a stop) or '95.50/95.00' (a stop-limit: stop, then limit)."""
    stop, _, limit = text.strip().partition("/")
    return StopLoss(stop_price=_price_text("stop_loss", stop),
                    limit_price=_price_text("stop_loss limit", limit) if limit else None)


def parse_take_profit(text: str) -> TakeProfit:
    return TakeProfit(limit_price=_price_text("take_profit", text))


def parse_trailing_stop(text: str) -> TrailingStop:
    """'2%' (percent of the high-water mark) or '1.50' (a price offset)."""
    text = text.strip()
    if text.endswith("%"):
        percent = _price_text("trailing_stop percent", text[:-1])
        if percent >= 100:
            raise ExitsError(f"trailing_stop percent must be below 100, not {text!r}")
        return TrailingStop(percent=percent)
    return TrailingStop(price=_price_text("trailing_stop", text))


# What json.dumps(fields, sort_keys=True, separators=(",", ":")) builds on every call, built once: the same text.
_ORDER_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


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
    # Exits: reduce-only orders on the other side, working once the entry fills (one cancels the other).
    stop_loss: StopLoss | None = None
    take_profit: TakeProfit | None = None
    trailing_stop: TrailingStop | None = None

    @property
    def is_crypto(self) -> bool:
        return is_crypto_symbol(self.symbol)

    @property
    def has_exits(self) -> bool:
        return self.stop_loss is not None or self.take_profit is not None or self.trailing_stop is not None

    @property
    def has_protective_stop(self) -> bool:
        return self.stop_loss is not None or self.trailing_stop is not None

    @property
    def exit_side(self) -> Side:
        return "sell" if self.side == "buy" else "buy"

    @property
    def order_class(self) -> str:
        """Alpaca's names: bracket (entry + take-profit + stop), oto (entry + one exit), simple."""
        if not self.has_exits:
            return "simple"
        return "bracket" if self.take_profit is not None and self.has_protective_stop else "oto"

    def exits_json(self) -> dict[str, dict[str, str | None]] | None:
        """The exits as stored with a proposal (decimals as exact text); None without exits."""
        if not self.has_exits:
            return None
        found: dict[str, dict[str, str | None]] = {}
        if self.stop_loss is not None:
            found["stop_loss"] = {"stop_price": decimal_text(self.stop_loss.stop_price),
                                  "limit_price": decimal_text(self.stop_loss.limit_price)}
        if self.take_profit is not None:
            found["take_profit"] = {"limit_price": decimal_text(self.take_profit.limit_price)}
        if self.trailing_stop is not None:
            found["trailing_stop"] = {"percent": decimal_text(self.trailing_stop.percent),
                                      "price": decimal_text(self.trailing_stop.price)}
        return found

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
        if self.has_exits:  # only then: the hash of an order without exits stays what it always was
            fields["exits"] = self.exits_json()  # type: ignore[assignment]
        return _ORDER_JSON.encode(fields)

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
        text = f"{self.side.upper()} {amount} of {self.symbol} {self.order_type}{prices} {self.time_in_force}"
        return text + self.describe_exits()

    def describe_exits(self) -> str:
        parts = []
        if self.stop_loss is not None:
            limit = self.stop_loss.limit_price
            parts.append(f"stop-loss {decimal_text(self.stop_loss.stop_price)}"
                         + (f" limit {decimal_text(limit)}" if limit is not None else ""))
        if self.trailing_stop is not None:
            t = self.trailing_stop
            parts.append(f"trailing stop {decimal_text(t.percent)}%" if t.percent is not None
                         else f"trailing stop {decimal_text(t.price)}")
        if self.take_profit is not None:
            parts.append(f"take-profit {decimal_text(self.take_profit.limit_price)}")
        return f" with {', '.join(parts)}" if parts else ""


def exits_from_json(stored: dict[str, Any] | None) -> dict[str, Any]:
    """OrderRequest keyword arguments for exits stored by OrderRequest.exits_json."""
    if not stored:
        return {}
    found: dict[str, Any] = {}
    if (sl := stored.get("stop_loss")) is not None:
        found["stop_loss"] = StopLoss(stop_price=Decimal(sl["stop_price"]),
                                      limit_price=Decimal(sl["limit_price"]) if sl.get("limit_price") else None)
    if (tp := stored.get("take_profit")) is not None:
        found["take_profit"] = TakeProfit(limit_price=Decimal(tp["limit_price"]))
    if (ts := stored.get("trailing_stop")) is not None:
        found["trailing_stop"] = TrailingStop(percent=Decimal(ts["percent"]) if ts.get("percent") else None,
                                              price=Decimal(ts["price"]) if ts.get("price") else None)
    return found


def exit_edit_problem(original: OrderRequest, edited: OrderRequest) -> str | None:
    """Why an approver's edit of an order's exits is refused (None: allowed). A person may tighten the
    protective stop (move it toward the entry, add one, narrow a trail) but never loosen or remove it, and
    leaves the take-profit as the agent proposed it."""
    if edited.take_profit != original.take_profit:
        return "the take-profit cannot be changed by an approver"
    before, after = original.stop_loss, edited.stop_loss
    long = original.side == "buy"
    if original.trailing_stop is not None or edited.trailing_stop is not None:
        if before is not None or after is not None:
            return "a trailing stop and a fixed stop cannot be swapped by an approver"
        old, new = original.trailing_stop, edited.trailing_stop
        if old == new:
            return None
        if old is None:
            return None  # adding a trail where there was no stop tightens
        if new is None or (old.percent is None) != (new.percent is None):
            return "the trailing stop cannot be removed or changed between percent and price"
        old_trail, new_trail = old.percent or old.price, new.percent or new.price
        assert old_trail is not None and new_trail is not None
        return None if new_trail <= old_trail else "the trailing stop can only be narrowed, not widened"
    if before == after or (before is None and after is not None):
        return None  # unchanged, or a stop added where there was none
    if after is None:
        return "the protective stop cannot be removed"
    assert before is not None
    tighter = after.stop_price >= before.stop_price if long else after.stop_price <= before.stop_price
    if not tighter:
        return (f"the stop can only be tightened ({'raised' if long else 'lowered'} toward the entry), not moved "
                f"from {decimal_text(before.stop_price)} to {decimal_text(after.stop_price)}")
    if before.limit_price is not None and after.limit_price is None:
        return "the stop-limit's limit cannot be removed"
    return None
