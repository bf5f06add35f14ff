"""Compact, portable JSON schemas for tools/list: an LLM pays for every token of every tool, and strict
clients (OpenAI's and Gemini's schema dialects, the MCP Inspector's --strict check) refuse type arrays.

Every property has ONE JSON type. A value that may be absent is simply not required (and is left out of
results: `drop_none`), never typed `["string", "null"]` nor `anyOf [X, null]`. Titles, model docstrings and
`default: null` carry no constraint and are dropped.
"""

from __future__ import annotations

from typing import Any


def _without_null(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the schema with its `null` alternative removed, whether it had one)."""
    variants = schema.get("anyOf")
    if isinstance(variants, list):
        kept = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
        if len(kept) < len(variants):
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            if len(kept) == 1 and isinstance(kept[0], dict):
                return {**kept[0], **rest}, True
            return {**rest, "anyOf": kept}, True
    found = schema.get("type")
    if isinstance(found, list) and "null" in found:
        kept_types = [t for t in found if t != "null"]
        return {**schema, "type": kept_types[0] if len(kept_types) == 1 else kept_types}, True
    return schema, False


def compact_schema(schema: Any, *, in_properties: bool = False) -> Any:
    """Drop titles, model docstrings and null defaults; make every nullable property a single-typed
    optional one. Validation of arguments is unchanged (pydantic validates them, not this schema)."""
    if isinstance(schema, list):
        return [compact_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if in_properties:  # keys are property names here, not schema keywords
        return {name: compact_schema(value) for name, value in schema.items()}
    schema, _ = _without_null(schema)
    out: dict[str, Any] = {}
    nullable: set[str] = set()
    for key, value in schema.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key == "description" and "properties" in schema:
            continue  # a model's docstring, not a field's description
        if key == "properties" and isinstance(value, dict):
            for name, prop in value.items():
                if isinstance(prop, dict) and _without_null(prop)[1]:
                    nullable.add(name)
        if key == "additionalProperties" and isinstance(value, dict):
            value = _without_null(value)[0]
        out[key] = compact_schema(value, in_properties=key in ("properties", "$defs"))
    if nullable and isinstance(out.get("required"), list):
        out["required"] = [name for name in out["required"] if name not in nullable]
        if not out["required"]:
            del out["required"]
    return out


def compact_output_schema(schema: Any) -> Any:
    """compact_schema for a result: defaults say nothing about what a tool returns, so they go too."""
    return _strip_defaults(compact_schema(schema))


def _strip_defaults(schema: Any, in_properties: bool = False) -> Any:
    if isinstance(schema, list):
        return [_strip_defaults(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if in_properties:
        return {name: _strip_defaults(value) for name, value in schema.items()}
    # Defaults say nothing about a result; formats only repeat what the names say (*_at, as_of, t: ISO times);
    # a map whose values may be of several types (limits, used_today) is described as an object.
    return {key: _strip_defaults(value, key in ("properties", "$defs")) for key, value in schema.items()
            if key not in ("default", "format")
            and not (key == "additionalProperties" and isinstance(value, dict) and "anyOf" in value)}
