"""The operator console in a real browser (Playwright driving Debian's Chromium) against a real server: an
approver logs in, sees the agent and its pending proposal, approves it and the agent's execute_trade fills once;
the kill switch halts trading and the agent is refused; a viewer has no approve button and the API says 403.
No request leaves loopback, and the pages log no console errors (the strict CSP would report any inline
script or style)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from ledger import db
from ledger.models import AgentTrade
from tests.server.browser import Watch, chromium, log_in, require_browser, run_async, watched_context
from tests.server.console_env import AGENT, ConsoleDeployment, start_console_deployment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleDeployment]:
    require_browser()
    deployment = start_console_deployment(tmp_path_factory.mktemp("console-browser"))
    try:
        yield deployment
    finally:
        deployment.server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def clean(watch: Watch) -> None:
    assert watch.outside == [], f"requests left loopback: {watch.outside}"
    assert watch.errors == [], f"browser console errors: {watch.errors}"
    assert watch.requests, "the browser made no requests at all"


def pending(deployment: ConsoleDeployment, limit_price: float) -> str:
    """A small limit order (distinct by its price: the duplicate check refuses repeats) waiting for a person."""
    proposal = run_async(deployment.propose(qty=1, order_type="limit", limit_price=limit_price))
    assert proposal["status"] == "pending_approval", proposal
    return str(proposal["proposal_id"])


def orders_for(deployment: ConsoleDeployment, proposal_id: str) -> int:
    async def count() -> int:
        engine = db.create_engine(deployment.db_url)
        try:
            async with db.session_factory(engine)() as session:
                return int((await session.execute(select(func.count()).select_from(AgentTrade)
                                                  .where(AgentTrade.proposal_id == proposal_id))).scalar_one())
        finally:
            await engine.dispose()

    return int(run_async(count()))


def test_an_approver_approves_in_the_console_and_the_agent_fills_once(deployment: ConsoleDeployment,
                                                                      browser: Any) -> None:
    proposal = run_async(deployment.propose(qty=4, reasoning="breakout <b>confirmed</b>"))
    proposal_id = proposal["proposal_id"]
    with watched_context(browser) as (context, watch):
        page = log_in(context, deployment.base, deployment.tokens["alice"])
        assert page.locator(".mode").inner_text() == "PAPER"
        page.click("nav >> text=Approvals")
        card = page.locator(f"#proposal-{proposal_id}")
        card.wait_for()
        assert AGENT in card.inner_text() and "SPY" in card.inner_text()
        assert "breakout <b>confirmed</b>" in card.locator(".reasoning").inner_text()  # shown as text
        card.locator("button.approve").click()
        page.wait_for_selector(".flash-ok")
        assert f"Proposal {proposal_id} approved" in page.locator(".flash-ok").inner_text()
        assert page.locator(f"#proposal-{proposal_id}").count() == 0
        clean(watch)
    failed, result, text = run_async(deployment.execute(proposal_id))
    assert not failed and result is not None and result["status"] == "filled", text
    run_async(deployment.execute(proposal_id))  # an agent retrying sends nothing more
    assert orders_for(deployment, proposal_id) == 1


def test_the_kill_switch_halts_and_the_agent_is_refused(deployment: ConsoleDeployment, browser: Any) -> None:
    with watched_context(browser) as (context, watch):
        page = log_in(context, deployment.base, deployment.tokens["alice"])
        page.click("nav >> text=Kill switch")
        page.fill("form.danger input[name=reason]", "runaway agent")
        page.check("form.danger input[name=confirm]")
        page.click("button[name=halt]")
        page.wait_for_selector(".flash-ok")
        assert "Trading for everyone is now halted" in page.locator(".flash-ok").inner_text()
        assert page.locator("form[action$='/resume']").count() == 0  # an approver cannot resume
        clean(watch)
    proposal = run_async(deployment.propose(qty=6))
    assert proposal["status"] == "rejected"
    assert any(v["code"] == "TRADING_HALTED" for v in proposal["violations"]), proposal
    with watched_context(browser) as (context, watch):  # an admin resumes, with a confirmation
        page = log_in(context, deployment.base, deployment.tokens["adam"])
        page.goto(f"{deployment.base}/console/kill")
        page.click("button[name=resume]")  # the confirmation box is required: nothing is sent
        assert page.locator(".flash-ok").count() == 0
        page.check("form[action$='/resume'] input[name=confirm]")
        page.click("button[name=resume]")
        page.wait_for_selector(".flash-ok")
        assert "now active" in page.locator(".flash-ok").inner_text()
        clean(watch)


def test_a_viewer_has_no_approve_button_and_the_api_refuses_it(deployment: ConsoleDeployment,
                                                                browser: Any) -> None:
    proposal_id = pending(deployment, limit_price=507)
    with watched_context(browser) as (context, watch):
        page = log_in(context, deployment.base, deployment.tokens["vera"])
        page.goto(f"{deployment.base}/console/approvals/{proposal_id}")
        card = page.locator(f"#proposal-{proposal_id}")
        card.wait_for()
        assert card.locator("button.approve").count() == 0
        assert "can see this proposal but not decide it" in card.inner_text()
        csrf = page.locator("body").get_attribute("data-csrf")
        answer = page.request.post(f"{deployment.base}/api/approvals/{proposal_id}/approve",
                                   headers={"X-CSRF-Token": csrf or ""}, data={})
        assert answer.status == 403 and answer.json()["error"]["code"] == "FORBIDDEN"
        clean(watch)


def test_an_agents_page_draws_its_equity_curve_and_an_admin_edits_a_limit(deployment: ConsoleDeployment,
                                                                          browser: Any) -> None:
    proposal_id = run_async(deployment.propose(qty=2))["proposal_id"]
    with deployment.api("alice") as approver:
        approver.post(f"/api/approvals/{proposal_id}/approve", json={})
    run_async(deployment.execute(proposal_id))
    with watched_context(browser) as (context, watch):
        page = log_in(context, deployment.base, deployment.tokens["adam"])
        page.click("nav >> text=Agents")
        page.click(f"#agents >> text={AGENT}")
        page.wait_for_selector("#equity-chart canvas")  # uPlot drew the curve
        page.fill("input[name=set_max_daily_trades]", "15")
        page.click("button[name=save]")
        page.wait_for_selector(".flash-ok")
        assert "max_daily_trades 20 → 15" in page.locator(".flash-ok").inner_text()
        clean(watch)


def test_a_new_proposal_appears_without_a_reload_and_a_half_typed_edit_is_kept(deployment: ConsoleDeployment,
                                                                                 browser: Any) -> None:
    first = pending(deployment, limit_price=501)
    with watched_context(browser) as (context, watch):
        page = log_in(context, deployment.base, deployment.tokens["alice"])
        page.goto(f"{deployment.base}/console/approvals")
        page.locator(f"#proposal-{first}").wait_for()
        page.evaluate("window.__same_page = true")
        second = pending(deployment, limit_price=502)
        page.locator(f"#proposal-{second}").wait_for(timeout=15000)  # the list refreshed itself
        assert page.evaluate("window.__same_page") is True  # no reload
        page.fill(f"#proposal-{first} input[name=qty]", "4")
        third = pending(deployment, limit_price=503)
        page.wait_for_timeout(6500)  # longer than one refresh
        assert page.locator(f"#proposal-{third}").count() == 0  # not refreshed while an edit is typed
        assert page.input_value(f"#proposal-{first} input[name=qty]") == "4"
        clean(watch)
    with deployment.api("alice") as approver:
        for proposal_id in (first, second, third):
            approver.post(f"/api/approvals/{proposal_id}/reject", json={})


def test_shrink_then_approve_in_the_console_binds_the_smaller_order(deployment: ConsoleDeployment,
                                                                   browser: Any) -> None:
    proposal_id = run_async(deployment.propose(qty=3, order_type="limit", limit_price=520))["proposal_id"]
    with watched_context(browser) as (context, watch):
        page = log_in(context, deployment.base, deployment.tokens["alice"])
        page.goto(f"{deployment.base}/console/approvals/{proposal_id}")
        card = page.locator(f"#proposal-{proposal_id}")
        card.locator("input[name=qty]").fill("1")
        card.locator("button[name=shrink]").click()
        page.wait_for_selector(".flash-ok")
        assert "approved, shrunk to 1 @ 520" in page.locator(".flash-ok").inner_text()
        clean(watch)
    with deployment.api("vera") as viewer:
        [order] = [o for o in viewer.get("/api/orders", params={"status": "all"}).json()
                   if o["proposal_id"] == proposal_id] or [None]
    assert order is None  # approved, not yet executed: the agent executes it
    failed, result, text = run_async(deployment.execute(proposal_id))
    assert not failed and result is not None, text
    with deployment.api("vera") as viewer:
        [order] = [o for o in viewer.get("/api/orders", params={"status": "all"}).json()
                   if o["proposal_id"] == proposal_id]
    assert order["qty"] == "1"


def test_when_the_session_ends_a_refreshing_page_goes_to_the_login(deployment: ConsoleDeployment,
                                                                     browser: Any) -> None:
    from tests.server.http_servers import cli

    deployment.add_operator("sam", "viewer")
    with watched_context(browser) as (context, watch):
        page = log_in(context, deployment.base, deployment.tokens["sam"])
        cli(deployment.config, "operators", "disable", "sam")
        page.wait_for_url(f"{deployment.base}/console/login", timeout=15000)  # the overview's next refresh
        assert watch.outside == [] and watch.errors == []
