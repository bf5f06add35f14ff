"""The MCP surface: seven tools, typed results, annotations, a small tools/list, nothing to raise limits."""

from __future__ import annotations

import json

from mcp import Client

from tests.conftest import call

TOOLS = {"get_market_data", "propose_trade", "execute_trade", "get_positions", "get_orders", "cancel_order",
         "get_trading_status"}
READ_ONLY = {"get_market_data", "get_positions", "get_orders", "get_trading_status"}


async def test_exactly_the_seven_spec_tools(client: Client) -> None:
    tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == TOOLS


async def test_every_tool_has_an_output_schema_and_annotations(client: Client) -> None:
    for tool in (await client.list_tools()).tools:
        assert tool.output_schema, tool.name
        assert tool.annotations is not None, tool.name
        assert tool.annotations.read_only_hint is (tool.name in READ_ONLY), tool.name
    destructive = {t.name for t in (await client.list_tools()).tools if t.annotations.destructive_hint}
    assert destructive == {"execute_trade", "cancel_order"}


async def test_tools_list_stays_small(client: Client) -> None:
    tools = (await client.list_tools()).tools
    size = len(json.dumps([t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools]))
    assert size < 12000, size


async def test_no_tool_argument_can_name_the_agent_or_change_limits(client: Client) -> None:
    for tool in (await client.list_tools()).tools:
        properties = set(tool.input_schema.get("properties", {}))
        assert not properties & {"agent_id", "agent", "approval", "approved", "limits", "max_trade_size"}, tool.name


async def test_an_extra_agent_id_argument_does_not_change_who_trades(client: Client) -> None:
    result = await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1,
                                                      "reasoning": "r", "agent_id": "someone-else"})
    status = await call(client, "get_trading_status")
    assert status["agent_id"] == "agent-1"
    assert result.is_error or result.structured_content["status"] in {"approved", "rejected"}


async def test_instructions_state_the_trading_mode(client: Client) -> None:
    assert "PAPER" in (client.instructions or "")
