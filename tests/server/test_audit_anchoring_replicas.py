"""Two servers on one PostgreSQL database: one chain, one sequence, and every checkpoint either signs verifies.

Both servers run their own runtime (engine, gate, checkpoint signer) against the same database and the same
checkpoint folder, and agents trade through both at once; the real command line then verifies the chain against
the interleaved checkpoints, and catches a rewrite done with recomputed hashes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from ledger import db
from policies.audit import GENESIS_HASH, record_hash
from server.config import load_config
from tests.cli_probe import run_cli
from tests.conftest import call, connect

pytestmark = pytest.mark.postgres


def write_config(tmp_path: Path, pg_url: str) -> Path:
    path = tmp_path / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "{pg_url}"
enforce_market_hours = false

[audit]
signing_key_file = "keys/audit.ed25519"
checkpoint_dir = "checkpoints"
checkpoint_interval_seconds = 0.02

[[agents]]
id = "agent-1"
allowed_symbols = ["*"]
approval = "auto"
auto_approve_max_notional = 5000
duplicate_window_seconds = 0
max_orders_per_window = 1000
""")
    return path


async def replica_session(config_path: Path, trades: int) -> None:
    async with connect(load_config(str(config_path), env={})) as client:
        for _ in range(trades):
            proposal = await call(client, "propose_trade", symbol="SPY", side="buy", qty=1, reasoning="replica")
            await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
            await asyncio.sleep(0.03)  # let both signers sign heads the other one wrote


async def rewrite_with_recomputed_hashes(pg_url: str) -> None:
    """The attacker edits record 3 and recomputes every hash after it, and the head."""
    engine = db.create_engine(pg_url)
    try:
        async with engine.begin() as connection:
            rows = (await connection.execute(text("SELECT * FROM audit_events ORDER BY seq"))).mappings().all()
            prev = GENESIS_HASH
            for row in rows:
                payload = '{"args":{"qty":"1000"}}' if row["seq"] == 3 else row["payload"]
                digest = record_hash(prev, seq=row["seq"], event_id=row["event_id"], ts=row["ts"],
                                     actor=row["actor"], agent_id=row["agent_id"], kind=row["kind"], tool=row["tool"],
                                     payload=payload)
                await connection.execute(text("UPDATE audit_events SET payload = :p, prev_hash = :prev, hash = :h "
                                              "WHERE seq = :s"), {"p": payload, "prev": prev, "h": digest,
                                                                  "s": row["seq"]})
                prev = digest
            await connection.execute(text("UPDATE audit_head SET hash = :h WHERE id = 1"), {"h": prev})
    finally:
        await engine.dispose()


async def test_two_servers_sign_one_chain_and_every_checkpoint_verifies(tmp_path: Path, pg_url: str) -> None:
    config = write_config(tmp_path, pg_url)
    run_cli(config, "audit", "keygen", check=True)
    await asyncio.gather(replica_session(config, 4), replica_session(config, 4))

    lines = (tmp_path / "checkpoints" / "checkpoints.jsonl").read_text().splitlines()
    assert len(lines) >= 4 and all(json.loads(line)["v"] == 1 for line in lines)
    verified = run_cli(config, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "signed checkpoints match" in verified.stdout

    await rewrite_with_recomputed_hashes(pg_url)
    broken = run_cli(config, "audit", "verify")
    assert broken.returncode == 1 and "does not match the checkpoint" in broken.stdout, broken.stdout
