"""Agent limits: configured values, risk-level defaults, and the effective limits the checks use.

Effective limits = configured value (or the risk level's default) scaled by agent_risk_multiplier.
Money and counts scale; percentages and time windows do not (a bigger multiplier must never make a
stale quote look fresh or a collar wider).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal

RiskLevel = Literal["conservative", "moderate", "aggressive"]
ApprovalMode = Literal["auto", "elicit", "operator"]
BreakerAction = Literal["reducing", "halted"]

# Defaults for every limit not set on the agent, by risk level.
RISK_LEVEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "conservative": {
        "max_order_qty": Decimal(500), "max_gross_exposure": Decimal(25000),
        "max_orders_per_window": 5, "order_rate_window_seconds": 60,
        "rolling_notional_max": Decimal(10000), "rolling_notional_window_seconds": 3600,
        "duplicate_window_seconds": 60, "daily_loss_limit": Decimal(500), "max_drawdown_pct": Decimal(5),
        "price_collar_pct": Decimal(5), "max_quote_age_seconds": 60, "allow_short": False,
        "max_denials_per_window": 10, "denials_window_seconds": 600, "breaker_action": "halted",
    },
    "moderate": {
        "max_order_qty": Decimal(2000), "max_gross_exposure": Decimal(100000),
        "max_orders_per_window": 10, "order_rate_window_seconds": 60,
        "rolling_notional_max": Decimal(50000), "rolling_notional_window_seconds": 3600,
        "duplicate_window_seconds": 30, "daily_loss_limit": Decimal(2000), "max_drawdown_pct": Decimal(10),
        "price_collar_pct": Decimal(10), "max_quote_age_seconds": 120, "allow_short": False,
        "max_denials_per_window": 20, "denials_window_seconds": 600, "breaker_action": "reducing",
    },
    "aggressive": {
        "max_order_qty": Decimal(10000), "max_gross_exposure": Decimal(500000),
        "max_orders_per_window": 30, "order_rate_window_seconds": 60,
        "rolling_notional_max": Decimal(250000), "rolling_notional_window_seconds": 3600,
        "duplicate_window_seconds": 10, "daily_loss_limit": Decimal(10000), "max_drawdown_pct": Decimal(20),
        "price_collar_pct": Decimal(15), "max_quote_age_seconds": 300, "allow_short": True,
        "max_denials_per_window": 50, "denials_window_seconds": 600, "breaker_action": "reducing",
    },
}

# Limits that agent_risk_multiplier scales.
SCALED_MONEY = ("max_trade_size", "max_position_size", "max_gross_exposure", "rolling_notional_max",
                "daily_loss_limit", "max_order_qty")
SCALED_COUNTS = ("max_daily_trades", "max_orders_per_window")
OPTIONAL_LIMITS = tuple(RISK_LEVEL_DEFAULTS["moderate"].keys())


@dataclass(frozen=True)
class EffectiveLimits:
    """Everything the checks compare against, already scaled. Pure data."""

    max_trade_size: Decimal
    max_position_size: Decimal
    max_daily_trades: int
    allowed_symbols: frozenset[str]  # contains "*" for any
    allowed_strategies: frozenset[str]  # contains "*" for any
    max_order_qty: Decimal
    max_gross_exposure: Decimal
    max_orders_per_window: int
    order_rate_window_seconds: int
    rolling_notional_max: Decimal
    rolling_notional_window_seconds: int
    duplicate_window_seconds: int
    daily_loss_limit: Decimal
    max_drawdown_pct: Decimal
    price_collar_pct: Decimal
    max_quote_age_seconds: int
    allow_short: bool
    max_denials_per_window: int
    denials_window_seconds: int
    breaker_action: BreakerAction
    capital: Decimal

    def allows_symbol(self, symbol: str) -> bool:
        return "*" in self.allowed_symbols or symbol in self.allowed_symbols

    def allows_strategy(self, strategy: str | None) -> bool:
        if "*" in self.allowed_strategies:
            return True
        return strategy is not None and strategy in self.allowed_strategies


def effective_limits(*, max_trade_size: Decimal, max_position_size: Decimal, max_daily_trades: int,
                     allowed_symbols: list[str], allowed_strategies: list[str], risk_level: str,
                     capital: Decimal, overrides: dict[str, Any], multiplier: Decimal) -> EffectiveLimits:
    values: dict[str, Any] = dict(RISK_LEVEL_DEFAULTS[risk_level])
    values.update({k: v for k, v in overrides.items() if v is not None and k in OPTIONAL_LIMITS})
    values.update(max_trade_size=Decimal(max_trade_size), max_position_size=Decimal(max_position_size),
                  max_daily_trades=max_daily_trades)
    for name in SCALED_MONEY:
        values[name] = Decimal(values[name]) * multiplier
    for name in SCALED_COUNTS:
        values[name] = int((Decimal(values[name]) * multiplier).to_integral_value(ROUND_FLOOR))
    for name in ("price_collar_pct", "max_drawdown_pct"):
        values[name] = Decimal(values[name])
    return EffectiveLimits(
        allowed_symbols=frozenset(s.upper() for s in allowed_symbols),
        allowed_strategies=frozenset(allowed_strategies),
        capital=Decimal(capital),
        **values,
    )
