"""One-line JSON text made by an encoder kept for the process.

`json.dumps(value, **options)` builds a JSONEncoder on every call when given options, and `JSONEncoder.encode`
builds the C encoder on every call too. For text written on every call (audit records, tool results) both are made
once here; the text is the same as json.dumps gives. The C encoder is made without the circular-reference
bookkeeping: a value that contains itself raises RecursionError, not ValueError (none does: audit payloads are
built by the gate and bounded, tool results are pydantic dumps).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def kept_encoder(*, sort_keys: bool = False, default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """`lambda value: json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False,
    default=default)`, with its encoders made once."""
    python = json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), default=default, ensure_ascii=False)
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:  # an interpreter without the C encoder
        return python.encode
    # The arguments JSONEncoder.iterencode gives it: markers (None: no circular check), default, the string
    # encoder of ensure_ascii=False, indent, the separators, sort_keys, skipkeys, allow_nan.
    chunks = make(None, python.default, json.encoder.encode_basestring,  # type: ignore[attr-defined]
                  None, ":", ",", sort_keys, False, True)

    def encode(value: Any) -> str:
        if type(value) is str:  # the C encoder takes containers and scalars, encode() special-cases a bare string
            return python.encode(value)
        return "".join(chunks(value, 0))

    return encode
