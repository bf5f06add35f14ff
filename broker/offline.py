"""A broker for commands that only read or write the ledger (`agents list`, `approvals list`, `audit verify`,
`status`, ...): it holds no credentials and reaches nothing, so such commands neither need Alpaca keys nor
wait on the network. Any call that would reach a broker fails closed with BROKER_UNAVAILABLE."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NoReturn

from broker.base import Account, Asset, Bar, BrokerError, BrokerOrder, BrokerPosition, MarketClock, Quote, SubmitOrder


class OfflineBroker:
    name = "offline"

    def _refuse(self) -> NoReturn:
        raise BrokerError("this command does not reach the broker", code="BROKER_UNAVAILABLE")

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        self._refuse()

    async def get_bars(self, symbol: str, timeframe: Any, limit: int) -> list[Bar]:
        self._refuse()

    async def get_asset(self, symbol: str) -> Asset | None:
        self._refuse()

    async def get_clock(self) -> MarketClock:
        self._refuse()

    async def submit_order(self, request: SubmitOrder) -> BrokerOrder:
        self._refuse()

    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        self._refuse()

    async def list_orders(self, status: Literal["open", "closed", "all"] = "all", limit: int = 500,
                          after: datetime | None = None) -> list[BrokerOrder]:
        self._refuse()

    async def cancel_order(self, broker_order_id: str) -> BrokerOrder:
        self._refuse()

    async def get_account(self) -> Account:
        self._refuse()

    async def get_positions(self) -> list[BrokerPosition]:
        self._refuse()
