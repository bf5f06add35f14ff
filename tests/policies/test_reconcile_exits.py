"""policies/reconcile.py with bracket legs: an exit that fills while the server is down is booked at the
restart like any other fill (position, realized P&L, an audited order update)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import time_machine
from sqlalchemy import select

from ledger.models import AgentOrderLeg, AgentPosition
from server.runtime import open_runtime
from tests.alpaca_env import audit_records, read, trader
from tests.conftest import call, connect, make_config
from tests.tools.test_exits import QTY, SYMBOL, move_into, path_from


async def test_a_stop_filled_while_the_server_was_down_is_booked_at_the_restart(
        database_url: str, market_open: time_machine.Coordinates) -> None:
    config = make_config(database_url, trader())
    first, prices = path_from(datetime.now(UTC))
    low = min(prices[1:])
    hit = prices.index(low)
    async with connect(config) as client:
        proposal = await call(client, "propose_trade", symbol=SYMBOL, side="buy", qty=QTY, time_in_force="gtc",
                              reasoning="bracket", stop_loss=str(low),
                              take_profit=str(max(prices[: hit + 1]) + Decimal("0.05")))
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    entry = Decimal(executed["filled_avg_price"])

    move_into(market_open, first, hit)  # the stop fills while no server runs
    async with open_runtime(config):  # the restart's first reconciliation pass
        pass

    legs = {leg.role: leg for leg in await read(database_url, select(AgentOrderLeg))}
    assert (legs["stop_loss"].status, legs["take_profit"].status) == ("filled", "canceled")
    [held] = await read(database_url, select(AgentPosition))
    assert held.qty == 0 and held.realized_pl == QTY * (low - entry)
    records = [r for r in await audit_records(database_url, "system:reconcile") if r.kind == "order.updated"]
    assert any('"role":"stop_loss"' in r.payload and '"to":"filled"' in r.payload for r in records)
    # The event stream sees it like any fill: the leg's fill (agent.trade.executed) and the position after it.
    fill = next(r for r in records if '"role":"stop_loss"' in r.payload and '"to":"filled"' in r.payload)
    assert f'"proposal_id":"{proposal["proposal_id"]}"' in fill.payload
    positions = [r for r in await audit_records(database_url, "system:ledger") if r.kind == "position.updated"]
    assert positions and '"qty":"0"' in positions[-1].payload
