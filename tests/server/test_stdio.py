"""A real `tradewarden serve` subprocess over stdio: it trades, and its stdout carries only protocol."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from mcp import Client, StdioServerParameters, stdio_client

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{tmp_path / 'stdio.db'}"
enforce_market_hours = false
log_level = "debug"

[[agents]]
id = "stdio-agent"
allowed_symbols = ["*"]
approval = "auto"
auto_approve_max_notional = 5000
""")
    return path


async def test_stdio_server_trades_and_keeps_stdout_for_protocol_only(tmp_path: Path) -> None:
    stdout_copy, stderr_copy = tmp_path / "stdout.log", tmp_path / "stderr.log"
    serve = shlex.join([sys.executable, "-m", "server.cli", "serve", "--agent", "stdio-agent",
                        "--config", str(_config(tmp_path))])
    # tee keeps a copy of everything the server writes to stdout, byte for byte.
    params = StdioServerParameters(command="bash",
                                   args=["-c", f"{serve} 2>{shlex.quote(str(stderr_copy))} | tee {stdout_copy}"],
                                   cwd=str(ROOT))
    async with Client(stdio_client(params)) as client:
        tools = await client.list_tools()
        assert len(tools.tools) == 7
        proposal = await client.call_tool("propose_trade", {"symbol": "BTC/USD", "side": "buy", "notional": 100,
                                                            "time_in_force": "gtc", "reasoning": "stdio test"})
        assert proposal.structured_content["status"] == "approved", proposal.structured_content
        executed = await client.call_tool("execute_trade",
                                          {"proposal_id": proposal.structured_content["proposal_id"]})
        assert executed.structured_content["status"] == "filled", executed.structured_content
        await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": -1, "reasoning": "x"})
    lines = [line for line in stdout_copy.read_text().splitlines() if line.strip()]
    assert lines, "the server wrote nothing to stdout"
    for line in lines:
        message = json.loads(line)  # anything that is not JSON-RPC breaks the client
        assert message.get("jsonrpc") == "2.0"
    assert stderr_copy.read_text().strip(), "logs are expected on stderr"
