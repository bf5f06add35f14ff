"""propose_trade and execute_trade: a checked proposal first, then at most one order for it."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Resolve
from pydantic import Field

from policies.approval import ClientDecision
from policies.orders import (
    PRICE_PATTERN,
    STOP_LOSS_PATTERN,
    TRAILING_PATTERN,
    ExitsError,
    OrderRequest,
    is_crypto_symbol,
    normalize_symbol,
    parse_stop_loss,
    parse_take_profit,
    parse_trailing_stop,
)
from policies.results import ExecuteResult, ProposeResult, price_text
from policies.violations import Code, Violation, deny
from tools.approval import ApprovalForm, ask_approval, awaiting_message, client_decision
from tools.common import exit_text, optional, optional_amount, through_gate

if TYPE_CHECKING:
    from ledger.models import AgentTrade, TradeProposal
    from policies.gate import Agent, Gate

PROPOSE_DESCRIPTION = (
    "Check an order against this agent's limits; store it as a proposal (nothing is sent yet). Exactly one of "
    "qty or notional (USD, market only), as decimal strings. US equities: 09:30-16:00 New York on exchange "
    "days, no orders queued while closed. Crypto (BTC/USD): 24/7, time_in_force gtc or ioc (default gtc; "
    "equities day). Buy stops above the last price, sell stops below. status approved: call execute_trade; "
    "pending_approval: a person decides; rejected: fix what the violations say, do not resend.")
EXECUTE_DESCRIPTION = ("Send an approved proposal to the broker, at most once (a repeat returns the same order). "
                       "awaiting_approval: no person has approved it yet; try later, do not re-propose.")

CENT = Decimal("0.01")
TimeInForce = Literal["day", "gtc", "ioc", "fok"]


async def propose_trade(
    symbol: Annotated[str, Field(min_length=1, max_length=32, description="e.g. AAPL, BTC/USD")],
    side: Literal["buy", "sell"],
    reasoning: Annotated[str, Field(max_length=4000, description="why this trade; shown to the approver")],
    ctx: Context,
    qty: optional_amount("shares/units") = None,  # type: ignore[valid-type]
    notional: optional_amount("USD") = None,  # type: ignore[valid-type]
    order_type: Literal["market", "limit", "stop", "stop_limit"] = "market",
    limit_price: optional_amount("for limit/stop_limit") = None,  # type: ignore[valid-type]
    stop_price: optional_amount("for stop/stop_limit") = None,  # type: ignore[valid-type]
    time_in_force: optional({"type": "string", "enum": ["day", "gtc", "ioc", "fok"]},  # type: ignore[valid-type]
                            TimeInForce) = None,
    strategy: optional({"type": "string", "maxLength": 64}, str, max_length=64) = None,  # type: ignore[valid-type]
    confidence: optional({"type": "number", "minimum": 0, "maximum": 1},  # type: ignore[valid-type]
                         float, ge=0, le=1) = None,
    stop_loss: exit_text("exit stop price; STOP/LIMIT for a stop-limit", STOP_LOSS_PATTERN) = None,  # type: ignore[valid-type]
    take_profit: exit_text("exit limit price (bracket with stop_loss)", PRICE_PATTERN) = None,  # type: ignore[valid-type]
    trailing_stop: exit_text("instead of stop_loss: '2%' or offset '1.5'", TRAILING_PATTERN) = None,  # type: ignore[valid-type]
) -> ProposeResult:
    # Crypto takes gtc or ioc, equities day: an agent that leaves it out gets one its market accepts.
    time_in_force = time_in_force or ("gtc" if is_crypto_symbol(normalize_symbol(symbol)) else "day")
    args = {"symbol": symbol, "side": side, "qty": qty, "notional": notional, "order_type": order_type,
            "limit_price": limit_price, "stop_price": stop_price, "time_in_force": time_in_force,
            "strategy": strategy, "reasoning": reasoning, "confidence": confidence}
    exit_args = {"stop_loss": stop_loss, "take_profit": take_profit, "trailing_stop": trailing_stop}
    args.update({name: value for name, value in exit_args.items() if value is not None})

    async def operation(gate: Gate, agent: Agent) -> ProposeResult:
        if not reasoning.strip():
            raise deny(Code.INVALID_ORDER, "reasoning is required: say why this trade")
        try:
            exits: dict[str, Any] = {"stop_loss": parse_stop_loss(stop_loss) if stop_loss else None,
                                     "take_profit": parse_take_profit(take_profit) if take_profit else None,
                                     "trailing_stop": parse_trailing_stop(trailing_stop) if trailing_stop else None}
        except ExitsError as error:
            raise deny(Code.INVALID_ORDER, str(error)) from None
        order = OrderRequest(symbol=normalize_symbol(symbol), side=side, qty=qty, notional=notional,
                             order_type=order_type, limit_price=limit_price, stop_price=stop_price,
                             time_in_force=time_in_force, **exits)
        from policies.gate import ProposalDraft  # the ledger loads with the runtime, not with the tool list

        draft = ProposalDraft(order=order, strategy=strategy, reasoning=reasoning.strip(), confidence=confidence)
        return await gate.propose(agent, draft, propose_result)

    return await through_gate(ctx, "propose_trade", args, operation, acts_at_broker=False)


def propose_result(proposal: TradeProposal, violations: list[Violation]) -> ProposeResult:
    # Each field read once: a read of a mapped object's attribute goes through the ORM's descriptor.
    status, estimated, reference = proposal.status, proposal.estimated_notional, proposal.reference_price
    if status == "approved":
        message = "Approved. Call execute_trade with this proposal_id to send it."
    elif status == "pending_approval":
        message = ("Needs a person's approval (above this agent's auto-approval limit or approval mode). "
                   "Call execute_trade: the person is asked in the client, or approves out of band.")
    else:
        message = "Rejected: " + "; ".join(f"{v.code}: {v.message}" for v in violations)
    return ProposeResult(proposal_id=proposal.id, status=status,  # type: ignore[arg-type]
                         violations=violations,
                         estimated_notional=estimated.quantize(CENT) if estimated is not None else None,
                         reference_price=price_text(reference) if reference is not None else None,
                         expires_at=proposal.expires_at,
                         trading_mode=proposal.trading_mode, message=message)  # type: ignore[arg-type]


async def execute_trade(
    proposal_id: Annotated[str, Field(min_length=1, max_length=64)],
    ctx: Context,
    # Filled by the resolver (a person's answer in the client), never by the agent: not in the input schema.
    approval: Annotated[ElicitationResult[ApprovalForm], Resolve(ask_approval)],
) -> ExecuteResult:
    decision, hint = client_decision(approval, ctx)
    return await run_execute(ctx, proposal_id, decision, hint)


async def run_execute(ctx: Context, proposal_id: str, decision: ClientDecision | None,
                      hint: str | None = None) -> ExecuteResult:
    def present(proposal: TradeProposal, trade: AgentTrade | None, violations: list[Violation]) -> ExecuteResult:
        result = execute_result(proposal, trade, violations)
        if any(v.code == Code.APPROVAL_REQUIRED for v in violations):
            result = result.model_copy(update={"message": awaiting_message(proposal.id, proposal.expires_at,
                                                                           hint)})
        return result

    async def operation(gate: Gate, agent: Agent) -> ExecuteResult:
        # The gate records present's result as the call's outcome in its last unit of work: the same result.
        return present(*await gate.execute(agent, proposal_id.strip(), decision, present))

    return await through_gate(ctx, "execute_trade", {"proposal_id": proposal_id}, operation)


_TRADE_STATUS = {"filled": "filled", "partially_filled": "partially_filled", "canceled": "canceled",
                 "expired": "expired", "rejected": "rejected"}
_PROPOSAL_STATUS = {"pending_approval": "awaiting_approval", "declined": "declined", "expired": "expired",
                    "rejected": "rejected", "approved": "awaiting_approval"}


def execute_result(proposal: TradeProposal, trade: AgentTrade | None, violations: list[Violation]) -> ExecuteResult:
    if trade is not None:
        status = _TRADE_STATUS.get(trade.status, "submitted")
        if trade.status == "unknown":
            message = "Sent, but the broker's answer was lost; the order is being reconciled. Check get_orders."
        elif status == "rejected":
            message = f"The broker rejected the order: {trade.reject_reason or 'no reason given'}"
        else:
            message = f"Order {status}."
        return ExecuteResult(proposal_id=proposal.id, status=status,  # type: ignore[arg-type]
                             order_id=trade.id, filled_qty=trade.filled_qty, filled_avg_price=trade.price,
                             violations=violations, trading_mode=proposal.trading_mode,  # type: ignore[arg-type]
                             message=message)
    status = _PROPOSAL_STATUS.get(proposal.status, "rejected")
    if status == "awaiting_approval" and any(v.code != Code.APPROVAL_REQUIRED for v in violations):
        status = "rejected"  # e.g. PROPOSAL_CHANGED: it will not be sent, whatever anyone approves
    message = "; ".join(f"{v.code}: {v.message}" for v in violations) or f"Proposal is {proposal.status}."
    return ExecuteResult(proposal_id=proposal.id, status=status,  # type: ignore[arg-type]
                         violations=violations, trading_mode=proposal.trading_mode,  # type: ignore[arg-type]
                         message=message, filled_qty=Decimal(0) if status != "awaiting_approval" else None)
