"""The config file's agents synced into the ledger at every start (policies/agents.py sync_config_agents), on
SQLite and PostgreSQL: new agents added, the file's changes written, an unchanged file writes nothing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from ledger.models import AgentPermissions, AuditEvent
from server.config import Config
from server.runtime import open_runtime
from tests.conftest import agent, make_config


async def _stored(config: Config) -> tuple[dict[str, dict[str, Any]], int]:
    """Every agent row (column -> value) and the number of agents.synced records, after a start."""
    async with open_runtime(config, reconcile=False) as runtime, runtime.sessions() as session:
        rows = (await session.execute(select(AgentPermissions.__table__))).mappings().all()
        synced = (await session.execute(select(func.count()).select_from(AuditEvent)
                                        .where(AuditEvent.kind == "agents.synced"))).scalar_one()
    return {row["agent_id"]: dict(row) for row in rows}, synced


async def test_a_first_start_adds_the_file_s_agents_with_their_settings_and_audits_it_once(
        database_url: str) -> None:
    rows, synced = await _stored(make_config(database_url, agent("a-1", max_trade_size=700, max_order_qty=12),
                                             agent("a-2")))
    assert set(rows) == {"a-1", "a-2"} and synced == 1
    first = rows["a-1"]
    assert first["max_trade_size"] == Decimal(700) and first["limits"] == {"max_order_qty": "12"}
    assert first["source"] == "config" and first["enabled"] is True and first["operator_overrides"] == {}
    assert first["token_hash"] is None and first["created_at"] == first["updated_at"]


async def test_a_restart_with_an_unchanged_file_writes_nothing(database_url: str) -> None:
    config = make_config(database_url, agent("a-1", max_order_qty=12))
    before, _ = await _stored(config)
    after, synced = await _stored(config)
    assert after == before and synced == 1


async def test_the_file_s_changes_to_columns_and_optional_limits_are_written_and_audited(database_url: str) -> None:
    await _stored(make_config(database_url, agent("a-1", max_order_qty=12), agent("a-2")))
    rows, synced = await _stored(make_config(database_url, agent("a-1", max_trade_size=900, max_daily_trades=3),
                                             agent("a-2")))
    changed, unchanged = rows["a-1"], rows["a-2"]
    assert changed["max_trade_size"] == Decimal(900) and changed["max_daily_trades"] == 3
    assert changed["limits"] == {}  # max_order_qty no longer in the file: the risk level's default applies
    assert changed["updated_at"] > changed["created_at"] and unchanged["updated_at"] == unchanged["created_at"]
    assert synced == 2


async def test_an_agent_added_to_the_file_before_a_restart_is_added(database_url: str) -> None:
    await _stored(make_config(database_url, agent("a-1")))
    rows, synced = await _stored(make_config(database_url, agent("a-1"), agent("a-2", max_trade_size=300)))
    assert set(rows) == {"a-1", "a-2"} and rows["a-2"]["max_trade_size"] == Decimal(300) and synced == 2
