"""A bracket through the Alpaca adapter against the contract server, through the gate and the real MCP client:
the request is held to Alpaca's OpenAPI description (order_class and legs), the legs come back with their
entry, the stop fills and the take-profit is cancelled, and reconciliation books a leg that filled while the
server was down."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from ledger.models import AgentOrderLeg
from server.runtime import open_runtime
from tests.alpaca_env import alpaca_config, audit_records, eventually, positions, read
from tests.broker.alpaca_contract_server import AlpacaContractServer
from tests.conftest import call, connect
from tests.tools.test_alpaca_tools import order_of, posts

pytest_plugins = ["tests.alpaca_fixtures"]  # the alpaca_server and alpaca_keys fixtures
BRACKET = {"symbol": "AAPL", "side": "buy", "qty": 10, "time_in_force": "gtc", "reasoning": "bracket",
           "stop_loss": "185", "take_profit": "200"}


async def open_bracket(client: object) -> dict[str, object]:
    proposal = await call(client, "propose_trade", **BRACKET)  # type: ignore[arg-type]
    assert proposal["status"] == "approved", proposal["message"]
    executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])  # type: ignore[arg-type]
    return executed


async def test_a_bracket_is_sent_with_its_order_class_and_legs_and_the_stop_cancels_the_take_profit(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.set_price("AAPL", "190")
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        executed = await open_bracket(client)
        [request] = posts(alpaca_server)
        assert request.body["order_class"] == "bracket"
        assert request.body["take_profit"] == {"limit_price": "200"}
        assert request.body["stop_loss"] == {"stop_price": "185"}
        entry = await eventually(lambda: order_of(client, executed["order_id"]), lambda o: o["status"] == "filled")
        assert {leg["role"]: leg["status"] for leg in entry["legs"]} == {"stop_loss": "new", "take_profit": "new"}

        alpaca_server.set_price("AAPL", "184.50")  # through the stop
        entry = await eventually(lambda: order_of(client, executed["order_id"]),
                                 lambda o: {leg["status"] for leg in o["legs"]} == {"filled", "canceled"})
        assert {leg["role"]: leg["status"] for leg in entry["legs"]} == {"stop_loss": "filled",
                                                                         "take_profit": "canceled"}
        held = (await call(client, "get_positions"))["positions"]
    assert [(p["symbol"], p["qty"]) for p in held] == [("AAPL", "0")]
    assert Decimal(held[0]["realized_pl"]) == 10 * (Decimal("184.49") - Decimal("190.01"))  # sold at the bid
    alpaca_server.assert_no_violations()


async def test_the_contract_server_refuses_a_bracket_with_a_stop_above_the_market(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.set_price("AAPL", "190")
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        proposal = await call(client, "propose_trade", **{**BRACKET, "stop_loss": "191"})
    assert proposal["status"] == "rejected"  # the gate's own check, before any request
    assert "must be below the entry and the market" in proposal["message"]
    assert posts(alpaca_server) == []


async def test_a_trailing_stop_is_refused_for_alpaca_at_the_proposal(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.set_price("AAPL", "190")
    async with connect(alpaca_config(db_url, alpaca_server)) as client:
        proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=10, reasoning="trail",
                              trailing_stop="2%")
    assert [v["code"] for v in proposal["violations"]] == ["INVALID_ORDER"]
    assert "Alpaca takes no trailing stop" in proposal["message"]


async def test_reconciliation_books_a_leg_filled_while_the_server_was_down(
        db_url: str, alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.set_price("AAPL", "190")
    config = alpaca_config(db_url, alpaca_server)
    async with connect(config) as client:
        executed = await open_bracket(client)
        await eventually(lambda: order_of(client, executed["order_id"]), lambda o: o["status"] == "filled")
    alpaca_server.set_price("AAPL", "201")  # the take-profit fills while no server runs
    async with open_runtime(config):
        pass
    legs = {leg.role: leg.status for leg in await read(db_url, select(AgentOrderLeg))}
    assert legs == {"stop_loss": "canceled", "take_profit": "filled"}
    assert await positions(db_url) == {}
    records = [r for r in await audit_records(db_url, "system:reconcile") if r.kind == "order.updated"]
    assert any('"role":"take_profit"' in r.payload and '"to":"filled"' in r.payload for r in records)
    alpaca_server.assert_no_violations()
