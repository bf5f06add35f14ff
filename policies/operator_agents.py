"""Operator actions on agents: list, show (with where each setting comes from), add, enable, disable, set
limits, remove, rotate token. Part of the operator layer (`policies.operator.Operator` inherits it): each
method checks the operator's role first and audits every change as the operator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.db import REGISTRY_LOCK, advisory_lock, transaction
from ledger.models import AgentPermissions, AgentPosition, AgentTrade, TradingState
from policies import agents as registry
from policies import audit
from policies.agent_settings import (
    SETTINGS,
    SettingSource,
    current_settings,
    explain_settings,
    file_settings,
    forget_overrides,
    mark_overridden,
    overridden,
    write_settings,
)
from policies.gate import LIVE_TRADE_STATUSES
from policies.limits import LimitsError, effective_limits
from policies.operators import Action, OperatorError

if TYPE_CHECKING:
    from policies.gate import Agent, Gate


@dataclass(frozen=True)
class AgentSummary:
    agent_id: str
    enabled: bool
    state: str  # active | reducing | halted (the agent's own trading state)
    risk_level: str
    approval: str  # auto | elicit | operator (the mode in force)
    has_token: bool
    source: str  # config | cli
    overridden: list[str]  # settings an operator set
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class AgentDetail:
    summary: AgentSummary
    agent: Agent
    settings: list[SettingSource]
    in_config_file: bool


def _in_force(agent: Agent, row: AgentPermissions) -> dict[str, Any]:
    """What the checks use for each setting (defaults filled in, money and counts scaled)."""
    values: dict[str, Any] = dict(vars(agent.limits))
    values.update(enabled=row.enabled, risk_level=row.risk_level, approval=agent.approval.mode,
                  auto_approve_max_notional=agent.approval.auto_approve_max_notional,
                  allowed_symbols=sorted(agent.limits.allowed_symbols),
                  allowed_strategies=sorted(agent.limits.allowed_strategies))
    return values


class AgentOperations:
    """Mixed into `policies.operator.Operator`."""

    if TYPE_CHECKING:
        gate: Gate
        actor: str

        def require(self, action: Action) -> None: ...

        @property
        def now(self) -> datetime: ...

    async def _agent_row(self, session: AsyncSession, agent_id: str) -> AgentPermissions:
        row = await session.get(AgentPermissions, agent_id)
        if row is None:
            raise OperatorError(f"no agent {agent_id!r}")
        return row

    def _summary(self, row: AgentPermissions, state: TradingState | None) -> AgentSummary:
        return AgentSummary(agent_id=row.agent_id, enabled=row.enabled, state=state.state if state else "active",
                            risk_level=row.risk_level, approval=self._approval_mode(row),
                            has_token=row.token_hash is not None, source=row.source,
                            overridden=sorted(overridden(row)), created_at=row.created_at, updated_at=row.updated_at)

    def _approval_mode(self, row: AgentPermissions) -> str:
        try:
            return self.gate.agent_from_row(row).approval.mode
        except LimitsError:
            return row.approval or "default"

    async def agents(self) -> list[AgentSummary]:
        self.require(Action.READ)
        async with self.gate.sessions() as session:
            rows = list((await session.execute(select(AgentPermissions).order_by(AgentPermissions.agent_id)))
                        .scalars())
            states = {s.scope: s for s in (await session.execute(select(TradingState))).scalars()}
        return [self._summary(row, states.get(row.agent_id)) for row in rows]

    async def agent_detail(self, agent_id: str, file_agent: Any | None) -> AgentDetail:
        """The agent, its settings in force and where each comes from. `file_agent`: its config-file entry."""
        self.require(Action.READ)
        async with self.gate.sessions() as session:
            row = await self._agent_row(session, agent_id)
            state = await session.get(TradingState, agent_id)
        try:
            agent = self.gate.agent_from_row(row)
        except LimitsError as error:
            raise OperatorError(f"agent {agent_id!r} has unreadable limits: {error}") from None
        return AgentDetail(summary=self._summary(row, state), agent=agent,
                           settings=explain_settings(row, file_agent, _in_force(agent, row)),
                           in_config_file=file_agent is not None)

    async def add_agent(self, agent_config: Any, *, max_agents: int, given: list[str]) -> str:
        """Register an agent (an AgentConfig) and return its bearer token (shown once). `given`: the settings
        the operator chose (marked as theirs, so a later config-file entry for the same id does not undo them)."""
        self.require(Action.MANAGE_AGENTS)
        async with transaction(self.gate.sessions) as session:
            try:
                token = await registry.add_agent(session, agent_config, max_agents=max_agents, actor=self.actor,
                                                 now=self.now)
            except registry.RegistryError as error:
                raise OperatorError(str(error)) from None
            row = await self._agent_row(session, agent_config.id)
            mark_overridden(row, [name for name in given if name in SETTINGS], self.actor, self.now)
        return token

    async def rotate_token(self, agent_id: str) -> str:
        self.require(Action.MANAGE_AGENTS)
        async with transaction(self.gate.sessions) as session:
            try:
                return await registry.rotate_token(session, agent_id, actor=self.actor, now=self.now)
            except registry.RegistryError as error:
                raise OperatorError(str(error)) from None

    async def set_enabled(self, agent_id: str, enabled: bool) -> None:
        """Enable or disable an agent; an operator's choice that a config sync does not undo."""
        self.require(Action.MANAGE_AGENTS)
        now = self.now
        async with transaction(self.gate.sessions) as session:
            row = await self._agent_row(session, agent_id)
            row.enabled, row.updated_at = enabled, now
            mark_overridden(row, ["enabled"], self.actor, now)
            await audit.append(session, ts=now, actor=self.actor, agent_id=agent_id,
                               kind="agent.enabled" if enabled else "agent.disabled",
                               payload={"agent_id": agent_id, "operator_override": True})

    async def set_settings(self, agent_id: str, values: dict[str, Any], *, reset: list[str],
                           baseline: Any) -> dict[str, tuple[Any, Any]]:
        """Set some of an agent's settings (validated values, by name) and forget the operator's value of
        others (`reset`: they go back to `baseline`, the agent's config-file entry or the built-in defaults).
        Set values are the operator's: a config sync leaves them alone. Returns {name: (old, new)}."""
        self.require(Action.MANAGE_AGENTS)
        unknown = sorted(set(values) - set(SETTINGS) | set(reset) - set(SETTINGS))
        if unknown:
            raise OperatorError(f"unknown setting(s): {', '.join(unknown)}")
        if not values and not reset:
            raise OperatorError("nothing to change: give at least one setting or --reset NAME")
        now = self.now
        async with transaction(self.gate.sessions) as session:
            row = await self._agent_row(session, agent_id)
            before = current_settings(row)
            back = file_settings(baseline)
            forget_overrides(row, reset)
            write_settings(row, {name: back[name] for name in reset if name not in values})
            write_settings(row, values)
            mark_overridden(row, values, self.actor, now)
            try:  # fail closed: never store settings the checks could not read
                effective_limits(max_trade_size=row.max_trade_size, max_position_size=row.max_position_size,
                                 max_daily_trades=row.max_daily_trades, allowed_symbols=list(row.allowed_symbols),
                                 allowed_strategies=list(row.allowed_strategies), risk_level=row.risk_level,
                                 capital=row.capital, overrides=dict(row.limits or {}),
                                 multiplier=self.gate.settings.risk_multiplier)
            except LimitsError as error:
                raise OperatorError(f"INVALID_ARGUMENT: {error}") from None
            after = current_settings(row)
            changes = {name: (before[name], after[name]) for name in SETTINGS
                       if name in values or name in reset}
            row.updated_at = now
            await audit.append(session, ts=now, actor=self.actor, agent_id=agent_id, kind="agent.settings_changed",
                               payload={"agent_id": agent_id, "reset": sorted(reset),
                                        "changes": {name: {"from": _json(old), "to": _json(new)}
                                                    for name, (old, new) in changes.items()}})
        return changes

    async def remove_agent(self, agent_id: str, *, in_config_file: bool) -> None:
        """Remove an agent the command line added. Its history (orders, audit) stays. Refused for an agent in
        the config file (the next start would bring it back: remove it there, or disable it) and for one with
        open orders or positions (cancel and close them first)."""
        self.require(Action.MANAGE_AGENTS)
        if in_config_file:
            raise OperatorError(f"agent {agent_id!r} is in the config file: remove its [[agents]] entry there "
                                f"(or `agents disable {agent_id}`)")
        now = self.now
        async with transaction(self.gate.sessions) as session:
            await advisory_lock(session, REGISTRY_LOCK)
            row = await self._agent_row(session, agent_id)
            open_orders = (await session.execute(select(func.count()).select_from(AgentTrade).where(
                AgentTrade.agent_id == agent_id, AgentTrade.status.in_(LIVE_TRADE_STATUSES)))).scalar_one()
            # Quantities are stored as exact decimal text: compared here, not in SQL.
            positions = (await session.execute(select(AgentPosition).where(AgentPosition.agent_id == agent_id)
                                               )).scalars()
            held = sum(1 for position in positions if position.qty != 0)
            if open_orders or held:
                raise OperatorError(f"agent {agent_id!r} has {open_orders} open order(s) and {held} open "
                                    "position(s): cancel and close them first")
            await session.delete(row)
            state = await session.get(TradingState, agent_id)
            if state is not None:
                await session.delete(state)
            await audit.append(session, ts=now, actor=self.actor, agent_id=agent_id, kind="agent.removed",
                               payload={"agent_id": agent_id})


def _json(value: Any) -> Any:
    """A setting as the audit record keeps it (decimals as exact text)."""
    return str(value) if isinstance(value, Decimal) else value
