"""The hot statements run straight on the driver's connection (SQLite's sqlite3, PostgreSQL's asyncpg), compiled once.

Through SQLAlchemy's AsyncConnection.execute a small statement costs ~100 µs (greenlet switch, compiled-cache
lookup by cache key, execution context, cursor result metadata) where SQLite itself answers in ~10 µs. The
statements on every call's path are module-level constants, so each is compiled once per dialect and parameter
key set, keeping SQLAlchemy's own bind and result processors (Decimal, timezone-aware datetimes, JSON, bool),
and run on the raw connection under the SAME SQLAlchemy connection and transaction: the unit's savepoint in a
group-commit group, its BEGIN IMMEDIATE, the lock handling of ledger/sqlite_inline.py (a locked database is
retried asynchronously up to the bound, then raises: LEDGER_UNAVAILABLE) are untouched. Errors surface as
SQLAlchemy raises them (IntegrityError, OperationalError wrapping the sqlite3 error).

PostgreSQL (asyncpg): the same statements, compiled once for asyncpg, run on the asyncpg connection in the
transaction SQLAlchemy's adapter keeps (`_run_asyncpg`); executemany and IN lists expanded at compile time
are left to SQLAlchemy there. A connection lost mid-statement is not invalidated here as SQLAlchemy would: the
pool's pre-ping replaces it at the next checkout.

Anything else goes through SQLAlchemy unchanged (`run` returns None): other drivers, RETURNING, expanding IN
parameters bound per call, literal_execute, Python-side column defaults, text(), executemany of SELECTs or of
parameter sets with different keys, statements with execution options, engines with statement event listeners
(they must see every statement), and a statement object seen for the first time (statements built per call
would pay a compile each time; SQLAlchemy's cache serves them better) unless it is marked `prebuilt` (a
module's constants: prepared on their first run, so compiled once per process).
"""

from __future__ import annotations

import re
import sqlite3
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from operator import itemgetter
from typing import Any

from sqlalchemy import Delete, Insert, Select, Update, exc
from sqlalchemy.engine import Result
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler

# An execution option marking a unit of work's connection: on SQLite it begins with the write lock (BEGIN
# IMMEDIATE, ledger/db.py's begin hook), which may have to wait asynchronously.
WRITE_OPTION = "tradewarden_writes"
_UNSUPPORTED = object()  # a statement this module leaves to SQLAlchemy
_CORE_STATEMENTS = (Select, Insert, Update, Delete)  # text() and the rest are left to SQLAlchemy


class _Prepared:
    """One statement compiled for SQLite with one parameter key set."""

    __slots__ = ("assembly", "binds", "compiled", "constants", "last_rows", "metadata", "plan", "result_processors",
                 "returns_rows", "run_assembly", "run_sql", "shares_rows", "sql", "typed_processors")

    last_rows: dict[tuple[Any, ...], tuple[list[Any], list[tuple[type, ...]], list[tuple[Any, ...]]]]

    result_processors: tuple[tuple[int, Any], ...]  # (column index, processor) of the columns that have one

    def __init__(self, compiled: SQLCompiler, dialect: Any, keys: frozenset[str]) -> None:
        self.compiled = compiled
        self.sql = compiled.string
        processors: dict[str, Any] = dict(compiled._bind_processors)
        positions: Sequence[str] = compiled.positiontup or []
        self.constants: dict[str, Any] = {}
        if compiled.post_compile_params:
            # An IN of values fixed in the statement (never from the call's parameters): expanded once.
            expanded = compiled._process_parameters_for_postcompile(
                compiled.construct_params(dict.fromkeys(keys), escape_names=False, _no_postcompile=True))
            self.sql, positions = expanded.statement, expanded.positiontup or []
            processors.update(expanded.processors)
            self.constants = {key: value for key, value in expanded.parameters.items() if key not in keys}
        self.binds = tuple((key, processors.get(key)) for key in positions)
        self.plan = None if compiled.post_compile_params else _plan(compiled, positions, keys, processors)
        self.assembly = None if self.plan is None else _Assembly(self.plan)
        # SQLite: the values fixed in the statement (statuses, limits) written into the SQL once, not bound on
        # every call (the usage read has 49 of them); the SQL as compiled stays `sql`, for errors and PostgreSQL.
        inlined = (_inlined(self.sql, self.plan) if self.plan is not None and dialect.name == "sqlite"
                   and compiled.positional else None)
        self.run_sql, self.run_assembly = inlined if inlined is not None else (self.sql, self.assembly)
        self.returns_rows = bool(compiled._result_columns)
        self.result_processors = _present(column[3]._cached_result_processor(dialect, None)
                                          for column in compiled._result_columns)
        self.metadata = SimpleResultMetaData([column[0] for column in compiled._result_columns])
        # PostgreSQL: result processors chosen by each column's type as the server reports it (set on first run).
        self.typed_processors: tuple[tuple[int, Any], ...] | None = None
        # share_rows: per set of parameters (an agent's id), the last rows SQLite returned, with their values'
        # types, and those rows processed.
        self.shares_rows = False
        self.last_rows = {}

    def processed(self, fetched: list[Any], parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The fetched rows with their processed columns converted; for a statement of share_rows, the rows of
        the last call with the same parameters again (a new list of the same tuples) when SQLite returned
        exactly the same values, of the same types (1, 1.0 and True are equal but not processed alike)."""
        if not self.shares_rows:
            return _processed(fetched, self.result_processors)
        try:
            key = tuple(parameters)
            known = self.last_rows.get(key)
        except TypeError:  # a parameter that cannot be a key: nothing kept
            return _processed(fetched, self.result_processors)
        types = [tuple(map(type, row)) for row in fetched]
        if known is not None and known[0] == fetched and known[1] == types:
            return list(known[2])
        rows = _processed(fetched, self.result_processors)
        if len(self.last_rows) >= SHARED_ROWS_KEPT:  # many agents in one process: start again
            self.last_rows.clear()
        self.last_rows[key] = (fetched, types, rows)  # one assignment: a reader sees the old or the new, whole
        return list(rows)

    def run_parameters(self, params: Mapping[str, Any] | None) -> list[Any]:
        """The parameters of run_sql (those of the call; the fixed values are written into it)."""
        if self.run_assembly is not None:
            return self.run_assembly(params or _NO_PARAMETERS)
        return self.parameters(params)

    def parameters(self, params: Mapping[str, Any] | None) -> list[Any]:
        if self.assembly is not None:  # the parameter keys are this statement's `keys`: no lookups to decide
            return self.assembly(params or _NO_PARAMETERS)
        values = self.compiled.construct_params(params, escape_names=False, _no_postcompile=True)
        if self.constants:
            values.update(self.constants)
        return [value if process is None else process(value)
                for value, process in ((values[key], process) for key, process in self.binds)]


def _present(processors: Iterable[Any]) -> tuple[tuple[int, Any], ...]:
    """The columns that have a result processor, with it: most columns have none (text, integers), and a row
    is processed column by column only where one does."""
    return tuple((index, process) for index, process in enumerate(processors) if process is not None)


def _processed(rows: Iterable[Sequence[Any]], processors: tuple[tuple[int, Any], ...]) -> list[tuple[Any, ...]]:
    """The rows with each processed column converted (Decimal, aware datetimes, JSON, bool)."""
    processed = []
    for row in rows:
        values = list(row)
        for index, process in processors:
            values[index] = process(values[index])
        processed.append(tuple(values))
    return processed


_NO_PARAMETERS: Mapping[str, Any] = {}
SHARED_ROWS_KEPT = 256  # sets of parameters (agents) whose last rows a share_rows statement keeps


def _picker(indices: Sequence[Any]) -> Callable[[Any], list[Any]]:
    """[seq[i] for i in indices] as a list, picked in C (operator.itemgetter) rather than a loop per item."""
    if not indices:
        return lambda _: []
    if len(indices) == 1:
        only = indices[0]
        return lambda seq: [seq[only]]
    pick = itemgetter(*indices)
    return lambda seq: list(pick(seq))


class _Assembly:
    """A plan (_plan) done in the fewest steps; it gives the list `plan_parameters` gives, for every call.

    Positional parameters repeat the same value (a window's start bound in three subqueries, the agent id in
    six): each distinct (value, processor) of the statement is processed once, not once per position, and the
    values are gathered from the call's mapping and placed in position order by operator.itemgetter (in C)
    instead of a Python loop over every position. Processors run in the order of their first position, so a
    value that cannot be bound (a naive datetime, a float for an exact decimal) fails as it did."""

    __slots__ = ("constants", "gather", "place", "processed", "slots")

    def __init__(self, plan: Sequence[tuple[str | None, Any, Any]]) -> None:
        sources = list(dict.fromkeys(source for source, _, _ in plan if source is not None))
        base_of = {source: index for index, source in enumerate(sources)}
        constants: list[Any] = []
        slot_of: dict[tuple[int, Any], int] = {}  # (index in the gathered values, processor) -> slot
        slot_bases: list[int] = []
        processed: list[tuple[int, Any]] = []
        layout: list[int] = []
        for source, constant, process in plan:
            if source is None:  # a value fixed in the statement: a place of its own among the gathered values
                base = len(sources) + len(constants)
                constants.append(constant)
            else:
                base = base_of[source]
            slot = slot_of.get((base, process))
            if slot is None:
                slot = slot_of[(base, process)] = len(slot_bases)
                slot_bases.append(base)
                if process is not None:
                    processed.append((slot, process))
            layout.append(slot)
        self.gather = _picker(sources)
        self.constants = tuple(constants)
        # None where a step would change nothing (each gathered value one slot, each slot one position, in order).
        self.slots = None if slot_bases == list(range(len(sources) + len(constants))) else _picker(slot_bases)
        self.place = None if layout == list(range(len(slot_bases))) else _picker(layout)
        self.processed = tuple(processed)

    def __call__(self, given: Mapping[str, Any]) -> list[Any]:
        values = self.gather(given)
        if self.constants:
            values.extend(self.constants)
        if self.slots is not None:
            values = self.slots(values)
        for slot, process in self.processed:
            values[slot] = process(values[slot])
        return values if self.place is None else self.place(values)


_SQLITE_INTEGERS = range(-(2 ** 63), 2 ** 63)


def _literal(value: Any) -> str | None:
    """A value fixed in a statement as SQLite literal text, where that is exactly what binding it gives (ASCII
    text, a 64-bit integer); None for anything else (it stays bound)."""
    if type(value) is str and value.isascii() and "\x00" not in value:
        return "'" + value.replace("'", "''") + "'"
    if type(value) is int and value in _SQLITE_INTEGERS:
        return str(value)
    return None


def _inlined(sql: str, plan: Sequence[tuple[str | None, Any, Any]]) -> tuple[str, _Assembly] | None:
    """The SQL with the plan's fixed values (processed once: their processors are pure) written in as literals,
    and the assembly of the parameters left; None when there is none to write in, or when the text holds a "?"
    that is not a parameter (in a literal SQLAlchemy rendered)."""
    parts = sql.split("?")
    if len(parts) != len(plan) + 1:
        return None
    text, kept = [parts[0]], []
    for entry, part in zip(plan, parts[1:], strict=True):
        source, constant, process = entry
        literal = None if source is not None else _literal(constant if process is None else process(constant))
        if literal is None:
            kept.append(entry)
            literal = "?"
        text.append(literal)
        text.append(part)
    if len(kept) == len(plan):
        return None
    return "".join(text), _Assembly(kept)


def plan_parameters(plan: Sequence[tuple[str | None, Any, Any]], params: Mapping[str, Any] | None) -> list[Any]:
    """The positional parameters of a plan for one call, position by position: the definition _Assembly keeps
    (tests/ledger/test_fast_execute_parameters.py holds them equal)."""
    given: Mapping[str, Any] = params or {}
    planned: list[Any] = []
    for source, constant, process in plan:
        value = constant if source is None else given[source]
        planned.append(value if process is None else process(value))
    return planned


def _plan(compiled: SQLCompiler, positions: Sequence[str], keys: frozenset[str], processors: Mapping[str, Any]
          ) -> tuple[tuple[str | None, Any, Any], ...] | None:
    """Where each positional parameter comes from, decided once for this key set as construct_params decides
    it on every call: the call's value under the bind's key (or its compiled name), else the value fixed in
    the statement; with its bind processor. None (construct_params each time) when a bind computes its value
    (callable_), is required but not among `keys` (construct_params raises as it should), or has an escaped
    name."""
    if compiled.escaped_bind_names:
        return None
    by_name = {name: bind for bind, name in compiled.bind_names.items()}
    plan: list[tuple[str | None, Any, Any]] = []
    for name in positions:
        bind = by_name.get(name)
        if bind is None or bind.callable is not None:
            return None
        if bind.key in keys:
            plan.append((bind.key, None, processors.get(name)))
        elif name in keys:
            plan.append((name, None, processors.get(name)))
        elif bind.required:
            return None
        else:
            plan.append((None, bind.effective_value, processors.get(name)))
    return tuple(plan)


def _prepare(statement: Any, keys: frozenset[str], dialect: Any) -> _Prepared | object:
    try:
        compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
    except Exception:
        return _UNSUPPORTED
    if (not isinstance(compiled, SQLCompiler) or not compiled.positional or compiled.literal_execute_params
            or compiled.insert_prefetch or compiled.update_prefetch
            or compiled.effective_returning or compiled.has_out_parameters or compiled.schema_translate_map
            or compiled._textual_ordered_columns or compiled._ad_hoc_textual or compiled._loose_column_name_matching
            or any(bind.key in keys or bind.callable is not None for bind in compiled.post_compile_params)):
        return _UNSUPPORTED
    writes = compiled.isinsert or compiled.isupdate or compiled.isdelete
    if writes == bool(compiled._result_columns):  # text(), or anything neither a plain SELECT nor plain DML
        return _UNSUPPORTED
    try:
        prepared = _Prepared(compiled, dialect, keys)
    except Exception:
        return _UNSUPPORTED
    prepared.shares_rows = statement in _sharing_rows
    return prepared


# Statements whose rows repeat call after call and whose callers never change the values they read (an agent's
# stored permissions: read by every call, the same until an operator changes them). On SQLite the processed row
# (its JSON lists, Decimals and datetimes: ~15 µs for the permissions) is reused, per set of parameters (each
# agent's), while SQLite returns the same values; the values are then the same objects as the last such call's,
# hence "never change them".
_sharing_rows: weakref.WeakSet[Any] = weakref.WeakSet()


def share_rows(statement: Any) -> Any:
    """Mark `statement` (a module-level constant) as one whose processed rows may be shared between calls that
    read exactly the same values; its callers must not change the values (lists, dicts) of a row. Returns it."""
    _sharing_rows.add(statement)
    _prebuilt.add(statement)  # a module-level constant by contract
    return statement


# id(statement) → (weak reference to it, {(dialect class, parameter keys): prepared}): weak, so statements built
# per call do not pile up (an entry goes with its statement); by id, so a lookup is two C calls (a dict's get
# and the reference's call) rather than a WeakKeyDictionary's get in Python, seven times a proposal.
_Prepareds = dict[tuple[Any, frozenset[str]], "_Prepared | object"]
_prepared: dict[int, tuple[weakref.ref[Any], _Prepareds]] = {}


def _prepared_of(statement: Any) -> _Prepareds | None:
    """The statement's prepared forms; None if it has none yet. TypeError if it cannot be weakly referenced."""
    entry = _prepared.get(id(statement))
    if entry is not None and entry[0]() is statement:
        return entry[1]
    weakref.ref(statement)  # raises TypeError for a statement that cannot be weakly referenced
    return None


def _new_prepared(statement: Any) -> _Prepareds:
    key, table = id(statement), _prepared  # the table itself, not the module's name: still there at shutdown

    def forget(reference: weakref.ref[Any]) -> None:
        entry = table.get(key)
        if entry is not None and entry[0] is reference:
            del table[key]

    by_keys: _Prepareds = {}
    table[key] = (weakref.ref(statement, forget), by_keys)
    return by_keys

_seen: weakref.WeakSet[Any] = weakref.WeakSet()  # statements run once: compiled when they come again

# Statements built once, at import (a module's constants): prepared here on their FIRST run. Left to SQLAlchemy
# once, as a statement of unknown lifetime is, each was compiled twice in a process (by SQLAlchemy's execution
# on its first run, with its execution work, then here on its second): a server's second get_trading_status
# cost 6.8 ms of CPU instead of 1.6.
_prebuilt: weakref.WeakSet[Any] = weakref.WeakSet()


def prebuilt(*statements: Any) -> None:
    """Mark these statements (module-level constants, run again and again) to be prepared on their first run."""
    for statement in statements:
        _prebuilt.add(statement)


def prebuilt_statements(namespace: Mapping[str, Any]) -> None:
    """Mark every Core statement (SELECT, INSERT, UPDATE, DELETE) bound to a name in `namespace` (a module's
    globals, once its statements are built) as prebuilt."""
    prebuilt(*(value for value in namespace.values() if isinstance(value, _CORE_STATEMENTS)))


_NO_COLUMNS = SimpleResultMetaData([])  # shared, like a prepared statement's metadata: results never change it


class RowCountResult(IteratorResult[Any]):
    """The result of an INSERT, UPDATE or DELETE: no rows, its `rowcount`."""

    def __init__(self, rowcount: int) -> None:
        super().__init__(_NO_COLUMNS, iter(()))
        self.rowcount = rowcount


def _wrapped(error: sqlite3.Error, prepared: _Prepared, parameters: Any) -> exc.DBAPIError:
    wrapped = exc.DBAPIError.instance(prepared.sql, parameters, error, sqlite3.Error)
    assert isinstance(wrapped, exc.DBAPIError)
    return wrapped


def _watched(sync: Any) -> bool:
    """Someone watches the statements (tests, tracing): they must see every one, so none runs here."""
    events = sync.dispatch
    return bool(events.before_cursor_execute or events.after_cursor_execute or events.before_execute
                or events.after_execute)


def _lookup(statement: Any, params: Any, dialect: Any) -> tuple[_Prepared, bool] | None:
    """The statement prepared for these parameters, and whether they are a list of sets (executemany);
    None when it is left to SQLAlchemy."""
    if not isinstance(statement, _CORE_STATEMENTS) or statement._execution_options:
        return None
    many = params is not None and not isinstance(params, Mapping)
    if many:
        if not params or not all(isinstance(one, Mapping) for one in params):
            return None
        keys = frozenset(params[0])
        if any(frozenset(one) != keys for one in params):
            return None
    else:
        keys = frozenset(params) if params else frozenset()
    try:
        by_keys = _prepared_of(statement)
    except TypeError:  # not weak-referenceable
        return None
    if by_keys is None:
        if statement not in _seen and statement not in _prebuilt:
            _seen.add(statement)
            return None
        by_keys = _new_prepared(statement)
    # Every engine here is made alike (ledger/db.py): the dialect's class names it.
    prepared = by_keys.get((type(dialect), keys))
    if prepared is None:
        prepared = by_keys[(type(dialect), keys)] = _prepare(statement, keys, dialect)
    if not isinstance(prepared, _Prepared) or (many and prepared.returns_rows):
        return None
    return prepared, many


class Unit:
    """The driver connection of one unit of work (ledger.db.transaction), found once when the unit begins, so
    its statements run there without asking the session for its connection each time. `raw` is the sqlite3
    connection inside the unit's transaction (its savepoint in a group, or its BEGIN IMMEDIATE), `driver` the
    InlineConnection whose `_execute` retries a locked database up to the bound. `transaction`: the SQLAlchemy
    transaction the raw connection belongs to (None in a group, where the unit's savepoint is its own); once
    that ends (a commit or rollback inside the unit), statements go back through the session."""

    __slots__ = ("asyncpg", "connection", "dialect", "driver", "open", "raw", "session", "transaction")

    def __init__(self, session: Any, connection: AsyncConnection, raw: sqlite3.Connection | None, driver: Any,
                 transaction: Any, asyncpg: Any = None) -> None:
        self.session = session
        self.connection = connection
        self.dialect = connection.dialect
        self.raw = raw
        self.driver = driver
        self.transaction = transaction
        self.asyncpg = asyncpg  # PostgreSQL: SQLAlchemy's asyncpg adapter connection (its transaction, its cache)
        self.open = True

    @classmethod
    def of(cls, session: Any, connection: AsyncConnection, *, own_savepoint: sqlite3.Connection | None = None
           ) -> Unit:
        """The unit whose session is `session`, on `connection` (in its transaction already). `own_savepoint`:
        the unit runs in a savepoint of its own on this sqlite3 connection (group commit)."""
        sync = connection.sync_connection
        assert sync is not None
        driver = sync.connection.driver_connection
        transaction = None if own_savepoint is not None else sync.get_transaction()
        raw = own_savepoint if own_savepoint is not None else getattr(driver, "sqlite", None)
        watched = _watched(sync)
        if raw is None or sync.dialect.name != "sqlite" or getattr(driver, "_execute", None) is None or watched:
            raw = None
        adapter = None
        if sync.dialect.name == "postgresql" and sync.dialect.driver == "asyncpg" and not watched:
            adapter = sync.connection.dbapi_connection
        return cls(session, connection, raw, driver, transaction, adapter)

    @classmethod
    def in_savepoint(cls, session: Any, connection: AsyncConnection, raw: sqlite3.Connection, driver: Any) -> Unit:
        """`of(session, connection, own_savepoint=raw)` for a unit of a group-commit group, whose connection is
        known to be SQLite's through the InlineConnection `driver` (ledger/group_commit.py): the same unit,
        without asking SQLAlchemy's connection what the group already knows."""
        sync = connection.sync_connection
        assert sync is not None
        return cls(session, connection, None if _watched(sync) else raw, driver, None)

    def current(self, session: Any) -> bool:
        """This unit is `session`'s and still in the transaction it began with."""
        if self.session is not session or not self.open:
            return False
        transaction = self.transaction
        return transaction is None or (transaction.is_active and self.connection.sync_connection is not None
                                       and self.connection.sync_connection._transaction is transaction)


# The unit of work the current task is in (ledger.db.transaction sets it for the unit's body).
current_unit: ContextVar[Unit | None] = ContextVar("tradewarden_unit", default=None)


async def run_in_unit(unit: Unit, statement: Any, params: Any) -> Result[Any] | None:
    """The statement's result, run on the unit's raw connection; None when it is left to SQLAlchemy."""
    if unit.raw is not None:
        found = _lookup(statement, params, unit.dialect)
        if found is None:
            return None
        return await _run_prepared(found[0], found[1], params, unit.raw, unit.driver._execute)
    if unit.asyncpg is not None:
        found = _lookup(statement, params, unit.dialect)
        # One parameter set, no IN expanded at compile time: the rest is SQLAlchemy's.
        if found is None or found[1] or found[0].plan is None:
            return None
        return await _run_asyncpg(unit.asyncpg, unit.dialect, found[0], params)
    return None


_STATUS_COUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")


async def _run_asyncpg(adapter: Any, dialect: Any, prepared: _Prepared, params: Any) -> Result[Any]:
    """PostgreSQL: the statement as SQLAlchemy compiled it for asyncpg, run on the asyncpg connection inside the
    SAME transaction SQLAlchemy's adapter keeps (begun here if the unit ran nothing yet, as the adapter would),
    through the adapter's prepared-statement cache, one statement at a time (its mutex). Errors become what
    SQLAlchemy raises: the adapter translates asyncpg's exception into its DBAPI error (a lock timeout, a
    unique violation...), wrapped as SQLAlchemy wraps it (OperationalError, IntegrityError...)."""
    parameters = prepared.parameters(params)
    try:
        async with adapter._execute_mutex:
            try:
                if adapter._transaction is None:
                    await adapter._start_transaction()
                statement, attributes = await adapter._prepare(prepared.sql, dialect._invalidate_schema_cache_asof)
                records = await statement.fetch(*parameters)
                status = statement.get_statusmsg()
            except Exception as error:
                if isinstance(error, dialect.loaded_dbapi.Error):
                    raise
                adapter._handle_exception(error)  # raises the translated DBAPI error
    except dialect.loaded_dbapi.Error as error:
        raise exc.DBAPIError.instance(prepared.sql, parameters, error, dialect.loaded_dbapi.Error,
                                      dialect=dialect) from error
    if not prepared.returns_rows:
        matched = _STATUS_COUNT.match(status or "")
        return RowCountResult(int(matched.group(1)) if matched else -1)
    processors = prepared.typed_processors
    if processors is None:
        processors = prepared.typed_processors = _present(
            column[3]._cached_result_processor(dialect, attribute.type.oid)
            for column, attribute in zip(prepared.compiled._result_columns, attributes, strict=True))
    rows = _processed(records, processors) if processors else [tuple(record) for record in records]
    return IteratorResult(prepared.metadata, iter(rows))


async def run(connection: AsyncConnection, statement: Any, params: Any) -> Result[Any] | None:
    """The statement's result, run on the raw connection; None when it is left to SQLAlchemy."""
    sync = connection.sync_connection
    if sync is None or _watched(sync):
        return None
    if sync.dialect.name == "postgresql" and sync.dialect.driver == "asyncpg":
        found = _lookup(statement, params, sync.dialect)
        if found is None or found[1] or found[0].plan is None:
            return None
        if not sync.in_transaction():
            if sync._transaction is not None:
                return None  # a failed transaction awaiting its rollback: SQLAlchemy raises as it should
            # What SQLAlchemy's autobegin does; on PostgreSQL that is no I/O (the adapter begins the
            # transaction with the first statement, as _run_asyncpg does), so no hop through the greenlet.
            sync.begin()
        return await _run_asyncpg(sync.connection.dbapi_connection, sync.dialect, found[0], params)
    if sync.dialect.name != "sqlite":
        return None
    found = _lookup(statement, params, sync.dialect)
    if found is None:
        return None
    driver = sync.connection.driver_connection
    raw = getattr(driver, "sqlite", None)
    execute = getattr(driver, "_execute", None)
    if raw is None or execute is None:
        return None
    if not sync.in_transaction():
        if sync._transaction is not None:
            return None  # a failed transaction awaiting its rollback: SQLAlchemy raises as it should
        if sync.get_execution_options().get(WRITE_OPTION, False):
            await connection.begin()  # BEGIN IMMEDIATE may wait for the lock: through SQLAlchemy's greenlet
        else:
            # What SQLAlchemy's autobegin does; the begin hook's plain BEGIN runs on the driver's connection
            # (ledger/db.py), so no hop through the greenlet is needed.
            sync.begin()
    return await _run_prepared(found[0], found[1], params, raw, execute)


async def _run_prepared(prepared: _Prepared, many: bool, params: Any, raw: sqlite3.Connection,
                        execute: Callable[..., Awaitable[Any]]) -> Result[Any]:
    """Run on `raw`: `execute` tries at once and retries a locked database asynchronously, up to the bound. It
    runs the SQL with the statement's fixed values written in (run_sql); a failure names the statement and its
    parameters as SQLAlchemy would (sql, parameters)."""
    sql = prepared.run_sql
    if many:
        sets = [prepared.run_parameters(one) for one in params]

        def count_many() -> int:
            return raw.executemany(sql, sets).rowcount

        try:
            return RowCountResult(await execute(count_many))
        except sqlite3.Error as error:
            raise _wrapped(error, prepared, [prepared.parameters(one) for one in params]) from error
    parameters = prepared.run_parameters(params)
    if prepared.returns_rows:
        def rows() -> list[Any]:
            return raw.execute(sql, parameters).fetchall()

        try:
            fetched = await execute(rows)  # retried while locked, up to the bound (ledger/sqlite_inline.py)
        except sqlite3.Error as error:
            raise _wrapped(error, prepared, prepared.parameters(params)) from error
        if prepared.result_processors:
            fetched = prepared.processed(fetched, parameters)
        return IteratorResult(prepared.metadata, iter(fetched))

    def count() -> int:
        return raw.execute(sql, parameters).rowcount

    try:
        return RowCountResult(await execute(count))
    except sqlite3.Error as error:
        raise _wrapped(error, prepared, prepared.parameters(params)) from error
