#!/usr/bin/env python3
"""What a unit of work costs in the ledger itself, without MCP or the gate. Not a test: it measures and prints.

    .venv/bin/python bench/ledger_unit.py [--tree PATH] [--reads 12] [--writes 1] [--units 600] [--postgres]
                                          [--folder DIR]

One unit = `ledger.db.transaction()` with `--reads` hot reads (the gate's trading-state read) and `--writes`
hot updates through `ledger.db.execute`, as a decision's unit does. Prints, per unit: wall p50 / p99 of lone
units one after the other (each its own group and COMMIT on SQLite: the sync is in it), the event loop
thread's CPU per unit (what the other agents of the process wait for; far less noisy than wall time on a
shared machine), and the wall time per unit with 8 agents at once. SQLite: a file in --folder (default: the
temporary folder; /dev/shm takes the disk's sync out). --postgres: a throw-away PostgreSQL server
(tests/postgres.py; durability off there, so the figures are the client's work and the round trips).
--tree: measure another checkout's ledger (e.g. main's) with this interpreter, to compare interleaved runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def measure(url: str, reads: int, writes: int, units: int) -> str:
    from sqlalchemy import bindparam, insert, update

    from ledger import db
    from ledger.models import KeyValue
    from policies.gate import _STATE_ROWS

    engine = db.create_engine(url)
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    write = update(KeyValue).where(KeyValue.key == "k").values(updated_at=bindparam("at"))
    async with db.transaction(sessions) as session:
        await session.execute(insert(KeyValue).values(key="k", value={}, updated_at=datetime.now(UTC)))

    async def unit() -> None:
        async with db.transaction(sessions) as session:
            for _ in range(reads):
                (await db.execute(session, _STATE_ROWS, {"agent_id": "a"})).all()
            for _ in range(writes):
                await db.execute(session, write, {"at": datetime.now(UTC)})

    try:
        for _ in range(50):
            await unit()
        samples: list[float] = []
        cpu_started = time.thread_time()
        for _ in range(units):
            started = time.perf_counter()
            await unit()
            samples.append(time.perf_counter() - started)
        cpu = (time.thread_time() - cpu_started) / units
        samples.sort()

        async def agent() -> None:
            for _ in range(units // 8):
                await unit()

        started = time.perf_counter()
        await asyncio.gather(*(agent() for _ in range(8)))
        concurrent = (time.perf_counter() - started) / (units // 8 * 8)
    finally:
        await engine.dispose()
    return (f"lone: p50 {statistics.median(samples) * 1e6:.0f} us, p99 {samples[int(len(samples) * 0.99)] * 1e6:.0f} "
            f"us, loop CPU {cpu * 1e6:.0f} us; 8 agents: {concurrent * 1e6:.0f} us a unit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(ROOT), help="the checkout whose ledger is measured")
    parser.add_argument("--reads", type=int, default=12)
    parser.add_argument("--writes", type=int, default=1)
    parser.add_argument("--units", type=int, default=600)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--folder", default=None, help="where the SQLite file goes")
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    label = f"{args.tree} ({args.reads} reads + {args.writes} writes)"
    if args.postgres:
        sys.path.insert(1, str(ROOT))  # tests/postgres.py of this checkout
        from tests.postgres import PostgresServer

        server = PostgresServer.start()
        try:
            figures = asyncio.run(measure(server.create_database(), args.reads, args.writes, args.units))
            print(f"PostgreSQL {label}: {figures}")
        finally:
            server.stop()
        return
    with tempfile.TemporaryDirectory(prefix="tw-unit-", dir=args.folder) as folder:
        url = f"sqlite+aiosqlite:///{folder}/ledger.db"
        print(f"SQLite {label}: {asyncio.run(measure(url, args.reads, args.writes, args.units))}")


if __name__ == "__main__":
    main()
