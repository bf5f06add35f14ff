"""A real `tradewarden serve --transport http` process (SQLite) through the SDK's streamable HTTP client.

Bearer tokens decide who calls (401 without one, the SDK's protected-resource metadata), tokens from the
command line work at once and stop working at once when rotated, a disabled agent is refused and audited,
one agent cannot reach another's proposals or positions, tool calls are rate limited per agent (audited),
and /healthz and /metrics answer without a token and without secrets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from ledger import db
from ledger.models import AgentPermissions, AuditEvent
from tests.cli_probe import create_ledger
from tests.server.http_servers import ServerProcess, cli, last_line, mcp_client, start_server

SPEC_TOOLS = {"get_market_data", "propose_trade", "execute_trade", "get_positions", "get_orders", "cancel_order",
              "get_trading_status"}
BUY = {"symbol": "BTC/USD", "side": "buy", "notional": 50, "time_in_force": "gtc", "reasoning": "http test"}


def write_config(path: Path, db_url: str, **server: Any) -> Path:
    lines = ["[server]", f'database_url = "{db_url}"', "enforce_market_hours = false",
             "max_agents_per_account = 50"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in server.items()]
    lines += ["", "[[agents]]", 'id = "config-agent"']
    path.write_text("\n".join(lines) + "\n")
    return path


class Deployment:
    def __init__(self, config: Path, server: ServerProcess, db_url: str):
        self.config, self.server, self.db_url = config, server, db_url

    def add_agent(self, agent_id: str, *options: str) -> str:
        result = cli(self.config, "agents", "add", agent_id, "--symbols", "*", "--approval", "auto", *options)
        return last_line(result.stdout)

    async def audit(self, kind: str | None = None) -> list[AuditEvent]:
        engine = db.create_engine(self.db_url)
        try:
            async with db.session_factory(engine)() as session:
                query = select(AuditEvent).order_by(AuditEvent.seq)
                if kind:
                    query = query.where(AuditEvent.kind == kind)
                return list((await session.execute(query)).scalars())
        finally:
            await engine.dispose()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("http")
    db_url = f"sqlite+aiosqlite:///{root / 'http.db'}"
    config = write_config(root / "tradewarden.toml", db_url, requests_per_minute=1000)
    server = start_server(config, root)
    try:
        yield Deployment(config, server, db_url)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A second server: 3 tool calls a minute per agent, and the benchmark's hidden no-op tool enabled."""
    root = tmp_path_factory.mktemp("http-limited")
    db_url = f"sqlite+aiosqlite:///{root / 'limited.db'}"
    config = write_config(root / "tradewarden.toml", db_url, requests_per_minute=3)
    server = start_server(config, root, env={"TRADEWARDEN_BENCH_NOOP": "1"})
    try:
        yield Deployment(config, server, db_url)
    finally:
        server.stop()


# --- authentication -------------------------------------------------------------------------------

def test_requests_without_a_valid_token_get_401_with_the_resource_metadata(deployment: Deployment) -> None:
    server = deployment.server
    metadata_url = f"{server.base}/.well-known/oauth-protected-resource/mcp"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    for headers in ({}, {"Authorization": "Bearer tw_not-a-real-token-at-all-000000000"},
                    {"Authorization": "Basic dXNlcjpwYXNz"}):
        response = httpx2.post(server.url, json=body, headers={**headers, "Accept": "application/json, "
                                                                                   "text/event-stream"})
        assert response.status_code == 401, (headers, response.text)
        challenge = response.headers["www-authenticate"]
        assert challenge.lower().startswith("bearer") and metadata_url in challenge
    metadata = httpx2.get(metadata_url).json()
    assert metadata["resource"] == server.url
    assert metadata["bearer_methods_supported"] == ["header"]
    assert metadata["scopes_supported"] == ["trade"]


async def test_a_bad_token_fails_the_sdk_client(deployment: Deployment) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the SDK reports the 401 as its own error type
        async with asyncio.timeout(20), mcp_client(deployment.server.url, "tw_wrong") as client:
            await client.list_tools()


async def test_a_token_from_the_command_line_acts_for_its_agent_and_only_its_hash_is_stored(
        deployment: Deployment) -> None:
    token = deployment.add_agent("http-new")
    assert token.startswith("tw_")
    async with mcp_client(deployment.server.url, token) as client:
        assert {t.name for t in (await client.list_tools()).tools} == SPEC_TOOLS
        status = await client.call_tool("get_trading_status", {})
        assert status.structured_content["agent_id"] == "http-new"
        # An agent_id argument changes nothing: the token decides.
        spoof = await client.call_tool("get_trading_status", {"agent_id": "config-agent"})
        assert spoof.is_error or spoof.structured_content["agent_id"] == "http-new"
    engine = db.create_engine(deployment.db_url)
    async with db.session_factory(engine)() as session:
        row = await session.get(AgentPermissions, "http-new")
    await engine.dispose()
    assert row is not None and row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    database_bytes = Path(deployment.db_url.split("///", 1)[1]).read_bytes()
    assert token.encode() not in database_bytes
    assert token not in deployment.server.log_tail(10**7)


async def test_rotating_a_token_stops_the_old_one_at_once(deployment: Deployment) -> None:
    old = deployment.add_agent("http-rotate")
    async with mcp_client(deployment.server.url, old) as client:
        assert not (await client.call_tool("get_trading_status", {})).is_error
    new = last_line(cli(deployment.config, "agents", "rotate-token", "http-rotate").stdout)
    assert new != old and new.startswith("tw_")
    refused = httpx2.post(deployment.server.url, headers={"Authorization": f"Bearer {old}"},
                          json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
    assert refused.status_code == 401
    async with mcp_client(deployment.server.url, new) as client:
        status = await client.call_tool("get_trading_status", {})
    assert status.structured_content["agent_id"] == "http-rotate"


async def test_a_disabled_agent_is_refused_with_agent_disabled_and_audited(deployment: Deployment) -> None:
    token = deployment.add_agent("http-disable")
    cli(deployment.config, "agents", "disable", "http-disable")
    async with mcp_client(deployment.server.url, token) as client:
        result = await client.call_tool("propose_trade", BUY)
        status = await client.call_tool("get_trading_status", {})
    for refused in (result, status):
        assert refused.is_error and refused.content[0].text.startswith("AGENT_DISABLED")  # type: ignore[union-attr]
    denied = [e for e in await deployment.audit("tool.denied") if e.agent_id == "http-disable"]
    assert len(denied) == 2 and all("AGENT_DISABLED" in e.payload for e in denied)


async def test_one_agents_token_cannot_reach_another_agents_proposals_or_positions(deployment: Deployment) -> None:
    token_a = deployment.add_agent("http-a")
    token_b = deployment.add_agent("http-b")
    async with mcp_client(deployment.server.url, token_b) as b:
        proposal = (await b.call_tool("propose_trade", BUY)).structured_content
        assert proposal["status"] == "approved", proposal
        filled = await b.call_tool("execute_trade", {"proposal_id": proposal["proposal_id"]})
        assert filled.structured_content["status"] == "filled"
        second = (await b.call_tool("propose_trade", {**BUY, "notional": 60})).structured_content
    async with mcp_client(deployment.server.url, token_a) as a:
        stolen = await a.call_tool("execute_trade", {"proposal_id": second["proposal_id"]})
        cancel = await a.call_tool("cancel_order", {"order_id": proposal["proposal_id"]})
        positions = await a.call_tool("get_positions", {"agent_id": "http-b"})
        orders = await a.call_tool("get_orders", {"status": "all"})
    assert stolen.is_error and stolen.content[0].text.startswith("PROPOSAL_NOT_FOUND")  # type: ignore[union-attr]
    assert cancel.is_error and cancel.content[0].text.startswith("ORDER_NOT_FOUND")  # type: ignore[union-attr]
    assert positions.is_error or positions.structured_content["positions"] == []
    assert orders.structured_content["orders"] == []
    denied = [e for e in await deployment.audit("tool.denied") if e.agent_id == "http-a"]
    assert {json.loads(e.payload)["codes"][0] for e in denied} >= {"PROPOSAL_NOT_FOUND", "ORDER_NOT_FOUND"}


def test_max_agents_per_account_is_enforced_at_registration(tmp_path: Path) -> None:
    config = tmp_path / "tradewarden.toml"
    config.write_text(f'[server]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "max.db"}"\n'
                      'max_agents_per_account = 2\n\n[[agents]]\nid = "one"\n')
    create_ledger(config)
    assert last_line(cli(config, "agents", "add", "two").stdout).startswith("tw_")
    refused = cli(config, "agents", "add", "three", check=False)
    assert refused.returncode == 1
    assert "max_agents_per_account is 2" in refused.stderr and "tw_" not in refused.stdout


# --- rate limiting ----------------------------------------------------------------------------------

async def test_tool_calls_over_the_per_agent_rate_are_refused_and_audited(limited: Deployment) -> None:
    token = limited.add_agent("rl-a")
    other = limited.add_agent("rl-b")
    async with mcp_client(limited.server.url, token) as client:
        results = [await client.call_tool("get_trading_status", {}) for _ in range(5)]
        listed = await client.list_tools()  # listing is not limited
    assert [r.is_error for r in results] == [False, False, False, True, True]
    text = results[3].content[0].text  # type: ignore[union-attr]
    assert text.startswith("RATE_LIMITED") and "3 tool calls" in text and "retry in" in text
    assert listed.tools
    async with mcp_client(limited.server.url, other) as client:  # another agent has its own allowance
        assert not (await client.call_tool("get_trading_status", {})).is_error
    records = [e for e in await limited.audit("tool.rate_limited") if e.agent_id == "rl-a"]
    assert len(records) == 2 and json.loads(records[0].payload)["code"] == "RATE_LIMITED"
    metrics = httpx2.get(f"{limited.server.base}/metrics").text
    assert 'tradewarden_tool_denials_total{code="RATE_LIMITED"} 2.0' in metrics


async def test_the_bench_noop_tool_exists_only_when_asked_for(deployment: Deployment, limited: Deployment) -> None:
    token = deployment.add_agent("http-tools")
    async with mcp_client(deployment.server.url, token) as client:
        assert {t.name for t in (await client.list_tools()).tools} == SPEC_TOOLS
    token = limited.add_agent("noop-user")
    async with mcp_client(limited.server.url, token) as client:
        assert {t.name for t in (await client.list_tools()).tools} == SPEC_TOOLS | {"bench_noop"}
        assert not (await client.call_tool("bench_noop", {})).is_error


# --- health and metrics ---------------------------------------------------------------------------

def test_healthz_reports_database_broker_and_halt_without_a_token(deployment: Deployment) -> None:
    response = httpx2.get(f"{deployment.server.base}/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["trading_mode"] == "paper"
    assert body["database"]["ok"] is True and body["broker"] == {**body["broker"], "ok": True, "name": "simulated"}
    assert body["trading"]["halted"] is False
    cli(deployment.config, "halt", "--reason", "health check test")
    try:
        halted = httpx2.get(f"{deployment.server.base}/healthz")
        assert halted.status_code == 200  # halted is a state, not ill health: reads and cancels still work
        assert halted.json()["trading"] == {"halted": True, "state": "halted", "reason": "health check test"}
        assert "tradewarden_trading_halted 1.0" in httpx2.get(f"{deployment.server.base}/metrics").text
    finally:
        cli(deployment.config, "resume")


async def test_metrics_count_calls_outcomes_denials_and_latency_without_secrets(deployment: Deployment) -> None:
    token = deployment.add_agent("http-metrics", "--max-trade-size", "100")
    async with mcp_client(deployment.server.url, token) as client:
        ok = (await client.call_tool("propose_trade", BUY)).structured_content
        await client.call_tool("execute_trade", {"proposal_id": ok["proposal_id"]})
        await client.call_tool("propose_trade", {**BUY, "notional": 5000})  # ORDER_NOTIONAL_EXCEEDS_MAX
        await client.call_tool("propose_trade", {**BUY, "side": "hold"})  # invalid input
    httpx2.post(deployment.server.url, json={}, headers={"Authorization": "Bearer tw_bad"})
    response = httpx2.get(f"{deployment.server.base}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'tradewarden_tool_calls_total{outcome="ok",tool="propose_trade"}' in text
    assert 'tradewarden_tool_calls_total{outcome="denied",tool="propose_trade"}' in text
    assert 'tradewarden_tool_denials_total{code="ORDER_NOTIONAL_EXCEEDS_MAX"}' in text
    assert 'tradewarden_tool_denials_total{code="INVALID_ORDER"}' in text
    assert 'tradewarden_tool_call_duration_seconds_bucket{le="0.5",tool="execute_trade"}' in text
    assert "tradewarden_open_orders" in text and "tradewarden_http_unauthorized_total" in text
    unauthorized = [line for line in text.splitlines() if line.startswith("tradewarden_http_unauthorized_total")]
    assert float(unauthorized[0].split()[-1]) >= 1
    assert token not in text and "tw_" not in text and "Bearer" not in text and "http test" not in text


def test_a_request_body_over_64_kilobytes_is_refused_with_invalid_argument(deployment: Deployment) -> None:
    token = deployment.add_agent("big-body")
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": "cancel_order", "arguments": {"order_id": "7" * 100_000}}}
    response = httpx2.post(deployment.server.url, json=body,
                           headers={"Authorization": f"Bearer {token}",
                                    "Accept": "application/json, text/event-stream"})
    assert response.status_code == 413
    assert response.json()["error"]["message"].startswith("INVALID_ARGUMENT")


def _chunked(body: bytes, size: int = 8192) -> Iterator[bytes]:
    """The body as a stream: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


def test_a_chunked_body_over_64_kilobytes_is_refused_with_invalid_argument(deployment: Deployment) -> None:
    token = deployment.add_agent("big-chunked-body")
    body = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                       "params": {"name": "cancel_order", "arguments": {"order_id": "7" * 1_000_000}}}).encode()
    response = httpx2.post(deployment.server.url, content=_chunked(body),
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                    "Accept": "application/json, text/event-stream"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"]["message"].startswith("INVALID_ARGUMENT: a request body of more than 65536")


def test_a_chunked_body_within_the_limit_is_served(deployment: Deployment) -> None:
    token = deployment.add_agent("small-chunked-body")
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "chunked", "version": "1"}}}).encode()
    response = httpx2.post(deployment.server.url, content=_chunked(body, size=16),
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                    "Accept": "application/json, text/event-stream"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 200, response.text
    assert "serverInfo" in response.text
