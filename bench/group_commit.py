#!/usr/bin/env python3
"""Audited units of work per second on a SQLite file, 8 concurrent writers in one process: the ledger alone,
without the MCP stack around it (bench/issue12.py has the same through the tools). Not a test.

    .venv/bin/python bench/group_commit.py [--root TREE] [--seconds 3] [--no-group-commit]

Each unit appends one audit record (policies/audit.py: the hash chain) through `ledger.db.transaction`.
`--root`: import the code of another checkout (e.g. an export of main) to compare trees in the same minutes.
`--no-group-commit`: units commit one by one (synchronous=FULL still): what grouping buys.
Prints one line: units/s, p50/p99 per unit, units per COMMIT, and the raw driver's durable commits/s floor.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
parser.add_argument("--seconds", type=float, default=3.0)
parser.add_argument("--writers", type=int, default=8)
parser.add_argument("--no-group-commit", action="store_true")
args = parser.parse_args()
sys.path.insert(0, args.root)

from ledger import db  # noqa: E402
from policies import audit  # noqa: E402

if args.no_group_commit:
    from ledger import group_commit

    group_commit.writer_of = lambda engine: None  # transaction() falls back to one COMMIT per unit


def durable_floor(folder: Path, seconds: float = 1.0) -> float:
    connection = sqlite3.connect(folder / "floor.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT)")
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t (payload) VALUES (?)", ("x" * 200,))
        connection.execute("COMMIT")
        done += 1
    connection.close()
    return done / (time.perf_counter() - start)


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tw-group-commit-") as tmp:
        engine = db.create_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        ts = datetime.now(UTC)
        latencies: list[float] = []
        deadline = 0.0

        async def writer(index: int) -> None:
            call = 0
            while time.perf_counter() < deadline:
                call += 1
                began = time.perf_counter()
                async with db.transaction(sessions) as session:
                    await audit.append(session, ts=ts, actor=f"agent:w{index}", kind="tool.intent",
                                       tool="propose_trade", agent_id=f"w{index}", payload={"call": call})
                ended = time.perf_counter()
                if ended <= deadline:
                    latencies.append((ended - began) * 1000)

        deadline = time.perf_counter() + 0.5  # warm
        await asyncio.gather(*(writer(i) for i in range(args.writers)))
        latencies.clear()
        begun, commits = db.UnitCounter.begun, getattr(db.UnitCounter, "commits", None)
        start = time.perf_counter()
        deadline = start + args.seconds
        await asyncio.gather(*(writer(i) for i in range(args.writers)))
        rate = len(latencies) / args.seconds
        units = db.UnitCounter.begun - begun
        after = getattr(db.UnitCounter, "commits", None)
        grouping = (f"{units / (after - commits):.1f} units per COMMIT" if commits is not None and after is not None
                    and after > commits else "one COMMIT per unit")
        async with sessions() as session:
            assert (await audit.verify(session)).ok
        await engine.dispose()
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        floor = durable_floor(Path(tmp))
    print(f"{rate:,.0f} units/s, p50 {statistics.median(latencies):.2f} ms / p99 {p99:.2f} ms a unit, "  # stdout-ok
          f"{grouping}; "
          f"raw driver durable floor {floor:,.0f} commits/s")


asyncio.run(main())
