"""The audit chain: every kind of tampering is caught, secrets never enter it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import delete, event, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session

from ledger import db
from ledger.models import AuditEvent
from policies import audit, redaction

T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    factory = db.session_factory(engine)
    async with db.transaction(factory) as session:
        for i in range(6):
            await audit.append(session, ts=T0, actor="agent:a", kind="tool.intent", tool="propose_trade",
                               agent_id="a", payload={"i": i})
    yield factory
    await engine.dispose()


async def _verify(sessions: async_sessionmaker[AsyncSession]) -> audit.VerifyReport:
    async with sessions() as session:
        return await audit.verify(session)


async def _tamper(sessions: async_sessionmaker[AsyncSession], statement: object) -> None:
    async with db.transaction(sessions) as session:
        await session.execute(statement)  # type: ignore[arg-type]


async def test_untouched_chain_verifies(sessions: async_sessionmaker[AsyncSession]) -> None:
    report = await _verify(sessions)
    assert report.ok and report.records == 6 and report.head_seq == 6


async def test_edit_is_caught(sessions: async_sessionmaker[AsyncSession]) -> None:
    await _tamper(sessions, update(AuditEvent).where(AuditEvent.seq == 3).values(payload='{"i":99}'))
    report = await _verify(sessions)
    assert not report.ok and report.problems[0].seq == 3


async def test_edit_with_recomputed_hash_is_caught_by_the_next_link(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        event = (await session.execute(select(AuditEvent).where(AuditEvent.seq == 3))).scalar_one()
    forged = audit.record_hash(event.prev_hash, seq=3, event_id=event.event_id, ts=event.ts, actor=event.actor,
                               agent_id=event.agent_id, kind=event.kind, tool=event.tool, payload='{"i":99}')
    await _tamper(sessions, update(AuditEvent).where(AuditEvent.seq == 3).values(payload='{"i":99}', hash=forged))
    report = await _verify(sessions)
    assert not report.ok and report.problems[0].seq == 4


async def test_deletion_is_caught(sessions: async_sessionmaker[AsyncSession]) -> None:
    await _tamper(sessions, delete(AuditEvent).where(AuditEvent.seq == 2))
    report = await _verify(sessions)
    assert not report.ok and report.problems[0].seq == 3


async def test_insertion_is_caught(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        event = (await session.execute(select(AuditEvent).where(AuditEvent.seq == 6))).scalar_one()
    await _tamper(sessions, update(AuditEvent).where(AuditEvent.seq >= 4).values(seq=AuditEvent.seq + 100))
    async with db.transaction(sessions) as session:
        session.add(AuditEvent(seq=4, event_id="forged", ts=T0, actor="agent:a", agent_id="a", kind="tool.intent",
                               tool=None, payload="{}", prev_hash=event.prev_hash, hash="f" * 64))
    report = await _verify(sessions)
    assert not report.ok


async def test_reordering_is_caught(sessions: async_sessionmaker[AsyncSession]) -> None:
    await _tamper(sessions, update(AuditEvent).where(AuditEvent.seq == 2).values(seq=-2))
    await _tamper(sessions, update(AuditEvent).where(AuditEvent.seq == 5).values(seq=2))
    await _tamper(sessions, update(AuditEvent).where(AuditEvent.seq == -2).values(seq=5))
    report = await _verify(sessions)
    assert not report.ok and report.problems[0].seq == 2


async def test_truncation_is_caught(sessions: async_sessionmaker[AsyncSession]) -> None:
    await _tamper(sessions, delete(AuditEvent).where(AuditEvent.seq >= 5))
    report = await _verify(sessions)
    assert not report.ok
    assert "truncated" in report.problems[0].message


async def test_emptying_the_log_is_caught(sessions: async_sessionmaker[AsyncSession]) -> None:
    await _tamper(sessions, text("DELETE FROM audit_events"))
    assert not (await _verify(sessions)).ok


async def test_secrets_are_redacted_by_key_and_by_shape(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db.transaction(sessions) as session:
        event = await audit.append(session, ts=T0, actor="system", kind="x", payload={
            "api_key": "AKSECRET", "nested": {"Authorization": "Bearer abc"},
            "note": "token tw_abcdefghijklmnopqrstuvwxyz123456 leaked", "headers": ["Bearer xyz"]})
    payload = json.loads(event.payload)
    assert payload["api_key"] == redaction.REDACTED
    assert payload["nested"]["Authorization"] == redaction.REDACTED
    assert "tw_abcdefghijklmnop" not in payload["note"]
    assert payload["headers"] == [redaction.REDACTED]


@pytest.mark.parametrize("text", ["plain", 'quote " and \\ backslash', "ünïcödé ✓ 日本", "line\nbreak\ttab\x01",
                                  "\u2028\u202e bidi", ""])
def test_record_hash_is_the_hash_of_the_canonical_record(text: str) -> None:
    """The hash is written out field by field for speed: it must stay byte-identical to sha256(prev ||
    canonical_json(record)), the formula every stored chain was built with."""
    import hashlib

    fields = {"seq": 12, "event_id": text or "e", "ts": T0.isoformat(), "actor": text, "agent_id": None,
              "kind": text, "tool": None, "payload": audit.canonical_json({"note": text})}
    expected = hashlib.sha256(("a" * 64 + audit.canonical_json(fields)).encode()).hexdigest()
    assert audit.record_hash("a" * 64, **{**fields, "ts": T0}) == expected  # type: ignore[arg-type]
    assert audit.record_hash_text("a" * 64, **fields) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [
    {"b": 1, "a": [1, 2.5, None, True, "ünïcödé ✓", "\u2028\x00", {"z": {}, "y": []}]},
    {"qty": Decimal("1.50"), "at": T0, "nan": float("nan"), "inf": float("-inf")},
    [{"k": (1, "t")}, "line\nbreak"], "just text", 7, None, {}])
def test_canonical_json_is_sorted_compact_json_with_decimals_and_times_as_text(value: object) -> None:
    """canonical_json runs a C encoder it keeps (not one a call): the text every stored payload and hash was
    made with, json.dumps with sorted keys, no blanks, text as it is, decimals and times as strings."""
    def as_text(item: object) -> object:
        if isinstance(item, Decimal):
            return format(item.normalize(), "f")
        if isinstance(item, datetime):
            return item.isoformat()
        raise TypeError(type(item).__name__)

    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=as_text)
    assert audit.canonical_json(value) == expected


@pytest.mark.parametrize("stored", ["2026-11-23 15:00:00.000000", "2026-11-23 15:00:00.000001",
                                    "2026-11-23 15:00:00.123456", "2026-11-23T15:00:00+00:00"])
def test_a_stored_time_is_read_back_as_it_was_hashed(stored: str) -> None:
    value = datetime.fromisoformat(stored).replace(tzinfo=UTC)
    assert audit.hashed_time(stored) == value.isoformat()


# --- several records in one append: one multi-row INSERT per up to _ROWS_PER_INSERT records -------------------

@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.create_engine(database_url)
    await db.upgrade(engine)
    yield db.session_factory(engine)
    await engine.dispose()


def _entries(count: int, **fixed: object) -> list[audit.Entry]:
    return [audit.Entry(ts=T0, actor="agent:a", kind="tool.intent", agent_id="a", tool="propose_trade",
                        payload={"i": i}, **fixed) for i in range(count)]  # type: ignore[arg-type]


async def _stored_payloads(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        return list((await session.execute(select(AuditEvent.payload).order_by(AuditEvent.seq))).scalars())


async def test_records_appended_together_are_chained_in_their_order_and_verify(
        ledger: async_sessionmaker[AsyncSession]) -> None:
    count = 2 * audit._ROWS_PER_INSERT + 3  # three statements: two full ones and a shorter one
    async with db.transaction(ledger) as session:
        await audit.append_many(session, _entries(2))
    async with db.transaction(ledger) as session:
        written = await audit.append_records(session, _entries(count))
    assert [row["seq"] for row in written] == list(range(3, count + 3))
    assert await _stored_payloads(ledger) == [audit.canonical_json({"i": i}) for i in [0, 1, *range(count)]]
    async with ledger() as session:
        report = await audit.verify(session)
    assert report.ok and report.records == count + 2 and report.head_seq == count + 2


async def test_an_append_whose_insert_fails_leaves_no_record_and_the_head_where_it_was(
        ledger: async_sessionmaker[AsyncSession]) -> None:
    async with db.transaction(ledger) as session:
        await audit.append_many(session, _entries(3))
    entries = _entries(audit._ROWS_PER_INSERT + 2)
    entries[-1] = audit.Entry(ts=T0, actor="agent:a", kind="tool.intent", payload={"i": "again"},
                              event_id="same-id")
    entries[-2] = audit.Entry(ts=T0, actor="agent:a", kind="tool.intent", payload={"i": "twice"},
                              event_id="same-id")  # in the second statement: the first one went in already
    with pytest.raises(IntegrityError):
        async with db.transaction(ledger) as session:
            await audit.append_many(session, entries)
    async with ledger() as session:
        report = await audit.verify(session)
    assert report.ok and report.records == 3 and report.head_seq == 3
    async with db.transaction(ledger) as session:  # the next append follows the stored head
        await audit.append_many(session, _entries(2))
    async with ledger() as session:
        assert (await audit.verify(session)).records == 5


async def test_an_append_on_a_stale_head_writes_nothing_of_that_try_and_chains_after_the_stored_head(
        ledger: async_sessionmaker[AsyncSession]) -> None:
    """The head this process wrote last is only a guess (another process may have appended since): the
    compare-and-set on audit_head fails on a stale guess before any record is written, and the append is
    made again after the head as stored."""
    async with db.transaction(ledger) as session:
        await audit.append_many(session, _entries(4))
    stale = {key: (2, "f" * 64) for key in audit._head_guess}
    audit._head_guess.update(stale)
    async with db.transaction(ledger) as session:
        written = await audit.append_records(session, _entries(3))
    assert [row["seq"] for row in written] == [5, 6, 7]
    async with ledger() as session:
        report = await audit.verify(session)
    assert report.ok and report.records == 7 and report.head_seq == 7


async def test_a_process_first_append_reads_the_head_without_the_orm(
        ledger: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch) -> None:
    """With no guess of the head yet (a new process), the head is read by a prebuilt statement: nothing of the
    append goes through the ORM (a server's first tool call pays no ORM compile for its records)."""
    async with db.transaction(ledger) as session:
        await audit.append_many(session, _entries(2))
    monkeypatch.setattr(audit, "_head_guess", {})
    orm_statements: list[object] = []

    def record(state: ORMExecuteState) -> None:
        orm_statements.append(state.statement)

    event.listen(Session, "do_orm_execute", record)
    try:
        async with db.transaction(ledger) as session:
            written = await audit.append_records(session, _entries(2))
    finally:
        event.remove(Session, "do_orm_execute", record)
    assert [row["seq"] for row in written] == [3, 4]
    assert orm_statements == []
    async with ledger() as session:
        assert (await audit.verify(session)).ok
