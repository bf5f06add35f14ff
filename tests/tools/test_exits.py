"""Orders with exits through the real MCP client on the simulated broker: a bracket's life on the
deterministic price path (the stop or the take-profit fills, the other is cancelled), trailing stops, and
positions and P&L after each step."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from mcp import Client

from broker import sim_market
from server.config import Config
from tests.conftest import agent, call, connect, connected_in_own_task, make_config

SEED = 42  # ServerConfig.simulated_seed
SYMBOL, QTY = "SPY", 5  # from MARKET_OPEN SPY's path falls, rises and falls again within the session
HORIZON = 300  # minutes of the path a test looks at: within the regular session it starts in
D = Decimal


def path_from(now: datetime, minutes: int = HORIZON) -> tuple[int, list[Decimal]]:
    """SYMBOL's minute prices from the minute of `now` on (index 0 is the entry's minute)."""
    first = sim_market.minute_index(now)
    return first, sim_market.minute_prices(SEED, SYMBOL, first, first + minutes)


def first_index(prices: list[Decimal], value: Decimal) -> int:
    return prices.index(value)


@pytest.fixture
async def bracket_client(config: Config, market_open: time_machine.Coordinates
                         ) -> AsyncIterator[tuple[Client, time_machine.Coordinates]]:
    async with connected_in_own_task(config) as connected:
        yield connected, market_open


async def open_bracket(client: Client, **exits: str) -> dict[str, Any]:
    proposal = await call(client, "propose_trade", symbol=SYMBOL, side="buy", qty=QTY, time_in_force="gtc",
                          reasoning="bracket test", **exits)
    assert proposal["status"] == "approved", proposal["message"]
    executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert executed["status"] == "filled"
    return executed


def move_into(traveller: time_machine.Coordinates, first_minute: int, index: int) -> None:
    """Into the path's minute `index` (the broker sees every minute up to the one in progress)."""
    traveller.move_to(sim_market.minute_start(first_minute + index) + timedelta(seconds=5))


async def position(client: Client) -> dict[str, Any]:
    positions = await call(client, "get_positions")
    return {p["symbol"]: p for p in positions["positions"]}.get(SYMBOL, {"qty": "0", "realized_pl": "0"})


async def test_a_bracket_buy_is_stopped_out_and_its_take_profit_cancelled(
        bracket_client: tuple[Client, time_machine.Coordinates]) -> None:
    client, traveller = bracket_client
    first, prices = path_from(datetime.now(UTC))
    low = min(prices[1:])
    hit = first_index(prices, low)
    take_profit = max(prices[: hit + 1]) + D("0.05")  # not reached before the stop
    executed = await open_bracket(client, stop_loss=str(low), take_profit=str(take_profit))
    entry = D(executed["filled_avg_price"])

    orders = (await call(client, "get_orders", status="open"))["orders"]
    assert [leg["role"] for leg in orders[0]["legs"]] == ["stop_loss", "take_profit"]
    assert {leg["status"] for leg in orders[0]["legs"]} == {"new"}
    assert D((await position(client))["qty"]) == QTY

    move_into(traveller, first, hit)
    held = await position(client)
    assert D(held["qty"]) == 0
    assert D(held["realized_pl"]) == QTY * (low - entry)
    closed = (await call(client, "get_orders", status="all"))["orders"][0]
    assert {leg["role"]: leg["status"] for leg in closed["legs"]} == {"stop_loss": "filled",
                                                                      "take_profit": "canceled"}
    assert D(closed["legs"][0]["filled_avg_price"]) == low
    assert (await call(client, "get_orders", status="open"))["orders"] == []


async def test_a_bracket_buy_takes_profit_and_its_stop_is_cancelled(
        bracket_client: tuple[Client, time_machine.Coordinates]) -> None:
    client, traveller = bracket_client
    first, prices = path_from(datetime.now(UTC))
    high = max(prices[1:])
    hit = first_index(prices, high)
    stop = min(prices[: hit + 1]) - D("0.05")  # not reached before the take-profit
    executed = await open_bracket(client, stop_loss=str(stop), take_profit=str(high))
    entry = D(executed["filled_avg_price"])

    move_into(traveller, first, hit)
    held = await position(client)
    assert D(held["qty"]) == 0
    assert D(held["realized_pl"]) == QTY * (high - entry)  # a take-profit fills at its limit
    legs = (await call(client, "get_orders", status="all"))["orders"][0]["legs"]
    assert {leg["role"]: leg["status"] for leg in legs} == {"stop_loss": "canceled", "take_profit": "filled"}


async def test_a_trailing_stop_follows_the_price_up_and_fires_on_the_way_down(
        bracket_client: tuple[Client, time_machine.Coordinates]) -> None:
    client, traveller = bracket_client
    first, prices = path_from(datetime.now(UTC))
    percent = D("0.15")
    executed = await open_bracket(client, trailing_stop=f"{percent}%")
    entry = D(executed["filled_avg_price"])
    # Where the simulated broker's trailing stop must fire: the first minute at or below its stop.
    mark, fired = entry, None
    for index, price in enumerate(prices):
        mark = max(mark, price)
        if price <= (mark * (1 - percent / 100)).quantize(D("0.01")):
            fired = index
            break
    assert fired is not None and fired > 1, "the path must move before the stop fires"
    peak = max(prices[:fired])
    assert peak > entry, "the path must rise first, for the stop to follow it up"

    move_into(traveller, first, fired - 1)  # just before it fires: the stop has followed the high
    leg = (await call(client, "get_orders", status="open"))["orders"][0]["legs"][0]
    assert leg["role"] == "trailing_stop" and leg["status"] == "new"
    assert D(leg["stop_price"]) == (max(entry, *prices[:fired]) * (1 - percent / 100)).quantize(D("0.01"))
    assert D(leg["stop_price"]) > (entry * (1 - percent / 100)).quantize(D("0.01"))

    move_into(traveller, first, fired)
    held = await position(client)
    assert D(held["qty"]) == 0
    assert D(held["realized_pl"]) == QTY * (prices[fired] - entry)


# --- policies: a required stop, the money at risk per trade, and the size hint ---------------------------

def hinted_qty(message: str) -> int:
    found = re.search(r"the largest order that passes is qty ([\d,]+)", message)
    assert found is not None, message
    return int(found.group(1).replace(",", ""))


async def quote(client: Client, symbol: str = "AAPL") -> tuple[Decimal, Decimal]:
    data = (await call(client, "get_market_data", symbols=[symbol]))["data"][0]
    return D(data["bid"]), D(data["ask"])


async def test_require_stop_loss_denies_an_opening_order_without_a_stop(db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url, agent(require_stop_loss=True))) as client:
        bare = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=5, reasoning="no stop")
        assert bare["status"] == "rejected"
        assert [v["code"] for v in bare["violations"]] == ["STOP_LOSS_REQUIRED"]
        bid, _ = await quote(client)
        protected = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=5, reasoning="with a stop",
                               stop_loss=str((bid * D("0.95")).quantize(D("0.01"))))
        assert protected["status"] == "approved", protected["message"]


async def test_max_risk_per_trade_denies_and_its_size_hint_passes(db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url, agent(max_risk_per_trade="50"))) as client:
        bid, ask = await quote(client)
        stop = (bid - 4).quantize(D("0.01"))
        risky = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=20, reasoning="too much risk",
                           stop_loss=str(stop))
        assert [v["code"] for v in risky["violations"]] == ["RISK_PER_TRADE_EXCEEDED"]
        qty = hinted_qty(risky["message"])
        assert qty == int(D(50) / (ask - stop))  # whole shares of $50 / (entry - stop)
        sized = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=qty, reasoning="sized",
                           stop_loss=str(stop))
        assert sized["status"] == "approved", sized["message"]
        executed = await call(client, "execute_trade", proposal_id=sized["proposal_id"])
        assert executed["status"] == "filled"


async def test_an_opening_order_without_a_stop_risks_its_whole_notional(db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url, agent(max_risk_per_trade="1%", capital=100000))) as client:
        _, ask = await quote(client)
        qty = int(D(1000) / ask) + 1  # just over 1 % of $100,000 in notional
        bare = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=qty, reasoning="no stop")
        assert [v["code"] for v in bare["violations"]] == ["RISK_PER_TRADE_EXCEEDED"]
        assert "no stop: the whole notional is at risk" in bare["message"]
        assert hinted_qty(bare["message"]) == qty - 1


async def test_an_order_too_large_for_its_notional_cap_says_the_largest_that_passes(
        db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url, agent(max_trade_size=2000))) as client:
        big = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=30, reasoning="too big")
        assert [v["code"] for v in big["violations"]] == ["ORDER_NOTIONAL_EXCEEDS_MAX"]
        assert "per-order notional" in big["message"] and "position" in big["message"]
        sized = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=hinted_qty(big["message"]),
                           reasoning="sized")
        assert sized["status"] == "approved", sized["message"]


async def test_a_denial_for_something_other_than_size_gives_no_size_hint(db_url: str, market_open: object) -> None:
    async with connect(make_config(db_url, agent(max_trade_size=2000))) as client:
        result = await call(client, "propose_trade", symbol="TSLA", side="buy", qty=30, reasoning="not allowed")
        assert "SYMBOL_NOT_ALLOWED" in [v["code"] for v in result["violations"]]
        assert "Size hint" not in result["message"]


async def test_cancelling_a_resting_bracket_entry_cancels_its_exits(
        bracket_client: tuple[Client, time_machine.Coordinates]) -> None:
    client, _ = bracket_client
    bid, _ = await quote(client)
    limit = (bid * D("0.9")).quantize(D("0.01"))
    proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=5, order_type="limit",
                          limit_price=str(limit), time_in_force="gtc", reasoning="buy the dip",
                          stop_loss=str(limit - 5), take_profit=str(bid))
    executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert executed["status"] == "submitted"
    [entry] = (await call(client, "get_orders", status="open"))["orders"]
    assert {leg["status"] for leg in entry["legs"]} == {"held"}  # waiting for the entry to fill
    cancelled = await call(client, "cancel_order", order_id=executed["order_id"])
    assert cancelled["status"] == "canceled"
    [entry] = (await call(client, "get_orders", status="all"))["orders"]
    assert {leg["role"]: leg["status"] for leg in entry["legs"]} == {"stop_loss": "canceled",
                                                                     "take_profit": "canceled"}


async def test_a_crypto_bracket_is_refused_with_a_reason(
        bracket_client: tuple[Client, time_machine.Coordinates]) -> None:
    client, _ = bracket_client
    result = await call(client, "propose_trade", symbol="BTC/USD", side="buy", qty=0.01, time_in_force="gtc",
                        reasoning="btc", stop_loss="1000")
    assert [v["code"] for v in result["violations"]] == ["INVALID_ORDER"]
    assert "crypto orders cannot carry exits" in result["message"]


async def test_an_unreadable_exit_is_an_invalid_order(bracket_client: tuple[Client, time_machine.Coordinates]) -> None:
    client, _ = bracket_client
    result = await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1, "reasoning": "r",
                                                      "trailing_stop": "150%"})
    assert result.is_error and result.content[0].text.startswith("INVALID_ORDER")  # type: ignore[union-attr]


async def test_trading_status_shows_the_stop_policy_and_the_largest_order_the_limits_allow(
        db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent(max_risk_per_trade="1%", require_stop_loss=True, max_trade_size=3000))
    async with connect(config) as client:
        status = await call(client, "get_trading_status")
    limits = status["limits"]
    assert (limits["require_stop_loss"], limits["max_risk_per_trade"], limits["max_risk_per_trade_usd"]) == (
        True, "1%", "1000")
    assert limits["largest_order_usd"] == "3000 (per-order notional)"


async def test_a_protected_position_is_closed_by_hand_only_after_its_exits_are_cancelled(
        bracket_client: tuple[Client, time_machine.Coordinates]) -> None:
    client, _ = bracket_client
    bid, _ = await quote(client, SYMBOL)
    executed = await open_bracket(client, stop_loss=str((bid * D("0.9")).quantize(D("0.01"))),
                                  take_profit=str((bid * D("1.1")).quantize(D("0.01"))))
    close = {"symbol": SYMBOL, "side": "sell", "qty": QTY, "reasoning": "close by hand"}
    # The exits hold the shares: selling them too would leave the agent short once an exit fills.
    held = await call(client, "propose_trade", **close)
    assert [v["code"] for v in held["violations"]] == ["SHORT_SELLING_NOT_ALLOWED"]

    [entry] = (await call(client, "get_orders", status="open"))["orders"]
    assert entry["order_id"] == executed["order_id"]
    for leg in entry["legs"]:
        cancelled = await call(client, "cancel_order", order_id=leg["order_id"])
        assert cancelled["status"] == "canceled"
    assert (await call(client, "get_orders", status="open"))["orders"] == []
    free = await call(client, "propose_trade", **close)
    assert free["status"] == "approved", free["message"]
    assert (await call(client, "execute_trade", proposal_id=free["proposal_id"]))["status"] == "filled"
    assert D((await position(client))["qty"]) == 0


async def test_a_short_bracket_is_stopped_out_on_the_way_up(db_url: str,
                                                             market_open: time_machine.Coordinates) -> None:
    async with connected_in_own_task(make_config(db_url, agent(allow_short=True))) as client:
        first, prices = path_from(datetime.now(UTC))
        high = max(prices[1:])
        hit = first_index(prices, high)
        take_profit = min(prices[: hit + 1]) - D("0.05")
        proposal = await call(client, "propose_trade", symbol=SYMBOL, side="sell", qty=QTY, time_in_force="gtc",
                              reasoning="short", stop_loss=str(high), take_profit=str(take_profit))
        assert proposal["status"] == "approved", proposal["message"]
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
        entry = D(executed["filled_avg_price"])
        assert D((await position(client))["qty"]) == -QTY

        move_into(market_open, first, hit)
        held = await position(client)
        assert D(held["qty"]) == 0
        assert D(held["realized_pl"]) == QTY * (entry - high)
        legs = (await call(client, "get_orders", status="all"))["orders"][0]["legs"]
        assert {leg["role"]: (leg["side"], leg["status"]) for leg in legs} == {
            "stop_loss": ("buy", "filled"), "take_profit": ("buy", "canceled")}
