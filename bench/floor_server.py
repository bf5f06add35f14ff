#!/usr/bin/env python3
"""The servers bench/stdio_floor.py talks to over stdio, built from the code of TREE (a checkout):

    python bench/floor_server.py TREE sdk                  # a bare one-tool MCPServer on the SDK's stdio
    python bench/floor_server.py TREE transport            # the same bare server on TREE's stdio transport
    python bench/floor_server.py TREE ours CONFIG AGENT    # `tradewarden serve` as TREE runs it, plus a no-op tool

`ours` is what `serve` builds (create_server, runtime opened in the background) with one more tool, `noop`,
so a call that does nothing in the gate measures the server layer around it (our call_tool wrapper, result
handling) and the transport; the bare server measures the SDK's own.
"""

from __future__ import annotations

import sys


def noop_tool(server: object) -> None:
    @server.tool(description="no-op (benchmark floor)")  # type: ignore[attr-defined,untyped-decorator]
    async def noop() -> dict[str, bool]:
        return {"ok": True}


def main() -> None:
    tree, mode = sys.argv[1], sys.argv[2]
    sys.path.insert(0, tree)
    from mcp.server import MCPServer

    if mode == "sdk":
        bare: MCPServer = MCPServer("bare")
        noop_tool(bare)
        bare.run("stdio")
        return
    if mode == "transport":
        import anyio

        from server.app import TradewardenServer

        # The bare server on TradewardenServer's run_stdio_async: TREE's transport, the SDK's call path.
        bare = MCPServer("bare")
        noop_tool(bare)
        anyio.run(TradewardenServer.run_stdio_async, bare)  # type: ignore[arg-type]
        return
    config_path, agent = sys.argv[3], sys.argv[4]
    from server.app import create_server
    from server.config import load_config
    from server.logging import configure_logging
    from server.startup import pause_collection_during_start_up

    config = load_config(config_path)
    pause_collection_during_start_up()
    configure_logging(config.server.log_level, config.server.log_json)
    server = create_server(config, agent_id=agent, open_in_background=True)
    noop_tool(server)
    server.run("stdio")


if __name__ == "__main__":
    main()
