"""load_usage: what an agent has used, derived from ledger rows (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from broker.base import Account, Asset, Quote
from ledger import db
from ledger.models import AgentAccount, AgentPosition, AgentTrade, TradeProposal
from ledger.usage import load_usage, persist_marks
from policies.checks import CheckInput, TradingStatus, Usage, run_checks
from policies.orders import OrderRequest
from policies.violations import Code
from tests.conftest import MODERATE_LIMITS

D = Decimal
NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)  # 10:30 in New York; the New York day began at 05:00 UTC
AGENT = "agent-1"
LIMITS = MODERATE_LIMITS
BUY_AAPL = OrderRequest(symbol="AAPL", side="buy", qty=D(10))
THOUSAND, ZERO = D(1000), D(0)
AAPL_QUOTE = Quote("AAPL", bid=D(149), ask=D(151), last=D(150), as_of=NOW)



@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db.session_factory(engine)


def proposal(order: OrderRequest, *, agent_id: str = AGENT, status: str = "executed",
             created: datetime = NOW) -> TradeProposal:
    return TradeProposal(
        id=str(uuid.uuid4()), agent_id=agent_id, symbol=order.symbol, side=order.side, qty=order.qty,
        notional=order.notional, order_type=order.order_type, limit_price=order.limit_price,
        stop_price=order.stop_price, time_in_force=order.time_in_force, extended_hours=order.extended_hours,
        reasoning="test", status=status, order_hash=order.order_hash(), approval_mode="auto",
        trading_mode="paper", created_at=created, expires_at=created + timedelta(minutes=5), updated_at=created)


async def add_trade(sessions: async_sessionmaker[AsyncSession], order: OrderRequest = BUY_AAPL, *,
                    reserved: Decimal = THOUSAND, status: str = "new", filled: Decimal = ZERO,
                    price: Decimal | None = None, age: timedelta = timedelta(seconds=1),
                    agent_id: str = AGENT) -> None:
    created = NOW - age
    async with db.transaction(sessions) as session:
        p = proposal(order, agent_id=agent_id, created=created)
        session.add(p)
        await session.flush()
        session.add(AgentTrade(
            id=p.id, agent_id=agent_id, proposal_id=p.id, client_order_id=p.id, symbol=order.symbol,
            side=order.side, quantity=order.qty, notional=order.notional, order_type=order.order_type,
            limit_price=order.limit_price, stop_price=order.stop_price, time_in_force=order.time_in_force,
            reserved_notional=reserved, price=price, filled_qty=filled, reasoning="test", status=status,
            created_at=created, updated_at=created))


async def add(sessions: async_sessionmaker[AsyncSession], *rows: Any) -> None:
    async with db.transaction(sessions) as session:
        session.add_all(rows)


def position(symbol: str, qty: str, entry: str, agent_id: str = AGENT) -> AgentPosition:
    return AgentPosition(agent_id=agent_id, symbol=symbol, qty=D(qty), avg_entry_price=D(entry),
                         realized_pl=D(0), updated_at=NOW)


def account(cash: str, peak: str = "100000", day_start: str = "100000", day: str = "2026-11-23") -> AgentAccount:
    return AgentAccount(agent_id=AGENT, cash=D(cash), equity_peak=D(peak), day=day,
                        day_start_equity=D(day_start), updated_at=NOW)


async def usage(sessions: async_sessionmaker[AsyncSession], order: OrderRequest = BUY_AAPL, *,
                quotes: dict[str, Quote] | None = None, now: datetime = NOW, **limits: Any) -> Usage:
    async with db.transaction(sessions) as session:
        return await load_usage(session, agent_id=AGENT, order=order,
                                limits=dataclasses.replace(LIMITS, **limits), quotes=quotes or {}, now=now)


# --- reservations by status ------------------------------------------------------------------------

async def test_an_agent_without_history_has_used_nothing_and_starts_from_its_capital(sessions: Any) -> None:
    u = await usage(sessions)
    assert (u.trades_today, u.orders_in_rate_window, u.notional_in_rolling_window, u.open_buy_notional) == (
        0, 0, D(0), D(0))
    assert u.agent_cash == u.equity == u.equity_peak == D(100000)
    assert u.daily_pnl == 0 and u.recent_order_hashes == frozenset() and u.denials_in_window == 0


async def test_an_open_order_counts_as_a_trade_and_reserves_its_notional(sessions: Any) -> None:
    await add_trade(sessions, reserved=D(1000), status="new")
    u = await usage(sessions)
    assert (u.trades_today, u.orders_in_rate_window) == (1, 1)
    assert u.notional_in_rolling_window == u.open_buy_notional == u.account_open_buy_notional == D(1000)
    assert u.open_symbol_buy_qty == u.open_symbol_qty == D(10)


@pytest.mark.parametrize("status", ["pending_submit", "accepted", "pending_cancel", "held", "unknown",
                                    "new_broker_status"])
async def test_every_status_not_known_to_be_final_keeps_its_reservation(sessions: Any, status: str) -> None:
    await add_trade(sessions, reserved=D(1000), status=status)
    u = await usage(sessions)
    assert u.trades_today == 1 and u.open_buy_notional == D(1000)


async def test_a_filled_order_counts_as_a_trade_with_its_filled_notional(sessions: Any) -> None:
    await add_trade(sessions, reserved=D(1000), status="filled", filled=D(10), price=D("95.5"))
    u = await usage(sessions)
    assert u.trades_today == 1
    assert u.notional_in_rolling_window == D(955)
    assert u.open_buy_notional == 0 and u.open_symbol_qty == 0


@pytest.mark.parametrize("status", ["canceled", "expired", "rejected"])
async def test_a_final_order_without_fills_releases_its_reservation_but_still_counts_as_sent(
        sessions: Any, status: str) -> None:
    await add_trade(sessions, reserved=D(1000), status=status)
    u = await usage(sessions)
    assert (u.trades_today, u.notional_in_rolling_window, u.open_buy_notional) == (0, D(0), D(0))
    # It reached the broker: the order rate and the duplicate window count it however it ended.
    assert u.orders_in_rate_window == 1
    assert u.recent_order_hashes == frozenset({BUY_AAPL.order_hash()})


async def test_a_partly_filled_then_cancelled_order_counts_its_filled_part(sessions: Any) -> None:
    await add_trade(sessions, reserved=D(1000), status="canceled", filled=D(4), price=D(100))
    u = await usage(sessions)
    assert u.trades_today == 1
    assert u.notional_in_rolling_window == D(400)
    assert u.open_buy_notional == 0


async def test_a_partly_filled_open_order_reserves_only_its_unfilled_part(sessions: Any) -> None:
    await add_trade(sessions, reserved=D(1000), status="partially_filled", filled=D(4), price=D(100))
    u = await usage(sessions)
    assert u.open_buy_notional == D(600)
    assert u.open_symbol_buy_qty == D(6)
    assert u.notional_in_rolling_window == D(1000)  # it may still fill in full


async def test_an_open_notional_order_is_sized_at_the_quote(sessions: Any) -> None:
    await add_trade(sessions, OrderRequest(symbol="AAPL", side="buy", notional=D(1500)), reserved=D(1500))
    u = await usage(sessions, quotes={"AAPL": AAPL_QUOTE})
    assert u.open_symbol_buy_qty == D(10)  # $1,500 at the $150 mid


async def test_open_sells_are_counted_per_symbol(sessions: Any) -> None:
    await add(sessions, position("AAPL", "10", "100"))
    await add_trade(sessions, OrderRequest(symbol="AAPL", side="sell", qty=D(5)), reserved=D(500))
    await add_trade(sessions, OrderRequest(symbol="MSFT", side="sell", qty=D(7)), reserved=D(700))
    u = await usage(sessions)
    assert u.position_qty == D(10)
    assert u.open_symbol_sell_qty == D(5) and u.open_symbol_qty == D(-5)
    assert u.open_symbol_notional == D(-500)
    assert u.open_buy_notional == 0


# --- time windows ----------------------------------------------------------------------------------

async def test_trades_today_start_at_midnight_in_new_york(sessions: Any) -> None:
    await add_trade(sessions, status="filled", filled=D(10), price=D(100),
                    age=NOW - datetime(2026, 11, 23, 4, 59, 59, tzinfo=UTC))  # 23:59:59 the day before
    await add_trade(sessions, status="filled", filled=D(10), price=D(100),
                    age=NOW - datetime(2026, 11, 23, 5, 0, tzinfo=UTC))  # 00:00:00 New York
    assert (await usage(sessions)).trades_today == 1


async def test_trades_earlier_today_than_every_window_count_by_status(sessions: Any) -> None:
    """Counted in SQL, not read: the same answer as for trades inside the windows."""
    earlier = timedelta(hours=5)  # 05:30 in New York: today, outside the 1-hour rolling window
    for status, filled in [("filled", D(10)), ("canceled", D(4)), ("new", ZERO), ("mystery", ZERO),
                           ("canceled", ZERO), ("rejected", ZERO), ("expired", ZERO)]:
        await add_trade(sessions, status=status, filled=filled, price=D(100) if filled else None, age=earlier)
    await add_trade(sessions, status="filled", filled=D(10), price=D(100),
                    age=timedelta(hours=11))  # 23:30 the day before
    u = await usage(sessions)
    # filled, partly filled then canceled, open, unknown status (counts until known final) = 4
    assert u.trades_today == 4
    assert u.notional_in_rolling_window == ZERO and u.orders_in_rate_window == 0
    assert u.open_buy_notional == 2 * THOUSAND  # the open one and the unknown one hold their reservations


async def test_the_rate_window_includes_an_order_exactly_window_seconds_old(sessions: Any) -> None:
    await add_trade(sessions, age=timedelta(seconds=60))
    await add_trade(sessions, age=timedelta(seconds=61))
    assert (await usage(sessions)).orders_in_rate_window == 1


async def test_the_rolling_notional_window_drops_orders_older_than_the_window(sessions: Any) -> None:
    await add_trade(sessions, reserved=D(100), status="filled", filled=D(1), price=D(100),
                    age=timedelta(seconds=3600))
    await add_trade(sessions, reserved=D(200), status="filled", filled=D(1), price=D(200),
                    age=timedelta(seconds=3601))
    assert (await usage(sessions)).notional_in_rolling_window == D(100)


async def test_identical_orders_within_the_duplicate_window_are_listed(sessions: Any) -> None:
    older = OrderRequest(symbol="AAPL", side="buy", qty=D(11))
    await add_trade(sessions, age=timedelta(seconds=30))
    await add_trade(sessions, older, age=timedelta(seconds=31))
    assert (await usage(sessions)).recent_order_hashes == frozenset({BUY_AAPL.order_hash()})


async def test_a_zero_duplicate_window_lists_no_orders(sessions: Any) -> None:
    await add_trade(sessions, age=timedelta(0))
    assert (await usage(sessions, duplicate_window_seconds=0)).recent_order_hashes == frozenset()


async def test_denials_count_this_agents_rejected_proposals_within_the_window(sessions: Any) -> None:
    await add(sessions,
              proposal(BUY_AAPL, status="rejected", created=NOW - timedelta(seconds=600)),
              proposal(BUY_AAPL, status="rejected", created=NOW - timedelta(seconds=601)),
              proposal(BUY_AAPL, status="approved", created=NOW),
              proposal(BUY_AAPL, status="rejected", created=NOW, agent_id="other"))
    assert (await usage(sessions)).denials_in_window == 1


async def test_other_agents_orders_count_only_toward_the_accounts_open_buys(sessions: Any) -> None:
    await add_trade(sessions, reserved=D(700), agent_id="other")
    await add_trade(sessions, reserved=D(300))
    u = await usage(sessions)
    assert u.account_open_buy_notional == D(1000)
    assert u.open_buy_notional == D(300) and u.trades_today == 1


async def test_old_open_orders_still_hold_their_reservation(sessions: Any) -> None:
    await add_trade(sessions, reserved=D(800), status="new", age=timedelta(days=3))  # a gtc limit order
    u = await usage(sessions)
    assert u.open_buy_notional == u.account_open_buy_notional == D(800)
    assert u.trades_today == 0


# --- positions, equity and P&L ---------------------------------------------------------------------

async def test_equity_marks_positions_at_the_quote_mid(sessions: Any) -> None:
    await add(sessions, account("50000"), position("AAPL", "100", "120"))
    u = await usage(sessions, quotes={"AAPL": AAPL_QUOTE})
    assert u.equity == D(65000)  # 50,000 + 100 × 150


async def test_positions_without_an_account_row_are_marked_on_top_of_the_capital(sessions: Any) -> None:
    await add(sessions, position("AAPL", "100", "120"), position("MSFT", "0", "400"))
    u = await usage(sessions, quotes={"AAPL": AAPL_QUOTE})
    assert u.agent_cash == u.day_start_equity == D(100000)  # no account row yet: the capital
    assert u.equity == D(115000) and u.position_qty == D(100)  # 100,000 + 100 × 150


async def test_a_held_symbol_without_a_quote_is_valued_at_its_entry_price(sessions: Any) -> None:
    await add(sessions, account("50000"), position("MSFT", "10", "400"))
    assert (await usage(sessions)).equity == D(54000)


async def test_daily_pnl_is_equity_now_minus_the_days_starting_equity(sessions: Any) -> None:
    await add(sessions, account("50000", day_start="70000"), position("AAPL", "100", "120"))
    u = await usage(sessions, quotes={"AAPL": AAPL_QUOTE})
    assert u.daily_pnl == D(-5000) and u.day_start_equity == D(70000) and not u.day_start_stale


async def test_the_equity_peak_is_the_higher_of_the_stored_peak_and_equity_now(sessions: Any) -> None:
    await add(sessions, account("50000", peak="60000"), position("AAPL", "100", "120"))
    assert (await usage(sessions, quotes={"AAPL": AAPL_QUOTE})).equity_peak == D(65000)


async def test_a_day_start_from_an_earlier_day_is_kept_and_flagged_stale(sessions: Any) -> None:
    await add(sessions, account("97000", day_start="100000", day="2026-11-20"))
    u = await usage(sessions)
    assert u.daily_pnl == D(-3000) and u.day_start_stale


async def test_persist_marks_rolls_the_day_and_raises_the_peak(sessions: Any) -> None:
    await add(sessions, account("50000", peak="60000", day="2026-11-20"), position("AAPL", "100", "120"))
    u = await usage(sessions, quotes={"AAPL": AAPL_QUOTE})
    async with db.transaction(sessions) as session:
        assert await persist_marks(session, agent_id=AGENT, usage=u, now=NOW)
    after = await usage(sessions, quotes={"AAPL": AAPL_QUOTE})
    assert after.day_start_equity == D(65000) and after.daily_pnl == 0 and not after.day_start_stale
    async with db.transaction(sessions) as session:
        stored = await session.get(AgentAccount, AGENT)
        assert stored is not None and stored.equity_peak == D(65000) and stored.day == "2026-11-23"


async def test_cash_and_positions_are_read_in_one_statement(sessions: Any, engine: AsyncEngine) -> None:
    """Under READ COMMITTED (PostgreSQL) each statement sees its own snapshot: cash read after a fill and
    positions read before it would understate equity by the fill and trip the drawdown breaker."""
    await add(sessions, account("50000"), position("AAPL", "100", "120"))
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await usage(sessions)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    reads = [s for s in statements if "agent_accounts" in s or "agent_positions" in s]
    assert len(reads) == 1 and "agent_accounts" in reads[0] and "agent_positions" in reads[0]


async def test_usage_is_read_in_two_statements_the_open_orders_first(sessions: Any, engine: AsyncEngine) -> None:
    """The open orders first (under READ COMMITTED a fill committing after them is counted twice, never missed),
    then cash, positions, the counts and the duplicate lookup together: one read fewer per decision."""
    await add(sessions, account("50000"), position("AAPL", "100", "120"), position("MSFT", "5", "300"))
    await add_trade(sessions)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with db.transaction(sessions) as session:  # as a decision reads it (denials only when denied)
            found = await load_usage(session, agent_id=AGENT, order=BUY_AAPL, quotes={"AAPL": AAPL_QUOTE}, now=NOW,
                                     limits=dataclasses.replace(LIMITS, duplicate_window_seconds=60),
                                     with_denials=False)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 2
    assert "agent_positions" not in reads[0] and "agent_trades" in reads[0]
    assert "agent_positions" in reads[1] and "count(" in reads[1].lower() and "trade_proposals" in reads[1]
    assert found.position_qty == D(100) and found.open_buy_notional == THOUSAND and found.orders_in_rate_window == 1
    assert found.recent_order_hashes == frozenset({BUY_AAPL.order_hash()})


async def test_gross_exposure_takes_each_symbol_in_its_worse_direction(sessions: Any) -> None:
    await add(sessions, position("AAPL", "100", "100"), position("MSFT", "-10", "50"))
    await add_trade(sessions, reserved=D(2000))  # open buy of AAPL
    await add_trade(sessions, OrderRequest(symbol="MSFT", side="sell", qty=D(2)), reserved=D(100))
    u = await usage(sessions)
    assert u.gross_exposure == D(10000 + 2000) + D(500 + 100)


# --- with the checks -------------------------------------------------------------------------------

async def test_the_ledgers_usage_makes_the_checks_deny_the_trade_over_the_daily_maximum(sessions: Any) -> None:
    for _ in range(20):
        await add_trade(sessions, OrderRequest(symbol="MSFT", side="buy", qty=D(1)), reserved=D(100),
                        status="filled", filled=D(1), price=D(100), age=timedelta(hours=2))
    u = await usage(sessions, quotes={"AAPL": AAPL_QUOTE})
    c = CheckInput(order=BUY_AAPL, strategy=None, limits=LIMITS, quote=AAPL_QUOTE,
                   asset=Asset("AAPL", "us_equity", True, True, True), usage=u,
                   account=Account(D(10**6), D(10**6), D(10**6)), status=TradingStatus(), now=NOW,
                   market_open=True)
    assert [v.code for v in run_checks(c)] == [Code.DAILY_TRADES_EXCEEDED]
