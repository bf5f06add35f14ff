"""The database engine: SQLite (WAL, serialized writers) or PostgreSQL, and schema upgrades at start.

Concurrency model (docs/ARCHITECTURE.md). SQLite: every unit of work (`transaction()`) holds the write lock
(BEGIN IMMEDIATE), so writers never interleave. On a SQLite file the units go through group commit
(ledger/group_commit.py): they queue in order for one writer per file, each runs in its own SAVEPOINT of the
group's BEGIN IMMEDIATE transaction (a failing unit rolls back alone), and the group's one COMMIT (a WAL sync:
synchronous=FULL, so a committed unit survives power loss) runs off the event loop; `transaction()` returns
only after its group committed, and a failed COMMIT fails every unit of the group. Units still run one at a
time, each seeing all before it through its own session; pooled reads (`read()`, plain sessions) see committed
groups only, so a decision reads through its unit's session, never through a pooled read inside the unit.
In-memory and read-only SQLite engines commit each unit on its own, as before. PostgreSQL (READ COMMITTED,
shared by several replicas): decisions lock rows with SELECT ... FOR UPDATE in one order (global trading_state
→ agent permissions → rows of the agent's book → audit_head, always last); rows that may be created by two
writers at once are created with INSERT ... ON CONFLICT DO NOTHING (`insert_if_absent`), then locked; work
that must run alone across replicas (start-up, registration) takes a transaction-scoped advisory lock
(`advisory_lock`). Each statement of a READ COMMITTED transaction sees what was committed before it started,
so everything a decision reads after its locks is current. Every unit commits on its own, with
synchronous_commit=on (asked for explicitly): its COMMIT returns once the WAL is flushed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Executable, Table, event, text
from sqlalchemy.engine import Connection, Result
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from ledger import fast_execute, group_commit, kept_reads
from ledger.checkpoint import AUTOCHECKPOINT_PAGES
from ledger.database_url import describe_database, sqlite_file
from ledger.models import SCHEMA_REVISION

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# The rest of this transaction waits for locks without LOCK_WAIT_SECONDS' bound (SET LOCAL: until its end).
_wait_without_bound = text("SET LOCAL lock_timeout = 0")

# Keys of PostgreSQL advisory locks (one namespace per purpose; any 64-bit integers would do).
MIGRATION_LOCK = 7244190021
# Start-up (singleton rows, config agents) and agent registration: one at a time across processes.
REGISTRY_LOCK = 7244190022


WRITE_OPTION = fast_execute.WRITE_OPTION  # marks a unit of work: on SQLite it begins with the write lock


# A PostgreSQL server that does not answer (down, firewalled) fails a connection after this long, not 60 s.
CONNECT_TIMEOUT_SECONDS = 10
# PostgreSQL: a statement waiting on a row lock (another transaction holds trading_state or an agent's rows
# FOR UPDATE) gives up after this long, so the call answers LEDGER_UNAVAILABLE like SQLite's bounded wait
# (ledger/sqlite_inline.py). Work that must wait its turn however long (start-up, registration, migrations)
# lifts it for its own transaction (`_wait_without_bound`).
LOCK_WAIT_SECONDS = 5.0


class DatabaseUnavailable(Exception):
    """The database cannot be opened or used. The message is one line naming the database (path, or URL with
    the password masked), safe to show to an operator or an agent."""


class DatabaseMissing(DatabaseUnavailable):
    """A command pointed at a SQLite file that does not exist (only `db upgrade`, `demo`, `doctor` and a
    server's first start create one)."""


def check_location(url: str, *, create: bool) -> None:
    """Before any connection (SQLite creates a missing file on connect): a missing SQLite file is an error
    unless `create`; one that will be created needs an existing, writable folder. DatabaseUnavailable."""
    path = sqlite_file(url)
    if path is None:
        return
    if path.exists():
        if path.is_dir():
            raise DatabaseUnavailable(f"the database path {path} is a folder, not a SQLite file")
        return
    if not create:
        raise DatabaseMissing(f"no database at {path}: check --config (a relative path in database_url is "
                              "relative to the config file's folder) or create it with `tradewarden db upgrade`")
    folder = path.parent
    if not folder.is_dir():
        raise DatabaseUnavailable(f"cannot create the database {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseUnavailable(f"cannot create the database {path}: the folder {folder} is not writable")


def _first_line(error: BaseException) -> str:
    from sqlalchemy.exc import DBAPIError

    cause: BaseException = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    text = (str(cause).strip().splitlines() or [""])[0][:300] or type(cause).__name__
    return text


@contextmanager
def reported(url: str) -> Iterator[None]:
    """Database failures (unreachable, refused, read-only, not a database, timed out) as DatabaseUnavailable
    with one line naming the database (callers that show it to people scrub it like every message)."""
    from sqlalchemy.exc import SQLAlchemyError

    message: str | None = None
    try:
        yield
    except DatabaseUnavailable:
        raise
    except (SQLAlchemyError, OSError, TimeoutError) as error:
        reason = _first_line(error).replace(url, describe_database(url))
        message = f"database {describe_database(url)} is unavailable: {reason}"
    if message is not None:
        raise DatabaseUnavailable(message)  # outside the except block: no chained traceback carries the URL


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20, read_only: bool = False) -> AsyncEngine:
    """One engine per process. On SQLite every unit of work holds the write lock (BEGIN IMMEDIATE), so a
    check-and-reserve can never interleave with another writer (process or task); on a SQLite file, units go
    through the group-commit writer (ledger/group_commit.py), a connection of its own.
    read_only=True (SQLite): plain deferred transactions, for single reads that must not queue behind the
    writers (WAL readers see the last commit without the lock), e.g. bearer-token lookups. Never write
    through such an engine."""
    if is_sqlite(url):
        engine = _sqlite_engine(url, read_only=read_only)
        if sqlite_path(url) is not None and not read_only:
            from ledger import group_commit

            group_commit.attach(engine, str(sqlite_path(url)), UnitCounter.count_commit)
            kept_reads.attach(engine)
        return engine
    lock_timeout = {"lock_timeout": str(int(LOCK_WAIT_SECONDS * 1000)),  # milliseconds
                    # A COMMIT returns once its WAL record is flushed to disk: a committed audit record survives
                    # a crash of the server or the machine. Explicit, so no server default can turn it off.
                    "synchronous_commit": "on"}
    return create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True,
                               pool_timeout=30, connect_args={"timeout": CONNECT_TIMEOUT_SECONDS,
                                                              "server_settings": lock_timeout})


def _sqlite_engine(url: str, *, read_only: bool) -> AsyncEngine:
    from sqlalchemy.engine import make_url

    from ledger.sqlite_inline import inline_connector

    engine = create_async_engine(url, async_creator=inline_connector(make_url(url).database or ":memory:"))

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # SQLAlchemy (not the driver) decides when transactions begin: the connections are opened in
        # autocommit mode (isolation_level=None) by sqlite_inline.
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: every COMMIT syncs the WAL, so a committed unit (its audit records) survives power loss
        # (NORMAL may lose the last commits). Group commit (ledger/group_commit.py) pays one sync per group.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=0")  # waits for the lock are asynchronous (sqlite_inline)
        cursor.execute("PRAGMA foreign_keys=ON")
        # A unit's savepoint keeps the pages it changes in a sub-journal, which SQLite spills to a temporary file
        # (created, written, deleted) past 64 KiB: an execution's first unit changes ~16 pages (the trade row
        # and its indexes, the audit records), so it paid a file's open, writes and unlink every time. In memory
        # it is bounded by the pages one savepoint changes; it serves only a rollback inside a transaction,
        # never recovery (the WAL does), so durability is unchanged.
        cursor.execute("PRAGMA temp_store=MEMORY")
        # Checkpoints run in the background (ledger/checkpoint.py); this is only the safety net.
        cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Units of work (`transaction()`) take the write lock up front; plain reads stay deferred, so
        # in WAL mode they neither wait for writers nor make writers wait (and back off) for them.
        if getattr(conn.connection.driver_connection, "unit_open", False):
            # A unit of work in a group-commit group (ledger/group_commit.py): it runs in its own savepoint,
            # which the session's transaction joins (ledger/sqlite_inline.py).
            return
        if conn.get_execution_options().get(WRITE_OPTION, False) and not read_only:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # may wait for the lock: the driver retries, bounded
            return
        # A plain BEGIN takes no lock and never waits: straight on the driver's connection, without
        # SQLAlchemy's statement machinery and its hop to the event loop (ledger/fast_execute.py begins
        # reads this way without leaving the loop's thread).
        raw = getattr(conn.connection.driver_connection, "sqlite", None)
        if raw is None:
            conn.exec_driver_sql("BEGIN")
        else:
            raw.execute("BEGIN")

    return engine


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    if not is_sqlite(url):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return database if database and database != ":memory:" else None


def dialect_name(session: AsyncSession) -> str:
    bind = session.bind
    return bind.dialect.name if bind is not None else "sqlite"


async def advisory_lock(session: AsyncSession, key: int) -> None:
    """Run the rest of this transaction alone among everyone who takes the same key (every replica and
    command-line process). PostgreSQL: pg_advisory_xact_lock, released at commit or rollback. SQLite: nothing
    to do, the transaction already holds the database's write lock. Waits as long as it takes: replicas
    starting together queue here, and none may fail for having waited."""
    if dialect_name(session) == "postgresql":
        await session.execute(_wait_without_bound)
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


async def insert_if_absent(session: AsyncSession, model: type[DeclarativeBase] | Table,
                           values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: two transactions creating the same row (same primary key) at once
    both succeed, and one row exists. On PostgreSQL the loser waits for the winner's commit. Follow it with a
    SELECT (FOR UPDATE when the row will be changed) to read the row."""
    if dialect_name(session) == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        await session.execute(pg_insert(model).values(**values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        await session.execute(sqlite_insert(model).values(**values).on_conflict_do_nothing())


async def execute(session: AsyncSession | AsyncConnection, statement: Executable,
                  params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None) -> Result[*tuple[Any, ...]]:
    """Run a Core statement (built once, with bind parameters) on the session's connection, inside its
    transaction. For the statements on every call's path: it skips the ORM's per-statement work, which costs
    as much as the query itself on SQLite. Rows come back as rows, not ORM objects. A list of parameter sets
    runs it once per set (executemany). On SQLite, module-level statements skip SQLAlchemy's per-statement
    work too: compiled once, they run on the driver connection of the same transaction (ledger/fast_execute.py);
    on PostgreSQL likewise inside a unit of work, on asyncpg. Inside a unit (`transaction()`) the statements
    run on the connection the unit found when it began, without asking the session for it each time."""
    unit = fast_execute.current_unit.get()
    if unit is not None and unit.current(session):  # the unit's connection, found when it began
        fast = await fast_execute.run_in_unit(unit, statement, params)  # SQLite: on the raw connection
        if fast is not None:
            return fast
        # In a group the session joins the unit's savepoint when it first needs the connection.
        connection = unit.connection if unit.transaction is not None else await session.connection()
        return await connection.execute(statement, params)
    connection = session if isinstance(session, AsyncConnection) else await session.connection()
    fast = await fast_execute.run(connection, statement, params)  # SQLite: on the raw connection
    if fast is not None:
        return fast
    return await connection.execute(statement, params)


@asynccontextmanager
async def read(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncConnection]:
    """A pooled connection for plain reads, without an ORM session (the session's own work costs about as
    much as a small read on SQLite). Never write through it: writes go through `transaction()`."""
    engine: AsyncEngine = sessions.kw["bind"]
    kept = kept_reads.of(engine)
    if kept is None:  # PostgreSQL, in memory, read-only: a connection from the pool for each read
        async with engine.connect() as connection:
            yield connection
        return
    # A SQLite file: the connection of an earlier read, kept for a moment (ledger/kept_reads.py).
    connection = kept.take() or await engine.connect()
    try:
        yield connection
    except BaseException:
        await connection.close()
        raise
    await kept.give_back(connection)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class UnitCounter:
    """Units of work begun in this process, and COMMITs that ended them. Tests count a call's write
    transactions with `begun` (a tool call's cost is mostly its units); with group commit several units share
    one COMMIT, so `commits` <= `begun` shows the batching. Exported by server/metrics.py."""

    begun = 0
    commits = 0

    @classmethod
    def count_commit(cls) -> None:
        cls.commits += 1


def transaction(sessions: async_sessionmaker[AsyncSession]) -> AbstractAsyncContextManager[AsyncSession]:
    """One unit of work (`async with transaction(sessions) as session:`): committed on success, rolled back on
    any error. It returns once the unit is committed (on a SQLite file: once its group's COMMIT synced,
    ledger/group_commit.py); a COMMIT that fails raises here. Read what a decision depends on through this
    session (see the module's docstring). On a SQLite file this is the group-commit writer's own context
    manager, not one wrapped in another (a second generator level cost ~1 us a unit)."""
    UnitCounter.begun += 1
    writer = group_commit.writer_of(sessions.kw.get("bind"))
    if writer is not None:
        return writer.unit(sessions)
    return _own_transaction(sessions)


@asynccontextmanager
async def _own_transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A unit that commits on its own (PostgreSQL, in-memory or read-only SQLite)."""
    async with sessions() as session, session.begin():
        connection = await session.connection(execution_options={WRITE_OPTION: True})
        unit = fast_execute.Unit.of(session, connection)
        token = fast_execute.current_unit.set(unit)
        try:
            yield session
        finally:
            unit.open = False
            fast_execute.current_unit.reset(token)
    UnitCounter.commits += 1


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade_sync(connection: Connection) -> None:
    from alembic import command

    if connection.dialect.name == "postgresql":
        # Replicas starting together must not run the same migration twice, and wait for each other (and
        # for the locks a migration's DDL needs) however long it takes.
        connection.execute(_wait_without_bound)
        connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
    command.upgrade(_alembic_config(connection), "head")


async def current_revision(engine: AsyncEngine) -> str | None:
    def _read(connection: Connection) -> str | None:
        from sqlalchemy import inspect

        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    async with engine.connect() as conn:
        return await conn.run_sync(_read)


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every pending migration (alembic is imported only when there is something to do)."""
    if await current_revision(engine) == SCHEMA_REVISION:
        return
    # On SQLite the migration takes the write lock first (BEGIN IMMEDIATE, waited for up to the bound): in a
    # deferred transaction its first DDL would have to upgrade a read lock, which SQLite refuses at once when
    # another process migrates the same fresh file (two servers or commands started together). Alembic reads the
    # version under the lock, so the second finds the schema done.
    async with engine.connect() as conn:
        await conn.execution_options(**{WRITE_OPTION: True})
        async with conn.begin():
            await conn.run_sync(_upgrade_sync)


def run_upgrade(url: str) -> None:
    """`tradewarden db upgrade`: creates the database (a SQLite file) if needed. DatabaseUnavailable."""

    async def _run() -> None:
        check_location(url, create=True)
        engine = create_engine(url)
        try:
            with reported(url):
                await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(_run())
