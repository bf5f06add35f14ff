#!/usr/bin/env python3
"""The process's CPU per propose_trade (or propose + execute) through the real MCP client in memory, one agent, a
SQLite file (simulated broker). Not a test: it measures and prints. On a shared machine wall time mostly
measures the neighbours (and a contended disk's sync); the process's CPU time is the steadier figure, so compare
trees with it, interleaved (run --tree A, --tree B, A, B...).

    .venv/bin/python bench/call_cpu.py [--tree PATH] [--calls 300] [--execute] [--folder /dev/shm]

Prints the lowest CPU and wall per call over three blocks of calls/3 (after 30 warm-up calls). --folder: where
the SQLite file goes (default: the temporary folder; /dev/shm takes the disk's sync out of the wall time).
--tree: measure another checkout (e.g. main's, unpacked with `git archive main | tar -x -C DIR`) with this
interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROPOSE = {"side": "buy", "qty": 1, "reasoning": "bench", "strategy": "bench"}


async def one_call(client: Any, execute: bool) -> None:
    """One approved proposal (and its execution, which fills), checked: a refusal would measure something else."""
    # Each execution fills a new order: MSFT keeps the AAPL book of the proposals-only runs apart.
    proposed = await client.call_tool("propose_trade", {**PROPOSE, "symbol": "MSFT" if execute else "AAPL"})
    content = proposed.structured_content
    if proposed.is_error or content is None or content.get("status") != "approved":
        raise RuntimeError(f"unexpected result: {proposed}")
    if execute:
        executed = await client.call_tool("execute_trade", {"proposal_id": content["proposal_id"]})
        if executed.is_error or (executed.structured_content or {}).get("status") != "filled":
            raise RuntimeError(f"unexpected result: {executed}")


async def measure(calls: int, execute: bool, folder: str | None) -> tuple[float, float]:
    from mcp import Client

    from bench.run import write_config
    from server.app import create_server
    from server.config import load_config
    from server.logging import configure_logging

    configure_logging("error")
    with tempfile.TemporaryDirectory(prefix="tw-cpu-", dir=folder) as tmp:
        config = load_config(str(write_config(Path(tmp), agents=1)), env={})
        async with Client(create_server(config, agent_id="bench-0")) as client:

            async def one() -> None:
                await one_call(client, execute)

            for _ in range(30):
                await one()
            blocks = []
            per_block = max(1, calls // 3)
            for _ in range(3):
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(per_block):
                    await one()
                blocks.append(((time.process_time() - cpu) / per_block, (time.perf_counter() - wall) / per_block))
    return min(cpu for cpu, _ in blocks), min(wall for _, wall in blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(ROOT), help="the checkout measured")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--execute", action="store_true", help="propose then execute each time")
    parser.add_argument("--folder", default=None, help="where the SQLite file goes")
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    cpu, wall = asyncio.run(measure(args.calls, args.execute, args.folder))
    what = "propose + execute" if args.execute else "propose"
    print(f"{args.tree} {what}: CPU {cpu * 1000:.3f} ms a call, wall {wall * 1000:.3f} ms (lowest of 3 blocks)")


if __name__ == "__main__":
    main()
