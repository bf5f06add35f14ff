#!/usr/bin/env python3
"""`tradewarden audit verify` on a long audit log: wall time and peak memory. Not a test: it measures and prints.

    .venv/bin/python bench/audit_verify.py [--records 1000000] [--checkpoint-every 1000]

Builds a SQLite database with the real schema, fills audit_events directly with N correctly chained records
(payloads shaped like a propose_trade call's) and signed checkpoints every K records, then runs the real command
line (`python -m server.cli audit verify`) in a child process and reads its peak RSS from getrusage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build(workdir: Path, records: int, checkpoint_every: int) -> Path:
    from ledger import db
    from policies import anchoring
    from policies.audit import GENESIS_HASH, canonical_json, record_hash_text

    database = workdir / "audit.db"
    config = workdir / "tradewarden.toml"
    config.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{database}"
log_level = "warning"

[audit]
signing_key_file = "keys/audit.ed25519"
checkpoint_dir = "checkpoints"
""")

    async def migrate() -> None:
        engine = db.create_engine(f"sqlite+aiosqlite:///{database}")
        await db.upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    key_file = workdir / "keys" / "audit.ed25519"
    anchoring.generate_key(key_file)
    key = anchoring.load_signing_key(key_file)
    t0 = datetime(2026, 11, 30, tzinfo=UTC)
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    prev = GENESIS_HASH
    batch: list[tuple[object, ...]] = []
    checkpoints = []
    started = time.perf_counter()
    for seq in range(1, records + 1):
        ts = t0 + timedelta(microseconds=1000 * seq + 1)
        kind = "tool.intent" if seq % 2 else "tool.outcome"
        payload = canonical_json({"args": {"symbol": "AAPL", "side": "buy", "qty": str(1 + seq % 7),
                                           "reasoning": "momentum is up on volume", "strategy": "bench"}}
                                 if kind == "tool.intent" else
                                 {"proposal_id": f"{seq:036d}", "status": "approved", "violations": [],
                                  "estimated_notional": "231.50", "trading_mode": "paper"})
        event_id = f"{seq:032x}"
        digest = record_hash_text(prev, seq=seq, event_id=event_id, ts=ts.isoformat(), actor="agent:bench-0",
                                  agent_id="bench-0", kind=kind, tool="propose_trade", payload=payload)
        batch.append((seq, event_id, ts.strftime("%Y-%m-%d %H:%M:%S.%f"), "agent:bench-0", "bench-0", kind,
                      "propose_trade", payload, prev, digest))
        prev = digest
        if seq % checkpoint_every == 0:
            checkpoints.append(anchoring.sign_checkpoint(key, seq, digest, ts).line())
        if len(batch) >= 50_000:
            connection.executemany("INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?,?)", batch)
            batch.clear()
    if batch:
        connection.executemany("INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?,?)", batch)
    connection.execute("INSERT OR REPLACE INTO audit_head (id, seq, hash) VALUES (1, ?, ?)", (records, prev))
    connection.commit()
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    (workdir / "checkpoints").mkdir(mode=0o700)
    (workdir / "checkpoints" / anchoring.CHECKPOINT_FILE).write_text("\n".join(checkpoints) + "\n")
    print(f"built {records:,} records, {len(checkpoints):,} checkpoints in {time.perf_counter() - started:.1f} s "
          f"({database.stat().st_size / 1e6:.0f} MB)", file=sys.stderr)
    return config


def measure(config: Path) -> tuple[dict[str, float], subprocess.CompletedProcess[str]]:
    """Wall, user and system seconds and peak RSS (MB) of `audit verify` in a child process, from
    /usr/bin/time (getrusage of children would count this process's memory at fork time)."""
    result = subprocess.run(["/usr/bin/time", "-f", "TIME %e %U %S %M", sys.executable, "-m", "server.cli", "audit",
                             "verify", "--config", str(config)], cwd=ROOT, capture_output=True, text=True)
    line = next(line for line in result.stderr.splitlines() if line.startswith("TIME "))
    wall, user, system, peak_kb = (float(x) for x in line.split()[1:])
    return {"verify_wall_seconds": wall, "verify_cpu_seconds": round(user + system, 2),
            "peak_rss_mb": round(peak_kb / 1024, 1)}, result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tw-verify-") as tmp:
        config = build(Path(tmp), args.records, args.checkpoint_every)
        figures, result = measure(config)
    if result.returncode != 0:
        print(result.stdout[-2000:], result.stderr[-2000:], file=sys.stderr)
        return 1
    print(json.dumps({"records": args.records, "checkpoints": args.records // args.checkpoint_every, **figures}))
    print(result.stdout.strip(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
