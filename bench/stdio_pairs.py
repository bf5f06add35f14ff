#!/usr/bin/env python3
"""Two checkouts' `tradewarden serve` side by side over stdio, propose + execute pairs alternating between them one
by one (the order swapped every pair), so both see the same seconds of a noisy machine. Not a test: it measures
and prints the p50 of each call per tree.

    .venv/bin/python bench/stdio_pairs.py TREE_A TREE_B [--pairs 300] [--folder /dev/shm]

Both servers run with this interpreter (e.g. TREE_B an export of main: `git archive main | tar -x -C DIR`); each
gets its own SQLite file in --folder (default: the temporary folder, on disk). Swap the trees and run again: the
harness itself may favour one position by a few per cent (run a tree against a copy of itself to see it).
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

from bench.run import write_config  # noqa: E402

PROPOSE = {"symbol": "AAPL", "side": "buy", "qty": 1, "reasoning": "bench", "strategy": "bench"}
WARM_UP = 20


async def measure(trees: list[str], pairs: int, folder: str | None) -> dict[str, dict[str, list[float]]]:
    from contextlib import AsyncExitStack

    from mcp import Client, StdioServerParameters, stdio_client

    out: dict[str, dict[str, list[float]]] = {tree: {"propose": [], "execute": []} for tree in trees}
    async with AsyncExitStack() as stack:
        clients: list[tuple[str, Any]] = []
        for tree in trees:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tw-pairs-", dir=folder)))
            params = StdioServerParameters(command=sys.executable, cwd=tree, args=[
                "-m", "server.cli", "serve", "--agent", "bench-0", "--config", str(write_config(work, agents=1))])
            clients.append((tree, await stack.enter_async_context(Client(stdio_client(params)))))

        async def pair(tree: str, client: Any, keep: bool) -> None:
            start = time.perf_counter()
            proposed = await client.call_tool("propose_trade", PROPOSE)
            proposing = time.perf_counter() - start
            if proposed.is_error or (proposed.structured_content or {}).get("status") != "approved":
                raise RuntimeError(f"unexpected result: {proposed}")
            start = time.perf_counter()
            executed = await client.call_tool("execute_trade",
                                              {"proposal_id": proposed.structured_content["proposal_id"]})
            executing = time.perf_counter() - start
            if executed.is_error or (executed.structured_content or {}).get("status") != "filled":
                raise RuntimeError(f"unexpected result: {executed}")
            if keep:
                out[tree]["propose"].append(proposing * 1000)
                out[tree]["execute"].append(executing * 1000)

        for number in range(WARM_UP + pairs):
            for tree, client in (clients if number % 2 else reversed(clients)):
                await pair(tree, client, number >= WARM_UP)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("trees", nargs=2)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--folder", default=None, help="where the SQLite files go")
    args = parser.parse_args()
    trees = [str(Path(tree).resolve()) for tree in args.trees]
    measured = asyncio.run(measure(trees, args.pairs, args.folder))
    for tree in trees:
        print(f"{tree}: propose p50 {statistics.median(measured[tree]['propose']):.2f} ms, "  # stdout-ok
              f"execute p50 {statistics.median(measured[tree]['execute']):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
