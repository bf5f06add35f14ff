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

@dataclass(frozen=True)
class RiskBudget:
    """max_risk_per_trade: USD ("500"), or percent of the agent's capital ("1%")."""

    amount: Decimal
    percent: bool

    def usd(self, capital: Decimal) -> Decimal:
        return capital * self.amount / 100 if self.percent else self.amount

    def text(self) -> str:
        return f"{self.amount.normalize():f}%" if self.percent else f"{self.amount.normalize():f}"

    def __str__(self) -> str:  # shown as configured: "1%" or "500"
        return self.text()


# Defaults for every limit not set on the agent, by risk level.
RISK_LEVEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "conservative": {
        "max_order_qty": Decimal(500), "max_gross_exposure": Decimal(25000),
        "max_orders_per_window": 5, "order_rate_window_seconds": 60,
        "rolling_notional_max": Decimal(10000), "rolling_notional_window_seconds": 3600,
        "duplicate_window_seconds": 60, "daily_loss_limit": Decimal(500), "max_drawdown_pct": Decimal(5),
        "price_collar_pct": Decimal(5), "max_quote_age_seconds": 60, "allow_short": False,
        "max_denials_per_window": 10, "denials_window_seconds": 600, "breaker_action": "halted",
        # A junior's book: every opening order carries a stop, and risks at most 1 % of capital.
        "require_stop_loss": True, "max_risk_per_trade": RiskBudget(Decimal(1), percent=True),
    },
    "moderate": {
        "max_order_qty": Decimal(2000), "max_gross_exposure": Decimal(100000),
        "max_orders_per_window": 10, "order_rate_window_seconds": 60,
        "rolling_notional_max": Decimal(50000), "rolling_notional_window_seconds": 3600,
        "duplicate_window_seconds": 30, "daily_loss_limit": Decimal(2000), "max_drawdown_pct": Decimal(10),
        "price_collar_pct": Decimal(10), "max_quote_age_seconds": 120, "allow_short": False,
        "max_denials_per_window": 20, "denials_window_seconds": 600, "breaker_action": "reducing",
        "require_stop_loss": False, "max_risk_per_trade": None,
    },
    "aggressive": {
        "max_order_qty": Decimal(10000), "max_gross_exposure": Decimal(500000),
        "max_orders_per_window": 30, "order_rate_window_seconds": 60,
        "rolling_notional_max": Decimal(250000), "rolling_notional_window_seconds": 3600,
        "duplicate_window_seconds": 10, "daily_loss_limit": Decimal(10000), "max_drawdown_pct": Decimal(20),
        "price_collar_pct": Decimal(15), "max_quote_age_seconds": 300, "allow_short": True,
        "max_denials_per_window": 50, "denials_window_seconds": 600, "breaker_action": "reducing",
        "require_stop_loss": False, "max_risk_per_trade": None,
    },
}

# Limits that agent_risk_multiplier scales (sizes and counts; never percentages or time windows).
SCALED_MONEY = ("max_trade_size", "max_position_size", "max_gross_exposure", "rolling_notional_max",
                "daily_loss_limit")
SCALED_SIZES = ("max_order_qty",)
SCALED_COUNTS = ("max_daily_trades", "max_orders_per_window")
OPTIONAL_LIMITS = tuple(RISK_LEVEL_DEFAULTS["moderate"].keys())

# How each optional limit is read (overrides arrive from TOML or from JSON in the database).
DECIMAL_LIMITS = ("max_order_qty", "max_gross_exposure", "rolling_notional_max", "daily_loss_limit",
                  "max_drawdown_pct", "price_collar_pct")
COUNT_LIMITS = ("max_orders_per_window", "max_denials_per_window")
WINDOW_LIMITS = ("order_rate_window_seconds", "rolling_notional_window_seconds", "max_quote_age_seconds",
                 "denials_window_seconds")  # seconds, > 0
BREAKER_ACTIONS = ("reducing", "halted")


def read_risk_budget(value: Any) -> RiskBudget | None:
    """None (no cap), a number or numeric string (USD), or "N%" (percent of capital, at most 100)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, RiskBudget):
        return value
    text = str(value).strip() if not isinstance(value, float) else str(value)
    percent = text.endswith("%")
    number = _decimal("max_risk_per_trade", text[:-1].strip() if percent else text)
    if percent and number > 100:
        raise LimitsError(f"limit max_risk_per_trade must be at most 100%, not {value!r}")
    return RiskBudget(number, percent)


class LimitsError(ValueError):
    """A limit cannot be read: the agent must not trade on a guess (fail closed)."""


def _decimal(name: str, value: Any) -> Decimal:
    if isinstance(value, bool):
        raise LimitsError(f"limit {name} must be a number, not {value!r}")
    try:
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (ArithmeticError, TypeError, ValueError):
        raise LimitsError(f"limit {name} must be a number, not {value!r}") from None
    if not number.is_finite() or number < 0:
        raise LimitsError(f"limit {name} must be a finite number >= 0, not {value!r}")
    return number


def _int(name: str, value: Any, *, minimum: int) -> int:
    number = _decimal(name, value)
    if number != number.to_integral_value() or number < minimum:
        raise LimitsError(f"limit {name} must be a whole number >= {minimum}, not {value!r}")
    return int(number)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise LimitsError(f"limit {name} must be true or false, not {value!r}")


def _read(name: str, value: Any) -> Any:
    if name in DECIMAL_LIMITS:
        number = _decimal(name, value)
        if name == "max_drawdown_pct" and number > 100:
            raise LimitsError(f"limit {name} must be at most 100 (percent), not {value!r}")
        return number
    if name in COUNT_LIMITS:
        return _int(name, value, minimum=0)
    if name in WINDOW_LIMITS:
        return _int(name, value, minimum=1)
    if name == "duplicate_window_seconds":
        return _int(name, value, minimum=0)
    if name in ("allow_short", "require_stop_loss"):
        return _bool(name, value)
    if name == "max_risk_per_trade":
        return read_risk_budget(value)
    if name == "breaker_action":
        if value not in BREAKER_ACTIONS:
            raise LimitsError(f"limit {name} must be one of {', '.join(BREAKER_ACTIONS)}, not {value!r}")
        return value
    raise LimitsError(f"unknown limit {name}")


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
    require_stop_loss: bool = False
    max_risk_per_trade: RiskBudget | None = None  # None: no cap

    def max_risk_usd(self) -> Decimal | None:
        return self.max_risk_per_trade.usd(self.capital) if self.max_risk_per_trade is not None else None

    def allows_symbol(self, symbol: str) -> bool:
        return "*" in self.allowed_symbols or symbol in self.allowed_symbols

    def allows_strategy(self, strategy: str | None) -> bool:
        if "*" in self.allowed_strategies:
            return True
        return strategy is not None and strategy in self.allowed_strategies


def effective_limits(*, max_trade_size: Decimal, max_position_size: Decimal, max_daily_trades: int,
                     allowed_symbols: list[str], allowed_strategies: list[str], risk_level: str,
                     capital: Decimal, overrides: dict[str, Any], multiplier: Decimal) -> EffectiveLimits:
    """Configured values, else the risk level's defaults; sizes and counts scaled by `multiplier`
    (counts rounded down). Raises LimitsError for anything it cannot read: unknown risk level, negative,
    non-numeric or non-finite values, a multiplier that is not positive."""
    if risk_level not in RISK_LEVEL_DEFAULTS:
        raise LimitsError(f"unknown risk_level {risk_level!r} (use {', '.join(RISK_LEVEL_DEFAULTS)})")
    factor = _decimal("agent_risk_multiplier", multiplier)
    if factor <= 0:
        raise LimitsError(f"agent_risk_multiplier must be positive, not {multiplier!r}")
    values: dict[str, Any] = dict(RISK_LEVEL_DEFAULTS[risk_level])
    values.update({k: v for k, v in overrides.items() if v is not None and k in OPTIONAL_LIMITS})
    values = {name: _read(name, value) if value is not None else None for name, value in values.items()}
    values.update(max_trade_size=_decimal("max_trade_size", max_trade_size),
                  max_position_size=_decimal("max_position_size", max_position_size),
                  max_daily_trades=_int("max_daily_trades", max_daily_trades, minimum=0))
    for name in SCALED_MONEY + SCALED_SIZES:
        values[name] = values[name] * factor
    budget = values.get("max_risk_per_trade")
    if budget is not None and not budget.percent:  # dollars scale; a percent of capital does not
        values["max_risk_per_trade"] = RiskBudget(budget.amount * factor, False)
    for name in SCALED_COUNTS:
        values[name] = int((Decimal(values[name]) * factor).to_integral_value(ROUND_FLOOR))
    return EffectiveLimits(
        allowed_symbols=frozenset(s.strip().upper() for s in allowed_symbols),
        allowed_strategies=frozenset(allowed_strategies),
        capital=_decimal("capital", capital),
        **values,
    )
