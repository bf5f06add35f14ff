"""The console's live feed: in a real browser the feed page shows events as they happen, without a reload; the
stream under /console takes only a console session of this origin."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from tests.server.browser import chromium, log_in, require_browser, watched_context
from tests.server.console_env import AGENT, ConsoleDeployment, start_console_deployment


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleDeployment]:
    deployment = start_console_deployment(tmp_path_factory.mktemp("console-feed"))
    try:
        yield deployment
    finally:
        deployment.server.stop()


def ws_url(deployment: ConsoleDeployment) -> str:
    return deployment.base.replace("http://", "ws://") + "/console/events/ws"


async def first_close(url: str, **options: Any) -> int | None:
    async with websockets.connect(url, **options) as socket:
        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.wait_for(socket.recv(), 5)
        await asyncio.wait_for(socket.wait_closed(), 5)
        return socket.close_code


def test_the_stream_under_console_refuses_other_origins_tokens_and_no_session(
        deployment: ConsoleDeployment) -> None:
    with deployment.login("vera") as (browser, _csrf):
        cookie = f"tw_console={browser.cookies['tw_console']}"
    url, origin = ws_url(deployment), deployment.base
    assert asyncio.run(first_close(url, origin=origin)) == 4401  # no session
    assert asyncio.run(first_close(url, origin="https://evil.example",  # type: ignore[arg-type]
                                   additional_headers={"Cookie": cookie})) == 4403
    agent = {"Authorization": f"Bearer {deployment.tokens['agent']}"}
    assert asyncio.run(first_close(url, origin=origin, additional_headers=agent)) == 4401
    operator = {"Authorization": f"Bearer {deployment.tokens['adam']}"}  # a token is for /api/events/ws
    assert asyncio.run(first_close(url, origin=origin, additional_headers=operator)) == 4401


def test_the_feed_updates_without_a_reload(deployment: ConsoleDeployment) -> None:
    require_browser()
    with chromium() as browser, watched_context(browser) as (context, watch):
        page = log_in(context, deployment.base, deployment.tokens["vera"])
        page.click("nav >> text=Live feed")
        page.wait_for_selector("#feed-status.live")
        page.evaluate("window.__same_page = true")
        with deployment.api("adam") as admin:  # something happens: an agent is halted, then resumed
            admin.post("/api/halt", json={"agent_id": AGENT, "reason": "feed drill"})
            page.wait_for_selector("#feed li >> text=feed drill", timeout=15000)
            admin.post("/api/resume", json={"agent_id": AGENT})
        assert AGENT in page.locator("#feed li", has_text="feed drill").first.inner_text()
        assert page.evaluate("window.__same_page") is True
        assert watch.outside == [] and watch.errors == []
