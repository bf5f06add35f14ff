#!/usr/bin/env python3
"""Screenshots of every page of the operator console, taken by Playwright (Debian's Chromium) against a real
server on a seeded demo ledger (three agents that traded on the simulated broker, a proposal waiting for a
person, one agent halted). Writes docs/console/*.png; the README shows them.

    .venv/bin/python docs/console/make_screenshots.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.server.browser import chromium, log_in, run_async, watched_context  # noqa: E402
from tests.server.console_env import ConsoleDeployment, start_console_deployment  # noqa: E402
from tests.server.http_servers import cli, last_line, mcp_client  # noqa: E402

OUT = Path(__file__).resolve().parent
TRADERS = {"momentum-1": ("AAPL", "momentum"), "mean-rev-1": ("MSFT", "mean-reversion")}


async def trade(deployment: ConsoleDeployment, token: str, symbol: str, strategy: str, rounds: int) -> None:
    async with mcp_client(deployment.server.url, token) as client:
        for n in range(rounds):
            for side in ("buy", "sell"):
                qty = 2 + n % 3
                proposal = await client.call_tool("propose_trade", {
                    "symbol": symbol, "side": side, "qty": qty, "strategy": strategy,
                    "reasoning": f"{strategy}: round {n + 1}, {side} {qty}"})
                result = proposal.structured_content or {}
                if result.get("status") == "approved":
                    await client.call_tool("execute_trade", {"proposal_id": result["proposal_id"]})
                await asyncio.sleep(0.3)  # the simulated market moves between trades


def seed(deployment: ConsoleDeployment) -> None:
    for agent_id, (symbol, strategy) in TRADERS.items():
        token = last_line(cli(deployment.config, "agents", "add", agent_id, "--symbols", symbol, "--strategies",
                              strategy, "--approval", "auto").stdout)
        run_async(trade(deployment, token, symbol, strategy, rounds=4))
    run_async(deployment.propose(qty=5, strategy="swing", reasoning=(
        "SPY pulled back to its 50-day average on light volume; buying 5 with a stop under last week's low.")))
    with deployment.api("adam") as admin:
        admin.post("/api/halt", json={"agent_id": "mean-rev-1", "reason": "reviewing its losses"})


def shoot(deployment: ConsoleDeployment) -> list[Path]:
    pages = [("login", None), ("overview", "/console/"), ("approvals", "/console/approvals"),
             ("feed", "/console/feed"), ("agents", "/console/agents"), ("agent", "/console/agents/momentum-1"),
             ("positions", "/console/positions?status=all"), ("kill", "/console/kill"), ("audit", "/console/audit")]
    written = []
    with chromium() as browser, watched_context(browser, viewport={"width": 1280, "height": 900}) as (context, watch):
        login = context.new_page()
        login.goto(f"{deployment.base}/console/login")
        login.screenshot(path=str(OUT / "login.png"))
        written.append(OUT / "login.png")
        page = log_in(context, deployment.base, deployment.tokens["adam"])
        for name, path in pages[1:]:
            page.goto(f"{deployment.base}{path}")
            time.sleep(1.5 if name == "feed" else 0.3)  # the live feed replays its events first
            target = OUT / f"{name}.png"
            page.screenshot(path=str(target), full_page=name != "audit")  # the audit page is long
            written.append(target)
        if watch.outside or watch.errors:
            raise SystemExit(f"requests outside loopback {watch.outside} or console errors {watch.errors}")
    return written


def main() -> int:
    with tempfile.TemporaryDirectory() as root:
        deployment = start_console_deployment(Path(root))
        try:
            seed(deployment)
            for path in shoot(deployment):
                print(path.relative_to(ROOT))
        finally:
            deployment.server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
