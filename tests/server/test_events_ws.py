"""The operators' event stream at /api/events/ws, on a real HTTP server, with a real WebSocket client, while real
MCP clients trade and the real command line approves, halts and resumes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets

from server.config import AgentConfig, load_config
from tests.server.event_servers import (
    OPERATOR_TOKEN,
    collect,
    event_stream,
    receive,
    register,
    serving,
    until_replayed,
)
from tests.server.http_servers import cli, mcp_client

BUY = {"symbol": "BTC/USD", "side": "buy", "notional": 20, "time_in_force": "gtc", "reasoning": "events test"}


@dataclass
class Stream:
    base: str
    config: Path
    tokens: dict[str, str]


def write_config(path: Path, db_url: str) -> Path:
    path.write_text("\n".join(["[server]", f'database_url = "{db_url}"', "enforce_market_hours = false",
                               "requests_per_minute = 100000", ""]))
    return path


@pytest.fixture
async def stream(tmp_path: Path) -> AsyncIterator[Stream]:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    config_path = write_config(tmp_path / "tradewarden.toml", db_url)
    cli(config_path, "db", "upgrade")
    tokens = {"auto-1": await register(db_url, AgentConfig(id="auto-1", allowed_symbols=["*"], approval="auto",
                                                            duplicate_window_seconds=0,
                                                            auto_approve_max_notional=5000)),
              "asks-1": await register(db_url, AgentConfig(id="asks-1", allowed_symbols=["*"], approval="operator")),
              "storm-1": await register(db_url, AgentConfig(id="storm-1", allowed_symbols=["BTC/USD"],
                                                             max_denials_per_window=2))}
    async with serving(load_config(str(config_path))) as base:
        yield Stream(base, config_path, tokens)


async def trade(stream: Stream, agent_id: str, tool: str, **args: Any) -> dict[str, Any]:
    async with mcp_client(f"{stream.base}/mcp", stream.tokens[agent_id]) as client:
        result = await client.call_tool(tool, args)
        assert not result.is_error, result
        return dict(result.structured_content or {})


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["message_type"] for e in events]


async def test_an_agents_token_or_none_is_refused_with_4401(stream: Stream) -> None:
    for token in (stream.tokens["auto-1"], None, "tw_not_a_token_at_all_0000000000"):
        async with event_stream(stream.base, token) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await receive(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_an_unknown_event_type_is_refused_with_4400(stream: Stream) -> None:
    async with event_stream(stream.base, types="agent.trade.nonsense") as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
    assert "INVALID_ARGUMENT" in closed.value.rcvd.reason


async def test_a_fill_gives_signal_executed_and_position_events_live(stream: Stream) -> None:
    async with event_stream(stream.base) as ws:
        assert await until_replayed(ws) == []
        proposal = await trade(stream, "auto-1", "propose_trade", **BUY)
        await trade(stream, "auto-1", "execute_trade", proposal_id=proposal["proposal_id"])
        events = await collect(ws, lambda es: "agent.position.updated" in types_of(es))
    assert types_of(events) == ["agent.trade.signal", "agent.trade.executed", "agent.position.updated"]
    signal, executed, position = events
    assert signal["agent_id"] == "auto-1" and signal["timestamp"].endswith("Z")
    assert {k: signal["payload"][k] for k in ("proposal_id", "symbol", "side", "notional", "status")} == {
        "proposal_id": proposal["proposal_id"], "symbol": "BTC/USD", "side": "buy", "notional": "20",
        "status": "approved"}
    assert executed["payload"]["proposal_id"] == proposal["proposal_id"]
    assert executed["payload"]["status"] == "filled" and executed["payload"]["filled_avg_price"]
    assert position["payload"]["symbol"] == "BTC/USD" and position["payload"]["qty"] == executed["payload"][
        "filled_qty"]
    assert [e["event_id"] for e in events] == sorted(e["event_id"] for e in events)


async def test_a_resting_order_and_its_cancel_are_order_updates(stream: Stream) -> None:
    async with event_stream(stream.base, types="agent.order.updated") as ws:
        await until_replayed(ws)
        proposal = await trade(stream, "auto-1", "propose_trade", symbol="BTC/USD", side="buy", qty="0.0001",
                               order_type="limit", limit_price="1", time_in_force="gtc", reasoning="rests")
        await trade(stream, "auto-1", "execute_trade", proposal_id=proposal["proposal_id"])
        await trade(stream, "auto-1", "cancel_order", order_id=proposal["proposal_id"])
        events = await collect(ws, lambda es: len(es) == 2)
    assert [e["payload"]["status"] for e in events][1] == "canceled"
    assert events[0]["payload"]["status"] in ("new", "accepted")
    assert {e["payload"]["order_id"] for e in events} == {proposal["proposal_id"]}


async def test_approval_requested_and_decided_by_the_operator_who_decided(stream: Stream) -> None:
    async with event_stream(stream.base, types="approval.requested,approval.decided") as ws:
        await until_replayed(ws)
        proposal = await trade(stream, "asks-1", "propose_trade", **BUY)
        requested = await receive(ws)
        cli(stream.config, "approvals", "approve", proposal["proposal_id"])
        decided = await receive(ws)
    assert requested["message_type"] == "approval.requested" and requested["agent_id"] == "asks-1"
    assert requested["payload"]["proposal_id"] == proposal["proposal_id"] and requested["payload"]["expires_at"]
    assert decided["message_type"] == "approval.decided"
    assert decided["payload"] == {"proposal_id": proposal["proposal_id"], "decision": "approved",
                                  "decided_by": "operator:cli", "via": "operator", "note": None, "trust": "operator"}


async def test_halt_and_resume_are_risk_alerts(stream: Stream) -> None:
    async with event_stream(stream.base, types="agent.risk.alert") as ws:
        await until_replayed(ws)
        cli(stream.config, "halt", "--reason", "lunch")
        cli(stream.config, "resume")
        halted, resumed = await collect(ws, lambda es: len(es) == 2)
    assert (halted["payload"]["severity"], halted["payload"]["code"]) == ("critical", "TRADING_HALTED")
    assert halted["payload"]["reason"] == "lunch" and halted["agent_id"] is None
    assert (resumed["payload"]["severity"], resumed["payload"]["code"]) == ("info", "TRADING_RESUMED")


async def test_a_denial_storm_trips_the_breaker_and_is_a_critical_alert(stream: Stream) -> None:
    async with event_stream(stream.base, types="agent.risk.alert", agent="storm-1") as ws:
        await until_replayed(ws)
        for _ in range(2):
            await trade(stream, "storm-1", "propose_trade", **{**BUY, "symbol": "SPY"})
        alert = await receive(ws)
    assert alert["agent_id"] == "storm-1"
    assert (alert["payload"]["severity"], alert["payload"]["code"]) == ("critical", "DENIAL_STORM")
    assert alert["payload"]["triggers"] == ["denials"] and alert["payload"]["state"] == "reducing"


async def test_replay_from_any_event_id_gives_exactly_the_events_after_it_then_live(stream: Stream) -> None:
    for _ in range(3):
        proposal = await trade(stream, "auto-1", "propose_trade", **BUY)
        await trade(stream, "auto-1", "execute_trade", proposal_id=proposal["proposal_id"])
    async with event_stream(stream.base, since=0) as ws:
        everything = await until_replayed(ws)
    assert len(everything) == 9
    ids = [e["event_id"] for e in everything]
    for since in [0, ids[0] - 1, *ids]:
        async with event_stream(stream.base, since=since) as ws:
            replayed = await until_replayed(ws)
            assert replayed == [e for e in everything if e["event_id"] > since]
            proposal = await trade(stream, "auto-1", "propose_trade", **{**BUY, "notional": 21})
            live = await receive(ws)
            assert live["message_type"] == "agent.trade.signal"
            assert live["payload"]["proposal_id"] == proposal["proposal_id"]
            assert live["event_id"] > ids[-1]
        ids.append(live["event_id"])
        everything.append(live)


async def test_filters_by_type_and_agent(stream: Stream) -> None:
    proposal = await trade(stream, "auto-1", "propose_trade", **BUY)
    await trade(stream, "auto-1", "execute_trade", proposal_id=proposal["proposal_id"])
    await trade(stream, "asks-1", "propose_trade", **BUY)
    async with event_stream(stream.base, since=0, agent="asks-1") as ws:
        assert types_of(await until_replayed(ws)) == ["agent.trade.signal", "approval.requested"]
    async with event_stream(stream.base, since=0, types="agent.trade.signal") as ws:
        assert [e["agent_id"] for e in await until_replayed(ws)] == ["auto-1", "asks-1"]


async def test_events_carry_no_secrets(stream: Stream) -> None:
    secret = stream.tokens["auto-1"]
    await trade(stream, "auto-1", "propose_trade", **{**BUY, "reasoning": f"my token is {secret}",
                                                       "strategy": "leak"})
    async with event_stream(stream.base, since=0) as ws:
        text = json.dumps(await until_replayed(ws))
    assert secret not in text and stream.tokens["asks-1"] not in text and OPERATOR_TOKEN not in text
    assert "my token is" not in text  # the agent's reasoning is not part of any event


async def test_metrics_an_operator_can_page_on(stream: Stream) -> None:
    import httpx2

    async with httpx2.AsyncClient() as http:
        await http.get(f"{stream.base}/metrics")  # the first scrape: counting starts here
        proposal = await trade(stream, "auto-1", "propose_trade", **BUY)
        await trade(stream, "auto-1", "execute_trade", proposal_id=proposal["proposal_id"])
        await trade(stream, "asks-1", "propose_trade", **BUY)
        for _ in range(2):
            await trade(stream, "storm-1", "propose_trade", **{**BUY, "symbol": "SPY"})
        cli(stream.config, "halt", "--reason", "metrics")
        async with event_stream(stream.base) as ws:
            await until_replayed(ws)
            await trade(stream, "auto-1", "propose_trade", **{**BUY, "notional": 22})
            await receive(ws)
        text = (await http.get(f"{stream.base}/metrics")).text
    lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line and not line.startswith("#")}
    assert lines["tradewarden_pending_approvals"] == 1
    assert lines['tradewarden_breaker_trips_total{agent="storm-1"}'] == 1
    assert lines['tradewarden_halts_total{scope="*"}'] == 1
    assert lines['tradewarden_risk_alerts_total{code="DENIAL_STORM",severity="critical"}'] == 1
    assert lines['tradewarden_agent_denials_total{agent="storm-1",code="SYMBOL_NOT_ALLOWED"}'] == 2
    assert lines['tradewarden_agent_tool_calls_total{agent="auto-1",outcome="ok",tool="execute_trade"}'] == 1
    assert 99_000 < lines['tradewarden_agent_equity{agent="auto-1"}'] < 101_000
    assert lines['tradewarden_agent_gross_exposure{agent="auto-1"}'] > 0
    assert lines['tradewarden_agent_limit_utilisation{agent="auto-1",limit="daily_loss"}'] >= 0
    assert 0 <= lines["tradewarden_event_lag_seconds"] < 5
    assert stream.tokens["auto-1"] not in text


@pytest.mark.postgres
async def test_two_replicas_on_postgresql_serve_the_same_stream_live(tmp_path: Path, pg_url: str) -> None:
    import time

    config_path = write_config(tmp_path / "tradewarden.toml", pg_url)
    cli(config_path, "db", "upgrade")
    token = await register(pg_url, AgentConfig(id="rep-1", allowed_symbols=["*"], duplicate_window_seconds=0))
    config = load_config(str(config_path))
    async with serving(config) as first, serving(config) as second:
        stream = Stream(first, config_path, {"rep-1": token})
        async with event_stream(second) as ws:
            await until_replayed(ws)
            for _ in range(3):
                proposal = await trade(stream, "rep-1", "propose_trade", **BUY)
                committed = time.monotonic()
                live = await receive(ws)
                # Generous on a loaded test machine: the lag itself is measured by bench/events_bench.py.
                assert time.monotonic() - committed < 5.0
                assert live["payload"]["proposal_id"] == proposal["proposal_id"]
        async with event_stream(first, since=0) as a, event_stream(second, since=0) as b:
            from_first, from_second = await until_replayed(a), await until_replayed(b)
    assert from_first == from_second and len(from_first) == 3


async def test_a_client_that_falls_behind_is_told_where_to_resume_and_disconnected(stream: Stream) -> None:
    from datetime import UTC, datetime

    from ledger import db
    from policies import audit
    from server.events_ws import CLOSE_BEHIND, QUEUE_SIZE

    config = load_config(str(stream.config))
    burst = [audit.Entry(ts=datetime.now(UTC), actor="system:test", kind="risk.alert", agent_id="auto-1",
                         payload={"severity": "info", "code": "BURST", "message": f"{i}"})
             for i in range(QUEUE_SIZE + 500)]
    async with event_stream(stream.base) as ws:
        await until_replayed(ws)
        engine = db.create_engine(config.server.database_url)
        try:
            async with db.transaction(db.session_factory(engine)) as session:
                await audit.append_many(session, burst)
        finally:
            await engine.dispose()
        received: list[dict[str, Any]] = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                received.append(await receive(ws, 20))
    told = received[-1]
    assert told["message_type"] == "stream.overflow" and len(received) == QUEUE_SIZE + 1
    assert told["event_id"] == received[-2]["event_id"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_BEHIND
    async with event_stream(stream.base, since=told["event_id"]) as ws:
        rest = await until_replayed(ws)
    assert len(rest) == 500 and rest[0]["event_id"] == told["event_id"] + 1


async def test_a_real_server_takes_an_operators_token_from_the_registry_and_refuses_an_agents(
        tmp_path: Path) -> None:
    from tests.server.http_servers import last_line, start_server

    config_path = write_config(tmp_path / "tradewarden.toml", f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    cli(config_path, "db", "upgrade")
    operator = last_line(cli(config_path, "operators", "add", "olga", "--role", "viewer").stdout)
    agent_token = last_line(cli(config_path, "agents", "add", "reg-1", "--symbols", "*").stdout)
    server = start_server(config_path, tmp_path)
    try:
        async with event_stream(server.base, operator, since=0) as ws:
            assert await until_replayed(ws) == []
            cli(config_path, "halt", "--reason", "registry")
            assert (await receive(ws))["payload"]["code"] == "TRADING_HALTED"
        async with event_stream(server.base, agent_token) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await receive(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    finally:
        server.stop()
