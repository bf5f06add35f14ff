"""A property-based fuzz of the operator API from its own /api/openapi.json: requests built from the document's
schemas (and junk beside them) against a real server find no 5xx, and every refusal has the error shape.

(schemathesis does this too, but pulls dozens of dependencies into the lock; the document is small enough that
hypothesis strategies built from its schemas cover it.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.server.console_env import ConsoleDeployment, start_console_deployment

JUNK: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema allows, near its bounds, and sometimes not (a fuzz, not a validator)."""
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | st.text(max_size=12)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=4)
    if kind == "string":
        limit = int(schema.get("maxLength", 50))
        numeric = st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str)
        return st.one_of(st.text(max_size=limit), st.text(min_size=limit, max_size=limit + 3), numeric)
    if kind == "integer":
        return st.integers(min_value=-(10**14), max_value=10**14)
    if kind == "boolean":
        return st.booleans()
    if kind == "object":
        properties = {name: from_schema(sub) for name, sub in schema.get("properties", {}).items()}
        return st.fixed_dictionaries({}, optional=properties)
    return JUNK


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, operation) for path, item in document["paths"].items()
            for method, operation in item.items()]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleDeployment]:
    deployment = start_console_deployment(tmp_path_factory.mktemp("operator-api-fuzz"))
    try:
        yield deployment
    finally:
        deployment.server.stop()


@st.composite
def requests(draw: st.DrawFn, document: dict[str, Any], proposal_ids: list[str]) -> dict[str, Any]:
    method, path, operation = draw(st.sampled_from(operations(document)))
    query: dict[str, str] = {}
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            value = draw(st.sampled_from(proposal_ids) | from_schema(parameter["schema"]) | st.text(max_size=80))
            path = path.replace("{" + parameter["name"] + "}", quote(str(value) or "x", safe=""))
        elif draw(st.booleans()):
            query[parameter["name"]] = str(draw(from_schema(parameter["schema"]) | st.text(max_size=20)))[:300]
    body: Any = None
    if "requestBody" in operation:
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        body = draw(from_schema(schema) | JUNK)
    return {"method": method.upper(), "path": path, "params": query, "body": body,
            "who": draw(st.sampled_from(["adam", "alice", "vera", "agent", None]))}


def test_fuzzing_the_api_from_its_openapi_document_finds_no_5xx(deployment: ConsoleDeployment) -> None:
    with deployment.api(None) as client:
        document = client.get("/api/openapi.json").json()
    import asyncio

    proposal_ids = [str(asyncio.run(deployment.propose(qty=qty))["proposal_id"]) for qty in (1, 2, 3)]
    clients = {who: deployment.api(who) for who in ("adam", "alice", "vera", "agent", None)}
    seen: set[int] = set()

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @example({"method": "POST", "path": "/api/halt", "params": {}, "body": float("inf"), "who": "adam"})
    @example({"method": "POST", "path": "/api/halt", "params": {}, "body": {"reason": float("nan")}, "who": "adam"})
    @example({"method": "POST", "path": f"/api/approvals/{proposal_ids[0]}/approve", "params": {},
              "body": {"qty": float("inf"), "stop_loss": "-1"}, "who": "alice"})
    @given(requests(document, proposal_ids))
    def check(request: dict[str, Any]) -> None:
        client = clients[request["who"]]
        # json.dumps, not httpx's encoder: NaN and Infinity are sent too (Python's json.loads reads them back).
        content = None if request["body"] is None else json.dumps(request["body"], allow_nan=True).encode()
        answer = client.request(request["method"], request["path"], params=request["params"], content=content,
                                headers={"content-type": "application/json"})
        seen.add(answer.status_code)
        assert answer.status_code < 500, (request, answer.status_code, answer.text[:500])
        if answer.status_code >= 400:
            error = answer.json()["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str)

    try:
        check()
    finally:
        for client in clients.values():
            client.close()
    assert {200, 401, 403} <= seen  # the fuzz reached past authentication and the role checks
