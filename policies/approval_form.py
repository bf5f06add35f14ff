"""What a person is shown before approving a trade: the order exactly as it would be sent, the agent, its
reasoning, the trading mode, and warnings. Pure: used by the elicitation form (tools/approval.py) and by
`tradewarden approvals list`."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from policies.approval import ApprovalPolicy
from policies.orders import decimal_text
from policies.text import inert

if TYPE_CHECKING:
    from ledger.models import TradeProposal

REASONING_SHOWN = 1500  # characters of the agent's reasoning shown to the person


# --- the message the person reads ------------------------------------------------------------------
# Built only from the stored proposal and the agent's settings, never from the clock or live prices: on
# 2026-07-28 connections the answer is accepted only for the exact question that was shown, so the text
# must be the same in every round.

def approval_message(proposal: TradeProposal, policy: ApprovalPolicy | None) -> str:
    live = proposal.trading_mode == "live"
    lines: list[str] = []
    if live:
        lines += ["LIVE TRADING - REAL MONEY", ""]
    lines += [
        "Approve this order? Tick 'approve' and Accept to send it to the broker exactly as shown. "
        "Decline rejects it for good. Cancel decides nothing (it stays pending).",
        "",
        f"Order:      {order_line(proposal)}",
        f"Estimated:  {money_text(proposal.estimated_notional)}"
        + (f" at reference price {money_text(proposal.reference_price)}" if proposal.reference_price else ""),
        *exit_lines(proposal),
        f"Mode:       {'LIVE (real money)' if live else 'paper (no real money)'}",
        f"Agent:      {inert(proposal.agent_id)}" + _agent_details(proposal),
        f"Reasoning (the agent's own words): \"{_one_line(proposal.reasoning, REASONING_SHOWN)}\"",
        f"Proposal:   {proposal.id}, expires {utc_text(proposal.expires_at)}",
    ]
    warnings = approval_warnings(proposal, policy)
    if warnings:
        lines += ["", "Warnings:"] + [f"- {w}" for w in warnings]
    lines += ["", "After approval the order is checked again against the agent's limits and fresh market data "
                  "before it is sent; it is sent at most once."]
    return "\n".join(lines)


def order_line(proposal: TradeProposal) -> str:
    side = inert(proposal.side.upper())
    symbol = inert(proposal.symbol)
    if proposal.qty is not None:
        amount = f"{side} {decimal_text(proposal.qty)} {symbol}"
    else:
        amount = f"{side} ${decimal_text(proposal.notional)} of {symbol}"
    kind = proposal.order_type.replace("_", "-")
    prices = []
    if proposal.stop_price is not None:
        prices.append(f"stop ${decimal_text(proposal.stop_price)}")
    if proposal.limit_price is not None:
        prices.append(f"limit ${decimal_text(proposal.limit_price)}")
    extended = ", extended hours" if proposal.extended_hours else ""
    return f"{amount}, {kind} order{' ' + ', '.join(prices) if prices else ''}, " \
           f"time in force {proposal.time_in_force}{extended}"


def exit_lines(proposal: TradeProposal) -> list[str]:
    """The order's exits and the money at risk (qty x distance from the entry to the stop; the whole
    estimate without a stop), from the stored proposal only."""
    exits = proposal.exits or {}
    parts = []
    if (sl := exits.get("stop_loss")) is not None:
        parts.append(f"stop-loss ${sl['stop_price']}" + (f" (stop-limit ${sl['limit_price']})"
                                                          if sl.get("limit_price") else ""))
    if (ts := exits.get("trailing_stop")) is not None:
        parts.append(f"trailing stop {ts['percent']}%" if ts.get("percent") else f"trailing stop ${ts['price']}")
    if (tp := exits.get("take_profit")) is not None:
        parts.append(f"take-profit ${tp['limit_price']}")
    lines = [f"Exits:      {', '.join(parts)} (one cancels the other; they work once the order fills)"] if parts \
        else []
    return [*lines, f"At risk:    {risk_text(proposal)}"]


def risk_text(proposal: TradeProposal) -> str:
    exits = proposal.exits or {}
    entry = proposal.limit_price if proposal.order_type == "limit" else proposal.reference_price
    if entry is None:
        return "unknown (no price estimate)"
    qty = proposal.qty if proposal.qty is not None else (proposal.notional or Decimal(0)) / entry
    if (sl := exits.get("stop_loss")) is not None:
        distance = abs(entry - Decimal(sl["stop_price"]))
    elif (ts := exits.get("trailing_stop")) is not None:
        distance = entry * Decimal(ts["percent"]) / 100 if ts.get("percent") else Decimal(ts["price"])
    else:
        return f"{money_text(qty * entry)} - no stop: the whole position"
    return f"{money_text(qty * distance)} ({decimal_text(qty)} x ${distance:,.2f} from the entry to the stop)"


def approval_warnings(proposal: TradeProposal, policy: ApprovalPolicy | None) -> list[str]:
    """Derived from the stored proposal and the agent's approval policy only (see above)."""
    warnings: list[str] = []
    if proposal.trading_mode == "live":
        warnings.append("LIVE mode: this order spends real money.")
    if (policy is not None and policy.mode == "auto" and proposal.estimated_notional is not None
            and proposal.estimated_notional > policy.auto_approve_max_notional):
        warnings.append(f"Above this agent's auto-approval limit of {money_text(policy.auto_approve_max_notional)}.")
    if proposal.estimated_notional is None:
        warnings.append("No price estimate was available when the trade was proposed.")
    if proposal.order_type in ("market", "stop"):
        warnings.append("Market execution: the fill price can differ from the estimate.")
    if proposal.notional is not None:
        warnings.append("Dollar-amount order: the quantity is decided when it fills.")
    reference = proposal.reference_price
    if proposal.limit_price is not None and reference:
        gap = (proposal.limit_price - reference) / reference * 100
        worse = gap > 5 if proposal.side == "buy" else gap < -5
        if worse:
            warnings.append(f"Limit price is {abs(gap):.1f}% {'above' if gap > 0 else 'below'} the reference "
                            "price.")
    if proposal.time_in_force == "gtc":
        warnings.append("Good-till-canceled: the order can stay open for days.")
    if proposal.extended_hours:
        warnings.append("Extended hours: thinner liquidity, wider spreads.")
    if proposal.confidence is not None and proposal.confidence < 0.5:
        warnings.append(f"The agent's own confidence is low ({proposal.confidence:.2f}).")
    return warnings


def _agent_details(proposal: TradeProposal) -> str:
    parts = []
    if proposal.strategy:
        parts.append(f"strategy {inert(proposal.strategy)}")
    if proposal.confidence is not None:
        parts.append(f"confidence {proposal.confidence:.2f}")
    return f" ({', '.join(parts)})" if parts else ""


def money_text(value: Decimal | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _one_line(text: str, limit: int) -> str:
    """The agent's text on one line and inert (policies/text.py), so it can neither fake lines of the order
    summary above it nor hide or reorder what the person reads."""
    flat = inert(text).replace('"', "'")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
