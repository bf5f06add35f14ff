"""tools/common.py: what every tool shares (here: the one line of JSON a result's text is)."""

from __future__ import annotations

import json

import pytest

from tools.common import compact_json


@pytest.mark.parametrize("value", [
    {"b": 1, "a": [1, 2.5, None, True, "ünïcödé ✓", "\u2028\x00", {"z": {}, "y": []}]},
    [{"k": (1, "t")}, "line\nbreak"], "just text", 7, None, {}, {"nan": float("nan")}])
def test_compact_json_is_json_dumps_on_one_line_with_text_as_it_is(value: object) -> None:
    assert compact_json(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_a_value_json_cannot_write_fails_as_json_dumps_fails() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        compact_json({"a": object()})
