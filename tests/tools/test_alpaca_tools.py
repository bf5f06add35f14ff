"""All seven tools on Alpaca, through the gate and the real MCP client.

The server is configured with broker = "alpaca" and base-URL overrides pointing at the Alpaca contract
server (tests/broker/alpaca_contract_server.py): the real alpaca-py client sends real HTTP, and every request
and response is held to Alpaca's OpenAPI descriptions (a violation fails the test)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
import time_machine
from mcp import Client, StdioServerParameters, stdio_client

from broker.alpaca import QUOTE_REUSE_SECONDS
from server.config import load_config
from server.runtime import build_broker, open_runtime
from tests.alpaca_env import (
    KEYS,
    alpaca_config,
    audit_records,
    eventually,
    positions,
    reconciliation,
    trade,
    trader,
)
from tests.broker.alpaca_contract_server import (
    FAKE_API_KEY,
    FAKE_SECRET_KEY,
    AlpacaContractServer,
    RecordedRequest,
    sequential_steps,
)
from tests.conftest import call, call_error, connect

pytest_plugins = ["tests.alpaca_fixtures"]  # the alpaca_server and alpaca_keys fixtures
ROOT = Path(__file__).resolve().parents[2]


def posts(server: AlpacaContractServer) -> list[Any]:
    return server.requests_to("POST", "/v2/orders", api="trading")


async def propose_and_execute(client: Client, **order: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    order.setdefault("reasoning", "alpaca test")
    proposal = await call(client, "propose_trade", **order)
    assert proposal["status"] == "approved", proposal
    executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    return proposal, executed


async def filled(client: Client, **order: Any) -> dict[str, Any]:
    """Execute a marketable order and wait for its fill (Alpaca accepts first; the fill follows)."""
    _, executed = await propose_and_execute(client, **order)
    return await eventually(lambda: order_of(client, executed["order_id"]), lambda o: o["status"] == "filled")


async def order_of(client: Client, order_id: str, status: str = "all") -> dict[str, Any]:
    orders = (await call(client, "get_orders", status=status))["orders"]
    return next(o for o in orders if o["order_id"] == order_id)


# -- market data -----------------------------------------------------------------------------------------


async def test_market_data_for_stocks_and_crypto(db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.set_quote("AAPL", bid="189.98", ask="190.02", last="190.00")
    alpaca_server.set_price("BTC/USD", "64000")
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        snapshot = await call(client, "get_market_data", symbols=["AAPL", "BTC/USD", "NOPE"])
        bars = await call(client, "get_market_data", symbols=["AAPL", "BTC/USD"], data="bars", timeframe="1Hour",
                          limit=5, indicators=["sma_3"])
    by_symbol = {d["symbol"]: d for d in snapshot["data"]}
    assert tuple(Decimal(by_symbol["AAPL"][k]) for k in ("bid", "ask", "last_price")) == \
        (Decimal("189.98"), Decimal("190.02"), Decimal(190))
    assert Decimal(by_symbol["BTC/USD"]["last_price"]) == Decimal(64000)
    assert by_symbol["NOPE"]["error"].startswith("NO_MARKET_DATA")
    for data in bars["data"]:
        assert 1 <= len(data["bars"]) <= 5, data
        assert data["indicators"]["sma_3"] is not None
    assert alpaca_server.requests_to("GET", "/v2/stocks/snapshots", api="data")
    assert alpaca_server.requests_to("GET", "/v1beta3/crypto/us/snapshots", api="data")


# -- every order type, end to end ------------------------------------------------------------------------

ORDER_CASES: dict[str, tuple[dict[str, Any], str | None, dict[str, str]]] = {
    "market_qty": ({"symbol": "AAPL", "side": "buy", "qty": 5}, None,
                   {"type": "market", "qty": "5", "time_in_force": "day"}),
    "market_notional": ({"symbol": "AAPL", "side": "buy", "notional": "500"}, None,
                        {"type": "market", "notional": "500"}),
    "limit": ({"symbol": "AAPL", "side": "buy", "qty": 2, "order_type": "limit", "limit_price": "189.50",
               "time_in_force": "gtc"}, "189.00", {"type": "limit", "limit_price": "189.5", "time_in_force": "gtc"}),
    "stop": ({"symbol": "AAPL", "side": "buy", "qty": 2, "order_type": "stop", "stop_price": "191"}, "191.50",
             {"type": "stop", "stop_price": "191"}),
    "stop_limit": ({"symbol": "AAPL", "side": "buy", "qty": 2, "order_type": "stop_limit", "stop_price": "191",
                    "limit_price": "192"}, "191.50", {"type": "stop_limit", "stop_price": "191", "limit_price": "192"}),
    "crypto": ({"symbol": "BTC/USD", "side": "buy", "notional": "250", "time_in_force": "gtc"}, None,
               {"type": "market", "notional": "250", "symbol": "BTC/USD", "time_in_force": "gtc"}),
}


@pytest.mark.parametrize("case", list(ORDER_CASES))
async def test_each_order_type_end_to_end(db_url: str, alpaca_server: AlpacaContractServer, case: str) -> None:
    order, trigger_price, sent = ORDER_CASES[case]
    alpaca_server.set_price("AAPL", "190.00")
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        proposal, executed = await propose_and_execute(client, **order)
        proposal_id = proposal["proposal_id"]
        assert executed["order_id"] == proposal_id and executed["trading_mode"] == "paper"
        at_alpaca = alpaca_server.order(proposal_id)  # the proposal id is Alpaca's client_order_id
        assert at_alpaca["client_order_id"] == proposal_id
        body = posts(alpaca_server)[0].body
        assert {k: body.get(k) for k in sent} == sent
        if trigger_price is not None:
            resting = await order_of(client, proposal_id, "open")
            assert resting["status"] == "new" and resting["broker_order_id"] == at_alpaca["id"]
            alpaca_server.set_price(order["symbol"], trigger_price)
        filled = await order_of(client, proposal_id)
        assert filled["status"] == "filled", filled
        assert Decimal(filled["filled_qty"]) == Decimal(alpaca_server.order(proposal_id)["filled_qty"])
        held = (await call(client, "get_positions"))["positions"]
    assert [(p["symbol"], Decimal(p["qty"])) for p in held] == [(order["symbol"], Decimal(filled["filled_qty"]))]
    assert alpaca_server.positions == {order["symbol"]: Decimal(filled["filled_qty"])}
    assert len(posts(alpaca_server)) == 1


async def test_sell_closes_the_position_and_realises_pnl(db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.set_price("MSFT", "400.00")
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        await filled(client, symbol="MSFT", side="buy", qty=3)
        alpaca_server.set_price("MSFT", "410.00")
        await filled(client, symbol="MSFT", side="sell", qty=3)
        held = (await call(client, "get_positions"))["positions"]
    assert len(held) == 1 and Decimal(held[0]["qty"]) == 0
    assert Decimal(held[0]["realized_pl"]) == Decimal("29.94")  # bought at the ask 400.01, sold at the bid 409.99
    assert alpaca_server.positions == {}


async def test_cancel_a_resting_order(db_url: str, alpaca_server: AlpacaContractServer) -> None:
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        proposal, executed = await propose_and_execute(client, symbol="SPY", side="buy", qty=1, order_type="limit",
                                                       limit_price="515", time_in_force="gtc")
        assert executed["status"] == "submitted"
        canceled = await call(client, "cancel_order", order_id=proposal["proposal_id"])
        assert canceled["status"] == "canceled"
        assert (await call(client, "get_orders", status="open"))["orders"] == []
        closed = await order_of(client, proposal["proposal_id"], "closed")
    assert closed["status"] == "canceled"
    assert alpaca_server.order(proposal["proposal_id"])["status"] == "canceled"
    assert len(alpaca_server.requests_to("DELETE", "/v2/orders/*", api="trading")) == 1


async def test_trading_status_names_alpaca_and_paper(db_url: str, alpaca_server: AlpacaContractServer) -> None:
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        status = await call(client, "get_trading_status")
        tools = await client.list_tools()
    assert (status["broker"], status["trading_mode"], status["halted"]) == ("alpaca", "paper", False)
    assert len(tools.tools) == 7


# -- round trips: what a proposal learned serves its execution -------------------------------------------


def broker_requests(server: AlpacaContractServer, since: int) -> list[RecordedRequest]:
    return list(server.requests[since:])


def named(requests: list[RecordedRequest]) -> list[str]:
    return sorted(f"{r.method} {r.path}" for r in requests)


async def test_an_order_right_after_its_proposal_is_one_request_to_alpaca(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.latency = 0.02  # like a network: requests sent together overlap at the server
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        before = len(alpaca_server.requests)
        started = time.monotonic()
        proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="round trips")
        proposed = len(alpaca_server.requests)
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
        elapsed = time.monotonic() - started
    assert executed["status"] in ("submitted", "filled"), executed
    proposing, executing = broker_requests(alpaca_server, before)[:proposed - before], \
        broker_requests(alpaca_server, proposed)
    # The proposal asks for the asset, the quote and the account together: one round trip.
    assert named(proposing) == ["GET /v2/account", "GET /v2/assets/AAPL", "GET /v2/stocks/snapshots"]
    assert sequential_steps(proposing) == 1
    # The execution reuses them (the account within the gate's 1 s, the quote within its window) and
    # sends the order: at most two round trips one after the other, one POST, never the asset again.
    assert sequential_steps(executing) <= 2
    assert [r.path for r in executing if r.method == "POST"] == ["/v2/orders"]
    assert "GET /v2/assets/AAPL" not in named(executing)
    if elapsed <= QUOTE_REUSE_SECONDS:  # as on any machine not stalled for half a second
        assert named(executing) == ["POST /v2/orders"]


async def test_an_execution_after_the_quote_window_fetches_the_quote_again(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.latency = 0.02
    alpaca_server.set_price("AAPL", "190")
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="round trips")
        alpaca_server.set_price("AAPL", "195")
        await asyncio.sleep(QUOTE_REUSE_SECONDS + 0.1)
        proposed = len(alpaca_server.requests)
        executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    executing = broker_requests(alpaca_server, proposed)
    assert executed["status"] in ("submitted", "filled"), executed
    assert "GET /v2/stocks/snapshots" in named(executing)
    assert "GET /v2/assets/AAPL" not in named(executing)  # an asset is kept for a minute
    assert sequential_steps(executing) == 2  # the snapshot (with the account, if due), then the order
    assert (await trade(db_url, proposal["proposal_id"])).reserved_notional == Decimal("195.01")



async def test_positions_ask_alpaca_for_quotes_and_account_in_one_round_trip(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.latency = 0.02
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        await filled(client, symbol="AAPL", side="buy", qty=2)
        await asyncio.sleep(max(QUOTE_REUSE_SECONDS, 1.0) + 0.1)  # nothing reused: quote and account both due
        before = len(alpaca_server.requests)
        held = (await call(client, "get_positions"))["positions"]
    asked = broker_requests(alpaca_server, before)
    assert [line["symbol"] for line in held] == ["AAPL"]
    assert {"GET /v2/stocks/snapshots", "GET /v2/account"} <= set(named(asked))
    assert sequential_steps(asked) == 1

# -- two agents, one Alpaca account ----------------------------------------------------------------------


async def test_two_agents_sharing_one_account_each_see_their_own_book(db_url: str,
                                                                      alpaca_server: AlpacaContractServer) -> None:
    config = alpaca_config(db_url, alpaca_server, trader("alpha"), trader("beta"))
    alpaca_server.set_price("AAPL", "190.00")
    alpaca_server.set_price("MSFT", "400.00")
    async with connect(config, "alpha") as alpha, connect(config, "beta") as beta:
        await filled(alpha, symbol="AAPL", side="buy", qty=3)
        await filled(beta, symbol="AAPL", side="buy", qty=2)
        await filled(beta, symbol="MSFT", side="buy", qty=1)
        alpaca_server.set_price("AAPL", "200.00")
        await filled(alpha, symbol="AAPL", side="sell", qty=1)
        alpha_book = await call(alpha, "get_positions")
        beta_book = await call(beta, "get_positions")
        beta_orders = (await call(beta, "get_orders", status="all"))["orders"]
    held = {name: {p["symbol"]: p for p in book["positions"]} for name, book in (("alpha", alpha_book),
                                                                                  ("beta", beta_book))}
    assert {s: Decimal(p["qty"]) for s, p in held["alpha"].items()} == {"AAPL": 2}
    assert {s: Decimal(p["qty"]) for s, p in held["beta"].items()} == {"AAPL": 2, "MSFT": 1}
    assert Decimal(held["alpha"]["AAPL"]["realized_pl"]) == Decimal("9.98")  # 199.99 - 190.01
    assert Decimal(held["beta"]["AAPL"]["realized_pl"]) == 0
    assert len(beta_orders) == 2  # never alpha's
    # Each agent's cash is its own capital minus its own fills; the account figures are Alpaca's.
    assert Decimal(alpha_book["cash"]) == Decimal(100000) - 3 * Decimal("190.01") + Decimal("199.99")
    for book in (alpha_book, beta_book):
        assert book["account_cash"] is not None and book["account_buying_power"] is not None
    # The agents' books add up to the account's positions: reconciliation finds no drift.
    assert alpaca_server.positions == {"AAPL": Decimal(4), "MSFT": Decimal(1)}
    async with open_runtime(config) as runtime:
        assert runtime.reconciler is not None and runtime.reconciler.last_report is not None
    report = await reconciliation(db_url)
    assert report is not None and report["drift"] == {} and report["errors"] == []


async def test_account_that_cannot_pay_is_insufficient_buying_power(db_url: str,
                                                                    alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.set_cash(500)
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        result = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=5, reasoning="too dear")
    assert result["status"] == "rejected"
    assert "INSUFFICIENT_BUYING_POWER" in [v["code"] for v in result["violations"]]
    assert posts(alpaca_server) == []


# -- Alpaca's errors, through the tools ------------------------------------------------------------------


@pytest.mark.parametrize(("status", "message", "code"), [
    (403, "insufficient buying power", "INSUFFICIENT_BUYING_POWER"),
    (422, "qty must be a multiple of the lot size", "INVALID_ORDER"),
])
async def test_submission_refused_by_alpaca(db_url: str, alpaca_server: AlpacaContractServer, status: int,
                                            message: str, code: str) -> None:
    alpaca_server.fail_next("/v2/orders", method="POST", status=status, message=message)
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        proposal, executed = await propose_and_execute(client, symbol="AAPL", side="buy", qty=1)
        order = await order_of(client, proposal["proposal_id"])
        usage = (await call(client, "get_trading_status"))["used_today"]
    assert executed["status"] == "rejected"
    assert [(v["code"], v["message"]) for v in executed["violations"]] == \
        [(code, f"broker: Alpaca {status}: {message}")]
    assert order["status"] == "rejected" and message in order["reject_reason"]
    assert usage["open_buy_notional"] == "0"  # the reservation is released
    assert alpaca_server.orders == [] and len(posts(alpaca_server)) == 1  # refused: never retried


async def test_cancel_of_an_order_alpaca_does_not_know_is_order_not_found(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        proposal, _ = await propose_and_execute(client, symbol="SPY", side="buy", qty=1, order_type="limit",
                                                limit_price="515", time_in_force="gtc")
        alpaca_server.fail_next("/v2/orders/*", method="DELETE", status=404, message="order not found")
        error = await call_error(client, "cancel_order", order_id=proposal["proposal_id"])
    assert error.startswith("ORDER_NOT_FOUND") and "Alpaca 404: order not found" in error


@pytest.mark.parametrize(("status", "message"), [(429, "rate limit exceeded"), (500, "internal server error"),
                                                  (503, "service unavailable")])
async def test_market_data_errors_are_broker_errors_with_alpacas_message(
        db_url: str, alpaca_server: AlpacaContractServer, status: int, message: str) -> None:
    alpaca_server.fail_next("/v2/stocks/snapshots", status=status, times=4, message=message)  # beyond 3 retries
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        error = await call_error(client, "get_market_data", symbols=["AAPL"])
    assert error.startswith("BROKER_ERROR") and f"Alpaca {status}: {message}" in error


async def test_a_429_on_a_read_is_retried_then_succeeds(db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.fail_next("/v2/stocks/snapshots", status=429)
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        result = await call(client, "get_market_data", symbols=["AAPL"])
    assert result["data"][0]["last_price"] is not None
    assert [r.status for r in alpaca_server.requests_to("GET", "/v2/stocks/snapshots", api="data")] == [429, 200]


async def test_a_5xx_on_submission_is_looked_up_not_retried(db_url: str, alpaca_server: AlpacaContractServer,
                                                            market_open: time_machine.Traveller) -> None:
    """Alpaca answered 500: it may or may not have made the order, so the outcome is unknown until
    reconciliation settles it (here: no such order, so once its doubt window - a minute here, a day by
    default - has passed, it never reached the broker)."""
    alpaca_server.fail_next("/v2/orders", method="POST", status=500, message="internal server error")
    async with connect(alpaca_config(db_url, alpaca_server, order_in_doubt_seconds=60)) as client:
        proposal, executed = await propose_and_execute(client, symbol="AAPL", side="buy", qty=1)
        assert executed["status"] == "submitted"
        assert [v["code"] for v in executed["violations"]] == ["BROKER_ERROR"]
        assert "Alpaca 500: internal server error" in executed["violations"][0]["message"]
        assert (await order_of(client, proposal["proposal_id"]))["status"] == "unknown"
        market_open.shift(timedelta(minutes=2))
        settled = await eventually(lambda: order_of(client, proposal["proposal_id"]),
                                   lambda o: o["status"] != "unknown")
    assert settled["status"] == "rejected" and settled["reject_reason"] == "never reached the broker"
    assert len(posts(alpaca_server)) == 1 and alpaca_server.orders == []


# -- submission timeouts: looked up, never sent twice -----------------------------------------------------


async def test_submission_timeout_is_resolved_by_lookup(db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.hang_next_submit(2.5, create_order="before")  # the order is made; the answer is lost
    async with connect(alpaca_config(db_url, alpaca_server, broker_timeout_seconds=1.0)) as client:
        proposal, executed = await propose_and_execute(client, symbol="AAPL", side="buy", qty=2)
        assert executed["status"] in ("submitted", "filled") and executed["violations"] == []
        order = await order_of(client, proposal["proposal_id"])
    assert order["status"] == "filled"
    assert len(alpaca_server.orders) == 1 and len(posts(alpaca_server)) == 1
    assert alpaca_server.requests_to("GET", "/v2/orders:by_client_order_id", api="trading")


async def test_order_that_appears_after_the_timeout_is_picked_up_by_the_poller(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.hang_next_submit(4.0, create_order="after")  # Alpaca makes the order only after we gave up
    async with connect(alpaca_config(db_url, alpaca_server, broker_timeout_seconds=1.0)) as client:
        proposal, executed = await propose_and_execute(client, symbol="AAPL", side="buy", qty=2)
        assert executed["status"] == "submitted" and "reconciled" in executed["message"]
        # No tool call: the background poller finds the order by its client_order_id and books the fill.
        settled = await eventually(lambda: trade(db_url, proposal["proposal_id"]), lambda t: t.status == "filled")
        assert (await positions(db_url)) == {("agent-1", "AAPL"): Decimal(2)}
    assert settled.order_id == alpaca_server.order(proposal["proposal_id"])["id"]
    assert len(alpaca_server.orders) == 1 and len(posts(alpaca_server)) == 1
    assert "order.updated" in [r.kind for r in await audit_records(db_url, "system:reconcile")]


async def test_fills_reach_the_ledger_without_the_agent_asking(db_url: str,
                                                               alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.set_price("AAPL", "190.00")
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        proposal, _ = await propose_and_execute(client, symbol="AAPL", side="buy", qty=4, order_type="limit",
                                                limit_price="189.50", time_in_force="gtc")
        alpaca_server.fill_order(proposal["proposal_id"], qty="1", price="189.40")
        partial = await eventually(lambda: trade(db_url, proposal["proposal_id"]),
                                   lambda t: t.status == "partially_filled")
        assert partial.filled_qty == 1 and (await positions(db_url)) == {("agent-1", "AAPL"): Decimal(1)}
        alpaca_server.set_price("AAPL", "189.00")  # the rest fills at the ask 189.01
        done = await eventually(lambda: trade(db_url, proposal["proposal_id"]), lambda t: t.status == "filled")
    assert done.filled_qty == 4 and (await positions(db_url)) == {("agent-1", "AAPL"): Decimal(4)}


# -- live never by accident; keys never shown -------------------------------------------------------------


def _serve_config(tmp_path: Path, server: AlpacaContractServer | None, extra: str = "") -> Path:
    urls = (f'alpaca_trading_url = "{server.trading_url}"\nalpaca_data_url = "{server.data_url}"\n'
            if server is not None else "")
    path = tmp_path / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{tmp_path / 'serve.db'}"
broker = "alpaca"
{urls}{extra}
[[agents]]
id = "agent-1"
allowed_symbols = ["*"]
approval = "auto"
auto_approve_max_notional = 5000
""")
    return path


def _serve(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("ALPACA_API_KEY", "ALPACA_SECRET_KEY", "TRADEWARDEN_ALLOW_LIVE")}
    return subprocess.run([sys.executable, "-m", "server.cli", "serve", "--agent", "agent-1", "--config",
                           str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60, input="",
                          env={**clean, **env})


@pytest.mark.parametrize("switch", [None, "0", "yes"])
def test_live_alpaca_without_the_second_switch_refuses_to_start(tmp_path: Path, switch: str | None) -> None:
    env = {"ALPACA_API_KEY": FAKE_API_KEY, "ALPACA_SECRET_KEY": FAKE_SECRET_KEY}
    if switch is not None:
        env["TRADEWARDEN_ALLOW_LIVE"] = switch
    result = _serve(_serve_config(tmp_path, None, 'trading_mode = "live"'), env)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "TRADEWARDEN_ALLOW_LIVE=1" in result.stderr
    assert FAKE_API_KEY not in result.stderr and FAKE_SECRET_KEY not in result.stderr


def test_live_alpaca_with_both_switches_uses_the_live_endpoint(tmp_path: Path, alpaca_keys: None) -> None:
    config = load_config(str(_serve_config(tmp_path, None, 'trading_mode = "live"')),
                         env={"TRADEWARDEN_ALLOW_LIVE": "1"})
    broker = build_broker(config, None, None)  # type: ignore[arg-type]
    assert broker.paper is False  # type: ignore[attr-defined]
    paper = build_broker(load_config(str(_serve_config(tmp_path, None)), env={}), None, None)  # type: ignore[arg-type]
    assert paper.paper is True  # type: ignore[attr-defined]


@pytest.mark.parametrize("missing", [("ALPACA_API_KEY",), ("ALPACA_SECRET_KEY",),
                                     ("ALPACA_API_KEY", "ALPACA_SECRET_KEY")])
def test_missing_keys_refuse_to_start_with_one_line(tmp_path: Path, missing: tuple[str, ...]) -> None:
    env = {k: v for k, v in (("ALPACA_API_KEY", FAKE_API_KEY), ("ALPACA_SECRET_KEY", FAKE_SECRET_KEY))
           if k not in missing}
    result = _serve(_serve_config(tmp_path, None), env)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(name in lines[0] for name in missing), result.stderr
    assert FAKE_API_KEY not in result.stderr and FAKE_SECRET_KEY not in result.stderr


async def test_keys_never_appear_in_logs_audit_or_results(tmp_path: Path, alpaca_keys: None) -> None:
    """A real `tradewarden serve` over stdio, debug logs on: errors, retries, a lost submission. The keys reach
    Alpaca (the contract server checks them) and nowhere else."""
    with AlpacaContractServer() as server:
        server.set_price("BTC/USD", "65000")
        config = _serve_config(tmp_path, server, 'log_level = "debug"\nlog_json = true\n'
                                                 "broker_timeout_seconds = 1.0\nenforce_market_hours = false\n")
        stderr_copy = tmp_path / "stderr.log"
        serve = shlex.join([sys.executable, "-m", "server.cli", "serve", "--agent", "agent-1", "--config",
                            str(config)])
        params = StdioServerParameters(command="bash", args=["-c", f"{serve} 2>{shlex.quote(str(stderr_copy))}"],
                                       cwd=str(ROOT), env={**os.environ})
        texts: list[str] = []
        async with Client(stdio_client(params)) as client:
            async def tool(name: str, **args: Any) -> None:
                result = await client.call_tool(name, args)
                texts.append(json.dumps([c.model_dump(mode="json") for c in result.content]))
                texts.append(json.dumps(result.structured_content))

            server.fail_next("/v1beta3/crypto/us/snapshots", status=429, times=1)
            await tool("get_market_data", symbols=["BTC/USD"])
            server.fail_next("/v2/stocks/snapshots", status=401, times=4,
                             message=f"bad key {FAKE_API_KEY}")  # Alpaca echoing a key back
            await tool("get_market_data", symbols=["AAPL"])
            order = {"symbol": "BTC/USD", "side": "buy", "notional": 100, "time_in_force": "gtc", "reasoning": "k"}
            proposal = await client.call_tool("propose_trade", order)
            server.hang_next_submit(1.5, create_order="before")
            await tool("execute_trade", proposal_id=proposal.structured_content["proposal_id"])  # type: ignore[index]
            server.fail_next("/v2/orders", method="POST", status=403, message="insufficient buying power")
            second = await client.call_tool("propose_trade", {**order, "notional": 101})
            await tool("execute_trade", proposal_id=second.structured_content["proposal_id"])  # type: ignore[index]
            await tool("get_positions")
            await tool("get_orders", status="all")
            await tool("get_trading_status")
        assert len(server.requests_to("POST", "/v2/orders")) == 2  # the keys did reach "Alpaca"
    logs = stderr_copy.read_text()
    assert "alpaca" in logs.lower()  # debug logs were written
    with sqlite3.connect(tmp_path / "serve.db") as database:
        audit = json.dumps(database.execute("SELECT actor, kind, payload FROM audit_events").fetchall())
        state = json.dumps(database.execute("SELECT value FROM server_state").fetchall())
    for secret in KEYS:
        for where, text in (("logs", logs), ("audit", audit), ("server_state", state),
                            ("results", "\n".join(texts))):
            assert secret not in text, f"a key appears in the {where}"


async def test_keys_never_appear_in_structlog_output_in_process(db_url: str, alpaca_server: AlpacaContractServer
                                                                 ) -> None:
    alpaca_server.hang_next_submit(1.5, create_order="never")
    alpaca_server.fail_next("/v2/account", status=500, times=10)
    with structlog.testing.capture_logs() as events:
        async with connect(alpaca_config(db_url, alpaca_server, broker_timeout_seconds=1.0)) as client:
            await call(client, "get_market_data", symbols=["AAPL"])
            await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1, "reasoning": "r"})
            await call(client, "get_positions")
    shown = repr(events)
    assert events and all(secret not in shown for secret in KEYS)
