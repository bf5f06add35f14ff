"""The OpenAPI 3.1 description of the operator API (served at /api/openapi.json). Hand-written: it is the
contract clients and the API's property-based tests work from, so it says exactly what the handlers accept."""

from __future__ import annotations

from functools import cache
from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 64}}
TEXT = {"type": "string", "maxLength": 500}
SETTINGS = {"type": "object", "maxProperties": 40, "description": "setting name to value, as in the config file's "
            "[[agents]] (e.g. max_trade_size, allowed_symbols, approval, daily_loss_limit)",
            "properties": {"max_trade_size": {"type": "string"}, "max_position_size": {"type": "string"},
                           "max_daily_trades": {"type": "integer"},
                           "allowed_symbols": {"type": "array", "items": {"type": "string", "maxLength": 32}},
                           "allowed_strategies": {"type": "array", "items": {"type": "string", "maxLength": 64}},
                           "risk_level": {"type": "string", "enum": ["conservative", "moderate", "aggressive"]},
                           "approval": {"type": "string", "enum": ["auto", "elicit", "operator"]},
                           "auto_approve_max_notional": {"type": "string"}, "capital": {"type": "string"}}}
DECIMAL = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "maxLength": 32}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _operation(summary: str, *, parameters: list[dict[str, Any]] | None = None,
               body: dict[str, Any] | None = None, changes_state: bool = False) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": {}}}},
        "400": {"description": "Bad input", "content": {"application/json": {"schema": ERROR}}},
        "401": {"description": "No operator credential", "content": {"application/json": {"schema": ERROR}}},
        "403": {"description": "The role (or, with a session, the CSRF token) does not allow it",
                "content": {"application/json": {"schema": ERROR}}},
    }
    if parameters and any(p["in"] == "path" for p in parameters):
        responses["404"] = {"description": "Unknown id", "content": {"application/json": {"schema": ERROR}}}
    if changes_state:
        responses["409"] = {"description": "The current state does not allow it",
                            "content": {"application/json": {"schema": ERROR}}}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return operation


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def paths() -> dict[str, Any]:
    return {
        "/api/status": {"get": _operation("Trading mode, halts, pending approvals, audit head")},
        "/api/agents": {
            "get": _operation("Agents: state, approval mode, where their settings come from"),
            "post": _operation("Register an agent (the seed's register); its bearer token is returned once",
                               changes_state=True,
                               body=_object({"id": {"type": "string", "maxLength": 64}, "settings": SETTINGS},
                                            required=["id"]))},
        "/api/agents/{id}": {
            "get": _operation("One agent: limits in force and where each setting comes from", parameters=[ID_PARAM]),
            "patch": _operation("Change an agent: settings (limits, symbols, strategies, approval...), reset "
                                "(back to the config file or default), enabled, rotate_token (the new token is "
                                "returned once)", parameters=[ID_PARAM], changes_state=True,
                                body=_object({"settings": SETTINGS, "reset": {"type": "array", "items":
                                                                              {"type": "string", "maxLength": 64}},
                                              "enabled": {"type": "boolean"}, "rotate_token": {"type": "boolean"}}))},
        "/api/agents/{id}/performance": {"get": _operation(
            "The seed's performance: realized and unrealized P&L, equity curve, trades, win rate, max drawdown, "
            "exposure, by strategy", parameters=[ID_PARAM])},
        "/api/positions": {"get": _operation("Each agent's positions, cash and equity", parameters=[
            _query("agent", {"type": "string", "maxLength": 64}, "one agent")])},
        "/api/orders": {"get": _operation("Orders, newest first, with the broker's status", parameters=[
            _query("agent", {"type": "string", "maxLength": 64}, "one agent"),
            _query("status", {"type": "string", "enum": ["open", "closed", "all"]}, "open (default), closed, all"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "at most this many (50)")])},
        "/api/orders/{id}/cancel": {"post": _operation("Cancel an order (any agent's), through the gate",
                                                        parameters=[ID_PARAM], changes_state=True)},
        "/api/approvals": {"get": _operation("Proposals waiting for a person (the agent's text made inert)")},
        "/api/approvals/{id}/approve": {"post": _operation(
            "Approve a proposal, optionally shrinking it (a lower qty, a limit price no worse, a protective stop "
            "tightened or added, never loosened): the edited order passes every check again", parameters=[ID_PARAM],
            changes_state=True, body=_object({"note": TEXT, "qty": DECIMAL, "limit_price": DECIMAL,
                                              "stop_loss": DECIMAL}))},
        "/api/approvals/{id}/reject": {"post": _operation("Reject a proposal", parameters=[ID_PARAM],
                                                           changes_state=True, body=_object({"reason": TEXT}))},
        "/api/halt": {"post": _operation(
            "Halt all agents, or one; reduce_only lets positions close but not grow (admin); cancel_open "
            "also cancels every open order (the kill switch)", changes_state=True,
            body=_object({"agent_id": {"type": "string", "maxLength": 64}, "reason": TEXT,
                          "reduce_only": {"type": "boolean"}, "cancel_open": {"type": "boolean"}},
                         required=["reason"]))},
        "/api/resume": {"post": _operation("Lift a halt or reduce-only state (admin)", changes_state=True,
                                           body=_object({"agent_id": {"type": "string", "maxLength": 64}}))},
        "/api/audit": {"get": _operation("Audit records, newest first", parameters=[
            _query("before", {"type": "integer", "minimum": 1}, "only records before this sequence number"),
            _query("kind", {"type": "string", "maxLength": 48}, "records whose kind starts with this"),
            _query("agent", {"type": "string", "maxLength": 64}, "one agent's records"),
            _query("actor", {"type": "string", "maxLength": 128}, "e.g. operator:alice, agent:momentum-1"),
            _query("q", {"type": "string", "maxLength": 200}, "text in the record"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "at most this many (50)")])},
        "/api/audit/verify": {"get": _operation("Recompute the audit hash chain")},
    }


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "tradewarden operator API", "version": "1",
                 "description": "Operators' API (viewer, approver, admin). Authenticate with an operator's bearer "
                                "token; an agent's token is refused. With a console session cookie instead, "
                                "every state change needs the X-CSRF-Token header."},
        "servers": [{"url": "/"}],
        "security": [{"operatorToken": []}],
        "paths": paths(),
        "components": {
            "securitySchemes": {"operatorToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _object({"error": _object({"code": {"type": "string"},
                                                            "message": {"type": "string"}},
                                                           required=["code", "message"])}, required=["error"])},
        },
    }
