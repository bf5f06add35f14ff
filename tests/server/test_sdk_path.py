"""The SDK steps server/sdk_path.py does more cheaply: what a client sees stays what the SDK's own steps give."""

from __future__ import annotations

import json
from typing import Any

import pytest
import time_machine
from mcp import Client
from mcp.server import MCPServer
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from mcp.server.runner import ServerRunner
from mcp.types import CallToolRequestParams, CallToolResult, TextContent
from opentelemetry.trace import NoOpTracerProvider
from pydantic import ValidationError

import server.sdk_path
import server.sdk_path as server_module
from server.app import TradewardenServer, create_server, instructions, register_tools
from server.config import Config
from server.sdk_path import LeanArgumentParsing, TracingWhenConfigured, text_result_on_wire, tool_context
from tests.conftest import call

# Strings an agent (or a confused client) may send for any argument: plain words, numbers, JSON text of every
# kind with and without leading blanks, broken JSON, a BOM, oversize text.
AWKWARD_STRINGS = ["buy", "AAPL", "10", "0.5", "-1", "1e400", "NaN", "Infinity", "true", "false", "null", " null",
                   "\tnull", "nul", "none", "[1, 2]", " [1]", "\n{\"a\": 1}", "{}", "[", "{", "\"quoted\"", "",
                   " ", "\ufeff[1]", "[" * 5000, "x" * 10_000, "1" * 5000, "[\"buy\"]", "{\"qty\": \"1\"}"]


def tools_of(config: Config) -> list[Tool]:
    return create_server(config)._tool_manager.list_tools()


def the_sdks(metadata: FuncMetadata) -> FuncMetadata:
    return FuncMetadata(arg_model=metadata.arg_model, output_schema=metadata.output_schema,
                        output_model=metadata.output_model, wrap_output=metadata.wrap_output)


def outcome(metadata: FuncMetadata, arguments: dict[str, Any]) -> Any:
    try:
        return metadata.validate_arguments(arguments)
    except ValidationError as error:
        return error.errors(include_url=False)


def test_every_tool_parses_its_arguments_the_lean_way(config: Config) -> None:
    assert all(type(tool.fn_metadata) is LeanArgumentParsing for tool in tools_of(config))


def test_every_argument_pre_parses_as_the_sdk_would(config: Config) -> None:
    for tool in tools_of(config):
        sdk = the_sdks(tool.fn_metadata)
        for name in tool.parameters.get("properties", {}):
            for text in AWKWARD_STRINGS:
                assert tool.fn_metadata.pre_parse_json({name: text}) == sdk.pre_parse_json({name: text}), \
                    (tool.name, name, text[:20])


def test_bad_arguments_fail_validation_as_on_the_sdks_path(config: Config) -> None:
    good = {"symbol": "AAPL", "side": "buy", "qty": "1", "reasoning": "r"}
    cases: list[dict[str, Any]] = [
        {}, {"side": "buy"}, {**good, "side": "hold"}, {**good, "side": ["buy"]}, {**good, "qty": "[1]"},
        {**good, "qty": "null"}, {**good, "qty": "{\"a\": 1}"}, {**good, "qty": "ten"}, {**good, "qty": True},
        {**good, "confidence": "2"}, {**good, "confidence": "[0.5]"}, {**good, "symbol": "A" * 100},
        {**good, "reasoning": "r" * 5000}, {**good, "extra": "[1]"}, {**good, "stop_loss": "null"},
        {**good, "time_in_force": "[\"day\"]"}, {**good, "notional": " null"}, good,
    ]
    for tool in tools_of(config):
        sdk = the_sdks(tool.fn_metadata)
        for arguments in cases:
            assert outcome(tool.fn_metadata, arguments) == outcome(sdk, arguments), (tool.name, arguments)


async def test_the_tool_list_is_the_one_the_sdks_own_steps_give(config: Config) -> None:
    plain = TradewardenServer(config.server.server_name, instructions=instructions(config))
    register_tools(plain, built={})  # every schema derived by the SDK (server/tool_schemas.py)

    def listed(tools: list[Any]) -> str:
        return json.dumps([t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools])

    assert listed(await create_server(config).list_tools()) == listed(await plain.list_tools())


def test_the_sdk_still_traces_through_the_middleware_this_server_wraps() -> None:
    assert any(type(m) is OpenTelemetryMiddleware for m in MCPServer("plain").middleware)


def test_the_sdks_tracing_middleware_is_wrapped_not_dropped(config: Config) -> None:
    chain = create_server(config).middleware
    wrapped = [m for m in chain if isinstance(m, TracingWhenConfigured)]
    assert len(wrapped) == 1 and type(wrapped[0].traced) is OpenTelemetryMiddleware
    assert not any(type(m) is OpenTelemetryMiddleware for m in chain)


class Recorded:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        self.calls += 1
        return await call_next(ctx)


async def test_a_message_is_traced_once_a_tracer_provider_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    traced = Recorded()
    middleware = TracingWhenConfigured(traced)  # type: ignore[arg-type]

    async def handler(ctx: Any) -> str:
        return "answered"

    assert await middleware(None, handler) == "answered"  # type: ignore[arg-type]
    assert traced.calls == 0
    monkeypatch.setattr(server.sdk_path, "get_tracer_provider", NoOpTracerProvider)
    assert await middleware(None, handler) == "answered"  # type: ignore[arg-type]
    assert traced.calls == 1


async def test_an_argument_sent_as_json_text_still_reaches_the_tool_parsed(client: Client) -> None:
    result = await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": "1",
                                                      "notional": "null", "reasoning": "r"})
    assert not result.is_error, result.content
    assert result.structured_content is not None and result.structured_content["status"] == "approved"
    assert (await call(client, "get_trading_status"))["agent_id"] == "agent-1"


# serve_stream does what Server.run does through serve_dual_era_loop, without its relay task. These are the SDK
# functions it stands for, as read when it was written (mcp 2.3.0): a new SDK that changes them fails here, and
# serve_stream is then checked against the new code (the byte-for-byte tests in tests/server/test_stdio.py too).
SERVED_AS_WRITTEN = {"serve_dual_era_loop": "0d88361bcf3557f1", "_replay_from_opening_request": "17abbe1c52fb6c2b",
                     "run": "e09da3b5950ebe2d"}


def test_the_sdk_steps_serve_stream_stands_for_are_the_ones_it_was_written_against() -> None:
    import hashlib
    import inspect

    import mcp.server.runner as runner
    from mcp.server.lowlevel.server import Server

    found = {function.__name__: hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
             for function in (runner.serve_dual_era_loop, runner._replay_from_opening_request, Server.run)}
    assert found == SERVED_AS_WRITTEN


# TradewardenServer._handle_call_tool is the SDK's tools/call handler with two steps done more cheaply (the tool's
# Context, built as Context.__init__ builds it; the result's mapping). The SDK's source of both as read when they
# were written (mcp 2.3.0): a new SDK that changes them fails here, and the override is then checked again.
CALL_HANDLER_AS_WRITTEN = {"_handle_call_tool": "0c7bac402edb6448", "__init__": "107e72812b005e36"}


def test_the_sdks_tools_call_handler_is_the_one_ours_was_written_against() -> None:
    import hashlib
    import inspect

    found = {function.__name__: hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
             for function in (MCPServer._handle_call_tool, Context.__init__)}
    assert found == CALL_HANDLER_AS_WRITTEN


def test_tools_are_called_through_the_lean_handler(config: Config) -> None:
    server = create_server(config)
    handler = server._lowlevel_server.get_request_handler("tools/call")
    assert handler is not None and getattr(handler.handler, "__func__", None) is TradewardenServer._handle_call_tool


def test_a_tools_context_is_the_instance_the_sdks_handler_builds(config: Config) -> None:
    server = create_server(config)
    request_context, params, subscriptions = object(), object(), object()
    ours = tool_context(request_context, server, params, subscriptions)
    sdks = Context(request_context=request_context, mcp_server=server, input_params=params,  # type: ignore[arg-type]
                   subscriptions=subscriptions)  # type: ignore[arg-type]
    assert server_module._CONTEXT_IS_PRIVATE_ONLY  # the direct build is the one taken, not the fallback
    assert type(ours) is type(sdks)
    for attribute in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"):
        assert getattr(ours, attribute) == getattr(sdks, attribute), attribute
    assert ours.request_context is request_context and ours.mcp_server is server


STRUCTURED_RESULTS: list[dict[str, Any]] = [
    {}, {"status": "approved", "qty": "1", "checks": [{"code": "OK", "detail": "fine"}], "needs_approval": False},
    {"text": "ü\u2028 \"quoted\"", "nested": {"list": [1, 2.5, None, True], "empty": {}}, "n": -0.0},
]


def test_a_text_result_on_the_wire_is_the_dump_of_its_model() -> None:
    for structured in STRUCTURED_RESULTS:
        text = json.dumps(structured, separators=(",", ":"))
        model = CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)
        assert text_result_on_wire(structured, text) == model.model_dump(by_alias=True, mode="json", exclude_none=True)


async def test_the_runner_sends_the_mapping_as_it_sends_the_model_in_both_eras(client: Client, config: Config) -> None:
    real = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="wire")
    runner = ServerRunner(create_server(config)._lowlevel_server, None, None)  # type: ignore[arg-type]
    for structured in [*STRUCTURED_RESULTS, real]:
        text = json.dumps(structured, separators=(",", ":"))
        model = CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)
        for version in ("2025-06-18", "2025-11-25", "2026-07-28"):
            sent = runner._serialize("tools/call", version, text_result_on_wire(structured, text))
            assert json.dumps(sent) == json.dumps(runner._serialize("tools/call", version, model)), version


async def test_a_call_answers_as_through_the_sdks_own_tools_call_handler(
        config: Config, market_open: time_machine.Coordinates) -> None:
    server = create_server(config, agent_id="agent-1")
    lowlevel = server._lowlevel_server
    ours = lowlevel.get_request_handler("tools/call")
    assert ours is not None
    calls: list[tuple[str, dict[str, Any]]] = [
        ("no_such_tool", {}), ("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": "many", "reasoning": "r"}),
        ("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 10**9, "reasoning": "r"}),
        ("execute_trade", {"proposal_id": "p_missing"}), ("get_trading_status", {}), ("get_orders", {}),
    ]
    async with Client(server) as client:
        for name, arguments in calls:
            lowlevel.add_request_handler("tools/call", CallToolRequestParams,
                                         MCPServer._handle_call_tool.__get__(server))  # the SDK's own
            sdks = await client.call_tool(name, arguments)
            lowlevel.add_request_handler("tools/call", ours.params_type, ours.handler)
            answered = await client.call_tool(name, arguments)
            assert with_ids_masked(answered) == with_ids_masked(sdks), name


def with_ids_masked(result: CallToolResult) -> str:
    """The result as JSON with what differs from call to call (a proposal's id and expiry) masked."""
    dumped = json.dumps(result.model_dump())
    for key in ("proposal_id", "expires_at"):
        value = (result.structured_content or {}).get(key)
        if isinstance(value, str):
            dumped = dumped.replace(value, f"<{key}>")
    return dumped
