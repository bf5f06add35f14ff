"""An Alpaca-compatible HTTP server for tests, held to Alpaca's published OpenAPI descriptions.

It serves the Trading API under `/trading` and the Market Data API under `/data` on 127.0.0.1 (ephemeral
port; uvicorn in a background thread), so a real alpaca-py client reaches it through `url_override`:

    with AlpacaContractServer() as server:
        broker = AlpacaBroker(**server.broker_kwargs())
        ...
        server.assert_no_violations()

Every request is validated against the matching description (trading-api.json or market-data-api.json:
path, method, parameters, security headers, request body) and every response too (status, schema). A
request that does not match is answered 400 and recorded as a violation; a response that does not match
is recorded (and replaced by a 500). Error responses with a status the description does not list (it
lists few) must still have Alpaca's documented error shape, the `Error` schema: {code, message}.

Realistic state: an account (cash, equity; buying power reserved by open buy orders; a cash account),
assets (equities, BTC/USD and ETH/USD, one non-tradable), a clock, orders that move
pending_new → new → partially_filled / filled / canceled / expired, positions, and market data (latest
quotes, snapshots, bars; stock bars only inside regular sessions). Alpaca's own rules are modelled where
they matter: old crypto symbology (BTCUSD) in asset paths and positions, the unique client_order_id,
403 for buying power / shares, 422 for invalid orders, 404 for unknown orders.

The control API is plain Python (thread-safe): set prices, open/close the market, fill / partially fill /
cancel / expire orders, inject failures (`fail_next`: the next N requests to a path get 429/5xx),
and make the next order submission hang past the client's timeout (`hang_next_submit`). `requests` logs every
request with its arrival and answer times; `latency` (seconds) delays every answer like a network would, so
`sequential_steps` can tell requests sent together from requests sent one after the other.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import fnmatch
import functools
import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import jsonschema
import uvicorn
from openapi_core import OpenAPI
from openapi_core.contrib.starlette.requests import StarletteOpenAPIRequest
from openapi_core.contrib.starlette.responses import StarletteOpenAPIResponse
from openapi_core.templating.responses.exceptions import ResponseNotFound
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FAKE_API_KEY = "PKCONTRACT0TEST0KEY00"
FAKE_SECRET_KEY = "contract-test-secret-5f3a9c1e7b2d4a6f8e0c"

NEW_YORK = ZoneInfo("America/New_York")
CHICAGO = ZoneInfo("America/Chicago")

_SPEC_FILES = {"trading": "trading-api.json", "data": "market-data-api.json"}
_OPEN_STATUSES = {"new", "accepted", "pending_new", "partially_filled", "pending_cancel", "held",
                  "accepted_for_bidding", "pending_replace", "calculated", "suspended", "stopped"}
_CENT = Decimal("0.01")
_QTY_STEP = Decimal("0.000000001")  # Alpaca: up to 9 decimal places
_DEFAULT_MESSAGES = {400: "bad request", 401: "request is not authorized", 403: "forbidden",
                     404: "not found", 422: "unprocessable entity", 429: "rate limit exceeded",
                     500: "internal server error", 502: "bad gateway", 503: "service unavailable",
                     504: "gateway timeout"}


# ----------------------------------------------------------------------------------------------------
# The contract: Alpaca's OpenAPI descriptions, loaded once per process.


def spec_dir() -> Path:
    """Where Alpaca's OpenAPI descriptions live: $ALPACA_OPENAPI_DIR, or a known reference location."""
    candidates = []
    if os.environ.get("ALPACA_OPENAPI_DIR"):
        candidates.append(Path(os.environ["ALPACA_OPENAPI_DIR"]))
    repo = Path(__file__).resolve().parents[2]
    candidates += [repo / "tests" / "broker" / "alpaca-openapi", repo / "docs" / "reference" / "alpaca-openapi",
                   repo.parent / "shared" / "reference" / "alpaca-openapi"]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in _SPEC_FILES.values()):
            return candidate
    raise FileNotFoundError("Alpaca's OpenAPI descriptions (trading-api.json, market-data-api.json) not found; "
                            "set ALPACA_OPENAPI_DIR. Looked in: " + ", ".join(map(str, candidates)))


@functools.cache
def _spec_documents() -> dict[str, dict[str, Any]]:
    return {api: json.loads((spec_dir() / name).read_text()) for api, name in _SPEC_FILES.items()}


@functools.cache
def contract(api: str) -> OpenAPI:
    """The OpenAPI description of one API, its `servers` pointed at this server's mount (`/trading`, `/data`)."""
    document = copy.deepcopy(_spec_documents()[api])
    document["servers"] = [{"url": f"/{api}"}]
    return OpenAPI.from_dict(document)


@functools.cache
def _error_validator() -> jsonschema.protocols.Validator:
    schema = _spec_documents()["trading"]["components"]["schemas"]["Error"]
    return jsonschema.Draft202012Validator(schema)


def _describe(error: BaseException) -> str:
    parts = [f"{type(error).__name__}: {error}"]
    cause = error.__cause__ or error.__context__
    depth = 0
    while cause is not None and depth < 5:
        parts.append(f"{type(cause).__name__}: {cause}")
        for schema_error in getattr(cause, "schema_errors", None) or []:
            where = "/".join(str(p) for p in schema_error.absolute_path)
            parts.append(f"[{where}] {schema_error.message}")
        cause = cause.__cause__ or cause.__context__
        depth += 1
    return " | ".join(parts)[:2000]


# ----------------------------------------------------------------------------------------------------
# Helpers


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _text(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _num(value: Decimal) -> float:
    return float(value)


def _parse_decimal(value: Any, name: str) -> Decimal | None:
    if value is None:
        return None
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise _ApiError(422, 40010001, f"invalid {name}") from None
    if not result.is_finite():
        raise _ApiError(422, 40010001, f"invalid {name}")
    return result


def _parse_time(value: str, name: str) -> datetime:
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return datetime.fromisoformat(value).replace(tzinfo=NEW_YORK).astimezone(UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _ApiError(422, 42210000, f"invalid {name}: {value}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _unit_hash(*parts: object) -> float:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class _RawPathOpenAPIRequest(StarletteOpenAPIRequest):
    """The path as sent (percent-encoding kept), so /v2/assets/BTC%2FUSD is one path segment, as on Alpaca."""

    @property
    def path(self) -> str:
        raw = self.request.scope.get("raw_path")
        return raw.decode("latin-1") if raw else self.request.url.path


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ----------------------------------------------------------------------------------------------------
# State


@dataclass
class ServerAsset:
    symbol: str  # as orders name it: "AAPL", "BTC/USD"
    name: str
    asset_class: Literal["us_equity", "crypto"]
    exchange: str
    tradable: bool = True
    fractionable: bool = True
    shortable: bool = True
    marginable: bool = True
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def is_crypto(self) -> bool:
        return self.asset_class == "crypto"

    @property
    def legacy_symbol(self) -> str:
        return self.symbol.replace("/", "")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "class": self.asset_class, "exchange": self.exchange, "symbol": self.symbol,
            "name": self.name, "status": "active", "tradable": self.tradable, "marginable": self.marginable,
            "shortable": self.shortable, "easy_to_borrow": self.shortable, "fractionable": self.fractionable,
            "attributes": [],
        }
        if self.is_crypto:
            data.update(min_order_size="0.000000002", min_trade_increment="0.000000001", price_increment="0.01")
        else:
            data.update(borrow_status="easy_to_borrow" if self.shortable else "hard_to_borrow",
                        maintenance_margin_requirement=30, margin_requirement_long="100",
                        margin_requirement_short="100")
        return data


@dataclass
class _Market:
    bid: Decimal
    ask: Decimal
    last: Decimal
    as_of: datetime
    prev_close: Decimal
    trade_id: int = 1


@dataclass
class ServerOrder:
    id: str
    client_order_id: str
    asset: ServerAsset
    side: Literal["buy", "sell"]
    type: str
    time_in_force: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    extended_hours: bool
    status: str
    created_at: datetime
    filled_qty: Decimal = Decimal(0)
    filled_value: Decimal = Decimal(0)
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    updated_at: datetime | None = None
    triggered: bool = False
    # Brackets (Alpaca's order_class bracket / oto): the entry holds its legs; a leg knows its entry and role.
    order_class: str = "simple"
    legs: list[ServerOrder] = field(default_factory=list)
    parent: ServerOrder | None = None
    group_role: str | None = None  # entry | take_profit | stop_loss
    group_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN_STATUSES

    @property
    def filled_avg_price(self) -> Decimal | None:
        if self.filled_qty == 0:
            return None
        return (self.filled_value / self.filled_qty).quantize(Decimal("0.0001"), ROUND_HALF_UP)

    def to_json(self, nested: bool = True) -> dict[str, Any]:
        grouped = {"group_id": self.group_id, "group_role": self.group_role} if self.group_id else {}
        return {
            **grouped,
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at or self.created_at),
            "submitted_at": _iso(self.created_at),
            "filled_at": _iso(self.filled_at),
            "expired_at": _iso(self.expired_at),
            "canceled_at": _iso(self.canceled_at),
            "failed_at": _iso(self.failed_at),
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": self.asset.id,
            "symbol": self.asset.symbol,
            "asset_class": self.asset.asset_class,
            "notional": _text(self.notional),
            "qty": _text(self.qty),
            "filled_qty": _text(self.filled_qty),
            "filled_avg_price": _text(self.filled_avg_price),
            "order_class": self.order_class,
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": ("buy_to_open" if self.side == "buy" else "sell_to_close"),
            "time_in_force": self.time_in_force,
            "limit_price": _text(self.limit_price),
            "stop_price": _text(self.stop_price),
            "status": self.status,
            "extended_hours": self.extended_hours,
            "legs": [leg.to_json() for leg in self.legs] if self.legs and nested else None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }


@dataclass
class _Position:
    asset: ServerAsset
    qty: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)  # total cost basis of what is held


@dataclass
class RecordedRequest:
    api: str  # "trading" | "data"
    method: str
    path: str  # inside the API, e.g. "/v2/orders"
    query: dict[str, list[str]]
    body: Any
    status: int = 0
    user_agent: str = ""  # who sent it (alpaca-py, Alpaca's MCP server, …)
    received: float = 0.0  # time.monotonic() when the request arrived
    answered: float = 0.0  # and when its answer was ready
    connection: str = ""  # the client's address and port: requests sent on one kept-alive connection share it


def sequential_steps(requests: list[RecordedRequest]) -> int:
    """How many round trips one after the other these requests took: requests whose time at the server
    overlaps were in flight together and count as one step. Give the server a `latency` so that requests
    sent together surely overlap here."""
    steps, step_end = 0, float("-inf")
    for request in sorted(requests, key=lambda r: r.received):
        if request.received > step_end:
            steps += 1
            step_end = request.answered
        else:
            step_end = max(step_end, request.answered)
    return steps


@dataclass
class _Injection:
    pattern: str
    method: str | None
    api: str | None
    status: int
    message: str
    code: int
    remaining: int
    query: dict[str, str] | None = None  # only requests whose query holds these values

    def matches(self, api: str, method: str, path: str, query: Mapping[str, str]) -> bool:
        return ((self.api is None or self.api == api) and (self.method is None or self.method == method)
                and fnmatch.fnmatchcase(path, self.pattern)
                and all(query.get(key) == value for key, value in (self.query or {}).items()))


@dataclass
class _Hang:
    seconds: float
    create_order: Literal["before", "after", "never", "later"]


# ----------------------------------------------------------------------------------------------------


class AlpacaContractServer:
    """Alpaca's Trading and Market Data APIs, in memory, checked against their OpenAPI descriptions."""

    api_key = FAKE_API_KEY
    secret_key = FAKE_SECRET_KEY

    def __init__(self, *, cash: Decimal | str | int = Decimal(100_000), market_open: bool = True,
                 clock: Callable[[], datetime] = _utc_now, auto_fill: bool = True,
                 report_fills_on_submit: bool = False):
        """`auto_fill`: marketable orders fill at the quote as they arrive (else only `fill_order` fills).
        `report_fills_on_submit`: POST /v2/orders answers with the order after matching; by default it
        answers as Alpaca does, with the order as accepted (`pending_new`, nothing filled yet)."""
        self._lock = threading.RLock()
        self._clock = clock
        self.auto_fill = auto_fill
        self.report_fills_on_submit = report_fills_on_submit
        self.market_open = market_open
        self.cash = Decimal(cash)
        self.last_equity = self.cash
        self.trading_blocked = False
        self.account_id = str(uuid.uuid4())
        self.assets: dict[str, ServerAsset] = {}
        self._markets: dict[str, _Market] = {}
        self._orders: list[ServerOrder] = []
        self._positions: dict[str, _Position] = {}
        self._injections: list[_Injection] = []
        self._hangs: list[_Hang] = []
        self._late_orders: set[asyncio.Task[None]] = set()  # orders acknowledged late ("later")
        self.requests: list[RecordedRequest] = []
        self.latency = 0.0  # seconds added to every answer (awaited: concurrent requests overlap)
        self.violations: list[str] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self.port: int | None = None
        for symbol, name, exchange, price, fractionable in (
            ("AAPL", "Apple Inc. Common Stock", "NASDAQ", "190.00", True),
            ("MSFT", "Microsoft Corporation Common Stock", "NASDAQ", "410.00", True),
            ("SPY", "SPDR S&P 500 ETF Trust", "ARCA", "520.00", True),
            ("TSLA", "Tesla, Inc. Common Stock", "NASDAQ", "250.00", True),
            ("BRKX", "Whole Shares Only Corp", "NYSE", "80.00", False),
        ):
            self.add_asset(symbol, name=name, exchange=exchange, fractionable=fractionable, price=price)
        self.add_asset("BTC/USD", name="Bitcoin / US Dollar", price="65000.00")
        self.add_asset("ETH/USD", name="Ethereum / US Dollar", price="3200.00")
        self.add_asset("HALTD", name="Halted Holdings (not tradable)", exchange="OTC", tradable=False,
                       price="5.00")

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> AlpacaContractServer:
        contract("trading"), contract("data")  # parse the descriptions before serving
        app = Starlette(routes=[Route("/{api}/{rest:path}", self._endpoint,
                                      methods=["GET", "POST", "DELETE", "PATCH", "PUT"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=2, access_log=False)
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, name="alpaca-contract-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Alpaca contract server did not start")
            time.sleep(0.01)
        self.port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> AlpacaContractServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def trading_url(self) -> str:
        return f"{self.base_url}/trading"

    @property
    def data_url(self) -> str:
        return f"{self.base_url}/data"

    def broker_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for broker.alpaca.AlpacaBroker pointed at this server (fast retries)."""
        kwargs: dict[str, Any] = {"api_key": self.api_key, "secret_key": self.secret_key, "paper": True,
                                  "trading_url": self.trading_url, "data_url": self.data_url,
                                  "timeout": 2.0, "read_retries": 3, "retry_backoff": 0.01}
        kwargs.update(overrides)
        return kwargs

    # -- control API: market -------------------------------------------------------------------------

    def now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def add_asset(self, symbol: str, *, name: str | None = None, exchange: str | None = None,
                  tradable: bool = True, fractionable: bool = True, shortable: bool | None = None,
                  price: Decimal | str | None = None) -> ServerAsset:
        crypto = "/" in symbol
        asset = ServerAsset(symbol=symbol, name=name or symbol, asset_class="crypto" if crypto else "us_equity",
                            exchange=exchange or ("CRYPTO" if crypto else "NYSE"), tradable=tradable,
                            fractionable=fractionable, shortable=(not crypto) if shortable is None else shortable,
                            marginable=not crypto)
        with self._lock:
            self.assets[symbol] = asset
        if price is not None:
            self.set_price(symbol, price)
        return asset

    def set_price(self, symbol: str, price: Decimal | str | float, *, spread: Decimal | str | None = None,
                  as_of: datetime | None = None) -> None:
        """Move the market: last = price, bid/ask around it. Resting orders that become marketable fill."""
        price = Decimal(str(price))
        if spread is None:
            spread = Decimal("0.02") if "/" not in symbol else (price * Decimal("0.0002")).quantize(_CENT)
        half = Decimal(str(spread)) / 2
        self.set_quote(symbol, bid=price - half, ask=price + half, last=price, as_of=as_of)

    def set_quote(self, symbol: str, *, bid: Decimal | str, ask: Decimal | str,
                  last: Decimal | str | None = None, as_of: datetime | None = None) -> None:
        bid_d, ask_d = Decimal(str(bid)), Decimal(str(ask))
        last_d = Decimal(str(last)) if last is not None else (bid_d + ask_d) / 2
        with self._lock:
            previous = self._markets.get(symbol)
            self._markets[symbol] = _Market(
                bid=bid_d, ask=ask_d, last=last_d, as_of=(as_of or self.now()).astimezone(UTC),
                prev_close=previous.prev_close if previous else last_d,
                trade_id=(previous.trade_id + 1) if previous else 1)
            self._match_all()

    def remove_market_data(self, symbol: str) -> None:
        with self._lock:
            self._markets.pop(symbol, None)

    def set_market_open(self, is_open: bool) -> None:
        with self._lock:
            self.market_open = is_open
            if is_open:
                for order in self._orders:
                    if order.status == "accepted":
                        order.status = "new"
                        order.updated_at = self.now()
            self._match_all()

    # -- control API: account and orders -------------------------------------------------------------

    def set_cash(self, amount: Decimal | str | int) -> None:
        with self._lock:
            self.cash = Decimal(str(amount))

    def order(self, ref: str) -> dict[str, Any]:
        """An order as the API shows it, by Alpaca id or client_order_id."""
        with self._lock:
            return self._find(ref).to_json()

    @property
    def orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [o.to_json() for o in self._orders]

    @property
    def positions(self) -> dict[str, Decimal]:
        with self._lock:
            return {symbol: p.qty for symbol, p in self._positions.items() if p.qty != 0}

    def fill_order(self, ref: str, *, qty: Decimal | str | None = None,
                   price: Decimal | str | None = None) -> dict[str, Any]:
        """Fill an open order (all that remains, or `qty` of it: a partial fill) at `price` (default: quote)."""
        with self._lock:
            order = self._find(ref)
            if not order.is_open:
                raise ValueError(f"order {ref} is {order.status}; it cannot fill")
            fill_price = Decimal(str(price)) if price is not None else self._fill_price(order)
            if fill_price is None:
                raise ValueError(f"no market data for {order.asset.symbol}")
            self._fill(order, fill_price, Decimal(str(qty)) if qty is not None else None)
            return order.to_json()

    def cancel_order(self, ref: str) -> dict[str, Any]:
        return self._finish(ref, "canceled")

    def expire_order(self, ref: str) -> dict[str, Any]:
        return self._finish(ref, "expired")

    def reject_order(self, ref: str) -> dict[str, Any]:
        return self._finish(ref, "rejected")

    def _finish(self, ref: str, status: str) -> dict[str, Any]:
        with self._lock:
            order = self._find(ref)
            if not order.is_open:
                raise ValueError(f"order {ref} is {order.status}")
            self._close(order, status)
            return order.to_json()

    # -- control API: failures ------------------------------------------------------------------------

    def fail_next(self, path: str, *, status: int = 500, times: int = 1, method: str | None = None,
                  api: Literal["trading", "data"] | None = None, message: str | None = None,
                  code: int | None = None, query: dict[str, str] | None = None) -> None:
        """The next `times` requests whose API path matches `path` (a glob: "/v2/orders", "/v2/orders/*",
        "/v1beta3/crypto/us/*") and whose query holds `query` (say {"status": "closed"}) are answered `status`
        with Alpaca's error shape, before any other effect."""
        with self._lock:
            self._injections.append(_Injection(
                pattern=path, method=method.upper() if method else None, api=api, status=status,
                message=message or _DEFAULT_MESSAGES.get(status, "error"),
                code=code if code is not None else status * 100_000, remaining=times, query=query))

    def hang_next_submit(self, seconds: float, *,
                         create_order: Literal["before", "after", "never", "later"] = "before") -> None:
        """The next POST /v2/orders answers only after `seconds`. The order is created as the request
        arrives ("before": the answer is lost, the order exists), only after the wait ("after": it appears
        late), or not at all ("never": the request never reached the exchange; answered 504).
        "later": answered 504 at once, and the order becomes visible only `seconds` later (a late
        acknowledgement: the exchange took it, the answer was lost, and lookups find nothing for a while)."""
        with self._lock:
            self._hangs.append(_Hang(seconds, create_order))

    # -- control API: what happened -----------------------------------------------------------------

    def requests_to(self, method: str, path: str, api: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method.upper()
                    and fnmatch.fnmatchcase(r.path, path) and (api is None or r.api == api)]

    def assert_no_violations(self) -> None:
        with self._lock:
            violations = list(self.violations)
        assert not violations, "Alpaca contract violations:\n" + "\n".join(violations)

    # -- HTTP ------------------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        api = request.path_params["api"]
        path = "/" + request.path_params["rest"]
        body = await request.body()
        try:
            parsed_body = json.loads(body) if body else None
        except ValueError:
            parsed_body = body.decode("utf-8", "replace")
        record = RecordedRequest(api=api, method=request.method, path=path,
                                 query={k: request.query_params.getlist(k) for k in request.query_params},
                                 body=parsed_body, user_agent=request.headers.get("user-agent", ""),
                                 received=time.monotonic(),
                                 connection=f"{request.client.host}:{request.client.port}" if request.client else "")
        with self._lock:
            self.requests.append(record)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if api not in _SPEC_FILES:
            record.status, record.answered = 404, time.monotonic()
            return self._json(404, {"code": 40410000, "message": "not found"})

        openapi_request = _RawPathOpenAPIRequest(request, body)
        errors = [_describe(e) for e in contract(api).iter_request_errors(openapi_request)]
        if errors:
            self._violation(f"request {request.method} /{api}{path}: " + "; ".join(errors))
            response = self._json(400, {"code": 40010000,
                                        "message": "request does not match Alpaca's OpenAPI description: "
                                                   + "; ".join(errors)[:500]})
        elif (request.headers.get("APCA-API-KEY-ID") != self.api_key
              or request.headers.get("APCA-API-SECRET-KEY") != self.secret_key):
            response = self._json(401, {"code": 40110000, "message": "request is not authorized"})
        else:
            response = await self._dispatch(api, request.method, path, request, parsed_body)
        response = self._checked_response(api, openapi_request, response, f"{request.method} /{api}{path}",
                                          against_description=not errors)
        record.status = response.status_code
        record.answered = time.monotonic()
        return response

    def _checked_response(self, api: str, openapi_request: _RawPathOpenAPIRequest, response: Response,
                          what: str, *, against_description: bool) -> Response:
        """The response against the description of the operation (unless the request matched none: then
        only the error shape), and every error response against Alpaca's `Error` schema."""
        problems = []
        if against_description:
            for error in contract(api).iter_response_errors(openapi_request, StarletteOpenAPIResponse(response)):
                if isinstance(error, ResponseNotFound) and response.status_code >= 400:
                    continue  # undocumented error status: held to Alpaca's Error shape below
                problems.append(_describe(error))
        if response.status_code >= 400:
            try:
                payload = json.loads(bytes(response.body))
                problems += [f"error body: {e.message}" for e in _error_validator().iter_errors(payload)]
            except ValueError:
                problems.append("error body is not JSON")
        if not problems:
            return response
        self._violation(f"response {what} {response.status_code}: " + "; ".join(problems))
        return self._json(500, {"code": 50000000, "message": "the contract server sent a response that does "
                                                             "not match Alpaca's OpenAPI description"})

    def _violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    @staticmethod
    def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        if status == 204:
            return Response(status_code=204)
        return Response(json.dumps(payload), status_code=status, media_type="application/json",
                        headers=headers)

    def _error(self, status: int, code: int, message: str) -> Response:
        headers = None
        if status == 429:
            headers = {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0",
                       "X-RateLimit-Reset": str(int(time.time()) + 1)}
        return self._json(status, {"code": code, "message": message}, headers)

    async def _dispatch(self, api: str, method: str, path: str, request: Request, body: Any) -> Response:
        with self._lock:
            for injection in self._injections:
                if injection.remaining > 0 and injection.matches(api, method, path, request.query_params):
                    injection.remaining -= 1
                    return self._error(injection.status, injection.code, injection.message)
            hang = self._hangs.pop(0) if (api, method, path) == ("trading", "POST", "/v2/orders") and \
                self._hangs else None
        query = request.query_params
        if hang is not None:
            return await self._hanging_submit(hang, body)
        for route_api, route_method, pattern, handler in self._routes():
            if route_api == api and route_method == method:
                match = re.fullmatch(pattern, path)
                if match:
                    try:
                        with self._lock:
                            status, payload = handler(query=query, body=body, **match.groupdict())
                    except _ApiError as error:
                        return self._error(error.status, error.code, error.message)
                    return self._json(status, payload)
        return self._error(501, 50100000, f"{method} {path} is not implemented by the contract server")

    async def _hanging_submit(self, hang: _Hang, body: Any) -> Response:
        result: tuple[int, Any] | _ApiError | None = None

        def create() -> tuple[int, Any] | _ApiError:
            try:
                with self._lock:
                    return self._post_order(body=body)
            except _ApiError as error:
                return error

        if hang.create_order == "later":
            async def create_later() -> None:
                deadline = time.monotonic() + hang.seconds
                while time.monotonic() < deadline and not self._stopping.is_set():
                    await asyncio.sleep(0.02)
                if not self._stopping.is_set():
                    create()

            self._late_orders.add(task := asyncio.get_running_loop().create_task(create_later()))
            task.add_done_callback(self._late_orders.discard)
            return self._error(504, 50400000, "gateway timeout")
        if hang.create_order == "before":
            result = create()
        deadline = time.monotonic() + hang.seconds
        while time.monotonic() < deadline and not self._stopping.is_set():
            await asyncio.sleep(0.02)
        if hang.create_order == "after":
            result = create()
        if result is None:
            return self._error(504, 50400000, "gateway timeout")
        if isinstance(result, _ApiError):
            return self._error(result.status, result.code, result.message)
        return self._json(*result)

    def _routes(self) -> list[tuple[str, str, str, Callable[..., tuple[int, Any]]]]:
        return [
            ("trading", "GET", r"/v2/account", self._get_account),
            ("trading", "GET", r"/v2/assets", self._list_assets),
            ("trading", "GET", r"/v2/assets/(?P<symbol>.+)", self._get_asset),
            ("trading", "GET", r"/v2/clock", self._get_clock),
            ("trading", "POST", r"/v2/orders", self._post_order),
            ("trading", "GET", r"/v2/orders", self._list_orders),
            ("trading", "GET", r"/v2/orders:by_client_order_id", self._get_order_by_client_id),
            ("trading", "GET", r"/v2/orders/(?P<order_id>[^/]+)", self._get_order),
            ("trading", "DELETE", r"/v2/orders/(?P<order_id>[^/]+)", self._delete_order),
            ("trading", "GET", r"/v2/positions", self._list_positions),
            ("trading", "GET", r"/v2/positions/(?P<symbol>.+)", self._get_position),
            ("data", "GET", r"/v2/stocks/snapshots", self._stock_snapshots),
            ("data", "GET", r"/v2/stocks/quotes/latest", self._stock_latest_quotes),
            ("data", "GET", r"/v2/stocks/bars", self._stock_bars),
            ("data", "GET", r"/v1beta3/crypto/(?P<loc>[^/]+)/snapshots", self._crypto_snapshots),
            ("data", "GET", r"/v1beta3/crypto/(?P<loc>[^/]+)/latest/quotes", self._crypto_latest_quotes),
            ("data", "GET", r"/v1beta3/crypto/(?P<loc>[^/]+)/bars", self._crypto_bars),
        ]

    # -- trading: account, assets, clock, positions ----------------------------------------------------

    def _reserved_for_buys(self) -> Decimal:
        reserved = Decimal(0)
        for order in self._orders:
            if order.is_open and order.side == "buy":
                reserved += self._open_cost(order)
        return reserved

    def _open_cost(self, order: ServerOrder) -> Decimal:
        if order.notional is not None:
            return max(order.notional - order.filled_value, Decimal(0))
        assert order.qty is not None
        remaining = order.qty - order.filled_qty
        market = self._markets.get(order.asset.symbol)
        price = order.limit_price or order.stop_price or (market.ask if market else Decimal(0))
        return (remaining * price).quantize(_CENT, ROUND_HALF_UP)

    def _market_value(self) -> Decimal:
        total = Decimal(0)
        for position in self._positions.values():
            market = self._markets.get(position.asset.symbol)
            price = market.last if market else (position.cost / position.qty if position.qty else Decimal(0))
            total += position.qty * price
        return total.quantize(_CENT, ROUND_HALF_UP)

    def _get_account(self, **_: Any) -> tuple[int, Any]:
        long_value = self._market_value()
        equity = self.cash + long_value
        buying_power = max(self.cash - self._reserved_for_buys(), Decimal(0))
        money = {k: _text(v.quantize(_CENT, ROUND_HALF_UP)) for k, v in {
            "cash": self.cash, "equity": equity, "portfolio_value": equity, "buying_power": buying_power,
            "regt_buying_power": buying_power, "non_marginable_buying_power": buying_power,
            "options_buying_power": buying_power, "long_market_value": long_value,
            "last_equity": self.last_equity}.items()}
        return 200, {
            "id": self.account_id, "account_number": "PA3CONTRACT0", "status": "ACTIVE",
            "crypto_status": "ACTIVE", "currency": "USD", **money, "short_market_value": "0",
            "initial_margin": "0", "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0",
            "multiplier": "1", "shorting_enabled": False, "pattern_day_trader": False,
            "trading_blocked": self.trading_blocked, "transfers_blocked": False, "account_blocked": False,
            "trade_suspended_by_user": False, "created_at": "2024-01-02T15:04:05.123456Z",
            "daytrade_count": 0, "accrued_fees": "0", "pending_transfer_in": "0", "pending_transfer_out": "0",
            "intraday_adjustments": "0", "pending_reg_taf_fees": "0", "balance_asof": date.today().isoformat(),
            "options_approved_level": 0, "options_trading_level": 0,
        }

    def _asset_by_path(self, symbol: str) -> ServerAsset | None:
        for asset in self.assets.values():
            if symbol in (asset.symbol, asset.legacy_symbol, asset.id):
                return asset
        return None

    def _list_assets(self, query: Any, **_: Any) -> tuple[int, Any]:
        wanted_class = query.get("asset_class")
        return 200, [a.to_json() for a in self.assets.values()
                     if wanted_class is None or a.asset_class == wanted_class]

    def _get_asset(self, symbol: str, **_: Any) -> tuple[int, Any]:
        asset = self._asset_by_path(symbol)
        if asset is None:
            raise _ApiError(404, 40410000, f"asset not found for {symbol}")
        return 200, asset.to_json()

    def _get_clock(self, **_: Any) -> tuple[int, Any]:
        now = self.now().astimezone(NEW_YORK)
        today_open = now.replace(hour=9, minute=30, second=0, microsecond=0)
        today_close = now.replace(hour=16, minute=0, second=0, microsecond=0)

        def next_weekday(day: datetime) -> datetime:
            day += timedelta(days=1)
            while day.weekday() >= 5:
                day += timedelta(days=1)
            return day

        next_open = today_open if now < today_open and now.weekday() < 5 else next_weekday(today_open)
        next_close = today_close if now < today_close and now.weekday() < 5 else next_weekday(today_close)
        return 200, {"timestamp": now.isoformat(), "is_open": self.market_open,
                     "next_open": next_open.isoformat(), "next_close": next_close.isoformat()}

    def _position_json(self, position: _Position) -> dict[str, Any]:
        market = self._markets.get(position.asset.symbol)
        avg = position.cost / position.qty
        price = market.last if market else avg
        prev = market.prev_close if market else avg
        value = position.qty * price
        pl = value - position.cost
        intraday = position.qty * (price - prev)

        def money(value: Decimal) -> str | None:
            return _text(value.quantize(_CENT, ROUND_HALF_UP))

        def ratio(value: Decimal) -> str | None:
            return _text(value.quantize(Decimal("0.0001"), ROUND_HALF_UP))

        return {
            "asset_id": position.asset.id,
            # Alpaca names crypto positions in the old symbology: BTCUSD.
            "symbol": position.asset.legacy_symbol,
            "exchange": position.asset.exchange, "asset_class": position.asset.asset_class,
            "asset_marginable": position.asset.marginable,
            "qty": _text(position.qty), "qty_available": _text(position.qty - self._held_for_sells(position.asset)),
            "avg_entry_price": _text(avg.quantize(Decimal("0.0001"), ROUND_HALF_UP)), "side": "long",
            "market_value": money(value), "cost_basis": money(position.cost),
            "unrealized_pl": money(pl), "unrealized_plpc": ratio(pl / position.cost if position.cost else Decimal(0)),
            "unrealized_intraday_pl": money(intraday),
            "unrealized_intraday_plpc": ratio(intraday / (position.qty * prev) if prev else Decimal(0)),
            "current_price": _text(price), "lastday_price": _text(prev),
            "change_today": ratio((price - prev) / prev if prev else Decimal(0)),
        }

    def _list_positions(self, **_: Any) -> tuple[int, Any]:
        return 200, [self._position_json(p) for _, p in sorted(self._positions.items()) if p.qty > 0]

    def _get_position(self, symbol: str, **_: Any) -> tuple[int, Any]:
        asset = self._asset_by_path(symbol)
        position = self._positions.get(asset.symbol) if asset else None
        if position is None or position.qty <= 0:
            raise _ApiError(404, 40410000, "position does not exist")
        return 200, self._position_json(position)

    # -- trading: orders -------------------------------------------------------------------------------

    def _find(self, ref: str) -> ServerOrder:
        for order in self._orders:
            if ref in (order.id, order.client_order_id):
                return order
        raise KeyError(f"no order {ref!r} at the contract server")

    def _held_for_sells(self, asset: ServerAsset) -> Decimal:
        held = Decimal(0)
        groups: set[str] = set()
        for order in self._orders:
            if order.is_open and order.side == "sell" and order.asset is asset and order.qty is not None:
                if order.parent is not None:  # OCO legs hold the shares once
                    if order.parent.id in groups:
                        continue
                    groups.add(order.parent.id)
                held += order.qty - order.filled_qty
        return held

    def _post_order(self, body: Any, **_: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            raise _ApiError(422, 40010001, "request body format is invalid")
        symbol = str(body.get("symbol") or "")
        asset = self._asset_by_path(symbol) if symbol else None
        if not symbol:
            raise _ApiError(422, 40010001, "symbol is required")
        if asset is None:
            raise _ApiError(422, 40010001, f"asset \"{symbol}\" not found")
        if not asset.tradable:
            raise _ApiError(422, 42210000, f"asset \"{symbol}\" cannot be traded")
        side, order_type, tif = body.get("side"), body.get("type"), body.get("time_in_force")
        if side not in ("buy", "sell"):
            raise _ApiError(422, 40010001, "side is required")
        qty = _parse_decimal(body.get("qty"), "qty")
        notional = _parse_decimal(body.get("notional"), "notional")
        limit_price = _parse_decimal(body.get("limit_price"), "limit_price")
        stop_price = _parse_decimal(body.get("stop_price"), "stop_price")
        extended = bool(body.get("extended_hours", False))
        if (qty is None) == (notional is None):
            raise _ApiError(422, 40010001, "qty or notional is required, but not both")
        for name, value in (("qty", qty), ("notional", notional), ("limit_price", limit_price),
                            ("stop_price", stop_price)):
            if value is not None and value <= 0:
                raise _ApiError(422, 40010001, f"{name} must be > 0")
        if qty is not None and qty != qty.quantize(_QTY_STEP, ROUND_DOWN):
            raise _ApiError(422, 40010001, "qty must have at most 9 decimal places")
        if order_type not in ("market", "limit", "stop", "stop_limit"):
            raise _ApiError(422, 40010001, f"order type {order_type} is not supported")
        if order_type in ("limit", "stop_limit") and limit_price is None:
            raise _ApiError(422, 40010001, "limit_price is required for limit and stop_limit orders")
        if order_type in ("stop", "stop_limit") and stop_price is None:
            raise _ApiError(422, 40010001, "stop_price is required for stop and stop_limit orders")
        if order_type in ("market", "stop") and limit_price is not None:
            raise _ApiError(422, 40010001, "limit_price is not allowed for market and stop orders")
        if order_type in ("market", "limit") and stop_price is not None:
            raise _ApiError(422, 40010001, "stop_price is not allowed for market and limit orders")
        if asset.is_crypto:
            if tif not in ("gtc", "ioc"):
                raise _ApiError(422, 42210000, "invalid crypto time_in_force")
            if order_type == "stop":
                raise _ApiError(422, 42210000, "invalid order type for crypto order")
        else:
            if notional is not None and (order_type != "market" or tif != "day"):
                raise _ApiError(422, 42210000, "notional orders are only supported for market orders with "
                                               "time_in_force day")
            if qty is not None and qty != qty.to_integral_value():
                if not asset.fractionable:
                    raise _ApiError(422, 42210000, f"asset {symbol} is not fractionable")
                if tif != "day":
                    raise _ApiError(422, 42210000, "fractional orders must be DAY orders")
            if notional is not None and not asset.fractionable:
                raise _ApiError(422, 42210000, f"asset {symbol} is not fractionable")
        if extended and (order_type != "limit" or tif not in ("day", "gtc")):
            raise _ApiError(422, 42210000, "extended hours order must be DAY or GTC limit orders")
        order_class, take_profit, stop_loss = self._bracket_request(body, asset, side, order_type, tif, qty,
                                                                    limit_price, extended)
        client_order_id = body.get("client_order_id") or str(uuid.uuid4())
        if any(o.client_order_id == client_order_id for o in self._orders):
            raise _ApiError(422, 40010001, "client_order_id must be unique")
        market = self._markets.get(asset.symbol)
        if side == "buy":
            if notional is not None:
                cost = notional
            else:
                assert qty is not None
                price = limit_price or stop_price or (market.ask if market else None)
                if price is None:
                    raise _ApiError(422, 42210000, f"no market price for {symbol}")
                cost = qty * price
            available = self.cash - self._reserved_for_buys()
            if cost > available:
                raise _ApiError(403, 40310000, "insufficient buying power")
        else:
            position = self._positions.get(asset.symbol)
            held = position.qty if position else Decimal(0)
            available_qty = held - self._held_for_sells(asset)
            wanted = qty
            if wanted is None:
                assert notional is not None
                bid = market.bid if market else None
                if bid is None or bid <= 0:
                    raise _ApiError(422, 42210000, f"no market price for {symbol}")
                wanted = (notional / bid).quantize(_QTY_STEP, ROUND_DOWN)
            if wanted > available_qty:
                raise _ApiError(403, 40310000, f"insufficient qty available for order (requested: "
                                               f"{_text(wanted)}, available: {_text(available_qty)})")
        now = self.now()
        order = ServerOrder(
            id=str(uuid.uuid4()), client_order_id=client_order_id, asset=asset, side=side,
            type=order_type, time_in_force=tif, qty=qty, notional=notional, limit_price=limit_price,
            stop_price=stop_price, extended_hours=extended, status="pending_new", created_at=now)
        self._orders.append(order)
        if order_class in ("bracket", "oto"):
            self._attach_legs(order, order_class, take_profit, stop_loss)
        accepted = order.to_json()
        if not asset.is_crypto and not self.market_open and not extended:
            order.status = "accepted"
            accepted = order.to_json()
        else:
            order.status = "new"
            self._match(order, arriving=True)
        return 200, (order.to_json() if self.report_fills_on_submit else accepted)

    def _list_orders(self, query: Any, **_: Any) -> tuple[int, Any]:
        status = query.get("status", "open")
        limit = min(int(query.get("limit", 50)), 500)
        direction = query.get("direction", "desc")
        after = _parse_time(query["after"], "after") if "after" in query else None
        until = _parse_time(query["until"], "until") if "until" in query else None
        symbols = set(query["symbols"].split(",")) if query.get("symbols") else None
        side = query.get("side")
        before_id, after_id = query.get("before_order_id"), query.get("after_order_id")
        if before_id and after_id:
            raise _ApiError(422, 42210000, "before_order_id and after_order_id are mutually exclusive")
        if (before_id or after_id) and (after or until):
            raise _ApiError(422, 42210000, "before_order_id/after_order_id cannot be combined with after/until")
        # By creation, ties in arrival order (a stable sort keeps it; no index() per order: a long run lists
        # thousands of orders every poll)
        orders = sorted(self._orders, key=lambda o: o.created_at)
        if before_id or after_id:
            anchor_id = before_id or after_id
            positions = [i for i, o in enumerate(orders) if o.id == anchor_id]
            if not positions:
                raise _ApiError(422, 42210000, f"order {anchor_id} not found")
            orders = orders[: positions[0]] if before_id else orders[positions[0] + 1:]
        nested = str(query.get("nested", "false")).lower() == "true"
        selected = [
            o for o in orders
            if (not nested or o.parent is None)  # nested: legs are shown inside their entry
            and (status == "all" or (status == "open") == o.is_open
                 or (nested and status == "open" and any(leg.is_open for leg in o.legs)))
            and (after is None or o.created_at > after) and (until is None or o.created_at < until)
            and (symbols is None or o.asset.symbol in symbols or o.asset.legacy_symbol in symbols)
            and (side is None or o.side == side)
        ]
        if direction == "desc":
            selected = selected[::-1][:limit]
        elif before_id:
            selected = selected[-limit:]
        else:
            selected = selected[:limit]
        return 200, [o.to_json(nested) for o in selected]

    def _bracket_request(self, body: dict[str, Any], asset: ServerAsset, side: str, order_type: Any, tif: Any,
                         qty: Decimal | None, limit_price: Decimal | None, extended: bool
                         ) -> tuple[str, Decimal | None, tuple[Decimal, Decimal | None] | None]:
        """Alpaca's rules for bracket and OTO orders: (order class, take-profit limit, (stop, stop-limit))."""
        order_class = body.get("order_class") or "simple"
        tp_raw, sl_raw = body.get("take_profit"), body.get("stop_loss")
        if order_class == "simple":
            if tp_raw is not None or sl_raw is not None:
                raise _ApiError(422, 40010001, "take_profit and stop_loss need order_class bracket, oto or oco")
            return "simple", None, None
        if order_class not in ("bracket", "oto"):
            raise _ApiError(422, 42210000, f"order_class {order_class} is not supported by this contract server")
        if asset.is_crypto:
            raise _ApiError(422, 42210000, "crypto orders not allowed for advanced order_class")
        take_profit = _parse_decimal((tp_raw or {}).get("limit_price"), "take_profit.limit_price")
        stop = _parse_decimal((sl_raw or {}).get("stop_price"), "stop_loss.stop_price")
        stop_limit = _parse_decimal((sl_raw or {}).get("limit_price"), "stop_loss.limit_price")
        if order_class == "bracket" and (take_profit is None or stop is None):
            raise _ApiError(422, 40010001, "bracket orders need take_profit.limit_price and stop_loss.stop_price")
        if order_class == "oto" and (take_profit is None) == (stop is None):
            raise _ApiError(422, 40010001, "oto orders need exactly one of take_profit and stop_loss")
        if sl_raw is not None and stop is None:
            raise _ApiError(422, 40010001, "stop_loss.stop_price is required")
        if order_type not in ("market", "limit") or tif not in ("day", "gtc") or extended:
            raise _ApiError(422, 42210000, "bracket orders must be market or limit orders, day or gtc, "
                                           "regular hours")
        if qty is None or qty != qty.to_integral_value():
            raise _ApiError(422, 42210000, "fractional orders cannot be bracket orders")
        market = self._markets.get(asset.symbol)
        base = limit_price if order_type == "limit" else (market.last if market else None)
        if base is None:
            raise _ApiError(422, 42210000, f"no market price for {asset.symbol}")
        buy = side == "buy"
        if take_profit is not None and ((take_profit < base + _CENT) if buy else (take_profit > base - _CENT)):
            raise _ApiError(422, 42210000, f"take_profit.limit_price must be {'>=' if buy else '<='} base_price "
                                           f"{'+' if buy else '-'} 0.01")
        if stop is not None and ((stop > base - _CENT) if buy else (stop < base + _CENT)):
            raise _ApiError(422, 42210000, f"stop_loss.stop_price must be {'<=' if buy else '>='} base_price "
                                           f"{'-' if buy else '+'} 0.01")
        return order_class, take_profit, (stop, stop_limit) if stop is not None else None

    def _attach_legs(self, entry: ServerOrder, order_class: str, take_profit: Decimal | None,
                     stop_loss: tuple[Decimal, Decimal | None] | None) -> None:
        """The exits, held until the entry fills."""
        entry.order_class, entry.group_id, entry.group_role = order_class, str(uuid.uuid4()), "entry"
        exit_side: Literal["buy", "sell"] = "sell" if entry.side == "buy" else "buy"

        def leg(role: str, order_type: str, limit: Decimal | None, stop: Decimal | None) -> ServerOrder:
            return ServerOrder(
                id=str(uuid.uuid4()), client_order_id=str(uuid.uuid4()), asset=entry.asset, side=exit_side,
                type=order_type, time_in_force=entry.time_in_force, qty=entry.qty, notional=None, limit_price=limit,
                stop_price=stop, extended_hours=False, status="held", created_at=entry.created_at,
                order_class=order_class, parent=entry, group_role=role, group_id=entry.group_id)

        if take_profit is not None:
            entry.legs.append(leg("take_profit", "limit", take_profit, None))
        if stop_loss is not None:
            stop, limit = stop_loss
            entry.legs.append(leg("stop_loss", "stop" if limit is None else "stop_limit", limit, stop))
        self._orders.extend(entry.legs)

    def _get_order_by_client_id(self, query: Any, **_: Any) -> tuple[int, Any]:
        client_order_id = query["client_order_id"]
        for order in self._orders:
            if order.client_order_id == client_order_id:
                return 200, order.to_json(nested=False)  # this lookup has no nested view at Alpaca
        raise _ApiError(404, 40410000, "order not found")

    def _get_order(self, order_id: str, query: Any = None, **_: Any) -> tuple[int, Any]:
        nested = str((query or {}).get("nested", "false")).lower() == "true"
        for order in self._orders:
            if order.id == order_id:
                return 200, order.to_json(nested)
        raise _ApiError(404, 40410000, "order not found")

    def _delete_order(self, order_id: str, **_: Any) -> tuple[int, Any]:
        for order in self._orders:
            if order.id == order_id:
                if not order.is_open:
                    raise _ApiError(422, 42210000, "order is not cancelable")
                self._close(order, "canceled")
                return 204, None
        raise _ApiError(404, 40410000, "order not found")

    # -- matching ------------------------------------------------------------------------------------

    def _close(self, order: ServerOrder, status: str) -> None:
        now = self.now()
        order.status = status
        order.updated_at = now
        if status == "canceled":
            order.canceled_at = now
        elif status == "expired":
            order.expired_at = now
        elif status == "rejected":
            order.failed_at = now
        if order.filled_qty == 0:
            for leg in order.legs:  # nothing to protect
                if leg.is_open:
                    self._close(leg, "canceled")

    def _fill_price(self, order: ServerOrder) -> Decimal | None:
        market = self._markets.get(order.asset.symbol)
        if market is None:
            return None
        price = market.ask if order.side == "buy" else market.bid
        return price if price > 0 else None

    def _tradable_now(self, order: ServerOrder) -> bool:
        return order.asset.is_crypto or self.market_open

    def _marketable(self, order: ServerOrder, market: _Market) -> bool:
        if order.type in ("stop", "stop_limit") and not order.triggered:
            stop = order.stop_price
            assert stop is not None
            crossed = market.last >= stop if order.side == "buy" else market.last <= stop
            if not crossed:
                return False
            order.triggered = True
        if order.type in ("limit", "stop_limit"):
            assert order.limit_price is not None
            return market.ask <= order.limit_price if order.side == "buy" else market.bid >= order.limit_price
        return True

    def _match(self, order: ServerOrder, arriving: bool = False) -> None:
        if not order.is_open or order.status in ("accepted", "held") or not self._tradable_now(order):
            return
        market = self._markets.get(order.asset.symbol)
        filled = False
        if self.auto_fill and market is not None and self._marketable(order, market):
            price = self._fill_price(order)
            if price is not None:
                self._fill(order, price, None)
                filled = True
        if arriving and not filled and order.time_in_force in ("ioc", "fok"):
            self._close(order, "canceled")

    def _match_all(self) -> None:
        for order in list(self._orders):
            self._match(order)

    def _fill(self, order: ServerOrder, price: Decimal, qty: Decimal | None) -> None:
        if order.notional is not None:
            remaining_value = order.notional - order.filled_value
            full = (remaining_value / price).quantize(_QTY_STEP, ROUND_DOWN)
        else:
            assert order.qty is not None
            full = order.qty - order.filled_qty
        fill_qty = full if qty is None else min(qty, full)
        if fill_qty <= 0:
            raise ValueError("nothing to fill")
        value = fill_qty * price
        if order.notional is not None and qty is None:
            value = order.notional - order.filled_value  # a notional order spends exactly its notional
        position = self._positions.setdefault(order.asset.symbol, _Position(order.asset))
        if order.side == "buy":
            self.cash -= value
            position.qty += fill_qty
            position.cost += value
        else:
            if position.qty > 0:
                position.cost -= position.cost * min(fill_qty, position.qty) / position.qty
            position.qty -= fill_qty
            self.cash += value
            if position.qty <= 0:
                self._positions.pop(order.asset.symbol, None)
        self.cash = self.cash.quantize(Decimal("0.000000001"))
        now = self.now()
        order.filled_qty += fill_qty
        order.filled_value += value
        order.updated_at = now
        done = fill_qty == full
        order.status = "filled" if done else "partially_filled"
        if done:
            order.filled_at = now
            for leg in order.legs:  # the entry filled: its exits start working
                if leg.status == "held":
                    leg.status, leg.updated_at = "new", now
        if order.parent is not None:  # one cancels the other
            for sibling in order.parent.legs:
                if sibling is not order and sibling.is_open:
                    self._close(sibling, "canceled")

    # -- market data -----------------------------------------------------------------------------------

    def _symbols(self, query: Any, crypto: bool) -> list[str]:
        symbols = [s.strip() for s in query["symbols"].split(",") if s.strip()]
        for symbol in symbols:
            if ("/" in symbol) != crypto:
                raise _ApiError(400, 40010001, f"invalid symbol: {symbol}")
        return symbols

    @staticmethod
    def _check_loc(loc: str) -> None:
        if loc != "us":
            raise _ApiError(400, 40010001, f"unsupported crypto location: {loc}")

    def _quote_json(self, market: _Market, crypto: bool) -> dict[str, Any]:
        if crypto:
            return {"t": _iso(market.as_of), "bp": _num(market.bid), "bs": 1.25, "ap": _num(market.ask),
                    "as": 0.8}
        return {"t": _iso(market.as_of), "bx": "V", "bp": _num(market.bid), "bs": 2, "ax": "V",
                "ap": _num(market.ask), "as": 3, "c": ["R"], "z": "C"}

    def _trade_json(self, market: _Market, crypto: bool) -> dict[str, Any]:
        if crypto:
            return {"t": _iso(market.as_of), "p": _num(market.last), "s": 0.05, "i": market.trade_id,
                    "tks": "B"}
        return {"t": _iso(market.as_of), "x": "V", "p": _num(market.last), "s": 100, "i": market.trade_id,
                "c": ["@"], "z": "C"}

    @staticmethod
    def _simple_bar(start: datetime, open_: Decimal, close: Decimal, crypto: bool) -> dict[str, Any]:
        high, low = max(open_, close), min(open_, close)
        return {"t": _iso(start), "o": _num(open_), "h": _num(high), "l": _num(low), "c": _num(close),
                "v": 12.5 if crypto else 1200, "n": 40, "vw": _num(((high + low + close) / 3).quantize(_CENT))}

    def _snapshot_json(self, symbol: str, market: _Market, crypto: bool) -> dict[str, Any]:
        now = self.now()
        zone = CHICAGO if crypto else NEW_YORK
        day_start = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        prev_day = day_start - timedelta(days=1)
        while not crypto and prev_day.weekday() >= 5:
            prev_day -= timedelta(days=1)
        return {
            "latestTrade": self._trade_json(market, crypto),
            "latestQuote": self._quote_json(market, crypto),
            "minuteBar": self._simple_bar(market.as_of.replace(second=0, microsecond=0), market.last,
                                          market.last, crypto),
            "dailyBar": self._simple_bar(day_start.astimezone(UTC), market.prev_close, market.last, crypto),
            "prevDailyBar": self._simple_bar(prev_day.astimezone(UTC), market.prev_close, market.prev_close,
                                             crypto),
        }

    def _known_markets(self, symbols: list[str]) -> Iterator[tuple[str, _Market]]:
        for symbol in symbols:
            market = self._markets.get(symbol)
            if market is not None and symbol in self.assets:
                yield symbol, market

    def _stock_snapshots(self, query: Any, **_: Any) -> tuple[int, Any]:
        symbols = self._symbols(query, crypto=False)
        return 200, {s: self._snapshot_json(s, m, False) for s, m in self._known_markets(symbols)}

    def _crypto_snapshots(self, query: Any, loc: str, **_: Any) -> tuple[int, Any]:
        self._check_loc(loc)
        symbols = self._symbols(query, crypto=True)
        return 200, {"snapshots": {s: self._snapshot_json(s, m, True) for s, m in self._known_markets(symbols)}}

    def _stock_latest_quotes(self, query: Any, **_: Any) -> tuple[int, Any]:
        symbols = self._symbols(query, crypto=False)
        return 200, {"quotes": {s: self._quote_json(m, False) for s, m in self._known_markets(symbols)}}

    def _crypto_latest_quotes(self, query: Any, loc: str, **_: Any) -> tuple[int, Any]:
        self._check_loc(loc)
        symbols = self._symbols(query, crypto=True)
        return 200, {"quotes": {s: self._quote_json(m, True) for s, m in self._known_markets(symbols)}}

    def _stock_bars(self, query: Any, **_: Any) -> tuple[int, Any]:
        return 200, self._bars(query, crypto=False)

    def _crypto_bars(self, query: Any, loc: str, **_: Any) -> tuple[int, Any]:
        self._check_loc(loc)
        return 200, self._bars(query, crypto=True)

    def _bars(self, query: Any, crypto: bool) -> dict[str, Any]:
        symbols = sorted(set(self._symbols(query, crypto)))
        match = re.fullmatch(r"(\d+)(Min|T|Hour|H|Day|D)", query["timeframe"])
        if not match:
            raise _ApiError(400, 42210000, f"invalid timeframe: {query['timeframe']}")
        amount, unit = int(match.group(1)), match.group(2)
        if ((unit in ("Min", "T") and not 1 <= amount <= 59) or (unit in ("Hour", "H") and not 1 <= amount <= 23)
                or (unit in ("Day", "D") and amount != 1)):
            raise _ApiError(400, 42210000, f"invalid timeframe: {query['timeframe']}")
        step = timedelta(minutes=amount) if unit in ("Min", "T") else (
            timedelta(hours=amount) if unit in ("Hour", "H") else timedelta(days=1))
        now = self.now()
        start = _parse_time(query["start"], "start") if "start" in query else (
            now.astimezone(NEW_YORK).replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC))
        end = _parse_time(query["end"], "end") if "end" in query else now
        if end < start:
            raise _ApiError(400, 42210000, "end should not be before start")
        limit = int(query.get("limit", 1000))
        descending = query.get("sort", "asc") == "desc"
        everything: list[tuple[str, dict[str, Any]]] = []
        for symbol in symbols:
            market = self._markets.get(symbol)
            if market is None or symbol not in self.assets:
                continue
            bars = self._generate_bars(symbol, market, step, unit in ("Day", "D"), start, end, crypto)
            everything += [(symbol, b) for b in (bars[::-1] if descending else bars)]
        offset = int(base64.b64decode(query["page_token"]).decode()) if query.get("page_token") else 0
        page = everything[offset: offset + limit]
        next_token = (base64.b64encode(str(offset + limit).encode()).decode()
                      if offset + limit < len(everything) else None)
        result: dict[str, list[dict[str, Any]]] = {}
        for symbol, bar in page:
            result.setdefault(symbol, []).append(bar)
        return {"bars": result, "next_page_token": next_token}

    @staticmethod
    def _bar_starts(step: timedelta, daily: bool, start: datetime, until: datetime,
                    crypto: bool) -> list[datetime]:
        """Bar start times in [start, until], oldest first: around the clock for crypto; for stocks only
        weekdays, and intraday only the regular session (hourly bars start 9:00–15:00 New York)."""
        starts: list[datetime] = []
        if not daily and crypto:
            seconds = int(step.total_seconds())
            moment = datetime.fromtimestamp(-(-int(start.timestamp()) // seconds) * seconds, UTC)
            while moment <= until:
                starts.append(moment)
                moment += step
            return starts
        zone = CHICAGO if crypto else NEW_YORK
        day = start.astimezone(zone).date()
        last_day = until.astimezone(zone).date()
        while day <= last_day:
            if crypto or day.weekday() < 5:
                if daily:
                    moments = [datetime(day.year, day.month, day.day, tzinfo=zone)]
                else:
                    session = datetime(day.year, day.month, day.day, 9, 0 if step >= timedelta(hours=1) else 30,
                                       tzinfo=zone)
                    close = datetime(day.year, day.month, day.day, 16, tzinfo=zone)
                    moments = []
                    while session < close:
                        moments.append(session)
                        session += step
                starts += [m.astimezone(UTC) for m in moments if start <= m <= until]
            day += timedelta(days=1)
        return starts

    def _generate_bars(self, symbol: str, market: _Market, step: timedelta, daily: bool, start: datetime,
                       end: datetime, crypto: bool) -> list[dict[str, Any]]:
        """Deterministic bars: a random walk backwards from the current price (the newest bar closes at
        the last trade), so bars are stable for a given moment and price."""
        now = self.now()
        starts = self._bar_starts(step, daily, start, now, crypto)
        if len(starts) > 200_000:
            raise _ApiError(422, 42210000, "requested range is too large for the contract server")
        tf = f"{int(step.total_seconds())}s"
        closes: list[Decimal] = [Decimal(0)] * len(starts)
        opens: list[Decimal] = [Decimal(0)] * len(starts)
        close = market.last
        for index in range(len(starts) - 1, -1, -1):
            closes[index] = close.quantize(_CENT)
            change = Decimal(str(round((_unit_hash(symbol, tf, starts[index].timestamp()) - 0.5) * 0.01, 6)))
            open_ = (close / (1 + change)).quantize(_CENT)
            opens[index] = open_
            close = open_
        bars = []
        for index, moment in enumerate(starts):
            if moment > end:
                break
            o, c = opens[index], closes[index]
            wiggle = Decimal(str(round(_unit_hash(symbol, "w", moment.timestamp()) * 0.003, 6)))
            h = (max(o, c) * (1 + wiggle)).quantize(_CENT)
            low = (min(o, c) * (1 - wiggle)).quantize(_CENT)
            volume: float | int = (round(_unit_hash(symbol, "v", moment.timestamp()) * 50, 6) if crypto
                                   else int(_unit_hash(symbol, "v", moment.timestamp()) * 100_000) + 100)
            bars.append({"t": _iso(moment), "o": _num(o), "h": _num(h), "l": _num(low), "c": _num(c),
                         "v": volume, "n": int(_unit_hash(symbol, "n", moment.timestamp()) * 500) + 1,
                         "vw": _num(((h + low + c) / 3).quantize(Decimal("0.0001")))})
        return bars
