"""broker/simulated.py: the simulated broker against a real SQLite file, with an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker import sim_market
from broker.base import Broker, BrokerError, SubmitOrder
from broker.simulated import STORE_MARK_AFTER, SimulatedBroker
from ledger import db
from ledger.models import SimOrder
from policies.orders import OrderRequest, StopLoss, TakeProfit

SEED = 42
# Wednesday 2025-03-12 10:00 New York: a regular session is in progress until 16:00 (20:00 UTC).
START = datetime(2025, 3, 12, 14, 0, 5, tzinfo=UTC)
SESSION_CLOSE = datetime(2025, 3, 12, 20, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: datetime) -> None:
        self.now = now


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    await db.upgrade(engine)
    yield db.session_factory(engine)
    await engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


async def make_broker(sessions: async_sessionmaker[AsyncSession], clock: FakeClock, **options: Any
                      ) -> SimulatedBroker:
    broker = SimulatedBroker(sessions, seed=SEED, clock=clock, **options)
    await broker.start()
    return broker


@pytest.fixture
async def broker(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> SimulatedBroker:
    return await make_broker(sessions, clock)


def submit(client_order_id: str, symbol: str = "AAPL", side: str = "buy", **order: Any) -> SubmitOrder:
    if "notional" not in order:
        order.setdefault("qty", Decimal(10))
    return SubmitOrder(client_order_id=client_order_id, order=OrderRequest(symbol=symbol, side=side, **order))


def quote_at(symbol: str, now: datetime) -> Any:
    return sim_market.quote(SEED, symbol, now)


def path_after(symbol: str, start: datetime, minutes: int) -> list[tuple[datetime, Decimal]]:
    """(minute start, price) of the `minutes` minutes after the one `start` falls in."""
    first = sim_market.minute_index(start) + 1
    prices = sim_market.minute_prices(SEED, symbol, first, first + minutes - 1)
    return [(sim_market.minute_start(first + i), price) for i, price in enumerate(prices)]


def first_at_or_below(path: list[tuple[datetime, Decimal]], level: Decimal) -> datetime:
    return next(t for t, price in path if price <= level)


async def count_orders(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return (await session.execute(select(func.count()).select_from(SimOrder))).scalar_one()


# --- protocol and market data ------------------------------------------------------------------------

def test_simulated_broker_implements_the_broker_protocol(broker: SimulatedBroker) -> None:
    assert isinstance(broker, Broker)
    assert broker.name == "simulated"


async def test_quotes_omit_unknown_symbols(broker: SimulatedBroker) -> None:
    quotes = await broker.get_quotes(["AAPL", "NOPE", "BTC/USD"])
    assert set(quotes) == {"AAPL", "BTC/USD"}
    assert quotes["AAPL"] == quote_at("AAPL", START)


async def test_bars_and_asset_come_from_the_simulated_market(broker: SimulatedBroker) -> None:
    assert await broker.get_bars("SPY", "15Min", 8) == sim_market.bars(SEED, "SPY", "15Min", 8, START)
    assert await broker.get_bars("NOPE", "1Day", 8) == []
    assert await broker.get_asset("HALTD") == sim_market.asset("HALTD")
    assert await broker.get_asset("NOPE") is None


async def test_clock_follows_nyse_sessions(broker: SimulatedBroker, clock: FakeClock) -> None:
    assert (await broker.get_clock()).is_open
    clock.set(datetime(2025, 3, 15, 15, 0, tzinfo=UTC))  # Saturday
    assert not (await broker.get_clock()).is_open


# --- market orders ------------------------------------------------------------------------------------

async def test_market_buy_fills_at_the_ask(broker: SimulatedBroker) -> None:
    order = await broker.submit_order(submit("p-1", qty=Decimal(10)))
    assert order.status == "filled"
    assert order.client_order_id == "p-1"
    assert order.filled_qty == Decimal(10)
    assert order.filled_avg_price == quote_at("AAPL", START).ask


async def test_market_sell_fills_at_the_bid(broker: SimulatedBroker) -> None:
    await broker.submit_order(submit("p-1", qty=Decimal(10)))
    order = await broker.submit_order(submit("p-2", side="sell", qty=Decimal(4)))
    assert order.status == "filled"
    assert order.filled_avg_price == quote_at("AAPL", START).bid


async def test_notional_order_fills_a_fractional_qty(broker: SimulatedBroker) -> None:
    order = await broker.submit_order(submit("p-1", notional=Decimal(1000)))
    ask = quote_at("AAPL", START).ask
    assert order.qty is None and order.notional == Decimal(1000)
    assert order.filled_qty == (Decimal(1000) / ask).quantize(Decimal("0.000000001"), rounding="ROUND_DOWN")
    assert order.filled_qty != order.filled_qty.to_integral_value()
    assert order.filled_qty * ask <= Decimal(1000)


async def test_fractional_qty_of_a_non_fractionable_asset_is_rejected(broker: SimulatedBroker) -> None:
    with pytest.raises(BrokerError) as raised:
        await broker.submit_order(submit("p-1", symbol="F", qty=Decimal("1.5")))
    assert raised.value.code == "INVALID_ORDER"


async def test_non_tradable_asset_is_rejected(broker: SimulatedBroker,
                                              sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(BrokerError) as raised:
        await broker.submit_order(submit("p-1", symbol="HALTD"))
    assert raised.value.code == "ASSET_NOT_TRADABLE"
    assert await count_orders(sessions) == 0


async def test_selling_crypto_not_held_is_rejected(broker: SimulatedBroker) -> None:
    with pytest.raises(BrokerError) as raised:
        await broker.submit_order(submit("p-1", symbol="BTC/USD", side="sell", qty=Decimal("0.1")))
    assert raised.value.code == "SHORT_SELLING_NOT_ALLOWED"
    assert raised.value.status == 403


async def test_shortable_equity_can_be_sold_short(broker: SimulatedBroker) -> None:
    await broker.submit_order(submit("p-1", side="sell", qty=Decimal(5)))
    [position] = await broker.get_positions()
    assert position.qty == Decimal(-5)


# --- limit and stop orders ----------------------------------------------------------------------------

async def test_marketable_limit_order_fills_at_once_at_the_ask(broker: SimulatedBroker) -> None:
    ask = quote_at("AAPL", START).ask
    order = await broker.submit_order(submit("p-1", order_type="limit", limit_price=ask + 5))
    assert order.status == "filled" and order.filled_avg_price == ask


async def test_ioc_limit_order_that_cannot_fill_is_canceled(broker: SimulatedBroker) -> None:
    bid = quote_at("AAPL", START).bid
    order = await broker.submit_order(submit("p-1", order_type="limit", limit_price=bid - 5,
                                             time_in_force="ioc"))
    assert order.status == "canceled" and order.filled_qty == 0


async def test_limit_buy_rests_then_fills_at_its_limit_when_the_price_falls_to_it(
        broker: SimulatedBroker, clock: FakeClock) -> None:
    path = path_after("AAPL", START, 120)
    limit = min(price for _, price in path)
    fills_at = first_at_or_below(path, limit)
    assert limit < sim_market.minute_price(SEED, "AAPL", sim_market.minute_index(START))

    order = await broker.submit_order(submit("p-1", order_type="limit", limit_price=limit, time_in_force="gtc"))
    assert order.status == "new"
    clock.set(fills_at - timedelta(seconds=1))
    assert (await broker.get_order_by_client_id("p-1")).status == "new"  # type: ignore[union-attr]

    clock.set(fills_at + timedelta(seconds=30))
    filled = await broker.get_order_by_client_id("p-1")
    assert filled is not None
    assert (filled.status, filled.filled_qty, filled.filled_avg_price) == ("filled", Decimal(10), limit)
    assert filled.updated_at == fills_at


async def test_limit_sell_fills_when_the_price_rises_to_it(broker: SimulatedBroker, clock: FakeClock) -> None:
    await broker.submit_order(submit("p-0", symbol="MSFT", qty=Decimal(10)))
    path = path_after("MSFT", START, 120)  # MSFT rises in this window (checked below)
    limit = max(price for _, price in path)
    fills_at = next(t for t, price in path if price >= limit)
    assert limit > quote_at("MSFT", START).ask

    order = await broker.submit_order(submit("p-1", symbol="MSFT", side="sell", order_type="limit",
                                             limit_price=limit))
    assert order.status == "new"
    clock.set(fills_at)
    filled = await broker.get_order_by_client_id("p-1")
    assert filled is not None and (filled.status, filled.filled_avg_price) == ("filled", limit)


async def test_stop_buy_triggers_and_fills_at_that_minutes_price(broker: SimulatedBroker,
                                                                  clock: FakeClock) -> None:
    path = path_after("MSFT", START, 120)
    stop = max(price for _, price in path) - Decimal("0.05")  # a level some minute reaches or passes
    triggers_at, trigger_price = next((t, price) for t, price in path if price >= stop)
    assert stop > quote_at("MSFT", START).ask  # not triggered on arrival

    order = await broker.submit_order(submit("p-1", symbol="MSFT", order_type="stop", stop_price=stop))
    assert order.status == "new"
    clock.set(triggers_at - timedelta(seconds=1))
    assert (await broker.get_order_by_client_id("p-1")).status == "new"  # type: ignore[union-attr]
    clock.set(triggers_at + timedelta(minutes=5))
    filled = await broker.get_order_by_client_id("p-1")
    assert filled is not None
    assert (filled.status, filled.filled_avg_price, filled.updated_at) == ("filled", trigger_price, triggers_at)
    assert trigger_price >= stop


async def test_triggered_stop_limit_waits_for_its_limit_across_reads(broker: SimulatedBroker,
                                                                    clock: FakeClock) -> None:
    path = path_after("MSFT", START, 240)
    early = path[:120]
    stop = max(price for _, price in early)
    triggered_at = next(t for t, price in early if price >= stop)
    after_trigger = [(t, p) for t, p in path if t > triggered_at]
    limit = min(price for _, price in after_trigger)
    fills_at = first_at_or_below(after_trigger, limit)
    assert stop > quote_at("MSFT", START).ask  # not triggered on arrival
    assert limit < stop and fills_at > triggered_at + timedelta(minutes=2)

    await broker.submit_order(submit("p-1", symbol="MSFT", order_type="stop_limit", stop_price=stop, limit_price=limit,
                                     time_in_force="gtc"))
    # Reading in between moves the evaluation mark on; the trigger must not be forgotten.
    for moment in (triggered_at + timedelta(minutes=1), triggered_at + timedelta(minutes=2),
                   fills_at - timedelta(seconds=1)):
        clock.set(moment)
        assert (await broker.get_order_by_client_id("p-1")).status == "new"  # type: ignore[union-attr]
    clock.set(fills_at)
    filled = await broker.get_order_by_client_id("p-1")
    assert filled is not None and (filled.status, filled.filled_avg_price) == ("filled", limit)


async def test_untriggered_stop_does_not_fill(broker: SimulatedBroker, clock: FakeClock) -> None:
    path = path_after("AAPL", START, 60)
    stop = max(price for _, price in path) + 10
    await broker.submit_order(submit("p-1", order_type="stop", stop_price=stop, time_in_force="gtc"))
    clock.set(START + timedelta(minutes=59))
    assert (await broker.get_order_by_client_id("p-1")).status == "new"  # type: ignore[union-attr]


async def test_day_order_expires_at_the_close(broker: SimulatedBroker, clock: FakeClock) -> None:
    far_below = quote_at("AAPL", START).bid / 2
    await broker.submit_order(submit("p-1", order_type="limit", limit_price=far_below))
    clock.set(SESSION_CLOSE - timedelta(seconds=1))
    assert (await broker.get_order_by_client_id("p-1")).status == "new"  # type: ignore[union-attr]
    clock.set(SESSION_CLOSE + timedelta(minutes=1))
    expired = await broker.get_order_by_client_id("p-1")
    assert expired is not None
    assert (expired.status, expired.updated_at) == ("expired", SESSION_CLOSE)


async def test_gtc_order_survives_the_close(broker: SimulatedBroker, clock: FakeClock) -> None:
    far_below = quote_at("AAPL", START).bid / 2
    await broker.submit_order(submit("p-1", order_type="limit", limit_price=far_below, time_in_force="gtc"))
    clock.set(START + timedelta(days=2))
    assert (await broker.get_order_by_client_id("p-1")).status == "new"  # type: ignore[union-attr]


# --- cancel ---------------------------------------------------------------------------------------------

async def test_cancel_open_order(broker: SimulatedBroker) -> None:
    far_below = quote_at("AAPL", START).bid / 2
    order = await broker.submit_order(submit("p-1", order_type="limit", limit_price=far_below))
    canceled = await broker.cancel_order(order.broker_order_id)
    assert canceled.status == "canceled"
    assert (await broker.list_orders("open")) == []


async def test_cancel_filled_order_is_refused(broker: SimulatedBroker) -> None:
    order = await broker.submit_order(submit("p-1"))
    with pytest.raises(BrokerError) as raised:
        await broker.cancel_order(order.broker_order_id)
    assert (raised.value.code, raised.value.status) == ("BROKER_ERROR", 422)
    assert "already filled" in raised.value.message


async def test_cancel_twice_says_already_canceled(broker: SimulatedBroker) -> None:
    far_below = quote_at("AAPL", START).bid / 2
    order = await broker.submit_order(submit("p-1", order_type="limit", limit_price=far_below))
    await broker.cancel_order(order.broker_order_id)
    with pytest.raises(BrokerError) as raised:
        await broker.cancel_order(order.broker_order_id)
    assert raised.value.status == 422 and "already canceled" in raised.value.message


async def test_cancel_unknown_order_is_not_found(broker: SimulatedBroker) -> None:
    with pytest.raises(BrokerError) as raised:
        await broker.cancel_order("no-such-order")
    assert (raised.value.code, raised.value.status) == ("ORDER_NOT_FOUND", 404)


# --- at most once ---------------------------------------------------------------------------------------

async def test_duplicate_client_order_id_is_refused(broker: SimulatedBroker,
                                                    sessions: async_sessionmaker[AsyncSession]) -> None:
    await broker.submit_order(submit("p-1"))
    with pytest.raises(BrokerError) as raised:
        await broker.submit_order(submit("p-1"))
    assert (raised.value.code, raised.value.status) == ("DUPLICATE_ORDER", 422)
    assert await count_orders(sessions) == 1


async def test_concurrent_submits_of_one_id_create_one_order(broker: SimulatedBroker,
                                                             sessions: async_sessionmaker[AsyncSession]) -> None:
    results = await asyncio.gather(*(broker.submit_order(submit("p-1")) for _ in range(20)),
                                   return_exceptions=True)
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BrokerError) and r.code == "DUPLICATE_ORDER"]
    assert (len(accepted), len(refused)) == (1, 19)
    assert await count_orders(sessions) == 1


async def test_concurrent_buys_cannot_together_exceed_cash(sessions: async_sessionmaker[AsyncSession],
                                                           clock: FakeClock) -> None:
    broker = await make_broker(sessions, clock, starting_cash=Decimal(10_000))
    results = await asyncio.gather(*(broker.submit_order(submit(f"p-{i}", notional=Decimal(4000)))
                                     for i in range(10)), return_exceptions=True)
    accepted = [r for r in results if not isinstance(r, BaseException)]
    assert len(accepted) == 2
    assert all(isinstance(r, BrokerError) and r.code == "INSUFFICIENT_BUYING_POWER"
               for r in results if isinstance(r, BaseException))
    assert (await broker.get_account()).cash >= 0


# --- account and positions ------------------------------------------------------------------------------

async def test_buys_and_sells_set_positions_and_cash(broker: SimulatedBroker, clock: FakeClock) -> None:
    first, second, third = START, START + timedelta(minutes=7), START + timedelta(minutes=30)
    await broker.submit_order(submit("p-1", qty=Decimal(10)))
    clock.set(second)
    await broker.submit_order(submit("p-2", qty=Decimal(10)))
    clock.set(third)
    await broker.submit_order(submit("p-3", side="sell", qty=Decimal(5)))

    ask1, ask2, bid3 = quote_at("AAPL", first).ask, quote_at("AAPL", second).ask, quote_at("AAPL", third).bid
    [position] = await broker.get_positions()
    assert (position.symbol, position.qty) == ("AAPL", Decimal(15))
    assert position.avg_entry_price == ((ask1 + ask2) / 2).quantize(Decimal("0.0001"))
    assert position.market_value == 15 * quote_at("AAPL", third).last

    account = await broker.get_account()
    cash = Decimal(1_000_000) - 10 * ask1 - 10 * ask2 + 5 * bid3
    assert account.cash == cash
    assert account.equity == cash + 15 * quote_at("AAPL", third).last
    assert account.buying_power == cash


async def test_closing_a_position_removes_it(broker: SimulatedBroker) -> None:
    await broker.submit_order(submit("p-1", qty=Decimal(3)))
    await broker.submit_order(submit("p-2", side="sell", qty=Decimal(3)))
    assert await broker.get_positions() == []


async def test_open_buy_orders_reserve_buying_power(broker: SimulatedBroker) -> None:
    far_below = (quote_at("AAPL", START).bid / 2).quantize(Decimal("0.01"))
    await broker.submit_order(submit("p-1", order_type="limit", limit_price=far_below, qty=Decimal(100)))
    account = await broker.get_account()
    assert account.cash == Decimal(1_000_000)
    assert account.buying_power == Decimal(1_000_000) - 100 * far_below


async def test_buy_beyond_cash_is_rejected(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> None:
    broker = await make_broker(sessions, clock, starting_cash=Decimal(1000))
    with pytest.raises(BrokerError) as raised:
        await broker.submit_order(submit("p-1", symbol="SPY", qty=Decimal(100)))
    assert (raised.value.code, raised.value.status) == ("INSUFFICIENT_BUYING_POWER", 403)
    assert await count_orders(sessions) == 0
    assert (await broker.get_account()).cash == Decimal(1000)


async def test_buy_beyond_buying_power_left_by_open_orders_is_rejected(
        sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> None:
    broker = await make_broker(sessions, clock, starting_cash=Decimal(10_000))
    await broker.submit_order(submit("p-1", order_type="limit", limit_price=Decimal(60), qty=Decimal(100)))
    with pytest.raises(BrokerError) as raised:
        await broker.submit_order(submit("p-2", notional=Decimal(5000)))
    assert raised.value.code == "INSUFFICIENT_BUYING_POWER"


# --- orders listing -------------------------------------------------------------------------------------

async def test_list_orders_filters_by_status_newest_first(broker: SimulatedBroker, clock: FakeClock) -> None:
    far_below = quote_at("AAPL", START).bid / 2
    await broker.submit_order(submit("p-1"))
    clock.set(START + timedelta(seconds=10))
    await broker.submit_order(submit("p-2", order_type="limit", limit_price=far_below))
    clock.set(START + timedelta(seconds=20))
    await broker.submit_order(submit("p-3"))
    assert [o.client_order_id for o in await broker.list_orders("all")] == ["p-3", "p-2", "p-1"]
    assert [o.client_order_id for o in await broker.list_orders("open")] == ["p-2"]
    assert [o.client_order_id for o in await broker.list_orders("closed", limit=1)] == ["p-3"]
    assert [o.client_order_id for o in await broker.list_orders(after=START + timedelta(seconds=5))] == ["p-3", "p-2"]


async def test_unknown_client_order_id_is_none(broker: SimulatedBroker) -> None:
    assert await broker.get_order_by_client_id("nope") is None


# --- restart --------------------------------------------------------------------------------------------

async def test_restart_keeps_orders_positions_and_cash(sessions: async_sessionmaker[AsyncSession],
                                                       clock: FakeClock) -> None:
    first = await make_broker(sessions, clock)
    await first.submit_order(submit("p-1", qty=Decimal(10)))
    far_below = quote_at("AAPL", START).bid / 2
    await first.submit_order(submit("p-2", order_type="limit", limit_price=far_below, time_in_force="gtc"))
    account_before = await first.get_account()
    await first.close()

    restarted = await make_broker(sessions, clock, starting_cash=Decimal(5))  # the stored account wins
    assert (await restarted.get_order_by_client_id("p-1")) == (await first.get_order_by_client_id("p-1"))
    assert [o.client_order_id for o in await restarted.list_orders("open")] == ["p-2"]
    assert [(p.symbol, p.qty) for p in await restarted.get_positions()] == [("AAPL", Decimal(10))]
    assert await restarted.get_account() == account_before
    with pytest.raises(BrokerError):
        await restarted.submit_order(submit("p-1"))


async def test_resting_order_fills_after_a_restart(sessions: async_sessionmaker[AsyncSession],
                                                   clock: FakeClock) -> None:
    path = path_after("MSFT", START, 120)
    limit = min(price for _, price in path)
    first = await make_broker(sessions, clock)
    await first.submit_order(submit("p-1", symbol="MSFT", order_type="limit", limit_price=limit, qty=Decimal(1)))

    clock.set(START + timedelta(hours=3))
    restarted = await make_broker(sessions, clock)
    order = await restarted.get_order_by_client_id("p-1")
    assert order is not None and (order.status, order.filled_avg_price) == ("filled", limit)


# --- the account is kept up to date incrementally, and always equals a replay of every fill ---------------

async def _account_and_positions(broker: SimulatedBroker) -> tuple[Any, list[Any]]:
    return await broker.get_account(), await broker.get_positions()


async def test_an_account_kept_across_many_fills_equals_a_full_replay(sessions: async_sessionmaker[AsyncSession],
                                                                      clock: FakeClock) -> None:
    long_lived = await make_broker(sessions, clock)
    path = path_after("MSFT", START, 120)
    limit = min(price for _, price in path)
    # A resting order that fills later, at a fill time earlier than market orders placed after it.
    await long_lived.submit_order(submit("rest", symbol="MSFT", order_type="limit", limit_price=limit,
                                         qty=Decimal(3), time_in_force="gtc"))
    for i in range(30):
        clock.set(START + timedelta(minutes=i))
        symbol = ("AAPL", "SPY", "MSFT")[i % 3]
        side = "sell" if i % 4 == 3 else "buy"
        await long_lived.submit_order(submit(f"m-{i}", symbol=symbol, side=side, qty=Decimal(1 + i % 5)))
        await long_lived.get_account()  # read between orders: the kept account moves forward
    clock.set(START + timedelta(hours=3))
    kept = await _account_and_positions(long_lived)
    replayed = await _account_and_positions(await make_broker(sessions, clock))
    assert kept == replayed
    assert any(p.symbol == "MSFT" for p in kept[1])


async def test_a_fill_from_another_process_is_counted(sessions: async_sessionmaker[AsyncSession],
                                                      clock: FakeClock) -> None:
    mine, other = await make_broker(sessions, clock), await make_broker(sessions, clock)
    await mine.submit_order(submit("p-1", qty=Decimal(2)))
    before = await mine.get_account()
    await other.submit_order(submit("p-2", symbol="SPY", qty=Decimal(1)))
    assert await _account_and_positions(mine) == await _account_and_positions(other)
    assert (await mine.get_account()).cash < before.cash


async def test_an_earlier_fill_that_appears_later_is_counted(sessions: async_sessionmaker[AsyncSession],
                                                             clock: FakeClock) -> None:
    """A fill dated before the last one the account applied (another process found it late): replayed."""
    mine = await make_broker(sessions, clock)
    clock.set(START + timedelta(minutes=10))
    await mine.submit_order(submit("late", qty=Decimal(1)))
    await mine.get_account()
    async with db.transaction(sessions) as session:  # as another process would have written it
        row = (await session.execute(select(SimOrder).where(SimOrder.client_order_id == "late"))).scalar_one()
        session.add(SimOrder(id="earlier", client_order_id="earlier", symbol="SPY", side="buy", qty=Decimal(1),
                             notional=None, order_type="market", limit_price=None, stop_price=None,
                             time_in_force="day", status="filled", filled_qty=Decimal(1),
                             filled_avg_price=Decimal(500), submitted_at=START, updated_at=START, filled_at=START))
        assert row.filled_at is not None and row.filled_at > START
    kept = await _account_and_positions(mine)
    assert kept == await _account_and_positions(await make_broker(sessions, clock))
    assert ("SPY", Decimal(1)) in [(p.symbol, p.qty) for p in kept[1]]


async def test_an_order_resting_at_the_last_count_and_filled_by_another_process_since_is_counted(
        sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> None:
    """Filled orders are counted from the last count (SQLite): an order open then, filled since by another
    process, is among them, though no new row came."""
    mine, other = await make_broker(sessions, clock), await make_broker(sessions, clock)
    await mine.submit_order(submit("filled", symbol="SPY", qty=Decimal(1)))  # the account has a fill to go from
    path = path_after("MSFT", START, 120)
    limit = min(price for _, price in path)
    assert limit < quote_at("MSFT", START).ask  # rests on arrival
    await mine.submit_order(submit("rest", symbol="MSFT", order_type="limit", limit_price=limit, qty=Decimal(3)))
    await mine.get_account()  # counted while the order rests
    clock.set(first_at_or_below(path, limit))
    await other.get_account()  # the other process finds it filled on the path, and stores the fill
    kept = await _account_and_positions(mine)
    assert kept == await _account_and_positions(await make_broker(sessions, clock))
    assert ("MSFT", Decimal(3)) in [(p.symbol, p.qty) for p in kept[1]]


# --- the hot path: an order is one unit of work; an account read needs none unless the path moved an order ---

async def test_an_order_begins_one_unit_and_reading_the_account_none(broker: SimulatedBroker) -> None:
    begun = db.UnitCounter.begun
    await broker.submit_order(submit("p-1"))
    assert db.UnitCounter.begun - begun == 1
    begun = db.UnitCounter.begun
    await broker.get_account()
    await broker.get_positions()
    assert db.UnitCounter.begun == begun


async def test_a_read_that_finds_a_resting_order_filled_stores_the_fill(broker: SimulatedBroker, clock: FakeClock,
                                                                       sessions: async_sessionmaker[AsyncSession]
                                                                       ) -> None:
    limit = min(price for _, price in path_after("MSFT", START, 120))
    await broker.submit_order(submit("p-1", symbol="MSFT", order_type="limit", limit_price=limit, qty=Decimal(1)))
    clock.set(START + timedelta(hours=3))
    begun = db.UnitCounter.begun
    positions = await broker.get_positions()
    assert db.UnitCounter.begun - begun == 1
    assert [(p.symbol, p.qty) for p in positions] == [("MSFT", Decimal(1))]
    async with sessions() as session:
        status = (await session.execute(select(SimOrder.status).where(SimOrder.client_order_id == "p-1"))).scalar()
    assert status == "filled"


async def test_listing_orders_begins_no_unit_and_shows_them_as_a_unit_would(
        broker: SimulatedBroker, clock: FakeClock, sessions: async_sessionmaker[AsyncSession]) -> None:
    never_reached = (min(price for _, price in path_after("MSFT", START, 120)) / 2).quantize(Decimal("0.01"))
    await broker.submit_order(submit("rest", symbol="MSFT", order_type="limit", limit_price=never_reached,
                                     qty=Decimal(1), time_in_force="gtc"))
    clock.set(START + timedelta(minutes=20))  # within STORE_MARK_AFTER
    begun = db.UnitCounter.begun
    listed = await broker.list_orders("open")
    assert db.UnitCounter.begun == begun
    stored = await (await make_broker(sessions, clock)).get_order_by_client_id("rest")  # a unit stores the mark
    assert stored is not None and stored.updated_at is not None and stored.updated_at > START
    assert listed == [stored]


async def test_a_read_that_moves_an_evaluation_mark_far_stores_it(broker: SimulatedBroker, clock: FakeClock,
                                                                  sessions: async_sessionmaker[AsyncSession]
                                                                  ) -> None:
    never_reached = (min(price for _, price in path_after("MSFT", START, 240)) / 2).quantize(Decimal("0.01"))
    await broker.submit_order(submit("rest", symbol="MSFT", order_type="limit", limit_price=never_reached,
                                     qty=Decimal(1), time_in_force="gtc"))
    clock.set(START + STORE_MARK_AFTER + timedelta(minutes=1))
    begun = db.UnitCounter.begun
    await broker.get_account()
    assert db.UnitCounter.begun - begun == 1
    async with sessions() as session:
        mark = (await session.execute(select(SimOrder.updated_at).where(SimOrder.client_order_id == "rest"))).scalar()
    assert mark is not None and mark >= START + STORE_MARK_AFTER


async def test_listing_orders_after_a_resting_fill_stores_it(broker: SimulatedBroker, clock: FakeClock) -> None:
    limit = min(price for _, price in path_after("MSFT", START, 120))
    await broker.submit_order(submit("rest", symbol="MSFT", order_type="limit", limit_price=limit, qty=Decimal(1)))
    clock.set(START + timedelta(hours=3))
    begun = db.UnitCounter.begun
    listed = await broker.list_orders("closed")
    assert db.UnitCounter.begun - begun == 1
    assert [(order.client_order_id, order.status) for order in listed] == [("rest", "filled")]


async def test_a_resubmitted_order_the_account_can_no_longer_pay_for_is_a_duplicate(
        sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> None:
    broker = await make_broker(sessions, clock, starting_cash=Decimal(10_000))
    await broker.submit_order(submit("p-1", notional=Decimal(8000)))
    with pytest.raises(BrokerError) as raised:
        await broker.submit_order(submit("p-1", notional=Decimal(8000)))
    assert raised.value.code == "DUPLICATE_ORDER"
    assert await count_orders(sessions) == 1


async def test_orders_duplicates_and_reads_agree_with_a_replay_on_both_databases(database_url: str,
                                                                                clock: FakeClock) -> None:
    engine = db.create_engine(database_url)
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    try:
        broker = await make_broker(sessions, clock, starting_cash=Decimal(100_000))
        limit = min(price for _, price in path_after("MSFT", START, 120))
        await broker.submit_order(submit("rest", symbol="MSFT", order_type="limit", limit_price=limit,
                                         qty=Decimal(1), time_in_force="gtc"))
        await broker.submit_order(submit("bracket", qty=Decimal(2), take_profit=TakeProfit(limit_price=Decimal(10_000)),
                                         stop_loss=StopLoss(stop_price=Decimal(1))))
        results = await asyncio.gather(*(broker.submit_order(submit("same", symbol="SPY", qty=Decimal(1)))
                                         for _ in range(5)), return_exceptions=True)
        assert sorted(type(r).__name__ if isinstance(r, BaseException) else r.status for r in results) == \
            ["BrokerError"] * 4 + ["filled"]
        assert all(r.code == "DUPLICATE_ORDER" for r in results if isinstance(r, BrokerError))
        assert await _account_and_positions(broker) == await _account_and_positions(await make_broker(sessions,
                                                                                                      clock))
        assert {order.client_order_id for order in await broker.list_orders("open")} == {"rest", "bracket"}
        clock.set(START + timedelta(hours=3))
        kept = await _account_and_positions(broker)
        assert kept == await _account_and_positions(await make_broker(sessions, clock))
        assert ("MSFT", Decimal(1)) in [(p.symbol, p.qty) for p in kept[1]]
        assert [order.status for order in await broker.list_orders() if order.client_order_id == "rest"] == ["filled"]
        found = await broker.get_order_by_client_id("bracket")
        assert found is not None and [leg.status for leg in found.legs] == ["new", "new"]
    finally:
        await engine.dispose()
