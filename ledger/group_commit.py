"""Group commit on SQLite: the units of work waiting at the same moment share one durable COMMIT.

With synchronous=FULL every COMMIT syncs the WAL to disk, so a committed unit (its audit records included)
survives power loss; that sync costs far more than a unit's statements. So units of work do not commit one by
one. They queue, in the order they asked, for one writer per database file in the process (every engine on the
file: one server runtime per stdio agent, a command's own). The writer keeps one pooled connection from group
to group while units keep coming, and returns it to the pool once idle for IDLE_RELEASE_SECONDS or when its
engine is disposed of (nothing is left checked out when a command's loop ends).
The first unit of a group opens BEGIN IMMEDIATE (the database's write lock); every unit runs inside its own
SAVEPOINT on the driver's connection (ledger/sqlite_inline.py), RELEASEd on success and rolled back to on
failure: that unit alone fails, its neighbours go on. Its hot statements run there directly
(ledger/fast_execute.py); its ORM session, bound to the group's connection, joins the savepoint only if the
unit's body uses it. A group takes every unit waiting when it opened and, for MAX_GROUP_SECONDS, those that
come meanwhile (at most MAX_GROUP_UNITS); when no unit is waiting for the writer, or past those bounds, it
COMMITs in a worker thread (ledger/sqlite_inline.py: the loop keeps serving during the sync), and the units
that arrive meanwhile wait for the next group. A group nobody waits behind commits on the loop's thread
instead while the recent COMMITs all synced within INLINE_COMMIT_MAX_SECONDS: the loop stands still for one
fast sync rather than pay the hand-over to the thread and back (GroupCommitWriter._commit_inline); when the
loop has nothing else ready to run, that COMMIT runs right as the last unit ends, without a task of its own
(GroupCommitWriter._committed_at_once). A unit's
`transaction()` returns only once its group's COMMIT succeeded; if the COMMIT fails, every unit of the group
raises: nothing is reported committed that is not.

Serialization is what it was: units run one at a time, in order, each seeing every unit before it (committed,
or earlier in its own group) through its own session. A pooled read (`ledger.db.read()`, a plain session)
sees committed groups only, so a unit's decisions read through the unit's session.

Bounded waits: a unit waits for its turn and the write lock at most LOCK_WAIT_SECONDS in all, then raises
"database is locked" (LEDGER_UNAVAILABLE). A cancelled waiter leaves the queue (or passes on the turn it was
just given); the COMMIT runs in a task of its own, so no caller's cancellation stops it half-way.
Other processes (the command line, a second server on the same file) take the write lock between groups: a
group holds it for its bounds only, and a writer that kept it for FAIR_AFTER_SECONDS without a break leaves
it free for FAIR_PAUSE_SECONDS, longer than another process's longest pause between tries
(sqlite_inline.LONGEST_RETRY_PAUSE), so that process gets its turn within its own bounded wait.
`GroupCommitWriter.alone` takes a turn with no group open, for work that needs the write lock on another
connection (the WAL's restart, ledger/checkpoint.py): the units of this process wait for it in the queue.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.orm.session import _SessionCloseState

from ledger import fast_execute
from ledger.kept_reads import close_at_dispose
from ledger.sqlite_inline import LOCK_WAIT_SECONDS, LONGEST_RETRY_PAUSE, wait_until

MAX_GROUP_UNITS = 64  # a group commits after this many units even while others wait
# A group takes every unit that was waiting when it opened (they would hold the lock one after the other
# anyway) and, while it has been open less than this, the units that arrive meanwhile.
MAX_GROUP_SECONDS = 0.004
# A lone group's COMMIT runs on the loop's thread while the recent COMMITs were all this fast (see
# GroupCommitWriter._commit_inline): the hand-over to the worker thread costs ~30 us and, on a busy machine,
# up to milliseconds waiting to be scheduled; a fast sync costs the loop about as long as one unit's own work.
INLINE_COMMIT_MAX_SECONDS = 0.001
COMMITS_TRACKED = 16
FAIR_AFTER_SECONDS = 0.5  # holding the write lock back to back this long, the writer lets it go ...
FAIR_PAUSE_SECONDS = LONGEST_RETRY_PAUSE * 1.5  # ... for this long, so another process's next try gets it
# The writer keeps its pooled connection from group to group (a checkout and a check-in cost about as much as a
# small unit's statements) and returns it to the pool once no group opened for this long: an agent's next call
# comes within milliseconds, a person's or an LLM's much later. It holds no transaction meanwhile (no lock, no
# snapshot: checkpoints and other processes go on). Disposing of its engine returns it at once (`attach`).
IDLE_RELEASE_SECONDS = 0.01


def _failed(statement: str, cause: BaseException) -> OperationalError:
    """A fresh error for one unit (every unit of a failed group raises its own; they share the cause)."""
    return OperationalError(statement, None, cause)


def commit_inline(*, waiting: int, recent_commit_seconds: Sequence[float]) -> bool:
    """Whether a group's COMMIT runs on the loop's thread: nobody waits for the writer, and each of the last
    COMMITS_TRACKED COMMITs synced within INLINE_COMMIT_MAX_SECONDS. Otherwise (units waiting, a slow or busy
    disk, too little history) it runs in the worker thread and the loop keeps serving. Inline, the loop stands
    still for about one fast sync instead of paying the hand-over to the worker thread and back; one slow sync
    stalls it once at most, then the COMMITs go to the thread until COMMITS_TRACKED fast ones in a row."""
    return (waiting == 0 and len(recent_commit_seconds) >= COMMITS_TRACKED
            and max(list(recent_commit_seconds)[-COMMITS_TRACKED:]) <= INLINE_COMMIT_MAX_SECONDS)


class _Group:
    """One transaction on the writer connection and the units in it."""

    __slots__ = ("broken", "connection", "done", "driver", "opened", "units", "waiting_at_open")

    def __init__(self, connection: AsyncConnection, driver: Any, opened: float, waiting_at_open: int) -> None:
        self.connection = connection
        self.driver = driver  # the InlineConnection: whether SQLite still has the transaction open
        self.opened = opened
        self.units = 0
        self.waiting_at_open = waiting_at_open  # units queued behind the one that opened it
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.broken: BaseException | None = None  # SQLite rolled the whole transaction back (a unit's error)

    def still_open(self) -> bool:
        sqlite = self.driver.sqlite
        return bool(sqlite is not None and sqlite.in_transaction and not self.connection.invalidated)


class GroupCommitWriter:
    """The writer of one database file, for the event loop that uses it (one per process and file)."""

    def __init__(self, on_commit: Callable[[], None]) -> None:
        self._on_commit = on_commit
        self._connection: AsyncConnection | None = None  # kept from group to group while units keep coming
        self._busy = False  # a unit or a COMMIT has the writer
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._group: _Group | None = None
        self._finishers: set[asyncio.Task[None]] = set()
        self._lock_free_since: float | None = None  # the writer left the write lock free since (None: it holds it)
        self._last_free = time.monotonic()  # when the write lock was last free for FAIR_PAUSE_SECONDS
        self._commit_seconds: deque[float] = deque(maxlen=COMMITS_TRACKED)  # the last COMMITs' durations
        self._idle_since = 0.0  # when the writer last went idle (nobody holds or waits for it)
        self._idle_check: asyncio.TimerHandle | None = None  # returns the kept connection once idle long enough
        self._releasing: set[asyncio.Task[None]] = set()
        self._disposed_while_busy = False  # the kept connection's engine was disposed of during a group
        self._alone: set[asyncio.Future[None]] = set()  # turns taken by `alone` (no group may stay open for them)

    @asynccontextmanager
    async def unit(self, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
        """One unit of work in the current group: yields its session; returns once the group committed."""
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        await self._take_turn(deadline)
        try:
            group = self._group or await self._open_group(sessions.kw["bind"], deadline)
        except BaseException:
            self._pass_turn()
            raise
        group.units += 1
        try:
            raw = group.driver.begin_unit()  # the unit's own savepoint (ledger/sqlite_inline.py)
        except BaseException as error:
            self._unit_failed(group, error)
            self._pass_turn()
            raise
        # The session joins the unit's savepoint only if the unit's body uses it (ORM work, statements
        # ledger.db.execute leaves to SQLAlchemy); the hot statements run on `raw` (ledger/fast_execute.py).
        session = sessions(bind=group.connection)
        unit = fast_execute.Unit.in_savepoint(session, group.connection, raw, group.driver)
        token = fast_execute.current_unit.set(unit)
        try:
            yield session
            if _has_work(session.sync_session):
                await session.commit()  # flushes; the savepoint stays the unit's until it is released
            group.driver.release_unit()
        except BaseException as error:
            try:
                if session.in_transaction():
                    await session.rollback()
                group.driver.rollback_unit()
            except BaseException as undo_error:  # the unit could not be undone alone: the group fails
                group.broken = group.broken or undo_error
            self._unit_failed(group, error)
            raise
        finally:
            unit.open = False
            fast_execute.current_unit.reset(token)
            group.driver.unit_open = False
            try:
                await _close(session)
            finally:
                self._pass_turn()  # whatever happens, the writer goes on
        done = group.done
        try:
            if done.done():  # committed as the unit ended (_committed_at_once): nothing to wait for
                done.result()
            else:
                await asyncio.shield(done)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            raise _failed("COMMIT", error) from None

    @asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        """Run the block while this process's writer holds no transaction on the file: it takes its turn like a
        unit (in order, within LOCK_WAIT_SECONDS), the open group commits first, and the units that come
        meanwhile queue in memory until the block ends. For work that needs SQLite's write lock on a connection
        of its own (ledger/checkpoint.py restarts the WAL), without units of this process polling for the lock
        meanwhile. Other processes still take their turns through SQLite's lock."""
        await self._take_turn(time.monotonic() + LOCK_WAIT_SECONDS, alone=True)
        try:
            yield
        finally:
            self._pass_turn()

    @staticmethod
    def _unit_failed(group: _Group, error: BaseException) -> None:
        if group.broken is None and not group.still_open():
            group.broken = error  # SQLite rolled back the group (a full disk, an I/O error): all fail

    # --- the turn: one unit (or one COMMIT) has the writer connection at a time, in order of arrival ------

    async def _take_turn(self, deadline: float, *, alone: bool = False) -> None:
        if not self._busy and not self._waiting:
            self._busy = True  # no unit and no COMMIT has the writer: no group is open either
            return
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        self._waiting.append(turn)
        if alone:
            self._alone.add(turn)
            turn.add_done_callback(self._alone.discard)
        # The bound ends the wait itself (a timer that fails the turn), not through asyncio.timeout, whose
        # context manager and cancellation of the task cost ~2 us a waiting unit with 8 agents at once.
        expiry = loop.call_later(max(0.0, deadline - time.monotonic()), _expire, turn)
        try:
            await turn
        except BaseException as error:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._pass_turn()  # given the turn just as it gave up: pass it on
            else:
                turn.cancel()
                with suppress(ValueError):
                    self._waiting.remove(turn)
            if isinstance(error, _WaitExpired):
                raise _failed("BEGIN IMMEDIATE", sqlite3.OperationalError(
                    "database is locked: the ledger's writer stayed busy beyond the bounded wait")) from None
            raise
        finally:
            expiry.cancel()

    def _next_waiter(self) -> asyncio.Future[None] | None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                return turn
        return None

    def _pass_turn(self) -> None:
        """The unit (or COMMIT) holding the writer is done with it: the group goes on with the next waiting
        unit, or commits (nobody waits, it is full or old, or broken); with no group, the next unit opens one."""
        group = self._group
        waiter = self._next_waiter()
        if group is not None and (waiter is None or waiter in self._alone or group.broken is not None
                                  or group.units >= MAX_GROUP_UNITS
                                  or (group.units > group.waiting_at_open
                                      and time.monotonic() - group.opened >= MAX_GROUP_SECONDS)):
            if waiter is not None:
                self._waiting.appendleft(waiter)
            self._group = None  # the turn stays with the COMMIT; units that come now wait for the next group
            if self._committed_at_once(group):
                self._pass_turn()
                return
            finisher = asyncio.get_running_loop().create_task(self._finish(group), name="tradewarden-group-commit")
            self._finishers.add(finisher)
            finisher.add_done_callback(self._finishers.discard)
        elif waiter is not None:
            waiter.set_result(None)
        else:
            self._busy = False
            self._lock_free_since = self._idle_since = time.monotonic()
            if self._connection is not None and self._idle_check is None:
                self._idle_check = asyncio.get_running_loop().call_later(IDLE_RELEASE_SECONDS, self._check_idle)

    # --- the kept connection: back to the pool once the writer is idle ---------------------------------------

    def _idle(self) -> bool:
        return not self._busy and self._group is None

    def _check_idle(self) -> None:
        """The timer: idle for IDLE_RELEASE_SECONDS, the connection goes back to the pool; busy since, look again
        later (one timer at a time, not one per group)."""
        self._idle_check = None
        if self._connection is None:
            return
        if self._idle():
            idle_for = time.monotonic() - self._idle_since
            if idle_for >= IDLE_RELEASE_SECONDS:
                # Taken from the writer now: a unit coming before the task runs opens its group on another.
                connection, self._connection = self._connection, None
                releasing = asyncio.get_running_loop().create_task(connection.close(),
                                                                   name="tradewarden-writer-release")
                self._releasing.add(releasing)
                releasing.add_done_callback(self._releasing.discard)
                return
            wait = IDLE_RELEASE_SECONDS - idle_for
        else:
            wait = IDLE_RELEASE_SECONDS
        self._idle_check = asyncio.get_running_loop().call_later(wait, self._check_idle)

    def engine_disposed(self, engine: Any) -> None:
        """The engine whose connection the writer keeps is being disposed of: close that connection now (called
        in SQLAlchemy's greenlet, by AsyncEngine.dispose), so nothing is left checked out when the loop ends. A
        group running on it keeps it to its end, then gives it back (`_finish`)."""
        connection = self._connection
        if connection is None or connection.sync_engine is not engine:
            return
        if not self._idle():
            self._disposed_while_busy = True
            return
        self._connection = None
        close_at_dispose(connection)

    # --- a group: BEGIN IMMEDIATE ... COMMIT -----------------------------------------------------------

    async def _open_group(self, engine: AsyncEngine, deadline: float) -> _Group:
        """BEGIN IMMEDIATE on the writer's connection (a connection of the engine of the unit that opens the
        group when it has none: every engine on this file in this process has the same schema and hooks)."""
        connection = self._connection
        if connection is None or connection.invalidated:
            await self._release_connection()
            connection = self._connection = await engine.connect()
        token = wait_until.set(deadline)
        try:
            # A connection that is open and valid holds its driver connection: no hop through the greenlet.
            sync = connection.sync_connection
            driver: Any = (sync.connection if sync is not None and not sync.invalidated
                           else await connection.get_raw_connection()).driver_connection
            await driver.begin_group()  # waits for other processes, up to the unit's deadline
        except sqlite3.Error as error:  # as SQLAlchemy would raise it: LEDGER_UNAVAILABLE (policies/failures.py)
            await self._release_connection()
            raise _failed("BEGIN IMMEDIATE", error) from None
        except BaseException:
            await self._release_connection()
            raise
        finally:
            wait_until.reset(token)
        now = time.monotonic()
        if self._lock_free_since is not None and now - self._lock_free_since >= FAIR_PAUSE_SECONDS:
            self._last_free = now
        self._lock_free_since = None
        self._group = _Group(connection, driver, now, len(self._waiting))
        return self._group

    async def _release_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    def _committed_at_once(self, group: _Group) -> bool:
        """A lone group whose COMMIT may run on the loop's thread (_commit_inline) commits right here, without
        the finisher task and the loop's turns it costs: no await between the last unit's end and its answer,
        so no cancellation can come half-way. Only while the loop has nothing else ready to run: other tasks
        about to ask for the writer (agents whose group just committed) get their turn first, queue, and share
        the next group, as they do behind the finisher task; and a task running unit after unit cannot keep the
        loop to itself. Anything else (a broken group, a connection to give back, a COMMIT that fails or finds
        the database busy) is left to `_finish`, which retries, rolls back, answers."""
        if (group.broken is not None or self._disposed_while_busy or not self._commit_inline()
                or _transaction_left(group.connection) or _loop_has_other_work()):
            return False
        try:
            took = group.driver.commit_now()
        except Exception:  # the group's transaction is still open: `_finish` tries again or rolls it back
            return False
        self._commit_seconds.append(took)
        self._on_commit()
        group.done.set_result(None)
        return True

    def _commit_inline(self) -> bool:
        return commit_inline(waiting=len(self._waiting), recent_commit_seconds=self._commit_seconds)

    async def _finish(self, group: _Group) -> None:
        """COMMIT the group (ROLLBACK a broken one), answer its units, pass the turn on."""
        failure: BaseException | None = group.broken
        try:
            if failure is None:
                try:
                    # In a worker thread (sqlite_inline), or inline when that is bounded (_commit_inline).
                    self._commit_seconds.append(await group.driver.commit_group(inline=self._commit_inline()))
                    self._on_commit()
                except BaseException as error:
                    failure = error
            if failure is not None:
                try:
                    group.driver.rollback_group()
                except BaseException:
                    await group.connection.invalidate()
            if self._disposed_while_busy and self._connection is not None:
                self._disposed_while_busy = False
                await self._connection.invalidate()  # its pool is gone: close the driver's connection now
                await self._release_connection()
            elif failure is not None or _transaction_left(group.connection):
                # Failed, or a unit left a SQLAlchemy transaction on it: back to the pool now (its reset rolls
                # back); kept, the connection goes back once the writer is idle (_check_idle).
                await self._release_connection()
        except BaseException as error:  # the connection could not even be returned: the group did not commit
            failure = failure or error
            self._connection = None
        finally:
            if failure is None:
                group.done.set_result(None)
            else:
                # Retrieved even when every unit of the group was cancelled while it waited (no callback on a
                # group that commits: it would be one more thing for the loop to run).
                group.done.add_done_callback(lambda f: None if f.cancelled() else f.exception())
                group.done.set_exception(failure if isinstance(failure, Exception) else RuntimeError(str(failure)))
            await self._let_others_in()
            self._pass_turn()

    async def _let_others_in(self) -> None:
        """Held back to back for FAIR_AFTER_SECONDS with units still waiting: leave the lock free a moment."""
        now = time.monotonic()
        # Only units count: a turn taken by `alone` ends the run of groups anyway, and pausing for it delayed each
        # WAL restart by FAIR_PAUSE_SECONDS (measured 16-18 ms with one agent writing).
        if any(turn not in self._alone for turn in self._waiting) and now - self._last_free >= FAIR_AFTER_SECONDS:
            await asyncio.sleep(FAIR_PAUSE_SECONDS)
            self._last_free = time.monotonic()


class _WaitExpired(Exception):
    """A unit's bounded wait for its turn ran out (it raises LEDGER_UNAVAILABLE's "database is locked")."""


def _expire(turn: asyncio.Future[None]) -> None:
    if not turn.done():  # not given the turn in time: it leaves the queue (_take_turn)
        turn.set_exception(_WaitExpired())


def _loop_has_other_work() -> bool:
    """Callbacks are ready to run on this loop (other tasks woken). Asked of asyncio's own loop (its ready
    queue, an implementation detail); another loop (uvloop) is taken as always busy: the finisher task then."""
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    return ready is None or len(ready) > 0


def _transaction_left(connection: AsyncConnection) -> bool:
    """SQLAlchemy still sees a transaction on the group's connection after its COMMIT (a unit began one on the
    connection itself rather than through its session): it must not carry over into the next group."""
    sync = connection.sync_connection
    return sync is None or sync._transaction is not None


def _has_work(session: Session) -> bool:
    """The session began a transaction or holds changes to flush (ORM objects added, changed or deleted).
    Only objects in its identity map can be changed: with none there (a unit whose statements all ran on the
    driver's connection, ledger/fast_execute.py) `dirty`, which walks the map, is not asked."""
    return session.in_transaction() or bool(session._new or session._deleted
                                            or (session.identity_map and session.dirty))


async def _close(session: AsyncSession) -> None:
    """Close a unit's session. One that never began holds no connection: closing it is in-memory work only,
    done here without the hop through SQLAlchemy's greenlet; and one that also holds no object has nothing to
    close (its close, with close_resets_only, would only swap its empty identity map for another: ~1-2 us)."""
    sync = session.sync_session
    if sync.in_transaction():
        await session.close()
    elif (sync.identity_map or sync._new or sync._deleted
          or sync._close_state is not _SessionCloseState.CLOSE_IS_RESET):  # a close that ends the session
        sync.close()


class _File:
    __slots__ = ("last", "on_commit", "path")

    def __init__(self, path: str, on_commit: Callable[[], None]) -> None:
        self.path, self.on_commit = path, on_commit
        # The loop that last asked for this file's writer, and that writer (weakly: the writer lives as long as
        # its loop's entry in _writers), so the next unit on that loop finds it without two dictionary lookups.
        self.last: tuple[weakref.ref[asyncio.AbstractEventLoop], weakref.ref[GroupCommitWriter]] | None = None


_files: weakref.WeakKeyDictionary[Any, _File] = weakref.WeakKeyDictionary()  # sync engine → its database file
# One writer per database file and event loop: the engines of one process on one file (one server runtime per
# stdio agent, a command's own engine) queue together; another loop, like another process, takes SQLite's lock.
_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, GroupCommitWriter]] = (
    weakref.WeakKeyDictionary())


def attach(engine: AsyncEngine, path: str, on_commit: Callable[[], None]) -> None:
    """Units of work on `engine` (a SQLite file at `path`) go through group commit; `on_commit` is called
    after each group's COMMIT."""
    file = _files[engine.sync_engine] = _File(os.path.realpath(path), on_commit)

    def disposed(sync_engine: Any) -> None:
        for writers in list(_writers.values()):
            writer = writers.get(file.path)
            if writer is not None:
                writer.engine_disposed(sync_engine)

    event.listen(engine.sync_engine, "engine_disposed", disposed)


def writer_of(engine: AsyncEngine | None) -> GroupCommitWriter | None:
    """The group-commit writer of the engine's file on this event loop (None: PostgreSQL, in-memory or
    read-only SQLite, where each unit commits on its own)."""
    if not isinstance(engine, AsyncEngine):
        return None
    file = _files.get(engine.sync_engine)
    if file is None:
        return None
    loop = asyncio.get_running_loop()
    last = file.last
    if last is not None and last[0]() is loop:
        writer = last[1]()
        if writer is not None:
            return writer
    writers = _writers.setdefault(loop, {})
    writer = writers.get(file.path)
    if writer is None:
        writer = writers[file.path] = GroupCommitWriter(file.on_commit)
    file.last = (weakref.ref(loop), weakref.ref(writer))
    return writer


def writer_at(path: str) -> GroupCommitWriter | None:
    """The group-commit writer of the database file at `path` on this event loop, if a unit of work made one."""
    writers = _writers.get(asyncio.get_running_loop())
    return None if writers is None else writers.get(os.path.realpath(path))
