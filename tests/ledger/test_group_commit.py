"""Group commit on a SQLite file: units waiting together share one durable COMMIT, each in its own savepoint."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger import db, group_commit
from ledger.sqlite_inline import LOCK_WAIT_SECONDS
from policies import audit
from policies.failures import ledger_failure
from tests.ledger.loop_endings import ENDINGS, end_loop_after

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    factory = db.session_factory(engine)
    async with db.transaction(factory) as session:
        await session.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, unit TEXT NOT NULL)"))
        # Checked at COMMIT, not at the statement: a way to make a real COMMIT fail.
        await session.execute(text("CREATE TABLE parents (id INTEGER PRIMARY KEY)"))
        await session.execute(text("CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL "
                                   "REFERENCES parents(id) DEFERRABLE INITIALLY DEFERRED)"))
    yield factory
    await engine.dispose()


@pytest.fixture
def groups_wait_for_queued_units(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group's time bound long enough that a slow machine cannot split the units a test queues together."""
    monkeypatch.setattr(group_commit, "MAX_GROUP_SECONDS", 5.0)


def committed_notes(db_url: str) -> list[str]:
    """What a new connection (another process, as far as SQLite can tell) finds committed."""
    with sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///")) as connection:
        return sorted(row[0] for row in connection.execute("SELECT unit FROM notes"))


async def write_note(sessions: async_sessionmaker[AsyncSession], unit: str, *, fail: bool = False,
                     yield_first: bool = False) -> None:
    async with db.transaction(sessions) as session:
        await session.execute(text("INSERT INTO notes (unit) VALUES (:unit)"), {"unit": unit})
        if yield_first:
            await asyncio.sleep(0)  # the others get to queue for the writer while this unit holds it
        if fail:
            raise ValueError(f"unit {unit} fails")


async def hold_the_writer(sessions: async_sessionmaker[AsyncSession], holding: asyncio.Event,
                          release: asyncio.Event) -> None:
    """A unit that writes the note 'slow', says it holds the writer (`holding`) and keeps it until `release`."""
    async with db.transaction(sessions) as session:
        await session.execute(text("INSERT INTO notes (unit) VALUES ('slow')"))
        holding.set()
        await release.wait()


async def test_concurrent_units_commit_in_fewer_groups_than_units(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    begun, commits = db.UnitCounter.begun, db.UnitCounter.commits
    await asyncio.gather(*(write_note(sessions, f"u{i:02}", yield_first=True) for i in range(40)))
    assert db.UnitCounter.begun - begun == 40
    assert 1 <= db.UnitCounter.commits - commits < 40
    assert committed_notes(db_url) == [f"u{i:02}" for i in range(40)]


@pytest.mark.usefixtures("groups_wait_for_queued_units")
async def test_a_failing_unit_rolls_back_alone_while_its_group_commits(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    commits = db.UnitCounter.commits
    results = await asyncio.gather(write_note(sessions, "a", yield_first=True), write_note(sessions, "b", fail=True),
                                   write_note(sessions, "c"), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], ValueError) and results[2] is None
    assert db.UnitCounter.commits - commits == 1  # one group: the failure did not end it
    assert committed_notes(db_url) == ["a", "c"]


@pytest.mark.usefixtures("groups_wait_for_queued_units")
async def test_a_commit_failure_fails_every_unit_of_its_group(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    async def orphan() -> None:  # an unknown parent: the deferred foreign key fails the group's COMMIT
        async with db.transaction(sessions) as session:
            await session.execute(text("INSERT INTO children (parent_id) VALUES (999)"))

    commits = db.UnitCounter.commits
    results = await asyncio.gather(write_note(sessions, "a", yield_first=True), orphan(), write_note(sessions, "c"),
                                   return_exceptions=True)
    for result in results:
        assert isinstance(result, OperationalError), results
        assert ledger_failure(result) is not None  # LEDGER_UNAVAILABLE to an agent
    assert db.UnitCounter.commits == commits
    assert committed_notes(db_url) == []
    await write_note(sessions, "after")  # the writer goes on with the next group
    assert committed_notes(db_url) == ["after"]


async def test_every_connection_is_synchronous_full(sessions: async_sessionmaker[AsyncSession]) -> None:
    full = 2
    async with db.transaction(sessions) as session:  # the group-commit writer
        assert (await session.execute(text("PRAGMA synchronous"))).scalar_one() == full
    async with db.read(sessions) as first, db.read(sessions) as second, sessions() as plain:  # pooled readers
        for connection in (first, second):
            assert (await connection.execute(text("PRAGMA synchronous"))).scalar_one() == full
        assert (await plain.execute(text("PRAGMA synchronous"))).scalar_one() == full


async def test_another_process_writes_between_groups(sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from sqlalchemy import text
        from ledger import db

        async def main():
            engine = db.create_engine({db_url!r})
            started = time.monotonic()
            async with db.transaction(db.session_factory(engine)) as session:
                await session.execute(text("INSERT INTO notes (unit) VALUES ('other process')"))
            print(time.monotonic() - started)
            await engine.dispose()

        asyncio.run(main())
    """)
    stop = asyncio.Event()
    written = 0

    async def agent(index: int) -> None:  # this process keeps the writer busy all along
        nonlocal written
        while not stop.is_set():
            await write_note(sessions, f"agent {index}")
            written += 1

    agents = [asyncio.create_task(agent(i)) for i in range(8)]
    try:
        other = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(other.communicate(), timeout=60)
    finally:
        stop.set()
        await asyncio.gather(*agents)
    assert other.returncode == 0, err.decode()[-2000:]
    assert float(out.decode().strip()) < LOCK_WAIT_SECONDS  # within its bounded wait
    assert written > 100  # the writer was busy meanwhile
    assert "other process" in committed_notes(db_url)


async def test_units_queued_behind_another_process_share_one_bounded_wait(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    holder = sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process keeps the write lock
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(write_note(sessions, f"u{i}") for i in range(4)), return_exceptions=True)
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert all(isinstance(r, OperationalError) and "locked" in str(r) for r in results), results
    assert LOCK_WAIT_SECONDS * 0.9 <= waited < LOCK_WAIT_SECONDS * 1.5  # one bound, not one after the other
    await write_note(sessions, "after")
    assert committed_notes(db_url) == ["after"]


async def test_a_cancelled_waiter_does_not_wedge_the_writer(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    holding, release = asyncio.Event(), asyncio.Event()

    first = asyncio.create_task(hold_the_writer(sessions, holding, release))
    await holding.wait()
    waiters = [asyncio.create_task(write_note(sessions, f"cancelled {i}")) for i in range(3)]
    await asyncio.sleep(0.01)  # queued behind the slow unit
    for waiter in waiters:
        waiter.cancel()
    release.set()
    await first
    await asyncio.wait_for(write_note(sessions, "next"), timeout=2)
    assert all(waiter.cancelled() for waiter in waiters)
    assert committed_notes(db_url) == ["next", "slow"]


async def test_a_unit_queued_behind_a_slow_unit_gives_up_at_its_bound_and_the_writer_goes_on(
        sessions: async_sessionmaker[AsyncSession], db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_commit, "LOCK_WAIT_SECONDS", 0.2)
    holding, release = asyncio.Event(), asyncio.Event()

    first = asyncio.create_task(hold_the_writer(sessions, holding, release))
    await holding.wait()
    started = time.monotonic()
    with pytest.raises(OperationalError, match="locked"):
        await write_note(sessions, "gave up")
    waited = time.monotonic() - started
    release.set()
    await first
    await asyncio.wait_for(write_note(sessions, "next"), timeout=2)
    assert 0.18 <= waited < 1.0
    assert committed_notes(db_url) == ["next", "slow"]


async def test_a_unit_cancelled_inside_its_body_rolls_back_alone(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    inside = asyncio.Event()

    async def stuck() -> None:
        async with db.transaction(sessions) as session:
            await session.execute(text("INSERT INTO notes (unit) VALUES ('stuck')"))
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(stuck())
    await inside.wait()
    neighbour = asyncio.create_task(write_note(sessions, "neighbour"))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait_for(neighbour, timeout=2)
    assert task.cancelled()
    assert committed_notes(db_url) == ["neighbour"]


async def test_audit_records_of_8_concurrent_agents_form_a_valid_chain(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    begun, commits = db.UnitCounter.begun, db.UnitCounter.commits

    async def agent(index: int) -> None:
        for call in range(25):
            async with db.transaction(sessions) as session:
                await audit.append(session, ts=T0, actor=f"agent:a{index}", kind="tool.intent", tool="propose_trade",
                                   agent_id=f"a{index}", payload={"call": call})
                await asyncio.sleep(0)

    await asyncio.gather(*(agent(i) for i in range(8)))
    async with sessions() as session:
        report = await audit.verify(session)
    assert report.ok and report.records == 200 and report.head_seq == 200
    assert db.UnitCounter.begun - begun == 200 and db.UnitCounter.commits - commits < 200


async def test_engines_of_one_process_on_one_file_share_the_groups(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    """One server runtime per stdio agent: their units queue for the same writer, not for SQLite's lock."""
    other_engine = db.create_engine(db_url)
    other = db.session_factory(other_engine)
    commits = db.UnitCounter.commits
    try:
        await asyncio.gather(*(write_note(sessions if i % 2 else other, f"u{i:02}", yield_first=True)
                               for i in range(20)))
    finally:
        await other_engine.dispose()
    assert db.UnitCounter.commits - commits < 20
    assert committed_notes(db_url) == [f"u{i:02}" for i in range(20)]


def test_each_event_loop_has_its_own_writer_for_a_file(db_url: str) -> None:
    """Another loop takes SQLite's lock like another process: its units never queue behind this loop's."""
    engine = db.create_engine(db_url)
    other_engine = db.create_engine(db_url)

    async def writers() -> tuple[Any, Any, Any]:
        first = group_commit.writer_of(engine)
        return first, group_commit.writer_of(engine), group_commit.writer_of(other_engine)

    async def dispose() -> None:
        await engine.dispose()
        await other_engine.dispose()

    first_loop = asyncio.run(writers())
    second_loop = asyncio.run(writers())
    asyncio.run(dispose())
    assert first_loop[0] is not None and first_loop[0] is first_loop[1] is first_loop[2]
    assert second_loop[0] is second_loop[1] is second_loop[2]
    assert second_loop[0] is not first_loop[0]


async def test_in_memory_sqlite_commits_each_unit_on_its_own() -> None:
    """Writer and readers share the one connection of an in-memory database: no groups to hold open there."""
    engine = db.create_engine("sqlite+aiosqlite://")
    sessions = db.session_factory(engine)
    assert group_commit.writer_of(engine) is None
    commits = db.UnitCounter.commits
    async with db.transaction(sessions) as session:
        await session.execute(text("CREATE TABLE notes (unit TEXT)"))
    for unit in ("a", "b"):
        await write_note(sessions, unit)
    async with db.read(sessions) as connection:
        assert (await connection.execute(text("SELECT count(*) FROM notes"))).scalar_one() == 2
    await engine.dispose()
    assert db.UnitCounter.commits - commits == 3


INSERT_NOTE = text("INSERT INTO notes (unit) VALUES (:unit)")


async def test_a_units_hot_statements_leave_its_session_unbegun(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    """The hot statements run on the unit's savepoint directly: the session is not asked for a connection."""
    from policies.audit import _INSERT_EVENT

    row = {"seq": 1, "event_id": "e1", "ts": T0, "actor": "system", "agent_id": None, "kind": "k", "tool": None,
           "payload": "{}", "prev_hash": "0" * 64, "hash": "1" * 64}
    for attempt in range(2):  # a statement's first sight is left to SQLAlchemy, the next ones are not
        async with db.transaction(sessions) as session:
            await db.execute(session, _INSERT_EVENT, row | {"seq": attempt + 1, "event_id": f"e{attempt}"})
            began = session.in_transaction()
    assert began is False
    with sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///")) as connection:
        assert [r[0] for r in connection.execute("SELECT seq FROM audit_events ORDER BY seq")] == [1, 2]


@pytest.mark.usefixtures("groups_wait_for_queued_units")
async def test_a_session_rollback_inside_a_unit_undoes_that_unit_only(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    async def undoes_its_first_note() -> None:
        async with db.transaction(sessions) as session:
            await session.execute(INSERT_NOTE, {"unit": "undone"})
            await asyncio.sleep(0)  # the neighbour queues into this group
            await session.rollback()
            await session.execute(INSERT_NOTE, {"unit": "kept"})

    await asyncio.gather(write_note(sessions, "before", yield_first=True), undoes_its_first_note(),
                         write_note(sessions, "after"))
    assert committed_notes(db_url) == ["after", "before", "kept"]


@pytest.mark.usefixtures("groups_wait_for_queued_units")
async def test_orm_objects_added_in_a_unit_commit_and_fail_with_it(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    from ledger.models import KeyValue

    async def unit(key: str, *, fail: bool) -> None:
        async with db.transaction(sessions) as session:
            session.add(KeyValue(key=key, value={}, updated_at=T0))  # flushed when the unit ends
            await session.execute(INSERT_NOTE, {"unit": key})
            await asyncio.sleep(0)
            if fail:
                raise ValueError(key)

    results = await asyncio.gather(unit("ok", fail=False), unit("bad", fail=True), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], ValueError)
    with sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///")) as connection:
        assert [r[0] for r in connection.execute("SELECT key FROM server_state")] == ["ok"]
    assert committed_notes(db_url) == ["ok"]


@pytest.mark.usefixtures("groups_wait_for_queued_units")
async def test_a_flush_failure_at_a_units_end_fails_that_unit_alone(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    from sqlalchemy.exc import IntegrityError

    from ledger.models import KeyValue

    async with db.transaction(sessions) as session:
        session.add(KeyValue(key="taken", value={}, updated_at=T0))

    async def duplicate() -> None:
        async with db.transaction(sessions) as session:
            await session.execute(INSERT_NOTE, {"unit": "duplicate"})
            session.add(KeyValue(key="taken", value={}, updated_at=T0))  # the flush at the end fails
            await asyncio.sleep(0)

    results = await asyncio.gather(write_note(sessions, "a", yield_first=True), duplicate(),
                                   write_note(sessions, "c"), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], IntegrityError) and results[2] is None
    assert committed_notes(db_url) == ["a", "c"]


async def test_objects_only_added_to_a_units_session_commit_with_it(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    """No statement began the session: what it holds to flush is still the unit's work."""
    from ledger.models import KeyValue

    async with db.transaction(sessions) as session:
        session.add(KeyValue(key="added", value={}, updated_at=T0))
    with sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///")) as connection:
        assert [r[0] for r in connection.execute("SELECT key FROM server_state")] == ["added"]


async def test_objects_loaded_in_a_unit_leave_its_session_when_it_ends(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    from ledger.models import KeyValue

    async with db.transaction(sessions) as session:
        session.add(KeyValue(key="loaded", value={}, updated_at=T0))
    async with db.transaction(sessions) as session:
        loaded = await session.get(KeyValue, "loaded")
        assert loaded is not None and loaded in session
    assert loaded not in session and len(session.identity_map) == 0


async def test_a_unit_begun_and_left_unused_counts_once_and_commits_nothing(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    begun, commits = db.UnitCounter.begun, db.UnitCounter.commits
    async with db.transaction(sessions) as session:
        pass
    assert db.UnitCounter.begun == begun + 1 and db.UnitCounter.commits == commits + 1
    assert not session.in_transaction() and committed_notes(db_url) == []


FAST = [0.0002] * group_commit.COMMITS_TRACKED


def test_a_lone_group_commits_inline_after_enough_fast_syncs() -> None:
    assert group_commit.commit_inline(waiting=0, recent_commit_seconds=FAST)


def test_a_group_with_units_waiting_commits_in_the_worker_thread() -> None:
    assert not group_commit.commit_inline(waiting=1, recent_commit_seconds=FAST)


def test_one_slow_sync_among_the_recent_sends_commits_to_the_worker_thread() -> None:
    slow = [*FAST[1:], group_commit.INLINE_COMMIT_MAX_SECONDS * 3]
    assert not group_commit.commit_inline(waiting=0, recent_commit_seconds=slow)


def test_too_few_syncs_seen_commit_in_the_worker_thread() -> None:
    assert not group_commit.commit_inline(waiting=0, recent_commit_seconds=FAST[1:])


async def test_lone_units_commit_on_the_loops_thread_once_the_syncs_proved_fast(
        sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    """Watched on the writer's own sqlite3 connection: which thread runs each COMMIT."""
    import threading

    from ledger import fast_execute

    monkeypatch.setattr(group_commit, "INLINE_COMMIT_MAX_SECONDS", 60.0)  # any sync of this disk counts as fast
    commit_threads: list[int] = []
    loop_thread = threading.get_ident()
    units = group_commit.COMMITS_TRACKED + 4
    for i in range(units):
        async with db.transaction(sessions) as session:
            unit = fast_execute.current_unit.get()
            assert unit is not None and unit.raw is not None
            unit.raw.set_trace_callback(
                lambda sql: commit_threads.append(threading.get_ident()) if sql == "COMMIT" else None)
            await session.execute(INSERT_NOTE, {"unit": f"u{i:02}"})
    assert len(commit_threads) == units
    assert commit_threads[0] != loop_thread  # too little history yet: the worker thread
    assert commit_threads[-4:] == [loop_thread] * 4
    assert committed_notes(db_url) == [f"u{i:02}" for i in range(units)]


async def test_a_task_writing_unit_after_unit_leaves_the_loop_to_other_tasks(
        sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    """A lone group commits at once on the loop's thread only while nothing else is ready to run: a task whose
    units never wait for anything still lets the others run between them (and queue for the writer)."""
    monkeypatch.setattr(group_commit, "INLINE_COMMIT_MAX_SECONDS", 60.0)  # any sync of this disk counts as fast
    for i in range(group_commit.COMMITS_TRACKED):  # the history that lets lone groups commit inline
        await write_note(sessions, f"h{i:02}")
    ticks = 0
    stop = asyncio.Event()

    async def other_task() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    before = ticks
    for i in range(20):
        await write_note(sessions, f"w{i:02}")
    during = ticks - before
    stop.set()
    await other
    assert during >= 20
    assert len(committed_notes(db_url)) == group_commit.COMMITS_TRACKED + 20


# --- the writer's kept connection ------------------------------------------------------------------------------


async def driver_connection_of_a_unit(sessions: async_sessionmaker[AsyncSession], unit: str) -> sqlite3.Connection:
    """Writes a note and returns the sqlite3 connection its unit ran on."""
    from ledger import fast_execute

    async with db.transaction(sessions) as session:
        await session.execute(text("INSERT INTO notes (unit) VALUES (:unit)"), {"unit": unit})
        current = fast_execute.current_unit.get()
        assert current is not None and current.raw is not None
        return current.raw


def checked_out(sessions: async_sessionmaker[AsyncSession]) -> int:
    pool: Any = sessions.kw["bind"].sync_engine.pool
    return int(pool.checkedout())


async def test_consecutive_groups_run_on_the_writers_kept_connection(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    first = await driver_connection_of_a_unit(sessions, "a")
    assert checked_out(sessions) == 1  # kept, not returned to the pool between groups
    second = await driver_connection_of_a_unit(sessions, "b")
    assert second is first
    assert not first.in_transaction  # between groups it holds no transaction: no lock, no snapshot
    assert committed_notes(db_url) == ["a", "b"]


async def test_the_kept_connection_goes_back_to_the_pool_once_the_writer_is_idle(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    await write_note(sessions, "a")
    assert checked_out(sessions) == 1
    deadline = time.monotonic() + 5
    while checked_out(sessions) and time.monotonic() < deadline:
        await asyncio.sleep(group_commit.IDLE_RELEASE_SECONDS)
    assert checked_out(sessions) == 0
    await write_note(sessions, "b")  # the next unit takes a connection again
    assert checked_out(sessions) == 1


async def test_units_coming_steadily_keep_the_connection_past_the_idle_bound(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    first = await driver_connection_of_a_unit(sessions, "first")
    started = time.monotonic()
    while time.monotonic() - started < group_commit.IDLE_RELEASE_SECONDS * 5:
        assert await driver_connection_of_a_unit(sessions, "again") is first
        await asyncio.sleep(group_commit.IDLE_RELEASE_SECONDS / 5)


async def test_disposing_of_the_engine_closes_the_writers_kept_connection(db_url: str) -> None:
    engine = db.create_engine(db_url)
    sessions = db.session_factory(engine)
    async with db.transaction(sessions) as session:
        await session.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, unit TEXT NOT NULL)"))
    kept = await driver_connection_of_a_unit(sessions, "a")
    await engine.dispose()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        kept.execute("SELECT 1")
    assert committed_notes(db_url) == ["a"]


async def test_an_engine_disposed_of_during_a_group_gets_its_connection_closed_once_the_group_commits(
        db_url: str) -> None:
    from ledger import fast_execute

    engine = db.create_engine(db_url)
    sessions = db.session_factory(engine)
    async with db.transaction(sessions) as session:
        await session.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, unit TEXT NOT NULL)"))
    in_unit, go_on = asyncio.Event(), asyncio.Event()
    used: list[sqlite3.Connection] = []

    async def slow_unit() -> None:
        async with db.transaction(sessions) as session:
            await session.execute(text("INSERT INTO notes (unit) VALUES ('during dispose')"))
            current = fast_execute.current_unit.get()
            assert current is not None and current.raw is not None
            used.append(current.raw)
            in_unit.set()
            await go_on.wait()

    writing = asyncio.create_task(slow_unit())
    await in_unit.wait()
    await engine.dispose()
    used[0].execute("SELECT 1")  # the group still runs on it
    go_on.set()
    await writing
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        used[0].execute("SELECT 1")
    assert committed_notes(db_url) == ["during dispose"]


@pytest.mark.usefixtures("groups_wait_for_queued_units")
async def test_a_failing_unit_rolls_back_alone_on_the_kept_connection(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    kept = await driver_connection_of_a_unit(sessions, "before")
    results = await asyncio.gather(write_note(sessions, "a", yield_first=True), write_note(sessions, "b", fail=True),
                                   write_note(sessions, "c"), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], ValueError) and results[2] is None
    assert await driver_connection_of_a_unit(sessions, "after") is kept
    assert committed_notes(db_url) == ["a", "after", "before", "c"]


@pytest.mark.usefixtures("groups_wait_for_queued_units")
async def test_after_a_failed_commit_on_the_kept_connection_the_next_group_commits(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    await driver_connection_of_a_unit(sessions, "before")

    async def orphan() -> None:  # an unknown parent: the deferred foreign key fails the group's COMMIT
        async with db.transaction(sessions) as session:
            await session.execute(text("INSERT INTO children (parent_id) VALUES (999)"))

    results = await asyncio.gather(write_note(sessions, "a", yield_first=True), orphan(), return_exceptions=True)
    assert all(isinstance(result, OperationalError) for result in results), results
    assert checked_out(sessions) == 0  # a failed group gives its connection back at once
    await driver_connection_of_a_unit(sessions, "after")
    assert committed_notes(db_url) == ["after", "before"]


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_command_that_writes_then_ends_its_loop_leaves_stderr_clean(tmp_path: Path, ending: str) -> None:
    """A command line writes and exits at once (its engine disposed of, or not); a server's last unit is followed
    by a quiet moment: no warning about a connection left checked out, whichever way the loop ends."""
    done = end_loop_after(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", """
        async with db.transaction(sessions) as session:
            await session.execute(text("CREATE TABLE notes (unit TEXT)"))
        async with db.transaction(sessions) as session:
            await session.execute(text("INSERT INTO notes VALUES ('written')"))
    """, idle_seconds="group_commit.IDLE_RELEASE_SECONDS", ending=ending)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""
    with sqlite3.connect(tmp_path / "ledger.db") as connection:
        assert connection.execute("SELECT unit FROM notes").fetchall() == [("written",)]


def _another_connection_takes_the_write_lock(db_url: str) -> bool:
    """Whether a connection of its own (a checkpointer's, another process's) gets SQLite's write lock now."""
    with sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///"), timeout=0, isolation_level=None) as other:
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        other.execute("ROLLBACK")
        return True


@pytest.mark.usefixtures("groups_wait_for_queued_units")
async def test_alone_runs_once_the_open_group_committed(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    await write_note(sessions, "first")  # the writer exists on this loop
    writer = group_commit.writer_at(db_url.removeprefix("sqlite+aiosqlite:///"))
    assert writer is not None
    seen: dict[str, Any] = {}

    async def alone() -> None:
        async with writer.alone():
            seen["notes"] = committed_notes(db_url)
            seen["lock_free"] = _another_connection_takes_the_write_lock(db_url)

    # "a" holds the writer (a group is open) while `alone` and "b" queue behind it, in that order.
    await asyncio.gather(write_note(sessions, "a", yield_first=True), alone(), write_note(sessions, "b"))
    assert seen == {"notes": ["a", "first"], "lock_free": True}
    assert committed_notes(db_url) == ["a", "b", "first"]


async def test_units_coming_while_alone_runs_wait_for_its_end(
        sessions: async_sessionmaker[AsyncSession], db_url: str) -> None:
    await write_note(sessions, "first")
    writer = group_commit.writer_at(db_url.removeprefix("sqlite+aiosqlite:///"))
    assert writer is not None
    order: list[str] = []

    async def note_after(unit: str) -> None:
        await write_note(sessions, unit)
        order.append(unit)

    async with writer.alone():
        waiting = asyncio.create_task(note_after("meanwhile"))
        await asyncio.sleep(0.05)
        order.append("alone ends")
        assert _another_connection_takes_the_write_lock(db_url)
    await asyncio.wait_for(waiting, timeout=LOCK_WAIT_SECONDS)
    assert order == ["alone ends", "meanwhile"]
