"""Events: a view of the audit log, in the seed's envelope. Pure: an audit record in, an event (or None) out.

The audit log is the system of record, so an event's `event_id` is its record's sequence number: the order of
events is the chain's, a restart loses nothing, and every replica serves the same stream. One record gives at
most one event (so `event_id` is unique and "the events after N" is exact); records that are not of interest
to an operator (reads, intents) give none.

Envelope: {"event_id", "message_type", "agent_id", "timestamp", "payload"}. Payloads are built from named
fields of the record, never by copying it whole, and pass through the audit log's redaction: no secret, token
or key reaches an event.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from policies.event_kinds import KIND_ALERT, KIND_APPROVAL_REQUESTED, KIND_POSITION, KIND_PROPOSAL
from policies.redaction import redact

SIGNAL = "agent.trade.signal"
EXECUTED = "agent.trade.executed"
ORDER_UPDATED = "agent.order.updated"
POSITION_UPDATED = "agent.position.updated"
RISK_ALERT = "agent.risk.alert"
APPROVAL_REQUESTED = "approval.requested"
APPROVAL_DECIDED = "approval.decided"
REPLAY_COMPLETE = "replay.complete"

EVENT_TYPES = (SIGNAL, EXECUTED, ORDER_UPDATED, POSITION_UPDATED, RISK_ALERT, APPROVAL_REQUESTED, APPROVAL_DECIDED)


_FILLED = frozenset({"filled", "partially_filled"})


@dataclass(frozen=True)
class AuditRecord:
    """The fields of an audit record the events are derived from (an AuditEvent row has them all)."""

    seq: int
    ts: datetime
    actor: str
    kind: str
    agent_id: str | None
    tool: str | None
    payload: str  # canonical JSON


@dataclass(frozen=True)
class Event:
    event_id: int
    message_type: str
    agent_id: str | None
    timestamp: datetime
    payload: Mapping[str, Any]

    def envelope(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "message_type": self.message_type, "agent_id": self.agent_id,
                "timestamp": _zulu(self.timestamp), "payload": dict(self.payload)}


def _zulu(ts: datetime) -> str:
    ts = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pick(source: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {name: source.get(name) for name in names}


def alert(severity: str, code: str, message: str, **details: Any) -> dict[str, Any]:
    """The payload of an agent.risk.alert: severity info|warning|critical, a stable code, a one-line message."""
    return {"severity": severity, "code": code, "message": message, **details}


def _trading_state_alert(record: AuditRecord, data: Mapping[str, Any]) -> dict[str, Any]:
    state, scope, reason = data.get("state"), data.get("scope"), data.get("reason")
    who = "everyone" if scope == "*" else f"agent {scope}"
    if record.actor == "system:circuit-breaker":
        triggers = list(data.get("triggers") or [])
        code = "DENIAL_STORM" if triggers == ["denials"] else "CIRCUIT_BREAKER_TRIPPED"
        return alert("critical", code, f"circuit breaker tripped for {who}: trading is "
                     f"{'reduce-only' if state == 'reducing' else 'halted'}", scope=scope, state=state,
                     triggers=triggers, reason=reason)
    if record.actor == "system:dead-man":
        if state == "reducing":
            return alert("critical", "DEAD_MAN_REDUCE_ONLY", f"reconciliation is stale: {who} is reduce-only "
                         "until it is healthy", scope=scope, state=state, reason=reason)
        return alert("info", "DEAD_MAN_LIFTED", f"reconciliation is healthy: {who} is {state} again",
                     scope=scope, state=state)
    if state == "halted":
        return alert("critical", "TRADING_HALTED", f"trading halted for {who} by {record.actor}", scope=scope,
                     state=state, reason=reason)
    if state == "active":
        return alert("info", "TRADING_RESUMED", f"trading resumed for {who} by {record.actor}", scope=scope,
                     state=state)
    return alert("warning", "REDUCE_ONLY", f"{who} is reduce-only ({record.actor})", scope=scope, state=state,
                 reason=reason)


def _order_event(record: AuditRecord, data: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    status = data.get("to") if record.kind == "order.updated" else data.get("status")
    order_id = data.get("order_id") or data.get("proposal_id")
    proposal_id = data.get("proposal_id") or data.get("client_order_id") or data.get("order_id")
    filled_before = data.get("filled_qty_before")
    # A cancel's outcome may find the order filled: the fill itself is reported by the record that booked it.
    new_fill = (record.kind != "order.cancel_outcome" and status in _FILLED
                and (filled_before is None or str(filled_before) != str(data.get("filled_qty"))))
    if new_fill:
        return EXECUTED, {"order_id": order_id, "proposal_id": proposal_id, "status": status,
                          "broker_order_id": data.get("broker_order_id"), "filled_qty": data.get("filled_qty"),
                          "filled_avg_price": data.get("filled_avg_price")}
    payload = {"order_id": order_id, "proposal_id": proposal_id, "status": status,
               "broker_order_id": data.get("broker_order_id")}
    if data.get("from") is not None:
        payload["previous_status"] = data.get("from")
    reason = data.get("reason") or data.get("error")
    if reason:
        payload["reason"] = reason
    return ORDER_UPDATED, payload


def to_event(record: AuditRecord) -> Event | None:
    """The event an audit record stands for, or None when it is not one operators are shown."""
    kind = record.kind
    try:
        data: Mapping[str, Any] = json.loads(record.payload)
    except ValueError:
        return None
    if not isinstance(data, Mapping):
        return None
    message_type: str
    payload: dict[str, Any]
    if kind == KIND_PROPOSAL:
        message_type = SIGNAL
        payload = _pick(data, "proposal_id", "symbol", "side", "qty", "notional", "order_type", "limit_price",
                        "stop_price", "time_in_force", "strategy", "confidence", "status", "violations",
                        "estimated_notional", "reference_price")
    elif kind == KIND_APPROVAL_REQUESTED:
        message_type = APPROVAL_REQUESTED
        payload = _pick(data, "proposal_id", "symbol", "side", "qty", "notional", "order_type", "limit_price",
                        "estimated_notional", "approval_mode", "expires_at")
    elif kind == "approval.withdrawn":  # an auto-approval judged again at a higher price: a person must decide
        message_type = APPROVAL_REQUESTED
        payload = {"proposal_id": data.get("proposal_id"), "estimated_notional": data.get("notional_now"),
                   "approval_mode": data.get("approval_mode"), "reason": "auto-approval withdrawn: the notional "
                   "at the execution-time price is above the auto-approval limit"}
    elif kind in ("approval.approved", "approval.declined", "approval.refused_expired"):
        message_type = APPROVAL_DECIDED
        decision = {"approval.approved": "approved", "approval.declined": "declined"}.get(kind, "expired")
        payload = {"proposal_id": data.get("proposal_id"), "decision": decision, "decided_by": record.actor,
                   "via": data.get("via"), "note": data.get("note")}
        if data.get("trust") is not None:
            payload["trust"] = data.get("trust")
        if data.get("approved_order") is not None:  # the approver shrank the order before approving it
            payload["approved_order"] = data.get("approved_order")
    elif kind in ("order.outcome", "order.updated", "order.cancel_outcome"):
        message_type, payload = _order_event(record, data)
    elif kind == KIND_POSITION:
        message_type = POSITION_UPDATED
        payload = _pick(data, "symbol", "qty", "avg_entry_price", "realized_pl", "order_id")
    elif kind == "trading_state.changed":
        message_type, payload = RISK_ALERT, _trading_state_alert(record, data)
    elif kind == "reconcile.drift":
        drift = data.get("drift") or {}
        message_type = RISK_ALERT
        payload = (alert("critical", "RECONCILIATION_DRIFT", f"positions differ from the broker's in "
                         f"{', '.join(sorted(drift))}", drift=drift) if drift
                   else alert("info", "RECONCILIATION_DRIFT_CLEARED", "positions match the broker's again"))
    elif kind == KIND_ALERT:
        message_type = RISK_ALERT
        payload = alert(str(data.get("severity", "warning")), str(data.get("code", "ALERT")),
                        str(data.get("message", "")), **{k: v for k, v in data.items()
                                                         if k not in ("severity", "code", "message")})
    else:
        return None
    return Event(event_id=record.seq, message_type=message_type, agent_id=record.agent_id, timestamp=record.ts,
                 payload=redact(payload))


def events_of(records: Iterable[AuditRecord]) -> list[Event]:
    return [event for event in map(to_event, records) if event is not None]


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader wants: some types (empty: all; "*" allowed) and one agent (None: every agent)."""

    types: frozenset[str] = frozenset()
    agent: str | None = None

    @classmethod
    def of(cls, types: Collection[str] | None = None, agent: str | None = None) -> EventFilter:
        chosen = frozenset(t.strip() for t in (types or ()) if t.strip())
        return cls(types=frozenset() if "*" in chosen else chosen, agent=agent or None)

    def unknown_types(self) -> list[str]:
        return sorted(self.types - set(EVENT_TYPES))

    def matches(self, event: Event) -> bool:
        return ((not self.types or event.message_type in self.types)
                and (self.agent is None or event.agent_id == self.agent))


def as_record(row: Any) -> AuditRecord:
    """An AuditRecord from an audit_events row (ORM object or Core row)."""
    return AuditRecord(seq=row.seq, ts=row.ts, actor=row.actor, kind=row.kind, agent_id=row.agent_id,
                       tool=row.tool, payload=row.payload)
