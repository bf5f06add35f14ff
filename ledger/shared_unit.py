"""A unit of work that a component writing to the same database may join instead of opening its own.

The simulated broker keeps its orders in our own database. An execution's outcome unit (policies/gate.py, unit
(c)) sends the order from inside its unit of work: the broker's writes (the order row) then commit in one
transaction with the trade row, the fill's accounting and the audit records that report them, in a SAVEPOINT of
their own (a refused order rolls back alone). That saves a COMMIT (on a SQLite file with synchronous=FULL, a
sync of the WAL to disk) per execution and leaves no moment at which the broker holds an order our ledger does
not. At most once is untouched: the order's intent is committed by the unit before (unit (a)), so a crash before
this unit commits leaves a pending_submit trade the broker never saw, which reconciliation settles; a second
submission with the same client_order_id still meets the broker's unique constraint (DUPLICATE_ORDER).

Whoever holds the unit shares it for a block (`sharing`); a component asks `joinable(sessions)` for it (only on
the same engine: a unit on another database, or no unit shared, means it opens its own). What the component
must only believe once the unit is committed (a cache of settled state) it hands to `after_commit`; the owner
runs those callbacks after its unit committed (`SharedUnit.committed`), never after a rollback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.fast_execute import current_unit


@dataclass
class SharedUnit:
    session: AsyncSession
    bind: object  # the engine of the sessions the unit came from
    _after_commit: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def committed(self) -> None:
        """The owner's unit committed: what the joiners learned in it holds now."""
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()


_shared: ContextVar[SharedUnit | None] = ContextVar("tradewarden_shared_unit", default=None)


@contextmanager
def sharing(session: AsyncSession, sessions: async_sessionmaker[AsyncSession]) -> Iterator[SharedUnit]:
    """Offer the unit of work in progress (`session`, from `sessions`) to the components called in this block."""
    unit = SharedUnit(session=session, bind=sessions.kw.get("bind"))
    token = _shared.set(unit)
    try:
        yield unit
    finally:
        _shared.reset(token)


def joinable(sessions: async_sessionmaker[AsyncSession]) -> SharedUnit | None:
    """The unit shared with this task, if it is on the same engine as `sessions`."""
    unit = _shared.get()
    if unit is None or unit.bind is None or unit.bind is not sessions.kw.get("bind"):
        return None
    return unit


_SAVEPOINT = "tradewarden_joined"


@asynccontextmanager
async def savepoint(session: AsyncSession) -> AsyncIterator[None]:
    """The joiner's writes in a SAVEPOINT of the shared unit: released on success, rolled back alone on failure
    (PostgreSQL aborts a whole transaction on a failed statement unless it ran in a savepoint). On SQLite's
    inline driver (ledger/sqlite_inline.py) the savepoint is sent straight to the driver's connection: SQLAlchemy's
    own nested transaction costs ~100 us more, for nothing SQLite needs (the unit's session knows nothing of it and
    need not: statements inside it run on the same connection). The connection is the one the unit
    found when it began (ledger.fast_execute.current_unit), not asked of the session again (two greenlet hops)."""
    unit = current_unit.get()
    raw: Any = unit.raw if unit is not None and unit.current(session) else None
    if raw is None:  # not on the unit's raw path (PostgreSQL, a watched connection): ask the session
        connection = await session.connection()
        driver: Any = (await connection.get_raw_connection()).driver_connection
        raw = getattr(driver, "sqlite", None)
    if raw is None:
        async with session.begin_nested():
            # SQLAlchemy emits the SAVEPOINT only when the nested transaction is first asked for its connection:
            # asked here, since the joiner's statements may run on the unit's connection without asking the
            # session (ledger.db.execute), and must not run outside the savepoint.
            await session.connection()
            yield
        return
    raw.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        yield
    except BaseException:
        if raw.in_transaction:  # else SQLite rolled back the whole unit (an I/O error): its owner fails too
            raw.execute(f"ROLLBACK TO {_SAVEPOINT}")
            raw.execute(f"RELEASE {_SAVEPOINT}")
        raise
    raw.execute(f"RELEASE {_SAVEPOINT}")
