#!/usr/bin/env python3
"""What a call costs over stdio around the gate: the transport and the server layer, next to the SDK's bare server.
Not a test: it measures and prints.

    .venv/bin/python bench/stdio_floor.py [--tree PATH ...] [--calls 300] [--rounds 2]

Per tree (a checkout with its own .venv; default: this one), in rounds that alternate the trees so all see the same
machine, p50 / p99 in ms of one call through the real `mcp.Client` over stdio (bench/floor_server.py serves):
- sdk no-op: a bare one-tool MCPServer on the SDK's stdio transport (the floor of issue 12; the same in every tree)
- transport no-op: the same bare server on the tree's stdio transport (server/stdio.py): the transport's share
- server no-op: `tradewarden serve` with a no-op tool added: our call path around a tool that does nothing
- get_trading_status, propose_trade: the cheapest tool through the gate, and a proposal
and the CPU time per call of the server process (all its threads) and of this client: steadier than wall time
when the neighbours are busy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import percentile, write_config  # noqa: E402

SERVER = ROOT / "bench" / "floor_server.py"
PROPOSE = {"symbol": "AAPL", "side": "buy", "qty": 1, "reasoning": "bench", "strategy": "bench"}


def python_of(tree: Path) -> str:
    venv = tree / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def children_cpu_seconds() -> float:
    """CPU time (user + system, all threads) of this process's live children: the server being measured. On a
    shared machine it moves far less than wall time when the neighbours are busy."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


async def timed(call: Callable[[], Awaitable[Any]], count: int, cpu: dict[str, float], name: str,
                warm: int = 30) -> list[float]:
    for _ in range(warm):
        await call()
    samples: list[float] = []
    server_cpu, client_cpu = children_cpu_seconds(), time.process_time()
    for _ in range(count):
        start = time.perf_counter()
        result = await call()
        samples.append((time.perf_counter() - start) * 1000)
        if getattr(result, "is_error", False):
            raise RuntimeError(f"unexpected result: {result}")
    cpu[f"{name} server"] = (children_cpu_seconds() - server_cpu) / count * 1000
    cpu[f"{name} client"] = (time.process_time() - client_cpu) / count * 1000
    return samples


async def one_tree(tree: Path, config: Path, calls: int, cpu: dict[str, float]) -> dict[str, list[float]]:
    from mcp import Client, StdioServerParameters, stdio_client

    def params(*args: str) -> StdioServerParameters:
        return StdioServerParameters(command=python_of(tree), cwd=str(tree), args=[str(SERVER), str(tree), *args])

    out: dict[str, list[float]] = {}
    for mode in ("sdk", "transport"):
        async with Client(stdio_client(params(mode))) as bare:
            out[f"{mode} no-op"] = await timed(lambda: bare.call_tool("noop", {}), calls, cpu, f"{mode} no-op")
    async with Client(stdio_client(params("ours", str(config), "bench-0"))) as ours:
        out["server no-op"] = await timed(lambda: ours.call_tool("noop", {}), calls, cpu, "server no-op")
        out["get_trading_status"] = await timed(lambda: ours.call_tool("get_trading_status", {}), calls, cpu,
                                                "get_trading_status")
        out["propose_trade"] = await timed(lambda: ours.call_tool("propose_trade", PROPOSE), calls, cpu,
                                           "propose_trade")
    return out


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", type=Path, default=[])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    trees: list[Path] = [t.resolve() for t in args.tree] or [ROOT]
    with tempfile.TemporaryDirectory(prefix="tw-stdio-floor-") as tmp:
        for round_number in range(1, args.rounds + 1):
            for index, tree in enumerate(trees):
                work = Path(tmp) / f"r{round_number}-{index}"
                work.mkdir()
                cpu: dict[str, float] = {}
                measured = await one_tree(tree, write_config(work, agents=1), args.calls, cpu)
                floor = statistics.median(measured["sdk no-op"])
                print(f"round {round_number} {tree}")  # stdout-ok: a benchmark script
                for name, samples in measured.items():
                    p50 = statistics.median(samples)
                    print(f"  {name:20} p50 {p50:6.3f} ms  p99 {percentile(samples, 99):6.3f} ms  "  # stdout-ok
                          f"{p50 / floor:4.2f}× sdk no-op  cpu/call: server {cpu[name + ' server']:5.3f} ms, "
                          f"client {cpu[name + ' client']:5.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
