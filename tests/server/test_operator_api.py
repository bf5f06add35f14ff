"""The operator API (/api) of a real `tradewarden serve --transport http` process, as operators and attackers
use it: roles are enforced (viewer, approver, admin), an agent's token is refused everywhere, a console
session needs its CSRF token for every state change, and every state change is audited as operator:NAME."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from ledger import db
from ledger.models import AuditEvent
from tests.server.console_env import AGENT, ConsoleDeployment, start_console_deployment

READS = ["/api/status", "/api/approvals", "/api/audit", "/api/audit/verify"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleDeployment]:
    root = tmp_path_factory.mktemp("operator-api")
    deployment = start_console_deployment(root)
    try:
        yield deployment
    finally:
        deployment.server.stop()


QUANTITIES = itertools.count(1)


def pending(deployment: ConsoleDeployment, **order: Any) -> str:
    """A new proposal waiting for a person (each a different size unless given: the duplicate check refuses
    repeats)."""
    size = {} if "qty" in order or "notional" in order else {"notional": 100 + next(QUANTITIES)}
    proposal = asyncio.run(deployment.propose(**{**order, **size}))
    assert proposal["status"] == "pending_approval", proposal
    return str(proposal["proposal_id"])


def audit_records(deployment: ConsoleDeployment, kind_prefix: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        engine = db.create_engine(deployment.db_url)
        try:
            async with db.session_factory(engine)() as session:
                rows = (await session.execute(select(AuditEvent).where(AuditEvent.kind.startswith(kind_prefix))
                                              .order_by(AuditEvent.seq))).scalars()
                return [{"kind": r.kind, "actor": r.actor, **json.loads(r.payload)} for r in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def assert_error(answer: Any, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body


def test_no_credential_is_401_with_the_error_shape(deployment: ConsoleDeployment) -> None:
    with deployment.api(None) as anonymous:
        for path in READS:
            assert_error(anonymous.get(path), 401, "UNAUTHORIZED")
        assert_error(anonymous.post("/api/halt", json={"reason": "x"}), 401, "UNAUTHORIZED")


def documented_operations(deployment: ConsoleDeployment, proposal_id: str) -> list[tuple[str, str]]:
    """Every (method, path) of /api/openapi.json, with {id} filled in."""
    with deployment.api(None) as client:
        document = client.get("/api/openapi.json").json()
    return [(method.upper(), path.replace("{id}", AGENT if "/agents/" in path else proposal_id))
            for path, item in document["paths"].items() for method in item]


def test_an_agents_token_is_refused_everywhere_under_api_and_console(deployment: ConsoleDeployment) -> None:
    proposal_id = pending(deployment)
    operations = documented_operations(deployment, proposal_id)
    assert len(operations) == 16  # every endpoint SPEC lists
    with deployment.api("agent") as agent:
        for method, path in operations:
            assert_error(agent.request(method, path, json={}), 401, "UNAUTHORIZED")
        for path in ("/console/", "/console/approvals", "/console/login", "/console/static/console.js",
                     "/api/openapi.json", "/console/feed"):
            assert agent.get(path).status_code == 401, path
    with deployment.api(None) as browser:  # nor does it open a console session
        login = browser.post("/console/login", data={"token": deployment.tokens["agent"]})
        assert login.status_code == 401 and "tw_console" not in login.headers.get("set-cookie", "")
    with deployment.api("adam") as admin:
        [listed] = [p for p in admin.get("/api/approvals").json() if p["id"] == proposal_id]
        assert listed["status"] == "pending_approval"  # nothing the agent sent decided it
        assert admin.post(f"/api/approvals/{proposal_id}/reject", json={"reason": "cleanup"}).status_code == 200


def test_a_viewer_reads_but_may_not_approve(deployment: ConsoleDeployment) -> None:
    proposal_id = pending(deployment)
    with deployment.api("vera") as viewer:
        for path in READS:
            assert viewer.get(path).status_code == 200, path
        assert any(p["id"] == proposal_id for p in viewer.get("/api/approvals").json())
        assert_error(viewer.post(f"/api/approvals/{proposal_id}/approve", json={}), 403, "FORBIDDEN")
        assert_error(viewer.post(f"/api/approvals/{proposal_id}/reject", json={}), 403, "FORBIDDEN")
        assert_error(viewer.post("/api/halt", json={"reason": "no"}), 403, "FORBIDDEN")
    with deployment.api("alice") as approver:
        assert approver.post(f"/api/approvals/{proposal_id}/reject", json={"reason": "cleanup"}).status_code == 200


def test_an_approver_halts_but_cannot_resume_and_an_admin_can(deployment: ConsoleDeployment) -> None:
    with deployment.api("alice") as approver, deployment.api("adam") as admin:
        halted = approver.post("/api/halt", json={"reason": "drill"})
        assert halted.status_code == 200 and halted.json()["state"] == "halted"
        assert_error(approver.post("/api/resume", json={}), 403, "FORBIDDEN")
        status = admin.get("/api/status").json()
        assert [s["state"] for s in status["states"] if s["scope"] == "*"] == ["halted"]
        assert admin.post("/api/resume", json={}).json() == {"scope": "*", "state": "active"}
    assert [r["actor"] for r in audit_records(deployment, "trading_state.changed")][-2:] == [
        "operator:alice", "operator:adam"]


def test_approve_then_the_agent_executes_once_and_the_approval_is_audited(deployment: ConsoleDeployment) -> None:
    proposal_id = pending(deployment)
    with deployment.api("alice") as approver:
        approved = approver.post(f"/api/approvals/{proposal_id}/approve", json={"note": "ok"})
        assert approved.status_code == 200 and approved.json()["status"] == "approved"
        assert_error(approver.post(f"/api/approvals/{proposal_id}/approve", json={}), 409, "CONFLICT")
    failed, result, text = asyncio.run(deployment.execute(proposal_id))
    assert not failed, text
    assert result is not None and result["status"] in ("filled", "accepted", "new", "partially_filled"), result
    again_failed, _, _ = asyncio.run(deployment.execute(proposal_id))
    records = [r for r in audit_records(deployment, "approval.") if r.get("proposal_id") == proposal_id]
    assert [(r["kind"], r["actor"]) for r in records if r["kind"] == "approval.approved"] == [
        ("approval.approved", "operator:alice")]
    assert again_failed or result["order_id"]  # a second execute never submits a second order


def test_shrink_then_approve_binds_the_smaller_order(deployment: ConsoleDeployment) -> None:
    proposal_id = pending(deployment, qty=5)
    with deployment.api("alice") as approver:
        bigger = approver.post(f"/api/approvals/{proposal_id}/approve", json={"qty": "9"})
        assert bigger.status_code in (400, 409) and bigger.json()["error"]["code"]
        shrunk = approver.post(f"/api/approvals/{proposal_id}/approve", json={"qty": "2"})
        assert shrunk.status_code == 200, shrunk.text
        assert shrunk.json()["qty"] == "2"


def test_unknown_ids_are_404_and_bad_input_400(deployment: ConsoleDeployment) -> None:
    with deployment.api("adam") as admin:
        assert_error(admin.post("/api/approvals/nope/approve", json={}), 404, "NOT_FOUND")
        assert_error(admin.post("/api/halt", json={"agent_id": "ghost", "reason": "x"}), 404, "NOT_FOUND")
        assert_error(admin.post("/api/halt", json={}), 400, "INVALID_ARGUMENT")
        assert_error(admin.post("/api/halt", content=b"[1, 2]", headers={"content-type": "application/json"}),
                     400, "INVALID_ARGUMENT")
        assert_error(admin.post("/api/halt", content=b"x" * 20000), 400, "INVALID_ARGUMENT")
        assert_error(admin.get("/api/audit?limit=100000"), 400, "INVALID_ARGUMENT")
        assert_error(admin.get("/api/nothing-here"), 404, "NOT_FOUND")


def test_a_session_without_its_csrf_token_changes_nothing(deployment: ConsoleDeployment) -> None:
    proposal_id = pending(deployment)
    changes = [(method, path) for method, path in documented_operations(deployment, proposal_id) if method != "GET"]
    assert len(changes) == 7  # register, change an agent, cancel, approve, reject, halt, resume
    with deployment.login("adam") as (browser, csrf):
        for method, path in changes:
            assert_error(browser.request(method, path, json={"reason": "x"}), 403, "CSRF_FAILED")
            wrong = browser.request(method, path, json={"reason": "x"}, headers={"X-CSRF-Token": "0" * 64})
            assert_error(wrong, 403, "CSRF_FAILED")
        for form_path in (f"/console/approvals/{proposal_id}/approve", f"/console/approvals/{proposal_id}/reject",
                          "/console/halt", "/console/resume", "/console/logout", "/console/agents",
                          f"/console/agents/{AGENT}", "/console/orders/nope/cancel"):
            assert browser.post(form_path, data={"reason": "x", "confirm": "yes"}).status_code == 403, form_path
        assert browser.get("/api/approvals").status_code == 200  # reads need no CSRF token
        assert any(p["id"] == proposal_id and p["status"] == "pending_approval"
                   for p in browser.get("/api/approvals").json())
        answer = browser.post(f"/api/approvals/{proposal_id}/reject", json={}, headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 200, answer.text


def test_a_form_from_another_origin_is_refused(deployment: ConsoleDeployment) -> None:
    with deployment.login("adam") as (browser, csrf):
        answer = browser.post("/console/halt", data={"csrf": csrf, "reason": "x", "confirm": "yes"},
                              headers={"Origin": "https://evil.example"})
        assert answer.status_code == 403
    with deployment.api("adam") as admin:
        assert all(s["state"] == "active" for s in admin.get("/api/status").json()["states"])


def test_every_console_state_change_is_audited_as_the_operator(deployment: ConsoleDeployment) -> None:
    proposal_id = pending(deployment)
    with deployment.login("adam") as (browser, csrf):
        steps = [(f"/console/approvals/{proposal_id}/approve", {}), ("/console/halt", {"reason": "console drill",
                                                                                      "confirm": "yes"}),
                 ("/console/resume", {"confirm": "yes"})]
        for path, form in steps:
            answer = browser.post(path, data={"csrf": csrf, **form})
            assert answer.status_code == 200 and "Not done" not in answer.text, answer.text[-800:]
    approvals = [r for r in audit_records(deployment, "approval.approved") if r["proposal_id"] == proposal_id]
    assert [r["actor"] for r in approvals] == ["operator:adam"]
    states = audit_records(deployment, "trading_state.changed")[-2:]
    assert [(r["actor"], r["state"]) for r in states] == [("operator:adam", "halted"), ("operator:adam", "active")]
    assert audit_records(deployment, "operator.login")[-1]["actor"] == "operator:adam"


def test_the_session_cookie_is_httponly_strict_and_ends_at_logout(deployment: ConsoleDeployment) -> None:
    with deployment.api(None) as browser:
        login = browser.post("/console/login", data={"token": deployment.tokens["vera"]})
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert "secure" not in cookie  # plain http on loopback; over https it is Secure (public_url)
        page = browser.get("/console/")
        csrf = page.text.split('data-csrf="')[1].split('"')[0]
        assert browser.get("/api/status").status_code == 200
        browser.post("/console/logout", data={"csrf": csrf})
        assert_error(browser.get("/api/status"), 401, "UNAUTHORIZED")
        assert browser.get("/console/").status_code == 303


def test_sessions_end_when_the_operators_token_is_rotated_or_they_are_disabled(
        deployment: ConsoleDeployment) -> None:
    from tests.server.http_servers import cli

    deployment.add_operator("rita", "viewer")
    deployment.add_operator("dan", "viewer")
    with deployment.login("rita") as (rita, _), deployment.login("dan") as (dan, _):
        assert rita.get("/api/status").status_code == 200 and dan.get("/api/status").status_code == 200
        cli(deployment.config, "operators", "rotate-token", "rita")
        cli(deployment.config, "operators", "disable", "dan")
        assert_error(rita.get("/api/status"), 401, "UNAUTHORIZED")
        assert_error(dan.get("/api/status"), 401, "UNAUTHORIZED")


def test_pages_carry_a_strict_content_security_policy(deployment: ConsoleDeployment) -> None:
    with deployment.login("vera") as (browser, _):
        for path in ("/console/", "/console/login", "/api/status"):
            headers = browser.get(path).headers
            csp = headers["content-security-policy"]
            assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in browser.get("/console/").text  # no inline script


def test_an_agents_reasoning_is_shown_as_inert_text(deployment: ConsoleDeployment) -> None:
    hostile = "<script>alert(1)</script>\u202eevil\x1b[2K <img src=x onerror=alert(2)>"
    proposal_id = pending(deployment, reasoning=hostile, strategy="<b>s</b>")
    with deployment.login("vera") as (browser, _csrf):
        page = browser.get(f"/console/approvals/{proposal_id}").text
        assert "<script>alert(1)" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "U+202E" in page and "\\x1b" in page
        [shown] = [p for p in browser.get("/api/approvals").json() if p["id"] == proposal_id]
        assert "\u202e" not in shown["reasoning"] and "\x1b" not in shown["reasoning"]
    with deployment.api("alice") as approver:
        approver.post(f"/api/approvals/{proposal_id}/reject", json={})


def test_the_agent_is_named_in_the_approval_page_and_its_id_is_the_url(deployment: ConsoleDeployment) -> None:
    proposal_id = pending(deployment)
    with deployment.login("vera") as (browser, _):
        page = browser.get(f"/console/approvals/{proposal_id}").text
        assert AGENT in page and proposal_id in page and 'class="approve"' not in page  # a viewer: no button
        assert "every risk check passed" in page and "$5,000.00 max per trade" in page  # what it was checked against
    with deployment.login("alice") as (alice, _csrf):
        assert 'class="approve"' in alice.get(f"/console/approvals/{proposal_id}").text
    with deployment.api("alice") as approver:
        approver.post(f"/api/approvals/{proposal_id}/reject", json={})


def test_openapi_describes_every_route(deployment: ConsoleDeployment) -> None:
    with deployment.api(None) as anonymous:
        document = anonymous.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    for path in ("/api/status", "/api/approvals", "/api/approvals/{id}/approve", "/api/approvals/{id}/reject",
                 "/api/halt", "/api/resume", "/api/audit", "/api/audit/verify"):
        assert path in document["paths"], path



def test_agents_are_listed_registered_changed_and_their_performance_read(deployment: ConsoleDeployment) -> None:
    with deployment.api("adam") as admin, deployment.api("alice") as approver:
        assert AGENT in [a["agent_id"] for a in admin.get("/api/agents").json()]
        made = admin.post("/api/agents", json={"id": "api-bot", "settings": {"allowed_symbols": ["AAPL"],
                                                                              "max_trade_size": "500"}})
        assert made.status_code == 201 and made.json()["token"].startswith("tw_")
        assert_error(approver.post("/api/agents", json={"id": "nope"}), 403, "FORBIDDEN")
        assert_error(admin.post("/api/agents", json={"id": "api-bot"}), 409, "CONFLICT")
        assert_error(admin.post("/api/agents", json={"id": "x", "settings": {"max_trade_size": "-5"}}), 400,
                     "INVALID_ARGUMENT")
        changed = admin.patch("/api/agents/api-bot", json={"settings": {"max_trade_size": "750"}, "enabled": False})
        assert changed.status_code == 200, changed.text
        body = changed.json()
        assert body["changes"]["max_trade_size"]["to"] == "750" and body["agent"]["enabled"] is False
        assert_error(approver.patch("/api/agents/api-bot", json={"enabled": True}), 403, "FORBIDDEN")
        rotated = admin.patch("/api/agents/api-bot", json={"rotate_token": True}).json()
        assert rotated["token"].startswith("tw_") and rotated["token"] != made.json()["token"]
        assert_error(admin.patch("/api/agents/ghost", json={"enabled": True}), 404, "NOT_FOUND")
        shown = admin.get(f"/api/agents/{AGENT}").json()
        assert {s["name"] for s in shown["settings"]} >= {"max_trade_size", "approval"}
        performance = approver.get(f"/api/agents/{AGENT}/performance").json()
        assert {"realized_pl", "unrealized_pl", "win_rate", "max_drawdown", "equity_curve", "by_strategy",
                "exposure", "trades"} <= set(performance)
    kinds = [(r["kind"], r["actor"]) for r in audit_records(deployment, "agent.")]
    assert ("agent.settings_changed", "operator:adam") in kinds and ("agent.disabled", "operator:adam") in kinds


def test_positions_orders_and_cancel(deployment: ConsoleDeployment) -> None:
    proposal_id = pending(deployment, qty=2, order_type="limit", limit_price=1, time_in_force="gtc")
    with deployment.api("alice") as approver, deployment.api("vera") as viewer:
        approver.post(f"/api/approvals/{proposal_id}/approve", json={})
        failed, result, text = asyncio.run(deployment.execute(proposal_id))
        assert not failed and result is not None, text
        [order] = [o for o in viewer.get("/api/orders", params={"status": "open"}).json()
                   if o["proposal_id"] == proposal_id]
        assert_error(viewer.post(f"/api/orders/{order['id']}/cancel"), 403, "FORBIDDEN")
        canceled = approver.post(f"/api/orders/{order['id']}/cancel")
        assert canceled.status_code == 200 and canceled.json()["status"] in ("canceled", "pending_cancel"), \
            canceled.text
        assert_error(viewer.get("/api/orders", params={"status": "sideways"}), 400, "INVALID_ARGUMENT")
        books = viewer.get("/api/positions").json()
        assert AGENT in [book["agent_id"] for book in books]
    assert audit_records(deployment, "order.cancel")[-1]["actor"] == "operator:alice"


def test_every_console_page_renders_for_every_role(deployment: ConsoleDeployment) -> None:
    pages = ["/console/", "/console/approvals", "/console/feed", "/console/agents", f"/console/agents/{AGENT}",
             "/console/positions", "/console/positions?status=all", "/console/kill", "/console/audit",
             "/console/audit?q=approval", "/console/audit/verify", "/console/audit/export"]
    for who in ("vera", "alice", "adam"):
        with deployment.login(who) as (browser, _csrf):
            for path in pages:
                answer = browser.get(path)
                assert answer.status_code == 200, (who, path, answer.text[-500:])
    with deployment.login("adam") as (browser, _csrf):
        assert "Audit chain OK" in browser.get("/console/audit/verify").text
        lines = browser.get("/console/audit/export").text.splitlines()
        assert lines and all(json.loads(line)["seq"] for line in lines)


def test_verify_finds_an_edited_audit_record(deployment: ConsoleDeployment) -> None:
    import sqlite3

    path = deployment.db_url.split("///", 1)[1]
    with deployment.api("vera") as viewer:
        assert viewer.get("/api/audit/verify").json()["ok"] is True
        with sqlite3.connect(path) as connection:
            seq, payload = connection.execute("SELECT seq, payload FROM audit_events WHERE kind = "
                                              "'operator.login' ORDER BY seq LIMIT 1").fetchone()
            connection.execute("UPDATE audit_events SET payload = ? WHERE seq = ?",
                               (payload.replace("console", "c0nsole"), seq))
        try:
            verdict = viewer.get("/api/audit/verify").json()
            assert verdict["ok"] is False and any(problem.startswith(f"record {seq}:")
                                                  for problem in verdict["problems"]), verdict
        finally:
            with sqlite3.connect(path) as connection:
                connection.execute("UPDATE audit_events SET payload = ? WHERE seq = ?", (payload, seq))
        assert viewer.get("/api/audit/verify").json()["ok"] is True


def test_the_overview_lists_what_waits_for_a_person(deployment: ConsoleDeployment) -> None:
    proposal_id = pending(deployment)
    with deployment.login("vera") as (browser, _csrf):
        page = browser.get("/console/").text
    assert f"/console/approvals/{proposal_id}" in page and "Waiting for a person" in page
    with deployment.api("alice") as approver:
        approver.post(f"/api/approvals/{proposal_id}/reject", json={})


@pytest.mark.postgres
def test_the_api_and_console_on_postgresql(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    deployment = start_console_deployment(tmp_path_factory.mktemp("operator-api-pg"), pg_url)
    try:
        proposal_id = pending(deployment, reasoning="on postgres")
        with deployment.login("alice") as (browser, csrf):
            answer = browser.post(f"/console/approvals/{proposal_id}/approve", data={"csrf": csrf})
            assert answer.status_code == 200 and "approved" in answer.text
            for path in ("/console/", "/console/agents", f"/console/agents/{AGENT}", "/console/positions",
                         "/console/audit?q=ON+POSTGRES", "/console/audit/verify", "/console/kill"):
                assert browser.get(path).status_code == 200, path
        with deployment.api("vera") as viewer:
            assert [r["kind"] for r in viewer.get("/api/audit", params={"q": "on postgres"}).json()]
            assert viewer.get("/api/audit/verify").json()["ok"] is True
            assert viewer.get("/api/status").json()["pending_approvals"] == 0
    finally:
        deployment.server.stop()
