#!/usr/bin/env python3
"""Latency of propose_trade and execute_trade with and without exits (a bracket: stop-loss and take-profit),
through the in-memory MCP client on the embedded default (simulated broker, SQLite), like bench/run.py. Also
get_orders once brackets are open (their legs are refreshed with them). Not a test: it measures and prints.

    .venv/bin/python bench/exits_bench.py [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import percentile, time_calls, write_config  # noqa: E402


async def measure(calls: int) -> dict[str, list[float]]:
    """Each series on a server and database of its own: the open orders of one do not slow the next."""
    results: dict[str, list[float]] = {}
    for series in ("market, no exits", "market + bracket (stop-loss, take-profit)", "resting limit, no exits"):
        results.update(await measure_series(series, calls))
    return results


async def measure_series(series: str, calls: int) -> dict[str, list[float]]:
    from mcp import Client

    from server.app import create_server
    from server.config import load_config

    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(str(write_config(Path(tmp), agents=1)), env={})
        async with Client(create_server(config, agent_id="bench-0")) as client:
            quote = (await client.call_tool("get_market_data", {"symbols": ["AAPL"]})).structured_content
            assert quote is not None
            bid = Decimal(quote["data"][0]["bid"])
            far_below, far_above = ((bid * Decimal(f)).quantize(Decimal("0.01")) for f in ("0.7", "1.3"))
            # Far enough that nothing fills during the run: every bracket stays open with both legs working.
            extra: dict[str, Any] = {}
            if "bracket" in series:
                extra = {"stop_loss": str(far_below), "take_profit": str(far_above), "time_in_force": "gtc"}
            elif "resting" in series:
                extra = {"order_type": "limit", "limit_price": str(far_below), "time_in_force": "gtc"}
            for _ in range(5):  # warm-up
                await client.call_tool("propose_trade", {"symbol": "SPY", "side": "buy", "qty": 1, "reasoning": "w"})
            proposals: list[str] = []

            async def propose(i: int) -> None:
                result = await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1 + i % 7,
                                                                  "reasoning": "bench", **extra})
                assert result.structured_content and result.structured_content["status"] == "approved", result
                proposals.append(result.structured_content["proposal_id"])

            async def execute(i: int) -> None:
                result = await client.call_tool("execute_trade", {"proposal_id": proposals[i]})
                assert result.structured_content and result.structured_content["status"] in ("filled", "submitted")

            async def orders(_: int) -> None:
                await client.call_tool("get_orders", {"status": "open", "limit": 50})

            results[f"propose_trade, {series}"] = await time_calls(propose, calls)
            results[f"execute_trade, {series}"] = await time_calls(execute, calls)
            results[f"get_orders after, {series}"] = await time_calls(orders, 5)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    results = asyncio.run(measure(args.calls))
    print("| call | n | p50 ms | p99 ms |\n|---|---|---|---|")
    for name, samples in results.items():
        print(f"| {name} | {len(samples)} | {percentile(samples, 50):.2f} | {percentile(samples, 99):.2f} |")


if __name__ == "__main__":
    main()
