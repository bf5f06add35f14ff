"""bounded, as the audit log runs it, gives exactly what its plain recursive definition gives (the reference
below, as it stood before its leaves were answered in the loop): long text cut, lists and mappings cut, depth
limited, NUL and lone surrogates made storable, keys that are not text."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC
from decimal import Decimal
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from policies import failures
from policies.failures import AUDIT_DEPTH_MAX, AUDIT_EXCERPT, AUDIT_ITEMS_MAX, AUDIT_STRING_MAX, bounded


def reference_bounded(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        if len(value) <= AUDIT_STRING_MAX:
            return failures._storable(value)
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        return {"excerpt": failures._storable(value[:AUDIT_EXCERPT]), "length": len(value), "sha256": digest}
    if depth >= AUDIT_DEPTH_MAX:
        return "…"
    if type(value) in failures._PLAIN:
        return value
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {failures._storable(str(key)[:AUDIT_EXCERPT]): reference_bounded(item, depth + 1)
               for key, item in items[:AUDIT_ITEMS_MAX]}
        if len(items) > AUDIT_ITEMS_MAX:
            out["…"] = f"{len(items) - AUDIT_ITEMS_MAX} more keys"
        return out
    if isinstance(value, (list, tuple)):
        kept = [reference_bounded(item, depth + 1) for item in value[:AUDIT_ITEMS_MAX]]
        if len(value) > AUDIT_ITEMS_MAX:
            kept.append(f"… {len(value) - AUDIT_ITEMS_MAX} more items")
        return kept
    return value


def reference_has_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if depth >= AUDIT_DEPTH_MAX * 4:
        return False
    if isinstance(value, Mapping):
        return any(reference_has_nul(k, depth + 1) or reference_has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(reference_has_nul(item, depth + 1) for item in value)
    return False


class Text(str):
    pass


_TEXT = st.one_of(st.text(max_size=30), st.sampled_from(["\x00", "a\x00", "\ud800x", "é", "…", "AAPL"]),
                  st.text(min_size=AUDIT_STRING_MAX - 2, max_size=AUDIT_STRING_MAX + 3, alphabet="a\x00é"),
                  st.text(min_size=AUDIT_EXCERPT - 1, max_size=AUDIT_EXCERPT + 2, alphabet="k\x00é"))
_KEYS = st.one_of(_TEXT, st.integers(-3, 3), st.booleans(), st.none(), st.builds(Text, _TEXT))
_LEAVES = st.one_of(_TEXT, st.builds(Text, _TEXT), st.integers(), st.floats(allow_nan=False), st.booleans(),
                    st.none(), st.decimals(allow_nan=False, allow_infinity=False),
                    st.datetimes(timezones=st.just(UTC)), st.frozensets(st.integers(), max_size=2))
_PAYLOADS = st.recursive(
    _LEAVES,
    lambda children: st.one_of(st.lists(children, max_size=4), st.tuples(children),
                               st.dictionaries(_KEYS, children, max_size=5)),
    max_leaves=40)


def _nested(depth: int) -> Any:
    value: Any = {"leaf": 1, "text": "t", "none": None}
    for _ in range(depth):
        value = {"down": value, "n": Decimal("1.5")}
    return value


@settings(max_examples=200, deadline=None)
@given(payload=_PAYLOADS)
@example(payload=_nested(AUDIT_DEPTH_MAX + 1))
@example(payload=[_nested(AUDIT_DEPTH_MAX)])
@example(payload={str(i): i for i in range(AUDIT_ITEMS_MAX + 3)})
@example(payload={"k" * (AUDIT_EXCERPT + 5): "v", "k" * AUDIT_EXCERPT + "x": "w", 1: "a", "1": "b"})
def test_bounded_gives_what_its_definition_gives(payload: Any) -> None:
    assert bounded(payload) == reference_bounded(payload)
    assert repr(bounded(payload)) == repr(reference_bounded(payload))


@settings(max_examples=200, deadline=None)
@given(payload=_PAYLOADS)
@example(payload=_nested(AUDIT_DEPTH_MAX * 4 + 2) | {"deep": None})
@example(payload={"a": 1, ("\x00" + "k"): 2})
def test_has_nul_gives_what_its_definition_gives(payload: Any) -> None:
    assert failures.has_nul(payload) == reference_has_nul(payload)


def test_a_nul_deeper_than_the_limit_is_not_searched_for() -> None:
    value: Any = "\x00"
    for _ in range(AUDIT_DEPTH_MAX * 4 + 1):
        value = {"down": value}
    assert not failures.has_nul(value) and failures.has_nul(value["down"])
