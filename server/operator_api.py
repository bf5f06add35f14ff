"""The operator API: JSON over HTTP under /api (SPEC "Operator API and console").

A Starlette sub-application mounted by the HTTP server (server/http.py) and by `tradewarden console`
(server/cli_console.py). Every handler authenticates the caller (server/operator_auth.py: an operator's bearer
token or a console session; an agent's token is refused), checks the CSRF token of a session on every state
change, and then acts through the operator layer (`policies.operator.Operator`), which checks the role and
audits the action as `operator:NAME`. Handlers never check roles themselves.

Errors are `{"error": {"code", "message"}}`: 400 bad input, 401 no operator credential, 403 role or CSRF,
404 unknown id, 409 the state does not allow it. Bodies and parameters are bounded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, is_dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger.models import GLOBAL_SCOPE
from policies import anchoring, operator_audit, operator_usage
from policies.operator import Operator
from policies.operator_books import AmbiguousId
from policies.operator_usage import AgentUsage
from policies.operators import OperatorError, OperatorForbidden
from policies.text import inert
from server.operator_auth import CSRF_HEADER, Caller, RuntimeSource, identify
from tradewarden.log import get_logger

log = get_logger("tradewarden.operator_api")

MAX_BODY = 16 * 1024
MAX_TEXT = 500  # reasons and notes
MAX_ID = 64
MAX_LIMIT = 500
_CODE = re.compile(r"^([A-Z][A-Z0-9_]{2,}):")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers={"Cache-Control": "no-store"})


def operator_error(error: OperatorError) -> ApiError:
    """An operator-layer refusal as an API error: its SPEC code when it starts with one."""
    message = str(error)
    if isinstance(error, OperatorForbidden):
        return ApiError(403, "FORBIDDEN", message)
    if isinstance(error, AmbiguousId):
        return ApiError(400, "INVALID_ARGUMENT", message)
    match = _CODE.match(message)
    if message.startswith("no "):
        return ApiError(404, "NOT_FOUND", message)
    if match is None:
        return ApiError(409, "CONFLICT", message)
    code = match.group(1)
    return ApiError(400 if code in ("INVALID_ARGUMENT", "INVALID_ORDER") else 409, code, message)


def jsonable(value: Any) -> Any:
    """Our dataclasses and rows as JSON: decimals as exact strings, times as ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return value


# --- input -----------------------------------------------------------------------------------------


async def read_body(request: Request) -> dict[str, Any]:
    """The JSON object of the request (empty for an empty body); bounded in size."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise ApiError(400, "INVALID_ARGUMENT", f"the body must be at most {MAX_BODY} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > MAX_BODY:
            raise ApiError(400, "INVALID_ARGUMENT", f"the body must be at most {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "INVALID_ARGUMENT", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_ARGUMENT", "the body must be a JSON object")
    return body


def text_field(body: dict[str, Any], name: str, *, required: bool = False, limit: int = MAX_TEXT) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, "INVALID_ARGUMENT", f"{name} is required")
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be text of at most {limit} characters")
    return value


def decimal_field(body: dict[str, Any], name: str) -> Decimal | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or len(str(value)) > 32:
        raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be a decimal number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be a decimal number") from None
    if not number.is_finite() or number <= 0:
        raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be a positive number")
    return number


def bool_field(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be true or false")
    return value


def query_text(request: Request, name: str, limit: int = 200) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if len(value) > limit:
        raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be at most {limit} characters")
    return value


def query_int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if not re.fullmatch(r"-?\d{1,12}", value) or not low <= int(value) <= high:
        raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be an integer from {low} to {high}")
    return int(value)


def path_id(request: Request, name: str = "id") -> str:
    value = str(request.path_params[name])
    if not value or len(value) > MAX_ID:
        raise ApiError(404, "NOT_FOUND", f"no such {name}")
    return value


# --- views -----------------------------------------------------------------------------------------


def proposal_view(proposal: Any) -> dict[str, Any]:
    """A proposal as operators see it: the agent's own text (reasoning, strategy) made inert."""
    return jsonable({
        "id": proposal.id, "agent_id": proposal.agent_id, "symbol": proposal.symbol, "side": proposal.side,
        "qty": proposal.qty, "notional": proposal.notional, "order_type": proposal.order_type,
        "limit_price": proposal.limit_price, "stop_price": proposal.stop_price,
        "time_in_force": proposal.time_in_force, "exits": proposal.exits or None,
        "estimated_notional": proposal.estimated_notional,
        "reference_price": proposal.reference_price,
        "strategy": inert(proposal.strategy) if proposal.strategy else None,
        "reasoning": inert(proposal.reasoning, one_line=False) if proposal.reasoning else "",
        # The checks passed (a proposal waiting for a person has no violations); what they were is listed.
        "checks": {"violations": proposal.violations or [], "approval_mode": proposal.approval_mode,
                   "trading_mode": proposal.trading_mode},
        "status": proposal.status, "created_at": proposal.created_at, "expires_at": proposal.expires_at,
        "decided_by": proposal.decided_by, "decision_note": inert(proposal.decision_note)
        if proposal.decision_note else None,
    })


async def status_report(op: Operator, runtime: Any) -> dict[str, Any]:
    """Trading mode, halts, pending approvals, reconciliation and the audit head (the overview's top row)."""
    report = await op.status()
    states = report.states
    seq, head_hash = await operator_audit.head(op)
    reconciliation = await operator_usage.reconciliation(op)
    return jsonable({
        "trading_mode": runtime.config.server.trading_mode, "broker": runtime.config.server.broker,
        "states": [{"scope": s.scope, "state": s.state, "reason": inert(s.reason) if s.reason else None,
                    "changed_by": s.changed_by, "changed_at": s.changed_at} for s in states],
        "pending_approvals": report.pending_approvals, "expired_unanswered": report.expired_unanswered,
        "agents": report.agents, "enabled_agents": report.enabled_agents, "open_orders": report.open_orders,
        "reconciliation": reconciliation, "audit_head": {"seq": seq, "hash": head_hash},
        "operator": {"name": op.identity.name, "role": op.identity.role}})


async def verify_audit(op: Operator, runtime: Any) -> operator_audit.AuditVerdict:
    """The audit chain verified against the deployment's signed checkpoints ([audit]), as the CLI does."""
    checkpoints = None
    settings = getattr(runtime.config, "audit", None)
    if settings is not None:
        try:
            key = anchoring.verifying_key(settings.signing_key_file)
        except anchoring.AnchorError as error:
            raise ApiError(409, "AUDIT_KEY_UNREADABLE", f"the audit signing key cannot be read: {error}") from None
        checkpoints = anchoring.load_checkpoints(anchoring.read_checkpoint_lines(settings.checkpoint_dir), key)
    return await operator_audit.verify(op, checkpoints)


async def agent_utilisation(op: Operator) -> list[AgentUsage]:
    return await operator_usage.utilisation(op)


async def agent_ids(op: Operator) -> list[str]:
    return [agent.agent_id for agent in await op.agents()]


# --- actions (the API and the console's forms both call these) ---------------------------------------


async def approve(op: Operator, proposal_id: str, body: dict[str, Any]) -> dict[str, Any]:
    note = text_field(body, "note")
    qty, limit_price = decimal_field(body, "qty"), decimal_field(body, "limit_price")
    stop_loss = decimal_field(body, "stop_loss")
    return proposal_view(await op.decide(proposal_id, True, note, qty=qty, limit_price=limit_price,
                                         stop_loss=stop_loss))


async def reject(op: Operator, proposal_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return proposal_view(await op.decide(proposal_id, False, text_field(body, "reason")))


async def halt(op: Operator, body: dict[str, Any]) -> dict[str, Any]:
    """Halt everyone (no agent_id) or one agent; reduce_only: positions may close but not grow."""
    agent_id = text_field(body, "agent_id", limit=MAX_ID)
    reason = text_field(body, "reason", required=True)
    assert reason is not None
    scope = agent_id or GLOBAL_SCOPE
    if bool_field(body, "reduce_only"):
        await op.set_state(scope, "reducing", reason)
        return {"scope": scope, "state": "reducing", "canceled": [], "failed": {}}
    report = await op.halt(agent_id, reason, cancel_open=bool_field(body, "cancel_open"))
    return {"scope": scope, "state": "halted", "canceled": report.canceled, "failed": report.failed}


async def resume(op: Operator, body: dict[str, Any]) -> dict[str, Any]:
    agent_id = text_field(body, "agent_id", limit=MAX_ID)
    await op.resume(agent_id)
    return {"scope": agent_id or GLOBAL_SCOPE, "state": "active"}


# --- agents ------------------------------------------------------------------------------------------

NOT_SETTINGS = ("id", "enabled")  # the id is the path; enabled is its own field
EQUITY_POINTS = 500  # an equity curve is sent with at most this many points (evenly spaced, the last kept)


def validated_settings(agent_id: str, given: Any) -> dict[str, Any]:
    """Settings by name, checked like the config file's (AgentConfig); ApiError for anything else."""
    from pydantic import ValidationError

    from server.config import AgentConfig

    if not isinstance(given, dict):
        raise ApiError(400, "INVALID_ARGUMENT", "settings must be an object of setting names to values")
    names = set(AgentConfig.model_fields) - set(NOT_SETTINGS)
    unknown = sorted(str(name) for name in given if name not in names)
    if unknown:
        raise ApiError(400, "INVALID_ARGUMENT", f"unknown setting(s): {', '.join(unknown)[:200]}")
    values = dict(given)
    for name in ("allowed_symbols", "allowed_strategies"):
        if isinstance(values.get(name), str):
            values[name] = [item.strip() for item in values[name].split(",") if item.strip()]
    try:
        checked = AgentConfig(id=agent_id, **values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ApiError(400, "INVALID_ARGUMENT", f"invalid agent setting {where}: {first['msg']}"[:300]) from None
    except (TypeError, ValueError) as error:
        raise ApiError(400, "INVALID_ARGUMENT", f"invalid agent settings: {str(error)[:200]}") from None
    return {name: getattr(checked, name) for name in values}


async def agent_view(op: Operator, runtime: Any, agent_id: str) -> dict[str, Any]:
    detail = await op.agent_detail(agent_id, runtime.config.agent(agent_id))
    return jsonable({"agent": detail.summary, "limits": vars(detail.agent.limits),
                     "settings": detail.settings, "in_config_file": detail.in_config_file})


async def add_agent(op: Operator, runtime: Any, body: dict[str, Any]) -> dict[str, Any]:
    from server.config import AgentConfig

    agent_id = text_field(body, "id", required=True, limit=MAX_ID)
    assert agent_id is not None
    settings = validated_settings(agent_id, body.get("settings") or {})
    token = await op.add_agent(AgentConfig(id=agent_id, **settings),
                               max_agents=runtime.config.server.max_agents_per_account, given=list(settings))
    return {"agent_id": agent_id, "token": token,
            "message": "the agent's bearer token is shown once: store it now"}


async def change_agent(op: Operator, runtime: Any, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Settings (and resets), enabled, and a token rotation, in that order; at least one."""
    from server.config import AgentConfig

    unknown = sorted(set(body) - {"settings", "reset", "enabled", "rotate_token"})
    if unknown:
        raise ApiError(400, "INVALID_ARGUMENT", f"unknown field(s): {', '.join(unknown)[:200]}")
    settings = validated_settings(agent_id, body.get("settings") or {})
    reset = body.get("reset") or []
    if not isinstance(reset, list) or not all(isinstance(name, str) and len(name) <= 64 for name in reset):
        raise ApiError(400, "INVALID_ARGUMENT", "reset must be a list of setting names")
    enabled = body.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise ApiError(400, "INVALID_ARGUMENT", "enabled must be true or false")
    rotate = bool_field(body, "rotate_token")
    if not settings and not reset and enabled is None and not rotate:
        raise ApiError(400, "INVALID_ARGUMENT", "nothing to change: give settings, reset, enabled or rotate_token")
    result: dict[str, Any] = {}
    if settings or reset:
        baseline = runtime.config.agent(agent_id) or AgentConfig(id=agent_id)
        changes = await op.set_settings(agent_id, settings, reset=list(reset), baseline=baseline)
        result["changes"] = {name: {"from": old, "to": new} for name, (old, new) in changes.items()}
    if enabled is not None:
        await op.set_enabled(agent_id, enabled)
    if rotate:
        result["token"] = await op.rotate_token(agent_id)
    result.update(await agent_view(op, runtime, agent_id))
    return jsonable(result)


def thinned(curve: list[Any], limit: int = EQUITY_POINTS) -> list[Any]:
    if len(curve) <= limit:
        return curve
    step = len(curve) / (limit - 1)
    return [curve[int(i * step)] for i in range(limit - 1)] + [curve[-1]]


async def performance(op: Operator, agent_id: str) -> dict[str, Any]:
    [report] = await op.performance(agent_id)
    metrics = report.metrics
    return jsonable({
        "agent_id": report.agent_id, "capital": report.capital, "realized_pl": metrics.realized_pl,
        "unrealized_pl": metrics.unrealized_pl, "total_pl": metrics.total_pl, "trades": metrics.trades,
        "wins": metrics.wins, "losses": metrics.losses, "win_rate": metrics.win_rate,
        "exposure": metrics.exposure, "open_positions": metrics.open_positions,
        "max_drawdown": report.max_drawdown, "max_drawdown_pct": report.max_drawdown_pct,
        "equity_curve": [{"at": point.at, "equity": point.equity} for point in thinned(report.equity_curve)],
        "by_strategy": {inert(name): {**jsonable(m), "win_rate": jsonable(m.win_rate)}
                        for name, m in report.by_strategy.items()},
        "marked_at_last_fill": report.marked_at_last_fill})


def order_view(trade: Any) -> dict[str, Any]:
    return jsonable({
        "id": trade.id, "agent_id": trade.agent_id, "proposal_id": trade.proposal_id,
        "broker_order_id": trade.order_id, "symbol": trade.symbol, "side": trade.side, "qty": trade.quantity,
        "notional": trade.notional, "order_type": trade.order_type, "limit_price": trade.limit_price,
        "filled_qty": trade.filled_qty, "filled_avg_price": trade.price, "status": trade.status,
        "strategy": inert(trade.strategy) if trade.strategy else None,
        "reject_reason": inert(trade.reject_reason) if trade.reject_reason else None,
        "created_at": trade.created_at, "executed_at": trade.executed_at, "updated_at": trade.updated_at})


async def orders(op: Operator, agent_id: str | None, status: str, limit: int) -> list[dict[str, Any]]:
    if status not in ("open", "closed", "all"):
        raise ApiError(400, "INVALID_ARGUMENT", "status must be open, closed or all")
    return [order_view(trade) for trade in await op.orders(agent_id, status, limit)]


# --- the application -------------------------------------------------------------------------------

Handler = Callable[[Request, Operator], Awaitable[Any]]


class OperatorApi:
    """The /api application; `runtime` gives the open Runtime (None while starting or stopping)."""

    def __init__(self, runtime: RuntimeSource):
        self.runtime = runtime

    def endpoint(self, handler: Handler, *, changes_state: bool, status: int = 200
                 ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            runtime = self.runtime()
            if runtime is None:
                return error_response(503, "UNAVAILABLE", "the server is starting; try again")
            caller = await identify(request, runtime)
            if caller is None:
                return error_response(401, "UNAUTHORIZED", "an operator's bearer token or console session is "
                                                           "required (an agent's token is not accepted)")
            if changes_state and not await _csrf_ok(request, caller):
                return error_response(403, "CSRF_FAILED", "a state change with a console session needs its CSRF "
                                                          f"token (header {CSRF_HEADER})")
            try:
                result = await handler(request, Operator(runtime.gate, caller.identity))
            except ApiError as error:
                return error_response(error.status, error.code, error.message)
            except OperatorError as error:
                mapped = operator_error(error)
                return error_response(mapped.status, mapped.code, mapped.message)
            return JSONResponse(jsonable(result), status_code=status, headers={"Cache-Control": "no-store"})

        return run

    # --- handlers ----------------------------------------------------------------------------------

    async def status(self, request: Request, op: Operator) -> Any:
        return await status_report(op, self.runtime())

    async def approvals(self, request: Request, op: Operator) -> Any:
        return [proposal_view(p) for p in await op.pending()]

    async def approve(self, request: Request, op: Operator) -> Any:
        return await approve(op, path_id(request), await read_body(request))

    async def reject(self, request: Request, op: Operator) -> Any:
        return await reject(op, path_id(request), await read_body(request))

    async def halt(self, request: Request, op: Operator) -> Any:
        return await halt(op, await read_body(request))

    async def resume(self, request: Request, op: Operator) -> Any:
        return await resume(op, await read_body(request))

    async def agents(self, request: Request, op: Operator) -> Any:
        return await op.agents()

    async def add_agent(self, request: Request, op: Operator) -> Any:
        return await add_agent(op, self.runtime(), await read_body(request))

    async def agent(self, request: Request, op: Operator) -> Any:
        return await agent_view(op, self.runtime(), path_id(request))

    async def change_agent(self, request: Request, op: Operator) -> Any:
        return await change_agent(op, self.runtime(), path_id(request), await read_body(request))

    async def performance(self, request: Request, op: Operator) -> Any:
        return await performance(op, path_id(request))

    async def positions(self, request: Request, op: Operator) -> Any:
        return await op.positions(query_text(request, "agent", MAX_ID))

    async def orders(self, request: Request, op: Operator) -> Any:
        return await orders(op, query_text(request, "agent", MAX_ID), query_text(request, "status", 8) or "open",
                            query_int(request, "limit", 50, 1, MAX_LIMIT) or 50)

    async def cancel(self, request: Request, op: Operator) -> Any:
        await read_body(request)  # nothing to read, but bounded like every body
        return order_view(await op.cancel_order(path_id(request)))

    async def audit(self, request: Request, op: Operator) -> Any:
        query = operator_audit.AuditQuery(
            before=query_int(request, "before", None, 1, 10**12), kind=query_text(request, "kind", 48),
            agent_id=query_text(request, "agent", MAX_ID), actor=query_text(request, "actor", 128),
            text=query_text(request, "q"), limit=query_int(request, "limit", 50, 1, MAX_LIMIT) or 50)
        return await operator_audit.search(op, query)

    async def audit_verify(self, request: Request, op: Operator) -> Any:
        verdict = await verify_audit(op, self.runtime())
        report = verdict.report
        return {"ok": verdict.ok, "records": report.records, "head_seq": report.head_seq,
                "head_hash": report.head_hash, "problems": verdict.problems, "anchoring": verdict.anchoring,
                "legacy_rows": verdict.legacy_rows}

    async def openapi(self, request: Request) -> Response:
        from server.operator_openapi import document

        return JSONResponse(document())

    def app(self) -> Starlette:
        read, change = False, True
        routes = [
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/status", self.endpoint(self.status, changes_state=read), methods=["GET"]),
            Route("/agents", self.endpoint(self.agents, changes_state=read), methods=["GET"]),
            Route("/agents", self.endpoint(self.add_agent, changes_state=change, status=201), methods=["POST"]),
            Route("/agents/{id}", self.endpoint(self.agent, changes_state=read), methods=["GET"]),
            Route("/agents/{id}", self.endpoint(self.change_agent, changes_state=change), methods=["PATCH"]),
            Route("/agents/{id}/performance", self.endpoint(self.performance, changes_state=read), methods=["GET"]),
            Route("/positions", self.endpoint(self.positions, changes_state=read), methods=["GET"]),
            Route("/orders", self.endpoint(self.orders, changes_state=read), methods=["GET"]),
            Route("/orders/{id}/cancel", self.endpoint(self.cancel, changes_state=change), methods=["POST"]),
            Route("/approvals", self.endpoint(self.approvals, changes_state=read), methods=["GET"]),
            Route("/approvals/{id}/approve", self.endpoint(self.approve, changes_state=change), methods=["POST"]),
            Route("/approvals/{id}/reject", self.endpoint(self.reject, changes_state=change), methods=["POST"]),
            Route("/halt", self.endpoint(self.halt, changes_state=change), methods=["POST"]),
            Route("/resume", self.endpoint(self.resume, changes_state=change), methods=["POST"]),
            Route("/audit", self.endpoint(self.audit, changes_state=read), methods=["GET"]),
            Route("/audit/verify", self.endpoint(self.audit_verify, changes_state=read), methods=["GET"]),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})  # type: ignore[dict-item]


async def _csrf_ok(request: Request, caller: Caller) -> bool:
    return caller.csrf_ok(request.headers.get(CSRF_HEADER))


async def _http_error(_request: Request, error: HTTPException) -> Response:
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    return error_response(error.status_code, codes.get(error.status_code, "INVALID_ARGUMENT"),
                          str(error.detail))
