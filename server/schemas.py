"""Compact JSON schemas for tools/list: an LLM pays for every token of every tool, on every turn."""

from __future__ import annotations

from typing import Any

_SIMPLE = {"type"}


def compact_schema(schema: Any, *, in_properties: bool = False) -> Any:
    """Drop titles and model docstrings, and fold `anyOf` of plain types into one `type` list.
    Validation is unchanged: titles and descriptions of models carry no constraint."""
    if isinstance(schema, list):
        return [compact_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if in_properties:  # keys are property names here, not schema keywords
        return {name: compact_schema(value) for name, value in schema.items()}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title":
            continue
        if key == "description" and "properties" in schema:
            continue  # a model's docstring, not a field's description
        out[key] = compact_schema(value, in_properties=key in ("properties", "$defs"))
    variants = out.get("anyOf")
    if isinstance(variants, list) and variants and all(isinstance(v, dict) and set(v) <= _SIMPLE for v in variants):
        types: list[str] = []
        for variant in variants:
            found = variant["type"]
            types.extend(found if isinstance(found, list) else [found])
        del out["anyOf"]
        out["type"] = types[0] if len(types) == 1 else list(dict.fromkeys(types))
    return out
