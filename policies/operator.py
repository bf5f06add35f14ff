"""What only people can do: approve or reject proposals, halt and resume trading, the kill switch.

No MCP tool calls into this module: an agent cannot approve its own trades, raise its limits or lift a
halt. The command line (and, later, other operator surfaces) do, and every action is audited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.db import transaction
from ledger.legs import LIVE_LEG_STATUSES
from ledger.models import (
    GLOBAL_SCOPE,
    AgentOrderLeg,
    AgentPermissions,
    AgentTrade,
    Approval,
    TradeProposal,
    TradingState,
)
from policies import audit, bindings, secrets
from policies.approval import ShrinkRefused, shrink
from policies.gate import LIVE_TRADE_STATUSES, Gate, _order_of
from policies.operator_agents import AgentOperations
from policies.operator_books import BookOperations
from policies.operators import Action, OperatorError, OperatorIdentity, require
from policies.orders import OrderRequest, decimal_text
from policies.violations import GateDenied

__all__ = ["KillSwitchReport", "Operator", "OperatorError"]


@dataclass(frozen=True)
class KillSwitchReport:
    canceled: list[str]
    failed: dict[str, str]
    # Protective exits left working on filled entries: a halt never leaves a position without its stop.
    kept_exits: list[str] = field(default_factory=list)


class Operator(AgentOperations, BookOperations):
    """The operator layer: every operator surface acts through it; each action checks the operator's role
    (`policies.operators.require`) and is audited as `operator:NAME`. Agents (policies/operator_agents.py) and
    positions, orders, performance and status (policies/operator_books.py) are its mixins."""

    def __init__(self, gate: Gate, identity: OperatorIdentity):
        self.gate = gate
        self.identity = identity
        self.actor = identity.actor

    def require(self, action: Action) -> None:
        require(self.identity, action)

    @property
    def now(self) -> datetime:
        return self.gate.clock()

    async def _record(self, session: AsyncSession, kind: str, payload: dict[str, object],
                      agent_id: str | None = None, event_id: str | None = None) -> None:
        await audit.append(session, ts=self.now, actor=self.actor, kind=kind, agent_id=agent_id, payload=payload,
                           event_id=event_id)

    # --- approvals ---------------------------------------------------------------------------------

    async def pending(self) -> list[TradeProposal]:
        self.require(Action.READ)
        async with self.gate.sessions() as session:
            rows = await session.execute(select(TradeProposal).where(TradeProposal.status == "pending_approval")
                                         .order_by(TradeProposal.created_at))
            return list(rows.scalars())

    async def decide(self, proposal_id: str, approve: bool, note: str | None = None, *,
                     qty: Decimal | None = None, limit_price: Decimal | None = None,
                     stop_loss: Decimal | None = None) -> TradeProposal:
        """Approve or reject a pending proposal, atomically: a second decision, or one racing an execution,
        finds the state already moved and fails.

        Approving, the operator may shrink the order (a lower qty, a limit price no worse): the edited order
        passes every check of the gate again, or the approval is refused with the codes; the approval then
        binds the edited order (its hash), and the record keeps the order as proposed beside it. A stop-loss may
        be tightened (toward the entry, or added), never loosened."""
        self.require(Action.DECIDE_APPROVAL)
        new_state = "approved" if approve else "declined"
        edited: OrderRequest | None = None
        estimate: dict[str, object] = {}
        if approve and (qty is not None or limit_price is not None or stop_loss is not None):
            edited, estimate = await self._judged_edit(proposal_id, qty, limit_price, stop_loss)
        now = self.now
        async with transaction(self.gate.sessions) as session:
            proposal = await session.get(TradeProposal, proposal_id)
            if proposal is None:
                raise OperatorError(f"no proposal {proposal_id}")
            if proposal.status == "pending_approval" and now >= proposal.expires_at:
                proposal.status, proposal.updated_at = "expired", now
                await self._record(session, "approval.refused_expired", {"proposal_id": proposal_id},
                                   proposal.agent_id)
            elif proposal.status == "expired":
                raise OperatorError(f"PROPOSAL_EXPIRED: proposal {proposal_id} expired at "
                                    f"{proposal.expires_at.isoformat()}; it can no longer be approved or rejected")
            elif proposal.status != "pending_approval":
                raise OperatorError(f"proposal {proposal_id} is {proposal.status}, not pending approval")
            elif approve and _order_of(proposal).order_hash() != proposal.order_hash:
                raise OperatorError(f"PROPOSAL_CHANGED: the stored order of proposal {proposal_id} no longer "
                                    "matches what the agent proposed; it cannot be approved")
            else:
                original = _order_of(proposal)
                if edited is not None and _reshrunk(original, qty, limit_price, stop_loss) != edited:
                    raise OperatorError(f"proposal {proposal_id} changed while its edit was checked; nothing done")
                values: dict[str, object] = {}
                if edited is not None and edited != original:
                    values = {"qty": edited.qty, "limit_price": edited.limit_price, "exits": edited.exits_json(),
                              "order_hash": edited.order_hash()}
                    values.update(estimate)
                approved_hash = str(values.get("order_hash", proposal.order_hash))
                # The stored order must still be the one the edit (or the plain approval) was made on.
                result = await session.execute(
                    update(TradeProposal).where(TradeProposal.id == proposal_id,
                                                TradeProposal.status == "pending_approval",
                                                TradeProposal.order_hash == original.order_hash())
                    .values(status=new_state, decided_at=now, decided_by=self.actor, decided_via="operator",
                            decision_note=note, updated_at=now, **values)
                    .execution_options(synchronize_session=False))
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    raise OperatorError(f"proposal {proposal_id} changed state meanwhile; nothing done")
                shrunk = bool(values)
                approval = Approval(proposal_id=proposal_id, decision=new_state, decided_by=self.actor,
                                    via="operator", trust="operator", note=note, order_hash=approved_hash,
                                    original_order_hash=original.order_hash() if shrunk else None,
                                    original_order=original.canonical_json() if shrunk else None,
                                    created_at=now, audit_event_id=bindings.new_event_id())
                session.add(approval)
                # The decision's record binds the approval and re-binds the proposal (a shrink changed its order)
                await session.execute(update(TradeProposal).where(TradeProposal.id == proposal_id)
                                      .values(audit_event_id=approval.audit_event_id)
                                      .execution_options(synchronize_session=False))
                payload: dict[str, object] = {
                    "proposal_id": proposal_id, "via": "operator", "trust": "operator", "note": note,
                    "order_hash": approved_hash,
                    **bindings.binds(approvals=approval, trade_proposals=bindings.changed(
                        bindings.PROPOSALS, proposal, order_hash=approved_hash))}
                if shrunk:
                    assert edited is not None
                    payload.update(original_order=original.canonical_json(),
                                   original_order_hash=original.order_hash(),
                                   approved_order=edited.canonical_json())
                await self._record(session, f"approval.{new_state}", payload, proposal.agent_id,
                                   event_id=approval.audit_event_id)
        async with self.gate.sessions() as session:
            fresh = await session.get(TradeProposal, proposal_id)
        assert fresh is not None
        await self.gate._notify(proposal_id)
        if fresh.status == "expired":
            raise OperatorError(f"PROPOSAL_EXPIRED: proposal {proposal_id} expired at "
                                f"{fresh.expires_at.isoformat()}; it can no longer be approved or rejected")
        return fresh

    async def _judged_edit(self, proposal_id: str, qty: Decimal | None, limit_price: Decimal | None,
                           stop_loss: Decimal | None = None) -> tuple[OrderRequest, dict[str, object]]:
        """The shrunk order, after every check of the gate passed on it (OperatorError with the codes if not),
        and its price estimate now."""
        async with self.gate.sessions() as session:
            proposal = await session.get(TradeProposal, proposal_id)
        if proposal is None:
            raise OperatorError(f"no proposal {proposal_id}")
        if proposal.status != "pending_approval":
            raise OperatorError(f"proposal {proposal_id} is {proposal.status}, not pending approval")
        try:
            edited = shrink(_order_of(proposal), qty=qty, limit_price=limit_price, stop_loss=stop_loss)
        except ShrinkRefused as refused:
            raise OperatorError(str(refused)) from None
        try:
            agent = await self.gate.load_agent(proposal.agent_id)
        except GateDenied as denied:
            raise OperatorError(str(denied)) from None
        violations, pricing = await self.gate.judge(agent, edited, proposal.strategy)
        if violations:
            codes = ", ".join(dict.fromkeys(v.code.value for v in violations))
            async with transaction(self.gate.sessions) as session:
                await self._record(session, "approval.refused_checks",
                                   {"proposal_id": proposal_id, "edited_order": edited.canonical_json(),
                                    "codes": [v.code.value for v in violations]}, proposal.agent_id)
            raise OperatorError(f"{codes}: the edited order fails the checks, so it is not approved: "
                                + "; ".join(v.message for v in violations))
        return edited, {"estimated_notional": pricing.estimated_notional, "reference_price": pricing.reference_price}

    # --- trading state -----------------------------------------------------------------------------

    async def set_state(self, scope: str, state: str, reason: str | None) -> None:
        # Stopping is for approvers too; only an admin lifts a halt or a reduce-only state.
        self.require(Action.HALT if state == "halted" else Action.RESUME)
        async with transaction(self.gate.sessions) as session:
            if scope != GLOBAL_SCOPE and await session.get(AgentPermissions, scope) is None:
                raise OperatorError(f"no agent {scope!r}")
            row = await session.get(TradingState, scope, with_for_update=True)
            # Read the clock once the row is ours: a decision still holding it commits first, so every
            # order decided before this change is stamped before it, and none after.
            now = self.now
            if row is None:
                session.add(TradingState(scope=scope, state=state, reason=reason, changed_by=self.actor,
                                         changed_at=now))
            else:
                row.state, row.reason, row.changed_by, row.changed_at = state, reason, self.actor, now
            await self._record(session, "trading_state.changed", {"scope": scope, "state": state, "reason": reason},
                               None if scope == GLOBAL_SCOPE else scope)

    async def halt(self, agent_id: str | None, reason: str, cancel_open: bool = False) -> KillSwitchReport:
        await self.set_state(agent_id or GLOBAL_SCOPE, "halted", reason)
        if not cancel_open:
            return KillSwitchReport([], {})
        return await self.cancel_open_orders(agent_id)

    async def resume(self, agent_id: str | None) -> None:
        await self.set_state(agent_id or GLOBAL_SCOPE, "active", None)

    async def cancel_open_orders(self, agent_id: str | None) -> KillSwitchReport:
        """The kill switch's second half: cancel every unexecuted order, each attempt audited."""
        self.require(Action.HALT)
        await self.gate.refresh_open_trades(agent_id)
        async with self.gate.sessions() as session:
            query = select(AgentTrade).where(AgentTrade.status.in_(LIVE_TRADE_STATUSES))
            if agent_id:
                query = query.where(AgentTrade.agent_id == agent_id)
            trades = list((await session.execute(query)).scalars())
        canceled: list[str] = []
        failed: dict[str, str] = {}
        for trade in trades:
            async with self.gate.sessions() as session:
                row = await session.get(AgentPermissions, trade.agent_id)
            # A disabled or halted agent's orders are cancelled too: the kill switch never skips one.
            agent = self.gate.agent_from_row(row) if row is not None else None
            try:
                if agent is None or trade.order_id is None:
                    raise OperatorError("order has no broker id yet or its agent is unknown")
                result = await self.gate.cancel(agent, trade.id)
                canceled.append(f"{trade.id} ({result.status})")
            except Exception as error:  # keep cancelling the rest
                failed[trade.id] = secrets.scrub(str(error))  # shown on the command line, audited
        kept = await self._working_exits(agent_id)
        async with transaction(self.gate.sessions) as session:
            await self._record(session, "kill_switch.cancel_open", {"agent_id": agent_id, "canceled": canceled,
                                                                     "failed": failed, "kept_exits": kept}, agent_id)
        return KillSwitchReport(canceled, failed, kept)

    async def _working_exits(self, agent_id: str | None) -> list[str]:
        """The exits (bracket legs) still working: the kill switch cancels entries, never the stops and
        take-profits that protect positions already taken (reduce-only, they only lower risk)."""
        async with self.gate.sessions() as session:
            query = select(AgentOrderLeg).where(AgentOrderLeg.status.in_(LIVE_LEG_STATUSES))
            if agent_id:
                query = query.where(AgentOrderLeg.agent_id == agent_id)
            legs = list((await session.execute(query.order_by(AgentOrderLeg.created_at))).scalars())
        return [f"{leg.id} ({leg.role} {leg.side} {decimal_text(leg.quantity)} {leg.symbol}"
                f"{' stop ' + str(decimal_text(leg.stop_price)) if leg.stop_price is not None else ''}"
                f"{' limit ' + str(decimal_text(leg.limit_price)) if leg.limit_price is not None else ''})"
                for leg in legs]

    # --- webhooks ----------------------------------------------------------------------------------

    async def webhook_tested(self, endpoint: str, delivered: bool, status: int | None, error: str | None) -> None:
        """Record a test message sent to a webhook endpoint (tradewarden webhooks test)."""
        self.require(Action.MANAGE_WEBHOOKS)
        async with transaction(self.gate.sessions) as session:
            await self._record(session, "webhook.tested", {"endpoint": endpoint, "delivered": delivered,
                                                           "status": status, "error": error})

    async def states(self) -> list[TradingState]:
        self.require(Action.READ)
        async with self.gate.sessions() as session:
            return list((await session.execute(select(TradingState).order_by(TradingState.scope))).scalars())


def _reshrunk(order: OrderRequest, qty: Decimal | None, limit_price: Decimal | None,
              stop_loss: Decimal | None = None) -> OrderRequest | None:
    """The edit applied again to the order as stored now (None if it no longer applies): the approval binds the
    order that was checked, or nothing."""
    try:
        return shrink(order, qty=qty, limit_price=limit_price, stop_loss=stop_loss)
    except ShrinkRefused:
        return None
