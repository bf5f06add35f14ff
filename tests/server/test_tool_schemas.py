"""The tools' schemas built at build time (server/tool_schemas.py): what a server registers and lists is exactly what
the SDK builds from the tools' signatures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.server import MCPServer
from mcp.server.mcpserver.tools import Tool

from server import tool_schemas
from server.app import TradewardenServer, create_server, instructions, register_tools
from server.config import Config
from server.sdk_path import use_lean_sdk_path


def _sdks_own(config: Config) -> TradewardenServer:
    """A server whose tools the SDK registered itself, deriving every schema (nothing read from the file)."""
    server = TradewardenServer(config.server.server_name, instructions=instructions(config))
    register_tools(server, built={})
    use_lean_sdk_path(server)
    return server


def _tools(server: MCPServer[Any]) -> dict[str, Tool]:
    return {tool.name: tool for tool in server._tool_manager.list_tools()}


def _shape(value: Any) -> Any:
    """A value with every plain object replaced by its type and attributes (functions and classes kept as they are)."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_shape(item) for item in value]
    if hasattr(value, "__dict__") and not callable(value):
        return (type(value), _shape(vars(value)))
    return value


def _registration(tool: Tool) -> dict[str, Any]:
    """Everything the SDK keeps about a registered tool (the argument model compared by what it accepts and says)."""
    metadata = tool.fn_metadata
    fields = {name: getattr(tool, name) for name in type(tool).model_fields if name != "fn_metadata"}
    # Resolvers and their plans are built per registration: compared by what they hold, not by identity.
    fields["resolved_params"] = _shape(tool.resolved_params)
    fields["resolver_plans"] = _shape(tool.resolver_plans)
    return {"fields": fields,
            "arg_model_schema": metadata.arg_model.model_json_schema(by_alias=True),
            "arg_model_fields": {name: repr(field) for name, field in metadata.arg_model.model_fields.items()},
            "arg_model_base": metadata.arg_model.__bases__, "metadata_type": type(metadata),
            "output_schema": metadata.output_schema, "output_model": metadata.output_model,
            "wrap_output": metadata.wrap_output}


def test_the_shipped_schemas_are_the_ones_the_sdk_builds_from_the_tools_today(config: Config) -> None:
    # Fails after a change to a tool's signature or result model: run `python -m server.tool_schemas`.
    shipped = tool_schemas.SCHEMAS_FILE.read_text(encoding="utf-8")
    assert shipped == tool_schemas.as_file_text(tool_schemas.sdk_built(_sdks_own(config)))


def test_every_tool_is_used_from_the_shipped_file(config: Config) -> None:
    assert set(tool_schemas.load()) == set(_tools(create_server(config)))


def test_each_tool_registered_with_the_shipped_schemas_is_the_sdks_own_registration(config: Config) -> None:
    ours, sdks = _tools(create_server(config)), _tools(_sdks_own(config))
    assert list(ours) == list(sdks)  # same tools, same order
    for name in sdks:
        assert _registration(ours[name]) == _registration(sdks[name]), name


async def test_tools_list_is_byte_identical_to_the_sdks_own(config: Config) -> None:
    async with Client(create_server(config)) as ours, Client(_sdks_own(config)) as sdks:
        listed = [json.dumps([tool.model_dump(by_alias=True, exclude_none=True, mode="json")
                              for tool in (await client.list_tools()).tools]) for client in (ours, sdks)]
    assert listed[0] == listed[1]


def test_a_tool_the_file_does_not_cover_is_built_by_the_sdk(config: Config) -> None:
    some = dict(list(tool_schemas.load().items())[:2])
    server = TradewardenServer(config.server.server_name, instructions=instructions(config))
    register_tools(server, built=some)
    use_lean_sdk_path(server)
    ours, sdks = _tools(server), _tools(_sdks_own(config))
    assert {name: _registration(tool) for name, tool in ours.items()} == \
        {name: _registration(tool) for name, tool in sdks.items()}


def test_a_file_written_by_another_pydantic_is_not_used(tmp_path: Path) -> None:
    written = json.loads(tool_schemas.SCHEMAS_FILE.read_text(encoding="utf-8"))
    assert tool_schemas.load(tool_schemas.SCHEMAS_FILE) == written["tools"]
    other = tmp_path / "tool_schemas.json"
    other.write_text(json.dumps({**written, "pydantic": "2.0.0"}), encoding="utf-8")
    assert tool_schemas.load(other) == {}


def test_a_missing_or_broken_file_leaves_every_schema_to_the_sdk(tmp_path: Path) -> None:
    assert tool_schemas.load(tmp_path / "absent.json") == {}
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    assert tool_schemas.load(broken) == {}
