"""get_orders and cancel_order, and what a halt does to them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from mcp import Client

from policies.operator import Operator
from policies.operators import OperatorIdentity, Role
from server.config import Config
from server.runtime import open_runtime
from tests.conftest import call, call_error
from tests.ledger_probe import broker_orders

ALICE = OperatorIdentity("alice", Role.ADMIN)


async def _resting_proposal(client: Client, qty: int = 2) -> dict[str, Any]:
    """A proposed limit buy far enough below the market to rest (within the price collar)."""
    data = await call(client, "get_market_data", symbols=["AAPL"], data="quote")
    price = Decimal(data["data"][0]["bid"])
    limit = (price * Decimal("0.97")).quantize(Decimal("0.01"))
    return await call(client, "propose_trade", symbol="AAPL", side="buy", qty=qty, order_type="limit",
                      limit_price=str(limit), time_in_force="gtc", reasoning="buy the dip")


async def _resting_buy(client: Client, qty: int = 2) -> dict[str, Any]:
    proposal = await _resting_proposal(client, qty)
    assert proposal["status"] == "approved", proposal
    return await call(client, "execute_trade", proposal_id=proposal["proposal_id"])


async def test_resting_limit_order_is_listed_as_open(client: Client) -> None:
    executed = await _resting_buy(client)
    assert executed["status"] == "submitted"
    orders = await call(client, "get_orders", status="open")
    assert [o["order_id"] for o in orders["orders"]] == [executed["order_id"]]
    assert orders["orders"][0]["status"] == "new"


async def test_cancel_open_order(client: Client) -> None:
    executed = await _resting_buy(client)
    result = await call(client, "cancel_order", order_id=executed["order_id"])
    assert result["status"] == "canceled"
    assert (await call(client, "get_orders", status="open"))["orders"] == []
    closed = await call(client, "get_orders", status="closed")
    assert closed["orders"][0]["status"] == "canceled"


async def test_cancel_unknown_order_is_not_found(client: Client) -> None:
    text = await call_error(client, "cancel_order", order_id="nope")
    assert text.startswith("ORDER_NOT_FOUND")


async def test_halt_blocks_new_trades_but_not_cancels(client: Client, config: Config) -> None:
    executed = await _resting_buy(client)
    async with open_runtime(config) as runtime:
        await Operator(runtime.gate, ALICE).halt(None, "market turmoil")
    denied = await call(client, "propose_trade", symbol="MSFT", side="buy", qty=1, reasoning="r")
    assert "TRADING_HALTED" in [v["code"] for v in denied["violations"]]
    assert "market turmoil" in denied["violations"][0]["message"]
    canceled = await call(client, "cancel_order", order_id=executed["order_id"])
    assert canceled["status"] == "canceled"
    assert await broker_orders(config.server.database_url) == 1


async def test_halt_after_approval_stops_execution(client: Client, config: Config) -> None:
    proposal = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="r")
    async with open_runtime(config) as runtime:
        await Operator(runtime.gate, ALICE).halt("agent-1", "too many losses")
    executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
    assert executed["status"] == "rejected"
    assert "AGENT_HALTED" in [v["code"] for v in executed["violations"]]
    assert await broker_orders(config.server.database_url) == 0


async def test_resume_lifts_the_halt(client: Client, config: Config) -> None:
    async with open_runtime(config) as runtime:
        await Operator(runtime.gate, ALICE).halt(None, "pause")
        await Operator(runtime.gate, ALICE).resume(None)
    result = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, reasoning="r")
    assert result["status"] == "approved"


async def test_kill_switch_cancels_every_open_order(client: Client, config: Config) -> None:
    await _resting_buy(client, qty=2)
    await _resting_buy(client, qty=3)  # the same order twice would be refused as a duplicate
    async with open_runtime(config) as runtime:
        report = await Operator(runtime.gate, ALICE).halt(None, "kill", cancel_open=True)
    assert len(report.canceled) == 2 and not report.failed
    assert (await call(client, "get_orders", status="open"))["orders"] == []


# --- limits count what was sent -------------------------------------------------------------------------

async def _limited_client(db_url: str) -> Any:
    from tests.conftest import agent, connect, make_config

    return connect(make_config(db_url, agent(max_orders_per_window=5, allowed_symbols=["*"])))


async def test_a_place_and_cancel_flood_stops_at_the_order_rate_limit(db_url: str, market_open: object) -> None:
    sent: list[str] = []
    async with await _limited_client(db_url) as client:
        for qty in range(1, 10):
            proposal = await _resting_proposal(client, qty=qty)
            if proposal["status"] == "rejected":
                assert [v["code"] for v in proposal["violations"]] == ["ORDER_RATE_EXCEEDED"], proposal
                break
            executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
            sent.append(executed["order_id"])
            assert (await call(client, "cancel_order", order_id=executed["order_id"]))["status"] == "canceled"
    assert len(sent) == 5


async def test_an_ioc_flood_far_from_the_market_stops_at_the_order_rate_limit(db_url: str,
                                                                               market_open: object) -> None:
    statuses: list[str] = []
    async with await _limited_client(db_url) as client:
        quote = (await call(client, "get_market_data", symbols=["BTC/USD"], data="quote"))["data"][0]
        limit = (Decimal(quote["bid"]) * Decimal("0.95")).quantize(Decimal("0.01"))
        for n in range(1, 10):
            proposal = await call(client, "propose_trade", symbol="BTC/USD", side="buy", qty=f"0.00{n}",
                                  order_type="limit", limit_price=str(limit), time_in_force="ioc",
                                  reasoning="fishing")
            if proposal["status"] == "rejected":
                assert [v["code"] for v in proposal["violations"]] == ["ORDER_RATE_EXCEEDED"], proposal
                break
            executed = await call(client, "execute_trade", proposal_id=proposal["proposal_id"])
            statuses.append(executed["status"])
    assert len(statuses) == 5 and "filled" not in statuses


async def test_a_disabled_agent_cancels_its_own_order(client: Client, config: Config) -> None:
    from sqlalchemy import update

    from ledger.models import AgentPermissions

    executed = await _resting_buy(client)
    async with open_runtime(config) as runtime, runtime.sessions() as session, session.begin():
        await session.execute(update(AgentPermissions).where(AgentPermissions.agent_id == "agent-1")
                              .values(enabled=False))
    denied = await call_error(client, "propose_trade", symbol="MSFT", side="buy", qty=1, reasoning="r")
    assert denied.startswith("AGENT_DISABLED")
    canceled = await call(client, "cancel_order", order_id=executed["order_id"])
    assert canceled["status"] == "canceled"
