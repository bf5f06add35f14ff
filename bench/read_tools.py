#!/usr/bin/env python3
"""p50 / p99 of the read tools, in memory and over stdio, with the units of work each call begins. Not a test.

    .venv/bin/python bench/read_tools.py [--calls 200] [--rounds 4] [--skip-stdio] [--compare OTHER_TREE]

The agent holds a position (one filled market buy) and two resting limit buys, so get_orders / get_positions
ask the (simulated) broker about live orders as they would in use. The tools are called round-robin in
`rounds` rounds of calls/rounds each, so every tool sees the same minutes of the (shared, noisy) machine.
Run the same file from an older checkout (copy it to its bench/) to compare before/after: it imports the
tree it sits in. `--compare OTHER_TREE` (e.g. a `git archive` of main unpacked somewhere) also runs that
tree's server over stdio next to this one's, each on its own database, and alternates every single call
between the two, so both see the same moments of a noisy machine. Prints one JSON line per mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import percentile, write_config  # noqa: E402

AGENT = "bench-0"
PROPOSE = {"symbol": "AAPL", "side": "buy", "qty": 1, "reasoning": "bench", "strategy": "bench"}
READS: dict[str, dict[str, Any]] = {
    "get_positions": {}, "get_orders": {}, "get_trading_status": {},
    "get_market_data": {"symbols": ["AAPL", "MSFT"]},
}


def _ok(result: Any) -> dict[str, Any]:
    if result.is_error or result.structured_content is None:
        raise RuntimeError(f"unexpected result: {result}")
    return dict(result.structured_content)


async def _prepare(client: Any) -> None:
    for order in (PROPOSE, {**PROPOSE, "order_type": "limit", "limit_price": 1},
                  {**PROPOSE, "order_type": "limit", "limit_price": 2}):
        proposal = _ok(await client.call_tool("propose_trade", order))
        _ok(await client.call_tool("execute_trade", {"proposal_id": proposal["proposal_id"]}))


async def _measure(client: Any, calls: int, rounds: int) -> dict[str, Any]:
    from ledger.db import UnitCounter

    samples: dict[str, list[float]] = {tool: [] for tool in READS}
    units: dict[str, int] = dict.fromkeys(READS, 0)
    for tool, args in READS.items():  # warm-up
        for _ in range(10):
            _ok(await client.call_tool(tool, args))
    for _ in range(rounds):
        for tool, args in READS.items():
            for _ in range(max(1, calls // rounds)):
                before = getattr(UnitCounter, "begun", 0)
                start = time.perf_counter()
                _ok(await client.call_tool(tool, args))
                samples[tool].append((time.perf_counter() - start) * 1000)
                units[tool] += getattr(UnitCounter, "begun", 0) - before
    return {tool: {"p50_ms": round(percentile(s, 50), 3), "p99_ms": round(percentile(s, 99), 3),
                   "units_per_call": round(units[tool] / len(s), 2)} for tool, s in samples.items()}


async def in_memory(config_path: Path, calls: int, rounds: int) -> dict[str, Any]:
    from mcp import Client

    from server.app import create_server
    from server.config import load_config

    config = load_config(str(config_path), env={})
    async with Client(create_server(config, agent_id=AGENT)) as client:
        await _prepare(client)
        return await _measure(client, calls, rounds)


async def over_stdio(config_path: Path, calls: int, rounds: int) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters, stdio_client

    server = StdioServerParameters(command=sys.executable, cwd=str(ROOT),
                                   args=["-m", "server.cli", "serve", "--agent", AGENT, "--config", str(config_path)])
    async with Client(stdio_client(server)) as client:
        result = await _measure(client, calls, rounds)
    for row in result.values():  # the server's units are counted in its own process
        row.pop("units_per_call")
    return result


def _stdio_server(root: Path, config_path: Path) -> Any:
    from mcp import StdioServerParameters

    return StdioServerParameters(command=sys.executable, cwd=str(root),
                                 args=["-m", "server.cli", "serve", "--agent", AGENT, "--config", str(config_path)])


async def compared(configs: dict[str, Path], roots: dict[str, Path], calls: int) -> dict[str, Any]:
    """Each tree's server over stdio, every call alternating between them (same tool, back to back)."""
    from contextlib import AsyncExitStack

    from mcp import Client, stdio_client

    samples: dict[str, dict[str, list[float]]] = {name: {tool: [] for tool in READS} for name in roots}
    async with AsyncExitStack() as stack:
        clients = {name: await stack.enter_async_context(Client(stdio_client(_stdio_server(root, configs[name]))))
                   for name, root in roots.items()}
        for client in clients.values():
            await _prepare(client)
            for tool, args in READS.items():
                for _ in range(10):
                    _ok(await client.call_tool(tool, args))
        for i in range(calls):
            for tool, args in READS.items():
                order = list(clients.items()) if i % 2 == 0 else list(reversed(clients.items()))
                for name, client in order:
                    start = time.perf_counter()
                    _ok(await client.call_tool(tool, args))
                    samples[name][tool].append((time.perf_counter() - start) * 1000)
    return {name: {tool: {"p50_ms": round(percentile(s, 50), 3), "p99_ms": round(percentile(s, 99), 3)}
                   for tool, s in by_tool.items()} for name, by_tool in samples.items()}


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--skip-stdio", action="store_true")
    parser.add_argument("--compare", type=Path, help="another tree whose server runs next to this one's")
    args = parser.parse_args()

    from server.logging import configure_logging

    configure_logging("error")
    if args.compare is not None:
        with tempfile.TemporaryDirectory(prefix="tw-reads-") as tmp:
            roots = {"this": ROOT, "other": args.compare.resolve()}
            configs = {}
            for name in roots:
                (Path(tmp) / name).mkdir()
                configs[name] = write_config(Path(tmp) / name, agents=1)
            result = await compared(configs, roots, args.calls)
        for name, root in roots.items():
            print(json.dumps({"tree": str(root), "mode": "stdio, alternating", **result[name]}))  # stdout-ok
        return 0
    with tempfile.TemporaryDirectory(prefix="tw-reads-") as tmp:
        config_path = write_config(Path(tmp), agents=1)
        memory = await in_memory(config_path, args.calls, args.rounds)
        print(json.dumps({"tree": str(ROOT), "mode": "in memory", **memory}))  # stdout-ok: a benchmark script
        if not args.skip_stdio:
            stdio = await over_stdio(config_path, args.calls, args.rounds)
            print(json.dumps({"tree": str(ROOT), "mode": "stdio", **stdio}))  # stdout-ok: a benchmark script
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
