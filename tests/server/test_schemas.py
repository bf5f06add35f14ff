"""Every tool's input and output schema in a form strict clients accept (the rules the MCP Inspector's
--strict check and OpenAI's and Gemini's schema dialects apply), and a tools/list small enough to send on
every turn. The Inspector itself needs Node 22 and a version with --strict, so its rules are checked here."""

from __future__ import annotations

import json
from typing import Any

from mcp import Client

# Keywords every strict dialect understands; anything else (e.g. `not`, `if`, `patternProperties`,
# `discriminator`) is a portability problem.
ALLOWED_KEYWORDS = {"type", "properties", "required", "items", "enum", "const", "description", "default",
                    "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "pattern",
                    "additionalProperties", "$defs", "$ref", "anyOf", "format"}
PORTABLE_FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean"}
TOOLS_LIST_LIMIT = 11_000  # characters, json.dumps of every tool (what an LLM reads on every turn)


def schema_problems(schema: Any, where: str) -> list[str]:
    """What a strict client would refuse in `schema` (a JSON Schema node), with where it is."""
    if not isinstance(schema, dict):
        return [f"{where}: a schema must be an object, not {schema!r}"]
    problems = [f"{where}: unsupported keyword {key!r}" for key in schema if key not in ALLOWED_KEYWORDS]
    if "$ref" in schema:
        return problems
    if "anyOf" in schema:
        for i, variant in enumerate(schema["anyOf"]):
            if not isinstance(variant, dict) or (not isinstance(variant.get("type"), str) and "$ref" not in variant):
                problems.append(f"{where}.anyOf[{i}]: every alternative needs one type")
            elif variant.get("type") == "null":
                problems.append(f"{where}.anyOf[{i}]: a null alternative (make the property optional instead)")
            problems += schema_problems(variant, f"{where}.anyOf[{i}]")
        return problems
    kind = schema.get("type")
    if not isinstance(kind, str) or kind not in JSON_TYPES:
        problems.append(f"{where}: needs exactly one JSON type, has {kind!r}")
    if "format" in schema and schema["format"] not in PORTABLE_FORMATS:
        problems.append(f"{where}: format {schema['format']!r} is not portable")
    for name, prop in (schema.get("properties") or {}).items():
        problems += schema_problems(prop, f"{where}.{name}")
    for name, definition in (schema.get("$defs") or {}).items():
        problems += schema_problems(definition, f"{where}.$defs.{name}")
    if "items" in schema:
        problems += schema_problems(schema["items"], f"{where}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += schema_problems(schema["additionalProperties"], f"{where}{{}}")
    return problems


def bound_problems(schema: dict[str, Any], where: str) -> list[str]:
    """Input arguments are bounded: strings by maxLength or enum, arrays by maxItems, numbers by a range."""
    problems: list[str] = []
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type")
        if kind == "string" and "maxLength" not in prop and "enum" not in prop:
            problems.append(f"{where}.{name}: string without maxLength")
        if kind == "array":
            if "maxItems" not in prop:
                problems.append(f"{where}.{name}: array without maxItems")
            problems += bound_problems({"properties": {"[]": prop.get("items", {})}}, f"{where}.{name}")
        if kind in ("integer", "number") and not {"minimum", "maximum"} <= set(prop):
            problems.append(f"{where}.{name}: number without minimum and maximum")
    return problems


async def test_every_schema_passes_the_strict_rules(client: Client) -> None:
    problems: list[str] = []
    for tool in (await client.list_tools()).tools:
        problems += schema_problems(tool.input_schema, f"{tool.name}.input")
        problems += schema_problems(tool.output_schema, f"{tool.name}.output")
    assert problems == []


async def test_every_argument_is_bounded(client: Client) -> None:
    problems: list[str] = []
    for tool in (await client.list_tools()).tools:
        problems += bound_problems(tool.input_schema, tool.name)
    assert problems == []


async def test_tools_list_stays_under_its_limit(client: Client) -> None:
    tools = (await client.list_tools()).tools
    size = len(json.dumps([t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools]))
    assert size < TOOLS_LIST_LIMIT, size


async def test_descriptions_state_the_rules_a_model_needs(client: Client) -> None:
    text = " ".join((t.description or "") for t in (await client.list_tools()).tools)
    for rule in ("09:30-16:00 New York", "gtc or ioc", "macd_signal", "macd_hist", "vwap", "rsi_N",
                 "awaiting_approval", "1-20 symbols", "limit 1-1000", "1-500"):
        assert rule in text, rule


def test_the_checker_refuses_what_strict_clients_refuse() -> None:
    assert schema_problems({"type": ["string", "null"]}, "x")
    assert schema_problems({"anyOf": [{"type": "string"}, {"type": "null"}]}, "x")
    assert schema_problems({"type": "object", "properties": {"data": True}}, "x")
    assert schema_problems({"type": "string", "format": "uri"}, "x")
    assert schema_problems({"type": "string", "not": {"const": "a"}}, "x")
    assert bound_problems({"properties": {"s": {"type": "string"}}}, "x")
    assert schema_problems({"type": "object", "properties": {"s": {"type": "string", "maxLength": 3}}}, "x") == []
