"""Operator views of the audit log: search, the head, verification. Part of the operator layer: each function
takes the `Operator` acting and checks its role first (reading the log is a READ)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ledger.models import AuditEvent, AuditHead
from policies import anchoring, audit, bindings
from policies.audit import GENESIS_HASH, MAX_PROBLEMS, VerifyReport
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
class AuditVerdict:
    """What `tradewarden audit verify` says, for the operator API and console: the chain, the signed checkpoints
    (when [audit] anchoring is configured) and the rows bound to their audit records."""

    report: VerifyReport
    problems: list[str]  # one line each: chain links, checkpoints, rows not bound to their records
    anchoring: str  # one sentence: off, on without checkpoints, or how far the newest checkpoint covers
    legacy_rows: int

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class LastVerify:
    at: datetime
    ok: bool
    records: int
    by: str


_last_verify: list[LastVerify] = []  # this process's last verify through the operator layer (the overview)


def last_verify() -> LastVerify | None:
    return _last_verify[-1] if _last_verify else None


def _anchoring(report: VerifyReport, checkpoints: anchoring.CheckpointSet | None) -> str:
    if checkpoints is None:
        return ("anchoring is off ([audit] not configured): a database writer who recomputes every hash would not "
                "be detected")
    latest = checkpoints.latest
    if latest is None:
        return "anchoring is on but there are no checkpoints yet: nothing is anchored"
    return (f"anchored: {checkpoints.count} signed checkpoints match; the newest covers record {latest.seq}; "
            f"{max(report.head_seq - latest.seq, 0)} newer records not yet checkpointed")


async def verify(operator: Operator, checkpoints: anchoring.CheckpointSet | None = None) -> AuditVerdict:
    """Recompute the whole chain against every valid checkpoint, and check every row is bound to its record
    (as `tradewarden audit verify` does). `checkpoints`: the deployment's, read by the caller (None: off)."""
    operator.require(Action.READ)
    async with operator.gate.sessions() as session:
        report = await audit.verify(session, checkpoints.by_seq if checkpoints else None)
        unbound, legacy = await bindings.unbound_rows(session, MAX_PROBLEMS)
    problems = [f"record {problem.seq}: {problem.message}" for problem in report.problems]
    problems += (checkpoints.problems if checkpoints else []) + unbound
    verdict = AuditVerdict(report=report, problems=problems, anchoring=_anchoring(report, checkpoints),
                           legacy_rows=legacy)
    _last_verify[:] = [LastVerify(at=operator.now, ok=verdict.ok, records=report.records, by=operator.actor)]
    return verdict
