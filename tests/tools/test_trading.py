"""propose_trade and execute_trade through the real MCP client (in memory)."""

from __future__ import annotations

import asyncio

from mcp import Client

from server.config import Config
from tests.conftest import agent, call, call_error, connect, make_config
from tests.ledger_probe import audit_kinds, broker_orders, ledger_rows

BUY_AAPL = {"symbol": "AAPL", "side": "buy", "qty": 5, "reasoning": "test buy"}


async def test_propose_within_limits_is_approved(client: Client) -> None:
    result = await call(client, "propose_trade", **BUY_AAPL)
    assert result["status"] == "approved"
    assert result["violations"] == []
    assert result["trading_mode"] == "paper"
    assert float(result["estimated_notional"]) > 0


async def test_execute_approved_market_order_fills(client: Client) -> None:
    proposal = await call(client, "propose_trade", **BUY_AAPL)
    executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert executed["status"] == "filled"
    assert executed["filled_qty"] == "5"
    assert executed["order_id"] == proposal["proposal_id"]
    assert executed["trading_mode"] == "paper"


async def test_executing_twice_gives_one_order(client: Client, config: Config) -> None:
    proposal = await call(client, "propose_trade", **BUY_AAPL)
    first = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    second = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert first["order_id"] == second["order_id"]
    assert await broker_orders(config.server.database_url) == 1


async def test_concurrent_executions_of_one_proposal_give_one_order(client: Client, config: Config) -> None:
    proposal = await call(client, "propose_trade", **BUY_AAPL)
    results = await asyncio.gather(*(client.call_tool("execute_trade", {"proposal_id": proposal["proposal_id"]})
                                     for _ in range(10)))
    assert all(not r.is_error for r in results)
    assert await broker_orders(config.server.database_url) == 1


async def test_twenty_concurrent_executions_against_five_daily_trades_give_five_orders(
        db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent(max_daily_trades=5, max_orders_per_window=100, duplicate_window_seconds=0))
    async with connect(config) as client:
        proposals = [await call(client, "propose_trade", **{**BUY_AAPL, "qty": 1, "reasoning": f"split {i}"})
                     for i in range(20)]
        assert all(p["status"] == "approved" for p in proposals)
        results = await asyncio.gather(*(client.call_tool("execute_trade", {"proposal_id": p["proposal_id"]})
                                         for p in proposals))
    statuses = [r.structured_content["status"] for r in results if r.structured_content]
    assert statuses.count("filled") == 5
    assert await broker_orders(db_url) == 5


async def test_denied_proposal_is_rejected_with_code_and_never_reaches_broker(client: Client,
                                                                              config: Config) -> None:
    result = await call(client, "propose_trade", symbol="TSLA", side="buy", qty=1, reasoning="not allowed")
    assert result["status"] == "rejected"
    assert "SYMBOL_NOT_ALLOWED" in [v["code"] for v in result["violations"]]
    executed = await call(client, "execute_trade", proposal_id=result["proposal_id"])
    assert executed["status"] == "rejected"
    assert await broker_orders(config.server.database_url) == 0


async def test_order_over_max_trade_size_is_denied(client: Client, config: Config) -> None:
    result = await call(client, "propose_trade", symbol="SPY", side="buy", notional=5000.01, reasoning="too big")
    assert [v["code"] for v in result["violations"]] == ["ORDER_NOTIONAL_EXCEEDS_MAX"]
    assert await broker_orders(config.server.database_url) == 0


async def test_strategy_not_allowed_is_denied(db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent(allowed_strategies=["momentum"]))
    async with connect(config) as client:
        result = await call(client, "propose_trade", **BUY_AAPL, strategy="yolo")
    assert "STRATEGY_NOT_ALLOWED" in [v["code"] for v in result["violations"]]
    assert await broker_orders(db_url) == 0


async def test_position_limit_is_denied(db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent(max_position_size=1000, max_trade_size=5000))
    async with connect(config) as client:
        result = await call(client, "propose_trade", symbol="AAPL", side="buy", notional=1500, reasoning="big")
    assert "POSITION_EXCEEDS_MAX" in [v["code"] for v in result["violations"]]
    assert await broker_orders(db_url) == 0


async def test_daily_trade_limit_is_denied_after_the_last_allowed_trade(db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent(max_daily_trades=1))
    async with connect(config) as client:
        first = await call(client, "propose_trade", **BUY_AAPL)
        await call(client, "execute_trade", proposal_id=first["proposal_id"])
        second = await call(client, "propose_trade", **{**BUY_AAPL, "qty": 2})
    assert "DAILY_TRADES_EXCEEDED" in [v["code"] for v in second["violations"]]
    assert await broker_orders(db_url) == 1


async def test_disabled_trading_is_denied(db_url: str, market_open: object) -> None:
    config = make_config(db_url, enable_agent_trading=False)
    async with connect(config) as client:
        result = await call(client, "propose_trade", **BUY_AAPL)
    assert "TRADING_DISABLED" in [v["code"] for v in result["violations"]]


async def test_risk_multiplier_scales_max_trade_size(db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent(max_trade_size=1000), agent_risk_multiplier=0.5)
    async with connect(config) as client:
        result = await call(client, "propose_trade", symbol="SPY", side="buy", notional=600, reasoning="r")
    assert "ORDER_NOTIONAL_EXCEEDS_MAX" in [v["code"] for v in result["violations"]]


async def test_unknown_agent_is_refused_and_audited(config: Config, market_open: object) -> None:
    async with connect(config, agent_id="nobody") as client:
        text = await call_error(client, "propose_trade", **BUY_AAPL)
    assert text.startswith("AGENT_UNKNOWN")
    assert "tool.denied" in await audit_kinds(config.server.database_url)


async def test_operator_approval_mode_waits_for_a_person(db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent(approval="operator"))
    async with connect(config) as client:
        proposal = await call(client, "propose_trade", **BUY_AAPL)
        assert proposal["status"] == "pending_approval"
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert executed["status"] == "awaiting_approval"
    assert [v["code"] for v in executed["violations"]] == ["APPROVAL_REQUIRED"]
    assert proposal["proposal_id"] in executed["violations"][0]["message"]
    assert await broker_orders(db_url) == 0


# --- bad input: a clear error, nothing in the ledger but the audit record -------------------------

async def _assert_nothing_written_but_audit(config: Config) -> None:
    rows = await ledger_rows(config.server.database_url)
    assert rows == {"proposals": 0, "trades": 0, "broker_orders": 0}
    assert await audit_kinds(config.server.database_url)


async def test_missing_reasoning_is_a_clear_error(client: Client, config: Config) -> None:
    text = await call_error(client, "propose_trade", symbol="AAPL", side="buy", qty=1)
    assert text.startswith("INVALID_ORDER") and "reasoning" in text
    await _assert_nothing_written_but_audit(config)
    assert "tool.rejected_input" in await audit_kinds(config.server.database_url)


async def test_qty_and_notional_both_is_invalid(client: Client, config: Config) -> None:
    result = await call(client, "propose_trade", **BUY_AAPL, notional=100)
    assert result["status"] == "rejected"
    assert "INVALID_ORDER" in [v["code"] for v in result["violations"]]
    assert await broker_orders(config.server.database_url) == 0


async def test_negative_qty_is_invalid(client: Client, config: Config) -> None:
    result = await call(client, "propose_trade", **{**BUY_AAPL, "qty": -5})
    assert "INVALID_ORDER" in [v["code"] for v in result["violations"]]
    assert await broker_orders(config.server.database_url) == 0


async def test_unknown_symbol_is_not_tradable(db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent(allowed_symbols=["*"]))
    async with connect(config) as client:
        result = await call(client, "propose_trade", symbol="ZZZZQ", side="buy", qty=1, reasoning="r")
    codes = [v["code"] for v in result["violations"]]
    assert "ASSET_NOT_TRADABLE" in codes or "NO_MARKET_DATA" in codes
    assert await broker_orders(db_url) == 0


async def test_bad_side_is_a_clear_error(client: Client, config: Config) -> None:
    text = await call_error(client, "propose_trade", symbol="AAPL", side="hold", qty=1, reasoning="r")
    assert text.startswith("INVALID_ORDER") and "side" in text
    await _assert_nothing_written_but_audit(config)


async def test_unknown_proposal_id_is_not_found(client: Client, config: Config) -> None:
    text = await call_error(client, "execute_trade", proposal_id="00000000-0000-0000-0000-000000000000")
    assert text.startswith("PROPOSAL_NOT_FOUND")
    malformed = await call_error(client, "execute_trade", proposal_id="not-a-uuid")
    assert malformed.startswith("PROPOSAL_NOT_FOUND")
    await _assert_nothing_written_but_audit(config)


async def test_another_agents_proposal_is_not_found(db_url: str, market_open: object) -> None:
    config = make_config(db_url, agent("a"), agent("b"))
    async with connect(config, "a") as client_a, connect(config, "b") as client_b:
        proposal = await call(client_a, "propose_trade", **BUY_AAPL)
        text = await call_error(client_b, "execute_trade", proposal_id=proposal["proposal_id"])
    assert text.startswith("PROPOSAL_NOT_FOUND")
    assert await broker_orders(db_url) == 0


async def test_absurd_amounts_and_over_long_text_are_clear_errors(client: Client, config: Config) -> None:
    for args in ({"qty": "1e60"}, {"symbol": "A" * 40}, {"strategy": "s" * 65}):
        text = await call_error(client, "propose_trade", **{**BUY_AAPL, **args})
        assert text.startswith("INVALID_ORDER"), text
    await _assert_nothing_written_but_audit(config)
