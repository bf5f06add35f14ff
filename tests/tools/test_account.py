"""get_positions, get_trading_status and get_market_data."""

from __future__ import annotations

from decimal import Decimal

from mcp import Client

from server.config import Config
from tests.conftest import call, call_error, connect


async def _buy(client: Client, symbol: str = "AAPL", qty: int = 5) -> dict[str, object]:
    proposal = await call(client, "propose_trade", symbol=symbol, side="buy", qty=qty, reasoning="r")
    return await call(client, "execute_trade", proposal_id=proposal["proposal_id"])


async def test_positions_after_a_fill_show_qty_and_pnl(client: Client) -> None:
    filled = await _buy(client)
    result = await call(client, "get_positions")
    [position] = result["positions"]
    assert position["symbol"] == "AAPL" and position["qty"] == "5"
    assert Decimal(position["avg_entry_price"]) == Decimal(filled["filled_avg_price"]).quantize(Decimal("0.0001"))
    assert position["unrealized_pl"] is not None
    assert Decimal(result["cash"]) == Decimal(result["capital"]) - 5 * Decimal(filled["filled_avg_price"])
    assert result["trading_mode"] == "paper"


async def test_selling_realizes_pnl(client: Client) -> None:
    await _buy(client)
    proposal = await call(client, "propose_trade", symbol="AAPL", side="sell", qty=5, reasoning="take profit")
    await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    result = await call(client, "get_positions")
    [position] = result["positions"]
    assert position["qty"] == "0"
    assert position["realized_pl"] != "0"  # the spread alone makes a round trip lose a little


async def test_restart_keeps_positions_and_audit_chain(config: Config, market_open: object) -> None:
    async with connect(config) as client:
        await _buy(client)
        before = await call(client, "get_positions")
    async with connect(config) as client:
        after = await call(client, "get_positions")
    assert [p["qty"] for p in after["positions"]] == [p["qty"] for p in before["positions"]]
    from policies import audit
    from server.runtime import open_runtime

    async with open_runtime(config) as runtime, runtime.sessions() as session:
        report = await audit.verify(session)
    assert report.ok and report.records > 6


async def test_trading_status_shows_mode_limits_and_usage(client: Client) -> None:
    await _buy(client)
    status = await call(client, "get_trading_status")
    assert status["trading_mode"] == "paper"
    assert status["halted"] is False and status["state"] == "active"
    assert status["limits"]["max_daily_trades"] == 20
    assert status["used_today"]["trades"] == 1
    assert status["approval_mode"] == "auto"


async def test_market_data_snapshot_has_quote_and_indicators(client: Client) -> None:
    result = await call(client, "get_market_data", symbols=["AAPL", "BTC/USD"], indicators=["sma_20", "rsi_14"])
    rows = {r["symbol"]: r for r in result["data"]}
    assert set(rows) == {"AAPL", "BTC/USD"}
    for row in rows.values():
        assert Decimal(row["bid"]) <= Decimal(row["ask"])
        assert row["indicators"]["sma_20"] is not None
        assert row["bars"] == []


async def test_market_data_bars_for_each_timeframe(client: Client) -> None:
    for timeframe in ("1Min", "5Min", "15Min", "1Hour", "1Day"):
        result = await call(client, "get_market_data", symbols=["SPY"], data="bars", timeframe=timeframe, limit=10)
        assert len(result["data"][0]["bars"]) == 10


async def test_market_data_unknown_indicator_is_a_clear_error(client: Client) -> None:
    text = await call_error(client, "get_market_data", symbols=["SPY"], indicators=["magic_7"])
    assert text.startswith("INVALID_ARGUMENT")


async def test_market_data_unknown_symbol_says_no_data(client: Client) -> None:
    result = await call(client, "get_market_data", symbols=["ZZZZQ"])
    assert result["data"][0]["error"].startswith("NO_MARKET_DATA")
