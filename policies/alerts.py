"""Risk alerts and their thresholds: when an `agent.risk.alert` is due. Pure.

- Daily loss and drawdown at 80 % and 100 % of the agent's limit: once per threshold crossing per trading day
  (`risk_thresholds` says which are crossed now; `newly_crossed` which of those were not alerted today).
- Reconciliation health: the broker unreachable by the reconciler, and reconciliation stale (no successful pass
  for `stale_intervals` intervals); `reconcile_transitions` gives the alerts of a change of health, once.
- A proposal waiting for a person's approval that is about to expire (`expiring_soon`).

Each alert is recorded in the audit log as a `risk.alert` record (kind policies.events.KIND_ALERT) at its source,
so it is an event like any other (policies/events.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from policies.checks import Usage, drawdown_pct, money, pct
from policies.limits import EffectiveLimits

LEVELS = (80, 100)  # percent of a limit at which an alert is raised
EXPIRY_WARNING = timedelta(seconds=60)  # an approval this close to expiry is announced once


@dataclass(frozen=True)
class Alert:
    severity: str  # info | warning | critical
    code: str
    message: str
    details: Mapping[str, Any]
    key: str = ""  # what "once" is counted by (threshold alerts)

    def payload(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "message": self.message, **self.details}


def risk_thresholds(limits: EffectiveLimits, usage: Usage) -> list[Alert]:
    """The daily loss and drawdown thresholds the agent is at or past now (empty in the normal case)."""
    alerts: list[Alert] = []
    loss = -usage.daily_pnl
    if limits.daily_loss_limit > 0 and loss > 0:
        for level in LEVELS:
            if loss >= limits.daily_loss_limit * Decimal(level) / 100:
                alerts.append(Alert(
                    "critical" if level == 100 else "warning", "DAILY_LOSS_LIMIT",
                    f"today's loss {money(loss)} is at {level} % of the daily loss limit "
                    f"{money(limits.daily_loss_limit)}", {"level_pct": level, "daily_pnl": usage.daily_pnl,
                                                          "limit": limits.daily_loss_limit},
                    key=f"DAILY_LOSS_LIMIT:{level}"))
    down = drawdown_pct(usage)
    if limits.max_drawdown_pct > 0 and down > 0:
        for level in LEVELS:
            if down >= limits.max_drawdown_pct * Decimal(level) / 100:
                alerts.append(Alert(
                    "critical" if level == 100 else "warning", "DRAWDOWN_LIMIT",
                    f"equity is {pct(down)} below its peak: {level} % of the drawdown limit "
                    f"{pct(limits.max_drawdown_pct)}", {"level_pct": level, "drawdown_pct": down,
                                                         "limit_pct": limits.max_drawdown_pct},
                    key=f"DRAWDOWN_LIMIT:{level}"))
    return alerts


def newly_crossed(crossed: Iterable[Alert], state: Mapping[str, Any] | None, day: str) -> list[Alert]:
    """The crossed thresholds not alerted yet on trading day `day` (state: {"day", "sent": [keys]})."""
    sent = set(state.get("sent", [])) if state and state.get("day") == day else set()
    return [a for a in crossed if a.key not in sent]


def threshold_state(state: Mapping[str, Any] | None, day: str, alerted: Iterable[Alert]) -> dict[str, Any]:
    sent = set(state.get("sent", [])) if state and state.get("day") == day else set()
    return {"day": day, "sent": sorted(sent | {a.key for a in alerted})}


@dataclass(frozen=True)
class ReconcileHealth:
    broker_ok: bool
    stale: bool


def reconcile_health(*, broker_ok: bool, last_ok: datetime | None, started: datetime, now: datetime,
                     interval_seconds: float, stale_intervals: int) -> ReconcileHealth:
    """Stale: no successful pass for stale_intervals intervals (counted from start when there was none)."""
    since = last_ok or started
    return ReconcileHealth(broker_ok=broker_ok,
                           stale=now - since > timedelta(seconds=interval_seconds * stale_intervals))


def reconcile_transitions(before: ReconcileHealth, after: ReconcileHealth, *, last_ok: datetime | None,
                          dead_man: bool) -> list[Alert]:
    """The alerts of a change in reconciliation health (none when nothing changed)."""
    alerts: list[Alert] = []
    if before.broker_ok and not after.broker_ok:
        alerts.append(Alert("critical", "BROKER_UNAVAILABLE", "the reconciler cannot reach the broker", {}))
    if not before.broker_ok and after.broker_ok:
        alerts.append(Alert("info", "BROKER_AVAILABLE", "the reconciler reaches the broker again", {}))
    seen = last_ok.isoformat() if last_ok else "never since start"
    if not before.stale and after.stale:
        action = "; trading is reduce-only until it is healthy" if dead_man else ""
        alerts.append(Alert("critical", "RECONCILIATION_STALE",
                            f"no successful reconciliation with the broker (last: {seen}){action}",
                            {"last_ok": seen}))
    if before.stale and not after.stale:
        alerts.append(Alert("info", "RECONCILIATION_HEALTHY", "reconciliation with the broker succeeds again", {}))
    return alerts


def expiring_soon(pending: Iterable[tuple[str, str, datetime]], now: datetime, announced: set[str],
                  window: timedelta = EXPIRY_WARNING) -> list[tuple[str, str, datetime]]:
    """Of (proposal_id, agent_id, expires_at) waiting for approval, those expiring within `window` that were not
    announced yet."""
    return [(pid, agent, expires) for pid, agent, expires in pending
            if pid not in announced and now < expires <= now + window]
