"""The running system: config, database, broker and gate, built once per process and closed at exit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast

from sqlalchemy import Insert, Select, Table, exists, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from broker.base import Broker
from ledger import db
from ledger.checkpoint import background_checkpoints
from ledger.models import GLOBAL_SCOPE, AuditHead, TradingState
from policies.agents import config_agents_in_line, sync_config_agents
from policies.audit import GENESIS_HASH
from policies.gate import Gate, GateSettings
from policies.reconcile import Reconciler
from server.clock import utc_now
from server.config import Config, check_broker_credentials, webhook_secrets
from tradewarden.log import get_logger

if TYPE_CHECKING:
    from policies import anchoring
    from server.webhooks import WebhookDispatcher

log = get_logger("tradewarden.runtime")
# How long start-up waits for the first reconciliation (it goes on in the background if the broker is slow).
STARTUP_RECONCILE_WAIT = 5.0
STOP_GRACE = 1.0  # seconds the reconciler gets to finish its step at shutdown before it is cancelled


CALENDAR_WARM_UP_DELAY = 1.0  # seconds
HEAP_FREEZE_DELAY = 3.0  # seconds
# How long a thread may keep the GIL while another waits for it (CPython's default: 5 ms). Large answers are
# serialised in worker threads (tools/market_data.py); with 5 ms slices the event loop waited up to 5 ms for
# each of its turns while one ran, which every other agent's call paid many times over. Measured with
# bench/noisy_neighbour.py: victim propose_trade p50 13-14 ms -> 8.5-9 ms under the heaviest market-data calls.
GIL_SWITCH_SECONDS = 0.0005


def freeze_start_up_heap() -> None:
    """Move everything alive after start-up (modules, classes, schemas: most of the heap) out of the garbage
    collector's reach. A full collection then scans only what calls allocate: measured 83 ms → 0.4 ms,
    which had been the worst call latency, once every few thousand calls. Collection resumes here if a stdio
    server paused it for its start-up (server/startup.py pause_collection_during_start_up)."""
    gc.collect()
    gc.freeze()
    gc.enable()


def warm_up_calendar(now: datetime) -> None:
    from policies.market_hours import market_open_or_none

    market_open_or_none(now)


BrokerFactory = Callable[[async_sessionmaker[AsyncSession], Callable[[], datetime]], Broker]


@dataclass
class Runtime:
    config: Config
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    broker: Broker
    gate: Gate
    clock: Callable[[], datetime]
    reconciler: Reconciler | None = None


def build_broker(config: Config, sessions: async_sessionmaker[AsyncSession],
                 clock: Callable[[], datetime]) -> Broker:
    if config.server.broker == "simulated":
        from broker.simulated import SimulatedBroker

        return SimulatedBroker(sessions, seed=config.server.simulated_seed,
                               starting_cash=config.server.simulated_cash, clock=clock)
    from broker.alpaca import AlpacaBroker

    keys = check_broker_credentials(config)
    assert keys is not None
    key, secret = keys
    return AlpacaBroker(api_key=key, secret_key=secret, paper=config.server.trading_mode == "paper",
                        trading_url=config.server.alpaca_trading_url, data_url=config.server.alpaca_data_url,
                        timeout=config.server.broker_timeout_seconds)


async def prepare_database(config: Config, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession],
                           clock: Callable[[], datetime]) -> None:
    """Migrate, make sure the global trading-state row exists (it is the check-and-reserve lock on
    PostgreSQL) and so does the audit head (the lock appends take), and bring configured agents in line with
    the file. Replicas and commands starting together do this one at a time (an advisory lock). Core
    statements only (no ORM session work before a server's first answer). A restart usually finds all of it
    in place: one read says so, and no write unit is taken."""
    await db.upgrade(engine)
    async with db.read(sessions) as connection:
        if await _prepared(connection, config):
            return
    async with db.transaction(sessions) as session:
        await db.advisory_lock(session, db.REGISTRY_LOCK)
        dialect = db.dialect_name(session)
        await db.execute(session, _create_if_absent(dialect, TradingState.__table__),  # type: ignore[arg-type]
                         {"scope": GLOBAL_SCOPE, "state": "active", "reason": None, "changed_by": "system",
                          "changed_at": clock()})
        await db.execute(session, _create_if_absent(dialect, AuditHead.__table__),  # type: ignore[arg-type]
                         {"id": 1, "seq": 0, "hash": GENESIS_HASH})
        await sync_config_agents(session, config.agents, clock())


async def _prepared(connection: AsyncConnection, config: Config) -> bool:
    """The singleton rows exist and the configured agents' rows follow the file (what prepare_database's write
    unit would leave as it is)."""
    present = (await db.execute(connection, _singletons_present())).one()
    return all(present) and await config_agents_in_line(connection, config.agents)


@functools.cache
def _singletons_present() -> Select[bool, bool]:
    trading_state, audit_head = cast(Table, TradingState.__table__), cast(Table, AuditHead.__table__)
    return select(exists().where(trading_state.c.scope == GLOBAL_SCOPE), exists().where(audit_head.c.id == 1))


@functools.cache
def _create_if_absent(dialect: str, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING of one row (db.insert_if_absent on a table, without the session)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


async def check_anchoring(config: Config, engine: AsyncEngine,
                          sessions: async_sessionmaker[AsyncSession]) -> anchoring.CheckpointSet:
    """A server's check at start with [audit]: the checkpoints signed with its key (their signatures checked),
    and AnchorError if the database is behind the newest one (a restored older copy, a wipe, a truncation) or
    no longer holds the record it signed. Before anything is written to the database."""
    from policies import anchoring  # cryptography: loaded only by servers with [audit]

    assert config.audit is not None
    key = anchoring.verifying_key(config.audit.signing_key_file)
    checkpoints = anchoring.load_checkpoints(anchoring.read_checkpoint_lines(config.audit.checkpoint_dir), key)
    if checkpoints.latest is not None and await db.current_revision(engine) is None:  # an empty database
        raise anchoring.AnchorError(
            f"AUDIT_BEHIND_CHECKPOINT: the database has no audit chain but a checkpoint signed at "
            f"{checkpoints.latest.time} covers record {checkpoints.latest.seq}: it was wiped or replaced; refusing "
            "to start (run `tradewarden audit verify`)")
    await anchoring.check_not_behind(sessions, checkpoints)
    return checkpoints


def warn_if_unanchored(config: Config) -> None:
    if config.audit is None and config.is_live:
        log.warning("audit_not_anchored", detail="live trading without [audit]: the audit chain is not signed "
                                                 "outside the database, so a database writer who recomputes its "
                                                 "hashes goes undetected (docs/PRODUCTION.md)")


@asynccontextmanager
async def _anchoring(config: Config, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], datetime],
                     checkpoints: anchoring.CheckpointSet) -> AsyncIterator[anchoring.CheckpointSigner]:
    """Signed checkpoints of the chain head while the block runs, and one more at the end (so a clean stop
    leaves no record unsigned). Each extends the newest one before it."""
    from policies import anchoring  # cryptography: loaded only by servers with [audit]

    assert config.audit is not None
    signer = anchoring.CheckpointSigner(sessions, anchoring.load_signing_key(config.audit.signing_key_file),
                                        config.audit.checkpoint_dir, config.audit.checkpoint_interval_seconds, clock,
                                        last=checkpoints.latest)
    task = asyncio.create_task(signer.run(), name="tradewarden-audit-checkpoints")
    try:
        yield signer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await signer.step()


@asynccontextmanager
async def open_runtime(config: Config, *, clock: Callable[[], datetime] = utc_now,
                       broker: Broker | BrokerFactory | None = None, reconcile: bool = True,
                       create_database: bool = True) -> AsyncIterator[Runtime]:
    """The running system. With reconcile=True (a server) the ledger is reconciled with the broker at start
    (waited for up to STARTUP_RECONCILE_WAIT seconds) and then in the background until the runtime closes;
    one-shot commands pass reconcile=False.

    create_database: a server creates its SQLite ledger on its first start (a new deployment's first `serve`
    must work); operator commands pass False, so a command run with the wrong config or from the wrong folder
    fails naming the path instead of acting on a new empty ledger (a halt that halts nothing).
    db.DatabaseUnavailable (one line naming the database) when it cannot be opened."""
    url = config.server.database_url
    db.check_location(url, create=create_database)
    engine = db.create_engine(url)
    sessions = db.session_factory(engine)
    sqlite_file = db.sqlite_path(url)
    try:
        anchored = config.audit is not None and reconcile  # servers sign; one-shot commands do not
        checkpoints = await check_anchoring(config, engine, sessions) if anchored else None
        if reconcile and config.audit is None:
            warn_if_unanchored(config)
        with db.reported(url):
            await prepare_database(config, engine, sessions, clock)
        async with contextlib.AsyncExitStack() as background:
            if sqlite_file is not None:
                await background.enter_async_context(background_checkpoints(sqlite_file))
            if checkpoints is not None:
                await background.enter_async_context(_anchoring(config, sessions, clock, checkpoints))
            async with _running(config, engine, sessions, clock, broker, reconcile) as runtime:
                yield runtime
    finally:
        await engine.dispose()


@asynccontextmanager
async def _running(config: Config, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession],
                   clock: Callable[[], datetime], broker: Broker | BrokerFactory | None, reconcile: bool
                   ) -> AsyncIterator[Runtime]:
    """Broker, gate and reconciler on a prepared database."""
    if broker is None:
        the_broker = build_broker(config, sessions, clock)
    elif callable(broker) and not hasattr(broker, "start"):
        # a factory: tests wrap the simulated broker on this runtime's database
        the_broker = broker(sessions, clock)  # type: ignore[call-arg]
    else:
        the_broker = broker  # type: ignore[assignment]
    await the_broker.start()
    settings = GateSettings(
        trading_mode=config.server.trading_mode, enable_agent_trading=config.server.enable_agent_trading,
        risk_multiplier=config.server.agent_risk_multiplier,
        proposal_ttl=timedelta(seconds=config.server.proposal_ttl_seconds),
        limit_proposal_ttl=timedelta(seconds=config.server.limit_proposal_ttl_seconds),
        broker_timeout=config.server.broker_timeout_seconds,
        enforce_market_hours=config.server.enforce_market_hours,
        is_postgres=not db.is_sqlite(config.server.database_url))
    gate = Gate(settings=settings, sessions=sessions, broker=the_broker, clock=clock)
    # The session table takes ~10 ms from the shipped NYSE sessions, but ~0.5 s of CPU from the exchange calendar
    # (pandas) when they do not apply: load it in the background, shortly after start-up (so it does not compete
    # with answering the first request), rather than in the first order.
    loop = asyncio.get_running_loop()
    if config.server.enforce_market_hours:
        loop.call_later(CALENDAR_WARM_UP_DELAY, lambda: loop.run_in_executor(None, warm_up_calendar, clock()))
    # Once, after the first calls: a one-off collection instead of a long pause every few thousand calls.
    heap_freeze = loop.call_later(HEAP_FREEZE_DELAY, freeze_start_up_heap) if reconcile else None
    if reconcile:  # a server (one-shot commands run no worker threads next to other agents' calls)
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_SECONDS))
    reconciler = (Reconciler(gate, interval=config.server.reconcile_interval_seconds,
                             stale_intervals=config.server.reconcile_stale_intervals,
                             dead_man=config.server.reconcile_stale_action == "reduce_only",
                             doubt_window=timedelta(seconds=config.server.order_in_doubt_seconds))
                  if reconcile else None)
    task = asyncio.create_task(reconciler.run(), name="tradewarden-reconciler") if reconciler else None
    webhooks = _webhook_dispatcher(config, sessions, clock) if reconcile else None
    webhooks_task = asyncio.create_task(webhooks.run(), name="tradewarden-webhooks") if webhooks else None
    try:
        if reconciler is not None and not await reconciler.wait_first_pass(STARTUP_RECONCILE_WAIT):
            log.warning("startup_reconciliation_pending", detail="the broker is slow; it goes on in the "
                                                                 "background")
        yield Runtime(config=config, engine=engine, sessions=sessions, broker=the_broker, gate=gate,
                      clock=clock, reconciler=reconciler)
    finally:
        if heap_freeze is not None:
            heap_freeze.cancel()
            gc.enable()  # closed before the freeze: collection resumes as usual
        if reconciler is not None and task is not None:
            await _stop_reconciler(reconciler, task)
        if webhooks is not None and webhooks_task is not None:
            webhooks.stop()
            await asyncio.wait({webhooks_task}, timeout=STOP_GRACE)
            webhooks_task.cancel()
        await the_broker.close()


def _webhook_dispatcher(config: Config, sessions: async_sessionmaker[AsyncSession],
                        clock: Callable[[], datetime]) -> WebhookDispatcher | None:
    """Delivery to the [[webhooks]] endpoints, in the background of a server (none configured: none)."""
    if not config.webhooks:
        return None
    from server.webhooks import WebhookDispatcher, endpoints_of

    return WebhookDispatcher(sessions, endpoints_of(config.webhooks, webhook_secrets(config)), clock)


async def _stop_reconciler(reconciler: Reconciler, task: asyncio.Task[None]) -> None:
    """Let the reconciler finish its current step (briefly), then cancel it; never raises its errors."""
    reconciler.stop()
    try:
        await asyncio.wait({task}, timeout=STOP_GRACE)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait({task}, timeout=STOP_GRACE)
        elif not task.cancelled() and task.exception() is not None:
            log.warning("reconciler_stopped_with_error", error=type(task.exception()).__name__)
