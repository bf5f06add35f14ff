"""The usage read's statements are written on the tables, not on the mapped classes (ledger/usage.py): the same
statements as their ORM forms (kept here as the reference), compiled and run without the ORM."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Delete, Insert, Select, String, Update, bindparam, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql.asyncpg import dialect as postgresql_dialect
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from broker.base import OPEN_STATUSES
from ledger import db, usage
from ledger.models import AgentAccount, AgentOrderLeg, AgentPosition, AgentTrade, TradeProposal
from ledger.traded import FILLED_STATUS, OPEN_TRADE_STATUSES, RELEASED_STATUSES

D = Decimal
NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
AGENTS = ("agent-1", "agent-2")
ZERO = D(0)
CORE_STATEMENTS = (Select, Insert, Update, Delete)


def _literals(statuses: frozenset[str]) -> list[Any]:
    return [literal(status) for status in sorted(statuses)]


# The statements as ledger/usage.py built them on the mapped classes before (the reference).
KNOWN = OPEN_TRADE_STATUSES | {FILLED_STATUS} | RELEASED_STATUSES
OPEN_COLUMNS = (AgentTrade.agent_id, AgentTrade.symbol, AgentTrade.side, AgentTrade.quantity, AgentTrade.notional,
                AgentTrade.reserved_notional, AgentTrade.price, AgentTrade.filled_qty, AgentTrade.status,
                AgentTrade.created_at)
OPEN_ROWS = select(*OPEN_COLUMNS).where(or_(
    AgentTrade.status.in_(_literals(OPEN_TRADE_STATUSES)),
    (AgentTrade.agent_id == bindparam("agent_id")) & (AgentTrade.created_at >= bindparam("unknown_since"))
    & AgentTrade.status.not_in(_literals(KNOWN))))
_known = sorted(KNOWN)
GAPS = [AgentTrade.status < literal(_known[0]), AgentTrade.status > literal(_known[-1]), *(
    (AgentTrade.status > literal(low)) & (AgentTrade.status < literal(high))
    for low, high in itertools.pairwise(_known))]
OPEN_ROWS_SQLITE = select(*OPEN_COLUMNS).where(or_(
    AgentTrade.status.in_(_literals(OPEN_TRADE_STATUSES)),
    *[(AgentTrade.agent_id == bindparam("agent_id")) & gap for gap in GAPS]))
ROLLING_UNSTORED = (
    select(AgentTrade.status, AgentTrade.quantity, AgentTrade.reserved_notional, AgentTrade.price,
           AgentTrade.filled_qty)
    .where(AgentTrade.agent_id == bindparam("agent_id"), AgentTrade.created_at >= bindparam("rolling_since"),
           AgentTrade.window_micros.is_(None),
           or_(AgentTrade.status == FILLED_STATUS,
               AgentTrade.status.in_(_literals(RELEASED_STATUSES)) & (AgentTrade.filled_qty != ZERO))))
WORKING_EXITS = (select(literal(1)).select_from(AgentOrderLeg)
                 .where(AgentOrderLeg.agent_id == bindparam("agent_id"), AgentOrderLeg.symbol == bindparam("symbol"),
                        AgentOrderLeg.status.in_(_literals(frozenset(OPEN_STATUSES - {"held"})))))
COUNT_COLUMNS = (
    select(func.sum(AgentTrade.window_micros)).select_from(AgentTrade)
    .where(AgentTrade.agent_id == bindparam("agent_id"), AgentTrade.created_at >= bindparam("rolling_since"))
    .scalar_subquery(),
    select(func.count()).select_from(AgentTrade)
    .where(AgentTrade.agent_id == bindparam("agent_id"), AgentTrade.created_at >= bindparam("rate_since"))
    .scalar_subquery(),
    select(func.count()).select_from(AgentTrade)
    .where(AgentTrade.agent_id == bindparam("agent_id"), AgentTrade.created_at >= bindparam("day_start"))
    .scalar_subquery(),
    select(func.count()).select_from(AgentTrade)
    .where(AgentTrade.agent_id == bindparam("agent_id"), AgentTrade.status.in_(_literals(RELEASED_STATUSES)),
           AgentTrade.created_at >= bindparam("day_start"), AgentTrade.filled_qty == ZERO)
    .scalar_subquery(),
    ROLLING_UNSTORED.with_only_columns(literal(1)).exists(),
    WORKING_EXITS.exists(),
)
COUNTS = select(*COUNT_COLUMNS)
DUPLICATE = (
    select(literal(1)).select_from(AgentTrade)
    .join(TradeProposal, TradeProposal.id == AgentTrade.proposal_id)
    .where(AgentTrade.agent_id == bindparam("agent_id"), AgentTrade.created_at >= bindparam("duplicate_since"),
           TradeProposal.order_hash == bindparam("order_hash"))
    .limit(1))
AGENT = select(bindparam("agent_id", type_=String()).label("agent_id")).subquery("agent")
BOOK = (
    select(AgentAccount.cash, AgentAccount.equity_peak, AgentAccount.day, AgentAccount.day_start_equity,
           AgentPosition.symbol, AgentPosition.qty, AgentPosition.avg_entry_price)
    .select_from(AGENT)
    .outerjoin(AgentAccount, AgentAccount.agent_id == AGENT.c.agent_id)
    .outerjoin(AgentPosition, AgentPosition.agent_id == AGENT.c.agent_id))
DENIALS = (select(TradeProposal.violations)
           .where(TradeProposal.agent_id == bindparam("agent_id"), TradeProposal.status == "rejected",
                  TradeProposal.created_at >= bindparam("since"))
           .order_by(TradeProposal.created_at.desc()).limit(usage.DENIALS_READ_MAX))
BOOK_AND_COUNTS = BOOK.add_columns(*COUNT_COLUMNS)
BOOK_COUNTS_AND_DUPLICATE = BOOK_AND_COUNTS.add_columns(DUPLICATE.exists())
ACCOUNT_MARKS = select(AgentAccount.equity_peak, AgentAccount.day).where(AgentAccount.agent_id == bindparam("agent_id"))
SET_DAY = (update(AgentAccount).where(AgentAccount.agent_id == bindparam("agent"))
           .values(day=bindparam("new_day"), day_start_equity=bindparam("new_start"), updated_at=bindparam("now")))
SET_PEAK = (update(AgentAccount).where(AgentAccount.agent_id == bindparam("agent"))
            .values(equity_peak=bindparam("new_peak"), updated_at=bindparam("now")))
SET_DAY_AND_PEAK = (update(AgentAccount).where(AgentAccount.agent_id == bindparam("agent"))
                    .values(day=bindparam("new_day"), day_start_equity=bindparam("new_start"),
                            equity_peak=bindparam("new_peak"), updated_at=bindparam("now")))

# Each statement of ledger/usage.py with its reference.
PAIRS: dict[str, tuple[Any, Any]] = {
    "_OPEN_ROWS": (usage._open_rows_statement(sqlite=False), OPEN_ROWS),
    "_OPEN_ROWS_SQLITE": (usage._open_rows_statement(sqlite=True), OPEN_ROWS_SQLITE),
    "_ROLLING_UNSTORED": (usage._ROLLING_UNSTORED, ROLLING_UNSTORED),
    "_WORKING_EXITS": (usage._WORKING_EXITS, WORKING_EXITS), "_COUNTS": (usage._COUNTS, COUNTS),
    "_DUPLICATE": (usage._DUPLICATE, DUPLICATE), "_BOOK": (usage._BOOK, BOOK), "_DENIALS": (usage._DENIALS, DENIALS),
    "_BOOK_AND_COUNTS": (usage._BOOK_AND_COUNTS, BOOK_AND_COUNTS),
    "_BOOK_COUNTS_AND_DUPLICATE": (usage._BOOK_COUNTS_AND_DUPLICATE, BOOK_COUNTS_AND_DUPLICATE),
    "_ACCOUNT_MARKS": (usage._ACCOUNT_MARKS, ACCOUNT_MARKS), "_SET_DAY": (usage._SET_DAY, SET_DAY),
    "_SET_PEAK": (usage._SET_PEAK, SET_PEAK), "_SET_DAY_AND_PEAK": (usage._SET_DAY_AND_PEAK, SET_DAY_AND_PEAK),
}


def compiled_form(statement: Any, dialect: Any) -> tuple[Any, ...]:
    """What a statement sends and reads back: its SQL, its parameters in order (the caller's by name, fixed ones
    by type and value) and its result columns' names and types."""
    compiled = statement.compile(dialect=dialect)
    names = compiled.positiontup or sorted(compiled.binds)
    binds = [(name if "%(" not in name else None, repr(compiled.binds[name].type),
              repr(compiled.binds[name].effective_value) if "%(" in name else None) for name in names]
    return compiled.string, binds, [(column[0], repr(column[3])) for column in compiled._result_columns]


# Built on their first use (a server runs one dialect's), not at import.
BUILT_ON_FIRST_USE = {"_OPEN_ROWS", "_OPEN_ROWS_SQLITE"}


def test_every_statement_of_the_usage_read_has_its_reference_here() -> None:
    assert {name for name, value in vars(usage).items() if isinstance(value, CORE_STATEMENTS)} | BUILT_ON_FIRST_USE \
        == set(PAIRS)


def test_the_open_rows_statements_are_built_once_on_first_use_and_prepared_on_their_first_run() -> None:
    from ledger import fast_execute

    for sqlite in (True, False):
        statement = usage._open_rows_statement(sqlite)
        assert usage._open_rows_statement(sqlite) is statement
        assert statement in fast_execute._prebuilt
    assert usage._open_rows_statement(True) is not usage._open_rows_statement(False)


def test_importing_the_usage_read_builds_neither_open_rows_statement() -> None:
    import subprocess
    import sys
    from pathlib import Path

    probe = "from ledger import usage; print(usage._open_rows_built)"
    ran = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, timeout=60)
    assert ran.stdout.strip() == "{}", ran.stderr[-2000:]


@pytest.mark.parametrize("dialect", [sqlite_dialect(), postgresql_dialect()], ids=["sqlite", "postgresql"])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_a_statement_compiles_as_its_orm_form_did(name: str, dialect: Any) -> None:
    ours, reference = PAIRS[name]
    assert compiled_form(ours, dialect) == compiled_form(reference, dialect)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_a_statement_is_compiled_without_the_orm(name: str) -> None:
    """Nothing in it asks for the ORM's compile step (and the mapper configuration that comes first)."""
    assert PAIRS[name][0]._propagate_attrs.get("compile_state_plugin") != "orm"
    assert PAIRS[name][1]._propagate_attrs.get("compile_state_plugin") == "orm"  # the reference does


# Old and new run on the same ledger: rows of two agents in every known status and some unknown ones, spread
# over two days, some without window_micros (written without the ORM), with positions, an account and a leg.
STATUSES = [*sorted(KNOWN), "mystery", "Zeta", "accepted_for_bidding", "aaa", "zzz"]


def _ledger_rows(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    proposals, trades = [], []
    for i in range(120):
        at = NOW - timedelta(minutes=rng.randint(0, 60 * 36))
        pid, agent, status = str(uuid.UUID(int=rng.getrandbits(128))), rng.choice(AGENTS), rng.choice(STATUSES)
        quantity = D(rng.randint(0, 5)) if rng.random() < 0.8 else None
        proposals.append({
            "id": pid, "agent_id": agent, "symbol": "AAPL", "side": "buy", "qty": quantity, "notional": None,
            "order_type": "market", "limit_price": None, "stop_price": None, "time_in_force": "day",
            "extended_hours": False, "reasoning": "r", "status": rng.choice(["executed", "rejected"]),
            "order_hash": f"{i % 7:064d}", "approval_mode": "auto", "trading_mode": "paper", "created_at": at,
            "expires_at": at + timedelta(minutes=5), "updated_at": at,
            "violations": [{"code": rng.choice(["MAX_TRADE_SIZE", "MARKET_CLOSED"])}]})
        trades.append({
            "id": pid, "agent_id": agent, "proposal_id": pid, "client_order_id": pid,
            "symbol": rng.choice(["AAPL", "MSFT"]), "side": rng.choice(["buy", "sell"]), "quantity": quantity,
            "notional": None if quantity is not None else D(rng.randint(1, 900)), "order_type": "market",
            "limit_price": None, "stop_price": None, "time_in_force": "day",
            "reserved_notional": D(rng.randint(0, 90000)) / 100, "price": rng.choice([None, D("100.25")]),
            "filled_qty": D(rng.randint(0, 3)), "reasoning": "r", "status": status, "created_at": at,
            "updated_at": at, "window_micros": rng.choice([None, rng.randint(0, 10**9)])})
    return proposals, trades



async def _seed(sessions: async_sessionmaker[AsyncSession], seed: int) -> None:
    proposals, trades = _ledger_rows(seed)
    async with db.transaction(sessions) as session:
        await session.execute(insert(TradeProposal), proposals)
        await session.execute(insert(AgentTrade), trades)
        await session.execute(insert(AgentAccount), [{
            "agent_id": "agent-1", "cash": D("1000.5"), "equity_peak": D(2000), "day": "2026-11-22",
            "day_start_equity": D(1500), "updated_at": NOW}])
        await session.execute(insert(AgentPosition), [
            {"agent_id": "agent-1", "symbol": symbol, "qty": D(qty), "avg_entry_price": D("99.5"),
             "realized_pl": ZERO, "updated_at": NOW} for symbol, qty in (("AAPL", 3), ("MSFT", "-1.5"))])
        parent = trades[0]
        await session.execute(insert(AgentOrderLeg), [{
            "id": str(uuid.uuid4()), "parent_id": parent["id"], "agent_id": parent["agent_id"], "role": "stop_loss",
            "order_id": None, "symbol": "AAPL", "side": "sell", "quantity": D(2), "order_type": "stop",
            "limit_price": None, "stop_price": D(90), "time_in_force": "gtc", "status": "new", "filled_qty": ZERO,
            "created_at": NOW, "updated_at": NOW}])


def _parameter_sets() -> list[dict[str, Any]]:
    found = []
    for agent, minutes in itertools.product((*AGENTS, "nobody"), (5, 90, 60 * 30)):
        since = NOW - timedelta(minutes=minutes)
        found.append({"agent_id": agent, "unknown_since": since, "rolling_since": since, "rate_since": since,
                      "day_start": NOW - timedelta(hours=20), "duplicate_since": since, "order_hash": f"{3:064d}",
                      "symbol": "AAPL", "since": since})
    return found


@pytest.mark.parametrize("seed", [1, 2])
async def test_the_reads_return_what_their_orm_forms_returned_on_the_same_ledger(engine: AsyncEngine,
                                                                                   seed: int) -> None:
    sessions = db.session_factory(engine)
    await _seed(sessions, seed)
    reads = [name for name, (ours, _) in PAIRS.items() if ours.is_select]
    returned = dict.fromkeys(reads, 0)
    for parameters in _parameter_sets():
        async with db.read(sessions) as connection:
            for name in reads:
                ours, reference = PAIRS[name]
                keys = ours.compile().params.keys()
                given = {key: value for key, value in parameters.items() if key in keys}
                mine = [tuple(row) for row in (await connection.execute(ours, given)).all()]
                theirs = [tuple(row) for row in (await connection.execute(reference, given)).all()]
                assert sorted(mine, key=repr) == sorted(theirs, key=repr), name
                returned[name] += len(mine) if name != "_COUNTS" else sum(bool(value) for value in mine[0])
    assert [name for name, count in returned.items() if count == 0] == []  # every read found something


@pytest.mark.parametrize("name", ["_SET_DAY", "_SET_PEAK", "_SET_DAY_AND_PEAK"])
async def test_an_account_update_changes_what_its_orm_form_changed(engine: AsyncEngine, name: str) -> None:
    sessions = db.session_factory(engine)
    await _seed(sessions, 1)
    values = {"agent": "agent-1", "new_day": "2026-11-23", "new_start": D("1234.5"), "new_peak": D("2500.25"),
              "now": NOW + timedelta(seconds=1)}
    after: list[Any] = []
    for statement in PAIRS[name]:
        with pytest.raises(RolledBack):
            async with db.transaction(sessions) as session:
                keys = statement.compile().params.keys()
                await session.execute(statement, {key: value for key, value in values.items() if key in keys})
                after.append((await session.execute(select(AgentAccount.__table__))).all())
                raise RolledBack
    assert after[0] == after[1] and after[0] != []


class RolledBack(Exception):
    """Ends a unit of work without committing it."""

