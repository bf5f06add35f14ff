"""`approval = "operator"` with a public URL: the agent's client is asked (URL-mode elicitation) to open the
operator console's page for the proposal, where the person approves, authenticated; the client's answer decides
nothing. A client without elicitation gets the console link in the awaiting_approval message."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.types import ElicitRequestParams, ElicitResult

from tests.conftest import agent, call, connect, make_config
from tests.ledger_probe import broker_orders

PUBLIC = "https://trade.example.com/mcp"
BUY = {"symbol": "AAPL", "side": "buy", "qty": 5, "reasoning": "momentum is strong"}


class Browser:
    """The person's client: records what it was asked to open, and says it opened it."""

    def __init__(self) -> None:
        self.asked: list[ElicitRequestParams] = []

    async def __call__(self, _ctx: Any, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params)
        return ElicitResult(action="accept", content=None)


@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_a_client_with_url_elicitation_is_sent_to_the_consoles_approval_page(
        db_url: str, market_open: object, era: str) -> None:
    browser = Browser()
    config = make_config(db_url, agent(approval="operator"), public_url=PUBLIC)
    async with connect(config, elicitation_callback=browser, mode=era) as client:
        proposal = await call(client, "propose_trade", **BUY)
        waiting = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    page = f"https://trade.example.com/console/approvals/{proposal['proposal_id']}"
    assert waiting["status"] == "awaiting_approval" and page in waiting["message"]
    assert await broker_orders(db_url) == 0  # opening the page decides nothing
    if era == "legacy":
        [asked] = browser.asked
        assert asked.mode == "url" and asked.url == page  # type: ignore[union-attr]
    assert all(getattr(a, "mode", "form") == "url" for a in browser.asked)  # never a form to approve in the client


async def test_a_client_without_elicitation_gets_the_console_link(db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent(approval="operator"), public_url=PUBLIC)
    async with connect(config) as client:
        proposal = await call(client, "propose_trade", **BUY)
        waiting = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert waiting["status"] == "awaiting_approval"
    assert f"https://trade.example.com/console/approvals/{proposal['proposal_id']}" in waiting["message"]


async def test_without_a_public_url_no_link_is_invented(db_url: str, market_open: object) -> None:
    browser = Browser()
    async with connect(make_config(db_url, agent(approval="operator")), elicitation_callback=browser) as client:
        proposal = await call(client, "propose_trade", **BUY)
        waiting = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert browser.asked == [] and "/console/" not in waiting["message"]
    assert "only by an operator" in waiting["message"]
