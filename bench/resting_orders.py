#!/usr/bin/env python3
"""What resting orders cost every call on the simulated broker. Not a test: it measures and prints.

    .venv/bin/python bench/resting_orders.py [--counts 0,10,40,200] [--calls 120] [--skip-tools] [--skip-broker]

Two parts, each for N = 0 / 10 / 40 / 200 resting limit buys (they never fill):
- tools: get_orders, get_positions, propose_trade and cancel_order through the in-memory mcp.Client on the
  embedded default (simulated broker, SQLite file), real clock, round-robin so every tool sees the same minutes.
  Each cancel cancels an order placed just before it (untimed), so N stays N.
- broker: the SimulatedBroker alone on a SQLite file with a clock that moves 20 s per call (the orders rest
  for the whole run: an hour of simulated time at 120 calls a tool), list_orders / get_positions /
  get_account / cancel_order round-robin. Shows what the time orders have rested costs; also the price-path
  minutes walked per call where the tree counts them (broker.simulated.PathWalk).
- rested: the same broker, the orders placed 25 minutes before (within STORE_MARK_AFTER, so reads leave their
  stored marks there), then only reads, 1 s apart: what reads cost once orders have rested a while.
Wall p50 / p99 and process-CPU p50 per call, in ms. It imports the tree it sits in: copy it into another
checkout's bench/ to compare (run the two one after the other, twice: the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import percentile, write_config  # noqa: E402

AGENT = "bench-0"
PROPOSE = {"symbol": "AAPL", "side": "buy", "qty": 1, "reasoning": "bench", "strategy": "bench"}
RESTING = {**PROPOSE, "order_type": "limit", "limit_price": 1, "time_in_force": "gtc"}
START = datetime(2025, 3, 12, 14, 0, 5, tzinfo=UTC)  # a Wednesday, 10:00 New York: the session is open


def _ok(result: Any) -> dict[str, Any]:
    if result.is_error or result.structured_content is None:
        raise RuntimeError(f"unexpected result: {result}")
    return dict(result.structured_content)


def _walked() -> int:
    from broker import simulated

    counter = getattr(simulated, "PathWalk", None)
    return int(counter.minutes) if counter is not None else -1


class _Series:
    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.minutes = 0

    async def timed(self, call: Callable[[], Awaitable[Any]]) -> Any:
        walked = _walked()
        cpu, wall = time.process_time(), time.perf_counter()
        result = await call()
        self.wall.append((time.perf_counter() - wall) * 1000)
        self.cpu.append((time.process_time() - cpu) * 1000)
        self.minutes += _walked() - walked
        return result

    def summary(self) -> dict[str, Any]:
        return {"p50_ms": round(percentile(self.wall, 50), 3), "p99_ms": round(percentile(self.wall, 99), 3),
                "cpu_p50_ms": round(percentile(self.cpu, 50), 3),
                "minutes_per_call": round(self.minutes / len(self.wall), 1) if _walked() >= 0 else None}


async def tools(resting: int, calls: int) -> dict[str, Any]:
    from mcp import Client

    from server.app import create_server
    from server.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(str(write_config(Path(tmp))), env={})
        async with Client(create_server(config, agent_id=AGENT)) as client:
            async def place() -> str:
                proposal = _ok(await client.call_tool("propose_trade", RESTING))
                return str(_ok(await client.call_tool("execute_trade",
                                                      {"proposal_id": proposal["proposal_id"]}))["order_id"])

            for _ in range(resting):
                await place()
            series = {name: _Series() for name in ("get_orders", "get_positions", "propose_trade", "cancel_order")}
            for i in range(calls + 10):  # the first 10 rounds warm up
                if i == 10:
                    series = {name: _Series() for name in series}
                await series["get_orders"].timed(lambda: client.call_tool("get_orders", {"limit": 500}))
                await series["get_positions"].timed(lambda: client.call_tool("get_positions", {}))
                await series["propose_trade"].timed(lambda: client.call_tool("propose_trade", PROPOSE))
                order_id = await place()
                canceled = await series["cancel_order"].timed(
                    partial(client.call_tool, "cancel_order", {"order_id": order_id}))
                if _ok(canceled)["status"] != "canceled":
                    raise RuntimeError(f"not canceled: {canceled}")
    return {name: s.summary() for name, s in series.items()}


async def broker_alone(resting: int, calls: int, rested_minutes: int = 0) -> dict[str, Any]:
    from broker.base import SubmitOrder
    from broker.simulated import SimulatedBroker
    from ledger import db
    from policies.orders import OrderRequest

    now = [START]
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.create_engine(f"sqlite+aiosqlite:///{tmp}/b.db")
        await db.upgrade(engine)
        broker = SimulatedBroker(db.session_factory(engine), seed=42, clock=lambda: now[0])
        await broker.start()
        placed = 0

        async def place() -> str:
            nonlocal placed
            placed += 1
            order = OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1), order_type="limit",
                                 limit_price=Decimal(1), time_in_force="gtc")
            return (await broker.submit_order(SubmitOrder(client_order_id=f"c-{placed}", order=order))).broker_order_id

        for _ in range(resting):
            await place()
        if rested_minutes:  # reads only, after the orders rested: no unit stores their marks meanwhile
            now[0] += timedelta(minutes=rested_minutes)
            series = {name: _Series() for name in ("list_orders", "get_positions", "get_account")}
            for _ in range(calls):
                for name, call in (("list_orders", lambda: broker.list_orders("open")),
                                   ("get_positions", broker.get_positions), ("get_account", broker.get_account)):
                    now[0] += timedelta(seconds=1)
                    await series[name].timed(call)
            await engine.dispose()
            return {name: s.summary() for name, s in series.items()}
        series = {name: _Series() for name in ("list_orders", "get_positions", "get_account", "cancel_order")}
        for i in range(calls + 10):
            if i == 10:
                series = {name: _Series() for name in series}
            for name, call in (("list_orders", lambda: broker.list_orders("open")),
                               ("get_positions", broker.get_positions), ("get_account", broker.get_account)):
                now[0] += timedelta(seconds=5)
                await series[name].timed(call)
            order_id = await place()
            now[0] += timedelta(seconds=5)
            await series["cancel_order"].timed(partial(broker.cancel_order, order_id))
        await engine.dispose()
    return {name: s.summary() for name, s in series.items()}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="0,10,40,200", help="numbers of resting orders, comma-separated")
    parser.add_argument("--calls", type=int, default=120, help="timed calls per tool and count")
    parser.add_argument("--skip-tools", action="store_true")
    parser.add_argument("--skip-broker", action="store_true")
    parser.add_argument("--skip-rested", action="store_true")
    args = parser.parse_args()

    from server.logging import configure_logging

    configure_logging("error")
    for count in (int(c) for c in args.counts.split(",")):
        if not args.skip_tools:
            print(json.dumps({"part": "tools", "resting": count, **await tools(count, args.calls)}), flush=True)
        if not args.skip_broker:
            print(json.dumps({"part": "broker", "resting": count, **await broker_alone(count, args.calls)}),
                  flush=True)
        if not args.skip_rested:
            print(json.dumps({"part": "rested", "resting": count,
                              **await broker_alone(count, args.calls, rested_minutes=25)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
