"""The tamper-evident audit log: every record is hash-chained to the one before it.

hash(n) = sha256(hash(n-1) || canonical(record n)). The `audit_head` row holds the last (seq, hash): appends
lock it (so concurrent writers, even across replicas, build one chain) and verification compares the chain's
end with it (so truncation is caught, not only edits, deletions, insertions and reordering).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.db import execute
from ledger.models import AuditEvent, AuditHead

GENESIS_HASH = "0" * 64
REDACTED = "[REDACTED]"
_SECRET_KEYS = re.compile(r"(secret|token|password|api[_-]?key|authorization|credential)", re.IGNORECASE)
# Values that look like bearer tokens (agents' tw_, operators' twop_) or Alpaca keys, wherever they appear in text.
_SECRET_VALUES = re.compile(r"(tw(?:op)?_[A-Za-z0-9_\-]{16,}|Bearer\s+\S+|\bAK[A-Z0-9]{16,}\b|\bPK[A-Z0-9]{16,}\b)")


def redact(value: Any) -> Any:
    """Secrets never reach the audit log: keys that name a secret lose their value, and values that look
    like a token are masked wherever they appear."""
    if isinstance(value, Mapping):
        return {str(k): (REDACTED if _SECRET_KEYS.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUES.sub(REDACTED, value)
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default, ensure_ascii=False)


def record_hash(prev_hash: str, *, seq: int, event_id: str, ts: datetime, actor: str, agent_id: str | None,
                kind: str, tool: str | None, payload: str) -> str:
    body = canonical_json({"seq": seq, "event_id": event_id, "ts": ts.isoformat(), "actor": actor,
                           "agent_id": agent_id, "kind": kind, "tool": tool, "payload": payload})
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


# Built once: an append is on the path of every tool call, and a prebuilt Core statement skips the ORM's unit
# of work and SQLAlchemy's per-call statement construction (most of an append's cost).
_HEAD = cast(Table, AuditHead.__table__)
_ADVANCE_HEAD = (update(_HEAD)
                 .where(_HEAD.c.id == 1, _HEAD.c.seq == bindparam("old_seq"), _HEAD.c.hash == bindparam("old_hash"))
                 .values(seq=bindparam("new_seq"), hash=bindparam("new_hash")))
_INSERT_EVENT = insert(cast(Table, AuditEvent.__table__))

# The last head this process wrote, per database: lets an append skip reading the head. It is only a guess:
# the conditional UPDATE below checks it against the row, and a stale guess falls back to reading the head.
_head_guess: dict[str, tuple[int, str]] = {}


@dataclass(frozen=True)
class Entry:
    """A record to append: what happened, who did it, when."""

    ts: datetime
    actor: str
    kind: str
    payload: Mapping[str, Any]
    agent_id: str | None = None
    tool: str | None = None


async def append(session: AsyncSession, *, ts: datetime, actor: str, kind: str, payload: Mapping[str, Any],
                 agent_id: str | None = None, tool: str | None = None) -> AuditEvent:
    """Append one record inside the caller's transaction (it commits or rolls back with the caller's work)."""
    return (await append_many(session, [Entry(ts=ts, actor=actor, kind=kind, payload=payload, agent_id=agent_id,
                                              tool=tool)]))[0]


async def append_many(session: AsyncSession, entries: Sequence[Entry]) -> list[AuditEvent]:
    """Append records, in order, inside the caller's transaction. The conditional update of audit_head
    serialises writers: two appends can never share a predecessor. Several records move the head once."""
    bind = session.bind
    database = str(getattr(bind, "url", "")) if bind is not None else ""
    prepared = [(entry, canonical_json(redact(dict(entry.payload))), str(uuid.uuid4())) for entry in entries]
    guess = _head_guess.get(database)
    events = await _try_append(session, guess, prepared) if guess is not None else None
    if events is None:
        head = (await session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())
                ).scalar_one_or_none()
        if head is None:
            session.add(AuditHead(id=1, seq=0, hash=GENESIS_HASH))
            await session.flush()
        events = await _try_append(session, (head.seq, head.hash) if head else (0, GENESIS_HASH), prepared)
        if events is None:
            raise RuntimeError("audit chain head moved during append")
    _head_guess[database] = (events[-1].seq, events[-1].hash)
    return events


async def _try_append(session: AsyncSession, head: tuple[int, str], prepared: list[tuple[Entry, str, str]]
                      ) -> list[AuditEvent] | None:
    rows: list[dict[str, Any]] = []
    seq, prev_hash = head
    for entry, body, event_id in prepared:
        seq += 1
        digest = record_hash(prev_hash, seq=seq, event_id=event_id, ts=entry.ts, actor=entry.actor,
                             agent_id=entry.agent_id, kind=entry.kind, tool=entry.tool, payload=body)
        rows.append({"seq": seq, "event_id": event_id, "ts": entry.ts, "actor": entry.actor,
                     "agent_id": entry.agent_id, "kind": entry.kind, "tool": entry.tool, "payload": body,
                     "prev_hash": prev_hash, "hash": digest})
        prev_hash = digest
    moved = await execute(session, _ADVANCE_HEAD, {"old_seq": head[0], "old_hash": head[1], "new_seq": seq,
                                                  "new_hash": prev_hash})
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return None
    await execute(session, _INSERT_EVENT, rows if len(rows) > 1 else rows[0])
    return [AuditEvent(**row) for row in rows]


@dataclass(frozen=True)
class VerifyProblem:
    seq: int | None
    message: str


@dataclass(frozen=True)
class VerifyReport:
    records: int
    head_seq: int
    head_hash: str
    problems: list[VerifyProblem]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(events: Iterator[AuditEvent] | list[AuditEvent], head: AuditHead | None) -> VerifyReport:
    """Recompute every link. Any edit, deletion, insertion, reordering or truncation gives a problem."""
    problems: list[VerifyProblem] = []
    prev_hash = GENESIS_HASH
    expected_seq = 1
    count = 0
    for event in events:
        count += 1
        if event.seq != expected_seq:
            problems.append(VerifyProblem(event.seq, f"sequence gap or reordering: expected record {expected_seq}, "
                                                     f"found {event.seq}"))
        if event.prev_hash != prev_hash:
            problems.append(VerifyProblem(event.seq, "link broken: prev_hash does not match the previous record"))
        recomputed = record_hash(event.prev_hash, seq=event.seq, event_id=event.event_id, ts=event.ts,
                                 actor=event.actor, agent_id=event.agent_id, kind=event.kind, tool=event.tool,
                                 payload=event.payload)
        if recomputed != event.hash:
            problems.append(VerifyProblem(event.seq, "content changed: the record's hash does not match its content"))
        prev_hash = event.hash
        expected_seq = event.seq + 1
        if len(problems) >= 20:
            break
    head_seq = head.seq if head else 0
    head_hash = head.hash if head else GENESIS_HASH
    if not problems and (head_seq != expected_seq - 1 or head_hash != prev_hash):
        problems.append(VerifyProblem(head_seq, f"chain ends at record {expected_seq - 1} but the head says "
                                                f"{head_seq}: records were truncated or the head was altered"))
    return VerifyReport(records=count, head_seq=head_seq, head_hash=head_hash, problems=problems)


async def verify(session: AsyncSession) -> VerifyReport:
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one_or_none()
    events = (await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars()
    # Order by seq but also compare against physical insertion: a reorder that swaps seq values is caught
    # by the hash, a swap of rows' contents by the links.
    return verify_chain(list(events), head)


async def tail(session: AsyncSession, limit: int = 20) -> list[AuditEvent]:
    rows = (await session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit))).scalars()
    return list(reversed(list(rows)))
