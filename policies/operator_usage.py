"""How much of its limits each agent has used today: the console's overview ("per-agent limit utilisation").
Part of the operator layer: takes the acting `Operator` and checks its role first (a READ)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import select

from ledger.models import AgentPermissions, KeyValue
from ledger.usage import load_usage
from policies.limits import LimitsError
from policies.operators import Action
from policies.orders import OrderRequest

if TYPE_CHECKING:
    from policies.operator import Operator

HUNDRED = Decimal(100)
RECONCILIATION_KEY = "reconciliation"  # policies/reconcile.py's STATE_KEY


@dataclass(frozen=True)
class AgentUsage:
    agent_id: str
    enabled: bool
    state: str  # active | reducing | halted (its own, or the global one when that is stricter)
    approval: str
    trades_today: int
    max_daily_trades: int
    gross_exposure: Decimal
    max_gross_exposure: Decimal
    daily_pnl: Decimal
    daily_loss_limit: Decimal
    utilisation: int  # the highest of the three uses, in percent (0..100+)
    note: str | None = None  # why the figures are missing (unreadable limits)


_SEVERITY = {"active": 0, "reducing": 1, "halted": 2}


def _stricter(first: str, second: str) -> str:
    return first if _SEVERITY.get(first, 2) >= _SEVERITY.get(second, 2) else second


def _percent(used: Decimal, limit: Decimal) -> int:
    return int(used * HUNDRED / limit) if limit > 0 else 0


async def utilisation(operator: Operator) -> list[AgentUsage]:
    """Every agent's use of its daily trades, gross exposure and daily loss limit (the figures its checks use),
    read in one read-only session: a console refreshing its overview takes no write lock from the agents (the
    gate's own usage_today opens a write unit per agent to roll its day)."""
    operator.require(Action.READ)
    gate = operator.gate
    now = operator.now
    probe = OrderRequest(symbol="*", side="buy", qty=Decimal(0))
    found: list[AgentUsage] = []
    async with gate.sessions() as session:
        rows = list((await session.execute(select(AgentPermissions).order_by(AgentPermissions.agent_id))).scalars())
        for row in rows:
            zero = Decimal(0)
            try:
                agent = gate.agent_from_row(row)
            except LimitsError as error:
                found.append(AgentUsage(row.agent_id, row.enabled, "unknown", row.approval, 0, 0, zero, zero, zero,
                                        zero, 0, note=f"unreadable limits: {error}"))
                continue
            status = await gate.trading_status(session, agent.id)
            usage = await load_usage(session, agent_id=agent.id, order=probe, limits=agent.limits, quotes={},
                                     now=now, with_denials=False)
            limits = agent.limits
            loss = max(zero, -usage.daily_pnl)
            percent = max(_percent(Decimal(usage.trades_today), Decimal(limits.max_daily_trades)),
                          _percent(usage.gross_exposure, limits.max_gross_exposure),
                          _percent(loss, limits.daily_loss_limit))
            state = _stricter(status.global_state, status.agent_state)
            found.append(AgentUsage(agent_id=row.agent_id, enabled=row.enabled, state=state,
                                    approval=agent.approval.mode, trades_today=usage.trades_today,
                                    max_daily_trades=limits.max_daily_trades, gross_exposure=usage.gross_exposure,
                                    max_gross_exposure=limits.max_gross_exposure, daily_pnl=usage.daily_pnl,
                                    daily_loss_limit=limits.daily_loss_limit, utilisation=percent))
    return found


async def reconciliation(operator: Operator) -> dict[str, object] | None:
    """The last reconciliation with the broker (when, drift, errors) and its age in seconds; None if none yet."""
    operator.require(Action.READ)
    async with operator.gate.sessions() as session:
        row = await session.get(KeyValue, RECONCILIATION_KEY)
    if row is None:
        return None
    value = dict(row.value or {})
    age = (operator.now - row.updated_at).total_seconds()
    return {"checked_at": row.updated_at, "age_seconds": max(0, int(age)), "drift": value.get("drift") or {},
            "errors": value.get("errors") or [], "unresolved": value.get("unresolved") or []}
