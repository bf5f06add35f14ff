#!/usr/bin/env python3
"""What anchoring costs a call: `propose_trade` p50/p99 with and without [audit]. Not a test: it measures and
prints.

    .venv/bin/python bench/audit_cost.py [--calls 300] [--rounds 4]

Two servers (simulated broker, SQLite, in-memory MCP client as bench/run.py), one without and one with [audit]
(checkpoints every second by the background signer), each on a fresh database, alive at once in one process,
their calls interleaved: on a shared, noisy machine only a paired measurement compares them. Rows are bound to
their audit records in both (that is not optional).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import percentile, write_config  # noqa: E402  (bench/run.py, beside this file)


async def paired_samples(plain: Path, anchored: Path, calls: int) -> tuple[list[float], list[float], int]:
    """Latencies (ms) of `calls` proposals on each of two servers alive at once, one without and one with
    [audit], their calls interleaved (ABBA) so that the machine's noise falls on both alike; and the
    checkpoints the anchored one wrote meanwhile."""
    from contextlib import AsyncExitStack

    from mcp import Client

    from server.app import create_server
    from server.config import load_config

    configs = [load_config(str(plain), env={}), load_config(str(anchored), env={})]
    samples: list[list[float]] = [[], []]
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(Client(create_server(c, agent_id="bench-0"))) for c in configs]
        for _ in range(20):
            for client in clients:
                await client.call_tool("propose_trade", {"symbol": "SPY", "side": "buy", "qty": 1, "reasoning": "w"})
        await asyncio.sleep(3.5)  # past the runtime's start-up heap freeze, so both measure the steady state
        for i in range(calls):
            for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                result = await clients[which].call_tool(
                    "propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1 + i % 7, "reasoning": "bench",
                                      "strategy": "bench"})
                samples[which].append((time.perf_counter() - start) * 1000)
                assert result.structured_content and result.structured_content["status"] == "approved", result
    audit = configs[1].audit
    assert audit is not None
    written = audit.checkpoint_dir / "checkpoints.jsonl"
    return samples[0], samples[1], len(written.read_text().splitlines()) if written.exists() else 0


def anchored_config(workdir: Path) -> Path:
    from policies import anchoring

    path = write_config(workdir, agents=1)
    path.write_text(path.read_text().replace("[[agents]]", """[audit]
signing_key_file = "keys/audit.ed25519"
checkpoint_dir = "checkpoints"
checkpoint_interval_seconds = 1

[[agents]]""", 1))
    anchoring.generate_key(workdir / "keys" / "audit.ed25519")
    return path


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {"without [audit]": [], "with [audit]": []}
    checkpoints = 0
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="tw-audit-off-") as off, \
                tempfile.TemporaryDirectory(prefix="tw-audit-on-") as on:
            plain, anchored = write_config(Path(off), agents=1), anchored_config(Path(on))
            without, with_audit, written = await paired_samples(plain, anchored, args.calls)
        samples["without [audit]"] += without
        samples["with [audit]"] += with_audit
        checkpoints += written
    print("| propose_trade | p50 ms | p99 ms | calls |")
    print("|---|---|---|---|")
    for mode, taken in samples.items():
        print(f"| {mode} | {statistics.median(taken):.2f} | {percentile(taken, 99):.2f} | {len(taken)} |")
    print(json.dumps({"checkpoints_written_with_audit": checkpoints}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
