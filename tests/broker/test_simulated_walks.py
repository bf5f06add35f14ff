"""broker/simulated.py: resting orders' price-path walks resume where the last one stopped.

A walk resumed from its PathProgress must find exactly what the full walk from the stored evaluation mark finds
(the full walk below is the broker's algorithm before walks could resume, kept here as the oracle); a broker that
keeps its walks between calls must answer every call as a broker with nothing kept (another process) does; a
row another process changed is walked again from its stored mark; and a call walks only the minutes since the
last one, however long the orders have rested."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from broker import sim_market
from broker.base import BrokerError, SubmitOrder
from broker.simulated import (
    Expiry,
    Fill,
    PathProgress,
    PathWalk,
    SimulatedBroker,
    StillResting,
    order_expiry,
    trail_stop,
    walk_resting_order,
    walk_trailing,
)
from ledger import db
from ledger.models import SimOrder
from policies.orders import OrderRequest, StopLoss, TakeProfit, TrailingStop

SEED = 42
# Wednesday 2025-03-12 10:00 New York, a session in progress.
START = datetime(2025, 3, 12, 14, 0, 5, tzinfo=UTC)
SYMBOLS = ["AAPL", "MSFT", "TSLA", "BTC/USD"]


# --- the oracle: the full walk from the stored mark ---------------------------------------------------

def full_walk(order: SimOrder, now: datetime) -> Fill | Expiry | StillResting:
    """What the broker computed before walks resumed: every minute from the stored mark's to now's."""
    mark = order.updated_at
    if order.order_type == "trailing_stop":
        assert order.hwm is not None
        hwm = order.hwm
        if now <= mark:
            return StillResting(mark, hwm, trail_stop(order, hwm))
    elif now <= mark:
        return StillResting(mark)
    expires_at = order_expiry(order)
    first = sim_market.minute_index(mark)
    last = sim_market.minute_index(now) if now < expires_at else sim_market.minute_index(expires_at) - 1
    prices = sim_market.minute_prices(SEED, order.symbol, first, last) if last >= first else []

    def at(minute: int) -> datetime:
        return max(order.submitted_at, sim_market.minute_start(minute))

    if order.order_type == "trailing_stop":
        sell = order.side == "sell"
        for minute, price in enumerate(prices, start=first):
            hwm = max(hwm, price) if sell else min(hwm, price)
            stop = trail_stop(order, hwm)
            if (price <= stop) if sell else (price >= stop):
                return Fill(at(minute), price)
        if now >= expires_at:
            return Expiry(expires_at)
        return StillResting(now, hwm, trail_stop(order, hwm))
    triggered, trigger_minute = order.order_type == "limit", None
    for minute, price in enumerate(prices, start=first):
        if not triggered:
            assert order.stop_price is not None
            if not (price >= order.stop_price if order.side == "buy" else price <= order.stop_price):
                continue
            triggered, trigger_minute = True, minute
            if order.order_type == "stop":
                return Fill(at(minute), price)
        assert order.limit_price is not None
        if price <= order.limit_price if order.side == "buy" else price >= order.limit_price:
            return Fill(at(minute), order.limit_price)
    if now >= expires_at:
        return Expiry(expires_at)
    if trigger_minute is not None:
        return StillResting(at(trigger_minute))
    return StillResting(now)


# --- the pure walks ---------------------------------------------------------------------------------

def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"))


@st.composite
def resting_orders(draw: st.DrawFn) -> SimOrder:
    symbol = draw(st.sampled_from(SYMBOLS))
    # Mostly within the session (equities stand still outside it), sometimes days around it.
    minutes = draw(st.one_of(st.integers(0, 300), st.integers(-3 * 1440, 3 * 1440)))
    submitted = START + timedelta(minutes=minutes, seconds=draw(st.integers(0, 59)))
    price = sim_market.quote(SEED, symbol, submitted).last
    order_type = draw(st.sampled_from(["limit", "stop", "stop_limit", "trailing_stop"]))
    side = draw(st.sampled_from(["buy", "sell"]))

    spread = draw(st.sampled_from([5, 20, 200]))  # basis points: close (crossed within minutes) or far (hours, never)

    def near() -> Decimal:
        return _cents(price * (1 + Decimal(draw(st.integers(-spread, spread))) / 10_000))

    order = SimOrder(id="o", client_order_id="c", symbol=symbol, side=side, qty=Decimal(1), notional=None,
                     order_type=order_type, time_in_force=draw(st.sampled_from(["day", "gtc"])), status="new",
                     filled_qty=Decimal(0), filled_avg_price=None, submitted_at=submitted, updated_at=submitted,
                     filled_at=None, parent_id=None, leg_role=None, limit_price=None, stop_price=None,
                     trail_percent=None, trail_price=None, hwm=None)
    if order_type in ("limit", "stop_limit"):
        order.limit_price = near()
    if order_type in ("stop", "stop_limit"):
        order.stop_price = near()
    if order_type == "trailing_stop":
        if draw(st.booleans()):
            order.trail_percent = Decimal(draw(st.integers(2, 300))) / 100
        else:
            order.trail_price = _cents(price * Decimal(draw(st.integers(2, 300))) / 10_000)
        order.hwm = price
        order.stop_price = trail_stop(order, price)
    return order


def _walk(order: SimOrder, now: datetime, since: PathProgress | None
          ) -> tuple[Fill | Expiry | StillResting, PathProgress | None]:
    if order.order_type == "trailing_stop":
        return walk_trailing(SEED, order, now, since)
    return walk_resting_order(SEED, order, now, since)


def _stored(order: SimOrder, outcome: StillResting) -> SimOrder:
    """The row as the broker stores a resting order it advanced (its mark; a trailing stop's marks)."""
    stored = SimOrder(**{column: getattr(order, column) for column in
                         ("id", "client_order_id", "symbol", "side", "qty", "notional", "order_type", "time_in_force",
                          "status", "filled_qty", "filled_avg_price", "submitted_at", "updated_at", "filled_at",
                          "parent_id", "leg_role", "limit_price", "stop_price", "trail_percent", "trail_price",
                          "hwm")})
    if outcome.hwm is not None:
        stored.hwm, stored.stop_price = outcome.hwm, outcome.stop_price
    if sim_market.minute_index(outcome.evaluated_through) != sim_market.minute_index(order.updated_at):
        stored.updated_at = outcome.evaluated_through
    return stored


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=resting_orders(),
       steps=st.lists(st.tuples(st.one_of(st.integers(-600, 240), st.integers(240, 6 * 3600)), st.booleans()),
                      min_size=1, max_size=12))
def test_a_resumed_walk_finds_what_the_full_walk_from_the_stored_mark_finds(
        order: SimOrder, steps: list[tuple[int, bool]]) -> None:
    now, progress = order.submitted_at, None
    for seconds, store in steps:
        now += timedelta(seconds=seconds)
        outcome, progress = _walk(order, now, progress)
        assert outcome == full_walk(order, now)
        if store and isinstance(outcome, StillResting):  # a unit writes the row back; the walk goes on from it
            order = _stored(order, outcome)


def test_a_resumed_walk_scans_only_the_minutes_after_the_last_walk() -> None:
    order = SimOrder(id="o", client_order_id="c", symbol="MSFT", side="buy", qty=Decimal(1), order_type="limit",
                     limit_price=Decimal("0.01"), time_in_force="gtc", status="new", submitted_at=START,
                     updated_at=START)
    walked = PathWalk.minutes
    _, progress = _walk(order, START + timedelta(hours=5), None)
    assert PathWalk.minutes - walked == 5 * 60 + 1
    walked = PathWalk.minutes
    outcome, _ = _walk(order, START + timedelta(hours=5, minutes=3), progress)
    assert PathWalk.minutes - walked == 3
    assert outcome == StillResting(START + timedelta(hours=5, minutes=3))


# --- the broker: a long-lived one answers as a fresh one (another process) does ----------------------

@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def _order(kind: str, symbol: str, price: Decimal, offset: int, tif: str) -> OrderRequest:
    """An order resting near `price` (offset in basis points), of one of the kinds the broker rests."""
    near = _cents(price * (1 + Decimal(offset) / 10_000))
    side: Literal["buy", "sell"] = "buy" if offset <= 0 else "sell"
    common: dict[str, Any] = {"symbol": symbol, "qty": Decimal(1), "time_in_force": tif}
    if kind == "limit":
        return OrderRequest(side=side, order_type="limit", limit_price=near, **common)
    if kind == "stop":
        return OrderRequest(side="buy" if side == "sell" else "sell", order_type="stop", stop_price=near, **common)
    if kind == "stop_limit":
        return OrderRequest(side="buy" if side == "sell" else "sell", order_type="stop_limit", stop_price=near,
                            limit_price=near, **common)
    band = _cents(price * Decimal(abs(offset) + 20) / 10_000)
    if kind == "bracket":
        return OrderRequest(side="buy", order_type="market", take_profit=TakeProfit(limit_price=price + band),
                            stop_loss=StopLoss(stop_price=price - band), **common)
    return OrderRequest(side="buy", order_type="market",  # a trailing exit
                        trailing_stop=TrailingStop(percent=Decimal(abs(offset) + 10) / 100), **common)


def _seen(orders: list[Any]) -> list[tuple[Any, ...]]:
    """An order as the agent sees it, less the broker's own ids (each database draws its own)."""
    return [(o.client_order_id, o.status, o.filled_qty, o.filled_avg_price, o.submitted_at, o.updated_at,
             o.stop_price, o.hwm, _seen(list(o.legs))) for o in orders]


ACTIONS = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(["limit", "stop", "stop_limit", "bracket", "trailing"]),
              st.sampled_from(SYMBOLS[:3]), st.one_of(st.integers(-30, 30), st.integers(-150, 150)),
              st.sampled_from(["day", "gtc"])),
    st.tuples(st.just("wait"), st.one_of(st.integers(1, 240), st.integers(240, 4 * 3600))),
    st.tuples(st.just("read"), st.sampled_from(["orders", "positions", "account", "by_client_id"])),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=st.lists(ACTIONS, min_size=4, max_size=24))
def test_a_broker_that_keeps_its_walks_answers_as_a_fresh_broker_does(actions: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(_compare(Path(directory), actions))


async def _compare(directory: Path, actions: list[tuple[Any, ...]]) -> None:
    """The same calls on two databases: one broker kept for all of them, a new broker for every call on the
    other (what another process would answer: it has walked nothing yet)."""
    kept_engine = db.create_engine(f"sqlite+aiosqlite:///{directory}/kept.db")
    fresh_engine = db.create_engine(f"sqlite+aiosqlite:///{directory}/fresh.db")
    try:
        await db.upgrade(kept_engine)
        await db.upgrade(fresh_engine)
        clock = Clock(START)
        kept = SimulatedBroker(db.session_factory(kept_engine), seed=SEED, clock=clock)
        await kept.start()

        async def both(call: Callable[[SimulatedBroker], Awaitable[Any]]) -> None:
            fresh = SimulatedBroker(db.session_factory(fresh_engine), seed=SEED, clock=clock)
            await fresh.start()
            answers = []
            for broker in (kept, fresh):
                try:
                    answers.append(("ok", await call(broker)))
                except BrokerError as error:
                    answers.append(("error", error.code))
            assert answers[0] == answers[1], clock.now

        placed: list[str] = []
        for number, action in enumerate(actions):
            if action[0] == "submit":
                _, kind, symbol, offset, tif = action
                price = sim_market.quote(SEED, symbol, clock.now).last
                request = SubmitOrder(client_order_id=f"c-{number}", order=_order(kind, symbol, price, offset, tif))
                placed.append(request.client_order_id)
                await both(partial(_submitted, request=request))
                # Fills in one minute apply in (filled_at, submitted_at, id) order, and each database draws its
                # own ids: orders placed a second apart keep the two accounts' fill order the same.
                clock.now += timedelta(seconds=1)
            elif action[0] == "wait":
                clock.now += timedelta(seconds=action[1])
            elif action[0] == "read":
                reads: dict[str, Callable[[SimulatedBroker], Awaitable[Any]]] = {
                    "orders": _listed, "positions": lambda broker: broker.get_positions(),
                    "account": lambda broker: broker.get_account(),
                    "by_client_id": partial(_by_client_id, client_order_id=placed[-1] if placed else "none")}
                await both(reads[action[1]])
            elif placed:
                client_order_id = placed[action[1] % len(placed)]
                await both(partial(_canceled, client_order_id=client_order_id))
        await both(_listed)
        await both(lambda broker: broker.get_positions())
    finally:
        await kept_engine.dispose()
        await fresh_engine.dispose()


async def _submitted(broker: SimulatedBroker, request: SubmitOrder) -> list[tuple[Any, ...]]:
    return _seen([await broker.submit_order(request)])


async def _listed(broker: SimulatedBroker) -> list[tuple[Any, ...]]:
    return sorted(_seen(await broker.list_orders("all")))  # orders placed at the same time: in id order


async def _by_client_id(broker: SimulatedBroker, client_order_id: str) -> list[tuple[Any, ...]]:
    found = await broker.get_order_by_client_id(client_order_id)
    return _seen([found] if found is not None else [])


async def _canceled(broker: SimulatedBroker, client_order_id: str) -> list[tuple[Any, ...]]:
    found = await broker.get_order_by_client_id(client_order_id)
    assert found is not None
    return _seen([await broker.cancel_order(found.broker_order_id)])


def test_orders_read_every_minute_fill_as_a_fresh_broker_sees_them() -> None:
    """Limit orders a little below and above the market, read every 70 s for an hour: the kept walks find each
    fill in the minute the full walk finds it."""
    price = sim_market.quote(SEED, "AAPL", START).last
    actions: list[tuple[Any, ...]] = [("submit", "limit", "AAPL", offset, "gtc") for offset in range(-40, 41, 4)]
    actions += [("submit", "stop_limit", "MSFT", offset, "gtc") for offset in (-20, -8, 8, 20)]
    actions += [("submit", "bracket", "TSLA", 10, "gtc"), ("submit", "trailing", "AAPL", 15, "gtc")]
    for _ in range(50):
        actions += [("wait", 70), ("read", "orders")]
    assert price > 0
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(_compare(Path(directory), actions))


async def _broker(url: str, clock: Clock) -> tuple[SimulatedBroker, Any]:
    engine = db.create_engine(url)
    await db.upgrade(engine)
    broker = SimulatedBroker(db.session_factory(engine), seed=SEED, clock=clock)
    await broker.start()
    return broker, engine


def _never_filled_buy(symbol: str = "MSFT") -> OrderRequest:
    return OrderRequest(symbol=symbol, side="buy", qty=Decimal(1), order_type="limit", limit_price=Decimal("1.00"),
                        time_in_force="gtc")


async def test_an_order_another_process_canceled_is_seen_canceled(database_url: str) -> None:
    clock = Clock(START)
    ours, engine = await _broker(database_url, clock)
    other = SimulatedBroker(db.session_factory(engine), seed=SEED, clock=clock)  # another process's broker
    placed = await ours.submit_order(SubmitOrder(client_order_id="rest", order=_never_filled_buy()))
    before = await ours.get_account()
    clock.now += timedelta(minutes=3)
    await ours.list_orders("open")  # our walk of it is kept
    await other.cancel_order(placed.broker_order_id)
    clock.now += timedelta(seconds=10)
    assert await ours.list_orders("open") == []
    assert (await ours.get_account()).buying_power == before.buying_power + Decimal("1.00")
    try:
        await ours.cancel_order(placed.broker_order_id)
        raise AssertionError("a canceled order was canceled again")
    except BrokerError as error:
        assert error.code == "BROKER_ERROR"
    await engine.dispose()


async def test_a_fill_another_process_stored_is_seen_once(database_url: str) -> None:
    clock = Clock(START)
    ours, engine = await _broker(database_url, clock)
    other = SimulatedBroker(db.session_factory(engine), seed=SEED, clock=clock)
    path = sim_market.minute_prices(SEED, "MSFT", sim_market.minute_index(START) + 1,
                                    sim_market.minute_index(START) + 120)
    limit = min(path)
    await ours.submit_order(SubmitOrder(client_order_id="rest", order=OrderRequest(
        symbol="MSFT", side="buy", qty=Decimal(2), order_type="limit", limit_price=limit, time_in_force="gtc")))
    cash = (await ours.get_account()).cash
    clock.now += timedelta(minutes=1)
    await ours.get_positions()  # walked by us, not yet filled
    clock.now += timedelta(hours=2)
    filled_by_other = await other.list_orders("closed")  # the other process stores the fill
    assert [(o.client_order_id, o.status) for o in filled_by_other] == [("rest", "filled")]
    assert [(o.client_order_id, o.status, o.filled_avg_price, o.updated_at)
            for o in await ours.list_orders("all")] == [
        (o.client_order_id, o.status, o.filled_avg_price, o.updated_at) for o in filled_by_other]
    assert (await ours.get_account()).cash == cash - 2 * limit
    assert [(p.symbol, p.qty) for p in await ours.get_positions()] == [("MSFT", Decimal(2))]
    await engine.dispose()


async def test_a_row_another_process_changed_is_walked_again_from_its_stored_mark(database_url: str) -> None:
    """A kept walk holds only for the stored row it walked: when another process writes the row otherwise (here a
    new limit price, as an amended order would have), the walk starts over from the row's stored mark."""
    clock = Clock(START)
    ours, engine = await _broker(database_url, clock)
    placed = await ours.submit_order(SubmitOrder(client_order_id="rest", order=_never_filled_buy()))
    first = sim_market.minute_index(START)
    path = sim_market.minute_prices(SEED, "MSFT", first, first + 26)
    clock.now = START + timedelta(minutes=25)  # within STORE_MARK_AFTER: the stored mark stays at the submission
    await ours.list_orders("open")  # 25 minutes walked by us, nothing found at 1.00
    reached = min(path[:20])  # a price the path reached in those minutes
    async with engine.begin() as connection:
        await connection.execute(update(SimOrder).where(SimOrder.id == placed.broker_order_id)
                                 .values(limit_price=reached))
    clock.now += timedelta(minutes=1)
    [order] = await ours.list_orders("all")
    crossing = next(minute for minute, price in enumerate(path, start=first) if price <= reached)
    assert (order.status, order.filled_avg_price, order.updated_at) == (
        "filled", reached, max(START, sim_market.minute_start(crossing)))
    await engine.dispose()


async def test_a_call_walks_only_the_minutes_since_the_last_one_however_long_orders_rested(database_url: str) -> None:
    clock = Clock(START)
    ours, engine = await _broker(database_url, clock)
    for number in range(10):
        await ours.submit_order(SubmitOrder(client_order_id=f"rest-{number}", order=_never_filled_buy()))
    clock.now += timedelta(minutes=29)  # rested almost STORE_MARK_AFTER: reads leave the stored marks where they are
    await ours.get_account()
    walked = []
    for _ in range(25):
        clock.now += timedelta(minutes=1)
        before = PathWalk.minutes
        await ours.get_positions()
        await ours.list_orders("open")
        await ours.get_account()
        walked.append(PathWalk.minutes - before)
    assert walked == [10] * 25  # a minute for each of the ten orders: not one more the longer they rest
    before = PathWalk.minutes
    placed = await ours.list_orders("open")
    await ours.cancel_order(placed[0].broker_order_id)  # a unit: it stores the marks it moved
    await ours.list_orders("open")
    assert PathWalk.minutes - before == 0  # the same minute: nothing new, before or after the stored marks
    clock.now += timedelta(minutes=1)
    before = PathWalk.minutes
    await ours.get_account()
    assert PathWalk.minutes - before == 9
    await engine.dispose()


async def test_walks_kept_through_a_unit_that_rolled_back_answer_as_a_broker_that_kept_nothing(
        database_url: str) -> None:
    """A refused duplicate rolls back a unit that had stored the orders' new marks (and kept its walks for those
    rows): the rows are back as they were, differ from what was kept, and are walked from their stored marks."""
    clock = Clock(START)
    ours, engine = await _broker(database_url, clock)
    price = sim_market.quote(SEED, "AAPL", START).last
    for number, offset in enumerate((-12, -6, 6, 12)):
        await ours.submit_order(SubmitOrder(client_order_id=f"rest-{number}",
                                            order=_order("limit", "AAPL", price, offset, "gtc")))
        clock.now += timedelta(seconds=1)
    for _ in range(3):
        clock.now += timedelta(minutes=7)
        try:
            await ours.submit_order(SubmitOrder(client_order_id="rest-0", order=_never_filled_buy()))
            raise AssertionError("a duplicate client_order_id was accepted")
        except BrokerError as error:
            assert error.code == "DUPLICATE_ORDER"
        clock.now += timedelta(minutes=2)
        kept_nothing = SimulatedBroker(db.session_factory(engine), seed=SEED, clock=clock)
        assert await _listed(ours) == await _listed(kept_nothing)
        assert await ours.get_account() == await kept_nothing.get_account()
    await engine.dispose()
