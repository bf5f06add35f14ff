"""`tradewarden halt --cancel-open` with brackets, in its own process: entries are cancelled, the exits that
protect positions keep working, and the command says so."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from pathlib import Path

from mcp import Client

from server.config import load_config
from tests.cli_probe import run_cli
from tests.conftest import call, connect

CENT = Decimal("0.01")


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{tmp_path / 'tradewarden.db'}"
enforce_market_hours = false

[[agents]]
id = "agent-1"
allowed_symbols = ["*"]
approval = "auto"
auto_approve_max_notional = 5000
""")
    return path


async def bracket(client: Client, **order: object) -> dict[str, object]:
    proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=5, time_in_force="gtc",
                          reasoning="protected entry", **order)
    assert proposal["status"] == "approved", proposal["message"]
    return await call(client, "execute_trade", proposal_id=proposal["proposal_id"])


def price(value: Decimal) -> str:
    return str(value.quantize(CENT, ROUND_DOWN))


async def test_halt_cancel_open_cancels_entries_and_leaves_the_exits_working(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    async with connect(load_config(str(config_path), env={})) as client:
        bid = Decimal((await call(client, "get_market_data", symbols=["AAPL"]))["data"][0]["bid"])
        filled = await bracket(client, stop_loss=price(bid * Decimal("0.8")), take_profit=price(bid * Decimal("1.2")))
        assert filled["status"] == "filled"
        resting = await bracket(client, order_type="limit", limit_price=price(bid * Decimal("0.9")),
                                stop_loss=price(bid * Decimal("0.85")), take_profit=price(bid))
        assert resting["status"] == "submitted"

    result = run_cli(config_path, "halt", "--cancel-open", "--reason", "end of day", check=True)
    assert "canceled 1 open orders" in result.stdout
    assert "kept 2 protective exits working" in result.stdout
    assert "stop_loss sell 5 AAPL stop" in result.stdout and "take_profit sell 5 AAPL limit" in result.stdout

    async with connect(load_config(str(config_path), env={})) as client:
        orders = {o["order_id"]: o for o in (await call(client, "get_orders", status="all"))["orders"]}
        positions = (await call(client, "get_positions"))["positions"]
    protected, cancelled = orders[str(filled["order_id"])], orders[str(resting["order_id"])]
    assert {leg["role"]: leg["status"] for leg in protected["legs"]} == {"stop_loss": "new", "take_profit": "new"}
    assert cancelled["status"] == "canceled"
    assert {leg["status"] for leg in cancelled["legs"]} == {"canceled"}
    assert [(p["symbol"], p["qty"]) for p in positions] == [("AAPL", "5")]
