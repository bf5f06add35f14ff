"""Effective limits: risk-level defaults, the agent_risk_multiplier, and strict reading of overrides."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from policies.limits import RISK_LEVEL_DEFAULTS, EffectiveLimits, LimitsError, effective_limits

D = Decimal


def limits(**changes: Any) -> EffectiveLimits:
    args: dict[str, Any] = {
        "max_trade_size": D(5000), "max_position_size": D(20000), "max_daily_trades": 20,
        "allowed_symbols": ["aapl", " msft "], "allowed_strategies": ["momentum"], "risk_level": "moderate",
        "capital": D(100000), "overrides": {}, "multiplier": D(1),
    }
    return effective_limits(**{**args, **changes})


@pytest.mark.parametrize("level", sorted(RISK_LEVEL_DEFAULTS))
def test_unset_limits_take_the_risk_levels_defaults(level: str) -> None:
    found = limits(risk_level=level)
    for name, default in RISK_LEVEL_DEFAULTS[level].items():
        assert getattr(found, name) == default, name


def test_conservative_defaults_are_tighter_than_aggressive_ones() -> None:
    tight, loose = limits(risk_level="conservative"), limits(risk_level="aggressive")
    assert tight.max_gross_exposure < loose.max_gross_exposure
    assert tight.daily_loss_limit < loose.daily_loss_limit
    assert tight.price_collar_pct < loose.price_collar_pct
    assert not tight.allow_short and tight.breaker_action == "halted"


def test_the_multiplier_scales_money_sizes_and_counts() -> None:
    found = limits(multiplier=D("1.5"))
    assert found.max_trade_size == D(7500)
    assert found.max_position_size == D(30000)
    assert found.max_gross_exposure == D(150000)
    assert found.rolling_notional_max == D(75000)
    assert found.daily_loss_limit == D(3000)
    assert found.max_order_qty == D(3000)
    assert found.max_daily_trades == 30
    assert found.max_orders_per_window == 15


def test_scaled_counts_round_down() -> None:
    assert limits(multiplier=D("0.55")).max_daily_trades == 11  # 20 × 0.55 = 11.0
    assert limits(multiplier=D("0.56")).max_daily_trades == 11  # 11.2 → 11


def test_the_multiplier_never_scales_percentages_or_time_windows() -> None:
    base, scaled = limits(), limits(multiplier=D(10))
    for name in ("price_collar_pct", "max_drawdown_pct", "max_quote_age_seconds", "order_rate_window_seconds",
                 "rolling_notional_window_seconds", "duplicate_window_seconds", "denials_window_seconds"):
        assert getattr(scaled, name) == getattr(base, name), name


def test_configured_overrides_replace_the_defaults() -> None:
    found = limits(overrides={"price_collar_pct": D(3), "allow_short": True, "breaker_action": "halted"})
    assert (found.price_collar_pct, found.allow_short, found.breaker_action) == (D(3), True, "halted")


def test_overrides_read_back_from_json_are_exact() -> None:
    found = limits(overrides={"max_gross_exposure": 1234.56, "max_orders_per_window": "7",
                              "allow_short": "true", "daily_loss_limit": "250.10"})
    assert found.max_gross_exposure == D("1234.56")  # not the binary float's expansion
    assert found.max_orders_per_window == 7
    assert found.allow_short is True
    assert found.daily_loss_limit == D("250.10")


def test_unknown_override_names_are_ignored() -> None:
    assert limits(overrides={"favourite_colour": "green"}) == limits()


def test_symbols_are_compared_upper_case_and_stars_allow_all() -> None:
    found = limits()
    assert found.allows_symbol("AAPL") and found.allows_symbol("MSFT") and not found.allows_symbol("TSLA")
    assert limits(allowed_symbols=["*"]).allows_symbol("ANYTHING")


def test_a_strategy_is_required_unless_any_is_allowed() -> None:
    assert not limits().allows_strategy(None)
    assert limits(allowed_strategies=["*"]).allows_strategy(None)


BAD = {
    "unknown risk level": {"risk_level": "reckless"},
    "zero multiplier": {"multiplier": D(0)},
    "negative multiplier": {"multiplier": D(-1)},
    "negative trade size": {"max_trade_size": D(-1)},
    "nan position size": {"max_position_size": D("NaN")},
    "fractional daily trades": {"max_daily_trades": D("2.5")},
    "text for a number": {"overrides": {"max_gross_exposure": "lots"}},
    "bool for a number": {"overrides": {"max_order_qty": True}},
    "infinite rolling cap": {"overrides": {"rolling_notional_max": "Infinity"}},
    "zero-second window": {"overrides": {"order_rate_window_seconds": 0}},
    "drawdown above 100%": {"overrides": {"max_drawdown_pct": 101}},
    "unknown breaker action": {"overrides": {"breaker_action": "panic"}},
    "allow_short not a bool": {"overrides": {"allow_short": "maybe"}},
}


@pytest.mark.parametrize("changes", BAD.values(), ids=BAD.keys())
def test_a_limit_that_cannot_be_read_fails_closed(changes: dict[str, Any]) -> None:
    with pytest.raises(LimitsError):
        limits(**changes)


def test_limits_errors_are_value_errors_with_the_limits_name() -> None:
    with pytest.raises(ValueError, match="max_gross_exposure"):
        limits(overrides={"max_gross_exposure": -5})
