"""broker/alpaca.py's round trips, counted at the contract server: what it looked up recently (assets, quotes)
is reused while fresh, a reused quote keeps its own timestamp, and a bracket is read back in one request."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from broker.alpaca import ASSET_REUSE_SECONDS, QUOTE_REFRESH_AHEAD, QUOTE_REUSE_SECONDS, AlpacaBroker
from broker.freshness import FreshCache
from policies.orders import StopLoss, TakeProfit
from tests.broker.alpaca_contract_server import AlpacaContractServer
from tests.broker.test_alpaca import alpaca, alpaca_server, submit  # noqa: F401 - fixtures

D = Decimal


def snapshot_requests(server: AlpacaContractServer) -> int:
    return len(server.requests_to("GET", "/v2/stocks/snapshots", api="data"))


def test_the_quote_window_is_at_most_half_the_shortest_stale_quote_limit() -> None:
    # max_quote_age_seconds is an integer > 0 (server/config.py): 1 s is the tightest an agent can have.
    assert QUOTE_REUSE_SECONDS <= 0.5
    with pytest.raises(ValueError, match="quote_reuse_seconds"):
        AlpacaBroker(api_key="k" * 20, secret_key="s" * 40, paper=True, quote_reuse_seconds=2)


async def test_a_quote_asked_for_again_within_the_window_is_not_fetched_again(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    first = await alpaca.get_quotes(["AAPL"])
    second = await alpaca.get_quotes(["AAPL"])
    assert second == first
    assert snapshot_requests(alpaca_server) == 1


async def test_a_reused_quote_keeps_its_own_timestamp(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    as_of = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=7)
    alpaca_server.set_quote("AAPL", bid="189.5", ask="190.5", last="190", as_of=as_of)
    await alpaca.get_quotes(["AAPL"])
    reused = (await alpaca.get_quotes(["AAPL"]))["AAPL"]
    assert reused.as_of == as_of  # the gate's stale-quote check sees the quote's age, not the cache's
    assert snapshot_requests(alpaca_server) == 1


async def test_a_quote_older_than_the_window_is_fetched_again(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    alpaca_server.set_price("AAPL", "190")
    await alpaca.get_quotes(["AAPL"])
    alpaca_server.set_price("AAPL", "191")
    await asyncio.sleep(QUOTE_REUSE_SECONDS + 0.1)
    quote = (await alpaca.get_quotes(["AAPL"]))["AAPL"]
    assert quote.last == D(191)
    assert snapshot_requests(alpaca_server) == 2


async def test_only_the_symbols_not_kept_are_asked_for(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    await alpaca.get_quotes(["AAPL"])
    quotes = await alpaca.get_quotes(["AAPL", "MSFT"])
    assert set(quotes) == {"AAPL", "MSFT"}
    [_, second] = alpaca_server.requests_to("GET", "/v2/stocks/snapshots", api="data")
    assert second.query["symbols"] == ["MSFT"]


async def test_a_symbol_without_data_is_asked_for_again(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    alpaca_server.remove_market_data("SPY")
    assert await alpaca.get_quotes(["SPY"]) == {}
    alpaca_server.set_price("SPY", "520")
    assert set(await alpaca.get_quotes(["SPY"])) == {"SPY"}


async def test_an_asset_is_reused_for_a_minute(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    assert ASSET_REUSE_SECONDS <= 60
    first = await alpaca.get_asset("AAPL")
    again = await alpaca.get_asset("aapl")
    assert first is not None and again == first
    assert len(alpaca_server.requests_to("GET", "/v2/assets/*", api="trading")) == 1


async def test_an_unknown_asset_is_asked_for_again(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    assert await alpaca.get_asset("NEWCO") is None
    alpaca_server.add_asset("NEWCO", name="Newly Listed", price="12.00")
    listed = await alpaca.get_asset("NEWCO")
    assert listed is not None and listed.tradable
    assert len(alpaca_server.requests_to("GET", "/v2/assets/NEWCO", api="trading")) == 2


async def test_an_adapter_built_without_reuse_asks_every_time(alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    broker = AlpacaBroker(**alpaca_server.broker_kwargs(quote_reuse_seconds=0, asset_reuse_seconds=0))
    try:
        for _ in range(2):
            await broker.get_quotes(["AAPL"])
            await broker.get_asset("AAPL")
    finally:
        await broker.close()
    assert snapshot_requests(alpaca_server) == 2
    assert len(alpaca_server.requests_to("GET", "/v2/assets/*", api="trading")) == 2


async def test_a_submitted_bracket_is_read_back_with_its_legs_in_one_request(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    alpaca_server.set_price("AAPL", "190")
    order = await alpaca.submit_order(submit(qty=D(3), stop_loss=StopLoss(stop_price=D(180)),
                                             take_profit=TakeProfit(limit_price=D(200))))
    before = len(alpaca_server.requests)
    found = await alpaca.get_order_by_client_id(order.client_order_id)
    assert found is not None and found.broker_order_id == order.broker_order_id and len(found.legs) == 2
    [read] = alpaca_server.requests[before:]
    assert (read.method, read.path, read.query.get("nested")) == ("GET", f"/v2/orders/{order.broker_order_id}",
                                                                  ["true"])


async def test_a_bracket_from_before_a_restart_is_still_found_by_its_client_order_id(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    alpaca_server.set_price("AAPL", "190")
    order = await alpaca.submit_order(submit(qty=D(3), stop_loss=StopLoss(stop_price=D(180)),
                                             take_profit=TakeProfit(limit_price=D(200))))
    restarted = AlpacaBroker(**alpaca_server.broker_kwargs())
    try:
        found = await restarted.get_order_by_client_id(order.client_order_id)
    finally:
        await restarted.close()
    assert found is not None and len(found.legs) == 2
    assert alpaca_server.requests_to("GET", "/v2/orders:by_client_order_id", api="trading")


class SteppedClock:
    """Both clocks of a FreshCache, moved by the test (a loaded machine cannot oversleep a 0.5 s window)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.start = datetime.now(UTC)

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)


def stepped_quotes(broker: AlpacaBroker) -> SteppedClock:
    clock = SteppedClock()
    broker._quotes = FreshCache(QUOTE_REUSE_SECONDS, monotonic=clock.monotonic, wall=clock.wall)
    return clock


async def settled(broker: AlpacaBroker) -> None:
    """Until the background refreshes the broker started have ended."""
    while broker._refreshes:
        await asyncio.gather(*broker._refreshes)


async def test_a_quote_used_late_in_its_window_is_fetched_again_in_the_background(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    clock = stepped_quotes(alpaca)
    alpaca_server.set_price("AAPL", "190")
    await alpaca.get_quotes(["AAPL"])
    alpaca_server.set_price("AAPL", "191")
    clock.seconds = QUOTE_REUSE_SECONDS * QUOTE_REFRESH_AHEAD
    served = (await alpaca.get_quotes(["AAPL"]))["AAPL"]
    assert served.last == D(190)  # still fresh: served at once, not waited for
    await settled(alpaca)
    assert snapshot_requests(alpaca_server) == 2  # ... and fetched again meanwhile
    clock.seconds = QUOTE_REUSE_SECONDS * 1.5  # past the first quote's window, within the refreshed one's
    assert (await alpaca.get_quotes(["AAPL"]))["AAPL"].last == D(191)
    assert snapshot_requests(alpaca_server) == 2


async def test_a_quote_early_in_its_window_is_not_fetched_ahead(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    clock = stepped_quotes(alpaca)
    await alpaca.get_quotes(["AAPL"])
    clock.seconds = QUOTE_REUSE_SECONDS * QUOTE_REFRESH_AHEAD * 0.9
    await alpaca.get_quotes(["AAPL"])
    await settled(alpaca)
    assert snapshot_requests(alpaca_server) == 1


async def test_proposals_together_late_in_the_window_start_one_refresh(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    clock = stepped_quotes(alpaca)
    await alpaca.get_quotes(["AAPL"])
    clock.seconds = QUOTE_REUSE_SECONDS * QUOTE_REFRESH_AHEAD
    await asyncio.gather(*(alpaca.get_quotes(["AAPL"]) for _ in range(5)))
    await settled(alpaca)
    assert snapshot_requests(alpaca_server) == 2


async def test_a_failed_refresh_ahead_changes_nothing_and_the_next_proposal_asks(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    clock = stepped_quotes(alpaca)
    await alpaca.get_quotes(["AAPL"])
    alpaca_server.fail_next("/v2/stocks/snapshots", status=500, times=1 + alpaca.read_retries, api="data")
    clock.seconds = QUOTE_REUSE_SECONDS * QUOTE_REFRESH_AHEAD
    assert "AAPL" in await alpaca.get_quotes(["AAPL"])
    await settled(alpaca)
    clock.seconds = QUOTE_REUSE_SECONDS * 1.5
    assert "AAPL" in await alpaca.get_quotes(["AAPL"])  # expired: asked in the call, and answered
    assert snapshot_requests(alpaca_server) == 1 + (1 + alpaca.read_retries) + 1
