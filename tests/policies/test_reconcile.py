"""policies/reconcile.py: the ledger brought in line with the broker, at start-up and in the background.

State is set up as the gate leaves it (a proposal in `executing`, its agent_trades row in pending_submit or
unknown, the audit intent), or as a stopped server leaves it (orders resting at the broker that fill, cancel
or expire while it is down); then a new runtime starts, as a restarted server would."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from broker.alpaca import AlpacaBroker
from broker.base import BrokerError, SubmitOrder
from ledger.db import UnitCounter, transaction
from ledger.models import AgentAccount, AgentPosition, AgentTrade, TradeProposal
from policies import audit, events
from policies.gate import ProposalDraft
from policies.orders import OrderRequest
from policies.reconcile import (
    NEVER_REACHED,
    RECENT_CLOSED,
    SETTLE_AFTER_ORDERS,
    SETTLE_TOGETHER,
    Reconciler,
    position_drift,
)
from server.config import Config
from server.runtime import Runtime, open_runtime
from tests.alpaca_env import (
    alpaca_config,
    audit_records,
    eventually,
    positions,
    read,
    reconciliation,
    trade,
    trader,
)
from tests.broker.alpaca_contract_server import AlpacaContractServer
from tests.cli_probe import run_cli
from tests.conftest import call, connect, make_config

pytest_plugins = ["tests.alpaca_fixtures"]  # the alpaca_server and alpaca_keys fixtures
ROOT = Path(__file__).resolve().parents[2]
LONG_AGO = timedelta(minutes=2)  # older than the submit timeout and the one-minute staleness


DOUBT_ENDED = 60  # order_in_doubt_seconds shorter than LONG_AGO: the broker had its time to acknowledge


def sim_config(database_url: str, **options: Any) -> Config:
    return make_config(database_url, trader(), **options)


async def crashed_order(runtime: Runtime, *, status: str, age: timedelta = LONG_AGO, symbol: str = "BTC/USD",
                        qty: str = "0.01", side: str = "buy", order_type: str = "market",
                        limit_price: str | None = None, time_in_force: str = "gtc") -> str:
    """What the gate leaves behind when the process dies between reserving an order and recording its
    outcome: the proposal `executing`, the trade row (the reservation), the audit intent."""
    created = datetime.now(UTC) - age
    proposal_id = str(uuid.uuid4())
    order = OrderRequest(symbol=symbol, side=side, qty=Decimal(qty), order_type=order_type,  # type: ignore[arg-type]
                         limit_price=Decimal(limit_price) if limit_price else None,
                         time_in_force=time_in_force)  # type: ignore[arg-type]
    reserved = Decimal(qty) * Decimal(limit_price or 70000)
    async with transaction(runtime.sessions) as session:
        session.add(TradeProposal(
            id=proposal_id, agent_id="agent-1", symbol=symbol, side=side, qty=Decimal(qty), order_type=order_type,
            limit_price=order.limit_price, time_in_force=time_in_force, reasoning="crash test", status="executing",
            order_hash=order.order_hash(), estimated_notional=reserved, approval_mode="auto", trading_mode="paper",
            created_at=created, expires_at=created + timedelta(minutes=5), updated_at=created))
        await session.flush()
        session.add(AgentTrade(
            id=proposal_id, agent_id="agent-1", proposal_id=proposal_id, client_order_id=proposal_id, symbol=symbol,
            side=side, quantity=Decimal(qty), order_type=order_type, limit_price=order.limit_price,
            time_in_force=time_in_force, reserved_notional=reserved, filled_qty=Decimal(0), reasoning="crash test",
            status=status, created_at=created, updated_at=created))
        await audit.append(session, ts=created, actor="agent:agent-1", kind="order.intent", agent_id="agent-1",
                           payload={"proposal_id": proposal_id, "order": order.canonical_json()})
    return proposal_id


async def proposal_status(runtime: Runtime, proposal_id: str) -> str:
    async with runtime.sessions() as session:
        proposal = await session.get(TradeProposal, proposal_id)
    assert proposal is not None
    return proposal.status


async def open_buy_notional(runtime: Runtime) -> Decimal:
    _, usage = await runtime.gate.usage_today(await runtime.gate.load_agent("agent-1"))
    return usage.open_buy_notional


async def reconcile_records(database_url: str) -> list[Any]:
    return [r for r in await audit_records(database_url, "system:reconcile") if r.kind == "order.updated"]


# -- a crash between intent and outcome (simulated broker; SQLite and PostgreSQL) ---------------------------


@pytest.mark.parametrize("status", ["pending_submit", "unknown"])
async def test_lost_order_that_never_reached_the_broker_is_rejected_and_released(database_url: str,
                                                                                 status: str) -> None:
    config = sim_config(database_url, order_in_doubt_seconds=DOUBT_ENDED)
    async with open_runtime(config, reconcile=False) as runtime:
        proposal_id = await crashed_order(runtime, status=status)
        assert await open_buy_notional(runtime) > 0  # the reservation holds while the outcome is unknown
    async with open_runtime(config) as runtime:  # the restart
        settled = await trade(database_url, proposal_id)
        assert (settled.status, settled.reject_reason) == ("rejected", NEVER_REACHED)
        assert await proposal_status(runtime, proposal_id) == "executed"
        assert await open_buy_notional(runtime) == 0
    [record] = await reconcile_records(database_url)
    assert record.agent_id == "agent-1" and '"reason":"never reached the broker"' in record.payload
    assert f'"from":"{status}"' in record.payload and '"to":"rejected"' in record.payload


@pytest.mark.parametrize("status", ["pending_submit", "unknown"])
async def test_lost_order_found_at_the_broker_is_applied(database_url: str, status: str) -> None:
    config = sim_config(database_url)
    async with open_runtime(config, reconcile=False) as runtime:
        proposal_id = await crashed_order(runtime, status=status)
        # The order did reach the broker before the crash (its answer was never recorded).
        sent = await runtime.broker.submit_order(SubmitOrder(client_order_id=proposal_id, order=OrderRequest(
            symbol="BTC/USD", side="buy", qty=Decimal("0.01"), time_in_force="gtc")))
    async with open_runtime(config) as runtime:
        settled = await trade(database_url, proposal_id)
        assert await proposal_status(runtime, proposal_id) == "executed"
        assert await open_buy_notional(runtime) == 0
    assert (settled.status, settled.order_id, settled.filled_qty) == ("filled", sent.broker_order_id, Decimal("0.01"))
    assert settled.submitted_at is not None
    assert await positions(database_url) == {("agent-1", "BTC/USD"): Decimal("0.01")}
    [record] = await reconcile_records(database_url)
    assert "found at the broker by client_order_id" in record.payload
    report = await reconciliation(database_url)
    assert report is not None and report["drift"] == {} and report["resolved"] == 1


async def test_recent_pending_submit_is_left_to_the_gate(database_url: str) -> None:
    config = sim_config(database_url)
    async with open_runtime(config, reconcile=False) as runtime:
        proposal_id = await crashed_order(runtime, status="pending_submit", age=timedelta(seconds=5))
    async with open_runtime(config):
        assert (await trade(database_url, proposal_id)).status == "pending_submit"
    assert await reconcile_records(database_url) == []


async def test_recent_unknown_order_not_at_the_broker_waits_and_is_listed(database_url: str) -> None:
    config = sim_config(database_url)
    async with open_runtime(config, reconcile=False) as runtime:
        proposal_id = await crashed_order(runtime, status="unknown", age=timedelta(seconds=5))
    async with open_runtime(config) as runtime:
        assert (await trade(database_url, proposal_id)).status == "unknown"
        assert runtime.reconciler is not None
        # A minute later it still is not there: it never reached the broker.
        later = Reconciler(runtime.gate, stale_after=timedelta(seconds=1), doubt_window=timedelta(seconds=1))
        await later.reconcile()
    assert (await trade(database_url, proposal_id)).reject_reason == NEVER_REACHED
    report = await reconciliation(database_url)
    assert report is not None and report["unresolved"] == [] and report["resolved"] == 1


@pytest.mark.parametrize("status", ["pending_submit", "unknown"])
async def test_an_order_in_doubt_keeps_its_reservation_while_the_broker_may_still_acknowledge_it(
        database_url: str, status: str) -> None:
    config = sim_config(database_url)  # the default doubt window: 24 hours
    async with open_runtime(config, reconcile=False) as runtime:
        proposal_id = await crashed_order(runtime, status=status, age=timedelta(hours=2))
    async with open_runtime(config) as runtime:
        assert (await trade(database_url, proposal_id)).status == status
        assert await open_buy_notional(runtime) > 0
        report = await reconciliation(database_url)
        assert report is not None and report["unresolved"] == [proposal_id]
    assert await reconcile_records(database_url) == []


async def test_a_late_acknowledgement_ends_booked_with_no_drift_and_an_alert(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    config = alpaca_config(db_url, alpaca_server, broker_timeout_seconds=1.0)
    alpaca_server.hang_next_submit(4.0, create_order="later")  # answered 504; visible 4 s later
    async with connect(config) as client:
        proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=2, reasoning="late ack")
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
        assert executed["status"] == "submitted" and "reconciled" in executed["message"]
    async with open_runtime(config, reconcile=False) as runtime:  # one reconciler, stepped by the test
        reconciler = Reconciler(runtime.gate, stale_after=timedelta(seconds=1))  # "more than a minute" later
        await asyncio.sleep(1.5)
        await reconciler.reconcile()  # not at the broker yet: still in doubt, not written off
        assert (await trade(db_url, executed["order_id"])).status == "unknown"
        await asyncio.sleep(3.0)
        report = await reconciler.reconcile()
    settled = await trade(db_url, executed["order_id"])
    assert (settled.status, settled.filled_qty) == ("filled", Decimal(2))
    assert await positions(db_url) == {("agent-1", "AAPL"): Decimal(2)}
    assert report.drift == {}
    alerts = [r for r in await audit_records(db_url, "system:reconcile") if r.kind == "risk.alert"]
    assert len(alerts) == 1 and "ORDER_ACKNOWLEDGED_LATE" in alerts[0].payload
    assert len(alpaca_server.requests_to("POST", "/v2/orders")) == 1  # nothing re-sent


# -- drift -------------------------------------------------------------------------------------------------


def test_position_drift_sums_agents_per_symbol() -> None:
    ours = [("AAPL", Decimal(3)), ("AAPL", Decimal(2)), ("MSFT", Decimal(1)), ("SPY", Decimal(0))]
    broker = [("AAPL", Decimal(5)), ("MSFT", Decimal(2)), ("TSLA", Decimal("0.5"))]
    assert position_drift(ours, broker) == {"MSFT": {"ours": "1", "broker": "2"},
                                            "TSLA": {"ours": "0", "broker": "0.5"}}
    assert position_drift([("X", Decimal("1.0000000001"))], [("X", Decimal(1))]) == {}


def _status(tmp_path: Path, database_url: str, extra: str = "") -> subprocess.CompletedProcess[str]:
    path = tmp_path / "status.toml"
    path.write_text(f'[server]\ndatabase_url = "{database_url}"\n{extra}\n'
                    '[[agents]]\nid = "agent-1"\nallowed_symbols = ["*"]\n')
    return run_cli(path, "status")


async def test_drift_is_stored_audited_and_shown_by_status(db_url: str, tmp_path: Path) -> None:
    config = sim_config(db_url)
    async with open_runtime(config, reconcile=False) as runtime, transaction(runtime.sessions) as session:
        # Our ledger says the agent holds 5 AAPL; the broker's account holds none.
        session.add(AgentPosition(agent_id="agent-1", symbol="AAPL", qty=Decimal(5), avg_entry_price=Decimal(190),
                                  realized_pl=Decimal(0), updated_at=datetime.now(UTC)))
    async with open_runtime(config):
        pass
    report = await reconciliation(db_url)
    assert report is not None and report["drift"] == {"AAPL": {"ours": "5", "broker": "0"}}
    shown = _status(tmp_path, db_url)
    assert shown.returncode == 0, shown.stderr
    assert "DRIFT" in shown.stdout and "AAPL: ours 5  broker 0" in shown.stdout
    # Fixed (by a person): the next reconciliation clears it, and says so.
    async with open_runtime(config, reconcile=False) as runtime, transaction(runtime.sessions) as session:
        await session.execute(delete(AgentPosition))
    async with open_runtime(config):
        pass
    assert (await reconciliation(db_url) or {})["drift"] == {}
    drift_records = [r.payload for r in await audit_records(db_url, "system:reconcile") if r.kind == "reconcile.drift"]
    assert len(drift_records) == 2 and '"AAPL"' in drift_records[0] and '"drift":{}' in drift_records[1]
    shown = _status(tmp_path, db_url)
    assert "DRIFT" not in shown.stdout and "reconciliation: no drift" in shown.stdout


async def test_status_without_any_reconciliation_says_nothing_about_it(db_url: str, tmp_path: Path) -> None:
    async with open_runtime(sim_config(db_url), reconcile=False):
        pass  # the ledger exists (as after a server's first start), and nothing reconciled it yet
    shown = _status(tmp_path, db_url)
    assert shown.returncode == 0 and "reconciliation" not in shown.stdout


# -- never crash the server --------------------------------------------------------------------------------


class _Down:
    """A broker that is down: every call fails."""

    name = "down"

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def __getattr__(self, name: str) -> Any:
        async def fail(*_: Any, **__: Any) -> Any:
            raise BrokerError("Alpaca 503: service unavailable", status=503, retryable=True)

        return fail


async def test_a_broker_that_is_down_never_crashes_the_server(db_url: str) -> None:
    config = sim_config(db_url)
    async with open_runtime(config, reconcile=False) as runtime:
        proposal_id = await crashed_order(runtime, status="unknown")
    async with open_runtime(config, broker=_Down()) as runtime:  # type: ignore[arg-type]
        assert runtime.reconciler is not None and runtime.reconciler.last_report is not None
        report = await runtime.reconciler.reconcile()
        assert report.unresolved == [proposal_id] and report.errors
        task_count = len(report.errors)
    assert task_count >= 2  # the orders and the positions could not be read
    assert (await trade(db_url, proposal_id)).status == "unknown"  # nothing is decided without the broker
    stored = await reconciliation(db_url)
    assert stored is not None and "503" in stored["errors"][0]


async def test_the_background_task_ends_with_the_runtime(db_url: str) -> None:
    import asyncio

    async with open_runtime(sim_config(db_url)):
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == "tradewarden-reconciler"]
        assert len(tasks) == 1 and not tasks[0].done()
    assert tasks[0].done()
    async with open_runtime(sim_config(db_url), reconcile=False) as runtime:
        assert runtime.reconciler is None


# -- Alpaca: crashes and fills while the server was down ------------------------------------------------------


@pytest.mark.parametrize("status", ["pending_submit", "unknown"])
@pytest.mark.parametrize("at_alpaca", [True, False])
async def test_alpaca_crash_between_intent_and_outcome(db_url: str, alpaca_server: AlpacaContractServer,
                                                       status: str, at_alpaca: bool) -> None:
    config = alpaca_config(db_url, alpaca_server, order_in_doubt_seconds=DOUBT_ENDED)
    async with open_runtime(config, reconcile=False) as runtime:
        proposal_id = await crashed_order(runtime, status=status, symbol="AAPL", qty="2", time_in_force="day")
        if at_alpaca:
            broker = AlpacaBroker(**alpaca_server.broker_kwargs())
            await broker.submit_order(SubmitOrder(client_order_id=proposal_id, order=OrderRequest(
                symbol="AAPL", side="buy", qty=Decimal(2))))
            await broker.close()
    async with open_runtime(config) as runtime:
        settled = await trade(db_url, proposal_id)
        assert await open_buy_notional(runtime) == 0
        assert await proposal_status(runtime, proposal_id) == "executed"
    if at_alpaca:
        assert (settled.status, settled.filled_qty) == ("filled", 2)
        assert settled.order_id == alpaca_server.order(proposal_id)["id"]
        assert await positions(db_url) == {("agent-1", "AAPL"): Decimal(2)}
    else:
        assert (settled.status, settled.reject_reason) == ("rejected", NEVER_REACHED)
        assert alpaca_server.orders == []
    assert len(await reconcile_records(db_url)) == 1
    assert len(alpaca_server.requests_to("POST", "/v2/orders")) == (1 if at_alpaca else 0)  # nothing re-sent
    report = await reconciliation(db_url)
    assert report is not None and report["drift"] == {}


async def submitted_at_alpaca(runtime: Runtime, *, age: timedelta) -> str:
    """An order the gate sent: Alpaca answered `pending_new` (our trade row says "new") and filled it a moment
    later, so the next poll no longer finds it among the open orders."""
    proposal_id = await crashed_order(runtime, status="new", age=age, symbol="AAPL", qty="1", time_in_force="day")
    await runtime.gate.broker.submit_order(SubmitOrder(client_order_id=proposal_id, order=OrderRequest(
        symbol="AAPL", side="buy", qty=Decimal(1))))
    return proposal_id


def trading_reads_since(server: AlpacaContractServer, first: int) -> list[tuple[str, str]]:
    return [(r.path, ",".join(r.query.get("status", []))) for r in server.requests[first:] if r.api == "trading"]


async def test_alpaca_orders_filled_since_the_last_poll_are_found_in_one_listing_of_closed_orders(
        database_url: str, alpaca_server: AlpacaContractServer) -> None:
    async with open_runtime(alpaca_config(database_url, alpaca_server), reconcile=False) as runtime:
        filled = [await submitted_at_alpaca(runtime, age=timedelta(seconds=3)) for _ in range(3 + SETTLE_TOGETHER)]
        first = len(alpaca_server.requests)
        resolved = await Reconciler(runtime.gate).poll()
    assert resolved == 3 + SETTLE_TOGETHER
    assert trading_reads_since(alpaca_server, first) == [("/v2/orders", "open"), ("/v2/orders", "closed")]
    # Applied together (one position, one cash balance, one audit chain): every fill booked exactly once.
    assert {((await trade(database_url, i)).status, (await trade(database_url, i)).filled_qty) for i in filled} == {
        ("filled", Decimal(1))}
    assert await positions(database_url) == {("agent-1", "AAPL"): Decimal(3 + SETTLE_TOGETHER)}
    assert len(await reconcile_records(database_url)) == 3 + SETTLE_TOGETHER
    report = await reconciliation(database_url)
    assert report is None or report["drift"] == {}


async def test_alpaca_fills_found_in_one_poll_share_commits_on_sqlite(db_url: str,
                                                                   alpaca_server: AlpacaContractServer) -> None:
    async with open_runtime(alpaca_config(db_url, alpaca_server), reconcile=False) as runtime:
        for _ in range(SETTLE_TOGETHER):
            await submitted_at_alpaca(runtime, age=timedelta(seconds=3))
        units, commits = UnitCounter.begun, UnitCounter.commits
        assert await Reconciler(runtime.gate).poll() == SETTLE_TOGETHER
        units, commits = UnitCounter.begun - units, UnitCounter.commits - commits
    assert units >= SETTLE_TOGETHER  # each fill in a unit of its own (its own savepoint) ...
    assert commits < SETTLE_TOGETHER / 2  # ... and they are made durable together, not one disk sync each


async def placed_through_the_gate(runtime: Runtime, qty: int) -> str:
    """A market order proposed and executed through the gate: Alpaca answers it `pending_new` (still open) and
    fills it a moment later."""
    gate = runtime.gate
    draft = ProposalDraft(order=OrderRequest(symbol="AAPL", side="buy", qty=Decimal(qty)), strategy=None,
                          reasoning="a steady flow", confidence=None)
    proposal = await gate.handle("propose_trade", "agent-1", {}, lambda agent: gate.propose(
        agent, draft, lambda proposed, _: proposed), acts_at_broker=False)
    _, sent, violations = await gate.handle("execute_trade", "agent-1", {},
                                            lambda agent: gate.execute(agent, proposal.id))
    assert sent is not None and sent.status == "pending_new", violations
    return proposal.id


async def test_alpaca_orders_answered_open_bring_the_next_poll_forward(db_url: str,
                                                                    alpaca_server: AlpacaContractServer) -> None:
    roomy = trader(max_position_size=10**6, max_daily_trades=100, max_orders_per_window=100)  # room for the flow
    async with open_runtime(alpaca_config(db_url, alpaca_server, roomy), reconcile=False) as runtime:
        reconciler = Reconciler(runtime.gate, interval=3600, poll_interval=3600)  # no poll comes by the clock
        running = asyncio.create_task(reconciler.run())
        try:
            assert await reconciler.wait_first_pass(10)
            first = len(alpaca_server.requests)
            waiting = [await placed_through_the_gate(runtime, qty) for qty in range(1, SETTLE_AFTER_ORDERS)]
            await asyncio.sleep(0.3)
            assert {(await trade(db_url, i)).status for i in waiting} == {"pending_new"}  # not polled yet
            waiting.append(await placed_through_the_gate(runtime, SETTLE_AFTER_ORDERS))
            await eventually(lambda: read(db_url, select(AgentTrade.status)), lambda found: set(found) == {"filled"})
        finally:
            reconciler.stop()
            await asyncio.wait_for(running, 10)
    assert await positions(db_url) == {("agent-1", "AAPL"): Decimal(sum(range(1, SETTLE_AFTER_ORDERS + 1)))}
    # One poll for them all (its two listings), besides the orders themselves and their market data.
    polls = [read for read in trading_reads_since(alpaca_server, first) if read[0] == "/v2/orders" and read[1]]
    assert polls == [("/v2/orders", "open"), ("/v2/orders", "closed")]


async def test_alpaca_orders_older_than_the_closed_listing_are_still_looked_up_one_by_one(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    async with open_runtime(alpaca_config(db_url, alpaca_server), reconcile=False) as runtime:
        recent = [await submitted_at_alpaca(runtime, age=timedelta(seconds=3)) for _ in range(2)]
        old = await submitted_at_alpaca(runtime, age=RECENT_CLOSED + timedelta(minutes=1))
        first = len(alpaca_server.requests)
        resolved = await Reconciler(runtime.gate).poll()
    assert resolved == 3
    assert trading_reads_since(alpaca_server, first) == [
        ("/v2/orders", "open"), ("/v2/orders", "closed"), ("/v2/orders:by_client_order_id", "")]
    assert [(await trade(db_url, i)).status for i in [*recent, old]] == ["filled"] * 3


async def test_alpaca_a_failed_closed_listing_falls_back_to_one_look_up_per_order(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    async with open_runtime(alpaca_config(db_url, alpaca_server), reconcile=False) as runtime:
        filled = [await submitted_at_alpaca(runtime, age=timedelta(seconds=3)) for _ in range(2)]
        broker = runtime.gate.broker
        assert isinstance(broker, AlpacaBroker)
        alpaca_server.fail_next("/v2/orders", method="GET", query={"status": "closed"}, status=500,
                                times=1 + broker.read_retries)
        broker.retry_backoff = 0.01
        first = len(alpaca_server.requests)
        resolved = await Reconciler(runtime.gate).poll()
    assert resolved == 2
    assert trading_reads_since(alpaca_server, first) == [
        ("/v2/orders", "open"), *[("/v2/orders", "closed")] * (1 + broker.read_retries),
        ("/v2/orders:by_client_order_id", ""), ("/v2/orders:by_client_order_id", "")]
    assert [(await trade(db_url, i)).status for i in filled] == ["filled"] * 2


@pytest.mark.parametrize(("while_down", "expected_status", "expected_qty"), [
    ("partial_fill", "partially_filled", Decimal(1)),
    ("fill", "filled", Decimal(3)),
    ("cancel", "canceled", Decimal(0)),
    ("expire", "expired", Decimal(0)),
])
async def test_alpaca_changes_while_the_server_was_down_are_applied_at_start(
        db_url: str, alpaca_server: AlpacaContractServer, while_down: str, expected_status: str,
        expected_qty: Decimal) -> None:
    config = alpaca_config(db_url, alpaca_server)
    alpaca_server.set_price("AAPL", "190.00")
    async with connect(config) as client:
        proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=3, order_type="limit",
                              limit_price="189.50", time_in_force="gtc", reasoning="rest")
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
        assert executed["status"] == "submitted"
    order_id = proposal["proposal_id"]
    if while_down == "partial_fill":
        alpaca_server.fill_order(order_id, qty="1", price="189.40")
    elif while_down == "fill":
        alpaca_server.fill_order(order_id, price="189.40")
    elif while_down == "cancel":
        alpaca_server.cancel_order(order_id)
    else:
        alpaca_server.expire_order(order_id)
    async with open_runtime(config) as runtime:
        settled = await trade(db_url, order_id)
        reserved = await open_buy_notional(runtime)
    assert (settled.status, settled.filled_qty) == (expected_status, expected_qty)
    held = await positions(db_url)
    assert held == ({("agent-1", "AAPL"): expected_qty} if expected_qty else {})
    assert alpaca_server.positions == ({"AAPL": expected_qty} if expected_qty else {})
    # Still resting after a partial fill: the rest stays reserved; a final order reserves nothing.
    assert (reserved > 0) == (expected_status == "partially_filled")
    [record] = await reconcile_records(db_url)
    assert f'"to":"{expected_status}"' in record.payload
    report = await reconciliation(db_url)
    assert report is not None and report["drift"] == {} and report["resolved"] == 1


async def test_alpaca_position_no_agent_holds_is_drift_in_status(db_url: str, alpaca_server: AlpacaContractServer,
                                                                 tmp_path: Path) -> None:
    """Someone traded the account outside tradewarden: the account holds shares no agent does."""
    broker = AlpacaBroker(**alpaca_server.broker_kwargs())
    await broker.submit_order(SubmitOrder(client_order_id=str(uuid.uuid4()), order=OrderRequest(
        symbol="MSFT", side="buy", qty=Decimal(3))))
    await broker.close()
    config = alpaca_config(db_url, alpaca_server)
    async with open_runtime(config) as runtime:
        assert runtime.reconciler is not None and runtime.reconciler.last_report is not None
        assert runtime.reconciler.last_report.drift == {"MSFT": {"ours": "0", "broker": "3"}}
    shown = _status(tmp_path, db_url, f'broker = "alpaca"\nalpaca_trading_url = "{alpaca_server.trading_url}"\n'
                                      f'alpaca_data_url = "{alpaca_server.data_url}"\n')
    assert shown.returncode == 0, shown.stderr
    assert "DRIFT" in shown.stdout and "MSFT: ours 0  broker 3" in shown.stdout
    async with open_runtime(config, reconcile=False) as runtime, runtime.sessions() as session:
        assert (await session.execute(select(AgentTrade))).scalars().all() == []  # nothing was invented


async def test_alpaca_two_replicas_polling_the_same_fills_at_once_book_each_fill_once(
        database_url: str, alpaca_server: AlpacaContractServer) -> None:
    config = alpaca_config(database_url, alpaca_server)
    async with open_runtime(config, reconcile=False) as one, open_runtime(config, reconcile=False) as two:
        filled = [await submitted_at_alpaca(one, age=timedelta(seconds=3)) for _ in range(3)]
        capital = (await one.gate.load_agent("agent-1")).limits.capital
        resolved = await asyncio.gather(Reconciler(one.gate).poll(), Reconciler(two.gate).poll())
        _, usage = await one.gate.usage_today(await one.gate.load_agent("agent-1"))
    assert sum(resolved) == 3  # each order applied by one replica; the other found nothing left to change
    settled = [await trade(database_url, i) for i in filled]
    assert {(t.status, t.filled_qty) for t in settled} == {("filled", Decimal(1))}
    assert await positions(database_url) == {("agent-1", "AAPL"): Decimal(3)}
    [account] = await read(database_url, select(AgentAccount).where(AgentAccount.agent_id == "agent-1"))
    assert account.cash == capital - sum(t.price for t in settled if t.price is not None)  # paid once each
    assert usage.open_buy_notional == 0  # the reservations released with the fills
    assert len(await reconcile_records(database_url)) == 3
    booked = [r for r in await audit_records(database_url, "system:ledger") if r.kind == events.KIND_POSITION]
    assert len(booked) == 3 and '"qty":"3"' in booked[-1].payload
