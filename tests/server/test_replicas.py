"""Two `tradewarden serve --transport http` replicas on one PostgreSQL database behave as one server.

The replicas are real processes (loopback, free ports), started at the same moment on an empty database
(they race for the migrations and start-up on purpose). Agents reach them through the SDK's streamable
HTTP client, each with its own bearer token, through a load balancer in the client (`RoundRobin`: every
HTTP request goes to the other replica). Limits hold across them, each proposal gives one order, the audit
log stays one valid chain, a halt from the command line stops both within a second, a multi-round approval
finishes on the other replica, and bad tokens, disabled agents and other agents' proposals are refused
(and audited) everywhere.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitResult
from sqlalchemy import func, select

from ledger import db
from ledger.models import AgentTrade, AuditEvent, SimOrder, TradingState
from policies import audit
from policies.agents import add_agent
from server.config import AgentConfig
from tests.postgres import PostgresServer
from tests.server.http_servers import RoundRobin, ServerProcess, cli, mcp_client, start_servers, wait_for

pytestmark = pytest.mark.postgres

BUY = {"symbol": "BTC/USD", "side": "buy", "notional": 20, "time_in_force": "gtc", "reasoning": "replica test"}


class Replicas:
    def __init__(self, config: Path, servers: list[ServerProcess], db_url: str):
        self.config, self.servers, self.db_url = config, servers, db_url

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def balanced(self, token: str, **options: Any) -> Any:
        """An MCP client whose HTTP requests alternate between the replicas."""
        balancer = RoundRobin(self.ports)
        return mcp_client(self.servers[0].url, token, transport=balancer, **options), balancer

    async def register(self, agent_id: str, **limits: Any) -> str:
        options: dict[str, Any] = {"allowed_symbols": ["*"], "approval": "auto", "auto_approve_max_notional": 5000,
                                   "max_orders_per_window": 1000, "duplicate_window_seconds": 0, **limits}
        engine = db.create_engine(self.db_url)
        try:
            async with db.transaction(db.session_factory(engine)) as session:
                return await add_agent(session, AgentConfig(id=agent_id, **options), max_agents=100,
                                       actor="operator:test", now=_now())
        finally:
            await engine.dispose()

    async def query(self, statement: Any) -> Any:
        engine = db.create_engine(self.db_url)
        try:
            async with db.session_factory(engine)() as session:
                return (await session.execute(statement)).all()
        finally:
            await engine.dispose()

    async def verify_audit(self) -> audit.VerifyReport:
        engine = db.create_engine(self.db_url)
        try:
            async with db.session_factory(engine)() as session:
                return await audit.verify(session)
        finally:
            await engine.dispose()


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


@pytest.fixture(scope="module")
def replicas(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    db_url = pg_server.create_database("replicas")
    config = root / "tradewarden.toml"
    config.write_text("\n".join([
        "[server]", f'database_url = "{db_url}"', "enforce_market_hours = false", "max_agents_per_account = 100",
        'server_name = "tradewarden-replicated"', f'request_state_keys = ["{secrets.token_hex(32)}"]',
        "requests_per_minute = 100000", ""]))
    servers = start_servers(config, root, 2)
    try:
        yield Replicas(config, servers, db_url)
    finally:
        for server in servers:
            server.stop()


def _text(result: Any) -> str:
    return result.content[0].text if result.is_error else json.dumps(result.structured_content)


async def test_many_agents_on_two_replicas_never_exceed_limits_and_send_one_order_per_proposal(
        replicas: Replicas) -> None:
    agents = {f"load-{i}": await replicas.register(f"load-{i}", max_daily_trades=5) for i in range(4)}

    async def agent_session(agent_id: str, token: str) -> tuple[str, list[str], list[Any]]:
        connection, balancer = replicas.balanced(token)
        async with connection as client:
            proposals = await asyncio.gather(*(client.call_tool("propose_trade", {**BUY, "reasoning": f"{i}"})
                                               for i in range(8)))
            ids = [p.structured_content["proposal_id"] for p in proposals]
            assert all(p.structured_content["status"] == "approved" for p in proposals), proposals
            # Every proposal executed twice at once: the two calls land on different replicas.
            executions = await asyncio.gather(*(client.call_tool("execute_trade", {"proposal_id": p})
                                                for p in ids + ids))
        assert all(balancer.sent[port] > 0 for port in replicas.ports)
        return agent_id, ids, executions

    started = time.monotonic()
    results = await asyncio.gather(*(agent_session(a, t) for a, t in agents.items()))
    elapsed = time.monotonic() - started
    for agent_id, _ids, executions in results:
        assert not [e for e in executions if e.is_error], [_text(e) for e in executions if e.is_error]
        by_proposal: dict[str, set[str]] = {}
        for execution in executions:
            content = execution.structured_content
            by_proposal.setdefault(content["proposal_id"], set()).add(content["status"])
        # The call that loses the race to send a proposal's order reports that order (filled, or still in
        # flight); the other proposals are rejected with the reason, by both calls.
        sent = [p for p, statuses in by_proposal.items() if statuses <= {"filled", "submitted"}]
        refused = [p for p, statuses in by_proposal.items() if statuses == {"rejected"}]
        assert len(sent) == 5 and len(refused) == 3, (agent_id, by_proposal)
        for execution in executions:
            content = execution.structured_content
            if content["status"] == "rejected":
                assert [v["code"] for v in content["violations"]] == ["DAILY_TRADES_EXCEEDED"], content
    trades = await replicas.query(select(AgentTrade.agent_id, func.count()).where(
        AgentTrade.agent_id.in_(list(agents))).group_by(AgentTrade.agent_id))
    assert dict(trades) == dict.fromkeys(agents, 5)
    orders = await replicas.query(select(SimOrder.client_order_id, func.count()).group_by(SimOrder.client_order_id)
                                  .having(func.count() > 1))
    assert orders == []  # one broker order per proposal
    report = await replicas.verify_audit()
    assert report.ok, report.problems
    assert elapsed < 60


async def test_the_audit_chain_stays_one_chain_and_the_cli_verifies_it(replicas: Replicas) -> None:
    tokens = [await replicas.register(f"chain-{i}") for i in range(3)]

    async def burst(token: str) -> None:
        connection, _ = replicas.balanced(token)
        async with connection as client:
            await asyncio.gather(*(client.call_tool(tool, {}) for tool in ["get_trading_status", "get_orders"] * 5))

    await asyncio.gather(*(burst(t) for t in tokens))
    verified = cli(replicas.config, "audit", "verify")
    assert "audit chain OK" in verified.stdout
    seqs = [row[0] for row in await replicas.query(select(AuditEvent.seq).order_by(AuditEvent.seq))]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_halt_from_the_command_line_stops_both_replicas_within_a_second(replicas: Replicas) -> None:
    token = await replicas.register("halt-agent", max_daily_trades=1000)
    clients = [mcp_client(server.url, token) for server in replicas.servers]
    async with clients[0] as first, clients[1] as second:
        both: list[Client] = [first, second]
        stop = asyncio.Event()
        traded = Counter[int]()

        async def trade_continuously(index: int) -> None:
            client = both[index]
            while not stop.is_set():
                proposal = await client.call_tool("propose_trade", BUY)
                if proposal.structured_content["status"] == "approved":
                    result = await client.call_tool("execute_trade",
                                                    {"proposal_id": proposal.structured_content["proposal_id"]})
                    traded[index] += result.structured_content["status"] == "filled"

        traders = [asyncio.create_task(trade_continuously(i)) for i in (0, 1)]
        try:
            await wait_for(lambda: _true(traded[0] > 0 and traded[1] > 0), 30)
            await asyncio.to_thread(cli, replicas.config, "halt", "--reason", "replica halt test")
            halted_at = time.monotonic()

            async def refused_everywhere() -> bool:
                results = await asyncio.gather(*(c.call_tool("propose_trade", BUY) for c in both))
                return all("TRADING_HALTED" in _text(r) for r in results)

            took = await wait_for(refused_everywhere, 1.0, interval=0.02)
            assert time.monotonic() - halted_at < 1.0 + took
        finally:
            stop.set()
            await asyncio.gather(*traders, return_exceptions=True)
            halted_health = [httpx2.get(f"{server.base}/healthz").json() for server in replicas.servers]
            [(changed_at,)] = await replicas.query(select(TradingState.changed_at).where(TradingState.scope == "*"))
            await asyncio.to_thread(cli, replicas.config, "resume")
        assert all(health["trading"]["halted"] is True for health in halted_health)
        late = await replicas.query(select(AgentTrade.id).where(AgentTrade.agent_id == "halt-agent",
                                                                AgentTrade.created_at > changed_at))
        assert late == []  # no order was decided after the halt committed, on either replica
        for client in both:
            resumed = await client.call_tool("propose_trade", BUY)
            assert resumed.structured_content["status"] == "approved", _text(resumed)


async def _true(value: bool) -> bool:
    return value


async def test_a_multi_round_approval_finishes_on_the_other_replica(replicas: Replicas) -> None:
    token = await replicas.register("elicit-agent", approval="elicit")
    shown: list[str] = []

    async def person(_ctx: Any, params: ElicitRequestParams) -> ElicitResult:
        shown.append(params.message)
        return ElicitResult(action="accept", content={"approve": True, "note": "ok from the client"})

    connection, balancer = replicas.balanced(token, elicitation_callback=person, mode="2026-07-28")
    async with connection as client:
        proposal = (await client.call_tool("propose_trade", BUY)).structured_content
        assert proposal["status"] == "pending_approval"
        before = dict(balancer.sent)
        executed = await client.call_tool("execute_trade", {"proposal_id": proposal["proposal_id"]})
    assert executed.structured_content["status"] == "filled", _text(executed)
    assert len(shown) == 1
    # The first round and the answered retry went to different replicas (shared request-state keys).
    assert all(balancer.sent[port] - before[port] >= 1 for port in replicas.ports), (before, balancer.sent)
    approvals = await replicas.query(select(AuditEvent.kind).where(AuditEvent.agent_id == "elicit-agent",
                                                                   AuditEvent.kind == "approval.approved"))
    assert len(approvals) == 1
    asked = 'tradewarden_tool_calls_total{outcome="input_required",tool="execute_trade"}'
    metrics = [httpx2.get(f"{server.base}/metrics").text for server in replicas.servers]
    assert any(asked in text for text in metrics), "the round that asked the person is counted"


async def test_an_operator_approval_applies_on_every_replica(replicas: Replicas) -> None:
    token = await replicas.register("operator-agent", approval="operator")
    first, second = (mcp_client(server.url, token) for server in replicas.servers)
    async with first as a, second as b:
        proposal = (await a.call_tool("propose_trade", BUY)).structured_content
        assert proposal["status"] == "pending_approval"
        waiting = (await b.call_tool("execute_trade", {"proposal_id": proposal["proposal_id"]})).structured_content
        assert waiting["status"] == "awaiting_approval"
        await asyncio.to_thread(cli, replicas.config, "approvals", "approve", proposal["proposal_id"])
        results = await asyncio.gather(*(client.call_tool("execute_trade", {"proposal_id": proposal["proposal_id"]})
                                         for client in (a, b, a, b)))
    statuses = [r.structured_content["status"] for r in results]
    assert "filled" in statuses and set(statuses) <= {"filled", "submitted"}, statuses  # the one order
    orders = await replicas.query(select(func.count()).select_from(SimOrder)
                                  .where(SimOrder.client_order_id == proposal["proposal_id"]))
    assert orders == [(1,)]


async def test_bad_tokens_disabled_agents_and_other_agents_proposals_are_refused_everywhere(
        replicas: Replicas) -> None:
    token_a = await replicas.register("owner-a")
    token_b = await replicas.register("owner-b")
    for server in replicas.servers:
        response = httpx2.post(server.url, headers={"Authorization": "Bearer tw_forged-token-000000000000000000"},
                               json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
        assert response.status_code == 401
    async with mcp_client(replicas.servers[0].url, token_b) as b:
        proposal = (await b.call_tool("propose_trade", BUY)).structured_content
    for server in replicas.servers:
        async with mcp_client(server.url, token_a) as a:
            stolen = await a.call_tool("execute_trade", {"proposal_id": proposal["proposal_id"]})
            positions = (await a.call_tool("get_positions", {})).structured_content
        assert stolen.is_error and _text(stolen).startswith("PROPOSAL_NOT_FOUND")
        assert positions["positions"] == []
    await asyncio.to_thread(cli, replicas.config, "agents", "disable", "owner-b")
    for server in replicas.servers:
        async with mcp_client(server.url, token_b) as b:
            refused = await b.call_tool("execute_trade", {"proposal_id": proposal["proposal_id"]})
        assert refused.is_error and _text(refused).startswith("AGENT_DISABLED")
    denied = await replicas.query(select(AuditEvent.agent_id, AuditEvent.payload)
                                  .where(AuditEvent.kind == "tool.denied",
                                         AuditEvent.agent_id.in_(["owner-a", "owner-b"])))
    codes = Counter((agent_id, json.loads(payload)["codes"][0]) for agent_id, payload in denied)
    assert codes[("owner-a", "PROPOSAL_NOT_FOUND")] == 2 and codes[("owner-b", "AGENT_DISABLED")] == 2
    orders = await replicas.query(select(func.count()).select_from(SimOrder)
                                  .where(SimOrder.client_order_id == proposal["proposal_id"]))
    assert orders == [(0,)]
