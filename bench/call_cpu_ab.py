#!/usr/bin/env python3
"""Two checkouts' CPU per propose_trade (or propose + execute) compared block by block, interleaved. Not a test.

bench/call_cpu.py gives the lowest of three blocks per run; on a machine shared by several engineers one run's
lowest block moves by 5 % from one minute to the next, more than most single changes save. This runs both
trees in turn (A B, B A, A B ...), each run a fresh process measuring many blocks of calls after a warm-up, and
prints the quantiles of every block of each tree and their ratios: a difference that shows at the minimum, p10
and p25 alike is the code's, one that shows at one of them only is the neighbours'.

    .venv/bin/python bench/call_cpu_ab.py --base /tmp/base-main [--rounds 5] [--execute]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _own_call_cpu() -> Any:
    """bench/call_cpu.py beside this file (not the measured tree's, which may predate it): the calls measured."""
    spec = importlib.util.spec_from_file_location("tw_bench_call_cpu", Path(__file__).with_name("call_cpu.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CALL_CPU = _own_call_cpu()


async def blocks(count: int, per_block: int, execute: bool) -> list[float]:
    """CPU seconds per call of each block (in this process, on the checkout first on sys.path)."""
    from mcp import Client

    from bench.run import write_config
    from server.app import create_server
    from server.config import load_config
    from server.logging import configure_logging

    configure_logging("error")
    with tempfile.TemporaryDirectory(prefix="tw-ab-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        config = load_config(str(write_config(Path(tmp), agents=1)), env={})
        async with Client(create_server(config, agent_id="bench-0")) as client:

            async def one() -> None:
                await _CALL_CPU.one_call(client, execute)

            for _ in range(40):
                await one()
            found = []
            for _ in range(count):
                began = time.process_time()
                for _ in range(per_block):
                    await one()
                found.append((time.process_time() - began) / per_block)
    return found


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"min": ordered[0], "p10": ordered[len(ordered) // 10], "p25": ordered[len(ordered) // 4],
            "median": ordered[len(ordered) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(ROOT), help="the checkout measured (A)")
    parser.add_argument("--base", required=True, help="the checkout it is compared with (B), e.g. main unpacked")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each tree, alternating")
    parser.add_argument("--blocks", type=int, default=8, help="blocks per run")
    parser.add_argument("--calls", type=int, default=100, help="calls per block")
    parser.add_argument("--execute", action="store_true", help="propose then execute each time")
    parser.add_argument("--run", nargs=2, metavar=("TREE", "KIND"), help=argparse.SUPPRESS)  # one run, in a child
    args = parser.parse_args()
    if args.run:
        sys.path.insert(0, args.run[0])
        measured = asyncio.run(blocks(args.blocks, args.calls, args.run[1] == "execute"))
        print(" ".join(repr(value) for value in measured))
        return
    trees = [args.tree, args.base]
    found: dict[str, list[float]] = {tree: [] for tree in trees}
    for round_ in range(args.rounds):
        for tree in trees if round_ % 2 == 0 else trees[::-1]:
            run = subprocess.run([sys.executable, __file__, "--base", args.base, "--blocks", str(args.blocks),
                                  "--calls", str(args.calls), "--run", tree,
                                  "execute" if args.execute else "propose"],
                                 cwd=tree, capture_output=True, text=True, check=True)
            found[tree] += [float(value) for value in run.stdout.split()]
    what = "propose + execute" if args.execute else "propose"
    mine, base = quantiles(found[trees[0]]), quantiles(found[trees[1]])
    for tree, figures in ((trees[0], mine), (trees[1], base)):
        print(f"{tree} {what}: CPU " + ", ".join(f"{name} {value * 1000:.3f} ms" for name, value in figures.items())
              + f" a call ({len(found[tree])} blocks of {args.calls})")
    print("ratio A/B: " + ", ".join(f"{name} {mine[name] / base[name]:.3f}" for name in mine))


if __name__ == "__main__":
    main()
