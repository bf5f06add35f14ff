#!/usr/bin/env python3
"""What anchoring costs a call: `propose_trade` p50/p99 with and without [audit]. Not a test: it measures and
prints.

    .venv/bin/python bench/audit_cost.py [--calls 300] [--rounds 4]

The same server (simulated broker, SQLite, in-memory MCP client as bench/run.py) is run alternately without and
with [audit] (checkpoints every second by the background signer), each round on a fresh database, so machine
noise spreads over both. Rows are bound to their audit records in both (that is not optional).
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


async def propose_samples(config_path: Path, calls: int) -> tuple[list[float], int]:
    """Latencies (ms) of `calls` proposals after a warm-up, and the checkpoints written meanwhile."""
    from mcp import Client

    from server.app import create_server
    from server.config import load_config

    config = load_config(str(config_path), env={})
    samples: list[float] = []
    async with Client(create_server(config, agent_id="bench-0")) as client:
        for _ in range(20):
            await client.call_tool("propose_trade", {"symbol": "SPY", "side": "buy", "qty": 1, "reasoning": "w"})
        for i in range(calls):
            start = time.perf_counter()
            result = await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1 + i % 7,
                                                              "reasoning": "bench", "strategy": "bench"})
            samples.append((time.perf_counter() - start) * 1000)
            assert result.structured_content and result.structured_content["status"] == "approved", result
    checkpoints = 0
    if config.audit is not None:
        written = config.audit.checkpoint_dir / "checkpoints.jsonl"
        checkpoints = len(written.read_text().splitlines()) if written.exists() else 0
    return samples, checkpoints


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
        for mode in samples:
            with tempfile.TemporaryDirectory(prefix="tw-audit-cost-") as tmp:
                workdir = Path(tmp)
                config = anchored_config(workdir) if mode == "with [audit]" else write_config(workdir, agents=1)
                taken, written = await propose_samples(config, args.calls)
                samples[mode] += taken
                checkpoints += written
    print("| propose_trade | p50 ms | p99 ms | calls |")
    print("|---|---|---|---|")
    for mode, taken in samples.items():
        print(f"| {mode} | {statistics.median(taken):.2f} | {percentile(taken, 99):.2f} | {len(taken)} |")
    print(json.dumps({"checkpoints_written_with_audit": checkpoints}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
