"""The tamper-evident audit log: every record is hash-chained to the one before it.

hash(n) = sha256(hash(n-1) || canonical(record n)). The `audit_head` row holds the last (seq, hash): appends
lock it (so concurrent writers, even across replicas, build one chain) and verification compares the chain's
end with it (so truncation is caught, not only edits, deletions, insertions and reordering).
"""

from __future__ import annotations

import hashlib
import json
import operator
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Insert, Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from ledger.db import execute
from ledger.fast_execute import prebuilt, prebuilt_statements
from ledger.ids import new_row_id
from ledger.models import AuditEvent, AuditHead
from policies.json_text import kept_encoder
from policies.redaction import redact

GENESIS_HASH = "0" * 64


def new_event_id() -> str:
    """A fresh time-ordered (version 7) UUID as text: the id of an audit record (ledger/ids.py says why)."""
    return new_row_id()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


# json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default, ensure_ascii=False), its
# encoders made once (policies/json_text.py).
canonical_json = kept_encoder(sort_keys=True, default=_json_default)


def record_hash(prev_hash: str, *, seq: int, event_id: str, ts: datetime, actor: str, agent_id: str | None,
                kind: str, tool: str | None, payload: str) -> str:
    return record_hash_text(prev_hash, seq=seq, event_id=event_id, ts=ts.isoformat(), actor=actor,
                            agent_id=agent_id, kind=kind, tool=tool, payload=payload)


_string = json.encoder.encode_basestring  # type: ignore[attr-defined]  # what json.dumps uses (ensure_ascii=False)


def record_hash_text(prev_hash: str, *, seq: int, event_id: str, ts: str, actor: str, agent_id: str | None,
                     kind: str, tool: str | None, payload: str) -> str:
    """The hash of a record whose time is given as hashed (ISO-8601 text, as `audit export` writes it).

    The body is canonical_json({"seq", "event_id", "ts", "actor", "agent_id", "kind", "tool", "payload"}),
    written out key by key in sorted order: the same bytes (tests/policies/test_audit.py checks it) at a
    fraction of the cost, which matters when verification hashes a million records."""
    body = (f'{{"actor":{_string(actor)},"agent_id":{"null" if agent_id is None else _string(agent_id)},'
            f'"event_id":{_string(event_id)},"kind":{_string(kind)},"payload":{_string(payload)},"seq":{int(seq)},'
            f'"tool":{"null" if tool is None else _string(tool)},"ts":{_string(ts)}}}')
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


# Built once: an append is on the path of every tool call, and a prebuilt Core statement skips the ORM's unit
# of work and SQLAlchemy's per-call statement construction (most of an append's cost).
_HEAD = cast(Table, AuditHead.__table__)
_ADVANCE_HEAD = (update(_HEAD)
                 .where(_HEAD.c.id == 1, _HEAD.c.seq == bindparam("old_seq"), _HEAD.c.hash == bindparam("old_hash"))
                 .values(seq=bindparam("new_seq"), hash=bindparam("new_hash")))
# The head read when this process has no guess of it (its first append) or a stale one: locked on PostgreSQL
# (SQLite's unit holds the write lock already). A prebuilt Core statement, like the others: the first append of
# a process (its first tool call's records) no longer pays the ORM's compile and object loading for it.
_HEAD_LOCKED = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_EVENTS = cast(Table, AuditEvent.__table__)
_INSERT_EVENT = insert(_EVENTS)
_ROW_COLUMNS = ("seq", "event_id", "ts", "actor", "agent_id", "kind", "tool", "payload", "prev_hash", "hash")
# Several records go in as ONE multi-row INSERT (not one statement per record, as executemany runs them), up to
# this many rows a statement; each row count's statement is built once (so it is compiled once).
_ROWS_PER_INSERT = 8
_inserts_of: dict[int, Insert] = {}


def _insert_of(count: int) -> Insert:
    """The INSERT of `count` records, its parameters named `<column>_<row>` (built once per count)."""
    statement = _inserts_of.get(count)
    if statement is None:
        statement = _inserts_of[count] = insert(_EVENTS).values([
            {name: bindparam(f"{name}_{row}", type_=_EVENTS.c[name].type) for name in _ROW_COLUMNS}
            for row in range(count)])
        prebuilt(statement)  # kept for the process, like the module's constants
    return statement


_row_values = operator.itemgetter(*_ROW_COLUMNS)
_flat_keys: dict[int, tuple[str, ...]] = {}


def _flat_keys_of(count: int) -> tuple[str, ...]:
    """The parameter names of _insert_of(count), row by row in _ROW_COLUMNS order (built once per count)."""
    keys = _flat_keys.get(count)
    if keys is None:
        keys = _flat_keys[count] = tuple(f"{name}_{row}" for row in range(count) for name in _ROW_COLUMNS)
    return keys


async def _insert_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """The records' rows, in as few statements as _ROWS_PER_INSERT allows."""
    if len(rows) == 1:
        await execute(session, _INSERT_EVENT, rows[0])
        return
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start:start + _ROWS_PER_INSERT]
        values = [value for row in chunk for value in _row_values(row)]
        await execute(session, _insert_of(len(chunk)), dict(zip(_flat_keys_of(len(chunk)), values, strict=True)))

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
    # Given when a row must name the record that created it before the record is appended (policies/bindings.py)
    event_id: str | None = None


async def append(session: AsyncSession, *, ts: datetime, actor: str, kind: str, payload: Mapping[str, Any],
                 agent_id: str | None = None, tool: str | None = None, event_id: str | None = None) -> AuditEvent:
    """Append one record inside the caller's transaction (it commits or rolls back with the caller's work)."""
    return (await append_many(session, [Entry(ts=ts, actor=actor, kind=kind, payload=payload, agent_id=agent_id,
                                              tool=tool, event_id=event_id)]))[0]


async def append_many(session: AsyncSession, entries: Sequence[Entry]) -> list[AuditEvent]:
    """Append records, in order, inside the caller's transaction. The conditional update of audit_head
    serialises writers: two appends can never share a predecessor. Several records move the head once."""
    return [AuditEvent(**row) for row in await append_records(session, entries)]


async def append_records(session: AsyncSession, entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """append_many, returning the rows written (column → value) rather than ORM objects (the gate's units
    append on every call and never read them back)."""
    bind = session.bind
    engine = bind.engine if isinstance(bind, AsyncConnection) else bind  # a group-commit unit: its engine's
    database = _database_key(engine) if isinstance(engine, AsyncEngine) else ""
    prepared = [(entry, canonical_json(redact(entry.payload)), entry.event_id or new_event_id())
                for entry in entries]
    guess = _head_guess.get(database)
    events = await _try_append(session, guess, prepared) if guess is not None else None
    if events is None:
        head = (await execute(session, _HEAD_LOCKED)).first()
        if head is None:
            session.add(AuditHead(id=1, seq=0, hash=GENESIS_HASH))
            await session.flush()
        events = await _try_append(session, (head.seq, head.hash) if head else (0, GENESIS_HASH), prepared)
        if events is None:
            raise RuntimeError("audit chain head moved during append")
    _head_guess[database] = (events[-1]["seq"], events[-1]["hash"])
    return events


_database_keys: weakref.WeakKeyDictionary[AsyncEngine, str] = weakref.WeakKeyDictionary()


def _database_key(engine: AsyncEngine) -> str:
    """Which database an engine writes (its URL as text, worked out once per engine): engines on one database
    (one runtime per stdio agent) share their guess of its head."""
    key = _database_keys.get(engine)
    if key is None:
        key = _database_keys[engine] = str(engine.url)
    return key


async def _try_append(session: AsyncSession, head: tuple[int, str], prepared: list[tuple[Entry, str, str]]
                      ) -> list[dict[str, Any]] | None:
    rows: list[dict[str, Any]] = []
    seq, prev_hash = head
    for entry, body, event_id in prepared:
        seq += 1
        digest = record_hash_text(prev_hash, seq=seq, event_id=event_id, ts=entry.ts.isoformat(), actor=entry.actor,
                                  agent_id=entry.agent_id, kind=entry.kind, tool=entry.tool, payload=body)
        rows.append({"seq": seq, "event_id": event_id, "ts": entry.ts, "actor": entry.actor,
                     "agent_id": entry.agent_id, "kind": entry.kind, "tool": entry.tool, "payload": body,
                     "prev_hash": prev_hash, "hash": digest})
        prev_hash = digest
    moved = await execute(session, _ADVANCE_HEAD, {"old_seq": head[0], "old_hash": head[1], "new_seq": seq,
                                                  "new_hash": prev_hash})
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return None
    await _insert_rows(session, rows)
    return rows


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
    checkpoints: int = 0  # valid signed checkpoints the chain was checked against
    anchored: bool = False  # checked against checkpoints at all ([audit] configured, or an export's key given)

    @property
    def ok(self) -> bool:
        return not self.problems


MAX_PROBLEMS = 20  # a report stays readable: the first problems say where to look
VERIFY_BATCH = 5000  # records per query: memory stays flat whatever the chain's length


class ChainVerifier:
    """Recompute every link, one record at a time (records fed in sequence order), and compare the chain with
    the signed checkpoints (seq → hash). Any edit, deletion, insertion, reordering or truncation gives a
    problem; with checkpoints, also when the attacker recomputed every hash after it, up to the newest one."""

    def __init__(self, checkpoints: Mapping[int, Any] | None = None) -> None:
        self.checkpoints = checkpoints or {}
        self.problems: list[VerifyProblem] = []
        self.prev_hash = GENESIS_HASH
        self.expected_seq = 1
        self.count = 0

    @property
    def full(self) -> bool:
        return len(self.problems) >= MAX_PROBLEMS

    def problem(self, seq: int | None, message: str) -> None:
        if not self.full:
            self.problems.append(VerifyProblem(seq, message))

    def feed(self, seq: int, event_id: str, ts: str, actor: str, agent_id: str | None, kind: str,
             tool: str | None, payload: str, prev_hash: str, hash: str) -> None:
        """One record; `ts` as hashed (ISO-8601 text)."""
        self.count += 1
        if seq != self.expected_seq:
            self.problem(seq, f"sequence gap or reordering: expected record {self.expected_seq}, found {seq}")
        if prev_hash != self.prev_hash:
            self.problem(seq, "link broken: prev_hash does not match the previous record")
        recomputed = record_hash_text(prev_hash, seq=seq, event_id=event_id, ts=ts, actor=actor,
                                      agent_id=agent_id, kind=kind, tool=tool, payload=payload)
        if recomputed != hash:
            self.problem(seq, "content changed: the record's hash does not match its content")
        checkpoint = self.checkpoints.get(seq)
        if checkpoint is not None and checkpoint.hash != hash:
            self.problem(seq, f"does not match the checkpoint signed at {checkpoint.time}: the chain up to here "
                              "was rewritten (edited, deleted, inserted or reordered records, hashes recomputed)")
        self.prev_hash = hash
        self.expected_seq = seq + 1

    def finish(self, head_seq: int, head_hash: str) -> VerifyReport:
        end = self.expected_seq - 1
        if not self.problems and (head_seq != end or head_hash != self.prev_hash):
            self.problem(head_seq, f"chain ends at record {end} but the head says {head_seq}: records were "
                                   "truncated or the head was altered")
        if self.checkpoints:
            newest = max(self.checkpoints)
            if newest > end:
                checkpoint = self.checkpoints[newest]
                self.problem(end, f"the chain ends at record {end} but a checkpoint signed at {checkpoint.time} "
                                  f"covers record {newest}: records were removed (truncation, wipe, or an older "
                                  "copy restored)")
        return VerifyReport(records=self.count, head_seq=head_seq, head_hash=head_hash, problems=self.problems,
                            checkpoints=len(self.checkpoints), anchored=bool(self.checkpoints))


def verify_chain(events: Iterable[AuditEvent], head: AuditHead | None,
                 checkpoints: Mapping[int, Any] | None = None) -> VerifyReport:
    """Recompute every link. Any edit, deletion, insertion, reordering or truncation gives a problem."""
    verifier = ChainVerifier(checkpoints)
    for event in events:
        verifier.feed(event.seq, event.event_id, event.ts.isoformat(), event.actor, event.agent_id, event.kind,
                      event.tool, event.payload, event.prev_hash, event.hash)
        if verifier.full:
            break
    return verifier.finish(head.seq if head else 0, head.hash if head else GENESIS_HASH)


def hashed_time(ts: datetime | str) -> str:
    """A record's time as it was hashed: ISO-8601 of the UTC-aware time (stored naive on SQLite)."""
    if isinstance(ts, str) and len(ts) == 26 and ts[10] == " " and ts[19] == ".":
        # SQLite's stored form, "YYYY-MM-DD HH:MM:SS.ffffff" in UTC: rewritten as isoformat() would write it
        return f"{ts[:10]}T{ts[11:19] if ts.endswith('.000000') else ts[11:]}+00:00"
    value = datetime.fromisoformat(ts) if isinstance(ts, str) else ts
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()


def verify_records(records: Iterable[Sequence[Any]], head: tuple[int, str] | None,
                   checkpoints: Mapping[int, Any] | None = None, *, progress: Callable[[int], None] | None = None,
                   progress_every: int = 100_000) -> VerifyReport:
    """Verify records given as rows (seq, event_id, ts, actor, agent_id, kind, tool, payload, prev_hash, hash),
    in sequence order, from any source (e.g. ledger/audit_rows.py); `ts` a datetime or its stored text."""
    verifier = ChainVerifier(checkpoints)
    feed = verifier.feed
    for seq, event_id, ts, actor, agent_id, kind, tool, payload, prev_hash, digest in records:
        feed(seq, event_id, hashed_time(ts), actor, agent_id, kind, tool, payload, prev_hash, digest)
        if verifier.full:
            break
        if progress is not None and verifier.count % progress_every == 0:
            progress(verifier.count)
    head_seq, head_hash = head if head is not None else (0, GENESIS_HASH)
    return verifier.finish(head_seq, head_hash)


_EVENT_COLUMNS = (AuditEvent.seq, AuditEvent.event_id, AuditEvent.ts, AuditEvent.actor, AuditEvent.agent_id,
                  AuditEvent.kind, AuditEvent.tool, AuditEvent.payload, AuditEvent.prev_hash, AuditEvent.hash)
RECORDS_AFTER = (select(*_EVENT_COLUMNS).where(AuditEvent.seq > bindparam("after")).order_by(AuditEvent.seq)
                .limit(bindparam("batch")))


async def verify(session: AsyncSession, checkpoints: Mapping[int, Any] | None = None, *,
                 progress: Callable[[int], None] | None = None, batch: int = VERIFY_BATCH) -> VerifyReport:
    """Verify the stored chain, streamed in batches by sequence (keyset pagination: flat memory, each batch an
    index range scan). `progress(records so far)` is called after each batch."""
    head = (await session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1))).first()
    verifier = ChainVerifier(checkpoints)
    after = 0
    while not verifier.full:
        rows = (await execute(session, RECORDS_AFTER, {"after": after, "batch": batch})).all()
        for seq, event_id, ts, actor, agent_id, kind, tool, payload, prev_hash, digest in rows:
            verifier.feed(seq, event_id, ts.isoformat(), actor, agent_id, kind, tool, payload, prev_hash, digest)
        if len(rows) < batch:
            break
        after = rows[-1][0]
        if progress is not None:
            progress(verifier.count)
    return verifier.finish(head.seq if head else 0, head.hash if head else GENESIS_HASH)


async def tail(session: AsyncSession, limit: int = 20) -> list[AuditEvent]:
    rows = (await session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit))).scalars()
    return list(reversed(list(rows)))

# Every statement above is a constant of this module: prepared for the driver on its first run (fast_execute.prebuilt).
prebuilt_statements(globals())
