#!/usr/bin/env python3
"""`execute_trade` in one process, through the real in-memory MCP client (a bench config: auto-approved market
buys, SQLite file, synchronous=FULL). Not a test: it measures and prints.

    .venv/bin/python bench/prof_execute.py [TREE] [cumulative|tottime|none] [TOP] [CALLS]

Proposes 2 x CALLS market buys, then executes CALLS of them unprofiled (p50, mean, p90 and the process's CPU time
per execution: on a shared machine CPU time is steadier than latency) and, unless `none`, the other CALLS under
cProfile (sorted by the given key, TOP lines). TREE: the source tree to import (default: this one), so another
checkout is measured with the same interpreter.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if {"-h", "--help"} & set(sys.argv[1:]):
    print(__doc__)
    sys.exit(0)
TREE = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parent.parent)
SORT = sys.argv[2] if len(sys.argv) > 2 else "cumulative"
TOP = int(sys.argv[3]) if len(sys.argv) > 3 else 45
CALLS = int(sys.argv[4]) if len(sys.argv) > 4 else 300
sys.path.insert(0, TREE)


async def main() -> None:
    from mcp import Client

    from bench.run import write_config
    from server.app import create_server
    from server.config import load_config
    from server.logging import configure_logging

    configure_logging("error")
    with tempfile.TemporaryDirectory(prefix="tw-prof-execute-") as tmp:
        config = load_config(str(write_config(Path(tmp), agents=1)), env={})
        async with Client(create_server(config, agent_id="bench-0")) as client:
            async def propose() -> str:
                result = await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1,
                                                                  "reasoning": "profile"})
                data: Any = result.structured_content or json.loads(result.content[0].text)  # type: ignore[union-attr]
                return str(data["proposal_id"])

            async def execute(proposal_id: str) -> None:
                result = await client.call_tool("execute_trade", {"proposal_id": proposal_id})
                assert not result.is_error, result

            for _ in range(30):  # warm-up: caches, compiled statements
                await execute(await propose())
            pending = [await propose() for _ in range(2 * CALLS)]
            samples: list[float] = []
            cpu = time.process_time()
            for proposal_id in pending[CALLS:]:
                started = time.perf_counter()
                await execute(proposal_id)
                samples.append((time.perf_counter() - started) * 1000)
            cpu_ms = (time.process_time() - cpu) / CALLS * 1000
            samples.sort()
            print(f"execute ms unprofiled p50 {statistics.median(samples):.3f} mean {statistics.mean(samples):.3f} "
                  f"p90 {samples[int(len(samples) * 0.9)]:.3f} cpu/exec {cpu_ms:.3f}")
            if SORT == "none":
                return
            profile = cProfile.Profile()
            started = time.perf_counter()
            profile.enable()
            for proposal_id in pending[:CALLS]:
                await execute(proposal_id)
            profile.disable()
            print("execute ms profiled", (time.perf_counter() - started) / CALLS * 1000)
            pstats.Stats(profile).sort_stats(SORT).print_stats(TOP)


if __name__ == "__main__":
    asyncio.run(main())
