"""Approval rules: who must say yes before a checked order may be sent. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from policies.orders import OrderRequest, StopLoss, decimal_text, exit_edit_problem

ApprovalOutcome = Literal["approved", "pending_approval"]


@dataclass(frozen=True)
class ApprovalPolicy:
    mode: Literal["auto", "elicit", "operator"]
    auto_approve_max_notional: Decimal


def default_policy(mode: str | None, auto_max: Decimal | None, *, live: bool) -> ApprovalPolicy:
    """Live mode defaults to an authenticated operator and no auto-approval: a form in the agent's own client
    trusts whoever runs that client, so `elicit` (or `auto`) in live must be asked for."""
    if mode is None:
        mode = "operator" if live else "auto"
    if auto_max is None:
        auto_max = Decimal(0) if live else Decimal(1000)
    return ApprovalPolicy(mode=mode, auto_approve_max_notional=auto_max)  # type: ignore[arg-type]


def approval_for(policy: ApprovalPolicy, estimated_notional: Decimal | None) -> ApprovalOutcome:
    """Auto-approve only in auto mode, only a priced order, only within the auto-approval ceiling."""
    if (policy.mode == "auto" and estimated_notional is not None
            and estimated_notional <= policy.auto_approve_max_notional):
        return "approved"
    return "pending_approval"


@dataclass(frozen=True)
class ClientDecision:
    """An answer to the approval form in the agent's MCP client (elicitation). Nothing in it names the
    approver: whoever runs that client decided, and the gate records `client:AGENT_ID` with trust `client`.
    What the client sends about itself (its software name, a note) is kept only as a note."""

    action: Literal["accept", "decline", "cancel"]
    note: str | None = None
    client_name: str | None = None  # clientInfo.name: chosen by the client, descriptive only


class ShrinkRefused(ValueError):
    """An approver's edit that would not make the order smaller or its price no worse; one line, with a code."""


def shrink(order: OrderRequest, *, qty: Decimal | None = None, limit_price: Decimal | None = None,
           stop_loss: Decimal | None = None) -> OrderRequest:
    """The order an approver approves after shrinking it: a lower quantity (above zero) and/or a limit price no
    worse for the account (a buy's no higher, a sell's no lower), only on limit and stop-limit orders, and/or a
    protective stop tightened (moved toward the entry, or added), never loosened (policies.orders
    .exit_edit_problem). Anything else is refused: an approver can take risk away from a proposal, never add it."""
    if qty is None and limit_price is None and stop_loss is None:
        return order
    changes: dict[str, Any] = {}
    if stop_loss is not None:
        if not stop_loss.is_finite() or stop_loss <= 0:
            raise ShrinkRefused(f"INVALID_ARGUMENT: the stop-loss must be a positive price, not {stop_loss}")
        kept_limit = order.stop_loss.limit_price if order.stop_loss is not None else None
        tightened = order.model_copy(update={"stop_loss": StopLoss(stop_price=stop_loss, limit_price=kept_limit)})
        problem = exit_edit_problem(order, tightened)
        if problem is not None:
            raise ShrinkRefused(f"INVALID_ARGUMENT: {problem}")
        changes["stop_loss"] = tightened.stop_loss
    if qty is not None:
        if order.qty is None:
            raise ShrinkRefused("INVALID_ARGUMENT: --qty applies to orders given in shares or units; this one is "
                                f"a dollar amount (${decimal_text(order.notional)})")
        if not qty.is_finite() or qty <= 0 or qty > order.qty:
            raise ShrinkRefused(f"INVALID_ARGUMENT: qty must be above 0 and at most the proposed "
                                f"{decimal_text(order.qty)}, not {qty}")
        changes["qty"] = qty
    if limit_price is not None:
        if order.order_type not in ("limit", "stop_limit") or order.limit_price is None:
            raise ShrinkRefused(f"INVALID_ARGUMENT: --limit-price applies to limit and stop_limit orders; this is "
                                f"a {order.order_type} order")
        worse = limit_price > order.limit_price if order.side == "buy" else limit_price < order.limit_price
        if not limit_price.is_finite() or limit_price <= 0 or worse:
            bound = "at most" if order.side == "buy" else "at least"
            raise ShrinkRefused(f"INVALID_ARGUMENT: a {order.side}'s limit price may only get better: {bound} "
                                f"{decimal_text(order.limit_price)}, not {limit_price}")
        changes["limit_price"] = limit_price
    return order.model_copy(update=changes)
