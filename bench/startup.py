#!/usr/bin/env python3
"""First tool result after spawn: `tradewarden serve` over stdio next to a bare MCP server, interleaved. Not a
test: it measures and prints.

    .venv/bin/python bench/startup.py [--runs 10] [--against /path/to/another/checkout]
        [--first-tool get_trading_status|get_positions|propose_trade] [--log-level warning|info|...]

Each run spawns the bare one-tool server (bench/bare_server.py, same SDK) and then every tree (this one, and the
checkouts given with --against, each with its own .venv), and times spawn → initialize answered and spawn →
first tool result (`noop`, `get_trading_status` for an agent of an existing SQLite ledger: the usual start, not the
first one that creates it). The trees alternate run by run, so all see the same machine; on a shared machine the
ratio to the bare server of the same run is what counts. The CPU column is the child's whole life (until it exits
after the client closes), from getrusage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import write_config  # noqa: E402


def _running_child_cpu_ms() -> float:
    """CPU time the running child server has used so far (every thread alive now, from the scheduler's
    nanosecond counters): unlike wall time it does not grow when other processes take the cores."""
    total_ns = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != os.getpid():  # fields after the name: state, ppid, ...
                continue
            for task in (entry / "task").iterdir():
                total_ns += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total_ns / 1e6


def _children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


# The first tool a server is asked for: the benchmark's usual one (a read), or another, to see that what makes a start
# cheaper is not the path of one tool only. propose_trade's order is one the agents' limits approve (bench/run.py).
FIRST_CALLS: dict[str, dict[str, Any]] = {
    "get_trading_status": {},
    "get_positions": {},
    "propose_trade": {"symbol": "AAPL", "side": "buy", "qty": 1, "reasoning": "bench"},
}


async def _once(command: str, cwd: Path, args: list[str], tool: str,
                arguments: dict[str, Any] | None = None) -> tuple[float, float, float, float]:
    """(spawn → initialize answered, spawn → first tool result, the child's CPU until then, the child's CPU over
    its whole life), in ms."""
    from mcp import Client, StdioServerParameters, stdio_client

    cpu = _children_cpu_ms()
    start = time.perf_counter()
    async with Client(stdio_client(StdioServerParameters(command=command, cwd=str(cwd), args=args))) as client:
        initialized = (time.perf_counter() - start) * 1000
        result = await client.call_tool(tool, arguments or {})
        first = (time.perf_counter() - start) * 1000
        cpu_to_first = _running_child_cpu_ms()
        if result.is_error:
            raise RuntimeError(f"{tool} failed: {result}")
    return initialized, first, cpu_to_first, _children_cpu_ms() - cpu


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--against", action="append", default=[], type=Path,
                        help="another checkout (with its .venv) measured in the same runs")
    parser.add_argument("--first-tool", choices=sorted(FIRST_CALLS), default="get_trading_status",
                        help="the tool our servers are asked for first (the bare server: its no-op)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="warning",
                        help="our servers' log_level (bench/run.py's config: warning; a config's default: info)")
    args = parser.parse_args()
    trees = [ROOT, *[tree.resolve() for tree in args.against]]
    with tempfile.TemporaryDirectory(prefix="tw-startup-") as tmp:
        configs = {}
        for number, tree in enumerate(trees):
            (Path(tmp) / str(number)).mkdir()
            configs[tree] = write_config(Path(tmp) / str(number))
            text = configs[tree].read_text()
            configs[tree].write_text(text.replace('log_level = "warning"', f'log_level = "{args.log_level}"'))

        def bare() -> tuple[str, Path, list[str], str]:
            return sys.executable, ROOT, [str(ROOT / "bench" / "bare_server.py")], "noop"

        def ours(tree: Path) -> tuple[str, Path, list[str], str, dict[str, Any]]:
            return (str(tree / ".venv" / "bin" / "python"), tree,
                    ["-m", "server.cli", "serve", "--agent", "bench-0", "--config", str(configs[tree])],
                    args.first_tool, FIRST_CALLS[args.first_tool])

        for tree in trees:  # the first start creates and migrates the ledger: not the one measured
            await _once(*ours(tree))
        await _once(*bare())
        samples: dict[str, list[tuple[float, float, float, float]]] = {"bare": [], **{str(tree): [] for tree in trees}}
        for _ in range(args.runs):
            samples["bare"].append(await _once(*bare()))
            for tree in trees:
                samples[str(tree)].append(await _once(*ours(tree)))
    floor = statistics.median(first for _, first, _, _ in samples["bare"])
    cpu_floor = statistics.median(cpu for _, _, cpu, _ in samples["bare"])
    print("| server | initialize p50 | first result p50 (min) | × bare | CPU to first result p50 | × bare "  # stdout-ok
          "| child CPU, whole life p50 |")
    print("|---|---|---|---|---|---|---|")  # stdout-ok: a benchmark script
    for name, runs in samples.items():
        firsts = [first for _, first, _, _ in runs]
        cpu_to_first = statistics.median(cpu for _, _, cpu, _ in runs)
        print(f"| {name} | {statistics.median(i for i, _, _, _ in runs):.0f} ms | "  # stdout-ok: a benchmark script
              f"{statistics.median(firsts):.0f} ms ({min(firsts):.0f}) | {statistics.median(firsts) / floor:.2f} | "
              f"{cpu_to_first:.0f} ms | {cpu_to_first / cpu_floor:.2f} | "
              f"{statistics.median(c for _, _, _, c in runs):.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
