"""policies/alerts.py: when a risk alert is due; and the alerts the gate and the reconciler record from it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import time_machine
from sqlalchemy import select, update

from broker.base import BrokerError
from broker.simulated import SimulatedBroker
from ledger.models import GLOBAL_SCOPE, AgentAccount, AuditEvent, TradingState
from policies import alerts
from policies.checks import Usage
from policies.events import KIND_ALERT
from policies.reconcile import Reconciler
from server.runtime import open_runtime
from tests.conftest import MODERATE_LIMITS, agent, call, connect, make_config

NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
BUY = {"symbol": "BTC/USD", "side": "buy", "notional": 20, "time_in_force": "gtc", "reasoning": "alerts"}


def usage(**values: Any) -> Usage:
    return replace(Usage(), equity=Decimal(100000), equity_peak=Decimal(100000), **values)


def codes(found: list[alerts.Alert]) -> list[tuple[str, int | None, str]]:
    return [(a.code, a.details.get("level_pct"), a.severity) for a in found]


def test_no_alert_below_80_percent_of_the_daily_loss_limit() -> None:
    assert alerts.risk_thresholds(MODERATE_LIMITS, usage(daily_pnl=Decimal(-1599))) == []


def test_80_percent_of_the_daily_loss_limit_is_a_warning_and_100_percent_critical_too() -> None:
    assert codes(alerts.risk_thresholds(MODERATE_LIMITS, usage(daily_pnl=Decimal(-1600)))) == [
        ("DAILY_LOSS_LIMIT", 80, "warning")]
    assert codes(alerts.risk_thresholds(MODERATE_LIMITS, usage(daily_pnl=Decimal(-2000)))) == [
        ("DAILY_LOSS_LIMIT", 80, "warning"), ("DAILY_LOSS_LIMIT", 100, "critical")]


def test_drawdown_thresholds_are_percent_of_the_drawdown_limit() -> None:
    eight_pct_down = replace(Usage(), equity=Decimal(92000), equity_peak=Decimal(100000))
    assert codes(alerts.risk_thresholds(MODERATE_LIMITS, eight_pct_down)) == [("DRAWDOWN_LIMIT", 80, "warning")]


def test_a_threshold_is_alerted_once_per_trading_day() -> None:
    crossed = alerts.risk_thresholds(MODERATE_LIMITS, usage(daily_pnl=Decimal(-1700)))
    state = alerts.threshold_state(None, "2026-11-23", alerts.newly_crossed(crossed, None, "2026-11-23"))
    assert alerts.newly_crossed(crossed, state, "2026-11-23") == []
    assert alerts.newly_crossed(crossed, state, "2026-11-24") == crossed


def test_reconciliation_health_changes_give_one_alert_each() -> None:
    ok = alerts.ReconcileHealth(broker_ok=True, stale=False)
    down = alerts.ReconcileHealth(broker_ok=False, stale=False)
    stale = alerts.ReconcileHealth(broker_ok=False, stale=True)
    assert alerts.reconcile_transitions(ok, ok, last_ok=NOW, dead_man=False) == []
    assert [a.code for a in alerts.reconcile_transitions(ok, down, last_ok=NOW, dead_man=False)] == [
        "BROKER_UNAVAILABLE"]
    assert [a.code for a in alerts.reconcile_transitions(down, stale, last_ok=NOW, dead_man=True)] == [
        "RECONCILIATION_STALE"]
    assert [a.code for a in alerts.reconcile_transitions(stale, ok, last_ok=NOW, dead_man=True)] == [
        "BROKER_AVAILABLE", "RECONCILIATION_HEALTHY"]


def test_stale_means_no_successful_pass_for_the_given_number_of_intervals() -> None:
    def health(last_ok: datetime | None) -> bool:
        return alerts.reconcile_health(broker_ok=False, last_ok=last_ok, started=NOW - timedelta(hours=1), now=NOW,
                                       interval_seconds=30, stale_intervals=3).stale

    assert not health(NOW - timedelta(seconds=90)) and health(NOW - timedelta(seconds=91)) and health(None)


def test_an_approval_is_announced_once_shortly_before_it_expires() -> None:
    pending = [("soon", "a", NOW + timedelta(seconds=30)), ("later", "a", NOW + timedelta(minutes=4)),
               ("gone", "a", NOW - timedelta(seconds=1))]
    assert alerts.expiring_soon(pending, NOW, set()) == [pending[0]]
    assert alerts.expiring_soon(pending, NOW, {"soon"}) == []


async def alert_records(runtime: Any) -> list[dict[str, Any]]:
    async with runtime.sessions() as session:
        rows = (await session.execute(select(AuditEvent).where(AuditEvent.kind == KIND_ALERT)
                                      .order_by(AuditEvent.seq))).scalars()
        return [{**json.loads(r.payload), "agent_id": r.agent_id, "actor": r.actor} for r in rows]


async def start_the_day_above_cash(runtime: Any, amount: Decimal) -> None:
    """A loss of `amount` today (the agent's positions aside): its day began with that much more than its cash."""
    async with runtime.sessions() as session, session.begin():
        account = (await session.execute(select(AgentAccount))).scalar_one()
        await session.execute(update(AgentAccount).values(day_start_equity=account.cash + amount))


async def test_the_gate_records_a_daily_loss_threshold_once_per_crossing(db_url: str,
                                                                         market_open: time_machine.Coordinates
                                                                         ) -> None:
    config = make_config(db_url, agent(allowed_symbols=["*"], daily_loss_limit=1000, duplicate_window_seconds=0))
    async with connect(config) as client:
        first = await call(client, "propose_trade", **BUY)
        await call(client, "execute_trade", proposal_id=first["proposal_id"])  # the agent's account exists now
        async with open_runtime(config, reconcile=False) as runtime:
            await start_the_day_above_cash(runtime, Decimal(850))
            for _ in range(3):
                await call(client, "propose_trade", **BUY)
            await start_the_day_above_cash(runtime, Decimal(1200))
            await call(client, "propose_trade", **BUY)
            await call(client, "propose_trade", **BUY)
            found = await alert_records(runtime)
    assert [(a["code"], a["level_pct"], a["severity"]) for a in found] == [
        ("DAILY_LOSS_LIMIT", 80, "warning"), ("DAILY_LOSS_LIMIT", 100, "critical")]
    assert {a["agent_id"] for a in found} == {"agent-1"} and {a["actor"] for a in found} == {"system:risk"}


class Network:
    """Stands for the network between the server and the broker: the simulated broker, unreachable at will."""

    def __init__(self, broker: SimulatedBroker):
        self.broker, self.down = broker, False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.broker, name)
        if name in ("start", "close") or not callable(target):
            return target

        async def call_through(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise BrokerError("connection refused", retryable=True)
            return await target(*args, **kwargs)

        return call_through


async def test_an_unreachable_broker_and_stale_reconciliation_alert_and_the_dead_man_reduces_then_restores(
        db_url: str) -> None:
    config = make_config(db_url, agent())
    network: list[Network] = []

    def broker(sessions: Any, clock: Any) -> Any:
        network.append(Network(SimulatedBroker(sessions, clock=clock)))
        return network[0]

    async with open_runtime(config, reconcile=False, broker=broker) as runtime:
        reconciler = Reconciler(runtime.gate, interval=0.001, stale_intervals=1, dead_man=True)
        await reconciler.reconcile()
        network[0].down = True
        await reconciler.reconcile()
        await reconciler.reconcile()  # still down: nothing new
        async with runtime.sessions() as session:
            during = await session.get(TradingState, GLOBAL_SCOPE)
            assert during is not None and (during.state, during.changed_by) == ("reducing", "system:dead-man")
        network[0].down = False
        await reconciler.reconcile()
        async with runtime.sessions() as session:
            after = await session.get(TradingState, GLOBAL_SCOPE)
        found = await alert_records(runtime)
    assert after is not None and after.state == "active"
    assert [a["code"] for a in found] == ["BROKER_UNAVAILABLE", "RECONCILIATION_STALE", "BROKER_AVAILABLE",
                                          "RECONCILIATION_HEALTHY"]


async def test_an_approval_about_to_expire_is_announced_once(db_url: str,
                                                            market_open: time_machine.Coordinates) -> None:
    config = make_config(db_url, agent(approval="operator", allowed_symbols=["*"]), proposal_ttl_seconds=45)
    async with connect(config) as client:
        proposal = await call(client, "propose_trade", **BUY)
    async with open_runtime(config, reconcile=False) as runtime:
        reconciler = Reconciler(runtime.gate)
        assert await reconciler.announce_expiring_approvals() == 1
        assert await reconciler.announce_expiring_approvals() == 0
        found = await alert_records(runtime)
    assert [(a["code"], a["proposal_id"], a["agent_id"]) for a in found] == [
        ("APPROVAL_EXPIRING", proposal["proposal_id"], "agent-1")]
