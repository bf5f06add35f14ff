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

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger.models import GLOBAL_SCOPE
from policies import operator_audit, operator_usage
from policies.operator import Operator
from policies.operator_usage import AgentUsage
from policies.operators import OperatorError, OperatorForbidden
from policies.text import inert
from server.operator_auth import CSRF_HEADER, Caller, RuntimeSource, identify

log = structlog.get_logger("tradewarden.operator_api")

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
        "time_in_force": proposal.time_in_force, "estimated_notional": proposal.estimated_notional,
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
    states = await op.states()
    pending = await op.pending()
    seq, head_hash = await operator_audit.head(op)
    reconciliation = await operator_usage.reconciliation(op)
    return jsonable({
        "trading_mode": runtime.config.server.trading_mode, "broker": runtime.config.server.broker,
        "states": [{"scope": s.scope, "state": s.state, "reason": inert(s.reason) if s.reason else None,
                    "changed_by": s.changed_by, "changed_at": s.changed_at} for s in states],
        "pending_approvals": sum(1 for p in pending if p.expires_at > op.now),
        "reconciliation": reconciliation, "audit_head": {"seq": seq, "hash": head_hash},
        "operator": {"name": op.identity.name, "role": op.identity.role}})


async def agent_utilisation(op: Operator) -> list[AgentUsage]:
    return await operator_usage.utilisation(op)


async def agent_ids(op: Operator) -> list[str]:
    return await operator_usage.agent_ids(op)


# --- actions (the API and the console's forms both call these) ---------------------------------------


async def approve(op: Operator, proposal_id: str, body: dict[str, Any]) -> dict[str, Any]:
    note = text_field(body, "note")
    qty, limit_price = decimal_field(body, "qty"), decimal_field(body, "limit_price")
    return proposal_view(await op.decide(proposal_id, True, note, qty=qty, limit_price=limit_price))


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

    async def audit(self, request: Request, op: Operator) -> Any:
        query = operator_audit.AuditQuery(
            before=query_int(request, "before", None, 1, 10**12), kind=query_text(request, "kind", 48),
            agent_id=query_text(request, "agent", MAX_ID), actor=query_text(request, "actor", 128),
            text=query_text(request, "q"), limit=query_int(request, "limit", 50, 1, MAX_LIMIT) or 50)
        return await operator_audit.search(op, query)

    async def audit_verify(self, request: Request, op: Operator) -> Any:
        report = await operator_audit.verify(op)
        return {"ok": report.ok, "records": report.records, "head_seq": report.head_seq,
                "head_hash": report.head_hash, "problems": [asdict(p) for p in report.problems]}

    async def openapi(self, request: Request) -> Response:
        from server.operator_openapi import document

        return JSONResponse(document())

    def app(self) -> Starlette:
        read, change = False, True
        routes = [
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/status", self.endpoint(self.status, changes_state=read), methods=["GET"]),
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
