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
  SDK's own method, so what it keeps is the same. The validated arguments are then the model's attribute
  dictionary copied (what `model_dump_one_level` gives for a model without aliases), not a getattr per field.
- Answering tools/call (server/app.py TradewardenServer._handle_call_tool): the SDK's handler builds a
  `Context` through pydantic's __init__ per call (~4 us for a model with no fields, only four private
  attributes); `tool_context` builds the same instance directly. And a result that is one text block plus
  structured content goes to the runner as the mapping `CallToolResult.model_dump` would give
  (`text_result_on_wire`) rather than as a model it dumps: the runner validates and dumps that mapping
  against the protocol version's own result model either way, so the wire is its dump in both cases.
- Serving a stream (stdio): `Server.run` enters the lifespan and hands the streams to `serve_dual_era_loop`,
  which reads up to the client's first request to learn the protocol era and then relays every later message
  through a task and a memory stream of its own into the serving loop of that era: a task switch and two
  turns of the event loop per message. `serve_stream` does the same peek and hands the serving loop a stream
  that replays what the peek read, then reads on from the transport itself (the same frames, the same sender
  contexts; tests/server/test_stdio.py compares the bytes with the SDK's own stdio in both eras).
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server._otel import OpenTelemetryMiddleware  # the SDK's default first middleware (see above)
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.server.runner import (  # the two eras' serving loops behind serve_dual_era_loop (see serve_stream)
    _PRE_REQUEST_REPLAY_LIMIT,
    _has_modern_envelope,
    _serve_legacy_stream,
    _serve_modern_stream,
)
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCRequest
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


# Per argument model: whether its fields are all named as they are passed (no alias). Then the validated model's
# own attribute dictionary holds exactly what model_dump_one_level gives (each field by its name, values as they
# are), copied in C instead of a getattr per field.
_UNALIASED: dict[type[ArgModelBase], bool] = {}


def _unaliased(model: type[ArgModelBase]) -> bool:
    found = _UNALIASED.get(model)
    if found is None:
        found = _UNALIASED[model] = all(not info.alias for info in model.model_fields.values())
    return found


class LeanArgumentParsing(FuncMetadata):
    """FuncMetadata whose pre-parsing calls json.loads only on strings that could parse to something kept, and
    whose validated arguments are read off the model in one step."""

    def validate_arguments(self, arguments_to_validate: dict[str, Any]) -> dict[str, Any]:
        model = self.arg_model
        if not _unaliased(model):
            return super().validate_arguments(arguments_to_validate)
        validated = model.model_validate(self.pre_parse_json(arguments_to_validate))
        fields = validated.__dict__
        # Only the fields are in it (pydantic keeps extras and private attributes apart); checked, not assumed.
        if len(fields) != len(model.model_fields):
            return validated.model_dump_one_level()
        return dict(fields)

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


# What Context.__init__ sets (mcp 2.3.0; its source is pinned in tests/server/test_sdk_path.py): no fields, and
# each of these four private attributes from its argument. Checked once: any other shape (a later SDK) is built
# through its own __init__.
_CONTEXT_PRIVATE = ("_request_context", "_mcp_server", "_input_params", "_subscriptions")
_CONTEXT_IS_PRIVATE_ONLY = not Context.model_fields and tuple(Context.__private_attributes__) == _CONTEXT_PRIVATE
_set = object.__setattr__


def tool_context(request_context: Any, server: Any, params: Any, subscriptions: Any) -> Context[Any, Any]:
    """`Context(request_context=..., mcp_server=..., input_params=..., subscriptions=...)`, the instance the
    SDK's tools/call handler gives a tool, set up as pydantic's __init__ sets it up (an empty __dict__ and
    fields-set, no extras, the private attributes) with nothing to validate."""
    if not _CONTEXT_IS_PRIVATE_ONLY:
        return Context(request_context=request_context, mcp_server=server, input_params=params,
                       subscriptions=subscriptions)
    context: Context[Any, Any] = Context.__new__(Context)
    _set(context, "__dict__", {})
    _set(context, "__pydantic_fields_set__", set())
    _set(context, "__pydantic_extra__", None)
    _set(context, "__pydantic_private__", {"_request_context": request_context, "_mcp_server": server,
                                           "_input_params": params, "_subscriptions": subscriptions})
    return context


def text_result_on_wire(structured: dict[str, Any], text: str) -> dict[str, Any]:
    """`CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)
    .model_dump(by_alias=True, mode="json", exclude_none=True)` for JSON-ready `structured`: what the
    runner's serializer starts from when a handler returns that model (tests/server/test_sdk_path.py)."""
    return {"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": False,
            "resultType": "complete"}


Frame = SessionMessage | Exception


class Replayed:
    """A read stream that gives the frames a peek took (each with the context it came with) and then reads on
    from the stream they came from: serve_dual_era_loop's replay, without its relay task."""

    def __init__(self, lead: Sequence[tuple[contextvars.Context, Frame]], stream: ReadStream[Frame]) -> None:
        self._lead, self._stream = list(lead), stream
        self.last_context: contextvars.Context | None = None

    async def receive(self) -> Frame:
        if self._lead:
            self.last_context, frame = self._lead.pop(0)
            return frame
        frame = await self._stream.receive()
        self.last_context = _sender_context(self._stream)
        return frame

    def __aiter__(self) -> Replayed:
        return self

    async def __anext__(self) -> Frame:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._lead.clear()
        await self._stream.aclose()

    async def __aenter__(self) -> Replayed:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _sender_context(stream: Any) -> contextvars.Context:
    """The context a context-carrying stream gave with its last frame, else the current one (as the SDK does)."""
    context = getattr(stream, "last_context", None)
    return context if context is not None else contextvars.copy_context()


async def _opening(stream: ReadStream[Frame]) -> tuple[JSONRPCRequest | None, list[tuple[contextvars.Context, Frame]]]:
    """The client's first request and the frames read up to it (at most _PRE_REQUEST_REPLAY_LIMIT before it;
    later ones dropped, as the SDK drops them). None if the input ends first."""
    lead: list[tuple[contextvars.Context, Frame]] = []
    try:
        async for frame in stream:
            is_request = isinstance(frame, SessionMessage) and isinstance(frame.message, JSONRPCRequest)
            if not is_request and len(lead) >= _PRE_REQUEST_REPLAY_LIMIT:
                continue
            lead.append((_sender_context(stream), frame))
            if is_request:
                assert isinstance(frame, SessionMessage) and isinstance(frame.message, JSONRPCRequest)
                return frame.message, lead
    except anyio.ClosedResourceError:  # the receiving end closed under us: the end of the input
        pass
    return None, lead


async def serve_stream(server: Server[Any], read_stream: ReadStream[Frame], write_stream: WriteStream[SessionMessage]
                       ) -> None:
    """`server.run(read_stream, write_stream, server.create_initialization_options())` without the relay task."""
    async with server.lifespan(server) as lifespan_state:
        try:
            try:
                opening, lead = await _opening(read_stream)
                replayed = Replayed(lead, read_stream)
                if opening is not None and opening.method != "initialize" and _has_modern_envelope(opening.params):
                    await _serve_modern_stream(server, replayed, write_stream, lifespan_state=lifespan_state,
                                               raise_exceptions=False)
                else:
                    await _serve_legacy_stream(server, replayed, write_stream, lifespan_state=lifespan_state,
                                               session_id=None, init_options=server.create_initialization_options(),
                                               raise_exceptions=False)
            finally:
                await read_stream.aclose()
        finally:
            await write_stream.aclose()
