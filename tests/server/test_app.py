"""The MCP surface: seven tools, typed results, annotations, a small tools/list, nothing to raise limits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client

from broker.base import Broker
from server.app import create_server
from server.config import Config
from tests.conftest import call, make_config

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


# --- a stdio server answers the handshake while its runtime opens -----------------------------------------

def test_the_tool_list_loads_without_the_ledger() -> None:
    """What answers initialize and tools/list imports neither SQLAlchemy nor the gate (~0.3 s of start-up)."""
    probe = ("import sys, server.cli, server.app; "
             "print(sorted(m for m in ('sqlalchemy', 'ledger.models', 'policies.gate', 'server.runtime') "
             "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert loaded.stdout.strip() == "[]"


async def test_a_call_made_while_the_runtime_opens_waits_for_it(config: Config, market_open: object) -> None:
    async with Client(create_server(config, agent_id="agent-1", open_in_background=True)) as client:
        tools = await client.list_tools()
        status = await call(client, "get_trading_status")
    assert len(tools.tools) == 7 and status["agent_id"] == "agent-1"


async def test_a_runtime_that_cannot_open_makes_every_call_say_why(tmp_path: Path) -> None:
    broken = make_config(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'ledger.db'}")
    async with Client(create_server(broken, agent_id="agent-1", open_in_background=True)) as client:
        result = await client.call_tool("get_trading_status", {})
    assert result.is_error
    assert "could not open its ledger and broker" in result.content[0].text  # type: ignore[union-attr]


async def test_a_runtime_that_cannot_open_resumes_garbage_collection(tmp_path: Path) -> None:
    """A stdio server pauses collection until its heap freeze (server/startup.py); one whose runtime never
    opens gets no freeze, and must not run on without a collector."""
    import gc

    from server.startup import pause_collection_during_start_up

    broken = make_config(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'ledger.db'}")
    pause_collection_during_start_up()
    try:
        async with Client(create_server(broken, agent_id="agent-1", open_in_background=True)) as client:
            result = await client.call_tool("get_trading_status", {})
            assert result.is_error
            assert gc.isenabled()
    finally:
        gc.enable()


async def test_the_reason_a_runtime_could_not_open_shows_no_key(config: Config) -> None:
    def leaky_broker(*_: object) -> Broker:
        raise RuntimeError("broker refused key AKABCDEFGHIJKLMNOPQRST\ntraceback lines the agent need not see")

    async with Client(create_server(config, agent_id="agent-1", broker=leaky_broker,
                                    open_in_background=True)) as client:
        result = await client.call_tool("get_positions", {})
    text = result.content[0].text  # type: ignore[union-attr]
    assert result.is_error and "RuntimeError: broker refused key [REDACTED]" in text
    assert "AKABCDEFGHIJKLMNOPQRST" not in text and "traceback" not in text


def test_a_tools_own_result_is_sent_as_the_sdks_conversion_would_have_compacted_it(config: Config) -> None:
    """answer() dumps a result of the tool's output model once instead of the SDK's conversion then compact_result:
    the same CallToolResult (None left out, one line of JSON, non-ASCII text as it is)."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from policies.results import ExecuteResult, ProposeResult
    from policies.violations import Code, Violation
    from server.app import answer, compact_result

    server = create_server(config, agent_id="agent-1")
    denied = [Violation(code=Code.INVALID_ORDER, message="qty must be positive — é \u2028 line")]
    results = {
        "propose_trade": ProposeResult(proposal_id="p-1", status="rejected", violations=denied,
                                       estimated_notional=None, reference_price=Decimal("187.2300"),
                                       expires_at=datetime(2026, 11, 30, 15, 0, tzinfo=UTC), trading_mode="paper",
                                       message="Rejected: qty must be positive — é"),
        "execute_trade": ExecuteResult(proposal_id="p-1", status="filled", order_id="o-1", filled_qty=Decimal("1.50"),
                                       filled_avg_price=Decimal("3"), trading_mode="paper", message="Order filled."),
    }
    for name, result in results.items():
        tool = server._tool_manager.get_tool(name)
        assert tool is not None
        sent, converted = answer(tool, result), compact_result(tool.fn_metadata.convert_result(result))
        assert sent == converted
        assert sent.model_dump_json(by_alias=True) == converted.model_dump_json(by_alias=True)
        assert "estimated_notional" not in sent.structured_content or name != "propose_trade"
        assert json.loads(sent.content[0].text) == sent.structured_content


def test_a_call_reads_the_request_context_the_sdks_context_carries() -> None:
    from mcp.server.mcpserver import Context

    from server.app import _request_context

    carried = object()
    assert _request_context(Context(request_context=carried)) is carried  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside of a request"):  # as the property says it, without one
        _request_context(Context())
