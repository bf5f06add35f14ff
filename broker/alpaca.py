"""The Alpaca adapter: the Broker protocol over alpaca-py (Trading API v2, Market Data API v2 / v1beta3).

Design notes
- alpaca-py imports pandas (slow): nothing from `alpaca` is imported at module import; clients are built
  in a worker thread by `start()` (or lazily on first use).
- alpaca-py is synchronous: every call runs in a worker thread (`asyncio.to_thread`) under a deadline
  (`asyncio.wait_for`), and every HTTP request also carries a socket timeout, so worker threads end too.
- alpaca-py's own retry loop (429/504, blocking `time.sleep`, applied to POST as well) is switched off on
  every client. Retries are ours: reads (and cancels, which are idempotent) are retried with exponential
  backoff on 429, 5xx, timeouts and connection errors; an order submission is sent exactly once. When a
  submission's outcome is unknown (timeout, dropped connection, 5xx) the order is looked up by its
  client_order_id: found → returned; not found → `BrokerTimeout` (or the 5xx as a BrokerError).
- The clients run with `raw_data=True`: Alpaca's trading API sends money and quantities as strings, which
  become exact Decimals here (alpaca-py's models turn some into floats), and an enum value Alpaca adds
  later (a new order status, say) passes through instead of failing the whole call.
- Orders are submitted with the body built here, every amount a decimal string as Alpaca's OpenAPI
  description requires (alpaca-py's request models would send binary floats).
- Round trips: what a proposal looked up is reused at its execution while fresh (broker/freshness.py): an
  asset for ASSET_REUSE_SECONDS, a symbol's latest quote for QUOTE_REUSE_SECONDS (still carrying its own
  timestamp, so the gate's stale-quote check judges its true age), so an execution right after its proposal
  sends one request, the order. A quote used late in its window is fetched again in the background
  (QUOTE_REFRESH_AHEAD), so a steady flow of proposals does not wait for one. A bracket's Alpaca id, learned
  from its submission, lets its refreshes read it with its legs in one request instead of a lookup by
  client_order_id followed by a nested read.
- Secrets: the keys are held in a redacting wrapper, never logged, and scrubbed from every error message;
  BrokerErrors are raised outside `except` blocks so no chained exception (whose request object would
  carry the auth headers) travels with them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import random
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from broker.base import (
    Account,
    Asset,
    Bar,
    BrokerError,
    BrokerOrder,
    BrokerPosition,
    BrokerTimeout,
    MarketClock,
    Quote,
    SubmitOrder,
    Timeframe,
)
from broker.freshness import FreshCache
from policies import secrets
from policies.orders import decimal_text, is_crypto_symbol, normalize_symbol
from tradewarden.log import get_logger

log = get_logger("tradewarden.broker.alpaca")

T = TypeVar("T")

_REDACTED = secrets.REDACTED
_DEADLINE_GRACE = 1.0  # the asyncio deadline is a backstop behind the socket timeout
_MAX_ORDERS_PAGE = 500  # Alpaca: "Defaults to 50 and max is 500."
_MAX_BARS = 10_000  # Alpaca: limit maximum for bars
_SYMBOLS_PER_REQUEST = 100
_CRYPTO_QUOTES = ("USDT", "USDC", "USD", "BTC", "ETH")  # quote currencies, longest first
# An asset's flags (tradable, fractionable, shortable) change rarely, in minutes; Alpaca still refuses an
# order the asset no longer allows, so a flag a minute old cannot put an order through.
ASSET_REUSE_SECONDS = 60.0
# Half the shortest stale-quote limit an agent can be given (max_quote_age_seconds >= 1): reuse alone cannot
# push a quote past the tightest limit. Long enough for an execution right after its proposal.
QUOTE_REUSE_SECONDS = 0.5
# A kept quote used when this share of its window has passed is fetched again in the background (one request
# at a time per symbol), so that a steady flow of proposals finds a fresh one instead of waiting for it; it is
# still served as it is meanwhile. At most one refresh per 0.4 s of use: about what the window allowed before.
QUOTE_REFRESH_AHEAD = 0.8
_ORDER_ID_MEMORY_SECONDS = 86_400.0  # an order's Alpaca id never changes; kept for a day, bounded in count

# Broker timeframe → (amount, alpaca TimeFrameUnit name, minutes per bar)
_TIMEFRAMES: dict[str, tuple[int, str, int]] = {
    "1Min": (1, "Minute", 1),
    "5Min": (5, "Minute", 5),
    "15Min": (15, "Minute", 15),
    "1Hour": (1, "Hour", 60),
    "1Day": (1, "Day", 1440),
}


class _Secrets:
    """Holds the API keys; prints as redacted so no repr, log or traceback variable dump shows them."""

    __slots__ = ("api_key", "secret_key")

    def __init__(self, api_key: str, secret_key: str):
        self.api_key = api_key
        self.secret_key = secret_key
        # Every scrubber of the process (audit, logs, tool errors) masks them from now on, in every rendering.
        secrets.register(api_key, secret_key)

    def __repr__(self) -> str:
        return f"<alpaca keys {_REDACTED}>"

    __str__ = __repr__

    def scrub(self, text: str) -> str:
        """The keys masked in every rendering an error may hold (raw, repr, JSON, URL, bytes, a line of it)."""
        return secrets.scrub(text)  # the keys were registered above


@dataclass(eq=False)
class _Failure(Exception):
    """One failed attempt, classified. Internal: always turned into a BrokerError before leaving."""

    kind: Literal["http", "timeout", "connection", "invalid_response", "other"]
    message: str
    status: int | None = None
    alpaca_code: int | None = None

    @property
    def retryable(self) -> bool:
        if self.kind in ("timeout", "connection"):
            return True
        return self.kind == "http" and self.status is not None and (self.status == 429 or self.status >= 500)


def _ensure(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(what)


# ----------------------------------------------------------------------------------------------------
# Parsing helpers: Alpaca JSON → exact Decimals and UTC datetimes.


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        value = repr(value)  # shortest round-trip text: 172.61 stays 172.61
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def _req_dec(data: dict[str, Any], key: str) -> Decimal:
    value = _dec(data.get(key))
    _ensure(value is not None, f"missing {key}")
    assert value is not None
    return value


def _ts(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    # Python 3.11 parses "Z", offsets and nanoseconds (truncated to microseconds).
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _req_ts(data: dict[str, Any], key: str) -> datetime:
    value = _ts(data.get(key))
    _ensure(value is not None, f"missing {key}")
    assert value is not None
    return value


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    _ensure(isinstance(value, dict), f"{what}: expected an object")
    return value


def _as_list(value: Any, what: str) -> list[Any]:
    _ensure(isinstance(value, list), f"{what}: expected an array")
    return value


def _iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def crypto_symbol_from_alpaca(symbol: str) -> str:
    """Alpaca's positions (and some older endpoints) name crypto pairs without the slash: BTCUSD → BTC/USD."""
    if "/" in symbol:
        return symbol
    for quote_ccy in _CRYPTO_QUOTES:
        if symbol.endswith(quote_ccy) and len(symbol) > len(quote_ccy):
            return f"{symbol[: -len(quote_ccy)]}/{quote_ccy}"
    return symbol


def _order_from_raw(raw: Any, is_leg: bool = False) -> BrokerOrder:
    data = _as_dict(raw, "order")
    raw_side = data.get("side")
    _ensure(raw_side in ("buy", "sell"), f"unexpected order side {raw_side!r}")
    side: Literal["buy", "sell"] = "buy" if raw_side == "buy" else "sell"
    order_type = data.get("type") or data.get("order_type")
    _ensure(isinstance(order_type, str) and bool(order_type), "missing order type")
    for key in ("id", "client_order_id", "status", "time_in_force", "symbol"):
        _ensure(isinstance(data.get(key), str) and bool(data.get(key)), f"missing {key}")
    return BrokerOrder(
        broker_order_id=data["id"],
        client_order_id=data["client_order_id"],
        symbol=data["symbol"],
        side=side,
        order_type=str(order_type),
        status=data["status"],
        qty=_dec(data.get("qty")),
        notional=_dec(data.get("notional")),
        filled_qty=_dec(data.get("filled_qty")) or Decimal(0),
        filled_avg_price=_dec(data.get("filled_avg_price")),
        limit_price=_dec(data.get("limit_price")),
        stop_price=_dec(data.get("stop_price")),
        time_in_force=data["time_in_force"],
        submitted_at=_ts(data.get("submitted_at")),
        updated_at=_ts(data.get("updated_at")),
        reject_reason=None,
        order_class=str(data.get("order_class") or "simple"),
        legs=tuple(_leg_from_raw(leg) for leg in (data.get("legs") or [])),
        leg_role=_leg_role(data) if is_leg else None,
        trail_percent=_dec(data.get("trail_percent")),
        trail_price=_dec(data.get("trail_price")),
        hwm=_dec(data.get("hwm")),
    )


def _leg_role(data: dict[str, Any]) -> str:
    """A bracket leg's role: Alpaca's group_role, else its type (a limit leg takes profit, a stop limits loss)."""
    role = data.get("group_role")
    if role in ("take_profit", "stop_loss"):
        return str(role)
    kind = data.get("type") or data.get("order_type")
    return {"limit": "take_profit", "trailing_stop": "trailing_stop"}.get(str(kind), "stop_loss")


def _leg_from_raw(raw: Any) -> BrokerOrder:
    return _order_from_raw(raw, is_leg=True)


def _bar_from_raw(raw: Any) -> Bar:
    data = _as_dict(raw, "bar")
    return Bar(
        start=_req_ts(data, "t"),
        open=_req_dec(data, "o"),
        high=_req_dec(data, "h"),
        low=_req_dec(data, "l"),
        close=_req_dec(data, "c"),
        volume=_req_dec(data, "v"),
        vwap=_dec(data.get("vw")),
    )


def _quote_from_snapshot(symbol: str, raw: Any) -> Quote | None:
    """A Quote from one snapshot, or None when it has no usable two-sided quote (fail closed)."""
    if not isinstance(raw, dict):
        return None
    latest_quote = raw.get("latestQuote")
    if not isinstance(latest_quote, dict):
        return None
    bid, ask = _dec(latest_quote.get("bp")), _dec(latest_quote.get("ap"))
    as_of = _ts(latest_quote.get("t"))
    # Alpaca: "0 means the security has no active bid/ask". No two-sided quote, no quote.
    if bid is None or ask is None or bid <= 0 or ask <= 0 or as_of is None:
        return None
    latest_trade = raw.get("latestTrade")
    last = _dec(latest_trade.get("p")) if isinstance(latest_trade, dict) else None
    if last is None or last <= 0:
        last = (bid + ask) / 2
    return Quote(symbol=symbol, bid=bid, ask=ask, last=last, as_of=as_of)


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


def _bars_lookback(timeframe: str, limit: int, crypto: bool) -> timedelta:
    """How far back to ask so that the newest `limit` bars surely fall inside the window."""
    minutes = _TIMEFRAMES[timeframe][2]
    if crypto:  # trades around the clock
        return timedelta(minutes=minutes * limit * 1.2) + timedelta(days=2)
    if timeframe == "1Day":
        # 5 trading days per 7 calendar days, plus holidays
        return timedelta(days=math.ceil(limit * 7 / 5 * 1.1) + 10)
    # Regular session: 390 minutes (7 hourly bars) per trading day; weekends and holidays on top.
    bars_per_day = 7 if timeframe == "1Hour" else 390 // minutes
    trading_days = math.ceil(limit / bars_per_day)
    return timedelta(days=math.ceil(trading_days * 7 / 5 * 1.1) + 5)


# ----------------------------------------------------------------------------------------------------


class AlpacaBroker:
    """The Broker protocol over Alpaca (paper or live). Keys come from the caller and are never shown."""

    name = "alpaca"

    def __init__(
        self,
        *,
        api_key: str,
        secret_key: str,
        paper: bool,
        trading_url: str | None = None,
        data_url: str | None = None,
        timeout: float = 10.0,
        read_retries: int = 3,
        retry_backoff: float = 0.5,
        max_backoff: float = 8.0,
        stock_feed: str | None = None,
        crypto_feed: str = "us",
        asset_reuse_seconds: float = ASSET_REUSE_SECONDS,
        quote_reuse_seconds: float = QUOTE_REUSE_SECONDS,
    ):
        if not api_key or not secret_key:
            raise ValueError("Alpaca API key and secret key are both required")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if read_retries < 0:
            raise ValueError("read_retries must be >= 0")
        if not 0 <= quote_reuse_seconds <= QUOTE_REUSE_SECONDS:
            raise ValueError(f"quote_reuse_seconds must be between 0 and {QUOTE_REUSE_SECONDS}")
        if asset_reuse_seconds < 0:
            raise ValueError("asset_reuse_seconds must be >= 0")
        self._secrets = _Secrets(api_key, secret_key)
        self.paper = paper
        self.trading_url = trading_url.rstrip("/") if trading_url else None
        self.data_url = data_url.rstrip("/") if data_url else None
        self.timeout = float(timeout)
        self.read_retries = int(read_retries)
        self.retry_backoff = float(retry_backoff)
        self.max_backoff = float(max_backoff)
        self.stock_feed = stock_feed
        self.crypto_feed = crypto_feed
        self._trading: Any = None
        self._stock_data: Any = None
        self._crypto_data: Any = None
        self._build_lock = threading.Lock()  # not an asyncio.Lock: callers may come from several loops
        self._assets: FreshCache[str, Asset] = FreshCache(asset_reuse_seconds)
        self._quotes: FreshCache[str, Quote] = FreshCache(quote_reuse_seconds)
        self._bracket_ids: FreshCache[str, str] = FreshCache(_ORDER_ID_MEMORY_SECONDS)  # client id → Alpaca id
        self._refreshing: set[str] = set()  # symbols whose quote is being fetched ahead
        self._refresh_lock = threading.Lock()
        self._refreshes: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return (f"AlpacaBroker(paper={self.paper!r}, trading_url={self.trading_url!r}, "
                f"data_url={self.data_url!r}, timeout={self.timeout!r})")

    __str__ = __repr__

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the alpaca-py clients (importing alpaca-py, and pandas with it) in a worker thread."""
        if self._trading is None:
            await asyncio.to_thread(self._build_clients)

    async def close(self) -> None:
        for task in list(self._refreshes):  # a refresh ahead is worth nothing once closed
            if task.get_loop() is asyncio.get_running_loop():
                task.cancel()
        clients = [c for c in (self._trading, self._stock_data, self._crypto_data) if c is not None]
        self._trading = self._stock_data = self._crypto_data = None
        for session in {id(s): s for s in (getattr(c, "_session", None) for c in clients) if s is not None}.values():
            session.close()

    def _build_clients(self) -> None:
        with self._build_lock:
            if self._trading is None:
                self._build_clients_locked()

    def _build_clients_locked(self) -> None:
        import requests
        from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
        from alpaca.trading.client import TradingClient

        timeout = self.timeout

        class _TimeoutSession(requests.Session):
            # alpaca-py passes no timeout to requests; without one a dead connection blocks forever.
            def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
                kwargs.setdefault("timeout", timeout)
                return super().request(method, url, *args, **kwargs)

        def host_of(client: Any) -> str:
            return str(getattr(client._base_url, "value", client._base_url))  # a BaseURL enum or an override

        sessions: dict[str, requests.Session] = {}

        def session_for(client: Any) -> requests.Session:
            # One keep-alive pool per host: the stock and crypto data clients share theirs. What requests would
            # otherwise look up in the environment on every request (proxies and NO_PROXY, the CA bundle,
            # ~/.netrc: a scan of the whole environment and three file checks, ~0.2 ms of CPU a request) is
            # resolved once per host: a running server's environment does not change, and Alpaca's keys travel
            # in headers, so a .netrc entry is never wanted.
            base_url = host_of(client)
            if base_url not in sessions:
                session = _TimeoutSession()
                session.proxies = requests.utils.get_environ_proxies(base_url)
                bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                if bundle:
                    session.verify = bundle
                session.trust_env = False
                sessions[base_url] = session
            return sessions[base_url]

        keys = self._secrets
        trading = TradingClient(keys.api_key, keys.secret_key, paper=self.paper, raw_data=True,
                                url_override=self.trading_url)
        stock = StockHistoricalDataClient(keys.api_key, keys.secret_key, raw_data=True,
                                          url_override=self.data_url)
        crypto = CryptoHistoricalDataClient(keys.api_key, keys.secret_key, raw_data=True,
                                            url_override=self.data_url)
        for client in (trading, stock, crypto):
            # alpaca-py's RESTClient retries 429/504 itself, sleeping in the thread, for POST too, and its
            # constructor cannot express "no retries" (0 means "default"): switch it off here.
            client._retry = 0
            client._retry_codes = []
            client._session = session_for(client)
        self._trading, self._stock_data, self._crypto_data = trading, stock, crypto

    async def _clients(self) -> tuple[Any, Any, Any]:
        if self._trading is None:
            await self.start()
        return self._trading, self._stock_data, self._crypto_data

    # -- calling alpaca-py -----------------------------------------------------------------------------

    def _classify(self, exc: BaseException) -> _Failure:
        import requests
        from alpaca.common.exceptions import APIError

        scrub = self._secrets.scrub
        if isinstance(exc, _Failure):
            return exc
        if isinstance(exc, TimeoutError | requests.exceptions.Timeout):
            return _Failure("timeout", f"Alpaca did not answer within {self.timeout:g}s")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return _Failure("connection", "could not reach Alpaca (connection failed)")
        if isinstance(exc, APIError):
            status = exc.status_code
            text = str(exc)
            message, code = text.strip(), None
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            if isinstance(body, dict):
                if isinstance(body.get("message"), str):
                    message = body["message"]
                if isinstance(body.get("code"), int | float):
                    code = int(body["code"])
            if not message:
                message = f"HTTP {status}"
            return _Failure("http", scrub(message)[:500], status=status, alpaca_code=code)
        if isinstance(exc, ValueError | KeyError | TypeError):
            return _Failure("invalid_response", scrub(f"unexpected response from Alpaca: {exc}")[:500])
        return _Failure("other", scrub(f"Alpaca call failed: {type(exc).__name__}: {exc}")[:500])

    async def _attempt(self, op: str, fn: Callable[[], Any], parse: Callable[[Any], T]) -> T:
        """One attempt in a worker thread, under a deadline. Raises _Failure (classified, scrubbed).

        The answer is parsed in the worker thread too (the parsers are pure): a listing of a hundred orders
        takes milliseconds to turn into Decimals and datetimes, and there the loop can serve other calls
        meanwhile (the interpreter switches threads every few hundred microseconds) instead of waiting."""
        log.debug("alpaca.call", op=op)
        failure: _Failure | None = None
        try:
            # asyncio.timeout, not wait_for: no task of its own to schedule (Python 3.11's wait_for makes one)
            async with asyncio.timeout(self.timeout + _DEADLINE_GRACE):
                return await asyncio.to_thread(lambda: parse(fn()))
        except Exception as exc:  # classified below, outside the except block: no exception chain
            failure = self._classify(exc)
        raise failure

    def _delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.retry_backoff * (2 ** attempt))
        return base * (0.8 + 0.4 * random.random())

    async def _with_retries(self, op: str, fn: Callable[[], Any], parse: Callable[[Any], T]) -> T:
        """Reads (and idempotent cancels): retried with backoff on 429, 5xx, timeouts, connection errors."""
        attempt = 0
        while True:
            try:
                return await self._attempt(op, fn, parse)
            except _Failure as failure:
                if not failure.retryable or attempt >= self.read_retries:
                    raise
                delay = self._delay(attempt)
                log.warning("alpaca.retry", op=op, attempt=attempt + 1, kind=failure.kind,
                            status=failure.status, delay=round(delay, 3))
                attempt += 1
                await asyncio.sleep(delay)

    def _error(self, failure: _Failure, op: str, *, order_op: bool = False) -> BrokerError:
        status, message = failure.status, failure.message
        if failure.kind == "http" and status is not None:
            text = f"Alpaca {status}: {message}"
            lowered = message.lower()
            if status == 422 and "client_order_id must be unique" in lowered:
                code = "DUPLICATE_ORDER"
            elif status == 403 and op == "submit_order":
                # Alpaca documents 403 on POST /v2/orders as "Buying power or shares is not sufficient."
                code = "INSUFFICIENT_BUYING_POWER"
            elif status in (400, 422) and order_op:
                code = "INVALID_ORDER"
            elif status == 404 and order_op:
                code = "ORDER_NOT_FOUND"
            else:
                code = "BROKER_ERROR"
            if status == 401:
                text = f"Alpaca 401: the API keys were not accepted ({message})"
            return BrokerError(text, code=code, status=status, retryable=failure.retryable)
        if failure.kind in ("timeout", "connection"):  # Alpaca could not be asked: not the agent's doing
            return BrokerError(f"{message} ({op})", code="BROKER_UNAVAILABLE", retryable=True)
        return BrokerError(f"{message} ({op})", code="BROKER_ERROR", retryable=False)

    async def _read(self, op: str, fn: Callable[[], Any], parse: Callable[[Any], T], *,
                    order_op: bool = False, none_on_404: bool = False) -> T | None:
        error: BrokerError | None = None
        try:
            return await self._with_retries(op, fn, parse)
        except _Failure as failure:
            if none_on_404 and failure.kind == "http" and failure.status == 404:
                return None
            error = self._error(failure, op, order_op=order_op)
        raise error

    async def _read_required(self, op: str, fn: Callable[[], Any], parse: Callable[[Any], T], *,
                             order_op: bool = False) -> T:
        result = await self._read(op, fn, parse, order_op=order_op)
        assert result is not None
        return result

    # -- market data -----------------------------------------------------------------------------------

    async def get_quotes(self, symbols: list[str]) -> dict[str, Quote]:
        """Latest quotes; a symbol's quote fetched within the reuse window is not asked for again."""
        wanted = list(dict.fromkeys(normalize_symbol(s) for s in symbols if s and s.strip()))
        quotes: dict[str, Quote] = {}
        ageing: list[str] = []
        for symbol in wanted:
            kept = self._quotes.get(symbol)
            if kept is not None:
                quotes[symbol] = kept
                age = self._quotes.age(symbol)
                if age is not None and age >= self._quotes.max_age * QUOTE_REFRESH_AHEAD:
                    ageing.append(symbol)
        missing = [s for s in wanted if s not in quotes]
        if missing:
            quotes.update(await self._fetch_quotes(missing))
        if ageing:
            self._refresh_ahead(ageing)
        return {s: quotes[s] for s in wanted if s in quotes}

    def _refresh_ahead(self, symbols: list[str]) -> None:
        """Fetch these symbols' quotes again in the background (those not already being fetched)."""
        with self._refresh_lock:
            due = [s for s in symbols if s not in self._refreshing]
            self._refreshing.update(due)
        if not due:
            return
        task = asyncio.get_running_loop().create_task(self._refresh_quotes(due), name="alpaca-quote-refresh")
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _refresh_quotes(self, symbols: list[str]) -> None:
        try:
            await asyncio.wait_for(self._fetch_quotes(symbols), self.timeout + _DEADLINE_GRACE)
        except Exception as error:  # the next proposal that finds no fresh quote asks (and sees any error)
            log.debug("alpaca.quote_refresh_failed", error=type(error).__name__)
        finally:
            with self._refresh_lock:
                self._refreshing.difference_update(symbols)

    async def _fetch_quotes(self, wanted: list[str]) -> dict[str, Quote]:
        stocks = [s for s in wanted if not is_crypto_symbol(s)]
        cryptos = [s for s in wanted if is_crypto_symbol(s)]
        _, stock_client, crypto_client = await self._clients()
        from alpaca.data.requests import CryptoSnapshotRequest, StockSnapshotRequest

        def parse_snapshots(raw: Any) -> dict[str, Quote]:
            found: dict[str, Quote] = {}
            for symbol, snapshot in _as_dict(raw, "snapshots").items():
                quote_ = _quote_from_snapshot(symbol, snapshot)
                if quote_ is not None:
                    found[symbol] = quote_
            return found

        calls = []
        for batch in _chunks(stocks, _SYMBOLS_PER_REQUEST):
            stock_request = StockSnapshotRequest(symbol_or_symbols=batch, feed=self._stock_feed_enum())
            calls.append(self._read_required(
                "get_quotes", functools.partial(stock_client.get_stock_snapshot, stock_request),
                parse_snapshots))
        for batch in _chunks(cryptos, _SYMBOLS_PER_REQUEST):
            crypto_request = CryptoSnapshotRequest(symbol_or_symbols=batch)
            calls.append(self._read_required(
                "get_quotes",
                functools.partial(crypto_client.get_crypto_snapshot, crypto_request,
                                  feed=self._crypto_feed_enum()),
                parse_snapshots))
        asked = self._quotes.stamp()  # a kept quote's window starts when it was asked for
        quotes: dict[str, Quote] = {}
        for part in await asyncio.gather(*calls):
            quotes.update(part)
        for symbol, quote_ in quotes.items():
            self._quotes.put(symbol, quote_, asked)
        return quotes

    def _crypto_feed_enum(self) -> Any:
        from alpaca.data.enums import CryptoFeed

        return CryptoFeed(self.crypto_feed)

    def _stock_feed_enum(self) -> Any:
        from alpaca.data.enums import DataFeed

        return DataFeed(self.stock_feed) if self.stock_feed else None

    async def get_bars(self, symbol: str, timeframe: Timeframe, limit: int) -> list[Bar]:
        if timeframe not in _TIMEFRAMES:
            raise BrokerError(f"unsupported timeframe {timeframe!r}; use one of {', '.join(_TIMEFRAMES)}",
                              code="BROKER_ERROR")
        if limit <= 0:
            return []
        limit = min(int(limit), _MAX_BARS)
        symbol = normalize_symbol(symbol)
        crypto = is_crypto_symbol(symbol)
        _, stock_client, crypto_client = await self._clients()
        from alpaca.common.enums import Sort
        from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest
        from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

        amount, unit, _ = _TIMEFRAMES[timeframe]
        frame = TimeFrame(amount, TimeFrameUnit[unit])
        start = datetime.now(UTC) - _bars_lookback(timeframe, limit, crypto)
        fn: Callable[[], Any]
        if crypto:
            crypto_request = CryptoBarsRequest(symbol_or_symbols=symbol, timeframe=frame, start=start,
                                               limit=limit, sort=Sort.DESC)
            fn = lambda: crypto_client.get_crypto_bars(crypto_request, feed=self._crypto_feed_enum())  # noqa: E731
        else:
            stock_request = StockBarsRequest(symbol_or_symbols=symbol, timeframe=frame, start=start,
                                             limit=limit, sort=Sort.DESC, feed=self._stock_feed_enum())
            fn = lambda: stock_client.get_stock_bars(stock_request)  # noqa: E731

        def parse(raw: Any) -> list[Bar]:
            by_symbol = _as_dict(raw, "bars") if raw else {}
            bars = [_bar_from_raw(b) for b in _as_list(by_symbol.get(symbol, []), "bars")]
            bars.sort(key=lambda b: b.start)
            return bars[-limit:]

        return await self._read_required("get_bars", fn, parse)

    async def get_asset(self, symbol: str) -> Asset | None:
        symbol = normalize_symbol(symbol)
        if not symbol:
            return None
        kept = self._assets.get(symbol)
        if kept is not None:
            return kept
        trading, _, _ = await self._clients()
        # Alpaca: "For crypto, the symbol has to follow old symbology, e.g. BTCUSD."
        path_symbol = symbol.replace("/", "") if is_crypto_symbol(symbol) else symbol

        def parse(raw: Any) -> Asset:
            data = _as_dict(raw, "asset")
            asset_class = data.get("class")
            tradable = bool(data.get("tradable")) and data.get("status", "active") == "active"
            if asset_class not in ("us_equity", "crypto"):
                tradable = False  # options, bonds, …: not traded through this server
            return Asset(
                symbol=symbol,
                asset_class="crypto" if asset_class == "crypto" else "us_equity",
                tradable=tradable,
                fractionable=bool(data.get("fractionable")),
                shortable=bool(data.get("shortable")),
                name=str(data.get("name") or ""),
            )

        asked = self._assets.stamp()
        asset = await self._read("get_asset", lambda: trading.get(f"/assets/{quote(path_symbol, safe='')}"),
                                 parse, none_on_404=True)
        if asset is not None:  # an unknown symbol is asked again: it may be listed any time
            self._assets.put(symbol, asset, asked)
        return asset

    async def get_clock(self) -> MarketClock:
        trading, _, _ = await self._clients()

        def parse(raw: Any) -> MarketClock:
            data = _as_dict(raw, "clock")
            _ensure(isinstance(data.get("is_open"), bool), "missing is_open")
            return MarketClock(is_open=data["is_open"], next_open=_ts(data.get("next_open")),
                               next_close=_ts(data.get("next_close")))

        return await self._read_required("get_clock", trading.get_clock, parse)

    # -- trading ---------------------------------------------------------------------------------------

    @staticmethod
    def order_body(request: SubmitOrder) -> dict[str, Any]:
        """The POST /v2/orders body: Alpaca's CreateOrderRequest, every amount an exact decimal string."""
        order = request.order
        body: dict[str, Any] = {
            "symbol": order.symbol,
            "side": order.side,
            "type": order.order_type,
            "time_in_force": order.time_in_force,
            "client_order_id": request.client_order_id,
        }
        for key in ("qty", "notional", "limit_price", "stop_price"):
            value = decimal_text(getattr(order, key))
            if value is not None:
                body[key] = value
        if order.extended_hours:
            body["extended_hours"] = True
        if order.has_exits:
            if order.trailing_stop is not None:  # Alpaca's legs are stop or stop-limit orders only
                raise BrokerError("Alpaca cannot attach a trailing stop to an entry order (bracket and OTO legs "
                                  "are stop or stop-limit orders); use stop_loss", code="INVALID_ORDER", status=422)
            body["order_class"] = order.order_class  # bracket (both exits) or oto (one)
            if order.take_profit is not None:
                body["take_profit"] = {"limit_price": decimal_text(order.take_profit.limit_price)}
            if order.stop_loss is not None:
                stop_loss = {"stop_price": decimal_text(order.stop_loss.stop_price)}
                if order.stop_loss.limit_price is not None:
                    stop_loss["limit_price"] = decimal_text(order.stop_loss.limit_price)
                body["stop_loss"] = stop_loss
        return body

    async def submit_order(self, request: SubmitOrder) -> BrokerOrder:
        trading, _, _ = await self._clients()
        body = self.order_body(request)
        client_order_id = request.client_order_id
        log.info("alpaca.submit_order", client_order_id=client_order_id, symbol=body["symbol"],
                 side=body["side"], type=body["type"])
        failure: _Failure | None = None
        try:
            # Exactly one POST: never retried, whatever happens.
            submitted = await self._attempt("submit_order", lambda: trading.post("/orders", body),
                                            _order_from_raw)
            if submitted.order_class != "simple":
                self._bracket_ids.put(client_order_id, submitted.broker_order_id)
            return submitted
        except _Failure as exc:
            failure = exc
        # Only a 4xx answer says for sure that no order was made. Anything else (timeout, dropped
        # connection, 5xx, an answer we could not read) leaves the outcome open: look it up.
        refused = failure.kind == "http" and failure.status is not None and failure.status < 500
        if refused:
            raise self._error(failure, "submit_order", order_op=True)
        return await self._resolve_unknown_submission(client_order_id, failure)

    async def _resolve_unknown_submission(self, client_order_id: str, failure: _Failure) -> BrokerOrder:
        """The POST may or may not have created the order: look it up by client_order_id (reads only)."""
        log.warning("alpaca.submit_outcome_unknown", client_order_id=client_order_id, kind=failure.kind,
                    status=failure.status)
        lookup_error: BrokerError | None = None
        try:
            found = await self.get_order_by_client_id(client_order_id)
        except BrokerError as exc:
            lookup_error = exc
            found = None
        if found is not None:
            log.info("alpaca.submit_resolved", client_order_id=client_order_id, status=found.status)
            return found
        if lookup_error is None and failure.kind == "http" and failure.status not in (502, 504):
            # Alpaca answered with an error and has no such order: a plain broker error.
            raise self._error(failure, "submit_order", order_op=True)
        detail = f"lookup failed: {lookup_error.message}" if lookup_error else "no such order at Alpaca yet"
        unknown = BrokerTimeout(f"order submission outcome unknown ({failure.message}; {detail}); "
                                f"client_order_id={client_order_id}")
        unknown.status = failure.status
        raise unknown

    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        known_id = self._bracket_ids.get(client_order_id)
        if known_id is not None:  # a bracket we submitted: read by its id, legs included, in one request
            not_found: BrokerError | None = None
            try:
                return await self.get_order(known_id)
            except BrokerError as error:
                if error.code != "ORDER_NOT_FOUND":
                    raise
                not_found = error
            log.warning("alpaca.bracket_id_unknown", client_order_id=client_order_id, error=not_found.message)
            self._bracket_ids.forget(client_order_id)
        trading, _, _ = await self._clients()
        found = await self._read(
            "get_order_by_client_id",
            lambda: trading.get("/orders:by_client_order_id", {"client_order_id": client_order_id}),
            _order_from_raw, order_op=True, none_on_404=True)
        if found is not None and found.order_class != "simple" and not found.legs:
            return await self.get_order(found.broker_order_id)  # this lookup has no nested view: its legs
        return found

    async def get_order(self, broker_order_id: str) -> BrokerOrder:
        """Alpaca's order by its own id, with its legs (not part of the protocol; used by cancel_order)."""
        trading, _, _ = await self._clients()
        order_id = self._checked_order_id(broker_order_id)
        return await self._read_required("get_order", lambda: trading.get(f"/orders/{order_id}", {"nested": "true"}),
                                         _order_from_raw, order_op=True)

    @staticmethod
    def _checked_order_id(broker_order_id: str) -> str:
        try:
            return str(uuid.UUID(str(broker_order_id)))
        except ValueError:
            raise BrokerError(f"order {broker_order_id!r} not found (Alpaca order ids are UUIDs)",
                              code="ORDER_NOT_FOUND", status=404) from None

    async def list_orders(self, status: Literal["open", "closed", "all"] = "all", limit: int = 500,
                          after: datetime | None = None) -> list[BrokerOrder]:
        """Orders newest first (Alpaca's order), `limit` of them at most, paging through Alpaca's 500 cap.

        `after` is exclusive on submission time. Pages continue with `before_order_id` (the last order of
        the previous page), which Alpaca does not allow together with `after`, so later pages filter on
        the submission time here and stop at the first order at or before `after`.
        """
        if status not in ("open", "closed", "all"):
            raise BrokerError(f"unknown order status filter {status!r}", code="BROKER_ERROR")
        if limit <= 0:
            return []
        trading, _, _ = await self._clients()
        after_utc = after.astimezone(UTC) if after is not None else None
        results: list[BrokerOrder] = []
        seen: set[str] = set()
        before_id: str | None = None

        def parse(raw: Any) -> list[BrokerOrder]:
            return [_order_from_raw(item) for item in _as_list(raw, "orders")]

        while len(results) < limit:
            page_size = min(_MAX_ORDERS_PAGE, limit - len(results))
            params: dict[str, Any] = {"status": status, "limit": page_size, "direction": "desc",
                                      "nested": "true"}  # an entry's exits come with it, not as orders of their own
            if before_id is None:
                if after_utc is not None:
                    params["after"] = _iso_z(after_utc)
            else:
                params["before_order_id"] = before_id
            page = await self._read_required(
                "list_orders", functools.partial(trading.get, "/orders", params), parse, order_op=True)
            reached_after = False
            new = 0
            for order in page:
                if order.broker_order_id in seen:
                    continue
                submitted = order.submitted_at
                if after_utc is not None and submitted is not None and submitted <= after_utc:
                    reached_after = True
                    continue
                seen.add(order.broker_order_id)
                results.append(order)
                new += 1
            if reached_after or new == 0 or len(page) < page_size:
                break
            before_id = page[-1].broker_order_id
        return results[:limit]

    async def cancel_order(self, broker_order_id: str) -> BrokerOrder:
        """Ask Alpaca to cancel, then read the order back for its new status (often pending_cancel first)."""
        trading, _, _ = await self._clients()
        order_id = self._checked_order_id(broker_order_id)
        cancel_failure: _Failure | None = None
        try:
            # DELETE is idempotent: retried like a read.
            await self._with_retries("cancel_order", lambda: trading.cancel_order_by_id(order_id),
                                     lambda raw: raw)
        except _Failure as failure:
            cancel_failure = failure
        if cancel_failure is not None:
            if cancel_failure.kind == "http" and cancel_failure.status == 422:
                # "The order status is not cancelable": already canceled (say, by our own earlier
                # attempt) is fine; filled or expired is an error the caller must see.
                current = await self.get_order(order_id)
                if current.status in ("canceled", "pending_cancel"):
                    return current
                # Same code as the simulated broker: the order exists, it just can no longer be canceled.
                raise BrokerError(f"Alpaca 422: {cancel_failure.message} (order is {current.status})",
                                  code="BROKER_ERROR", status=422, retryable=False)
            raise self._error(cancel_failure, "cancel_order", order_op=True)
        return await self.get_order(order_id)

    async def get_account(self) -> Account:
        trading, _, _ = await self._clients()

        def parse(raw: Any) -> Account:
            data = _as_dict(raw, "account")
            blocked = any(bool(data.get(k)) for k in ("trading_blocked", "account_blocked",
                                                      "trade_suspended_by_user"))
            status = data.get("status")
            if status is not None and status != "ACTIVE":
                blocked = True
            return Account(
                cash=_req_dec(data, "cash"),
                equity=_req_dec(data, "equity"),
                buying_power=_req_dec(data, "buying_power"),
                currency=str(data.get("currency") or "USD"),
                trading_blocked=blocked,
            )

        return await self._read_required("get_account", trading.get_account, parse)

    async def get_positions(self) -> list[BrokerPosition]:
        trading, _, _ = await self._clients()

        def parse(raw: Any) -> list[BrokerPosition]:
            positions = []
            for item in _as_list(raw, "positions"):
                data = _as_dict(item, "position")
                symbol = str(data.get("symbol") or "")
                _ensure(bool(symbol), "missing symbol")
                if data.get("asset_class") == "crypto":
                    symbol = crypto_symbol_from_alpaca(symbol)
                qty = _req_dec(data, "qty")
                if data.get("side") == "short" and qty > 0:
                    qty = -qty
                positions.append(BrokerPosition(symbol=symbol, qty=qty,
                                                avg_entry_price=_req_dec(data, "avg_entry_price"),
                                                market_value=_dec(data.get("market_value"))))
            return positions

        return await self._read_required("get_positions", trading.get_all_positions, parse)
