"""`tradewarden approvals list|approve|reject`: a person out of band, in its own process, against the
database a running server uses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import select

from ledger import db
from ledger.models import Approval, AuditEvent, TradeProposal
from server.config import load_config
from tests.cli_probe import create_ledger, run_cli
from tests.conftest import call, connect
from tests.ledger_probe import broker_orders

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{tmp_path / 'tradewarden.db'}"
enforce_market_hours = false
{extra}
[[agents]]
id = "agent-1"
allowed_symbols = ["*"]
approval = "elicit"
""")
    return create_ledger(path)  # as an operator does first


cli = run_cli


async def _propose(config_path: Path, **order: object) -> str:
    config = load_config(str(config_path), env={})
    async with connect(config) as client:  # an agent's client without elicitation: it waits for a person
        proposal = await call(client, "propose_trade", **{"symbol": "SPY", "side": "buy", "qty": 2,
                                                          "reasoning": "index looks cheap", **order})
    assert proposal["status"] == "pending_approval"
    return str(proposal["proposal_id"])


async def _execute(config_path: Path, proposal_id: str) -> dict[str, object]:
    async with connect(load_config(str(config_path), env={})) as client:
        return await call(client, "execute_trade", proposal_id=proposal_id)


async def _rows(config_path: Path, proposal_id: str) -> tuple[TradeProposal, list[Approval], list[dict[str, object]]]:
    engine = db.create_engine(load_config(str(config_path), env={}).server.database_url)
    try:
        async with db.session_factory(engine)() as session:
            proposal = await session.get(TradeProposal, proposal_id)
            assert proposal is not None
            approvals = list((await session.execute(select(Approval).where(Approval.proposal_id == proposal_id)))
                             .scalars())
            events = (await session.execute(select(AuditEvent).where(AuditEvent.kind.startswith("approval."))
                                            .order_by(AuditEvent.seq))).scalars()
            records = [{"kind": e.kind, "actor": e.actor, **json.loads(e.payload)} for e in events]
            return proposal, approvals, records
    finally:
        await engine.dispose()


def test_list_shows_pending_proposals_with_details_and_age(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    empty = cli(config, "approvals", "list")
    assert empty.returncode == 0 and "no proposals waiting" in empty.stdout
    proposal_id = asyncio.run(_propose(config, order_type="limit", limit_price=400, strategy="value"))
    listed = cli(config, "approvals", "list")
    assert listed.returncode == 0, listed.stderr
    assert proposal_id in listed.stdout
    for shown in ("agent-1", "BUY 2 SPY, limit order limit $400", "estimated $", "age ", "expires in", "[PAPER]",
                  "index looks cheap", "strategy value"):
        assert shown in listed.stdout, shown


def test_approve_with_note_then_the_agents_execute_submits_it(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proposal_id = asyncio.run(_propose(config))
    approved = cli(config, "approvals", "approve", proposal_id, "--note", "ok by risk desk")
    assert approved.returncode == 0, approved.stderr
    assert f"proposal {proposal_id} approved" in approved.stdout
    assert "no proposals waiting" in cli(config, "approvals", "list").stdout
    executed = asyncio.run(_execute(config, proposal_id))
    assert executed["status"] == "filled"
    assert asyncio.run(broker_orders(load_config(str(config), env={}).server.database_url)) == 1
    proposal, approvals, records = asyncio.run(_rows(config, proposal_id))
    assert (proposal.decided_by, proposal.decided_via, proposal.decision_note) == ("operator:cli", "operator",
                                                                                   "ok by risk desk")
    assert proposal.decided_at is not None
    assert [(a.decision, a.via, a.decided_by, a.order_hash) for a in approvals] == [
        ("approved", "operator", "operator:cli", proposal.order_hash)]
    assert [(r["kind"], r["actor"], r["via"], r["note"]) for r in records] == [
        ("approval.approved", "operator:cli", "operator", "ok by risk desk")]


def test_approving_twice_fails_the_second_time(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proposal_id = asyncio.run(_propose(config))
    assert cli(config, "approvals", "approve", proposal_id).returncode == 0
    again = cli(config, "approvals", "approve", proposal_id)
    assert again.returncode == 1 and "approved, not pending approval" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    _, approvals, _ = asyncio.run(_rows(config, proposal_id))
    assert len(approvals) == 1


def test_reject_with_reason_is_final(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proposal_id = asyncio.run(_propose(config))
    rejected = cli(config, "approvals", "reject", proposal_id, "--reason", "not today")
    assert rejected.returncode == 0 and f"proposal {proposal_id} rejected" in rejected.stdout
    assert cli(config, "approvals", "approve", proposal_id).returncode == 1
    executed = asyncio.run(_execute(config, proposal_id))
    assert executed["status"] == "declined"
    assert [v["code"] for v in executed["violations"]] == ["APPROVAL_DECLINED"]  # type: ignore[attr-defined]
    _, _, records = asyncio.run(_rows(config, proposal_id))
    assert [(r["kind"], r["via"], r["note"]) for r in records] == [("approval.declined", "operator", "not today")]


def test_an_expired_proposal_cannot_be_approved(tmp_path: Path) -> None:
    config = write_config(tmp_path, "proposal_ttl_seconds = 1")
    proposal_id = asyncio.run(_propose(config))
    asyncio.run(asyncio.sleep(1.2))
    assert "EXPIRED" in cli(config, "approvals", "list").stdout
    late = cli(config, "approvals", "approve", proposal_id)
    assert late.returncode == 1 and late.stderr.startswith("tradewarden: PROPOSAL_EXPIRED")
    executed = asyncio.run(_execute(config, proposal_id))
    assert executed["status"] == "expired"


def test_unknown_proposal_fails_with_one_line(tmp_path: Path) -> None:
    result = cli(write_config(tmp_path), "approvals", "approve", "00000000-0000-0000-0000-000000000000")
    assert result.returncode == 1 and "no proposal" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_approve_with_a_lower_qty_sends_exactly_the_shrunk_order(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proposal_id = asyncio.run(_propose(config, qty=5))
    approved = cli(config, "approvals", "approve", proposal_id, "--qty", "2", "--note", "smaller")
    assert approved.returncode == 0, approved.stderr
    assert "approved order: BUY 2 SPY, market order" in approved.stdout
    executed = asyncio.run(_execute(config, proposal_id))
    assert executed["status"] == "filled" and executed["filled_qty"] == "2"
    proposal, [approval], [record] = asyncio.run(_rows(config, proposal_id))
    assert proposal.qty == 2 and approval.order_hash == proposal.order_hash != approval.original_order_hash
    assert (approval.trust, record["actor"]) == ("operator", "operator:cli")
    assert json.loads(str(record["original_order"]))["qty"] == "5"


def test_approve_edits_that_add_risk_or_are_not_numbers_are_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proposal_id = asyncio.run(_propose(config, qty=5))
    larger = cli(config, "approvals", "approve", proposal_id, "--qty", "6")
    assert larger.returncode == 1 and larger.stderr.startswith("tradewarden: INVALID_ARGUMENT: qty must be above 0")
    not_a_number = cli(config, "approvals", "approve", proposal_id, "--qty", "lots")
    assert not_a_number.returncode == 2 and "INVALID_ARGUMENT: --qty must be a decimal number" in not_a_number.stderr
    market_limit = cli(config, "approvals", "approve", proposal_id, "--limit-price", "1")
    assert market_limit.returncode == 1 and "limit and stop_limit orders" in market_limit.stderr
    for result in (larger, not_a_number, market_limit):
        assert len(result.stderr.strip().splitlines()) == 1
    proposal, approvals, _ = asyncio.run(_rows(config, proposal_id))
    assert proposal.status == "pending_approval" and proposal.qty == 5 and approvals == []
