"""Position sizing: the largest order each of an agent's limits allows, so a model sizes right the first
time instead of finding out by being denied (and repeated denials trip the breaker).

Pure functions of the same inputs as the checks (policies/checks.py): the gate calls `with_size_hint` on a
decision's violations, and when an order is denied only for its size, the message says the largest quantity
that passes every limit (and what each limit allows). The hint is verified by running the checks again on
the resized order: it is only given when it passes them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from policies.checks import ZERO, CheckInput, Usage, amount, money, risk_distance, run_checks
from policies.limits import EffectiveLimits
from policies.violations import Code, Violation

# Violations that a smaller order would not have.
SIZE_CODES = frozenset({Code.ORDER_NOTIONAL_EXCEEDS_MAX, Code.ORDER_QTY_EXCEEDS_MAX, Code.POSITION_EXCEEDS_MAX,
                        Code.GROSS_EXPOSURE_EXCEEDS_MAX, Code.ROLLING_NOTIONAL_EXCEEDED,
                        Code.INSUFFICIENT_BUYING_POWER, Code.RISK_PER_TRADE_EXCEEDED})
CRYPTO_STEP = Decimal("0.0001")


@dataclass(frozen=True)
class SizeLimits:
    """The largest quantity each limit allows for this order (its side, symbol, prices and stop)."""

    by_limit: dict[str, Decimal]
    step: Decimal

    @property
    def largest(self) -> Decimal:
        return min(self.by_limit.values(), default=ZERO)


def _floor(value: Decimal, step: Decimal) -> Decimal:
    return max((value / step).to_integral_value(ROUND_FLOOR) * step, ZERO)


def largest_orders(c: CheckInput) -> SizeLimits | None:
    """What each limit allows, None when the order cannot be priced. Orders are valued as the checks value
    them: at the larger of their limit/stop price and the reference quote."""
    reference = c.pricing.reference_price
    if reference is None or reference <= 0:
        return None
    o, limits, usage = c.order, c.limits, c.usage
    price = max(reference, o.limit_price or ZERO, o.stop_price or ZERO)
    step = CRYPTO_STEP if o.is_crypto else Decimal(1)
    before = c.position_change.before
    room: dict[str, Decimal] = {
        "per-order notional": limits.max_trade_size / price,
        "per-order qty": limits.max_order_qty,
        "position": (limits.max_position_size / price - before) if o.side == "buy"
        else (limits.max_position_size / price + before),
        "gross exposure": (limits.max_gross_exposure - usage.gross_exposure) / price,
        "rolling notional": (limits.rolling_notional_max - usage.notional_in_rolling_window) / price,
    }
    if o.side == "buy":
        room["buying power"] = (usage.agent_cash - usage.open_buy_notional) / price
        if c.account is not None:
            room["account buying power"] = (c.account.buying_power - usage.account_open_buy_notional) / price
    budget, distance = limits.max_risk_usd(), risk_distance(c)
    if budget is not None and distance is not None and distance > 0:
        room["risk per trade"] = budget / distance
    return SizeLimits({name: _floor(value, step) for name, value in room.items()}, step)


def with_size_hint(c: CheckInput, violations: list[Violation]) -> list[Violation]:
    """Violations as they are, or, when every one is about size, the last one followed by the largest qty
    that passes every check (verified) and what each limit allows."""
    if not violations or any(v.code not in SIZE_CODES for v in violations):
        return violations
    sizes = largest_orders(c)
    if sizes is None:
        return violations
    qty = sizes.largest
    details = ", ".join(f"{name} {amount(value)}" for name, value in sizes.by_limit.items())
    if qty <= 0:
        hint = f"no quantity of {c.order.symbol} fits this agent's limits now ({details})"
    else:
        resized = dataclasses.replace(c, order=c.order.model_copy(update={"qty": qty, "notional": None}))
        if any(v.code in SIZE_CODES for v in run_checks(resized)):
            return violations  # the hint must pass when used: never guess
        price = resized.pricing.estimated_notional
        hint = (f"the largest order that passes is qty {amount(qty)}"
                + (f" (about {money(price)})" if price is not None else "") + f"; each limit allows: {details}")
    last = violations[-1]
    return [*violations[:-1], Violation(code=last.code, message=f"{last.message}. Size hint: {hint}")]


def buy_room_usd(limits: EffectiveLimits, usage: Usage) -> dict[str, Decimal]:
    """For any symbol, the largest new order in USD each limit allows now (the position cap is per symbol and
    the risk cap depends on the stop: a rejected proposal's size hint gives those)."""
    room = {
        "per-order notional": limits.max_trade_size,
        "gross exposure": limits.max_gross_exposure - usage.gross_exposure,
        "rolling notional": limits.rolling_notional_max - usage.notional_in_rolling_window,
        "buying power": usage.agent_cash - usage.open_buy_notional,
    }
    return {name: max(value, ZERO) for name, value in room.items()}
