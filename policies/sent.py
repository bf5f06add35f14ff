"""A tool's result as the wire carries it, dumped once per call.

The gate records the result it answers as the call's outcome (its JSON dump, bounded), and the server sends the
same dump without its None values (tools.common.compact_call_result). Both read it here: the dump of the result
this task dumped last is given again for the same object (a result model is frozen: its dump cannot change),
any other result (an equal one included: Decimal("1.0") == Decimal("1")) is dumped afresh. A context variable:
each task keeps its own last dump, so calls running at once do not push each other's out.
Callers must not change the mapping they get (both build new ones from it: bounded, drop_none).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel

_last: ContextVar[tuple[BaseModel, dict[str, Any]] | None] = ContextVar("tradewarden_last_dump", default=None)


def wire_dump(result: BaseModel) -> dict[str, Any]:
    """result.model_dump(mode="json", by_alias=True), as the SDK dumps a tool's result; the same mapping again
    for the same result object in this task."""
    last = _last.get()
    if last is not None and last[0] is result:
        return last[1]
    dumped = result.model_dump(mode="json", by_alias=True)
    _last.set((result, dumped))
    return dumped
