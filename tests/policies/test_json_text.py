"""policies/json_text.py: the text of a kept encoder is json.dumps's with the same options."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from policies.json_text import kept_encoder

VALUES: list[Any] = [
    {"b": 1, "a": [1.5, None, True, "é \u2028 \"q\""], "c": {"z": {}, "y": []}},
    ["x", 0, -1, 1e300, False],
    "a bare string \u00e9",
    12,
    None,
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("sort_keys", [False, True])
def test_a_kept_encoder_writes_what_json_dumps_writes(value: Any, sort_keys: bool) -> None:
    encode = kept_encoder(sort_keys=sort_keys)
    assert encode(value) == json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)
    assert encode(value) == encode(value)  # kept: the second use writes the same


def test_a_kept_encoder_calls_its_default_for_what_json_cannot_write() -> None:
    encode = kept_encoder(sort_keys=True, default=lambda value: format(value, "f"))
    assert encode({"qty": Decimal("1.50")}) == '{"qty":"1.50"}'


def test_without_a_default_what_json_cannot_write_is_refused() -> None:
    with pytest.raises(TypeError):
        kept_encoder()({"qty": Decimal("1")})
