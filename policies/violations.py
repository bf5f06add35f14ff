"""Stable violation codes (SPEC.md): users and tests match on these strings. Add codes; never rename."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, WithJsonSchema


class Code(StrEnum):
    AGENT_UNKNOWN = "AGENT_UNKNOWN"
    AGENT_DISABLED = "AGENT_DISABLED"
    TRADING_DISABLED = "TRADING_DISABLED"
    TRADING_HALTED = "TRADING_HALTED"
    AGENT_HALTED = "AGENT_HALTED"
    REDUCE_ONLY = "REDUCE_ONLY"
    SYMBOL_NOT_ALLOWED = "SYMBOL_NOT_ALLOWED"
    STRATEGY_NOT_ALLOWED = "STRATEGY_NOT_ALLOWED"
    ASSET_NOT_TRADABLE = "ASSET_NOT_TRADABLE"
    INVALID_ORDER = "INVALID_ORDER"
    ORDER_NOTIONAL_EXCEEDS_MAX = "ORDER_NOTIONAL_EXCEEDS_MAX"
    ORDER_QTY_EXCEEDS_MAX = "ORDER_QTY_EXCEEDS_MAX"
    POSITION_EXCEEDS_MAX = "POSITION_EXCEEDS_MAX"
    GROSS_EXPOSURE_EXCEEDS_MAX = "GROSS_EXPOSURE_EXCEEDS_MAX"
    DAILY_TRADES_EXCEEDED = "DAILY_TRADES_EXCEEDED"
    ORDER_RATE_EXCEEDED = "ORDER_RATE_EXCEEDED"
    ROLLING_NOTIONAL_EXCEEDED = "ROLLING_NOTIONAL_EXCEEDED"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
    DRAWDOWN_LIMIT = "DRAWDOWN_LIMIT"
    PRICE_COLLAR = "PRICE_COLLAR"
    NO_MARKET_DATA = "NO_MARKET_DATA"
    STALE_MARKET_DATA = "STALE_MARKET_DATA"
    DUPLICATE_ORDER = "DUPLICATE_ORDER"
    INSUFFICIENT_BUYING_POWER = "INSUFFICIENT_BUYING_POWER"
    SHORT_SELLING_NOT_ALLOWED = "SHORT_SELLING_NOT_ALLOWED"
    MARKET_CLOSED = "MARKET_CLOSED"
    PROPOSAL_EXPIRED = "PROPOSAL_EXPIRED"
    PROPOSAL_NOT_FOUND = "PROPOSAL_NOT_FOUND"
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"
    APPROVAL_DECLINED = "APPROVAL_DECLINED"
    BROKER_ERROR = "BROKER_ERROR"
    # Added beyond the seed list (allowed by SPEC.md: add, never rename).
    ORDER_NOT_FOUND = "ORDER_NOT_FOUND"
    PROPOSAL_CHANGED = "PROPOSAL_CHANGED"
    RATE_LIMITED = "RATE_LIMITED"
    ACCOUNT_BLOCKED = "ACCOUNT_BLOCKED"  # the broker account is blocked from trading
    RISK_CHECK_FAILED = "RISK_CHECK_FAILED"  # a risk check could not evaluate the order: denied (fail closed)
    # A proposal or approval not bound to its audit record (written outside the gate): never sent.
    AUDIT_MISMATCH = "AUDIT_MISMATCH"
    BROKER_UNAVAILABLE = "BROKER_UNAVAILABLE"  # the broker cannot be reached: not the agent's fault
    INVALID_ARGUMENT = "INVALID_ARGUMENT"  # a bad argument to a tool that is not an order
    LEDGER_UNAVAILABLE = "LEDGER_UNAVAILABLE"  # the database cannot be written: locked, full, read-only
    STOP_LOSS_REQUIRED = "STOP_LOSS_REQUIRED"  # an opening order without a protective stop (require_stop_loss)
    RISK_PER_TRADE_EXCEEDED = "RISK_PER_TRADE_EXCEEDED"  # qty x distance to the stop over max_risk_per_trade


class Violation(BaseModel):
    """One reason an order (or call) is denied, worded so an LLM can act on it."""

    model_config = ConfigDict(frozen=True)

    code: Annotated[Code, WithJsonSchema({"type": "string"})]  # the list of codes lives in SPEC.md
    message: str


class GateDenied(Exception):
    """Raised inside the gate when a call must stop; carries every violation at once."""

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        super().__init__("; ".join(f"{v.code}: {v.message}" for v in violations))


def deny(code: Code, message: str) -> GateDenied:
    return GateDenied([Violation(code=code, message=message)])
