"""Audit anchoring against an attacker who can write the database and recompute every hash.

Each attack is done the way an attacker would: with sqlite3 on the real database file, rewriting the records and
recomputing the chain with the published hash formula, so the chain alone still verifies. The real command line
(in its own process) must then find it with [audit] anchoring, and the same database passes without it (which is
what each attack exploits). A server must refuse to start on a restored older copy.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies.audit import GENESIS_HASH, record_hash
from server.config import load_config
from tests.cli_probe import ROOT, run_cli
from tests.conftest import call, connect

Rows = list[dict[str, object]]


def write_configs(tmp_path: Path, approval: str = "auto") -> tuple[Path, Path]:
    """The deployment's config (with [audit]) and the same database without anchoring."""
    server = f"""
[server]
database_url = "sqlite+aiosqlite:///{tmp_path / 'tradewarden.db'}"
enforce_market_hours = false

[[agents]]
id = "agent-1"
allowed_symbols = ["*"]
approval = "{approval}"
auto_approve_max_notional = 5000
"""
    anchored = tmp_path / "tradewarden.toml"
    anchored.write_text(server + """
[audit]
signing_key_file = "keys/audit.ed25519"
checkpoint_dir = "checkpoints"
checkpoint_interval_seconds = 0.05
""")
    plain = tmp_path / "unanchored.toml"
    plain.write_text(server)
    return anchored, plain


async def trade(config_path: Path, count: int = 3) -> None:
    """An agent's session: proposals executed through the real MCP client; the server signs checkpoints."""
    async with connect(load_config(str(config_path), env={})) as client:
        for _ in range(count):
            proposal = await call(client, "propose_trade", symbol="SPY", side="buy", qty=1, reasoning="test")
            await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
            # The chain spans several checkpoints (the signer's interval is 0.05 s), however fast the calls are:
            # the attacks below rewrite records some checkpoint before the last one covers.
            await asyncio.sleep(0.15)


@pytest.fixture
async def deployment(tmp_path: Path) -> tuple[Path, Path]:
    anchored, plain = write_configs(tmp_path)
    run_cli(anchored, "audit", "keygen", check=True)
    await trade(anchored)
    assert (tmp_path / "checkpoints" / "checkpoints.jsonl").read_text().strip()
    return anchored, plain


# --- the attacker's tools -------------------------------------------------------------------------------------

def hashed_time(stored: str) -> str:
    return datetime.fromisoformat(stored).replace(tzinfo=UTC).isoformat()


def rewrite_chain(db_path: Path, change: Callable[[Rows], Rows]) -> None:
    """Read every record, change the list, renumber it 1..n, recompute every hash and the head, write it back."""
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM audit_events ORDER BY seq")]
        rows = change(rows)
        prev = GENESIS_HASH
        for seq, row in enumerate(rows, 1):
            row["seq"], row["prev_hash"] = seq, prev
            row["hash"] = prev = record_hash(
                prev, seq=seq, event_id=str(row["event_id"]), ts=datetime.fromisoformat(hashed_time(str(row["ts"]))),
                actor=str(row["actor"]), agent_id=row["agent_id"], kind=str(row["kind"]),  # type: ignore[arg-type]
                tool=row["tool"], payload=str(row["payload"]))  # type: ignore[arg-type]
        db.execute("DELETE FROM audit_events")
        if rows:
            columns = list(rows[0])
            db.executemany(f"INSERT INTO audit_events ({', '.join(columns)}) VALUES "
                           f"({', '.join('?' * len(columns))})", [tuple(r[c] for c in columns) for r in rows])
        db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (len(rows), prev))


def first_intent(rows: Rows) -> dict[str, object]:
    return next(r for r in rows if r["kind"] == "tool.intent")


def verify(config: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(config, "audit", "verify")


def assert_caught(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    for word in words:
        assert word in result.stdout, result.stdout


def assert_unnoticed_without_anchoring(plain: Path) -> None:
    result = verify(plain)
    assert result.returncode == 0 and "anchoring is off" in result.stdout, result.stdout + result.stderr


# --- the attacks --------------------------------------------------------------------------------------------------

async def test_untouched_chain_verifies_against_its_checkpoints(deployment: tuple[Path, Path]) -> None:
    anchored, _ = deployment
    result = verify(anchored)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "anchored:" in result.stdout and "signed checkpoints match" in result.stdout


async def test_edit_with_recomputed_hashes_is_caught(deployment: tuple[Path, Path], tmp_path: Path) -> None:
    anchored, plain = deployment

    def edit(rows: Rows) -> Rows:
        first_intent(rows)["payload"] = json.dumps({"args": {"symbol": "SPY", "qty": "1000"}})
        return rows

    rewrite_chain(tmp_path / "tradewarden.db", edit)
    assert_unnoticed_without_anchoring(plain)
    assert_caught(verify(anchored), "does not match the checkpoint")


async def test_delete_and_renumber_is_caught(deployment: tuple[Path, Path], tmp_path: Path) -> None:
    anchored, plain = deployment
    rewrite_chain(tmp_path / "tradewarden.db", lambda rows: [r for r in rows if r is not first_intent(rows)])
    assert_unnoticed_without_anchoring(plain)
    assert_caught(verify(anchored), "does not match the checkpoint")


async def test_reordering_with_recomputed_hashes_is_caught(deployment: tuple[Path, Path], tmp_path: Path) -> None:
    anchored, plain = deployment

    def swap(rows: Rows) -> Rows:
        rows[1], rows[2] = rows[2], rows[1]
        return rows

    rewrite_chain(tmp_path / "tradewarden.db", swap)
    assert_unnoticed_without_anchoring(plain)
    assert_caught(verify(anchored), "does not match the checkpoint")


async def test_truncate_and_move_the_head_is_caught(deployment: tuple[Path, Path], tmp_path: Path) -> None:
    anchored, plain = deployment
    rewrite_chain(tmp_path / "tradewarden.db", lambda rows: rows[:-2])  # the last call's outcome records
    assert_unnoticed_without_anchoring(plain)
    assert_caught(verify(anchored), "records were removed")


async def test_wiping_the_log_is_caught(deployment: tuple[Path, Path], tmp_path: Path) -> None:
    anchored, plain = deployment
    rewrite_chain(tmp_path / "tradewarden.db", lambda rows: [])
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:  # and the rows the records bound
        for table in ("agent_trades", "approvals", "trade_proposals"):
            db.execute(f"DELETE FROM {table}")
    assert_unnoticed_without_anchoring(plain)
    assert_caught(verify(anchored), "the chain ends at record 0")


async def test_forged_approval_record_inserted_in_the_chain_is_caught(deployment: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    anchored, plain = deployment

    def forge(rows: Rows) -> Rows:
        forged = {**rows[2], "event_id": "00000000-0000-4000-8000-000000000001", "actor": "operator:cli",
                  "kind": "approval.approved", "tool": None,
                  "payload": json.dumps({"proposal_id": "x", "via": "operator"})}
        return [*rows[:3], forged, *rows[3:]]

    rewrite_chain(tmp_path / "tradewarden.db", forge)
    assert_unnoticed_without_anchoring(plain)
    assert_caught(verify(anchored), "does not match the checkpoint")


async def test_restored_older_copy_is_caught_and_the_server_refuses_to_start(tmp_path: Path) -> None:
    anchored, plain = write_configs(tmp_path)
    run_cli(anchored, "audit", "keygen", check=True)
    await trade(anchored, count=1)
    shutil.copy(tmp_path / "tradewarden.db", tmp_path / "backup.db")
    await trade(anchored, count=2)
    (tmp_path / "tradewarden.db").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"tradewarden.db{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.db", tmp_path / "tradewarden.db")

    assert_unnoticed_without_anchoring(plain)
    assert_caught(verify(anchored), "records were removed")
    served = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--agent", "agent-1", "--config",
                             str(anchored)], cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=60)
    assert served.returncode == 1 and served.stdout == ""
    assert served.stderr.startswith("tradewarden: AUDIT_BEHIND_CHECKPOINT")
    assert len(served.stderr.strip().splitlines()) == 1


async def test_restored_copy_that_went_on_is_caught(tmp_path: Path) -> None:
    """An older copy restored and used again until it is as long as the real chain was: same length,
    different records."""
    anchored, plain = write_configs(tmp_path)
    run_cli(anchored, "audit", "keygen", check=True)
    await trade(anchored, count=1)
    shutil.copy(tmp_path / "tradewarden.db", tmp_path / "backup.db")
    await trade(anchored, count=2)
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:
        real_head = db.execute("SELECT seq FROM audit_head").fetchone()[0]
    shutil.copy(tmp_path / "backup.db", tmp_path / "tradewarden.db")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"tradewarden.db{suffix}").unlink(missing_ok=True)
    # the restored copy is written to by someone who ignores the checkpoints, until it is as long again
    unanchored_trades = 0
    while True:
        with sqlite3.connect(tmp_path / "tradewarden.db") as db:
            if db.execute("SELECT seq FROM audit_head").fetchone()[0] >= real_head:
                break
        await trade(plain, count=1)
        unanchored_trades += 1
    assert unanchored_trades >= 1
    assert_caught(verify(anchored), "does not match the checkpoint")


async def test_forged_checkpoint_line_is_reported(deployment: tuple[Path, Path], tmp_path: Path) -> None:
    anchored, _ = deployment
    checkpoints = tmp_path / "checkpoints" / "checkpoints.jsonl"
    last = json.loads(checkpoints.read_text().splitlines()[-1])
    with checkpoints.open("a") as out:
        out.write(json.dumps({**last, "seq": last["seq"] + 100}) + "\n")
    result = verify(anchored)
    assert_caught(result, "signature invalid")


async def test_export_verifies_elsewhere_with_the_public_key_only(deployment: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    anchored, _ = deployment
    export = tmp_path / "export.jsonl"
    assert run_cli(anchored, "audit", "export", "--output", str(export)).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(export, elsewhere / "export.jsonl")
    shutil.copy(tmp_path / "keys" / "audit.ed25519.pub", elsewhere / "audit.pub")
    args = [sys.executable, "-m", "server.cli", "audit", "verify", "--export", "export.jsonl",
            "--public-key", "audit.pub"]
    ok = subprocess.run(args, cwd=elsewhere, capture_output=True, text=True, timeout=60,
                        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert ok.returncode == 0 and "anchored:" in ok.stdout, ok.stdout + ok.stderr

    # the export rewritten by someone who recomputes every hash (the last record dropped)
    lines = (elsewhere / "export.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if "seq" in json.loads(line)]
    kept = records[:-3]
    rewritten = [line for line in lines if "checkpoint" in json.loads(line)]
    rewritten += [json.dumps(r) for r in kept]
    rewritten.append(json.dumps({"head": {"seq": kept[-1]["seq"], "hash": kept[-1]["hash"]}}))
    (elsewhere / "export.jsonl").write_text("\n".join(rewritten) + "\n")
    broken = subprocess.run(args, cwd=elsewhere, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert broken.returncode == 1 and "records were removed" in broken.stdout, broken.stdout + broken.stderr


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path: Path) -> None:
    anchored, _ = write_configs(tmp_path)
    made = run_cli(anchored, "audit", "keygen", check=True)
    key = tmp_path / "keys" / "audit.ed25519"
    assert key.stat().st_mode & 0o777 == 0o600
    assert made.stdout.strip().splitlines()[-1] == (tmp_path / "keys" / "audit.ed25519.pub").read_text().strip()
    assert "PRIVATE" not in made.stdout + made.stderr
    before = key.read_bytes()
    again = run_cli(anchored, "audit", "keygen")
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    assert key.read_bytes() == before


def test_verify_without_its_key_is_a_configuration_error(tmp_path: Path) -> None:
    anchored, _ = write_configs(tmp_path)
    result = verify(anchored)
    assert result.returncode == 2 and "audit keygen" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_verify_without_audit_section_says_anchoring_is_off(tmp_path: Path) -> None:
    _, plain = write_configs(tmp_path)
    run_cli(plain, "db", "upgrade", check=True)
    result = verify(plain)
    assert result.returncode == 0 and "anchoring is off" in result.stdout


def test_verify_of_a_missing_database_fails_and_creates_nothing(tmp_path: Path) -> None:
    anchored, _ = write_configs(tmp_path)
    run_cli(anchored, "audit", "keygen", check=True)
    result = verify(anchored)
    assert result.returncode == 1 and "no database at" in result.stderr
    assert not (tmp_path / "tradewarden.db").exists()


async def test_a_live_server_without_anchoring_warns_at_start(db_url: str) -> None:
    from structlog.testing import capture_logs

    from server.runtime import open_runtime
    from tests.conftest import make_config

    with capture_logs() as logs:
        async with open_runtime(make_config(db_url, trading_mode="live")):
            pass
    assert [e for e in logs if e["event"] == "audit_not_anchored"]
    with capture_logs() as paper_logs:
        async with open_runtime(make_config(db_url)):
            pass
    assert not [e for e in paper_logs if e["event"] == "audit_not_anchored"]


async def test_an_export_of_an_edited_record_is_still_written_and_fails_verification(
        deployment: tuple[Path, Path], tmp_path: Path) -> None:
    anchored, _ = deployment
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:
        db.execute("UPDATE audit_events SET payload = 'not json at all' WHERE seq = 2")
    export = tmp_path / "export.jsonl"
    assert run_cli(anchored, "audit", "export", "-o", str(export)).returncode == 0
    result = subprocess.run([sys.executable, "-m", "server.cli", "audit", "verify", "--export", str(export),
                             "--public-key", str(tmp_path / "keys" / "audit.ed25519.pub")], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "record 2: content changed" in result.stdout, result.stdout + result.stderr
