#!/usr/bin/env python3
"""What one proposal's durable COMMIT costs on SQLite, in one process. Not a test: it measures and prints.

    .venv/bin/python bench/commit_cost.py [TREE] [CALLS] [paused]

Runs CALLS `propose_trade` calls (after 30 warm-up calls) through the real in-memory MCP client against
TREE's code (default: this tree; a bench config: one auto-approving agent, SQLite file, synchronous=FULL) and
prints: the call's wall time (mean, p50, p99, max) and process CPU time; each group COMMIT's wall time
(p50/p90/p99) and its thread's CPU time, split by whether the COMMIT appended to the WAL file (the file grew:
its sync also commits the new size) or overwrote blocks already there; the WAL file's size and how often it
started over (its header's checkpoint sequence); what the background checkpointer did. `paused`: no background
checkpoints, and the WAL frames the calls wrote are attributed to the tables and indexes that own the pages
(the `dbstat` table): pages per COMMIT.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if {"-h", "--help"} & set(sys.argv[1:]):
    print(__doc__)
    sys.exit(0)
TREE = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parent.parent)
CALLS = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
PAUSED = len(sys.argv) > 3 and sys.argv[3] == "paused"
sys.path.insert(0, TREE)

PROPOSE = {"symbol": "AAPL", "side": "buy", "qty": 1, "reasoning": "bench"}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def wal_frames(path: str) -> tuple[int, list[tuple[int, int]], tuple[int, ...], int]:
    """(page size, [(page number, db size if a commit frame)] of the WAL's current generation, (checkpoint
    sequence, salts), file size)."""
    data = Path(path).read_bytes() if os.path.exists(path) else b""
    if len(data) < 32:
        return 0, [], (), len(data)
    _magic, _version, page_size, sequence, salt1, salt2 = struct.unpack(">6I", data[:24])
    frames, offset = [], 32
    while offset + 24 + page_size <= len(data):
        page, commit, frame_salt1, frame_salt2 = struct.unpack(">4I", data[offset:offset + 16])
        if (frame_salt1, frame_salt2) != (salt1, salt2):
            break
        frames.append((page, commit))
        offset += 24 + page_size
    return page_size, frames, (sequence, salt1, salt2), len(data)


async def main() -> None:
    from mcp import Client

    import ledger.checkpoint as checkpoint
    import ledger.sqlite_inline as sqlite_inline
    from bench.run import write_config
    from server.app import create_server
    from server.config import load_config
    from server.logging import configure_logging

    configure_logging("error")
    commits: list[tuple[float, float, int]] = []  # (wall s, thread CPU s, bytes the WAL file grew)
    state: dict[str, Any] = {"wal": None, "on": False}
    rounds: list[str] = []

    def timed_commit(connection: sqlite3.Connection) -> float:
        wal = state["wal"]
        before = os.stat(wal).st_size if wal and os.path.exists(wal) else 0
        started, cpu = time.perf_counter(), time.thread_time()
        connection.commit()
        took, cpu = time.perf_counter() - started, time.thread_time() - cpu
        if state["on"]:
            commits.append((took, cpu, (os.stat(wal).st_size if os.path.exists(wal) else 0) - before))
        return took

    sqlite_inline._timed_commit = timed_commit  # type: ignore[attr-defined]
    original_checkpoint = checkpoint.Checkpointer.checkpoint

    def watched_checkpoint(self: Any) -> Any:
        if PAUSED:
            return None
        started = time.perf_counter()
        result = original_checkpoint(self)
        if state["on"]:
            rounds.append(f"PASSIVE {(time.perf_counter() - started) * 1000:.1f} ms {result}")
        return result

    checkpoint.Checkpointer.checkpoint = watched_checkpoint  # type: ignore[method-assign]
    keep_wal = getattr(checkpoint.Checkpointer, "keep_wal", None)
    if keep_wal is not None:  # this branch's restart and growth of the WAL
        def watched_keep_wal(self: Any, restart: bool) -> Any:
            started = time.perf_counter()
            result = keep_wal(self, restart)
            if state["on"]:
                rounds.append(f"{'RESTART+' if restart else ''}grow {(time.perf_counter() - started) * 1000:.1f} ms "
                              f"{self.last} +{result} B")
            return result

        checkpoint.Checkpointer.keep_wal = watched_keep_wal  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory(prefix="tw-commit-cost-") as tmp:
        config = load_config(str(write_config(Path(tmp), agents=1)), env={})
        database = str(Path(tmp) / "bench.db")
        state["wal"] = database + "-wal"
        async with Client(create_server(config, agent_id="bench-0")) as client:
            for _ in range(30):
                await client.call_tool("propose_trade", PROPOSE)
            before = wal_frames(state["wal"])
            state["on"] = True
            calls: list[float] = []
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(CALLS):
                started = time.perf_counter()
                await client.call_tool("propose_trade", PROPOSE)
                calls.append((time.perf_counter() - started) * 1000)
            wall, cpu = (time.perf_counter() - wall) / CALLS * 1000, (time.process_time() - cpu) / CALLS * 1000
            state["on"] = False
            after = wal_frames(state["wal"])
            walls = [c[0] * 1000 for c in commits]
            print(f"tree {TREE}, {CALLS} proposals{' (checkpoints paused)' if PAUSED else ''}: call wall "
                  f"{wall:.3f} ms (p50 {percentile(calls, 50):.3f} / p99 {percentile(calls, 99):.3f} / max "
                  f"{max(calls):.1f}), process CPU {cpu:.3f} ms; {len(commits)} COMMITs")
            thread_cpu = percentile([c[1] * 1000 for c in commits], 50)
            print(f"COMMIT wall p50 {percentile(walls, 50):.3f} / p90 {percentile(walls, 90):.3f} / p99 "
                  f"{percentile(walls, 99):.3f} ms; thread CPU p50 {thread_cpu:.3f} ms")
            for name, chosen in (("appending (the file grew)", [c for c in commits if c[2] > 0]),
                                 ("overwriting", [c for c in commits if c[2] <= 0])):
                if chosen:
                    print(f"  {name}: {len(chosen)}, wall p50 {percentile([c[0] * 1000 for c in chosen], 50):.3f} ms")
            print(f"  WAL file {before[3]} -> {after[3]} bytes; checkpoint sequence {before[2][:1]} -> {after[2][:1]}")
            for line in rounds[:12]:
                print(f"  {line}")
            if PAUSED:
                page_size, old, _, _ = before
                new = after[1][len(old):] if after[2] == before[2] else after[1]
                print(f"  page size {page_size}; frames {len(new)}, commit frames {sum(1 for f in new if f[1])}")
                with sqlite3.connect(database) as connection:
                    owner = {page: f"{name} ({kind})" for name, page, kind in
                             connection.execute("SELECT name, pageno, pagetype FROM dbstat")}
                pages: Counter[str] = Counter()
                dirty: set[int] = set()
                committed = 0
                for page, commit in new:
                    dirty.add(page)
                    if commit:
                        pages.update(owner.get(p, f"page {p}") for p in dirty)
                        dirty, committed = set(), committed + 1
                for name, count in pages.most_common():
                    print(f"    {name:55s} {count / max(committed, 1):.2f} pages per COMMIT")


asyncio.run(main())
