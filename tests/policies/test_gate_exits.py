"""The gate with brackets under concurrency, on SQLite and PostgreSQL: executions racing against the
position cap and max_risk_per_trade cannot together exceed them, and the exits of a filled bracket never make
room for more (they are reduce-only, not reservations)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import select

from ledger.models import AgentOrderLeg, AgentPosition, AgentTrade
from tests.alpaca_env import read
from tests.conftest import agent, call, connect, make_config
from tests.ledger_probe import broker_orders

D = Decimal


async def test_racing_bracket_executions_cannot_together_exceed_the_position_or_risk_limits(
        database_url: str, market_open: object) -> None:
    # AAPL is about $190: one 10-share bracket fits the $2,500 position cap, two do not; each risks < $100.
    config = make_config(database_url, agent(max_position_size=2500, max_risk_per_trade="100",
                                             duplicate_window_seconds=0, max_denials_per_window=1000))
    async with connect(config) as first, connect(config) as second:  # two servers on one database
        bid = D((await call(first, "get_market_data", symbols=["AAPL"]))["data"][0]["bid"])
        stop, take = str((bid - 5).quantize(D("0.01"))), str((bid + 20).quantize(D("0.01")))
        proposals = [await call(client, "propose_trade", symbol="AAPL", side="buy", qty=10, time_in_force="gtc",
                                reasoning=f"race {i}", stop_loss=stop, take_profit=take)
                     for i, client in enumerate((first, second, first, second))]
        assert [p["status"] for p in proposals] == ["approved"] * 4
        results = await asyncio.gather(*(client.call_tool("execute_trade", {"proposal_id": p["proposal_id"]})
                                         for client, p in zip((first, second, first, second), proposals,
                                                              strict=True)))
        statuses = sorted(r.structured_content["status"] for r in results if r.structured_content)
        assert statuses == ["filled", "rejected", "rejected", "rejected"]
        denied = [v["code"] for r in results if r.structured_content
                  for v in r.structured_content["violations"]]
        assert set(denied) == {"POSITION_EXCEEDS_MAX"}

        # The filled bracket's sell exits are working, yet they make no room for another buy.
        again = await call(first, "propose_trade", symbol="AAPL", side="buy", qty=10, reasoning="more",
                           stop_loss=stop, take_profit=take)
        assert [v["code"] for v in again["violations"]] == ["POSITION_EXCEEDS_MAX"]

    assert await broker_orders(database_url) == 3  # one entry and its two exits
    [position] = await read(database_url, select(AgentPosition))
    assert position.qty == 10 and position.qty * position.avg_entry_price <= 2500
    [trade] = await read(database_url, select(AgentTrade).where(AgentTrade.status == "filled"))
    assert trade.filled_qty * (trade.price - D(stop)) <= 100  # the money at risk of the one that filled
    legs = await read(database_url, select(AgentOrderLeg))
    assert sorted(leg.role for leg in legs) == ["stop_loss", "take_profit"] and {leg.parent_id for leg in legs} == {
        trade.id}
