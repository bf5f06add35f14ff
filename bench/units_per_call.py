#!/usr/bin/env python3
"""Units of work (ledger.db.UnitCounter) and SQL statements per propose_trade / execute_trade, through the real
MCP client in memory on a SQLite file (simulated broker, whose statements are included). Not a test: it counts
and prints. The broker's account read (cached by the gate for a second) is primed before each counted call.

    .venv/bin/python bench/units_per_call.py [--calls 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()

    from mcp import Client
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from ledger.db import UnitCounter
    from server.app import create_server
    from server.logging import configure_logging

    configure_logging("error")
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(Engine, "before_cursor_execute", count)
    with tempfile.TemporaryDirectory(prefix="tw-units-") as tmp:
        from bench.run import write_config
        from server.config import load_config

        config = load_config(str(write_config(Path(tmp), agents=1)), env={})
        seen: dict[str, list[tuple[int, int]]] = {"propose_trade": [], "execute_trade": []}
        async with Client(create_server(config, agent_id="bench-0")) as client:
            await client.call_tool("get_trading_status", {})
            for _ in range(args.calls):
                await client.call_tool("get_market_data", {"symbols": ["AAPL"]})  # warm caches
                units, before = UnitCounter.begun, statements
                proposed = await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1,
                                                                     "reasoning": "count"})
                seen["propose_trade"].append((UnitCounter.begun - units, statements - before))
                assert proposed.structured_content is not None, proposed
                units, before = UnitCounter.begun, statements
                executed = await client.call_tool("execute_trade",
                                                  {"proposal_id": proposed.structured_content["proposal_id"]})
                seen["execute_trade"].append((UnitCounter.begun - units, statements - before))
                assert executed.structured_content is not None, executed
    for tool, samples in seen.items():
        print(f"{tool}: units median {statistics.median(u for u, _ in samples):g} "
              f"(min {min(u for u, _ in samples)}, max {max(u for u, _ in samples)}), "
              f"statements median {statistics.median(s for _, s in samples):g} "
              f"(min {min(s for _, s in samples)}, max {max(s for _, s in samples)})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
