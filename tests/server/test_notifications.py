"""Who may hear about a proposal (server/notifications.py): only the agent that owns it, on every protocol era.

The attack: agent b learns agent a's proposal id (a log, a shared prompt) and asks to be told whenever it
changes, with `resources/subscribe` on a 2025 connection or `subscriptions/listen` on a 2026-07-28 one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import ResourceUpdatedNotification

from server.config import Config
from tests.cli_probe import run_cli as cli
from tests.conftest import agent, call, connect, make_config
from tests.server.http_servers import last_line, mcp_client, start_server
from tests.server.test_http import BUY
from tests.server.test_http import write_config as write_http_config
from tests.tools.test_approval import Human, propose


def two_agents(db_url: str) -> Config:
    return make_config(db_url, agent("a", approval="elicit"), agent("b", approval="elicit"))


async def test_a_2026_listen_to_another_agents_proposal_is_refused(db_url: str, market_open: object) -> None:
    async with (connect(two_agents(db_url), "a", elicitation_callback=Human(), mode="2026-07-28") as owner,
                connect(two_agents(db_url), "b", mode="2026-07-28") as intruder):
        proposal_id = await propose(owner)
        uri = f"proposals://{proposal_id}"
        with pytest.raises(MCPError, match="no proposal resource"):
            async with intruder.listen(resource_subscriptions=[uri]):
                pass
        # Mixing its own (or a made-up) URI with the foreign one does not sneak it through either.
        own_id = await propose(intruder)
        with pytest.raises(MCPError, match="no proposal resource"):
            async with intruder.listen(resource_subscriptions=[f"proposals://{own_id}", uri]):
                pass
        async with owner.listen(resource_subscriptions=[uri]) as subscription:
            await call(owner, "execute_trade", proposal_id=proposal_id)
            event = await asyncio.wait_for(subscription.__anext__(), 5)
    assert str(event.uri) == uri


async def test_a_2026_listen_to_its_own_proposal_hears_its_changes(db_url: str, market_open: object) -> None:
    async with connect(two_agents(db_url), "b", elicitation_callback=Human(), mode="2026-07-28") as client:
        proposal_id = await propose(client)
        uri = f"proposals://{proposal_id}"
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            await call(client, "execute_trade", proposal_id=proposal_id)
            event = await asyncio.wait_for(subscription.__anext__(), 5)
    assert str(event.uri) == uri


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
async def test_a_2025_subscribe_to_another_agents_proposal_is_refused_and_hears_nothing(
        db_url: str, market_open: object) -> None:
    heard: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            heard.append(str(message.params.uri))

    async with (connect(two_agents(db_url), "a", elicitation_callback=Human(), mode="legacy") as owner,
                connect(two_agents(db_url), "b", message_handler=on_message, mode="legacy") as intruder):
        proposal_id = await propose(owner)
        uri = f"proposals://{proposal_id}"
        with pytest.raises(MCPError, match="no proposal resource"):
            await intruder.subscribe_resource(uri)
        await call(owner, "execute_trade", proposal_id=proposal_id)
        await asyncio.sleep(0.2)
    assert heard == []


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_reading_another_agents_proposal_is_refused(db_url: str, market_open: object, era: str) -> None:
    async with (connect(two_agents(db_url), "a", mode=era) as owner,
                connect(two_agents(db_url), "b", mode=era) as intruder):
        proposal_id = await propose(owner)
        with pytest.raises(MCPError, match="no proposal"):
            await intruder.read_resource(f"proposals://{proposal_id}")


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
async def test_over_http_each_agents_token_hears_only_its_own_proposals(tmp_path: Path) -> None:
    config = write_http_config(tmp_path / "tradewarden.toml", f"sqlite+aiosqlite:///{tmp_path / 'http.db'}")
    server = start_server(config, tmp_path)
    try:
        token_a, token_b = (last_line(cli(config, "agents", "add", name, "--symbols", "*", "--approval", "auto",
                                          check=True).stdout) for name in ("owner", "intruder"))
        async with (mcp_client(server.url, token_a, mode="2026-07-28") as owner,
                    mcp_client(server.url, token_b, mode="2026-07-28") as intruder,
                    mcp_client(server.url, token_b, mode="legacy") as intruder_2025):
            proposal = (await owner.call_tool("propose_trade", BUY)).structured_content
            assert proposal is not None and proposal["status"] == "approved", proposal
            uri = f"proposals://{proposal['proposal_id']}"
            with pytest.raises(MCPError, match="no proposal resource"):
                async with intruder.listen(resource_subscriptions=[uri]):
                    pass
            with pytest.raises(MCPError, match="no proposal resource"):
                await intruder_2025.subscribe_resource(uri)
            async with owner.listen(resource_subscriptions=[uri]) as subscription:
                await owner.call_tool("execute_trade", {"proposal_id": proposal["proposal_id"]})
                event = await asyncio.wait_for(subscription.__anext__(), 10)
        assert str(event.uri) == uri
    finally:
        server.stop()
