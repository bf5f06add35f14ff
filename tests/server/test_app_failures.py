"""Every failure answers with a stable code, in bounded time, through the real MCP client: unknown tools,
booleans for numbers, NUL characters, a locked database, an unreachable broker, oversized arguments."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from sqlalchemy import select

from ledger import db
from ledger.models import AuditEvent
from server.config import Config
from tests.conftest import agent, call, call_error, connect, make_config

pytest_plugins = ["tests.alpaca_fixtures"]


async def audit_rows(db_url: str) -> list[AuditEvent]:
    engine = db.create_engine(db_url)
    try:
        async with db.session_factory(engine)() as session:
            return list((await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars())
    finally:
        await engine.dispose()


def payload_bytes(rows: list[AuditEvent]) -> int:
    return sum(len(json.dumps(r.payload) if not isinstance(r.payload, str) else r.payload) for r in rows)


async def test_an_unknown_tool_is_answered_with_a_code_and_audited(client: Client, db_url: str) -> None:
    text = await call_error(client, "transfer_funds", amount=100)
    assert text.startswith("INVALID_ARGUMENT: unknown tool 'transfer_funds'") and "propose_trade" in text
    records = [r for r in await audit_rows(db_url) if r.kind == "tool.unknown"]
    assert len(records) == 1 and records[0].tool == "transfer_funds"


async def test_a_boolean_is_not_a_confidence(client: Client) -> None:
    text = await call_error(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="r",
                            confidence=True)
    assert text.startswith("INVALID_ORDER: invalid arguments: confidence: a number is required, not a boolean")


async def test_a_boolean_is_not_a_limit_of_orders(client: Client) -> None:
    text = await call_error(client, "get_orders", limit=True)
    assert text.startswith("INVALID_ARGUMENT: invalid arguments: limit")


async def test_market_data_argument_errors_are_invalid_argument(client: Client) -> None:
    assert (await call_error(client, "get_market_data", symbols=[])).startswith("INVALID_ARGUMENT")
    assert (await call_error(client, "get_market_data", symbols=["AAPL"], indicators=["bollinger"])
            ).startswith("INVALID_ARGUMENT")
    assert (await call_error(client, "get_market_data", symbols=["AAPL"], limit=5000)).startswith("INVALID_ARGUMENT")


async def test_cancel_order_argument_errors_are_invalid_argument(client: Client) -> None:
    assert (await call_error(client, "cancel_order", order_id="x" * 500)).startswith("INVALID_ARGUMENT")


@pytest.mark.parametrize("tool, args, code", [
    ("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1, "reasoning": "buy\x00more"}, "INVALID_ORDER"),
    ("propose_trade", {"symbol": "AA\x00PL", "side": "buy", "qty": 1, "reasoning": "r"}, "INVALID_ORDER"),
    ("cancel_order", {"order_id": "abc\x00"}, "INVALID_ARGUMENT"),
    ("get_market_data", {"symbols": ["AAPL\x00"]}, "INVALID_ARGUMENT"),
])
async def test_nul_characters_are_refused_as_input_errors_on_every_database(
        database_url: str, market_open: object, tool: str, args: dict[str, Any], code: str) -> None:
    async with connect(make_config(database_url)) as client:
        text = await call_error(client, tool, **args)
        assert text.startswith(f"{code}: invalid arguments: text must not contain NUL characters"), text
        # The refusal is audited, and the ledger still works afterwards.
        await call(client, "get_trading_status")
    refused = [r for r in await audit_rows(database_url) if r.kind == "tool.rejected_input"]
    assert len(refused) == 1 and "\x00" not in json.dumps(refused[0].payload)


async def test_a_lone_surrogate_is_refused_as_an_input_error(client: Client) -> None:
    text = await call_error(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="r\ud800")
    assert text.startswith("INVALID_ORDER: invalid arguments:") and "surrogate" in text


async def test_a_two_megabyte_argument_is_refused_at_once_and_audited_in_under_a_kilobyte(
        client: Client, db_url: str) -> None:
    before = await audit_rows(db_url)
    started = time.monotonic()
    text = await call_error(client, "cancel_order", order_id="7" * 2_000_000)
    assert time.monotonic() - started < 2.0
    assert text.startswith("INVALID_ARGUMENT: invalid arguments: order_id")
    text = await call_error(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="why " * 500_000)
    assert text.startswith("INVALID_ORDER: invalid arguments: reasoning")
    new = (await audit_rows(db_url))[len(before):]
    assert len(new) == 2
    for record in new:
        assert payload_bytes([record]) < 1024, record.payload
        assert "sha256" in json.dumps(record.payload)


async def test_five_hundred_indicators_are_refused_at_once_in_under_a_kilobyte(client: Client, db_url: str) -> None:
    before = await audit_rows(db_url)
    started = time.monotonic()
    text = await call_error(client, "get_market_data", symbols=["AAPL", "MSFT"], limit=1000,
                            indicators=[f"sma_{n}" for n in range(1, 501)])
    assert time.monotonic() - started < 1.0
    assert text.startswith("INVALID_ARGUMENT")
    new = (await audit_rows(db_url))[len(before):]
    assert new and payload_bytes(new) < 1024


async def test_a_database_locked_by_another_writer_answers_ledger_unavailable_within_its_bound(
        client: Client, db_url: str) -> None:
    await call(client, "get_trading_status")  # the runtime is open
    holder = sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock and does not let go
        started = time.monotonic()
        text = await call_error(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="locked")
        elapsed = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert text.startswith("LEDGER_UNAVAILABLE: the database stayed locked"), text
    assert 4.0 < elapsed < 8.0, elapsed
    proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="unlocked")
    assert proposal["status"] == "approved"


async def test_a_buy_stop_below_the_market_is_refused_with_the_price(client: Client) -> None:
    result = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, order_type="stop",
                        stop_price="1.00", reasoning="wrong side")
    assert result["status"] == "rejected"
    messages = [v["message"] for v in result["violations"] if v["code"] == "INVALID_ORDER"]
    assert messages and "a buy stop must be above the last price" in messages[0]


async def test_a_sell_stop_above_the_market_is_refused(client: Client) -> None:
    result = await call(client, "propose_trade", symbol="AAPL", side="sell", qty=1, order_type="stop",
                        stop_price="100000", reasoning="wrong side")
    assert any("a sell stop must be below the last price" in v["message"] for v in result["violations"])


async def test_an_unreachable_broker_is_one_broker_unavailable_within_the_bound(
        tmp_path: Path, market_open: object, alpaca_keys: None) -> None:
    closed = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused
    config: Config = make_config(f"sqlite+aiosqlite:///{tmp_path / 'down.db'}", agent(allowed_symbols=["*"]),
                                 broker="alpaca", alpaca_trading_url=closed, alpaca_data_url=closed,
                                 broker_timeout_seconds=2.0)
    async with connect(config) as client:
        started = time.monotonic()
        text = await call_error(client, "propose_trade", symbol="BTC/USD", side="buy", notional=100,
                                time_in_force="gtc", reasoning="broker down")
        elapsed = time.monotonic() - started
        assert text.startswith("BROKER_UNAVAILABLE: the broker cannot be reached"), text
        assert "ASSET_NOT_TRADABLE" not in text and "NO_MARKET_DATA" not in text
        assert "INSUFFICIENT_BUYING_POWER" not in text
        assert elapsed < 4.0, elapsed
        text = await call_error(client, "get_market_data", symbols=["AAPL"])
        assert text.startswith("BROKER_UNAVAILABLE"), text


async def test_cancel_order_while_the_broker_is_down_is_broker_unavailable(
        db_url: str, alpaca_server: Any) -> None:
    from tests.alpaca_env import alpaca_config, trader

    config = alpaca_config(db_url, alpaca_server, trader(), broker_timeout_seconds=1.0)
    async with connect(config) as client:
        quote = (await call(client, "get_market_data", symbols=["AAPL"]))["data"][0]
        limit = f"{float(quote['bid']) * 0.97:.2f}"
        proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty="1", order_type="limit",
                              limit_price=limit, time_in_force="gtc", reasoning="resting")
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
        alpaca_server.stop()  # Alpaca goes away: connections are refused
        started = time.monotonic()
        text = await call_error(client, "cancel_order", order_id=executed["order_id"])
        assert time.monotonic() - started < 5.0
    assert text.startswith("BROKER_UNAVAILABLE: the broker cannot be reached"), text
