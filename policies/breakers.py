"""Circuit breakers: when an agent must be moved out of normal trading, and why. Pure.

A breaker trips on any of:
- the daily loss limit reached (today's P&L <= -daily_loss_limit),
- the drawdown limit reached (equity at least max_drawdown_pct below its peak),
- too many denials: this call is denied and, counting it, the agent has been denied max_denials_per_window
  times within denials_window_seconds (usage.denials_in_window + 1 >= max_denials_per_window). Denials
  caused only by the trading state itself (disabled, halted, reduce-only) do not count toward tripping:
  the agent is already stopped by someone, and a global halt must not leave every agent tripped; nor do
  denials that are not the agent's misbehaviour (EXCUSED_CODES: market closed, broker or ledger unavailable,
  stale or missing data), which the gate does not count either (ledger.usage.count_denials).

The agent then moves to limits.breaker_action ("reducing" or "halted"). The gate persists that state; it
stays until a person resumes the agent (MiFID II RTS 6: a tripped throttle stays off until re-enabled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from policies.checks import Usage, daily_loss_reached, drawdown_pct, drawdown_reached, money, pct
from policies.limits import BreakerAction, EffectiveLimits
from policies.violations import Code, Violation

# Denials that only restate the trading state: they never trip the denial breaker.
STATE_CODES = frozenset({Code.TRADING_DISABLED, Code.TRADING_HALTED, Code.AGENT_HALTED, Code.REDUCE_ONLY})
# Denials that are not the agent's misbehaviour (the market, the broker or the ledger said no): they neither
# trip the denial breaker nor count toward it. A weekend of MARKET_CLOSED must not put an agent in reduce-only.
EXCUSED_CODES = STATE_CODES | frozenset({Code.MARKET_CLOSED, Code.BROKER_UNAVAILABLE, Code.STALE_MARKET_DATA,
                                         Code.NO_MARKET_DATA, Code.LEDGER_UNAVAILABLE})


def counts_as_denial(codes: Sequence[str]) -> bool:
    """Whether a denial with these violation codes counts toward the denial storm breaker."""
    return any(code not in EXCUSED_CODES for code in codes)

TRIGGER_DAILY_LOSS = "daily_loss"
TRIGGER_DRAWDOWN = "drawdown"
TRIGGER_DENIALS = "denials"


@dataclass(frozen=True)
class BreakerTrip:
    state: BreakerAction  # the trading state to move the agent to: "reducing" | "halted"
    reason: str  # for the trading_state row, the audit log and the agent
    triggers: tuple[str, ...]  # which breakers tripped: "daily_loss", "drawdown", "denials"

    @property
    def action(self) -> BreakerAction:
        return self.state


def breaker_decision(limits: EffectiveLimits, usage: Usage,
                     violations_now: Sequence[Violation]) -> BreakerTrip | None:
    """None while trading may continue as is; otherwise the state to move the agent to and why."""
    triggers: list[str] = []
    reasons: list[str] = []
    if daily_loss_reached(limits, usage):
        triggers.append(TRIGGER_DAILY_LOSS)
        reasons.append(f"today's P&L {money(usage.daily_pnl)} reached the daily loss limit "
                       f"{money(-limits.daily_loss_limit)}")
    if drawdown_reached(limits, usage):
        triggers.append(TRIGGER_DRAWDOWN)
        reasons.append(f"equity {money(usage.equity)} is {pct(drawdown_pct(usage))} below its peak "
                       f"{money(usage.equity_peak)} (limit {pct(limits.max_drawdown_pct)})")
    denied = counts_as_denial([v.code for v in violations_now])
    if denied and usage.denials_in_window + 1 >= limits.max_denials_per_window:
        triggers.append(TRIGGER_DENIALS)
        reasons.append(f"{usage.denials_in_window + 1} denied orders within "
                       f"{limits.denials_window_seconds} s (limit {limits.max_denials_per_window})")
    if not triggers:
        return None
    state = limits.breaker_action
    what = "reduce-only" if state == "reducing" else "halted"
    reason = f"circuit breaker: {'; '.join(reasons)}; trading is {what} until a person resumes it"
    return BreakerTrip(state=state, reason=reason, triggers=tuple(triggers))
