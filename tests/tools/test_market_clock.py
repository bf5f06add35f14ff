"""The market clock an agent sees, on a Sunday (a fixed clock), through the real MCP client: the next open in
get_trading_status and in MARKET_CLOSED, closed-market denials that do not trip the denial breaker, crypto
approved with the defaults, and a simulated tape that stands still."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from mcp import Client

from server.config import Config
from tests.conftest import agent, call, connected_in_own_task, make_config

SUNDAY = datetime(2026, 11, 29, 18, 0, tzinfo=UTC)  # Sunday 13:00 New York
MONDAY_OPEN = datetime(2026, 11, 30, 14, 30, tzinfo=UTC)  # Monday 09:30 New York


@pytest.fixture
def sunday() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(SUNDAY, tick=True) as traveller:
        yield traveller


@pytest.fixture
def sunday_config(db_url: str) -> Config:
    return make_config(db_url, agent(allowed_symbols=["*"]))  # market hours enforced (the default)


@pytest.fixture
async def sunday_client(sunday_config: Config, sunday: time_machine.Coordinates) -> AsyncIterator[Client]:
    async with connected_in_own_task(sunday_config) as connected:
        yield connected


async def test_trading_status_shows_the_next_open_per_asset_class(sunday_client: Client) -> None:
    status = await call(sunday_client, "get_trading_status")
    equity, crypto = status["market"]["us_equity"], status["market"]["crypto"]
    assert equity["open"] is False
    assert datetime.fromisoformat(equity["next_open"]) == MONDAY_OPEN
    assert datetime.fromisoformat(equity["next_close"]) == MONDAY_OPEN + timedelta(hours=6, minutes=30)
    assert crypto == {"open": True}
    assert status["market_hours_enforced"] is True


async def test_market_closed_says_when_the_market_opens(sunday_client: Client) -> None:
    result = await call(sunday_client, "propose_trade", symbol="AAPL", side="buy", qty="1", reasoning="monday")
    assert result["status"] == "rejected"
    [closed] = [v for v in result["violations"] if v["code"] == "MARKET_CLOSED"]
    assert "it opens next at Mon 2026-11-30 09:30 New York time (2026-11-30T14:30Z)" in closed["message"]


async def test_a_resting_limit_order_for_monday_is_refused_with_the_next_open(sunday_client: Client) -> None:
    result = await call(sunday_client, "propose_trade", symbol="AAPL", side="buy", qty="1", order_type="limit",
                        limit_price="150.00", time_in_force="gtc", reasoning="for monday")
    assert [v["code"] for v in result["violations"]] == ["MARKET_CLOSED"]
    assert "Orders are not queued while it is closed" in result["violations"][0]["message"]


async def test_twenty_five_closed_market_denials_leave_the_agent_active(sunday_client: Client) -> None:
    for n in range(25):  # more than max_denials_per_window (20 for the moderate risk level)
        result = await call(sunday_client, "propose_trade", symbol="MSFT", side="buy", qty=str(1 + n % 3),
                            reasoning="weekend")
        assert [v["code"] for v in result["violations"]] == ["MARKET_CLOSED"]
    status = await call(sunday_client, "get_trading_status")
    assert (status["state"], status["halted"]) == ("active", False)
    # A real mistake afterwards is judged on its own: it does not inherit the 25 closed-market denials.
    mistake = await call(sunday_client, "propose_trade", symbol="BTC/USD", side="buy", qty="1000",
                         reasoning="too big")
    assert mistake["status"] == "rejected"
    assert (await call(sunday_client, "get_trading_status"))["state"] == "active"


async def test_crypto_with_the_defaults_is_approved_on_a_sunday(sunday_client: Client) -> None:
    proposal = await call(sunday_client, "propose_trade", symbol="BTC/USD", side="buy", notional="100",
                          reasoning="crypto never closes")
    assert proposal["status"] == "approved", proposal
    executed = await call(sunday_client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert executed["status"] == "filled"
    [order] = (await call(sunday_client, "get_orders", status="all"))["orders"]
    assert order["time_in_force"] == "gtc"


async def test_an_equity_quote_stands_still_on_a_sunday(sunday_client: Client,
                                                        sunday: time_machine.Coordinates) -> None:
    first = (await call(sunday_client, "get_market_data", symbols=["AAPL", "BTC/USD"]))["data"]
    sunday.shift(timedelta(hours=3))
    later = (await call(sunday_client, "get_market_data", symbols=["AAPL", "BTC/USD"]))["data"]
    assert first[0]["last_price"] == later[0]["last_price"]
    assert first[1]["last_price"] != later[1]["last_price"]
