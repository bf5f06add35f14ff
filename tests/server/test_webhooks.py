"""Webhooks against a real local HTTP receiver, from a real HTTP server (and two replicas on PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from policies.webhooks import signature_valid
from server.config import load_config
from tests.server.event_servers import register, serving
from tests.server.http_servers import cli, mcp_client, wait_for
from tests.server.webhook_receiver import Receiver, receiving

SECRET_ENV = "TW_TEST_WEBHOOK_SECRET"
SECRET = secrets.token_hex(16)
BUY = {"symbol": "BTC/USD", "side": "buy", "notional": 20, "time_in_force": "gtc", "reasoning": "webhooks"}


@pytest.fixture(autouse=True)
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def write_config(path: Path, db_url: str, *hooks: dict[str, Any]) -> Path:
    lines = ["[server]", f'database_url = "{db_url}"', "enforce_market_hours = false", ""]
    for hook in hooks:
        lines.append("[[webhooks]]")
        for key, value in {"secret_env": SECRET_ENV, "max_backoff_seconds": 1, **hook}.items():
            rendered = (f'"{value}"' if isinstance(value, str) else
                        "[" + ", ".join(f'"{v}"' for v in value) + "]" if isinstance(value, list) else str(value))
            lines.append(f"{key} = {rendered}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def alert_hook(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {"name": "pager", "url": receiver.url, "events": ["agent.risk.alert"], **extra}


def halts_and_resumes(config: Path, times: int) -> None:
    for i in range(times):
        cli(config, "halt", "--reason", f"drill {i}")
        cli(config, "resume")


def check_signed_in_order_once(receiver: Receiver, count: int) -> list[dict[str, Any]]:
    bodies = [r.json for r in receiver.received]
    ids = [b["event_id"] for b in bodies]
    assert len(bodies) == count and ids == sorted(set(ids)), ids
    for received, body in zip(receiver.received, bodies, strict=True):
        assert signature_valid(SECRET.encode(), received.body, received.headers["x-tradewarden-signature"])
        assert received.headers["x-tradewarden-event-id"] == str(body["event_id"])
        assert SECRET not in received.body.decode()
    return bodies


async def test_a_receiver_that_was_down_gets_every_alert_signed_in_order_once(tmp_path: Path) -> None:
    with receiving("fail") as receiver:
        config = write_config(tmp_path / "tw.toml", f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", alert_hook(receiver))
        async with serving(load_config(str(config))):
            await asyncio.to_thread(halts_and_resumes, config, 2)
            await wait_for(lambda: _true(receiver.refused >= 3), 20)
            receiver.mode = "ok"
            await wait_for(lambda: _true(len(receiver.received) >= 4), 20)
            await asyncio.sleep(1.5)  # nothing more arrives: each alert once
        bodies = check_signed_in_order_once(receiver, 4)
    assert [b["payload"]["code"] for b in bodies] == ["TRADING_HALTED", "TRADING_RESUMED"] * 2
    assert [b["payload"]["reason"] for b in bodies[::2]] == ["drill 0", "drill 1"]


async def test_a_restart_resumes_delivery_where_it_stood(tmp_path: Path) -> None:
    with receiving("fail") as receiver:
        config = write_config(tmp_path / "tw.toml", f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", alert_hook(receiver))
        async with serving(load_config(str(config))):
            await asyncio.to_thread(halts_and_resumes, config, 1)
            await wait_for(lambda: _true(receiver.refused >= 1), 20)
        await asyncio.to_thread(halts_and_resumes, config, 1)  # while no server runs
        receiver.mode = "ok"
        async with serving(load_config(str(config))):
            await wait_for(lambda: _true(len(receiver.received) >= 4), 20)
            await asyncio.sleep(1.0)
        check_signed_in_order_once(receiver, 4)


async def test_slack_format_posts_text_and_only_the_chosen_events(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    with receiving() as receiver:
        config = write_config(tmp_path / "tw.toml", db_url, {"url": receiver.url, "format": "slack",
                                                             "events": ["agent.trade.signal"]})
        cli(config, "db", "upgrade")
        token = await register(db_url, _agent("slack-1"))
        async with serving(load_config(str(config))) as base:
            async with mcp_client(f"{base}/mcp", token) as client:
                await client.call_tool("propose_trade", {**BUY, "strategy": "<!channel> &"})
            await asyncio.to_thread(halts_and_resumes, config, 1)
            await wait_for(lambda: _true(len(receiver.received) >= 1), 20)
            await asyncio.sleep(1.0)
    assert len(receiver.received) == 1
    text = receiver.received[0].json["text"]
    assert "agent.trade.signal" in text and "slack-1 proposes buy BTC/USD" in text
    expected = hmac.new(SECRET.encode(), receiver.received[0].body, hashlib.sha256).hexdigest()
    assert receiver.received[0].headers["x-tradewarden-signature"] == f"sha256={expected}"


async def test_a_hanging_receiver_does_not_stop_trading(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    with receiving("hang") as receiver:
        config = write_config(tmp_path / "tw.toml", db_url, {"url": receiver.url, "events": ["*"]})
        cli(config, "db", "upgrade")
        token = await register(db_url, _agent("hang-1"))
        async with serving(load_config(str(config))) as base, mcp_client(f"{base}/mcp", token) as client:
            for i in range(5):
                proposal = await client.call_tool("propose_trade", {**BUY, "notional": 20 + i})
                filled = await client.call_tool("execute_trade",
                                                {"proposal_id": proposal.structured_content["proposal_id"]})
                assert filled.structured_content["status"] == "filled"
        assert receiver.received == []


@pytest.mark.postgres
async def test_two_replicas_deliver_each_alert_once_in_order(tmp_path: Path, pg_url: str) -> None:
    with receiving("fail") as receiver:
        config = write_config(tmp_path / "tw.toml", pg_url, alert_hook(receiver))
        async with serving(load_config(str(config))), serving(load_config(str(config))):
            await asyncio.to_thread(halts_and_resumes, config, 3)
            await wait_for(lambda: _true(receiver.refused >= 2), 20)
            receiver.mode = "ok"
            await wait_for(lambda: _true(len(receiver.received) >= 6), 30)
            await asyncio.sleep(1.5)
        check_signed_in_order_once(receiver, 6)


def test_a_webhook_that_is_not_http_or_lacks_its_secret_stops_the_server_with_one_line(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    bad_url = write_config(tmp_path / "a.toml", db_url, {"url": "ftp://example.com/x"})
    result = cli(bad_url, "serve", "--transport", "http", "--port", "0", check=False)
    assert result.returncode == 2 and "must be an http:// or https:// URL" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    no_secret = write_config(tmp_path / "b.toml", db_url, {"url": "https://example.com/x",
                                                           "secret_env": "TW_TEST_NOT_SET_ANYWHERE"})
    os.environ.pop("TW_TEST_NOT_SET_ANYWHERE", None)
    result = cli(no_secret, "serve", "--transport", "http", "--port", "0", check=False)
    assert result.returncode == 2 and "TW_TEST_NOT_SET_ANYWHERE is not set" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_webhooks_list_and_test_from_the_command_line(tmp_path: Path) -> None:
    with receiving() as receiver:
        config = write_config(tmp_path / "tw.toml", f"sqlite+aiosqlite:///{tmp_path / 'w.db'}",
                              alert_hook(receiver))
        cli(config, "db", "upgrade")
        listed = cli(config, "webhooks", "list").stdout
        sent = cli(config, "webhooks", "test", "pager")
        receiver.mode = "fail"
        failed = cli(config, "webhooks", "test", receiver.url, check=False)
        unknown = cli(config, "webhooks", "test", "nobody", check=False)
        tail = cli(config, "audit", "tail", "-n", "2").stdout
    assert "pager" in listed and f"http://127.0.0.1:{receiver.port}/…" in listed and SECRET not in listed
    assert "/hook" not in listed  # a webhook URL's path may be its credential (Slack's is)
    assert "test delivered (HTTP 200)" in sent.stdout
    assert receiver.received[0].json["message_type"] == "webhook.test"
    assert signature_valid(SECRET.encode(), receiver.received[0].body,
                           receiver.received[0].headers["x-tradewarden-signature"])
    assert failed.returncode == 1 and "HTTP 503" in failed.stderr
    assert unknown.returncode == 1 and "no webhook named 'nobody'" in unknown.stderr
    assert tail.count("webhook.tested") == 2


def _agent(agent_id: str) -> Any:
    from server.config import AgentConfig

    return AgentConfig(id=agent_id, allowed_symbols=["*"], approval="auto", auto_approve_max_notional=5000,
                       duplicate_window_seconds=0)


async def _true(value: bool) -> bool:
    return value
