"""Fixtures for tests of tradewarden on Alpaca; load with `pytest_plugins = ["tests.alpaca_fixtures"]`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.broker.alpaca_contract_server import FAKE_API_KEY, FAKE_SECRET_KEY, AlpacaContractServer


@pytest.fixture
def alpaca_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_API_KEY", FAKE_API_KEY)
    monkeypatch.setenv("ALPACA_SECRET_KEY", FAKE_SECRET_KEY)


@pytest.fixture
def alpaca_server(market_open: object, alpaca_keys: None) -> Iterator[AlpacaContractServer]:
    """Started inside the market-open time travel (its quotes are fresh at that time); any request or
    response outside Alpaca's OpenAPI descriptions fails the test."""
    with AlpacaContractServer() as server:
        yield server
        server.assert_no_violations()
