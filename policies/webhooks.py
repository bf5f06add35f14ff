"""Webhook messages: what is POSTed for an event, how it is signed, when a failed delivery is tried again. Pure.

Body: the event's envelope as JSON (format "json"), or Slack's {"text": ...} (format "slack"). Headers:
`X-Tradewarden-Event-Id: <event_id>` and `X-Tradewarden-Signature: sha256=<hex HMAC-SHA256 of the body>` with the
endpoint's secret. A receiver checks the signature over the exact bytes it received.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

from policies.events import RISK_ALERT, Event

MAX_AGE = timedelta(hours=24)  # an event not delivered by then is given up (and counted)
FIRST_RETRY_SECONDS = 1.0
CONTENT_TYPE = "application/json"
EVENT_HEADER = "X-Tradewarden-Event-Id"
SIGNATURE_HEADER = "X-Tradewarden-Signature"


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_valid(secret: bytes, body: bytes, header: str) -> bool:
    return hmac.compare_digest(signature(secret, body), header)


def backoff(attempts: int, cap_seconds: float) -> timedelta:
    """Wait before attempt `attempts` + 1: 1 s, 2 s, 4 s ... up to cap_seconds."""
    return timedelta(seconds=min(cap_seconds, FIRST_RETRY_SECONDS * 2 ** max(0, min(attempts - 1, 30))))


def _slack_escape(text: str) -> str:
    """Slack reads &, < and > as markup (links, mentions): agent-supplied text must not become any."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def summary(event: Event) -> str:
    """One line for a person (Slack, the terminal)."""
    p: dict[str, Any] = dict(event.payload)
    who = event.agent_id or "all agents"
    if event.message_type == RISK_ALERT:
        return f"[{str(p.get('severity', '')).upper()}] {p.get('code')}: {p.get('message')}"
    if event.message_type == "agent.trade.signal":
        size = f"qty {p['qty']}" if p.get("qty") is not None else f"notional {p.get('notional')}"
        codes = f" ({', '.join(p.get('violations') or [])})" if p.get("violations") else ""
        return f"{who} proposes {p.get('side')} {p.get('symbol')} {size}: {p.get('status')}{codes}"
    if event.message_type == "agent.trade.executed":
        return f"{who} filled {p.get('filled_qty')} at {p.get('filled_avg_price')} (order {p.get('order_id')})"
    if event.message_type == "agent.order.updated":
        return f"{who} order {p.get('order_id')} is {p.get('status')}"
    if event.message_type == "agent.position.updated":
        return f"{who} position {p.get('symbol')}: {p.get('qty')} @ {p.get('avg_entry_price')}"
    if event.message_type == "approval.requested":
        return (f"{who} asks approval: {p.get('side')} {p.get('symbol')} ~{p.get('estimated_notional')} "
                f"(proposal {p.get('proposal_id')}, expires {p.get('expires_at')})")
    if event.message_type == "approval.decided":
        return f"proposal {p.get('proposal_id')} of {who} {p.get('decision')} by {p.get('decided_by')}"
    return f"{event.message_type} {who}"


def body(event: Event, fmt: str) -> bytes:
    if fmt == "slack":
        text = f"tradewarden #{event.event_id} {event.message_type}: {summary(event)}"
        return json.dumps({"text": _slack_escape(text)}, ensure_ascii=False).encode()
    from policies.audit import canonical_json

    return canonical_json(event.envelope()).encode()


def headers(event: Event, secret: bytes, content: bytes) -> dict[str, str]:
    return {"Content-Type": CONTENT_TYPE, EVENT_HEADER: str(event.event_id),
            SIGNATURE_HEADER: signature(secret, content), "User-Agent": "tradewarden-webhooks"}
