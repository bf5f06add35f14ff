"""`tradewarden demo`: a scripted agent session through the real MCP client, against a fresh embedded
server (simulated broker, SQLite in a temporary directory), printed so a newcomer sees the product."""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from server.config import load_config


def _say(text: str = "") -> None:
    print(text, flush=True)  # stdout-ok: the demo is a terminal program, not an MCP server


def _call_line(tool: str, args: dict[str, Any]) -> None:
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
    _say(f"\n▶ agent calls {tool}({shown})")


async def run_demo() -> int:
    from mcp import Client

    from policies import audit
    from server.app import create_server
    from server.logging import configure_logging
    from server.runtime import open_runtime

    configure_logging("warning")
    workdir = Path(tempfile.mkdtemp(prefix="tradewarden-demo-"))
    config_file = workdir / "tradewarden.toml"
    config_file.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{workdir / 'demo.db'}"
broker = "simulated"
trading_mode = "paper"
enforce_market_hours = false   # the demo trades at any hour; its last part shows a closed market

[[agents]]
id = "momentum-1"
max_trade_size = 5000
max_position_size = 20000
max_daily_trades = 20
allowed_symbols = ["AAPL", "MSFT", "SPY", "BTC/USD"]
allowed_strategies = ["momentum"]
risk_level = "moderate"
approval = "auto"
auto_approve_max_notional = 3000
""")
    config = load_config(str(config_file), env={})
    _say("tradewarden demo — an AI agent trading through the gate")
    _say(f"(fresh embedded server: simulated broker, PAPER mode, database {workdir / 'demo.db'})")

    async with Client(create_server(config, agent_id="momentum-1")) as client:
        async def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
            _call_line(tool, args)
            result = await client.call_tool(tool, args)
            if result.is_error:
                _say(f"  ✗ error: {result.content[0].text}")  # type: ignore[union-attr]
                return {}
            return result.structured_content or {}

        status = await call("get_trading_status", {})
        _say(f"  mode {status['trading_mode'].upper()}, state {status['state']}, approval {status['approval_mode']} "
             f"(auto up to ${status['auto_approve_max_notional']})")
        _say(f"  limits: ${status['limits']['max_trade_size']} per order, {status['limits']['max_daily_trades']} "
             f"trades/day, symbols {', '.join(status['limits']['allowed_symbols'])}")

        data = await call("get_market_data", {"symbols": ["AAPL", "BTC/USD"], "indicators": ["sma_20", "rsi_14"]})
        for row in data["data"]:
            ind = ", ".join(f"{k}={v}" for k, v in row["indicators"].items())
            _say(f"  {row['symbol']:8} last {row['last_price']:>10}  bid {row['bid']:>10}  ask {row['ask']:>10}  {ind}")

        proposal = await call("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 10, "strategy": "momentum",
                                                "reasoning": "20-day SMA rising; RSI not overbought",
                                                "confidence": 0.7})
        _say(f"  → proposal {proposal['proposal_id'][:8]}… {proposal['status'].upper()}, "
             f"est ${proposal['estimated_notional']} at ${proposal['reference_price']}")
        executed = await call("execute_trade", {"proposal_id": proposal["proposal_id"]})
        _say(f"  → {executed['status'].upper()}: {executed['filled_qty']} @ ${executed['filled_avg_price']}")
        again = await call("execute_trade", {"proposal_id": proposal["proposal_id"]})
        _say(f"  → same order again (at most once): order {again['order_id'][:8]}…, {again['status']}")

        denied = await call("propose_trade", {"symbol": "TSLA", "side": "buy", "qty": 100, "strategy": "yolo",
                                              "reasoning": "a post on social media says so"})
        _say(f"  → {denied['status'].upper()}")
        for violation in denied["violations"]:
            _say(f"     {violation['code']}: {violation['message']}")

        big = await call("propose_trade", {"symbol": "MSFT", "side": "buy", "notional": 4000,
                                           "strategy": "momentum", "reasoning": "breakout above resistance"})
        _say(f"  → {big['status'].upper()}: {big['message']}")
        waiting = await call("execute_trade", {"proposal_id": big["proposal_id"]})
        _say(f"  → {waiting['status'].upper()}: {waiting['message']}")

        positions = await call("get_positions", {})
        for p in positions["positions"]:
            _say(f"  {p['symbol']:8} qty {p['qty']:>6}  avg {p['avg_entry_price']:>10}  value {p['market_value']:>10}"
                 f"  unrealized {p['unrealized_pl']:>8}")
        _say(f"  cash ${positions['cash']}  equity ${positions['equity']}  (capital ${positions['capital']})")

        bad = await call("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1, "notional": 100,
                                           "strategy": "momentum", "reasoning": "both amounts"})
        for violation in bad.get("violations", []):
            _say(f"     {violation['code']}: {violation['message']}")

    await _closed_market_moment(config)

    async with open_runtime(config) as runtime, runtime.sessions() as session:
        report = await audit.verify(session)
        events = await audit.tail(session, 500)
    kinds: dict[str, int] = {}
    for event in events:
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
    _say("\n▶ operator runs `tradewarden audit verify`")
    _say(f"  audit chain {'OK' if report.ok else 'BROKEN'}: {report.records} hash-chained records "
         f"({json.dumps(kinds)})")
    _say(f"\nTry it yourself: tradewarden --config {config_file} approvals list")
    return 0 if report.ok else 1


async def _closed_market_moment(config: Any) -> None:
    """The same agent on the coming Sunday, with market hours enforced: what an agent sees at a weekend."""
    from mcp import Client

    from server.app import create_server

    today = datetime.now(UTC)
    sunday = (today + timedelta(days=(6 - today.weekday()) % 7 or 7)).replace(hour=18, minute=0, second=0,
                                                                                microsecond=0)
    enforced = config.model_copy(update={"server": config.server.model_copy(update={"enforce_market_hours": True})})
    _say(f"\n▶ the same agent on Sunday {sunday:%Y-%m-%d} 13:00 New York, with exchange hours enforced")
    async with Client(create_server(enforced, agent_id="momentum-1", clock=lambda: sunday)) as client:
        status = (await client.call_tool("get_trading_status", {})).structured_content or {}
        equity = status.get("market", {}).get("us_equity", {})
        _say(f"  market clock: US equities open={equity.get('open')}, next open {equity.get('next_open')}; "
             "crypto always open")
        _call_line("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": "5", "reasoning": "..."})
        closed = (await client.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": "5",
                                                           "strategy": "momentum",
                                                           "reasoning": "Monday gap up expected"})
                  ).structured_content or {}
        for violation in closed.get("violations", []):
            _say(f"     {violation['code']}: {violation['message']}")
        _call_line("propose_trade", {"symbol": "BTC/USD", "side": "buy", "notional": "200", "reasoning": "..."})
        crypto = (await client.call_tool("propose_trade", {"symbol": "BTC/USD", "side": "buy", "notional": "200",
                                                           "strategy": "momentum",
                                                           "reasoning": "crypto trades on Sundays"})
                  ).structured_content or {}
        _say(f"  → {str(crypto.get('status', '?')).upper()} (time_in_force left out: gtc, as crypto requires)")


if __name__ == "__main__":
    import asyncio

    sys.exit(asyncio.run(run_demo()))
