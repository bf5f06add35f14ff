"""broker/simulated.py inside a unit of work shared with it (ledger/shared_unit.py): its writes commit, or roll
back, with the unit; a refused order rolls back alone; what it believes of the account follows only what committed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from broker.base import BrokerError
from broker.simulated import SimulatedBroker
from ledger import db, shared_unit
from ledger.models import SimOrder
from tests.broker.test_simulated import START, FakeClock, make_broker, submit


class Boom(Exception):
    pass


async def _orders(broker: SimulatedBroker) -> list[str]:
    async with broker._sessions() as session:
        return list((await session.execute(select(SimOrder.client_order_id).order_by(SimOrder.client_order_id)))
                    .scalars())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
async def broker(database_url: str, clock: FakeClock) -> AsyncIterator[SimulatedBroker]:
    engine = db.create_engine(database_url)
    await db.upgrade(engine)
    made = await make_broker(db.session_factory(engine), clock, starting_cash=Decimal(10_000))
    yield made
    await engine.dispose()


async def test_it_joins_units_of_its_own_database_only(broker: SimulatedBroker) -> None:
    other = db.create_engine("sqlite+aiosqlite://")
    try:
        assert broker.joins_units_of(broker._sessions)
        assert not broker.joins_units_of(db.session_factory(other))
    finally:
        await other.dispose()


async def test_an_order_sent_in_a_shared_unit_commits_with_it_and_begins_no_unit_of_its_own(
        broker: SimulatedBroker) -> None:
    begun = db.UnitCounter.begun
    async with db.transaction(broker._sessions) as session:
        with shared_unit.sharing(session, broker._sessions) as shared:
            order = await broker.submit_order(submit("p-1", qty=Decimal(2)))
    shared.committed()
    assert db.UnitCounter.begun - begun == 1
    assert order.status == "filled"
    assert await _orders(broker) == ["p-1"]
    assert (await broker.get_account()).cash < Decimal(10_000)


async def test_an_order_sent_in_a_shared_unit_on_a_sqlite_file_leaves_the_units_session_unbegun(
        broker: SimulatedBroker) -> None:
    """On a SQLite file the broker's statements run on the unit's own savepoint through the session, which is never
    asked for a connection: it begins no transaction of its own (nor commits one) in the execution's last unit. On
    PostgreSQL the joined savepoint is the session's own (ledger/shared_unit.savepoint), so it is begun there."""
    async with db.transaction(broker._sessions) as session:
        on_sqlite = db.dialect_name(session) == "sqlite"
        with shared_unit.sharing(session, broker._sessions) as shared:
            order = await broker.submit_order(submit("p-1", qty=Decimal(2)))
        assert session.in_transaction() is not on_sqlite
    shared.committed()
    assert order.status == "filled"
    assert await _orders(broker) == ["p-1"]


async def test_an_order_sent_in_a_shared_unit_that_rolls_back_was_never_placed(broker: SimulatedBroker) -> None:
    with pytest.raises(Boom):
        async with db.transaction(broker._sessions) as session:
            with shared_unit.sharing(session, broker._sessions):
                await broker.submit_order(submit("p-1", qty=Decimal(2)))
            raise Boom  # e.g. the ledger could not apply the outcome
    assert await _orders(broker) == []
    account = await broker.get_account()
    assert (account.cash, account.buying_power) == (Decimal(10_000), Decimal(10_000))
    assert await broker.get_order_by_client_id("p-1") is None


async def test_a_refused_order_rolls_back_alone_and_the_unit_goes_on(broker: SimulatedBroker) -> None:
    async with db.transaction(broker._sessions) as session:
        with shared_unit.sharing(session, broker._sessions) as shared:
            with pytest.raises(BrokerError) as refused:
                await broker.submit_order(submit("too-big", symbol="SPY", qty=Decimal(100)))
            placed = await broker.submit_order(submit("p-1", qty=Decimal(1)))
    shared.committed()
    assert refused.value.code == "INSUFFICIENT_BUYING_POWER"
    assert placed.status == "filled"
    assert await _orders(broker) == ["p-1"]


async def test_a_resubmission_in_a_shared_unit_is_a_duplicate_and_the_unit_still_commits(
        broker: SimulatedBroker) -> None:
    """PostgreSQL aborts a whole transaction on a unique violation unless it happened in a savepoint."""
    first = await broker.submit_order(submit("p-1", qty=Decimal(1)))
    async with db.transaction(broker._sessions) as session:
        with shared_unit.sharing(session, broker._sessions) as shared:
            with pytest.raises(BrokerError) as again:
                await broker.submit_order(submit("p-1", qty=Decimal(1)))
            found = await broker.get_order_by_client_id("p-1")
            placed = await broker.submit_order(submit("p-2", qty=Decimal(1)))
    shared.committed()
    assert again.value.code == "DUPLICATE_ORDER"
    assert found is not None and found.broker_order_id == first.broker_order_id
    assert placed.status == "filled"
    async with broker._sessions() as session:
        assert (await session.execute(select(func.count()).select_from(SimOrder))).scalar_one() == 2


async def test_the_account_after_shared_units_equals_a_fresh_replay(broker: SimulatedBroker,
                                                                    clock: FakeClock) -> None:
    for i in range(3):
        async with db.transaction(broker._sessions) as session:
            with shared_unit.sharing(session, broker._sessions) as shared:
                await broker.submit_order(submit(f"p-{i}", qty=Decimal(1)))
        shared.committed()
    kept = await broker.get_account()
    assert kept == await (await make_broker(broker._sessions, clock)).get_account()
