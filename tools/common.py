"""What every tool shares: reaching the gate, the one call path through it, and compact argument types."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, WithJsonSchema

from policies.violations import GateDenied

if TYPE_CHECKING:  # the ledger is imported when the runtime opens, not to list the tools
    from policies.gate import Agent, Gate

R = TypeVar("R")

# Decimals as numbers or strings, with a one-line schema (an LLM pays for every token of tools/list).
Amount = Annotated[Decimal, WithJsonSchema({"type": ["number", "string"]})]


def optional_amount(description: str) -> Any:
    return Annotated[Decimal | None, WithJsonSchema({"type": ["number", "string", "null"],
                                                     "description": description}),
                     Field(default=None, le=MAX_AMOUNT, max_digits=30)]


# No order is ever this large; the bound keeps absurd numbers out of the ledger (and its columns).
MAX_AMOUNT = Decimal(10) ** 12


class AppContext(Protocol):
    """What the server's lifespan yields to tools."""

    gate: Gate

    def agent_id(self) -> str | None: ...


def app_of(ctx: Context) -> AppContext:
    return ctx.request_context.lifespan_context  # type: ignore[no-any-return,return-value]


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
