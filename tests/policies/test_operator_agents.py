"""The operator layer's agent actions: roles checked first, changes audited as the operator, and an operator's
setting never undone by the next config sync."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from ledger.models import AgentPermissions, AuditEvent
from policies.operator import Operator
from policies.operators import OperatorError, OperatorForbidden, OperatorIdentity, Role
from server.config import Config
from server.runtime import open_runtime
from tests.conftest import agent, make_config

ADMIN = OperatorIdentity("alice", Role.ADMIN)
APPROVER = OperatorIdentity("ann", Role.APPROVER)
VIEWER = OperatorIdentity("vera", Role.VIEWER)


async def _row(config: Config, agent_id: str = "agent-1") -> AgentPermissions:
    async with open_runtime(config, reconcile=False) as runtime, runtime.sessions() as session:
        row = await session.get(AgentPermissions, agent_id)
    assert row is not None
    return row


async def test_a_disable_survives_the_next_config_sync(config: Config) -> None:
    async with open_runtime(config, reconcile=False) as runtime:
        await Operator(runtime.gate, ADMIN).set_enabled("agent-1", False)
    row = await _row(config)  # opening the runtime again syncs the file (which says enabled)
    assert row.enabled is False and row.operator_overrides["enabled"]["by"] == "operator:alice"


async def test_the_file_still_applies_to_the_settings_no_operator_set(db_url: str) -> None:
    first = make_config(db_url, agent(max_trade_size=5000, max_position_size=20000))
    async with open_runtime(first, reconcile=False) as runtime:
        await Operator(runtime.gate, ADMIN).set_settings("agent-1", {"max_trade_size": 100}, reset=[],
                                                         baseline=first.agents[0])
    changed_file = make_config(db_url, agent(max_trade_size=7000, max_position_size=9000))
    row = await _row(changed_file)
    assert row.max_trade_size == 100 and row.max_position_size == 9000


async def test_reset_hands_the_setting_back_to_the_file(config: Config) -> None:
    async with open_runtime(config, reconcile=False) as runtime:
        operator = Operator(runtime.gate, ADMIN)
        await operator.set_settings("agent-1", {"daily_loss_limit": 50}, reset=[], baseline=config.agents[0])
        await operator.set_settings("agent-1", {}, reset=["daily_loss_limit"], baseline=config.agents[0])
    row = await _row(config)
    assert "daily_loss_limit" not in row.limits and row.operator_overrides == {}


async def test_settings_the_checks_cannot_read_are_refused_and_nothing_is_written(config: Config) -> None:
    async with open_runtime(config, reconcile=False) as runtime:
        with pytest.raises(OperatorError, match="INVALID_ARGUMENT"):
            await Operator(runtime.gate, ADMIN).set_settings("agent-1", {"max_drawdown_pct": 500}, reset=[],
                                                             baseline=config.agents[0])
    assert "max_drawdown_pct" not in (await _row(config)).limits


async def test_settings_changes_are_audited_as_the_operator_with_before_and_after(config: Config) -> None:
    async with open_runtime(config, reconcile=False) as runtime:
        await Operator(runtime.gate, ADMIN).set_settings("agent-1", {"max_daily_trades": 3}, reset=[],
                                                         baseline=config.agents[0])
        async with runtime.sessions() as session:
            record = (await session.execute(select(AuditEvent).where(AuditEvent.kind == "agent.settings_changed"))
                      ).scalar_one()
    assert record.actor == "operator:alice" and '"max_daily_trades":{"from":20,"to":3}' in record.payload


@pytest.mark.parametrize("identity", [VIEWER, APPROVER])
async def test_only_an_admin_manages_agents(config: Config, identity: OperatorIdentity) -> None:
    async with open_runtime(config, reconcile=False) as runtime:
        operator = Operator(runtime.gate, identity)
        with pytest.raises(OperatorForbidden):
            await operator.set_enabled("agent-1", False)
        with pytest.raises(OperatorForbidden):
            await operator.set_settings("agent-1", {"max_trade_size": 1}, reset=[], baseline=config.agents[0])
        with pytest.raises(OperatorForbidden):
            await operator.rotate_token("agent-1")
        assert [a.agent_id for a in await operator.agents()] == ["agent-1"]  # reading is allowed


async def test_a_viewer_cannot_cancel_an_order(config: Config) -> None:
    async with open_runtime(config, reconcile=False) as runtime:
        with pytest.raises(OperatorForbidden):
            await Operator(runtime.gate, VIEWER).cancel_order("whatever-order")


async def test_removing_an_agent_of_the_config_file_is_refused(config: Config) -> None:
    async with open_runtime(config, reconcile=False) as runtime:
        with pytest.raises(OperatorError, match="config file"):
            await Operator(runtime.gate, ADMIN).remove_agent("agent-1", in_config_file=True)


async def test_an_agent_holding_a_position_cannot_be_removed_until_it_is_closed(
        config: Config, market_open: object) -> None:
    from tests.conftest import call, connect

    async with open_runtime(config, reconcile=False) as runtime:
        await Operator(runtime.gate, ADMIN).add_agent(agent("bot-2", allowed_symbols=["*"]), max_agents=5,
                                                      given=[])
    async with connect(config, "bot-2") as client:
        for side in ("buy", "sell"):
            proposal = await call(client, "propose_trade", symbol="SPY", side=side, qty=1, reasoning="r")
            assert (await call(client, "execute_trade", proposal_id=proposal["proposal_id"]))["status"] == "filled"
            if side == "buy":
                async with open_runtime(config, reconcile=False) as runtime:
                    with pytest.raises(OperatorError, match="1 open position"):
                        await Operator(runtime.gate, ADMIN).remove_agent("bot-2", in_config_file=False)
    async with open_runtime(config, reconcile=False) as runtime:
        await Operator(runtime.gate, ADMIN).remove_agent("bot-2", in_config_file=False)
        assert [a.agent_id for a in await Operator(runtime.gate, ADMIN).agents()] == ["agent-1"]
