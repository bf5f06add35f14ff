"""Settings precedence, pure: the file applies only where no operator set a value, and a sync of an
unchanged file changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from policies.agent_settings import (
    explain_settings,
    file_settings,
    forget_overrides,
    mark_overridden,
    sync_from_file,
    write_settings,
)
from server.config import AgentConfig

NOW = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)


def row_from(agent: AgentConfig) -> Any:
    row = SimpleNamespace(limits={}, operator_overrides={}, risk_level=agent.risk_level)
    write_settings(row, file_settings(agent))
    return row


def test_syncing_an_unchanged_file_changes_nothing() -> None:
    agent = AgentConfig(id="a", daily_loss_limit=Decimal(300))
    assert sync_from_file(row_from(agent), agent) == []


def test_the_file_applies_where_no_operator_set_a_value() -> None:
    row = row_from(AgentConfig(id="a"))
    assert sync_from_file(row, AgentConfig(id="a", max_trade_size=Decimal(10), allow_short=True)) == \
        ["max_trade_size", "allow_short"]
    assert row.max_trade_size == 10 and row.limits["allow_short"] is True


def test_an_operator_value_survives_a_file_that_says_otherwise() -> None:
    row = row_from(AgentConfig(id="a"))
    write_settings(row, {"enabled": False, "daily_loss_limit": Decimal(5)})
    mark_overridden(row, ["enabled", "daily_loss_limit"], "operator:cli", NOW)
    assert sync_from_file(row, AgentConfig(id="a", enabled=True, daily_loss_limit=Decimal(900))) == []
    assert row.enabled is False and row.limits["daily_loss_limit"] == "5"


def test_a_forgotten_override_goes_back_to_the_file_at_the_next_sync() -> None:
    row = row_from(AgentConfig(id="a"))
    write_settings(row, {"enabled": False})
    mark_overridden(row, ["enabled"], "operator:cli", NOW)
    forget_overrides(row, ["enabled"])
    assert sync_from_file(row, AgentConfig(id="a")) == ["enabled"] and row.enabled is True


def test_explain_names_the_source_of_each_value() -> None:
    file_agent = AgentConfig(id="a", max_trade_size=Decimal(5000))
    row = row_from(file_agent)
    write_settings(row, {"max_trade_size": Decimal(100)})
    mark_overridden(row, ["max_trade_size"], "operator:cli", NOW)
    sources = {s.name: s for s in explain_settings(row, file_agent, {})}
    assert sources["max_trade_size"].source == "operator"
    assert sources["max_trade_size"].detail == "set by operator:cli at 2026-11-30 01:00:00 UTC; " \
                                               "the config file says 5000"
    assert sources["max_position_size"].source == "default"
    assert sources["max_order_qty"].source == "risk-level default"
    assert sources["max_order_qty"].detail == "moderate: 2000"
    assert sources["approval"].source == "default"
