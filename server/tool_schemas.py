"""The tools' JSON schemas (arguments and results), built once at build time rather than by every server start.

The SDK derives a tool's argument schema and its result schema from the function's signature when the tool is
registered (pydantic's JSON-schema generation: ~8 ms of CPU for the seven tools before a stdio server can answer
its first call). They depend only on the code, so they are generated once, by the SDK itself, into
server/tool_schemas.json, and a server registers its tools with them: the argument model, which validates
every call, is still built by the SDK from the signature at start. tests/server/test_tool_schemas.py checks that
each tool registered this way equals the SDK's own registration of it, field by field, and that tools/list is
byte-identical; after changing a tool's signature or result model, regenerate the file:

    .venv/bin/python -m server.tool_schemas

A tool the file does not cover, a file written by another pydantic version, or no file at all: the SDK builds the
schemas as before.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
from mcp.server import MCPServer
from mcp.server.mcpserver.resolve import build_resolver_plans, find_resolved_parameters
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.context_injection import find_context_parameter
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata, func_metadata
from mcp.types import ToolAnnotations
from pydantic import BaseModel

SCHEMAS_FILE = Path(__file__).with_name("tool_schemas.json")


def load(path: Path = SCHEMAS_FILE) -> dict[str, dict[str, Any]]:
    """{tool name: {"parameters": ..., "output_schema": ...}}; empty when the file is missing, unreadable or was
    written with another pydantic (whose schemas may differ)."""
    try:
        built = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(built, dict) or built.get("pydantic") != pydantic.VERSION:
        return {}
    tools = built.get("tools")
    return tools if isinstance(tools, dict) else {}


def add_tool(server: MCPServer[Any], fn: Callable[..., Any], *, description: str, annotations: ToolAnnotations,
             built: dict[str, dict[str, Any]]) -> None:
    """server.tool(description=..., annotations=...)(fn), with the schemas of `built` when it has this tool's and
    the tool is of the kind they are valid for (async, a pydantic model as its result). The rest is the SDK's
    Tool.from_function, step by step."""
    schemas = built.get(fn.__name__)
    result = inspect.signature(fn, eval_str=True).return_annotation if schemas is not None else None
    if (schemas is None or not inspect.iscoroutinefunction(fn) or not isinstance(result, type)
            or not issubclass(result, BaseModel) or set(schemas) != {"parameters", "output_schema"}):
        server.tool(description=description, annotations=annotations)(fn)
        return
    context_kwarg = find_context_parameter(fn)
    resolved = find_resolved_parameters(fn)  # arguments filled by resolvers (execute_trade's approval)
    skip_names = [*([context_kwarg] if context_kwarg else []), *resolved]
    # The SDK's own argument model (structured_output=False: its result schema is the one not derived here).
    arguments = func_metadata(fn, skip_names=skip_names, structured_output=False).arg_model
    names = {field.alias or name for name, field in arguments.model_fields.items()}
    server._tool_manager._tools[fn.__name__] = Tool(
        fn=fn, name=fn.__name__, title=None, description=description, parameters=schemas["parameters"],
        fn_metadata=FuncMetadata(arg_model=arguments, output_schema=schemas["output_schema"], output_model=result,
                                 wrap_output=False),
        is_async=True, context_kwarg=context_kwarg, resolved_params=dict(resolved),
        resolver_plans=build_resolver_plans(resolved, names), annotations=annotations)


def sdk_built(server: MCPServer[Any]) -> dict[str, Any]:
    """What server/tool_schemas.json holds, from a server whose tools the SDK registered itself."""
    return {"pydantic": pydantic.VERSION,
            "tools": {tool.name: {"parameters": tool.parameters, "output_schema": tool.fn_metadata.output_schema}
                      for tool in server._tool_manager.list_tools()}}


def as_file_text(built: dict[str, Any]) -> str:
    return json.dumps(built, indent=1, ensure_ascii=False) + "\n"  # key order kept: tools/list keeps it


def main() -> int:
    """Write server/tool_schemas.json from the SDK's own registration of the tools."""
    from server.app import register_tools

    server: MCPServer[Any] = MCPServer("tradewarden")
    register_tools(server, built={})
    SCHEMAS_FILE.write_text(as_file_text(sdk_built(server)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
