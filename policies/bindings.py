"""Rows bound to the audit records that created them.

A proposal, an approval and a trade (agent_trades) each store `audit_event_id`: the event id of the audit record
that last set their decisive fields, and that record's payload carries `"binds": {TABLE: DIGEST}`, the sha256
of those fields. The record is in the hash chain, which checkpoints anchor outside the database. So a row
written behind the gate's back (an approvals row inserted by hand, a status flipped to approved, an edited
order) has no record that binds it, or a record whose digest differs: `execute_trade` refuses it
(AUDIT_MISMATCH) and `audit verify` reports it.

Rows older than the binding (from before migration 0003) hold `audit_event_id = "legacy"`: they never execute
and verify counts them without failing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ledger.db import execute
from ledger.models import AgentTrade, Approval, AuditEvent, TradeProposal
from policies import audit
from policies.audit import canonical_json

LEGACY = "legacy"  # rows created before rows were bound (migration 0003)
PROPOSALS, APPROVALS, TRADES = "trade_proposals", "approvals", "agent_trades"

# The fields that decide what is sent to the broker, and for whom, per table.
_DECISIVE = {
    PROPOSALS: ("id", "agent_id", "order_hash", "strategy", "approval_mode", "trading_mode", "expires_at"),
    APPROVALS: ("proposal_id", "decision", "decided_by", "via", "trust", "order_hash"),
    TRADES: ("id", "proposal_id", "agent_id", "client_order_id", "symbol", "side", "quantity", "notional",
             "order_type", "limit_price", "stop_price", "time_in_force"),
}


def new_event_id() -> str:
    """The id of the audit record about to be appended, so the row can name it in the same transaction."""
    return audit.new_event_id()


def _value(row: Any, name: str) -> Any:
    # A dict (the values a unit of work inserts) is recognised by its type: isinstance against the abstract
    # Mapping costs more than the lookup, and a digest looks up a dozen fields.
    value = row[name] if type(row) is dict or isinstance(row, Mapping) else getattr(row, name)
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


def _values(row: Any, names: tuple[str, ...]) -> list[Any]:
    """[_value(row, name) for name in names], the row's kind judged once rather than per field."""
    found = ([row[name] for name in names] if type(row) is dict or isinstance(row, Mapping)
             else [getattr(row, name) for name in names])
    return [value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value for value in found]


def digest(table: str, row: Any) -> str:
    """sha256 of the row's decisive fields (a mapping of column values, or a model object / result row)."""
    return hashlib.sha256(canonical_json([table, *_values(row, _DECISIVE[table])]).encode()).hexdigest()


def changed(table: str, row: Any, **changes: Any) -> dict[str, Any]:
    """The row's decisive fields as they will be once `changes` are written (for a record of that change)."""
    names = _DECISIVE[table]
    return {**dict(zip(names, _values(row, names), strict=True)), **changes}


def binds(**rows: Any) -> dict[str, dict[str, str]]:
    """The `binds` entry of a record's payload: binds(trade_proposals=values, approvals=values)."""
    return {"binds": {table: digest(table, row) for table, row in rows.items()}}


def _bound_digest(payload: str | None, table: str) -> str | None:
    if payload is None:
        return None
    try:
        value = json.loads(payload).get("binds", {}).get(table)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def mismatch(table: str, row: Any, record_payload: str | None) -> str | None:
    """Why the row is not bound to its record (None if it is)."""
    if _value(row, "audit_event_id") == LEGACY:
        return "it was written before rows were bound to audit records"
    bound = _bound_digest(record_payload, table)
    if bound is None:
        return "no audit record binds it (written outside the gate)"
    if bound != digest(table, row):
        return "it differs from its audit record (changed outside the gate)"
    return None


async def _payloads(connection: AsyncSession | AsyncConnection, event_ids: list[str]) -> dict[str, str]:
    wanted = [e for e in event_ids if e and e != LEGACY]
    if not wanted:
        return {}
    rows = await execute(connection, select(AuditEvent.event_id, AuditEvent.payload)
                         .where(AuditEvent.event_id.in_(wanted)))
    return {row.event_id: row.payload for row in rows}


async def execution_problem(connection: AsyncSession | AsyncConnection, proposal: TradeProposal) -> str | None:
    """Why an approved proposal must not execute because it or its approval is not bound to its audit record
    (None if both are)."""
    approval = (await execute(connection, select(Approval).where(Approval.proposal_id == proposal.id,
                                                                  Approval.decision == "approved")
                              .order_by(Approval.id.desc()).limit(1))).first()
    if approval is None:
        return "the proposal has no approval"
    payloads = await _payloads(connection, [proposal.audit_event_id or "", approval.audit_event_id or ""])
    return bound_problem(proposal, payloads.get(proposal.audit_event_id or ""), approval._mapping,
                         payloads.get(approval.audit_event_id or ""))


def bound_problem(proposal: Any, proposal_payload: str | None, approval: Mapping[Any, Any] | None,
                  approval_payload: str | None) -> str | None:
    """execution_problem on rows already read: the proposal (model object or row), the payload of the record it
    names, its latest approval (a row mapping, None if none) and the payload of the record that one names."""
    if approval is None:
        return "the proposal has no approval"
    why = mismatch(PROPOSALS, proposal, proposal_payload)
    if why is not None:
        return f"the proposal: {why}"
    why = mismatch(APPROVALS, approval, approval_payload)
    if why is not None:
        return f"its approval: {why}"
    if _value(proposal, "decided_via") != approval["via"]:
        # e.g. an auto-approval withdrawn at execution (back to pending) and the status flipped back by hand:
        # the proposal must carry the way its latest recorded approval was given, which decides re-judgement
        return (f"the proposal says it was approved via {_value(proposal, 'decided_via') or 'nothing'} but its "
                f"latest recorded approval was via {approval['via']}")
    return None


_BATCH = 1000


async def _rows(session: AsyncSession, table: Table, key: str) -> AsyncIterator[tuple[Any, str | None]]:
    """Every row of a bound table with the payload of the record it names, by primary key in batches."""
    column = table.c[key]
    after: Any = None
    while True:
        query = (select(table, AuditEvent.payload.label("_record_payload"))
                 .outerjoin(AuditEvent, AuditEvent.event_id == table.c.audit_event_id)
                 .order_by(column).limit(_BATCH))
        if after is not None:
            query = query.where(column > after)
        rows = (await session.execute(query)).all()
        for row in rows:
            yield row._mapping, row._mapping["_record_payload"]
        if len(rows) < _BATCH:
            return
        after = rows[-1]._mapping[key]


async def unbound_rows(session: AsyncSession, limit: int) -> tuple[list[str], int]:
    """Problems (at most `limit`) with rows not bound to their audit records, and how many legacy rows."""
    problems: list[str] = []
    legacy = 0
    for model, key in ((TradeProposal, "id"), (Approval, "id"), (AgentTrade, "id")):
        table: Table = model.__table__  # type: ignore[assignment]
        async for row, payload in _rows(session, table, key):
            if row["audit_event_id"] == LEGACY:
                legacy += 1
                continue
            why = mismatch(table.name, row, payload)
            if why is not None and len(problems) < limit:
                label = f"proposal {row['proposal_id']}" if table.name == APPROVALS else str(row["id"])
                problems.append(f"{table.name} row {row['id']} ({label}): {why}")
    return problems, legacy
