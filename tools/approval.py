"""A person's approval in the MCP client: the elicitation form, the resolver that decides whether to ask,
and the `proposals://{id}` resource.

`execute_trade` takes its approval as a *resolved parameter*: the SDK runs `ask_approval` before the tool
body, and when it returns `Elicit(...)` the client shows the form to its user (a standalone
`elicitation/create` request on 2025 connections; `InputRequiredResult` + `requestState` on 2026-07-28
ones). The parameter is not in the input schema, so the agent cannot fill it in; a forged `approval`
argument is dropped by argument validation.

The resolver only decides whether to *ask*. Every decision is still made by the gate, atomically, on the
proposal as stored: a replayed round, a second execute_trade or a racing out-of-band approval finds the
proposal already moved and gives no second order.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

from mcp.server.elicitation import AcceptedElicitation, CancelledElicitation, DeclinedElicitation
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.mcpserver.resolve import Elicit
from pydantic import BaseModel, Field

from policies.approval import ClientDecision
from policies.approval_form import approval_message, utc_text
from policies.orders import decimal_text
from policies.violations import GateDenied
from tools.common import app_of
from tradewarden.log import get_logger

if TYPE_CHECKING:
    from ledger.models import AgentTrade, TradeProposal

log = get_logger("tradewarden.approval")

PROPOSAL_URI = "proposals://{proposal_id}"


class ApprovalForm(BaseModel):
    """Tick 'approve' and press Accept to send the order; Decline rejects it."""

    approve: bool = Field(default=False, title="Approve: send this exact order",
                          description="Tick, then Accept, to send the order shown above to the broker.")
    note: str = Field(default="", max_length=500, title="Note (optional)",
                      description="Stored with the decision in the audit log.")


NotAskedReason = Literal["not_pending", "operator_only", "operator_url", "no_elicitation", "error"]


@dataclass(frozen=True)
class NotAsked:
    """The resolver's answer when nobody was asked in the client; the gate then decides alone (and explains
    why). `console_url`: the operator console's page for the proposal, when the deployment has a public URL."""

    reason: NotAskedReason
    console_url: str | None = None


def console_approval_url(public_url: str | None, proposal_id: str) -> str | None:
    """The console's approval page of a proposal, on the deployment's public origin (None without one)."""
    if not public_url:
        return None
    parts = urlsplit(public_url)
    return f"{parts.scheme}://{parts.netloc}/console/approvals/{quote(proposal_id, safe='')}"


def can_elicit_url(ctx: Context) -> bool:
    try:
        capabilities = ctx.client_capabilities
    except Exception:
        return False
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and elicitation.url is not None


async def ask_operator_in_console(ctx: Context, agent: Any, proposal: TradeProposal, url: str | None
                                  ) -> NotAsked:
    """An `operator`-mode proposal: the person approves in the console, authenticated there, never through the
    agent's client. A client with URL-mode elicitation is asked to open the console's page for it (its answer
    decides nothing: it only says whether the person went there); others get the link in the message."""
    if url is None or not can_elicit_url(ctx):
        return NotAsked("operator_only", url)
    try:
        await ctx.elicit_url(f"An operator must approve this order in the tradewarden console: "
                             f"{approval_message(proposal, agent.approval)}", url, f"approval-{proposal.id}")
    except Exception as error:  # the link is in the message anyway
        log.info("url_elicitation_failed", error=type(error).__name__)
    return NotAsked("operator_url", url)


def can_elicit_form(ctx: Context) -> bool:
    """The client declared form elicitation (a bare `elicitation: {}` counts, as in the SDK's own check).
    Asked first, so an Elicit never fails with -32021 in front of the agent."""
    try:
        capabilities = ctx.client_capabilities
    except Exception:  # outside a request: nobody to ask
        return False
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


async def ask_approval(proposal_id: str, ctx: Context) -> NotAsked | Elicit[ApprovalForm]:
    """Ask the person in the client, but only when the proposal is pending approval, still valid, and the
    agent's approval mode lets the client decide (elicit, or auto above its ceiling; never operator).
    Never fails: anything unexpected means "not asked", and the gate, which audits, explains."""
    try:
        app = app_of(ctx)
        gate = app.gate
        if gate.approved_unread(app.agent_id(), proposal_id.strip()):  # approved by policy: nobody to ask
            return NotAsked("not_pending")
        try:  # one read for both; the execution that follows reuses it (and reads both again under its locks)
            agent, found = await gate.agent_and_proposal(app.agent_id(), proposal_id.strip())
        except GateDenied:
            return NotAsked("error")
        proposal = found[0] if found is not None and gate.awaits_client_decision(agent, *found) else None
        if proposal is None and agent.approval.mode == "operator":
            if found is None:  # not this agent's proposal: the gate explains
                return NotAsked("error")
            waiting = found[0]
            runtime = getattr(app, "runtime", None)
            url = console_approval_url(runtime.config.server.public_url if runtime is not None else None,
                                       waiting.id)
            if waiting.status != "pending_approval" or waiting.expires_at <= gate.clock():
                return NotAsked("operator_only", url)
            return await ask_operator_in_console(ctx, agent, waiting, url)
        if proposal is None:
            return NotAsked("not_pending")
        if not can_elicit_form(ctx):
            return NotAsked("no_elicitation")
        return Elicit(approval_message(proposal, agent.approval), ApprovalForm)
    except Exception as error:  # a resolver crash must not become an approval, nor lose the proposal
        log.warning("approval_resolver_failed", error=type(error).__name__)
        return NotAsked("error")


def client_decision(outcome: Any, ctx: Context) -> tuple[ClientDecision | None, str | None]:
    """Turn the resolved parameter into the gate's ClientDecision (None: nobody was asked), plus a note
    for the agent when the person did not decide."""
    client = _client_name(ctx)
    if isinstance(outcome, AcceptedElicitation):
        data = outcome.data
        if isinstance(data, ApprovalForm):
            note = data.note.strip() or None
            if data.approve:
                return ClientDecision(action="accept", note=note, client_name=client), None
            return (ClientDecision(action="cancel", note=note, client_name=client),
                    "The person pressed Accept without ticking 'approve', so nothing was decided.")
        if isinstance(data, NotAsked):
            hint = _NOT_ASKED_HINT.get(data.reason)
            if data.console_url and data.reason in ("operator_only", "operator_url"):
                hint = f"{hint} Approval page in the operator console: {data.console_url}"
            return None, hint
        return None, None
    if isinstance(outcome, DeclinedElicitation):
        return ClientDecision(action="decline", client_name=client), None
    if isinstance(outcome, CancelledElicitation):
        return (ClientDecision(action="cancel", client_name=client),
                "The person closed the approval form without deciding.")
    return None, None


_NOT_ASKED_HINT: dict[str, str] = {
    "no_elicitation": "This MCP client cannot show an approval form, so a person must approve it out of band.",
    "operator_only": "This agent's trades are approved only by an operator, out of band.",
    "operator_url": "This agent's trades are approved only by an operator: your client was asked to open the "
                    "operator console's page for it, where a person approves, authenticated.",
}


def awaiting_message(proposal_id: str, expires_at: datetime, hint: str | None) -> str:
    """What the agent reads when its trade waits for a person."""
    lead = f"{hint} " if hint else ""
    return (f"{lead}Proposal {proposal_id} is still pending approval (until {utc_text(expires_at)}): a person can "
            f"approve it with `tradewarden approvals approve {proposal_id}`; then call execute_trade again. "
            "Do not propose the same trade again.")


def _client_name(ctx: Context) -> str | None:
    """The name the client software gives itself (clientInfo.name). The client chose it, so it is kept only as
    a note beside the decision, never as the approver (the gate records `client:AGENT_ID`)."""
    try:
        params = ctx.session.client_params
        name = params.client_info.name if params is not None else None
    except Exception:
        name = None
    clean = re.sub(r"[^A-Za-z0-9._ -]", "", name or "")[:60].strip()
    return clean or None


# --- the proposals://{id} resource ------------------------------------------------------------------

async def read_proposal(proposal_id: str, ctx: Context) -> str:
    """A proposal of the calling agent as JSON: its order, status, approval and order outcome."""
    app = app_of(ctx)
    try:
        agent = await app.gate.load_agent(app.agent_id())
        proposal, trade = await app.gate.read_proposal(agent, proposal_id.strip())
    except GateDenied:
        raise ResourceNotFoundError(f"no proposal {proposal_id} for this agent") from None
    return json.dumps(proposal_document(proposal, trade), separators=(",", ":"))


def proposal_document(proposal: TradeProposal, trade: AgentTrade | None) -> dict[str, Any]:
    def text(value: Decimal | None) -> str | None:
        return decimal_text(value)

    def when(moment: datetime | None) -> str | None:
        return moment.astimezone(UTC).isoformat() if moment is not None else None

    return {
        "proposal_id": proposal.id, "agent_id": proposal.agent_id, "status": proposal.status,
        "order": {"symbol": proposal.symbol, "side": proposal.side, "qty": text(proposal.qty),
                  "notional": text(proposal.notional), "order_type": proposal.order_type,
                  "limit_price": text(proposal.limit_price), "stop_price": text(proposal.stop_price),
                  "time_in_force": proposal.time_in_force, "extended_hours": proposal.extended_hours},
        "order_hash": proposal.order_hash, "estimated_notional": text(proposal.estimated_notional),
        "reference_price": text(proposal.reference_price), "strategy": proposal.strategy,
        "reasoning": proposal.reasoning, "violations": proposal.violations,
        "approval_mode": proposal.approval_mode, "trading_mode": proposal.trading_mode,
        "created_at": when(proposal.created_at), "expires_at": when(proposal.expires_at),
        "decision": ({"by": proposal.decided_by, "via": proposal.decided_via, "at": when(proposal.decided_at),
                      "note": proposal.decision_note} if proposal.decided_at is not None else None),
        "trade": ({"order_id": trade.id, "broker_order_id": trade.order_id, "status": trade.status,
                   "filled_qty": text(trade.filled_qty), "filled_avg_price": text(trade.price)}
                  if trade is not None else None),
    }


def proposal_uri(proposal_id: str) -> str:
    return PROPOSAL_URI.format(proposal_id=proposal_id)
