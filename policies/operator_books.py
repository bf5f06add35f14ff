"""Operator views of what agents hold and did: positions, orders (and cancelling one), performance, the
deployment's status, and ids given by a prefix. Part of the operator layer (`policies.operator.Operator`
inherits it): every method checks the operator's role; a cancel goes through the gate and is audited as the
operator."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.base import BrokerError
from ledger.models import (
    AgentOrderLeg,
    AgentPermissions,
    AgentTrade,
    KeyValue,
    TradeProposal,
    TradingState,
)
from policies.gate import LIVE_TRADE_STATUSES
from policies.limits import LimitsError
from policies.operators import Action, OperatorError
from policies.performance import AgentPerformance, Fill, agent_performance
from policies.positions import PositionLine, position_lines
from policies.violations import GateDenied

if TYPE_CHECKING:
    from policies.gate import Agent, Gate

MIN_PREFIX = 8  # an id may be given by a unique prefix of at least this many characters
CENT = Decimal("0.01")


class AmbiguousId(OperatorError):
    """A prefix matches several ids (or is too short to be one): a usage error, not a failure."""


@dataclass(frozen=True)
class AgentBook:
    agent_id: str
    positions: list[PositionLine]
    cash: Decimal
    equity: Decimal
    capital: Decimal


@dataclass(frozen=True)
class StatusReport:
    states: list[TradingState]
    agents: int
    enabled_agents: int
    open_orders: int
    pending_approvals: int  # waiting for a person and not yet expired
    expired_unanswered: int  # waited for a person until they expired (no longer actionable)
    reconciliation: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


class BookOperations:
    """Mixed into `policies.operator.Operator`."""

    if TYPE_CHECKING:
        gate: Gate
        actor: str

        def require(self, action: Action) -> None: ...

        @property
        def now(self) -> datetime: ...

    # --- ids by prefix -------------------------------------------------------------------------------

    async def _resolve(self, session: AsyncSession, column: Any, given: str, what: str) -> str | None:
        given = given.strip()
        exact = (await session.execute(select(column).where(column == given))).scalar_one_or_none()
        if exact is not None:
            return str(exact)
        if len(given) < MIN_PREFIX:
            return None
        matches = list((await session.execute(select(column).where(column.startswith(given, autoescape=True))
                                               .order_by(column).limit(6))).scalars())
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
            raise AmbiguousId(f"{what} id prefix {given!r} matches several: {shown}; give more characters")
        return str(matches[0]) if matches else None

    async def resolve_proposal_id(self, given: str) -> str:
        """A proposal's full id from the id or a unique prefix of at least 8 characters."""
        self.require(Action.READ)
        async with self.gate.sessions() as session:
            found = await self._resolve(session, TradeProposal.id, given, "proposal")
        if found is None:
            raise OperatorError(_not_found("proposal", given))
        return found

    async def resolve_order_id(self, given: str) -> str:
        """An order's id (ours, as get_orders shows it) from it, a unique prefix, or the broker's order id."""
        self.require(Action.READ)
        async with self.gate.sessions() as session:
            found = await self._resolve(session, AgentTrade.id, given, "order")
            if found is None:
                found = (await session.execute(select(AgentTrade.id).where(AgentTrade.order_id == given.strip()))
                         ).scalar_one_or_none()
        if found is None:
            raise OperatorError(_not_found("order", given))
        return found

    # --- positions and orders ------------------------------------------------------------------------

    async def _agents_for(self, agent_id: str | None) -> list[Agent]:
        async with self.gate.sessions() as session:
            query = select(AgentPermissions).order_by(AgentPermissions.agent_id)
            if agent_id is not None:
                query = query.where(AgentPermissions.agent_id == agent_id)
            rows = list((await session.execute(query)).scalars())
        if agent_id is not None and not rows:
            raise OperatorError(f"no agent {agent_id!r}")
        # Disabled agents too: what they hold is still at risk.
        try:
            return [self.gate.agent_from_row(row) for row in rows]
        except LimitsError as error:
            raise OperatorError(f"an agent has unreadable limits ({error}): fix them with `agents set`") from None

    async def positions(self, agent_id: str | None = None) -> list[AgentBook]:
        """Each agent's positions, cash and equity: the numbers its own get_positions shows."""
        self.require(Action.READ)
        books = []
        for agent in await self._agents_for(agent_id):
            rows, quotes, cash = await self.gate.positions(agent)
            lines, equity = position_lines(rows, quotes, cash)
            books.append(AgentBook(agent_id=agent.id, positions=lines, cash=cash.quantize(CENT), equity=equity,
                                   capital=agent.limits.capital))
        return books

    async def orders(self, agent_id: str | None = None, status: str = "open", limit: int = 50) -> list[AgentTrade]:
        """Orders (newest first) with their broker status, as each agent's get_orders shows them."""
        self.require(Action.READ)
        if status not in ("open", "closed", "all"):
            raise OperatorError("status must be open, closed or all")
        found: list[AgentTrade] = []
        for agent in await self._agents_for(agent_id):
            found.extend(await self.gate.orders(agent, status, limit))
        return sorted(found, key=lambda trade: trade.created_at, reverse=True)[:limit]

    async def cancel_order(self, order_id: str) -> AgentTrade | AgentOrderLeg:
        """Cancel one order (any agent's) through the gate; audited as this operator."""
        self.require(Action.CANCEL_ORDER)
        full_id = await self.resolve_order_id(order_id)
        async with self.gate.sessions() as session:
            trade = await session.get(AgentTrade, full_id)
            row = await session.get(AgentPermissions, trade.agent_id) if trade is not None else None
        if trade is None or row is None:
            raise OperatorError(_not_found("order", order_id))
        agent = self.gate.agent_from_row(row)  # a disabled or halted agent's order is cancellable too
        try:
            return await self.gate.cancel(agent, full_id, actor=self.actor)
        except GateDenied as error:
            raise OperatorError(str(error)) from None
        except (BrokerError, TimeoutError) as error:
            raise OperatorError(f"BROKER_UNAVAILABLE: the broker did not cancel order {full_id}: {error}") from None

    # --- performance ---------------------------------------------------------------------------------

    async def performance(self, agent_id: str | None = None) -> list[AgentPerformance]:
        """Realized and unrealized P&L, trades, win rate, max drawdown and exposure, per agent and strategy."""
        self.require(Action.READ)
        agents = await self._agents_for(agent_id)
        await self.gate.refresh_open_trades(agent_id)
        ids = [agent.id for agent in agents]
        async with self.gate.sessions() as session:
            trades = list((await session.execute(select(AgentTrade).where(
                AgentTrade.agent_id.in_(ids), AgentTrade.price.is_not(None)))).scalars())
        # Quantities are stored as exact decimal text: compared here, not in SQL.
        fills = [Fill(agent_id=t.agent_id, strategy=t.strategy, symbol=t.symbol, side=t.side, qty=t.filled_qty,
                      price=t.price, at=t.executed_at or t.updated_at)
                 for t in trades if t.price is not None and t.filled_qty > 0]
        symbols = sorted({fill.symbol for fill in fills})
        quotes: dict[str, Decimal] = {}
        if symbols:
            try:
                found = await asyncio.wait_for(self.gate.broker.get_quotes(symbols),
                                               self.gate.settings.broker_timeout)
                quotes = {symbol: quote.mid for symbol, quote in found.items()}
            except (BrokerError, TimeoutError):
                quotes = {}  # marked at the last fills, and the report says so
        now = self.now
        return [agent_performance(agent.id, agent.limits.capital, fills, quotes, now) for agent in agents]

    # --- status --------------------------------------------------------------------------------------

    async def status(self) -> StatusReport:
        self.require(Action.READ)
        now = self.now
        async with self.gate.sessions() as session:
            states = list((await session.execute(select(TradingState).order_by(TradingState.scope))).scalars())
            agents = (await session.execute(select(func.count()).select_from(AgentPermissions))).scalar_one()
            enabled = (await session.execute(select(func.count()).select_from(AgentPermissions)
                                             .where(AgentPermissions.enabled.is_(True)))).scalar_one()
            open_orders = (await session.execute(select(func.count()).select_from(AgentTrade)
                                                 .where(AgentTrade.status.in_(LIVE_TRADE_STATUSES)))).scalar_one()
            waiting = select(func.count()).select_from(TradeProposal).where(
                TradeProposal.status == "pending_approval")
            pending = (await session.execute(waiting.where(TradeProposal.expires_at > now))).scalar_one()
            expired = (await session.execute(waiting.where(TradeProposal.expires_at <= now))).scalar_one()
            reconciliation = await session.get(KeyValue, "reconciliation")
        return StatusReport(states=states, agents=agents, enabled_agents=enabled, open_orders=open_orders,
                            pending_approvals=pending, expired_unanswered=expired,
                            reconciliation=dict(reconciliation.value) if reconciliation is not None else None)


def _not_found(what: str, given: str) -> str:
    short = "" if len(given.strip()) >= MIN_PREFIX else f" (a prefix needs at least {MIN_PREFIX} characters)"
    return f"no {what} {given.strip()!r}{short}"
