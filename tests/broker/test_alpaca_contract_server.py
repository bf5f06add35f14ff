"""tests/broker/alpaca_contract_server.py: the fake Alpaca holds itself and its clients to Alpaca's contract."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.broker import alpaca_contract_server as contract_module
from tests.broker.alpaca_contract_server import FAKE_API_KEY, FAKE_SECRET_KEY, AlpacaContractServer

HEADERS = {"APCA-API-KEY-ID": FAKE_API_KEY, "APCA-API-SECRET-KEY": FAKE_SECRET_KEY}
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def server() -> Iterator[AlpacaContractServer]:
    with AlpacaContractServer() as running:
        yield running
        running.assert_no_violations()


def trading(server: AlpacaContractServer, method: str, path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("headers", HEADERS)
    kwargs.setdefault("timeout", 5)
    return requests.request(method, server.trading_url + path, **kwargs)


def data(server: AlpacaContractServer, path: str, **params: Any) -> requests.Response:
    return requests.get(server.data_url + path, params=params, headers=HEADERS, timeout=5)


def take_violations(server: AlpacaContractServer) -> list[str]:
    found = list(server.violations)
    server.violations.clear()
    return found


ORDER = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}


# -- the contract is enforced, both ways ---------------------------------------------------------------


def test_order_amounts_sent_as_numbers_are_a_contract_violation(server: AlpacaContractServer) -> None:
    response = trading(server, "POST", "/v2/orders", json={**ORDER, "qty": 1.5})
    assert response.status_code == 400
    assert "OpenAPI" in response.json()["message"]
    (violation,) = take_violations(server)
    assert "POST /trading/v2/orders" in violation and "InvalidRequestBody" in violation
    assert server.orders == []


def test_alpaca_py_order_models_send_floats_so_the_adapter_builds_its_own_body(
        server: AlpacaContractServer) -> None:
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient
    from alpaca.trading.requests import MarketOrderRequest

    client = TradingClient(FAKE_API_KEY, FAKE_SECRET_KEY, paper=True, url_override=server.trading_url)
    with pytest.raises(APIError):
        client.submit_order(MarketOrderRequest(symbol="AAPL", qty=1, side="buy", time_in_force="day"))
    assert take_violations(server)  # qty went out as a JSON number; Alpaca's description says string


def test_missing_auth_headers_are_a_contract_violation(server: AlpacaContractServer) -> None:
    response = trading(server, "GET", "/v2/account", headers={})
    assert response.status_code == 400
    assert "SecurityValidationError" in take_violations(server)[0]


def test_wrong_keys_are_answered_401_with_alpacas_error_shape(server: AlpacaContractServer) -> None:
    response = trading(server, "GET", "/v2/account",
                       headers={"APCA-API-KEY-ID": "PKWRONG", "APCA-API-SECRET-KEY": "wrong"})
    assert response.status_code == 401
    assert response.json() == {"code": 40110000, "message": "request is not authorized"}


def test_parameter_outside_its_enum_is_a_contract_violation(server: AlpacaContractServer) -> None:
    assert trading(server, "GET", "/v2/orders", params={"status": "pending"}).status_code == 400
    assert "InvalidParameter" in take_violations(server)[0]


def test_malformed_order_id_is_a_contract_violation(server: AlpacaContractServer) -> None:
    assert trading(server, "DELETE", "/v2/orders/not-a-uuid").status_code == 400
    assert take_violations(server)


def test_path_alpaca_does_not_have_is_a_contract_violation(server: AlpacaContractServer) -> None:
    assert trading(server, "GET", "/v2/portfolio").status_code == 400
    assert "PathNotFound" in take_violations(server)[0]


def test_data_paths_are_checked_against_the_market_data_description(server: AlpacaContractServer) -> None:
    assert data(server, "/v2/orders").status_code == 400  # a trading path on the data API
    assert take_violations(server)
    assert data(server, "/v2/stocks/bars", symbols="AAPL").status_code == 400  # timeframe is required
    assert "timeframe" in take_violations(server)[0]


def test_response_that_breaks_the_contract_is_recorded(server: AlpacaContractServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    original = contract_module.ServerOrder.to_json

    def without_time_in_force(self: contract_module.ServerOrder) -> dict[str, Any]:
        body = original(self)
        del body["time_in_force"]  # required by Alpaca's Order schema
        return body

    monkeypatch.setattr(contract_module.ServerOrder, "to_json", without_time_in_force)
    response = trading(server, "POST", "/v2/orders", json=ORDER)
    assert response.status_code == 500
    (violation,) = take_violations(server)
    assert violation.startswith("response POST /trading/v2/orders 200") and "time_in_force" in violation


def test_undocumented_error_status_must_still_have_alpacas_error_shape(server: AlpacaContractServer,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_error(self: AlpacaContractServer, status: int, code: int, message: str) -> Any:
        return self._json(status, {"error": message})

    monkeypatch.setattr(AlpacaContractServer, "_error", bad_error)
    trading(server, "GET", "/v2/orders:by_client_order_id", params={"client_order_id": "nope"})
    assert "error body" in take_violations(server)[0]


# -- lifecycle -----------------------------------------------------------------------------------------


def test_server_listens_on_loopback_and_stops_by_itself() -> None:
    server = AlpacaContractServer().start()
    assert server.trading_url.startswith("http://127.0.0.1:")
    port = server.port
    assert port is not None
    assert trading(server, "GET", "/v2/clock").status_code == 200
    server.stop()
    with socket.socket() as probe, pytest.raises(OSError):
        probe.settimeout(1)
        probe.connect(("127.0.0.1", port))


# -- trading behaviour ---------------------------------------------------------------------------------


def test_post_order_answers_pending_new_then_the_market_order_fills_at_the_ask(
        server: AlpacaContractServer) -> None:
    server.set_quote("AAPL", bid="99", ask="101", last="100")
    posted = trading(server, "POST", "/v2/orders", json={**ORDER, "client_order_id": "c-1"}).json()
    assert (posted["status"], posted["filled_qty"]) == ("pending_new", "0")
    order = trading(server, "GET", f"/v2/orders/{posted['id']}").json()
    assert (order["status"], order["filled_qty"], order["filled_avg_price"]) == ("filled", "1", "101")


def test_duplicate_client_order_id_is_refused_422(server: AlpacaContractServer) -> None:
    trading(server, "POST", "/v2/orders", json={**ORDER, "client_order_id": "same"})
    second = trading(server, "POST", "/v2/orders", json={**ORDER, "client_order_id": "same"})
    assert second.status_code == 422
    assert second.json()["message"] == "client_order_id must be unique"
    assert len(server.orders) == 1


def test_resting_limit_order_reserves_buying_power_and_fills_when_the_price_comes(
        server: AlpacaContractServer) -> None:
    trading(server, "POST", "/v2/orders", json={**ORDER, "qty": "10", "type": "limit", "limit_price": "150",
                                                "client_order_id": "lim"})
    assert trading(server, "GET", "/v2/account").json()["buying_power"] == "98500"
    server.set_price("AAPL", "149.00")
    assert server.order("lim")["status"] == "filled"
    assert server.positions == {"AAPL": Decimal(10)}


def test_sell_limit_fills_when_the_bid_reaches_it(server: AlpacaContractServer) -> None:
    trading(server, "POST", "/v2/orders", json={**ORDER, "qty": "2"})
    trading(server, "POST", "/v2/orders", json={**ORDER, "side": "sell", "qty": "2", "type": "limit",
                                                "limit_price": "200", "client_order_id": "s"})
    assert server.order("s")["status"] == "new"
    server.set_price("AAPL", "201")
    assert server.order("s")["status"] == "filled"
    assert server.positions == {}


def test_partial_fill_then_expiry(server: AlpacaContractServer) -> None:
    trading(server, "POST", "/v2/orders", json={**ORDER, "qty": "10", "type": "limit", "limit_price": "100",
                                                "client_order_id": "p"})
    assert server.fill_order("p", qty="3", price="99.5")["status"] == "partially_filled"
    assert server.expire_order("p")["status"] == "expired"
    assert server.positions == {"AAPL": Decimal(3)}


def test_crypto_positions_use_alpacas_old_symbology(server: AlpacaContractServer) -> None:
    trading(server, "POST", "/v2/orders", json={**ORDER, "symbol": "BTC/USD", "qty": "0.01",
                                                "time_in_force": "gtc"})
    (position,) = trading(server, "GET", "/v2/positions").json()
    assert (position["symbol"], position["asset_class"], position["qty"]) == ("BTCUSD", "crypto", "0.01")


def test_assets_answer_to_old_and_url_encoded_crypto_symbols(server: AlpacaContractServer) -> None:
    assert trading(server, "GET", "/v2/assets/BTCUSD").json()["symbol"] == "BTC/USD"
    assert trading(server, "GET", "/v2/assets/BTC%2FUSD").json()["symbol"] == "BTC/USD"
    assert trading(server, "GET", "/v2/assets/NOPE").status_code == 404


def test_orders_page_with_before_order_id(server: AlpacaContractServer) -> None:
    ids = [trading(server, "POST", "/v2/orders", json=ORDER).json()["id"] for _ in range(5)]
    first = trading(server, "GET", "/v2/orders", params={"status": "all", "limit": 2}).json()
    assert [o["id"] for o in first] == ids[:2:-1]
    rest = trading(server, "GET", "/v2/orders", params={"status": "all", "limit": 10,
                                                        "before_order_id": first[-1]["id"]}).json()
    assert [o["id"] for o in rest] == ids[2::-1]


# -- failure injection ---------------------------------------------------------------------------------


def test_fail_next_answers_the_next_n_matching_requests_only(server: AlpacaContractServer) -> None:
    server.fail_next("/v2/clock", status=429, times=2)
    statuses = [trading(server, "GET", "/v2/clock").status_code for _ in range(3)]
    assert statuses == [429, 429, 200]
    assert trading(server, "GET", "/v2/account").status_code == 200


def test_hang_next_submit_keeps_the_order_though_the_client_gave_up(server: AlpacaContractServer) -> None:
    server.hang_next_submit(1.0, create_order="before")
    with pytest.raises(requests.exceptions.ReadTimeout):
        trading(server, "POST", "/v2/orders", json={**ORDER, "client_order_id": "lost-answer"}, timeout=0.2)
    assert server.order("lost-answer")["symbol"] == "AAPL"


def test_hang_that_never_creates_leaves_no_order(server: AlpacaContractServer) -> None:
    server.hang_next_submit(0.3, create_order="never")
    assert trading(server, "POST", "/v2/orders", json=ORDER).status_code == 504
    assert server.orders == []


# -- market data ---------------------------------------------------------------------------------------


def test_stock_snapshots_and_latest_quotes(server: AlpacaContractServer) -> None:
    server.set_quote("AAPL", bid="10", ask="11", last="10.5")
    snapshot = data(server, "/v2/stocks/snapshots", symbols="AAPL,NOPE").json()
    assert set(snapshot) == {"AAPL"}
    assert (snapshot["AAPL"]["latestQuote"]["bp"], snapshot["AAPL"]["latestTrade"]["p"]) == (10, 10.5)
    assert data(server, "/v2/stocks/quotes/latest", symbols="AAPL").json()["quotes"]["AAPL"]["ap"] == 11


def test_crypto_snapshots_and_latest_quotes(server: AlpacaContractServer) -> None:
    snapshots = data(server, "/v1beta3/crypto/us/snapshots", symbols="BTC/USD,ETH/USD").json()["snapshots"]
    assert set(snapshots) == {"BTC/USD", "ETH/USD"}
    quotes = data(server, "/v1beta3/crypto/us/latest/quotes", symbols="BTC/USD").json()["quotes"]
    assert set(quotes) == {"BTC/USD"}


def test_crypto_symbol_on_the_stock_endpoint_is_refused(server: AlpacaContractServer) -> None:
    assert data(server, "/v2/stocks/snapshots", symbols="BTC/USD").status_code == 400


def test_bars_page_with_next_page_token(server: AlpacaContractServer) -> None:
    start = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    first = data(server, "/v1beta3/crypto/us/bars", symbols="BTC/USD", timeframe="1Min", start=start,
                 limit=50).json()
    assert len(first["bars"]["BTC/USD"]) == 50 and first["next_page_token"]
    second = data(server, "/v1beta3/crypto/us/bars", symbols="BTC/USD", timeframe="1Min", start=start,
                  limit=50, page_token=first["next_page_token"]).json()
    assert second["bars"]["BTC/USD"][0]["t"] > first["bars"]["BTC/USD"][-1]["t"]


def test_bars_without_start_begin_today_as_alpaca_does(server: AlpacaContractServer) -> None:
    bars = data(server, "/v1beta3/crypto/us/bars", symbols="ETH/USD", timeframe="1Hour").json()["bars"]
    today = datetime.now(NEW_YORK).replace(hour=0, minute=0, second=0, microsecond=0)
    assert all(datetime.fromisoformat(b["t"]) >= today for b in bars.get("ETH/USD", []))


def test_stock_intraday_bars_fall_inside_regular_sessions() -> None:
    monday_morning = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # 10:00 New York
    with AlpacaContractServer(clock=lambda: monday_morning) as server:
        start = (monday_morning - timedelta(days=4)).isoformat()
        bars = data(server, "/v2/stocks/bars", symbols="SPY", timeframe="5Min", start=start,
                    limit=10000).json()["bars"]["SPY"]
        server.assert_no_violations()
    local = [datetime.fromisoformat(b["t"]).astimezone(NEW_YORK) for b in bars]
    assert local and all(t.weekday() < 5 and (9, 30) <= (t.hour, t.minute) < (16, 0) for t in local)
    assert {t.date().isoformat() for t in local} == {"2026-11-19", "2026-11-20", "2026-11-23"}
    assert local[-1] == datetime(2026, 11, 23, 10, 0, tzinfo=NEW_YORK)


def test_daily_stock_bars_skip_weekends_and_start_at_midnight_new_york(server: AlpacaContractServer) -> None:
    start = (datetime.now(UTC) - timedelta(days=21)).isoformat()
    bars = data(server, "/v2/stocks/bars", symbols="AAPL", timeframe="1Day", start=start).json()["bars"]["AAPL"]
    local = [datetime.fromisoformat(b["t"]).astimezone(NEW_YORK) for b in bars]
    assert all(t.weekday() < 5 and (t.hour, t.minute) == (0, 0) for t in local)
    assert len(local) >= 14


# -- the request log: who asked, when, and what ran together -------------------------------------------


def test_each_request_is_logged_with_its_sender_and_times(server: AlpacaContractServer) -> None:
    trading(server, "GET", "/v2/account", headers={**HEADERS, "User-Agent": "APCA-MCP-TRADING/9.9"})
    (logged,) = server.requests
    assert (logged.method, logged.path, logged.status, logged.user_agent) == ("GET", "/v2/account", 200,
                                                                              "APCA-MCP-TRADING/9.9")
    assert 0 < logged.received <= logged.answered


def test_latency_delays_every_answer(server: AlpacaContractServer) -> None:
    server.latency = 0.2
    trading(server, "GET", "/v2/clock")
    (logged,) = server.requests
    assert logged.answered - logged.received >= 0.2


def test_requests_sent_together_are_one_step_and_one_after_another_are_two(server: AlpacaContractServer) -> None:
    server.latency = 0.1
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda path: trading(server, "GET", path), ["/v2/account", "/v2/clock"]))
    together = list(server.requests)
    trading(server, "GET", "/v2/clock")
    assert contract_module.sequential_steps(together) == 1
    assert contract_module.sequential_steps(server.requests) == 2
