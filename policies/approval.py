"""Approval rules: who must say yes before a checked order may be sent. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

ApprovalOutcome = Literal["approved", "pending_approval"]


@dataclass(frozen=True)
class ApprovalPolicy:
    mode: Literal["auto", "elicit", "operator"]
    auto_approve_max_notional: Decimal


def default_policy(mode: str | None, auto_max: Decimal | None, *, live: bool) -> ApprovalPolicy:
    """Live mode defaults to a human in the client and no auto-approval; auto in live must be asked for."""
    if mode is None:
        mode = "elicit" if live else "auto"
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
    """A human's answer in the MCP client (elicitation): never something the agent can supply."""

    action: Literal["accept", "decline", "cancel"]
    by: str = "client-user"
    note: str | None = None
