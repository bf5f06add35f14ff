"""broker/alpaca.py with exits, straight against the contract server (no gate in front): the bracket and OTO
requests Alpaca's description allows, the ones Alpaca refuses, and the legs read back with their entry."""

from __future__ import annotations

from decimal import Decimal

import pytest

from broker.alpaca import AlpacaBroker
from broker.base import BrokerError
from policies.orders import StopLoss, TakeProfit
from tests.broker.alpaca_contract_server import AlpacaContractServer
from tests.broker.test_alpaca import alpaca, alpaca_server, posted_orders, submit  # noqa: F401 - fixtures

D = Decimal


async def test_a_bracket_is_sent_as_one_request_and_comes_back_with_its_legs(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    alpaca_server.set_price("AAPL", "190")
    order = await alpaca.submit_order(submit(qty=D(3), stop_loss=StopLoss(stop_price=D(180), limit_price=D(179)),
                                             take_profit=TakeProfit(limit_price=D(200))))
    [request] = posted_orders(alpaca_server)
    assert request.body["order_class"] == "bracket"
    assert request.body["stop_loss"] == {"stop_price": "180", "limit_price": "179"}
    assert order.order_class == "bracket"
    assert {leg.leg_role: (leg.side, leg.order_type) for leg in order.legs} == {
        "take_profit": ("sell", "limit"), "stop_loss": ("sell", "stop_limit")}
    looked_up = await alpaca.get_order_by_client_id(order.client_order_id)
    assert looked_up is not None and len(looked_up.legs) == 2


async def test_one_exit_is_an_oto_order(alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer) -> None:  # noqa: F811
    alpaca_server.set_price("AAPL", "190")
    order = await alpaca.submit_order(submit(qty=D(3), stop_loss=StopLoss(stop_price=D(180))))
    assert posted_orders(alpaca_server)[0].body["order_class"] == "oto"
    assert [leg.leg_role for leg in order.legs] == ["stop_loss"]


@pytest.mark.parametrize(("symbol", "fields", "reason"), [
    ("BTC/USD", {"qty": D(1), "stop_loss": StopLoss(stop_price=D(50000))}, "crypto orders not allowed"),
    ("AAPL", {"qty": D(3), "stop_loss": StopLoss(stop_price=D(191))}, "stop_loss.stop_price must be <="),
    ("AAPL", {"qty": D("1.5"), "stop_loss": StopLoss(stop_price=D(180))}, "fractional orders"),
])
async def test_the_contract_server_refuses_what_alpaca_refuses(
        alpaca: AlpacaBroker, alpaca_server: AlpacaContractServer, symbol: str,  # noqa: F811
        fields: dict[str, object], reason: str) -> None:
    alpaca_server.set_price("AAPL", "190")
    alpaca_server.set_price("BTC/USD", "64000")
    with pytest.raises(BrokerError) as refused:
        await alpaca.submit_order(submit(symbol, **fields))  # type: ignore[arg-type]
    assert reason in refused.value.message
