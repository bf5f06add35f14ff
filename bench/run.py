#!/usr/bin/env python3
"""Benchmarks of the embedded default (simulated broker, SQLite). Not a test: it measures and prints.

    python3 dev.py bench            # or: .venv/bin/python bench/run.py [--calls N]

Measures: stdio start-up to first answer; p50/p99 latency of get_market_data, propose_trade and execute_trade
through the in-memory MCP client next to a no-op tool on the same server; proposals per second with 8
concurrent agents; the size of tools/list. Prints a markdown table (also written to bench/results.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def write_config(workdir: Path, agents: int = 8) -> Path:
    agent_blocks = "".join(f"""
[[agents]]
id = "bench-{i}"
max_trade_size = 1000000
max_position_size = 100000000
max_daily_trades = 1000000
allowed_symbols = ["*"]
approval = "auto"
auto_approve_max_notional = 1000000
max_order_qty = 1000000
max_gross_exposure = 1000000000
max_orders_per_window = 1000000
rolling_notional_max = 1000000000
duplicate_window_seconds = 0
capital = 1000000000
max_denials_per_window = 1000000
""" for i in range(agents))
    path = workdir / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{workdir / 'bench.db'}"
enforce_market_hours = false
max_agents_per_account = {agents}
simulated_cash = 100000000000
log_level = "warning"
{agent_blocks}""")
    return path


async def time_calls(call: Callable[[int], Awaitable[Any]], count: int) -> list[float]:
    samples: list[float] = []
    for i in range(count):
        start = time.perf_counter()
        await call(i)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def stdio_startup(config_path: Path, runs: int) -> tuple[list[float], list[float]]:
    """(spawn → initialize answered, spawn → first tool result), in ms, per run."""
    from mcp import Client, StdioServerParameters, stdio_client

    handshakes, samples = [], []
    for _ in range(runs):
        params = StdioServerParameters(command=sys.executable, cwd=str(ROOT),
                                       args=["-m", "server.cli", "serve", "--agent", "bench-0", "--config",
                                             str(config_path)])
        start = time.perf_counter()
        async with Client(stdio_client(params)) as client:
            handshakes.append((time.perf_counter() - start) * 1000)
            await client.call_tool("get_trading_status", {})
            samples.append((time.perf_counter() - start) * 1000)
    return handshakes, samples


async def in_memory(config: Any, calls: int) -> tuple[dict[str, list[float]], int]:
    from mcp import Client

    from server.app import create_server

    server = create_server(config, agent_id="bench-0")

    @server.tool(description="no-op (benchmark floor)")
    async def noop() -> dict[str, bool]:
        return {"ok": True}

    results: dict[str, list[float]] = {}
    async with Client(server) as client:
        tools = await client.list_tools()
        listed = [t for t in tools.tools if t.name != "noop"]
        size = len(json.dumps([t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in listed]))
        for _ in range(20):  # warm up
            await client.call_tool("noop", {})
            await client.call_tool("propose_trade", {"symbol": "SPY", "side": "buy", "qty": 1, "reasoning": "w"})
        results["no-op tool (floor)"] = await time_calls(lambda i: client.call_tool("noop", {}), calls)
        results["get_market_data (snapshot, 1 symbol)"] = await time_calls(
            lambda i: client.call_tool("get_market_data", {"symbols": ["AAPL"]}), calls)
        results["get_market_data (bars 30 + sma_20, rsi_14)"] = await time_calls(
            lambda i: client.call_tool("get_market_data", {"symbols": ["AAPL"], "indicators": ["sma_20", "rsi_14"]}),
            calls)
        proposals: list[str] = []

        async def propose(i: int) -> None:
            result = await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1 + i % 7,
                                                              "reasoning": "bench", "strategy": "bench"})
            assert result.structured_content and result.structured_content["status"] == "approved", result
            proposals.append(result.structured_content["proposal_id"])

        results["propose_trade (all checks)"] = await time_calls(propose, calls)

        async def execute(i: int) -> None:
            result = await client.call_tool("execute_trade", {"proposal_id": proposals[i]})
            assert result.structured_content and result.structured_content["status"] == "filled", result

        results["execute_trade (market, fills)"] = await time_calls(execute, calls)
    return results, size


async def concurrent_agents(config: Any, agents: int, seconds: float) -> tuple[float, int]:
    from mcp import Client

    from server.app import create_server

    done = 0
    deadline = 0.0

    async def agent_loop(index: int) -> None:
        nonlocal done
        async with Client(create_server(config, agent_id=f"bench-{index}")) as client:
            await client.call_tool("get_trading_status", {})
            await ready.wait()
            while time.perf_counter() < deadline:
                result = await client.call_tool("propose_trade", {"symbol": "MSFT", "side": "buy", "qty": 1,
                                                                  "reasoning": "bench"})
                assert not result.is_error, result
                done += 1

    ready = asyncio.Event()
    tasks = [asyncio.create_task(agent_loop(i)) for i in range(agents)]
    await asyncio.sleep(1.0)
    start = time.perf_counter()
    deadline = start + seconds
    ready.set()
    await asyncio.gather(*tasks)
    return done / (time.perf_counter() - start), done


def row(name: str, samples: list[float]) -> str:
    return f"| {name} | {statistics.median(samples):.2f} | {percentile(samples, 99):.2f} | {len(samples)} |"


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--startups", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    from server.config import load_config
    from server.logging import configure_logging

    configure_logging("error")
    workdir = Path(tempfile.mkdtemp(prefix="tradewarden-bench-"))
    config_path = write_config(workdir)
    config = load_config(str(config_path), env={})

    handshake, startup = await stdio_startup(config_path, args.startups)
    latencies, tools_list_size = await in_memory(config, args.calls)
    rate, total = await concurrent_agents(config, 8, args.seconds)

    lines = [
        "| measurement | p50 ms | p99 ms | n |", "|---|---|---|---|",
        row("stdio start-up: spawn → initialize answered", handshake),
        row("stdio start-up to first tool result (spawn → get_trading_status)", startup),
        *(row(name, samples) for name, samples in latencies.items()),
        "", "| measurement | value |", "|---|---|",
        f"| proposals per second, 8 concurrent agents (in memory, one SQLite file) | {rate:.0f}/s ({total} in "
        f"{args.seconds:.0f} s) |",
        f"| tools/list size (7 tools, JSON characters) | {tools_list_size} |",
    ]
    report = "\n".join(lines)
    print(report)  # stdout-ok: a benchmark script
    (ROOT / "bench" / "results.md").write_text(
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{shlex.join(sys.argv)}`\n\n{report}\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
