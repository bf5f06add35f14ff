"""The operator console at /console/: server-rendered pages (jinja2, autoescaped) for people, on top of the
same operator layer as the API (SPEC "Operator API and console").

Log in with an operator's token at /console/login; the console then holds a server-side session
(policies/operator_sessions.py) in an HttpOnly, SameSite=Strict cookie (Secure over https). Every form that
changes state carries the session's CSRF token, and a POST from another origin is refused. Pages are served
with a strict Content-Security-Policy (no inline script or style; everything from 'self'); the only scripts are
the vendored htmx and uPlot (server/console_static/vendor/) and console.js. Text an agent wrote (reasoning,
strategy) is made inert (`policies.text.inert`) and autoescaped.

`OperatorSurfaces` puts /api and /console in front of another ASGI app (the MCP server's, or nothing for
`tradewarden console`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from ledger.db import transaction
from policies import operator_audit, operator_sessions, operator_usage
from policies.gate import LIVE_TRADE_STATUSES
from policies.operator import Operator
from policies.operators import Action, OperatorError
from policies.text import inert
from server import operator_api
from server.operator_api import ApiError, OperatorApi, operator_error
from server.operator_auth import CSRF_FIELD, SESSION_COOKIE, Caller, RuntimeSource, identify, is_https
from tradewarden.log import get_logger

log = get_logger("tradewarden.console")

HERE = Path(__file__).resolve().parent
MAX_FORM = 16 * 1024
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"),
                    (b"cross-origin-opener-policy", b"same-origin")]
ALERT_KIND = "risk.alert"  # policies/events.py KIND_ALERT: the risk alerts the overview lists
FEED_BACKLOG = 200  # audit records replayed when the live feed opens
EVENTS_PATH = "/console/events/ws"  # server/console_events.py (the live feed's WebSocket)
NAV = [("/", "Overview"), ("/approvals", "Approvals"), ("/feed", "Live feed"), ("/agents", "Agents"),
       ("/positions", "Positions & orders"), ("/kill", "Kill switch"), ("/audit", "Audit")]

Page = Callable[[Request, Operator, Caller], Awaitable[Response]]


class FormError(Exception):
    pass


class Console:
    def __init__(self, runtime: RuntimeSource, *, public_url: str | None = None, root: str = "/console"):
        self.runtime = runtime
        self.public_url = public_url
        self.root = root
        self.env = Environment(loader=FileSystemLoader(HERE / "console_templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True),
                               auto_reload=False)
        self.env.filters.update(money=_money, percent=_percent, num=_number, shown=_shown, when=_when)

    # --- rendering ---------------------------------------------------------------------------------

    def render(self, template: str, *, status: int = 200, caller: Caller | None = None, **context: Any) -> Response:
        runtime = self.runtime()
        identity = caller.identity if caller else None
        base = {"root": self.root, "nav": NAV, "identity": identity, "csrf": caller.csrf_token if caller else None,
                "trading_mode": runtime.config.server.trading_mode if runtime else "",
                "page_title": "tradewarden", "message": None, "message_kind": "ok",
                "may_decide": bool(identity and identity.may(Action.DECIDE_APPROVAL)),
                "may_halt": bool(identity and identity.may(Action.HALT)),
                "may_resume": bool(identity and identity.may(Action.RESUME)),
                "may_manage": bool(identity and identity.may(Action.MANAGE_AGENTS)),
                "may_cancel": bool(identity and identity.may(Action.CANCEL_ORDER))}
        base.update(context)
        html = self.env.get_template(template).render(**base)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def error_page(self, status: int, heading: str, detail: str, caller: Caller | None = None) -> Response:
        return self.render("error.html", status=status, caller=caller, heading=heading, detail=detail,
                           page_title=heading)

    # --- plumbing ----------------------------------------------------------------------------------

    def page(self, handler: Page, *, changes_state: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            runtime = self.runtime()
            if runtime is None:
                return HTMLResponse("The server is starting; reload in a moment.", status_code=503)
            if changes_state and not _same_origin(request):
                return self.error_page(403, "Refused", "This form was sent from another site.")
            caller = await identify(request, runtime)
            if caller is None:
                if request.headers.get("authorization") is not None:
                    return self.error_page(401, "Not an operator", "That token is not an operator's token.")
                if request.headers.get("hx-request"):  # a block refreshing itself: the whole page goes to login
                    return Response(status_code=200, headers={"HX-Redirect": f"{self.root}/login"})
                return RedirectResponse(f"{self.root}/login", status_code=303)
            form: dict[str, Any] = {}
            if changes_state:
                try:
                    form = await _read_form(request)
                except FormError as error:
                    return self.error_page(400, "Bad request", str(error), caller)
                if not caller.csrf_ok(form.get(CSRF_FIELD)):
                    return self.error_page(403, "Refused", "The form's CSRF token is missing or wrong; reload the "
                                                           "page and try again.", caller)
                request.state.form = form
            try:
                return await handler(request, Operator(runtime.gate, caller.identity), caller)
            except ApiError as error:
                return self.error_page(error.status, "Not done", error.message, caller)
            except OperatorError as error:
                mapped = operator_error(error)
                return self.error_page(mapped.status, "Not done", mapped.message, caller)

        return run

    # --- login and logout --------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        if self.runtime() is None:
            return HTMLResponse("The server is starting; reload in a moment.", status_code=503)
        return self.render("login.html", page_title="Log in")

    async def login(self, request: Request) -> Response:
        runtime = self.runtime()
        if runtime is None:
            return HTMLResponse("The server is starting; reload in a moment.", status_code=503)
        if not _same_origin(request):
            return self.error_page(403, "Refused", "This form was sent from another site.")
        try:
            form = await _read_form(request)
        except FormError as error:
            return self.error_page(400, "Bad request", str(error))
        token = str(form.get("token", "")).strip()
        async with transaction(runtime.sessions) as session:
            made = await operator_sessions.login(session, token, now=runtime.clock()) if token else None
        if made is None:
            log.info("console_login_refused")
            return self.render("login.html", status=401, page_title="Log in", message_kind="error",
                               message="That is not a valid operator token (agents' tokens are not accepted).")
        session_id, identity = made
        log.info("console_login", operator=identity.name)
        response = RedirectResponse(f"{self.root}/", status_code=303)
        response.set_cookie(SESSION_COOKIE, session_id, max_age=int(operator_sessions.SESSION_TTL.total_seconds()),
                            path="/", httponly=True, samesite="strict", secure=is_https(request, self.public_url))
        return response

    async def logout(self, request: Request, op: Operator, caller: Caller) -> Response:
        runtime = self.runtime()
        if caller.session_id is not None:
            async with transaction(runtime.sessions) as session:
                await operator_sessions.logout(session, caller.session_id, now=runtime.clock())
        response = RedirectResponse(f"{self.root}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                               secure=is_https(request, self.public_url))
        return response

    # --- pages -------------------------------------------------------------------------------------

    async def overview(self, request: Request, op: Operator, caller: Caller) -> Response:
        report = await operator_api.status_report(op, self.runtime())
        agents = await operator_api.agent_utilisation(op)
        waiting = [operator_api.proposal_view(p) for p in await op.pending() if p.expires_at > op.now][:5]
        alerts = [{**operator_api.jsonable(record), "message": inert(str(record.payload.get("message", "")))}
                  for record in await operator_audit.search(op, operator_audit.AuditQuery(kind=ALERT_KIND, limit=5))
                  if isinstance(record.payload, dict)]
        return self.render("overview.html", caller=caller, active="/", page_title="Overview", report=report,
                           agents=agents, waiting=waiting, alerts=alerts, last_verify=operator_audit.last_verify())

    async def approvals(self, request: Request, op: Operator, caller: Caller, *, only: str | None = None,
                        message: str | None = None, message_kind: str = "ok", status: int = 200) -> Response:
        proposals = [operator_api.proposal_view(p) for p in await op.pending()]
        only = only or request.query_params.get("id") or None
        if only:
            proposals = [p for p in proposals if p["id"] == only]
        limits = await self._limits_of(op, {p["agent_id"] for p in proposals})
        return self.render("approvals.html", caller=caller, active="/approvals", page_title="Approvals",
                           proposals=proposals, limits=limits, only=only, message=message,
                           message_kind=message_kind, status=status)

    async def _limits_of(self, op: Operator, agent_ids: set[str]) -> dict[str, dict[str, Any]]:
        """The limits in force each proposal was checked against, per agent (shown beside the order)."""
        found: dict[str, dict[str, Any]] = {}
        for agent_id in sorted(agent_ids)[:50]:
            try:
                detail = await op.agent_detail(agent_id, self.runtime().config.agent(agent_id))
            except OperatorError:  # removed meanwhile, or unreadable limits: the card says nothing more
                continue
            found[agent_id] = {"max_trade_size": detail.agent.limits.max_trade_size,
                               "max_position_size": detail.agent.limits.max_position_size,
                               "auto_approve": detail.agent.approval.auto_approve_max_notional}
        return found

    async def approval(self, request: Request, op: Operator, caller: Caller) -> Response:
        return await self.approvals(request, op, caller, only=str(request.path_params["id"])[:64])

    async def decide(self, request: Request, op: Operator, caller: Caller) -> Response:
        proposal_id = str(request.path_params["id"])[:64]
        form = request.state.form
        approve = request.url.path.endswith("/approve")
        try:
            if approve:
                result = await operator_api.approve(op, proposal_id, form)
            else:
                result = await operator_api.reject(op, proposal_id, form)
        except (ApiError, OperatorError) as error:
            mapped = error if isinstance(error, ApiError) else operator_error(error)
            return await self.approvals(request, op, caller, message=f"Not done: {mapped.message}",
                                        message_kind="error", status=mapped.status)
        what = "approved" if approve else "rejected"
        edited = approve and (form.get("qty") or form.get("limit_price") or form.get("stop_loss"))
        size, price = result["qty"] or result["notional"], result["limit_price"] or "market"
        shrunk = f", shrunk to {size} @ {price}" if edited else ""
        return await self.approvals(request, op, caller, message=f"Proposal {proposal_id} {what}{shrunk} "
                                                                 f"(recorded as {op.actor}).")

    async def kill(self, request: Request, op: Operator, caller: Caller, *, message: str | None = None,
                   message_kind: str = "ok", status: int = 200) -> Response:
        states = await op.states()
        agent_ids = await operator_api.agent_ids(op)
        return self.render("kill.html", caller=caller, active="/kill", page_title="Kill switch", states=[
            {"scope": s.scope, "state": s.state, "reason": inert(s.reason) if s.reason else None,
             "changed_by": s.changed_by} for s in states], agent_ids=agent_ids, message=message,
            message_kind=message_kind, status=status)

    async def halt_or_resume(self, request: Request, op: Operator, caller: Caller) -> Response:
        form = dict(request.state.form)
        if form.get("confirm") != "yes":
            return await self.kill(request, op, caller, message="Not done: tick the confirmation box.",
                                   message_kind="error", status=400)
        for flag in ("cancel_open", "reduce_only"):
            form[flag] = form.get(flag) == "true"
        halting = request.url.path.endswith("/halt")
        try:
            result = await (operator_api.halt(op, form) if halting else operator_api.resume(op, form))
        except (ApiError, OperatorError) as error:
            mapped = error if isinstance(error, ApiError) else operator_error(error)
            return await self.kill(request, op, caller, message=f"Not done: {mapped.message}",
                                   message_kind="error", status=mapped.status)
        who = "everyone" if result["scope"] == "*" else result["scope"]
        extra = f"; {len(result.get('canceled', []))} order(s) cancelled" if result.get("canceled") else ""
        return await self.kill(request, op, caller, message=f"Trading for {who} is now {result['state']}{extra}.")

    def _audit_query(self, request: Request) -> operator_audit.AuditQuery:
        return operator_audit.AuditQuery(
            before=operator_api.query_int(request, "before", None, 1, 10**12),
            kind=operator_api.query_text(request, "kind", 48), agent_id=operator_api.query_text(request, "agent", 64),
            actor=operator_api.query_text(request, "actor", 128), text=operator_api.query_text(request, "q"),
            limit=operator_api.query_int(request, "limit", 100, 1, operator_audit.MAX_RECORDS) or 100)

    async def audit(self, request: Request, op: Operator, caller: Caller, verify: Any = None) -> Response:
        query = self._audit_query(request)
        records = await operator_audit.search(op, query)
        shown = [{**operator_api.jsonable(r), "payload_text": inert(json.dumps(r.payload, sort_keys=True))[:600]}
                 for r in records]
        params = {k: v for k, v in request.query_params.items() if k in ("q", "kind", "agent", "actor") and v}
        older = {**params, "before": str(records[-1].seq)} if records else params
        return self.render("audit.html", caller=caller, active="/audit", page_title="Audit", records=shown,
                           query=query, verify=verify, export_query=urlencode(params), older_query=urlencode(older))

    async def audit_verify(self, request: Request, op: Operator, caller: Caller) -> Response:
        verdict = await operator_api.verify_audit(op, self.runtime())
        return await self.audit(request, op, caller, verify=verdict)

    async def audit_export(self, request: Request, op: Operator, caller: Caller) -> Response:
        query = self._audit_query(request)
        query = operator_audit.AuditQuery(before=query.before, kind=query.kind, agent_id=query.agent_id,
                                          actor=query.actor, text=query.text, limit=operator_audit.MAX_RECORDS)
        records = await operator_audit.search(op, query)

        async def lines() -> Any:
            for record in reversed(records):
                yield json.dumps(operator_api.jsonable(record), sort_keys=True) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson", headers={
            "Content-Disposition": 'attachment; filename="tradewarden-audit.jsonl"', "Cache-Control": "no-store"})

    async def agents(self, request: Request, op: Operator, caller: Caller, *, message: str | None = None,
                     message_kind: str = "ok", status: int = 200) -> Response:
        usage = await operator_api.agent_utilisation(op)
        return self.render("agents.html", caller=caller, active="/agents", page_title="Agents", usage=usage,
                           message=message, message_kind=message_kind, status=status)

    async def register(self, request: Request, op: Operator, caller: Caller) -> Response:
        form = request.state.form
        settings = {name: form[name] for name in ("allowed_symbols", "max_trade_size", "approval")
                    if form.get(name)}
        try:
            made = await operator_api.add_agent(op, self.runtime(), {"id": form.get("id", ""), "settings": settings})
        except (ApiError, OperatorError) as error:
            mapped = error if isinstance(error, ApiError) else operator_error(error)
            return await self.agents(request, op, caller, message=f"Not done: {mapped.message}",
                                     message_kind="error", status=mapped.status)
        return await self.agent(request, op, caller, agent_id=made["agent_id"], new_token=made["token"],
                                message=f"Agent {made['agent_id']} registered.")

    async def agent(self, request: Request, op: Operator, caller: Caller, *, agent_id: str | None = None,
                    new_token: str | None = None, message: str | None = None, message_kind: str = "ok",
                    status: int = 200) -> Response:
        agent_id = agent_id or operator_api.path_id(request)
        detail = await operator_api.agent_view(op, self.runtime(), agent_id)
        perf = await operator_api.performance(op, agent_id)
        equity = [[_epoch(point["at"]), float(point["equity"])] for point in perf["equity_curve"]]
        return self.render("agent.html", caller=caller, active="/agents", page_title=f"Agent {agent_id}",
                           detail=detail, perf=perf, equity_json=Markup(_script_json(equity)), new_token=new_token,
                           message=message, message_kind=message_kind, status=status)

    async def agent_action(self, request: Request, op: Operator, caller: Caller) -> Response:
        agent_id = operator_api.path_id(request)
        form = request.state.form
        action = form.get("action")
        body: dict[str, Any]
        if action in ("enable", "disable"):
            body = {"enabled": action == "enable"}
        elif action == "rotate":
            if form.get("confirm") != "yes":
                return await self.agent(request, op, caller, message="Not done: tick the confirmation box.",
                                        message_kind="error", status=400)
            body = {"rotate_token": True}
        elif action == "settings":
            body = {"settings": {key[4:]: value.strip() for key, value in form.items()
                                 if key.startswith("set_") and value.strip()}}
        else:
            return await self.agent(request, op, caller, message="Not done: unknown action.", message_kind="error",
                                    status=400)
        try:
            result = await operator_api.change_agent(op, self.runtime(), agent_id, body)
        except (ApiError, OperatorError) as error:
            mapped = error if isinstance(error, ApiError) else operator_error(error)
            return await self.agent(request, op, caller, message=f"Not done: {mapped.message}",
                                    message_kind="error", status=mapped.status)
        changed = ", ".join(f"{name} {change['from']} → {change['to']}"
                            for name, change in result.get("changes", {}).items())
        done = {"enable": "enabled", "disable": "disabled", "rotate": "given a new token",
                "settings": f"changed: {changed}"}[str(action)]
        return await self.agent(request, op, caller, new_token=result.get("token"),
                                message=f"Agent {agent_id} {done} (recorded as {op.actor}).")

    async def positions(self, request: Request, op: Operator, caller: Caller, *, message: str | None = None,
                        message_kind: str = "ok", status: int = 200) -> Response:
        wanted = request.query_params.get("status") or "open"
        wanted = wanted if wanted in ("open", "closed", "all") else "open"
        books = await op.positions()
        orders = await operator_api.orders(op, None, wanted, 200)
        reconciliation = await operator_usage.reconciliation(op)
        return self.render("positions.html", caller=caller, active="/positions", page_title="Positions & orders",
                           books=books, orders=orders, status_name=wanted, reconciliation=reconciliation,
                           live_statuses=sorted(LIVE_TRADE_STATUSES), message=message, message_kind=message_kind,
                           status=status)

    async def cancel(self, request: Request, op: Operator, caller: Caller) -> Response:
        order_id = operator_api.path_id(request)
        try:
            trade = await op.cancel_order(order_id)
        except OperatorError as error:
            mapped = operator_error(error)
            return await self.positions(request, op, caller, message=f"Not done: {mapped.message}",
                                        message_kind="error", status=mapped.status)
        return await self.positions(request, op, caller, message=f"Order {trade.id} cancel requested: now "
                                                                  f"{trade.status} (recorded as {op.actor}).")

    async def feed(self, request: Request, op: Operator, caller: Caller) -> Response:
        head, _hash = await operator_audit.head(op)
        # The feed opens with the events of the last FEED_BACKLOG audit records, then goes live.
        return self.render("feed.html", caller=caller, active="/feed", page_title="Live feed",
                           since=max(0, head - FEED_BACKLOG))

    # --- the application ---------------------------------------------------------------------------

    def app(self) -> Starlette:
        get, post = ["GET"], ["POST"]
        routes = [
            Route("/", self.page(self.overview), methods=get),
            Route("/login", self.login_page, methods=get),
            Route("/login", self.login, methods=post),
            Route("/logout", self.page(self.logout, changes_state=True), methods=post),
            Route("/approvals", self.page(self.approvals), methods=get),
            Route("/approvals/{id}", self.page(self.approval), methods=get),
            Route("/approvals/{id}/approve", self.page(self.decide, changes_state=True), methods=post),
            Route("/approvals/{id}/reject", self.page(self.decide, changes_state=True), methods=post),
            Route("/kill", self.page(self.kill), methods=get),
            Route("/halt", self.page(self.halt_or_resume, changes_state=True), methods=post),
            Route("/resume", self.page(self.halt_or_resume, changes_state=True), methods=post),
            Route("/audit", self.page(self.audit), methods=get),
            Route("/audit/verify", self.page(self.audit_verify), methods=get),
            Route("/audit/export", self.page(self.audit_export), methods=get),
            Route("/feed", self.page(self.feed), methods=get),
            Route("/agents", self.page(self.agents), methods=get),
            Route("/agents", self.page(self.register, changes_state=True), methods=post),
            Route("/agents/{id}", self.page(self.agent), methods=get),
            Route("/agents/{id}", self.page(self.agent_action, changes_state=True), methods=post),
            Route("/positions", self.page(self.positions), methods=get),
            Route("/orders/{id}/cancel", self.page(self.cancel, changes_state=True), methods=post),
            Mount("/static", app=StaticFiles(directory=HERE / "console_static"), name="static"),
        ]
        return Starlette(routes=routes)


def _money(value: Any) -> str:
    if value is None or value == "":
        return "—"
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        return str(value)
    return f"{'-' if amount < 0 else ''}${abs(amount):,.2f}"


def _percent(value: Any) -> str:
    if value is None or value == "":
        return "—"
    return f"{Decimal(str(value)) * 100:.1f} %"


def _number(value: Any) -> str:
    return "—" if value is None or value == "" else f"{Decimal(str(value)):,.2f}"


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(item) for item in sorted(value, key=str)) or "(none)"
    return "—" if value is None else str(value)


def _when(value: Any) -> str:
    """A time as a person reads it at a glance: 2026-11-30 14:05:09 UTC."""
    if value is None or value == "":
        return "—"
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _script_json(value: Any) -> str:
    """JSON safe inside a <script type="application/json"> block (no "</script>" can end it early)."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


async def _read_form(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM):
        raise FormError(f"the form must be at most {MAX_FORM} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > MAX_FORM:
            raise FormError(f"the form must be at most {MAX_FORM} bytes")
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise FormError("the form could not be read") from None
    return {key: value for key, value in pairs}


def _same_origin(request: Request) -> bool:
    """A browser's POST names its origin; one from another site is refused (CSRF defence in depth). (The pages'
    Referrer-Policy is same-origin, not no-referrer: under no-referrer Chromium sends `Origin: null`.)"""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


class OperatorSurfaces:
    """ASGI: /api and /console (and the console's event stream, `events`, at EVENTS_PATH) in front of `app`
    (any other path; None: / redirects to the console)."""

    def __init__(self, app: ASGIApp | None, runtime: RuntimeSource, *, public_url: str | None = None,
                 events: ASGIApp | None = None):
        self.app = app
        api = OperatorApi(runtime).app()
        console = Console(runtime, public_url=public_url).app()

        async def to_console(_request: Request) -> Response:
            return RedirectResponse("/console/", status_code=307)

        self.runtime = runtime
        self.surfaces = Starlette(routes=[Mount("/api", app=api), Route("/console", to_console),
                                          Mount("/console", app=console)],
                                  exception_handlers={HTTPException: _unmatched})  # type: ignore[dict-item]
        self.events = events

    @staticmethod
    def ours(path: str) -> bool:
        return path in ("/api", "/console") or path.startswith(("/api/", "/console/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "websocket" and self.ours(path):
            if self.events is not None and path == EVENTS_PATH:
                await self.events(scope, receive, send)
            else:
                await WebSocketClose(code=1008)(scope, receive, send)
            return
        if scope["type"] != "http" or not self.ours(path):
            if self.app is None:
                if scope["type"] == "http":
                    await RedirectResponse("/console/", status_code=307)(scope, receive, send)
                elif scope["type"] == "lifespan":
                    await _no_lifespan(receive, send)
                return
            await self.app(scope, receive, send)
            return

        if _presents_credential(scope) and path.startswith(PUBLIC_PATHS):
            # The public pages (login, static files, the API's description) need no credential, but one that is
            # presented must be an operator's: an agent's token is refused everywhere under /api and /console.
            runtime = self.runtime()
            if runtime is None or await identify(Request(scope), runtime) is None:
                refusal = operator_api.error_response(401, "UNAUTHORIZED", "an agent's token is not accepted here")
                await refusal(scope, receive, send)
                return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in dict(SECURITY_HEADERS)]
                message = {**message, "headers": headers + SECURITY_HEADERS}
            await send(message)

        await self.surfaces(scope, receive, secured)


PUBLIC_PATHS = ("/console/login", "/console/static/", "/api/openapi.json")


def _presents_credential(scope: Scope) -> bool:
    return any(name == b"authorization" for name, _value in scope.get("headers") or [])


async def _unmatched(request: Request, error: HTTPException) -> Response:
    """A path no route matches (even a malformed one): the API answers in its error shape."""
    if request.url.path.startswith("/api"):
        code = "NOT_FOUND" if error.status_code == 404 else "INVALID_ARGUMENT"
        return operator_api.error_response(error.status_code, code, str(error.detail))
    return HTMLResponse("Not found", status_code=error.status_code)


async def _no_lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
