"""Circuit breakers: when an agent moves to reducing or halted, and the reason it is given."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from policies.breakers import BreakerTrip, breaker_decision
from policies.checks import Usage
from policies.violations import Code, Violation
from tests.policies.test_checks import LIMITS

D = Decimal
DENIED = [Violation(code=Code.ORDER_NOTIONAL_EXCEEDS_MAX, message="too big")]
HEALTHY = {"equity": D(100000), "equity_peak": D(100000), "daily_pnl": D(0)}


def decide(violations: list[Violation] | None = None, limits: dict[str, Any] | None = None,
           **usage: Any) -> BreakerTrip | None:
    return breaker_decision(dataclasses.replace(LIMITS, **(limits or {})), Usage(**{**HEALTHY, **usage}),
                            violations or [])


def test_nothing_trips_while_within_every_limit() -> None:
    assert decide() is None


def test_a_daily_loss_one_cent_short_of_the_limit_does_not_trip() -> None:
    assert decide(daily_pnl=D("-1999.99")) is None


def test_a_daily_loss_reaching_the_limit_moves_the_agent_to_the_breaker_action() -> None:
    trip = decide(daily_pnl=D(-2000))
    assert trip is not None
    assert trip.state == "reducing" and trip.triggers == ("daily_loss",)
    assert "-$2,000.00" in trip.reason and "until a person resumes" in trip.reason


def test_the_breaker_action_can_halt_instead_of_reducing() -> None:
    trip = decide(daily_pnl=D(-2000), limits={"breaker_action": "halted"})
    assert trip is not None and trip.state == "halted" and trip.action == "halted"


def test_a_drawdown_just_short_of_the_limit_does_not_trip() -> None:
    assert decide(equity=D("90000.01")) is None


def test_a_drawdown_reaching_the_limit_trips() -> None:
    trip = decide(equity=D(90000))
    assert trip is not None and trip.triggers == ("drawdown",)
    assert "10%" in trip.reason and "$100,000.00" in trip.reason


def test_a_denial_one_short_of_the_maximum_does_not_trip() -> None:
    assert decide(DENIED, denials_in_window=18) is None  # 19 of 20


def test_the_denial_that_reaches_the_maximum_trips() -> None:
    trip = decide(DENIED, denials_in_window=19)  # 20 of 20
    assert trip is not None and trip.triggers == ("denials",)
    assert "20 denied orders within 600 s" in trip.reason


def test_an_allowed_order_never_trips_the_denial_breaker() -> None:
    assert decide([], denials_in_window=100) is None


def test_denials_that_only_restate_a_halt_do_not_trip() -> None:
    halted = [Violation(code=Code.TRADING_HALTED, message="halted"),
              Violation(code=Code.REDUCE_ONLY, message="reducing")]
    assert decide(halted, denials_in_window=100) is None


def test_denials_that_are_not_the_agents_misbehaviour_do_not_trip() -> None:
    for code in (Code.MARKET_CLOSED, Code.BROKER_UNAVAILABLE, Code.STALE_MARKET_DATA, Code.NO_MARKET_DATA,
                 Code.LEDGER_UNAVAILABLE):
        assert decide([Violation(code=code, message="not the agent's doing")], denials_in_window=100) is None


def test_a_misbehaviour_next_to_a_closed_market_still_counts() -> None:
    both = [Violation(code=Code.MARKET_CLOSED, message="closed"), *DENIED]
    assert decide(both, denials_in_window=19) is not None


def test_several_breaches_are_all_named_in_one_trip() -> None:
    trip = decide(DENIED, daily_pnl=D(-3000), equity=D(50000), denials_in_window=50)
    assert trip is not None
    assert trip.triggers == ("daily_loss", "drawdown", "denials")
    assert "daily loss" in trip.reason and "below its peak" in trip.reason and "denied orders" in trip.reason
