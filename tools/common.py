"""What every tool shares: reaching the gate, the one call path through it, and compact argument types."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field, WithJsonSchema

from policies.json_text import kept_encoder
from policies.sent import wire_dump
from policies.violations import GateDenied

if TYPE_CHECKING:  # the ledger is imported when the runtime opens, not to list the tools
    from sqlalchemy.ext.asyncio import AsyncConnection

    from policies.gate import Agent, Gate

R = TypeVar("R")
T = TypeVar("T")

# Amounts are decimal strings in the schema ("10", "0.5": exact, unlike binary floats); a JSON number is
# accepted too, leniently, but the schema keeps ONE type so every client's schema dialect takes it.
AMOUNT_MAX_LENGTH = 24  # 13 digits, a point and 9 decimals, with room for a sign the checks then refuse
Amount = Annotated[Decimal, WithJsonSchema({"type": "string", "maxLength": AMOUNT_MAX_LENGTH})]


def optional_amount(description: str) -> Any:
    return Annotated[Decimal | None, WithJsonSchema({"type": "string", "maxLength": AMOUNT_MAX_LENGTH,
                                                     "description": description}),
                     Field(default=None, le=MAX_AMOUNT, max_digits=30)]


def optional(json_type: dict[str, Any], python_type: Any, **constraints: Any) -> Any:
    """An optional argument with a single-typed schema (no null alternative: leaving it out is None)."""
    return Annotated[python_type | None, WithJsonSchema(json_type), Field(default=None, **constraints)]


EXIT_MAX_LENGTH = 40


def exit_text(description: str, pattern: str) -> Any:
    """An optional order exit as text: one JSON type (string), its format in the pattern, bounded."""
    return Annotated[str | None, WithJsonSchema({"type": "string", "pattern": pattern, "maxLength": EXIT_MAX_LENGTH,
                                                 "description": description}),
                     Field(default=None, max_length=EXIT_MAX_LENGTH, pattern=pattern)]


# No order is ever this large; the bound keeps absurd numbers out of the ledger (and its columns).
MAX_AMOUNT = Decimal(10) ** 12


class AppContext(Protocol):
    """What the server's lifespan yields to tools."""

    @property
    def gate(self) -> Gate: ...

    def agent_id(self) -> str | None: ...


# The server's state for the tool call in progress, set by the server around it (server.app call_tool): found
# here, a tool does not read ctx.request_context again (a pydantic private attribute, read through __getattr__
# twice a time: several microseconds). Outside a tool call (resources), the context is asked.
call_app: ContextVar[AppContext | None] = ContextVar("tradewarden_call_app", default=None)


def app_of(ctx: Context) -> AppContext:
    app = call_app.get()
    return app if app is not None else ctx.request_context.lifespan_context  # type: ignore[return-value]


async def through_gate(ctx: Context, tool: str, args: Mapping[str, Any],
                       operation: Callable[[Gate, Agent], Awaitable[R]], *,
                       acts_at_broker: bool = True, allow_disabled: bool = False) -> R:
    """The one path every tool takes: gate.handle identifies the agent and audits; a denial becomes a
    tool error whose text starts with its stable code. Tools that can neither submit nor cancel an order
    pass acts_at_broker=False (their intent is recorded with their first change, see Gate.handle)."""
    app = app_of(ctx)
    gate = app.gate
    try:
        return await gate.handle(tool, app.agent_id(), args, lambda agent: operation(gate, agent),
                                 acts_at_broker=acts_at_broker, allow_disabled=allow_disabled)
    except GateDenied as denied:
        raise ToolError("; ".join(f"{v.code}: {v.message}" for v in denied.violations)) from None


async def read_through_gate(ctx: Context, tool: str, args: Mapping[str, Any],
                            read: Callable[[Gate, AsyncConnection, Agent], Awaitable[T]],
                            answer: Callable[[Gate, Agent, T], Awaitable[R]]) -> R:
    """The path of the tools that only read (Gate.handle_read): `read` gets the ledger inside the call's one
    read transaction, `answer` builds the result from it and the broker, outside it."""
    app = app_of(ctx)
    gate = app.gate
    try:
        return await gate.handle_read(tool, app.agent_id(), args,
                                      lambda connection, agent: read(gate, connection, agent),
                                      lambda agent, found: answer(gate, agent, found))
    except GateDenied as denied:
        raise ToolError("; ".join(f"{v.code}: {v.message}" for v in denied.violations)) from None


async def nothing_to_read(_gate: Gate, _connection: AsyncConnection, _agent: Agent) -> None:
    """The `read` of a tool that needs nothing from the ledger beyond who is asking."""


# json.dumps(value, separators=(",", ":"), ensure_ascii=False), its encoders made once (policies/json_text.py).
compact_json = kept_encoder()


def compact_wire(result: BaseModel) -> tuple[dict[str, Any], str]:
    """A tool's result as the wire carries it: its structured content without None values (the output schemas
    make them optional), dumped as the SDK dumps a tool's result (the dump the gate recorded as the call's outcome:
    policies/sent.py), and the same data as one line of JSON for clients that read only the text."""
    structured = drop_none(wire_dump(result))
    return structured, compact_json(structured)


def compact_call_result(result: BaseModel) -> CallToolResult:
    """A tool's result as the wire carries it: structured content without None values (the output schemas
    make them optional) and the same data as one line of JSON for clients that read only the text."""
    structured, text = compact_wire(result)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


def drop_none(value: Any) -> Any:
    """`value` without None entries in its mappings."""
    if isinstance(value, dict):
        return {key: drop_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [drop_none(item) for item in value]
    return value
