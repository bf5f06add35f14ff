"""Who may hear about a proposal (server/notifications.py): only the agent that owns it, on every protocol era.

The attack: agent b learns agent a's proposal id (a log, a shared prompt) and asks to be told whenever it
changes, with `resources/subscribe` on a 2025 connection or `subscriptions/listen` on a 2026-07-28 one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import ResourceUpdatedNotification

from server.config import Config
from tests.conftest import agent, call, connect, make_config
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
