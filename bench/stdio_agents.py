#!/usr/bin/env python3
"""Audited proposals/s with N agents the way stdio deploys them: one `tradewarden serve` process per agent, all on
one SQLite file. Not a test: it measures and prints.

    .venv/bin/python bench/stdio_agents.py [--tree PATH ...] [--agents 8] [--seconds 4] [--rounds 2]

bench/issue12.py's throughput rows run 8 agents in ONE process (in-memory clients: the HTTP deployment's shape),
where group commit lets the agents' decisions share COMMITs. Over stdio every agent has its own server process:
each process groups only its own units, and the processes take SQLite's write lock in turn. Per tree (its own
.venv), alternating trees by round: proposals/s over the window, p50 / p99 of a call, and the servers' CPU
time per proposal (all processes, all threads).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import percentile, write_config  # noqa: E402
from bench.stdio_floor import children_cpu_seconds, python_of  # noqa: E402

PROPOSE = {"symbol": "MSFT", "side": "buy", "qty": 1, "reasoning": "bench", "strategy": "bench"}


async def one_tree(tree: Path, config: Path, agents: int, seconds: float) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters, stdio_client

    done = warmed = 0
    deadline = 0.0
    samples: list[float] = []
    ready, all_warm = asyncio.Event(), asyncio.Event()
    # Started one after the other: servers opening a fresh ledger at the same moment race to create it (one
    # can give up with "database is locked"), which is not what this measures.
    started = [asyncio.Event() for _ in range(agents)]

    async def agent(index: int) -> None:
        nonlocal done, warmed
        params = StdioServerParameters(command=python_of(tree), cwd=str(tree),
                                       args=["-m", "server.cli", "serve", "--agent", f"bench-{index}",
                                             "--config", str(config)])
        if index:
            await started[index - 1].wait()
        async with Client(stdio_client(params)) as client:
            for _ in range(5):
                await client.call_tool("propose_trade", PROPOSE)
            started[index].set()
            warmed += 1
            if warmed == agents:
                all_warm.set()
            await ready.wait()
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                result = await client.call_tool("propose_trade", PROPOSE)
                ended = time.perf_counter()
                if result.is_error:
                    raise RuntimeError(f"unexpected result: {result}")
                if ended <= deadline:
                    done += 1
                    samples.append((ended - began) * 1000)

    tasks = [asyncio.create_task(agent(i)) for i in range(agents)]
    await all_warm.wait()
    cpu_before = children_cpu_seconds()
    deadline = time.perf_counter() + seconds
    ready.set()
    await asyncio.sleep(seconds)
    servers_cpu = children_cpu_seconds() - cpu_before
    await asyncio.gather(*tasks)
    return {"rate": done / seconds, "p50": statistics.median(samples), "p99": percentile(samples, 99),
            "cpu per proposal": servers_cpu / max(1, done) * 1000}


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", type=Path, default=[])
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    trees: list[Path] = [t.resolve() for t in args.tree] or [ROOT]
    with tempfile.TemporaryDirectory(prefix="tw-stdio-agents-") as tmp:
        for round_number in range(1, args.rounds + 1):
            for index, tree in enumerate(trees):
                work = Path(tmp) / f"r{round_number}-{index}"
                work.mkdir()
                m = await one_tree(tree, write_config(work, agents=args.agents), args.agents, args.seconds)
                print(f"round {round_number} {tree}: {m['rate']:.0f} proposals/s with "  # stdout-ok
                      f"{args.agents} stdio agents, p50 {m['p50']:.2f} ms / p99 {m['p99']:.2f} ms a call, servers' CPU "
                      f"{m['cpu per proposal']:.2f} ms a proposal")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
