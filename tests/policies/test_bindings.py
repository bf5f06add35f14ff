"""Proposals, approvals and trades are bound to the audit records that created them: a row written behind the
gate's back does not execute (AUDIT_MISMATCH) and `audit verify` reports it.

The attacker can write the database: for an operator-mode proposal waiting for a person, they insert an
approvals row and flip the proposal to approved, with sqlite3 on the real file, then the agent executes it.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from server.config import load_config
from tests.cli_probe import run_cli
from tests.conftest import call, connect
from tests.ledger_probe import broker_orders


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{tmp_path / 'tradewarden.db'}"
enforce_market_hours = false

[[agents]]
id = "agent-1"
allowed_symbols = ["*"]
approval = "operator"
""")
    return path


async def propose(config_path: Path) -> str:
    async with connect(load_config(str(config_path), env={})) as client:
        proposal = await call(client, "propose_trade", symbol="SPY", side="buy", qty=2, reasoning="test")
    assert proposal["status"] == "pending_approval"
    return str(proposal["proposal_id"])


async def execute(config_path: Path, proposal_id: str) -> dict[str, object]:
    async with connect(load_config(str(config_path), env={})) as client:
        return await call(client, "execute_trade", proposal_id=proposal_id)


def forge_approval(db_path: Path, proposal_id: str, audit_event_id: str | None = None) -> None:
    with sqlite3.connect(db_path) as db:
        order_hash = db.execute("SELECT order_hash FROM trade_proposals WHERE id = ?", (proposal_id,)).fetchone()[0]
        db.execute("INSERT INTO approvals (proposal_id, decision, decided_by, via, note, order_hash, created_at, "
                   "audit_event_id) VALUES (?, 'approved', 'operator:cli', 'operator', NULL, ?, ?, ?)",
                   (proposal_id, order_hash, datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), audit_event_id))
        db.execute("UPDATE trade_proposals SET status = 'approved', decided_by = 'operator:cli', "
                   "decided_via = 'operator' WHERE id = ?", (proposal_id,))


async def test_forged_approvals_row_does_not_execute_and_verify_reports_it(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proposal_id = await propose(config)
    forge_approval(tmp_path / "tradewarden.db", proposal_id)

    result = await execute(config, proposal_id)
    assert result["status"] == "rejected"
    assert [v["code"] for v in result["violations"]] == ["AUDIT_MISMATCH"]  # type: ignore[union-attr]
    assert await broker_orders(load_config(str(config), env={}).server.database_url) == 0

    verified = run_cli(config, "audit", "verify")
    assert verified.returncode == 1
    assert f"approvals row 1 (proposal {proposal_id}): no audit record binds it" in verified.stdout


async def test_forged_row_naming_a_real_record_does_not_execute(tmp_path: Path) -> None:
    """The attacker points the forged approval at a genuine record of the same proposal: that record binds
    the proposal, not an approval."""
    config = write_config(tmp_path)
    proposal_id = await propose(config)
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:
        real = db.execute("SELECT audit_event_id FROM trade_proposals WHERE id = ?", (proposal_id,)).fetchone()[0]
    forge_approval(tmp_path / "tradewarden.db", proposal_id, audit_event_id=real)

    result = await execute(config, proposal_id)
    assert [v["code"] for v in result["violations"]] == ["AUDIT_MISMATCH"]  # type: ignore[union-attr]
    assert run_cli(config, "audit", "verify").returncode == 1


async def test_edited_proposal_after_a_real_approval_does_not_execute(tmp_path: Path) -> None:
    """A genuine approval, then the proposal's approval mode and expiry edited behind the gate's back."""
    config = write_config(tmp_path)
    proposal_id = await propose(config)
    assert run_cli(config, "approvals", "approve", proposal_id).returncode == 0
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:
        db.execute("UPDATE trade_proposals SET approval_mode = 'auto', expires_at = '2999-01-01 00:00:00.000000' "
                   "WHERE id = ?", (proposal_id,))

    result = await execute(config, proposal_id)
    assert [v["code"] for v in result["violations"]] == ["AUDIT_MISMATCH"]  # type: ignore[union-attr]
    verified = run_cli(config, "audit", "verify")
    assert verified.returncode == 1 and "differs from its audit record" in verified.stdout


async def test_genuine_operator_approval_executes_and_verifies(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proposal_id = await propose(config)
    assert run_cli(config, "approvals", "approve", proposal_id).returncode == 0
    result = await execute(config, proposal_id)
    assert result["status"] == "filled", result
    verified = run_cli(config, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_forged_trade_row_is_reported(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proposal_id = await propose(config)
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        db.execute("INSERT INTO agent_trades (id, agent_id, proposal_id, client_order_id, symbol, side, quantity, "
                   "order_type, time_in_force, reserved_notional, filled_qty, reasoning, status, created_at, "
                   "updated_at) VALUES (?, 'agent-1', ?, ?, 'SPY', 'buy', '2', 'market', 'day', '0', '2', 'x', "
                   "'filled', ?, ?)", (proposal_id, proposal_id, proposal_id, now, now))
    verified = run_cli(config, "audit", "verify")
    assert verified.returncode == 1
    assert f"agent_trades row {proposal_id}" in verified.stdout and "no audit record binds it" in verified.stdout


async def test_rows_from_before_the_binding_are_legacy_never_execute_and_verify_counts_them(
        tmp_path: Path) -> None:
    """A database at 0001 with a proposal approved by hand (as the old code could leave it), then upgraded."""
    from alembic import command
    from sqlalchemy import select

    from ledger import db
    from ledger.models import TradeProposal
    from policies import bindings

    config = write_config(tmp_path)
    url = load_config(str(config), env={}).server.database_url
    engine = db.create_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.upgrade(db._alembic_config(sync), "0001"))
    await engine.dispose()
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(tmp_path / "tradewarden.db") as conn:
        conn.execute("INSERT INTO trade_proposals (id, agent_id, symbol, side, qty, order_type, time_in_force, "
                     "extended_hours, reasoning, status, order_hash, violations, approval_mode, trading_mode, "
                     "created_at, expires_at, updated_at) VALUES ('00000000-0000-4000-8000-000000000001', 'agent-1', "
                     "'SPY', 'buy', '1', 'market', 'day', 0, 'x', 'approved', 'h', '[]', 'operator', 'paper', ?, ?, ?)",
                     (now, "2999-01-01 00:00:00.000000", now))
        conn.execute("INSERT INTO approvals (proposal_id, decision, decided_by, via, order_hash, created_at) VALUES "
                     "('00000000-0000-4000-8000-000000000001', 'approved', 'operator:cli', 'operator', 'h', ?)", (now,))
    engine = db.create_engine(url)
    await db.upgrade(engine)
    async with db.session_factory(engine)() as session:
        proposal = (await session.execute(select(TradeProposal))).scalar_one()
        assert proposal.audit_event_id == bindings.LEGACY
        assert await bindings.execution_problem(session, proposal) == (
            "the proposal: it was written before rows were bound to audit records")
        assert await bindings.unbound_rows(session, 20) == ([], 2)
    await engine.dispose()
    verified = run_cli(config, "audit", "verify")
    assert verified.returncode == 0 and "2 rows from before rows were bound" in verified.stdout


async def test_a_shrunk_approval_rebinds_the_proposal_executes_and_verifies(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proposal_id = await propose(config)
    assert run_cli(config, "approvals", "approve", proposal_id, "--qty", "1").returncode == 0
    result = await execute(config, proposal_id)
    assert result["status"] == "filled" and result["filled_qty"] == "1", result
    verified = run_cli(config, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_a_withdrawn_auto_approval_flipped_back_by_hand_does_not_execute(tmp_path: Path) -> None:
    """An auto-approval withdrawn at execution goes back to pending (decided_via cleared); the attacker flips
    the status back to approved: the latest recorded approval is the auto one, which no longer holds."""
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('approval = "operator"', 'approval = "auto"\n'
                                                 'auto_approve_max_notional = 5000'))
    async with connect(load_config(str(config), env={})) as client:
        proposal = await call(client, "propose_trade", symbol="SPY", side="buy", qty=2, reasoning="test")
    assert proposal["status"] == "approved"
    proposal_id = str(proposal["proposal_id"])
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:  # what the withdrawal leaves
        db.execute("UPDATE trade_proposals SET status = 'pending_approval', decided_via = NULL, decided_by = NULL "
                   "WHERE id = ?", (proposal_id,))
        db.execute("UPDATE trade_proposals SET status = 'approved' WHERE id = ?", (proposal_id,))  # the attack
    result = await execute(config, proposal_id)
    assert [v["code"] for v in result["violations"]] == ["AUDIT_MISMATCH"]  # type: ignore[union-attr]
    assert await broker_orders(load_config(str(config), env={}).server.database_url) == 0
