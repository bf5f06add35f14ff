#!/usr/bin/env python3
"""A bare MCP server with one no-op tool (same SDK, same transport): the floor bench/issue12.py compares to."""

from __future__ import annotations

from mcp.server import MCPServer

server: MCPServer = MCPServer("bare")


@server.tool(description="no-op (benchmark floor)")
async def noop() -> dict[str, bool]:
    return {"ok": True}


if __name__ == "__main__":
    server.run("stdio")
