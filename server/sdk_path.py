"""The two per-request steps of the MCP SDK this server does more cheaply, in one place, each checked against the
SDK's own step by tests/server/test_sdk_path.py (they fail if the SDK's behaviour and ours diverge).

- Tracing: the SDK wraps every inbound message in an OpenTelemetry span (`OpenTelemetryMiddleware`, first in
  the server's middleware list, "a no-op until an OTel exporter is installed; drop it from this list to opt
  out"). The no-op still costs a span object, an attributes dict and a context attach per message. Ours hands
  the message straight on while no tracer provider is configured, and to the SDK's middleware as soon as one
  is (set in code or through OTEL_PYTHON_TRACER_PROVIDER, even after the server started).
- Argument pre-parsing: before validating a tool's arguments the SDK tries `json.loads` on every string given
  for a non-`str` parameter (clients that send a list as '["a"]'), and keeps the parsed value unless it is a
  string or a number. For a `side` of "buy" that is an exception raised and caught; for an amount "10", a
  parse thrown away. JSON text parses to something kept only when its first non-blank character is `[`, `{`
  or `n` (null; true/false are kept as the string, being ints): only those strings are parsed here, with the
  SDK's own method, so what it keeps is the same.
"""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer
from mcp.server._otel import OpenTelemetryMiddleware  # the SDK's default first middleware (see above)
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from opentelemetry.trace import ProxyTracerProvider, get_tracer_provider

_JSON_BLANK = " \t\n\r"  # the whitespace json.loads skips before a value
_MAY_PARSE_TO_KEPT = ("[", "{", "n")  # array, object, null: what pre_parse_json keeps (not str/int/float/bool)


class TracingWhenConfigured(ServerMiddleware[Any]):
    """The SDK's OpenTelemetry middleware, skipped while no tracer provider is configured (its spans would be
    non-recording, and nothing in this server propagates trace context onwards)."""

    def __init__(self, traced: ServerMiddleware[Any]) -> None:
        self.traced = traced

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if isinstance(get_tracer_provider(), ProxyTracerProvider):
            return await call_next(ctx)
        return await self.traced(ctx, call_next)


class LeanArgumentParsing(FuncMetadata):
    """FuncMetadata whose pre-parsing calls json.loads only on strings that could parse to something kept."""

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        if any(isinstance(value, str) and value.lstrip(_JSON_BLANK)[:1] in _MAY_PARSE_TO_KEPT
               for value in data.values()):
            return super().pre_parse_json(data)
        return data.copy()  # the SDK's result when nothing parses: a shallow copy, the same values


def lean_argument_parsing(metadata: FuncMetadata) -> FuncMetadata:
    """`metadata` with the lean pre-parsing; the same argument model, output schema and output model."""
    if type(metadata) is not FuncMetadata:  # a subclass the SDK made would lose its own behaviour
        return metadata
    return LeanArgumentParsing(arg_model=metadata.arg_model, output_schema=metadata.output_schema,
                               output_model=metadata.output_model, wrap_output=metadata.wrap_output)


def use_lean_sdk_path(server: MCPServer[Any]) -> None:
    """Install both steps on a server whose tools are registered."""
    chain = server.middleware
    for index, middleware in enumerate(chain):
        if type(middleware) is OpenTelemetryMiddleware:
            chain[index] = TracingWhenConfigured(middleware)
    for tool in server._tool_manager.list_tools():
        tool.fn_metadata = lean_argument_parsing(tool.fn_metadata)
