"""broker/alpaca.py through the real alpaca-py client, against the Alpaca contract server.

Every request the adapter sends and every response it gets is checked against Alpaca's OpenAPI
descriptions by the server; the `alpaca_server` fixture fails the test on any contract violation.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import subprocess
import sys
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog

import broker.alpaca as alpaca_module
from broker.alpaca import AlpacaBroker
from broker.base import TIMEFRAMES, Broker, BrokerError, BrokerTimeout, SubmitOrder
from policies.orders import OrderRequest
from tests.broker import alpaca_contract_server as contract_module
from tests.broker.alpaca_contract_server import FAKE_API_KEY, FAKE_SECRET_KEY, AlpacaContractServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def alpaca_server() -> Iterator[AlpacaContractServer]:
    """An Alpaca-compatible server on 127.0.0.1 (ephemeral port); any contract violation fails the test."""
    with AlpacaContractServer() as server:
        yield server
        server.assert_no_violations()


@pytest.fixture
async def alpaca(alpaca_server: AlpacaContractServer) -> AsyncIterator[AlpacaBroker]:
    broker = AlpacaBroker(**alpaca_server.broker_kwargs())
    await broker.start()
    yield broker
    await broker.close()


def submit(symbol: str = "AAPL", *, client_order_id: str | None = None, **fields: Any) -> SubmitOrder:
    fields.setdefault("side", "buy")
    if "qty" not in fields and "notional" not in fields:
        fields["qty"] = Decimal(1)
    if "/" in symbol:
        fields.setdefault("time_in_force", "gtc")
    return SubmitOrder(client_order_id=client_order_id or str(uuid.uuid4()),
                       order=OrderRequest(symbol=symbol, **fields))


def posted_orders(server: AlpacaContractServer) -> list[Any]:
    return server.requests_to("POST", "/v2/orders", api="trading")


# -- the module and the secrets ------------------------------------------------------------------------


def test_importing_the_module_does_not_import_alpaca_or_pandas() -> None:
    code = ("import sys, broker.alpaca; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('alpaca', 'pandas', 'numpy')); "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"imported at module import: {result.stdout} {result.stderr}"


def test_the_adapter_satisfies_the_broker_protocol() -> None:
    broker = AlpacaBroker(api_key="k" * 20, secret_key="s" * 40, paper=True)
    assert isinstance(broker, Broker)
    assert broker.name == "alpaca"


def test_repr_does_not_show_the_keys() -> None:
    broker = AlpacaBroker(api_key=FAKE_API_KEY, secret_key=FAKE_SECRET_KEY, paper=True)
    shown = repr(broker) + str(broker) + repr(vars(broker))
    assert FAKE_API_KEY not in shown
    assert FAKE_SECRET_KEY not in shown
    assert "paper=True" in repr(broker)


async def test_keys_never_reach_logs_or_error_text(alpaca_server: AlpacaContractServer,
                                                   caplog: pytest.LogCaptureFixture,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    alpaca_server.hang_next_submit(1.5, create_order="never")
    alpaca_server.fail_next("/v2/account", status=429, times=10)
    alpaca_server.set_cash(10)
    broker = AlpacaBroker(**alpaca_server.broker_kwargs(timeout=0.5))
    wrong_keys = AlpacaBroker(**alpaca_server.broker_kwargs(api_key=FAKE_API_KEY[::-1],
                                                            secret_key=FAKE_SECRET_KEY[::-1]))
    errors: list[BaseException] = []
    with structlog.testing.capture_logs() as events:
        for call in (lambda: broker.submit_order(submit()),  # timeout, then lookup
                     lambda: broker.get_account(),  # 429 until retries run out
                     lambda: broker.submit_order(submit(qty=Decimal(1000))),  # 403
                     lambda: broker.cancel_order(str(uuid.uuid4())),  # 404
                     lambda: wrong_keys.get_clock()):  # 401
            with pytest.raises(BrokerError) as caught:
                await call()
            errors.append(caught.value)
        await broker.close()
        await wrong_keys.close()
    texts = [repr(events), caplog.text, *capsys.readouterr()]
    for error in errors:
        texts += [str(error), repr(error), repr(vars(error)), "".join(traceback.format_exception(error))]
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    everything = "\n".join(texts)
    for secret in (FAKE_API_KEY, FAKE_SECRET_KEY, FAKE_API_KEY[::-1], FAKE_SECRET_KEY[::-1]):
        assert secret not in everything
    assert alpaca_server.requests  # the calls did reach the server, keys and all


async def test_error_messages_are_scrubbed_of_the_keys_even_if_alpaca_echoes_them(
        alpaca_server: AlpacaContractServer, alpaca: AlpacaBroker) -> None:
    alpaca_server.fail_next("/v2/clock", status=400, message=f"bad header APCA-API-KEY-ID={FAKE_API_KEY}")
    with pytest.raises(BrokerError) as caught:
        await alpaca.get_clock()
    assert FAKE_API_KEY not in caught.value.message
    assert "[REDACTED]" in caught.value.message


# -- orders: each type, each time in force -------------------------------------------------------------


async def test_market_order_by_qty_fills_at_the_ask(alpaca_server: AlpacaContractServer,
                                                    alpaca: AlpacaBroker) -> None:
    alpaca_server.set_quote("AAPL", bid="189.99", ask="190.01", last="190.00")
    request = submit("AAPL", qty=Decimal(3))
    placed = await alpaca.submit_order(request)
    assert placed.client_order_id == request.client_order_id
    assert (placed.order_type, placed.qty, placed.notional, placed.side) == ("market", Decimal(3), None, "buy")
    assert placed.status == "pending_new"  # Alpaca accepts first; the fill follows
    filled = await alpaca.get_order_by_client_id(request.client_order_id)
    assert filled is not None
    assert (filled.status, filled.filled_qty, filled.filled_avg_price) == ("filled", Decimal(3), Decimal("190.01"))
    assert posted_orders(alpaca_server)[0].body == {"symbol": "AAPL", "side": "buy", "type": "market",
                                                    "time_in_force": "day", "qty": "3",
                                                    "client_order_id": request.client_order_id}


async def test_market_order_by_notional_buys_that_many_dollars(alpaca_server: AlpacaContractServer,
                                                               alpaca: AlpacaBroker) -> None:
    request = submit("AAPL", notional=Decimal("500.25"))
    placed = await alpaca.submit_order(request)
    assert (placed.qty, placed.notional) == (None, Decimal("500.25"))
    assert posted_orders(alpaca_server)[0].body["notional"] == "500.25"
    assert "qty" not in posted_orders(alpaca_server)[0].body
    filled = await alpaca.get_order_by_client_id(request.client_order_id)
    assert filled is not None and filled.status == "filled"
    assert filled.filled_qty * filled.filled_avg_price == pytest.approx(Decimal("500.25"), abs=Decimal("0.01"))


async def test_limit_order_rests_until_the_price_reaches_it(alpaca_server: AlpacaContractServer,
                                                            alpaca: AlpacaBroker) -> None:
    request = submit("MSFT", qty=Decimal(2), order_type="limit", limit_price=Decimal("400.50"),
                     time_in_force="gtc")
    placed = await alpaca.submit_order(request)
    assert (placed.order_type, placed.limit_price, placed.time_in_force) == ("limit", Decimal("400.50"), "gtc")
    resting = await alpaca.get_order_by_client_id(request.client_order_id)
    assert resting is not None and resting.status == "new" and resting.is_open
    alpaca_server.set_price("MSFT", "400.00")
    filled = await alpaca.get_order_by_client_id(request.client_order_id)
    assert filled is not None and filled.status == "filled" and filled.filled_avg_price <= Decimal("400.50")


async def test_stop_order_triggers_when_the_price_crosses_the_stop(alpaca_server: AlpacaContractServer,
                                                                   alpaca: AlpacaBroker) -> None:
    request = submit("SPY", qty=Decimal(1), order_type="stop", stop_price=Decimal("525"))
    placed = await alpaca.submit_order(request)
    assert (placed.order_type, placed.stop_price, placed.limit_price) == ("stop", Decimal(525), None)
    assert posted_orders(alpaca_server)[0].body["stop_price"] == "525"
    alpaca_server.set_price("SPY", "526")
    filled = await alpaca.get_order_by_client_id(request.client_order_id)
    assert filled is not None and filled.status == "filled"


async def test_stop_limit_order_sends_both_prices(alpaca_server: AlpacaContractServer,
                                                  alpaca: AlpacaBroker) -> None:
    request = submit("TSLA", side="buy", qty=Decimal(1), order_type="stop_limit", stop_price=Decimal("255"),
                     limit_price=Decimal("256.5"))
    placed = await alpaca.submit_order(request)
    assert (placed.order_type, placed.stop_price, placed.limit_price) == ("stop_limit", Decimal(255),
                                                                          Decimal("256.5"))
    body = posted_orders(alpaca_server)[0].body
    assert (body["type"], body["stop_price"], body["limit_price"]) == ("stop_limit", "255", "256.5")


@pytest.mark.parametrize("time_in_force", ["day", "gtc", "ioc", "fok"])
async def test_time_in_force_is_passed_through(alpaca_server: AlpacaContractServer, alpaca: AlpacaBroker,
                                               time_in_force: str) -> None:
    placed = await alpaca.submit_order(submit("AAPL", qty=Decimal(1), order_type="limit",
                                              limit_price=Decimal("150"), time_in_force=time_in_force))
    assert placed.time_in_force == time_in_force
    assert posted_orders(alpaca_server)[0].body["time_in_force"] == time_in_force


async def test_unfilled_ioc_order_is_canceled_by_alpaca(alpaca_server: AlpacaContractServer,
                                                        alpaca: AlpacaBroker) -> None:
    request = submit("AAPL", order_type="limit", limit_price=Decimal("100"), time_in_force="ioc")
    await alpaca.submit_order(request)
    after = await alpaca.get_order_by_client_id(request.client_order_id)
    assert after is not None and after.status == "canceled"


async def test_extended_hours_is_passed_through(alpaca_server: AlpacaContractServer,
                                                alpaca: AlpacaBroker) -> None:
    await alpaca.submit_order(submit("AAPL", order_type="limit", limit_price=Decimal("150"),
                                     extended_hours=True))
    assert posted_orders(alpaca_server)[0].body["extended_hours"] is True


async def test_amounts_are_sent_as_exact_decimal_strings(alpaca_server: AlpacaContractServer,
                                                         alpaca: AlpacaBroker) -> None:
    await alpaca.submit_order(submit("BTC/USD", qty=Decimal("0.123456789"), order_type="limit",
                                     limit_price=Decimal("64000.10")))
    body = posted_orders(alpaca_server)[0].body
    assert (body["qty"], body["limit_price"]) == ("0.123456789", "64000.1")


async def test_crypto_order_uses_the_slash_symbol(alpaca_server: AlpacaContractServer,
                                                  alpaca: AlpacaBroker) -> None:
    request = submit("ETH/USD", qty=Decimal("0.5"))
    placed = await alpaca.submit_order(request)
    assert placed.symbol == "ETH/USD"
    assert alpaca_server.positions == {"ETH/USD": Decimal("0.5")}


async def test_order_sent_while_the_market_is_closed_is_accepted_not_filled(
        alpaca_server: AlpacaContractServer, alpaca: AlpacaBroker) -> None:
    alpaca_server.set_market_open(False)
    request = submit("AAPL")
    await alpaca.submit_order(request)
    order = await alpaca.get_order_by_client_id(request.client_order_id)
    assert order is not None and order.status == "accepted" and order.is_open


async def test_partial_fill_is_reported(alpaca_server: AlpacaContractServer, alpaca: AlpacaBroker) -> None:
    request = submit("AAPL", qty=Decimal(10), order_type="limit", limit_price=Decimal("150"))
    await alpaca.submit_order(request)
    alpaca_server.fill_order(request.client_order_id, qty="4", price="149.50")
    order = await alpaca.get_order_by_client_id(request.client_order_id)
    assert order is not None
    assert (order.status, order.filled_qty, order.filled_avg_price) == ("partially_filled", Decimal(4),
                                                                        Decimal("149.5"))
    assert order.is_open


# -- errors: each status, Alpaca's own message ---------------------------------------------------------


async def test_insufficient_buying_power_maps_to_its_code(alpaca_server: AlpacaContractServer,
                                                          alpaca: AlpacaBroker) -> None:
    alpaca_server.set_cash(1000)
    with pytest.raises(BrokerError) as caught:
        await alpaca.submit_order(submit("MSFT", qty=Decimal(10)))
    assert (caught.value.code, caught.value.status) == ("INSUFFICIENT_BUYING_POWER", 403)
    assert "insufficient buying power" in caught.value.message
    assert not caught.value.retryable


async def test_selling_shares_not_held_maps_to_the_403_code_with_alpacas_message(
        alpaca_server: AlpacaContractServer, alpaca: AlpacaBroker) -> None:
    with pytest.raises(BrokerError) as caught:
        await alpaca.submit_order(submit("AAPL", side="sell", qty=Decimal(5)))
    assert (caught.value.code, caught.value.status) == ("INSUFFICIENT_BUYING_POWER", 403)
    assert "insufficient qty available for order (requested: 5, available: 0)" in caught.value.message


async def test_invalid_order_maps_to_INVALID_ORDER(alpaca_server: AlpacaContractServer,
                                                   alpaca: AlpacaBroker) -> None:
    with pytest.raises(BrokerError) as caught:
        await alpaca.submit_order(submit("BTC/USD", qty=Decimal("0.01"), time_in_force="day"))
    assert (caught.value.code, caught.value.status) == ("INVALID_ORDER", 422)
    assert "invalid crypto time_in_force" in caught.value.message
    assert alpaca_server.orders == []


async def test_untradable_asset_order_maps_to_INVALID_ORDER(alpaca_server: AlpacaContractServer,
                                                            alpaca: AlpacaBroker) -> None:
    with pytest.raises(BrokerError) as caught:
        await alpaca.submit_order(submit("HALTD"))
    assert caught.value.code == "INVALID_ORDER"
    assert 'asset "HALTD" cannot be traded' in caught.value.message


async def test_duplicate_client_order_id_maps_to_DUPLICATE_ORDER(alpaca_server: AlpacaContractServer,
                                                                 alpaca: AlpacaBroker) -> None:
    first = await alpaca.submit_order(submit("AAPL", client_order_id="proposal-1"))
    with pytest.raises(BrokerError) as caught:
        await alpaca.submit_order(submit("AAPL", client_order_id="proposal-1"))
    assert (caught.value.code, caught.value.status) == ("DUPLICATE_ORDER", 422)
    assert "client_order_id must be unique" in caught.value.message
    assert [o["id"] for o in alpaca_server.orders] == [first.broker_order_id]


async def test_cancel_of_an_unknown_order_maps_to_ORDER_NOT_FOUND(alpaca_server: AlpacaContractServer,
                                                                  alpaca: AlpacaBroker) -> None:
    with pytest.raises(BrokerError) as caught:
        await alpaca.cancel_order(str(uuid.uuid4()))
    assert (caught.value.code, caught.value.status) == ("ORDER_NOT_FOUND", 404)
    assert "order not found" in caught.value.message


async def test_cancel_with_a_malformed_id_is_ORDER_NOT_FOUND_without_a_request(
        alpaca_server: AlpacaContractServer, alpaca: AlpacaBroker) -> None:
    with pytest.raises(BrokerError) as caught:
        await alpaca.cancel_order("not-an-order-id")
    assert caught.value.code == "ORDER_NOT_FOUND"
    assert alpaca_server.requests_to("DELETE", "/v2/orders/*") == []


async def test_unknown_client_order_id_gives_none(alpaca_server: AlpacaContractServer,
                                                  alpaca: AlpacaBroker) -> None:
    assert await alpaca.get_order_by_client_id("never-sent") is None


async def test_unknown_asset_gives_none(alpaca_server: AlpacaContractServer, alpaca: AlpacaBroker) -> None:
    assert await alpaca.get_asset("NOSUCH") is None


async def test_rate_limited_read_is_retried_then_succeeds(alpaca_server: AlpacaContractServer,
                                                          alpaca: AlpacaBroker) -> None:
    alpaca_server.fail_next("/v2/account", status=429, times=2)
    account = await alpaca.get_account()
    assert account.cash == Decimal(100_000)
    assert [r.status for r in alpaca_server.requests_to("GET", "/v2/account")] == [429, 429, 200]


async def test_rate_limit_that_persists_is_a_retryable_BROKER_ERROR(alpaca_server: AlpacaContractServer,
                                                                    alpaca: AlpacaBroker) -> None:
    alpaca_server.fail_next("/v2/positions", status=429, times=100)
    with pytest.raises(BrokerError) as caught:
        await alpaca.get_positions()
    assert (caught.value.code, caught.value.status, caught.value.retryable) == ("BROKER_ERROR", 429, True)
    assert "rate limit exceeded" in caught.value.message
    assert len(alpaca_server.requests_to("GET", "/v2/positions")) == 1 + alpaca.read_retries


async def test_server_error_on_a_read_is_retried_then_succeeds(alpaca_server: AlpacaContractServer,
                                                               alpaca: AlpacaBroker) -> None:
    alpaca_server.fail_next("/v2/clock", status=500)
    clock = await alpaca.get_clock()
    assert clock.is_open
    assert [r.status for r in alpaca_server.requests_to("GET", "/v2/clock")] == [500, 200]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_error_that_persists_is_BROKER_ERROR(alpaca_server: AlpacaContractServer,
                                                          alpaca: AlpacaBroker, status: int) -> None:
    alpaca_server.fail_next("/v2/stocks/snapshots", status=status, times=100, api="data")
    with pytest.raises(BrokerError) as caught:
        await alpaca.get_quotes(["AAPL"])
    assert (caught.value.code, caught.value.status, caught.value.retryable) == ("BROKER_ERROR", status, True)


async def test_unauthorized_keys_are_a_non_retryable_BROKER_ERROR(alpaca_server: AlpacaContractServer) -> None:
    broker = AlpacaBroker(**alpaca_server.broker_kwargs(secret_key="wrong-secret-key-0000"))
    with pytest.raises(BrokerError) as caught:
        await broker.get_account()
    await broker.close()
    assert (caught.value.code, caught.value.status, caught.value.retryable) == ("BROKER_ERROR", 401, False)
    assert len(alpaca_server.requests_to("GET", "/v2/account")) == 1


# -- submission is never retried; unknown outcomes are looked up ---------------------------------------


async def test_server_error_on_submit_is_not_retried(alpaca_server: AlpacaContractServer,
                                                     alpaca: AlpacaBroker) -> None:
    alpaca_server.fail_next("/v2/orders", method="POST", status=500, times=5)
    with pytest.raises(BrokerError) as caught:
        await alpaca.submit_order(submit("AAPL"))
    assert (caught.value.code, caught.value.status) == ("BROKER_ERROR", 500)
    assert not isinstance(caught.value, BrokerTimeout)
    assert "internal server error" in caught.value.message
    assert len(posted_orders(alpaca_server)) == 1
    assert alpaca_server.orders == []


async def test_server_error_after_the_order_was_made_returns_the_order(alpaca_server: AlpacaContractServer,
                                                                       alpaca: AlpacaBroker,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    make_order = AlpacaContractServer._post_order

    def made_then_failed(self: AlpacaContractServer, **kwargs: Any) -> Any:
        make_order(self, **kwargs)
        raise contract_module._ApiError(500, 50000000, "internal server error")

    monkeypatch.setattr(AlpacaContractServer, "_post_order", made_then_failed)
    request = submit("AAPL")
    placed = await alpaca.submit_order(request)
    assert placed.client_order_id == request.client_order_id
    assert len(posted_orders(alpaca_server)) == 1 and len(alpaca_server.orders) == 1


async def test_rate_limit_on_submit_is_not_retried(alpaca_server: AlpacaContractServer,
                                                   alpaca: AlpacaBroker) -> None:
    alpaca_server.fail_next("/v2/orders", method="POST", status=429, times=5)
    with pytest.raises(BrokerError) as caught:
        await alpaca.submit_order(submit("AAPL"))
    assert (caught.value.code, caught.value.status, caught.value.retryable) == ("BROKER_ERROR", 429, True)
    assert len(posted_orders(alpaca_server)) == 1


async def test_gateway_timeout_on_submit_is_an_unknown_outcome_not_a_retry(
        alpaca_server: AlpacaContractServer, alpaca: AlpacaBroker) -> None:
    alpaca_server.fail_next("/v2/orders", method="POST", status=504, times=5)
    with pytest.raises(BrokerTimeout):
        await alpaca.submit_order(submit("AAPL"))
    assert len(posted_orders(alpaca_server)) == 1  # alpaca-py's own 504 retry is off
    assert len(alpaca_server.requests_to("GET", "/v2/orders:by_client_order_id")) == 1


async def test_submit_timeout_is_resolved_by_looking_the_order_up(alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.hang_next_submit(2.0, create_order="before")
    broker = AlpacaBroker(**alpaca_server.broker_kwargs(timeout=0.5))
    request = submit("AAPL")
    placed = await broker.submit_order(request)
    await broker.close()
    assert placed.client_order_id == request.client_order_id
    assert [o["client_order_id"] for o in alpaca_server.orders] == [request.client_order_id]
    assert len(posted_orders(alpaca_server)) == 1


async def test_submit_timeout_lookup_is_retried_on_rate_limit(alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.hang_next_submit(2.0, create_order="before")
    alpaca_server.fail_next("/v2/orders:by_client_order_id", status=429, times=2)
    broker = AlpacaBroker(**alpaca_server.broker_kwargs(timeout=0.5))
    placed = await broker.submit_order(submit("AAPL"))
    await broker.close()
    assert placed.broker_order_id == alpaca_server.orders[0]["id"]
    assert len(alpaca_server.orders) == 1 and len(posted_orders(alpaca_server)) == 1


async def test_submit_timeout_without_an_order_raises_BrokerTimeout(alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.hang_next_submit(2.0, create_order="never")
    broker = AlpacaBroker(**alpaca_server.broker_kwargs(timeout=0.5))
    request = submit("AAPL")
    with pytest.raises(BrokerTimeout) as caught:
        await broker.submit_order(request)
    await broker.close()
    assert request.client_order_id in caught.value.message
    assert alpaca_server.orders == []
    assert len(posted_orders(alpaca_server)) == 1


async def test_order_that_appears_after_a_timeout_is_found_later_by_client_id(
        alpaca_server: AlpacaContractServer) -> None:
    alpaca_server.hang_next_submit(1.0, create_order="after")
    broker = AlpacaBroker(**alpaca_server.broker_kwargs(timeout=0.3))
    request = submit("AAPL")
    with pytest.raises(BrokerTimeout):
        await broker.submit_order(request)
    for _ in range(100):  # what reconciliation does later
        found = await broker.get_order_by_client_id(request.client_order_id)
        if found is not None:
            break
        await asyncio.sleep(0.05)
    await broker.close()
    assert found is not None and found.client_order_id == request.client_order_id
    assert len(alpaca_server.orders) == 1 and len(posted_orders(alpaca_server)) == 1


async def test_submit_to_an_unreachable_alpaca_raises_BrokerTimeout() -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    broker = AlpacaBroker(api_key=FAKE_API_KEY, secret_key=FAKE_SECRET_KEY, paper=True, trading_url=url,
                          data_url=url, timeout=0.5, read_retries=1, retry_backoff=0.01)
    with pytest.raises(BrokerTimeout):
        await broker.submit_order(submit("AAPL"))
    await broker.close()


# -- cancel ---------------------------------------------------------------------------------------------


async def test_cancel_returns_the_orders_new_status(alpaca_server: AlpacaContractServer,
                                                    alpaca: AlpacaBroker) -> None:
    placed = await alpaca.submit_order(submit("AAPL", order_type="limit", limit_price=Decimal("100"),
                                              time_in_force="gtc"))
    canceled = await alpaca.cancel_order(placed.broker_order_id)
    assert canceled.status == "canceled" and not canceled.is_open
    assert alpaca_server.order(placed.broker_order_id)["status"] == "canceled"


async def test_cancel_of_a_filled_order_raises_with_alpacas_message(alpaca_server: AlpacaContractServer,
                                                                    alpaca: AlpacaBroker) -> None:
    placed = await alpaca.submit_order(submit("AAPL"))
    with pytest.raises(BrokerError) as caught:
        await alpaca.cancel_order(placed.broker_order_id)
    assert caught.value.status == 422
    assert "order is not cancelable" in caught.value.message and "filled" in caught.value.message


async def test_cancel_is_retried_on_server_error(alpaca_server: AlpacaContractServer,
                                                 alpaca: AlpacaBroker) -> None:
    placed = await alpaca.submit_order(submit("AAPL", order_type="limit", limit_price=Decimal("100")))
    alpaca_server.fail_next("/v2/orders/*", method="DELETE", status=503)
    canceled = await alpaca.cancel_order(placed.broker_order_id)
    assert canceled.status == "canceled"
    assert [r.status for r in alpaca_server.requests_to("DELETE", "/v2/orders/*")] == [503, 204]


# -- orders listing (reconciliation reads these) -------------------------------------------------------


async def test_list_orders_filters_open_and_closed(alpaca_server: AlpacaContractServer,
                                                   alpaca: AlpacaBroker) -> None:
    filled = await alpaca.submit_order(submit("AAPL"))
    resting = await alpaca.submit_order(submit("AAPL", order_type="limit", limit_price=Decimal("100")))
    assert [o.broker_order_id for o in await alpaca.list_orders("open")] == [resting.broker_order_id]
    assert [o.broker_order_id for o in await alpaca.list_orders("closed")] == [filled.broker_order_id]
    assert [o.broker_order_id for o in await alpaca.list_orders("all")] == [resting.broker_order_id,
                                                                           filled.broker_order_id]


async def test_list_orders_pages_through_alpacas_page_cap(alpaca_server: AlpacaContractServer,
                                                          alpaca: AlpacaBroker,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alpaca_module, "_MAX_ORDERS_PAGE", 2)
    placed = [await alpaca.submit_order(submit("AAPL")) for _ in range(5)]
    listed = await alpaca.list_orders("all", limit=500)
    assert [o.broker_order_id for o in listed] == [o.broker_order_id for o in reversed(placed)]
    assert len(alpaca_server.requests_to("GET", "/v2/orders")) == 3


async def test_list_orders_honours_the_limit(alpaca_server: AlpacaContractServer, alpaca: AlpacaBroker,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alpaca_module, "_MAX_ORDERS_PAGE", 2)
    placed = [await alpaca.submit_order(submit("AAPL")) for _ in range(5)]
    listed = await alpaca.list_orders("all", limit=3)
    assert [o.broker_order_id for o in listed] == [o.broker_order_id for o in reversed(placed)][:3]


async def test_list_orders_after_excludes_older_orders_across_pages(alpaca_server: AlpacaContractServer,
                                                                    alpaca: AlpacaBroker,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alpaca_module, "_MAX_ORDERS_PAGE", 2)
    older = [await alpaca.submit_order(submit("AAPL")) for _ in range(3)]
    cutoff = older[-1].submitted_at
    assert cutoff is not None
    newer = [await alpaca.submit_order(submit("AAPL")) for _ in range(3)]
    listed = await alpaca.list_orders("all", after=cutoff)
    assert [o.broker_order_id for o in listed] == [o.broker_order_id for o in reversed(newer)]


async def test_listed_orders_carry_exact_decimals_and_utc_times(alpaca_server: AlpacaContractServer,
                                                                alpaca: AlpacaBroker) -> None:
    await alpaca.submit_order(submit("BTC/USD", qty=Decimal("0.000123456")))
    (order,) = await alpaca.list_orders("all")
    assert order.qty == Decimal("0.000123456") and order.filled_qty == Decimal("0.000123456")
    assert order.submitted_at is not None and order.submitted_at.tzinfo is UTC
    assert order.updated_at is not None and order.updated_at.tzinfo is UTC


# -- account and positions -----------------------------------------------------------------------------


async def test_positions_and_account_after_fills(alpaca_server: AlpacaContractServer,
                                                 alpaca: AlpacaBroker) -> None:
    alpaca_server.set_quote("AAPL", bid="99.99", ask="100.01", last="100")
    alpaca_server.set_quote("BTC/USD", bid="49990", ask="50010", last="50000")
    await alpaca.submit_order(submit("AAPL", qty=Decimal(10)))
    await alpaca.submit_order(submit("BTC/USD", qty=Decimal("0.1")))
    await alpaca.submit_order(submit("AAPL", side="sell", qty=Decimal(4)))
    positions = {p.symbol: p for p in await alpaca.get_positions()}
    assert set(positions) == {"AAPL", "BTC/USD"}  # Alpaca says BTCUSD; we say BTC/USD
    assert (positions["AAPL"].qty, positions["AAPL"].avg_entry_price) == (Decimal(6), Decimal("100.01"))
    assert (positions["BTC/USD"].qty, positions["BTC/USD"].avg_entry_price) == (Decimal("0.1"), Decimal(50010))
    assert positions["AAPL"].market_value == Decimal(600)
    account = await alpaca.get_account()
    cash = Decimal(100_000) - Decimal("1000.10") - Decimal("5001") + Decimal("399.96")
    assert account.cash == cash
    assert account.equity == cash + Decimal(600) + Decimal(5000)
    assert account.buying_power == cash and not account.trading_blocked


async def test_short_position_has_a_negative_qty(alpaca_server: AlpacaContractServer, alpaca: AlpacaBroker,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    await alpaca.submit_order(submit("TSLA", qty=Decimal(3)))
    long_position = AlpacaContractServer._position_json

    def as_short(self: AlpacaContractServer, position: Any) -> dict[str, Any]:
        body = long_position(self, position)
        return {**body, "side": "short", "qty": "-" + body["qty"]}  # how Alpaca reports a short

    monkeypatch.setattr(AlpacaContractServer, "_position_json", as_short)
    (position,) = await alpaca.get_positions()
    assert (position.symbol, position.qty) == ("TSLA", Decimal(-3))


async def test_open_buy_order_reserves_buying_power(alpaca_server: AlpacaContractServer,
                                                    alpaca: AlpacaBroker) -> None:
    await alpaca.submit_order(submit("MSFT", qty=Decimal(10), order_type="limit", limit_price=Decimal("300")))
    account = await alpaca.get_account()
    assert account.cash == Decimal(100_000)
    assert account.buying_power == Decimal(97_000)


async def test_blocked_account_reports_trading_blocked(alpaca_server: AlpacaContractServer,
                                                       alpaca: AlpacaBroker) -> None:
    alpaca_server.trading_blocked = True
    assert (await alpaca.get_account()).trading_blocked


# -- assets and clock ----------------------------------------------------------------------------------


async def test_equity_asset_is_mapped(alpaca_server: AlpacaContractServer, alpaca: AlpacaBroker) -> None:
    asset = await alpaca.get_asset("aapl")
    assert asset is not None
    assert (asset.symbol, asset.asset_class, asset.tradable, asset.fractionable, asset.shortable) == (
        "AAPL", "us_equity", True, True, True)
    assert asset.name == "Apple Inc. Common Stock"


async def test_crypto_asset_is_fetched_in_alpacas_old_symbology(alpaca_server: AlpacaContractServer,
                                                                alpaca: AlpacaBroker) -> None:
    asset = await alpaca.get_asset("BTC/USD")
    assert asset is not None and (asset.symbol, asset.asset_class) == ("BTC/USD", "crypto")
    assert [r.path for r in alpaca_server.requests_to("GET", "/v2/assets/*")] == ["/v2/assets/BTCUSD"]


async def test_untradable_asset_is_reported_untradable(alpaca_server: AlpacaContractServer,
                                                       alpaca: AlpacaBroker) -> None:
    asset = await alpaca.get_asset("HALTD")
    assert asset is not None and not asset.tradable


async def test_clock_is_mapped_to_utc(alpaca_server: AlpacaContractServer, alpaca: AlpacaBroker) -> None:
    alpaca_server.set_market_open(False)
    clock = await alpaca.get_clock()
    assert clock.is_open is False
    assert clock.next_open is not None and clock.next_open.tzinfo is UTC
    assert clock.next_close is not None and clock.next_close > datetime.now(UTC) - timedelta(days=1)


# -- market data ---------------------------------------------------------------------------------------


async def test_stock_quote_has_bid_ask_last_and_time(alpaca_server: AlpacaContractServer,
                                                     alpaca: AlpacaBroker) -> None:
    as_of = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    alpaca_server.set_quote("AAPL", bid="189.5", ask="190.5", last="190.1", as_of=as_of)
    quotes = await alpaca.get_quotes(["AAPL"])
    quote = quotes["AAPL"]
    assert (quote.bid, quote.ask, quote.last, quote.as_of) == (Decimal("189.5"), Decimal("190.5"),
                                                               Decimal("190.1"), as_of)


async def test_crypto_quotes_come_from_the_crypto_endpoint(alpaca_server: AlpacaContractServer,
                                                           alpaca: AlpacaBroker) -> None:
    alpaca_server.set_quote("BTC/USD", bid="64990.5", ask="65010.25", last="65000")
    quotes = await alpaca.get_quotes(["BTC/USD", "ETH/USD"])
    assert set(quotes) == {"BTC/USD", "ETH/USD"}
    assert (quotes["BTC/USD"].bid, quotes["BTC/USD"].ask) == (Decimal("64990.5"), Decimal("65010.25"))
    assert alpaca_server.requests_to("GET", "/v1beta3/crypto/us/snapshots", api="data")
    assert not alpaca_server.requests_to("GET", "/v2/stocks/*", api="data")


async def test_mixed_quotes_use_one_request_per_asset_class(alpaca_server: AlpacaContractServer,
                                                            alpaca: AlpacaBroker) -> None:
    quotes = await alpaca.get_quotes(["AAPL", "msft", "BTC/USD"])
    assert set(quotes) == {"AAPL", "MSFT", "BTC/USD"}
    assert len(alpaca_server.requests_to("GET", "*", api="data")) == 2


async def test_symbol_without_data_is_absent_from_quotes(alpaca_server: AlpacaContractServer,
                                                         alpaca: AlpacaBroker) -> None:
    alpaca_server.remove_market_data("SPY")
    quotes = await alpaca.get_quotes(["SPY", "NOSUCH", "AAPL"])
    assert set(quotes) == {"AAPL"}


async def test_one_sided_quote_is_absent_fail_closed(alpaca_server: AlpacaContractServer,
                                                     alpaca: AlpacaBroker) -> None:
    alpaca_server.set_quote("TSLA", bid="0", ask="251", last="250")  # Alpaca: 0 means no active bid
    assert await alpaca.get_quotes(["TSLA"]) == {}


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
async def test_stock_bars_are_the_latest_n_oldest_first(alpaca_server: AlpacaContractServer,
                                                        alpaca: AlpacaBroker, timeframe: str) -> None:
    alpaca_server.set_price("AAPL", "190.00")
    bars = await alpaca.get_bars("AAPL", timeframe, 50)  # type: ignore[arg-type]
    assert len(bars) == 50
    assert all(a.start < b.start for a, b in itertools.pairwise(bars))
    assert bars[-1].close == Decimal("190")  # the newest bar closes at the last price
    assert all(b.start.tzinfo is UTC and b.low <= min(b.open, b.close) for b in bars)
    request = alpaca_server.requests_to("GET", "/v2/stocks/bars", api="data")[0]
    assert request.query["timeframe"] == [timeframe] and request.query["sort"] == ["desc"]


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
async def test_crypto_bars_are_the_latest_n_oldest_first(alpaca_server: AlpacaContractServer,
                                                         alpaca: AlpacaBroker, timeframe: str) -> None:
    alpaca_server.set_price("ETH/USD", "3100.00")
    bars = await alpaca.get_bars("ETH/USD", timeframe, 40)  # type: ignore[arg-type]
    assert len(bars) == 40
    assert all(a.start < b.start for a, b in itertools.pairwise(bars))
    assert bars[-1].close == Decimal("3100")
    assert datetime.now(UTC) - bars[-1].start < timedelta(days=1, minutes=5)
    assert alpaca_server.requests_to("GET", "/v1beta3/crypto/us/bars", api="data")


async def test_many_minute_bars_reach_back_over_sessions(alpaca_server: AlpacaContractServer,
                                                         alpaca: AlpacaBroker) -> None:
    bars = await alpaca.get_bars("SPY", "1Min", 2000)
    assert len(bars) == 2000  # over five sessions: the lookback window must span weekends


async def test_bars_with_zero_limit_are_empty_without_a_request(alpaca_server: AlpacaContractServer,
                                                                alpaca: AlpacaBroker) -> None:
    assert await alpaca.get_bars("AAPL", "1Day", 0) == []
    assert alpaca_server.requests_to("GET", "*", api="data") == []


async def test_unsupported_timeframe_is_refused(alpaca_server: AlpacaContractServer,
                                                alpaca: AlpacaBroker) -> None:
    with pytest.raises(BrokerError):
        await alpaca.get_bars("AAPL", "2Hour", 10)  # type: ignore[arg-type]


# -- lifecycle -----------------------------------------------------------------------------------------


async def test_calls_work_without_an_explicit_start(alpaca_server: AlpacaContractServer) -> None:
    broker = AlpacaBroker(**alpaca_server.broker_kwargs())
    assert (await broker.get_clock()).is_open
    await broker.close()


# -- connections ---------------------------------------------------------------------------------------


def unused_port() -> int:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment_proxy(monkeypatch: pytest.MonkeyPatch, *, no_proxy: str | None) -> None:
    """A proxy in the environment that nobody answers on: a request sent through it fails."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                 "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{unused_port()}")
    if no_proxy is not None:
        monkeypatch.setenv("no_proxy", no_proxy)


async def test_a_proxy_named_in_the_environment_is_used(alpaca_server: AlpacaContractServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    environment_proxy(monkeypatch, no_proxy=None)
    broker = AlpacaBroker(**alpaca_server.broker_kwargs(read_retries=0))
    with pytest.raises(BrokerError) as raised:
        await broker.get_account()
    await broker.close()
    assert raised.value.code == "BROKER_UNAVAILABLE"
    assert alpaca_server.requests == []  # it went to the proxy, not straight to Alpaca


async def test_hosts_the_environment_exempts_from_its_proxy_are_reached_directly(
        alpaca_server: AlpacaContractServer, monkeypatch: pytest.MonkeyPatch) -> None:
    environment_proxy(monkeypatch, no_proxy="127.0.0.1")
    broker = AlpacaBroker(**alpaca_server.broker_kwargs(read_retries=0))
    assert (await broker.get_account()).cash > 0
    await broker.close()


async def test_requests_reuse_one_kept_alive_connection_per_alpaca_host(
        alpaca_server: AlpacaContractServer) -> None:
    broker = AlpacaBroker(**alpaca_server.broker_kwargs(quote_reuse_seconds=0))
    for _ in range(3):
        await broker.submit_order(submit("AAPL"))
        await broker.get_account()
        await broker.get_quotes(["AAPL"])
        await broker.get_quotes(["BTC/USD"])  # stocks and crypto: two clients, one market-data host
    await broker.close()
    by_api = {api: [r.connection for r in alpaca_server.requests if r.api == api] for api in ("trading", "data")}
    assert len(by_api["trading"]) == 6 and len(set(by_api["trading"])) == 1
    assert len(by_api["data"]) == 6 and len(set(by_api["data"])) == 1
