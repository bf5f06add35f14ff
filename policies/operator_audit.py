"""Operator views of the audit log: search, the head, verification. Part of the operator layer: each function
takes the `Operator` acting and checks its role first (reading the log is a READ)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ledger.models import AuditEvent, AuditHead
from policies import audit
from policies.audit import GENESIS_HASH, VerifyReport
from policies.operators import Action

if TYPE_CHECKING:
    from policies.operator import Operator

MAX_RECORDS = 500


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    event_id: str
    ts: datetime
    actor: str
    agent_id: str | None
    kind: str
    tool: str | None
    payload: Any
    hash: str


@dataclass(frozen=True)
class AuditQuery:
    """Newest first. `before`: only records with a lower sequence number (paging back); `text`: a substring of
    the payload, kind or actor (case-insensitive)."""

    before: int | None = None
    kind: str | None = None
    agent_id: str | None = None
    actor: str | None = None
    text: str | None = None
    limit: int = 50


def _record(row: AuditEvent) -> AuditRecord:
    try:
        payload = json.loads(row.payload)
    except ValueError:
        payload = row.payload
    return AuditRecord(seq=row.seq, event_id=row.event_id, ts=row.ts, actor=row.actor, agent_id=row.agent_id,
                       kind=row.kind, tool=row.tool, payload=payload, hash=row.hash)


async def search(operator: Operator, query: AuditQuery) -> list[AuditRecord]:
    operator.require(Action.READ)
    statement = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(max(1, min(query.limit, MAX_RECORDS)))
    if query.before is not None:
        statement = statement.where(AuditEvent.seq < query.before)
    if query.kind:
        statement = statement.where(AuditEvent.kind.startswith(query.kind, autoescape=True))
    if query.agent_id:
        statement = statement.where(AuditEvent.agent_id == query.agent_id)
    if query.actor:
        statement = statement.where(AuditEvent.actor == query.actor)
    if query.text:
        needle = query.text.lower()
        statement = statement.where(AuditEvent.payload.icontains(needle, autoescape=True)
                                    | AuditEvent.kind.icontains(needle, autoescape=True)
                                    | AuditEvent.actor.icontains(needle, autoescape=True))
    async with operator.gate.sessions() as session:
        return [_record(row) for row in (await session.execute(statement)).scalars()]


async def head(operator: Operator) -> tuple[int, str]:
    """(sequence number, hash) of the newest record."""
    operator.require(Action.READ)
    async with operator.gate.sessions() as session:
        row = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one_or_none()
    return (row.seq, row.hash) if row is not None else (0, GENESIS_HASH)


@dataclass(frozen=True)
class LastVerify:
    at: datetime
    ok: bool
    records: int
    by: str


_last_verify: list[LastVerify] = []  # this process's last verify through the operator layer (the overview)


def last_verify() -> LastVerify | None:
    return _last_verify[-1] if _last_verify else None


async def verify(operator: Operator) -> VerifyReport:
    """Recompute the whole chain (as `tradewarden audit verify` does)."""
    operator.require(Action.READ)
    async with operator.gate.sessions() as session:
        report = await audit.verify(session)
    _last_verify[:] = [LastVerify(at=operator.now, ok=report.ok, records=report.records, by=operator.actor)]
    return report
