"""Deterministic simulated market data for the simulated broker: pure functions, no I/O.

Prices
    Every symbol has a price path reproducible from (seed, symbol). The log price at minute m is the
    symbol's base price plus a sum of "value noise" components at scales of 1, 4, 16, ... 4**9 minutes
    (about six months): each component holds a hashed Gaussian at every multiple of its scale and
    interpolates linearly in between. With a component's size proportional to the square root of its
    scale, the sum moves like a random walk for any horizon up to months (the variance of a change grows
    with its length) yet is stationary beyond that, so prices wander around their base instead of
    drifting to zero. Any minute costs O(number of scales) to evaluate: no iteration from an epoch.

    A minute's price is its closing price. Crypto trades around the clock. A US equity moves only in NYSE
    regular sessions: outside them its price stands still at the last session's close, with no volume (no
    ticking on a Sunday), so quotes, bars and fills agree with `market_clock`.

Hashing
    blake2b derives one 64-bit key per (seed, symbol, component); the per-minute and per-knot numbers
    come from the splitmix64 finalizer over (key + index), which is both fast and well mixed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from broker.base import Asset, Bar, MarketClock, Quote, Timeframe

NEW_YORK = ZoneInfo("America/New_York")
SESSION_OPEN = time(9, 30)
SESSION_CLOSE = time(16, 0)

MAX_BARS = 10_000  # as at Alpaca

_MINUTES_PER_YEAR = 365 * 24 * 60  # the simulated tape never closes
_SCALES = tuple(4**i for i in range(10))  # 1 minute .. 262,144 minutes (~182 days)
# Variance of an n-minute change is about this many times the squared per-scale unit (measured):
# used to turn an annual volatility into component sizes.
_VARIANCE_PER_MINUTE_FACTOR = 2.05
_M64 = (1 << 64) - 1
_CENT = Decimal("0.01")


# --- the asset universe ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Listing:
    symbol: str
    name: str
    asset_class: Literal["us_equity", "crypto"]
    base_price: float
    annual_volatility: float
    spread_bps: float  # full bid/ask spread, in basis points of the price
    minute_volume: float  # typical volume per minute
    tradable: bool = True
    fractionable: bool = True
    shortable: bool = True

    def asset(self) -> Asset:
        return Asset(symbol=self.symbol, asset_class=self.asset_class, tradable=self.tradable,
                     fractionable=self.fractionable, shortable=self.shortable, name=self.name)


def _equity(symbol: str, name: str, price: float, vol: float, spread: float, volume: float,
            **flags: bool) -> Listing:
    return Listing(symbol, name, "us_equity", price, vol, spread, volume, **flags)


def _crypto(symbol: str, name: str, price: float, vol: float, spread: float, volume: float) -> Listing:
    return Listing(symbol, name, "crypto", price, vol, spread, volume, shortable=False)


UNIVERSE: dict[str, Listing] = {listing.symbol: listing for listing in (
    _equity("AAPL", "Apple Inc.", 190, 0.28, 2, 120_000),
    _equity("MSFT", "Microsoft Corporation", 420, 0.25, 2, 50_000),
    _equity("GOOGL", "Alphabet Inc. Class A", 170, 0.30, 2, 60_000),
    _equity("AMZN", "Amazon.com, Inc.", 185, 0.32, 2, 90_000),
    _equity("META", "Meta Platforms, Inc.", 500, 0.38, 3, 30_000),
    _equity("NVDA", "NVIDIA Corporation", 120, 0.50, 2, 600_000),
    _equity("TSLA", "Tesla, Inc.", 250, 0.55, 3, 250_000),
    _equity("AMD", "Advanced Micro Devices, Inc.", 160, 0.48, 3, 110_000),
    _equity("NFLX", "Netflix, Inc.", 650, 0.38, 4, 10_000),
    _equity("INTC", "Intel Corporation", 30, 0.40, 4, 100_000),
    _equity("JPM", "JPMorgan Chase & Co.", 200, 0.22, 2, 25_000),
    _equity("BAC", "Bank of America Corporation", 40, 0.26, 3, 90_000),
    _equity("XOM", "Exxon Mobil Corporation", 115, 0.24, 2, 40_000),
    _equity("CVX", "Chevron Corporation", 155, 0.24, 3, 20_000),
    _equity("KO", "The Coca-Cola Company", 62, 0.15, 2, 35_000),
    _equity("PEP", "PepsiCo, Inc.", 170, 0.16, 3, 15_000),
    _equity("WMT", "Walmart Inc.", 68, 0.18, 2, 45_000),
    _equity("DIS", "The Walt Disney Company", 100, 0.28, 3, 25_000),
    _equity("BA", "The Boeing Company", 180, 0.35, 4, 20_000),
    _equity("PFE", "Pfizer Inc.", 28, 0.22, 4, 80_000, shortable=False),
    _equity("F", "Ford Motor Company", 11, 0.35, 9, 150_000, fractionable=False, shortable=False),
    _equity("SPY", "SPDR S&P 500 ETF Trust", 550, 0.16, 1, 180_000),
    _equity("QQQ", "Invesco QQQ Trust", 470, 0.21, 1, 100_000),
    _equity("IWM", "iShares Russell 2000 ETF", 215, 0.22, 1, 70_000),
    _equity("DIA", "SPDR Dow Jones Industrial Average ETF", 400, 0.15, 2, 8_000),
    _equity("GLD", "SPDR Gold Shares", 220, 0.14, 2, 20_000),
    _equity("TLT", "iShares 20+ Year Treasury Bond ETF", 92, 0.15, 2, 60_000),
    # Known but halted: lets tests (and the gate) see an asset that exists yet cannot be traded.
    _equity("HALTD", "Halted Holdings Corp. (simulated trading halt)", 10, 0.30, 10, 5_000, tradable=False),
    _crypto("BTC/USD", "Bitcoin", 65_000, 0.60, 5, 4),
    _crypto("ETH/USD", "Ethereum", 3_300, 0.70, 6, 60),
    _crypto("SOL/USD", "Solana", 150, 0.90, 10, 1_500),
)}

SYMBOLS: tuple[str, ...] = tuple(UNIVERSE)


def listing(symbol: str) -> Listing | None:
    return UNIVERSE.get(symbol.strip().upper())


def asset(symbol: str) -> Asset | None:
    """The simulated broker's asset for a symbol; None when the market does not know it."""
    found = listing(symbol)
    return found.asset() if found else None


def _require(symbol: str) -> Listing:
    found = listing(symbol)
    if found is None:
        raise KeyError(f"unknown symbol {symbol!r} in the simulated market")
    return found


# --- the price path --------------------------------------------------------------------------------

def _key(seed: int, symbol: str, part: str) -> int:
    digest = hashlib.blake2b(f"{seed}|{symbol}|{part}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _mix(x: int) -> int:
    """splitmix64's finalizer: a cheap, well-mixed 64-bit hash of x."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _gaussian(h: int) -> float:
    """A standard normal (Irwin–Hall with four 16-bit uniforms: mean 2, variance 1/3, rescaled)."""
    total = (h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48)
    return (total / 65535.0 - 2.0) * 1.7320508075688772


def _uniform(h: int, chunk: int) -> float:
    return ((h >> (16 * chunk)) & 0xFFFF) / 65536.0


class _PricePath:
    """One symbol's path under one seed. Floats inside (speed); Decimals only at the edges."""

    __slots__ = ("components", "detail_key", "listing", "log_base", "unit")

    def __init__(self, seed: int, found: Listing):
        self.listing = found
        self.log_base = math.log(found.base_price)
        per_minute_variance = found.annual_volatility ** 2 / _MINUTES_PER_YEAR
        self.unit = math.sqrt(per_minute_variance / _VARIANCE_PER_MINUTE_FACTOR)
        self.components = tuple((_key(seed, found.symbol, f"scale{scale}"), scale, self.unit * math.sqrt(scale))
                                for scale in _SCALES)
        self.detail_key = _key(seed, found.symbol, "detail")  # wicks and volume

    def log_price(self, minute: int) -> float:
        if self.listing.asset_class == "us_equity":
            minute = trading_minutes([minute])[0]
        return self._log_price(minute)

    def _log_price(self, minute: int) -> float:
        total = self.log_base
        for key, scale, size in self.components:
            if scale == 1:
                total += size * _gaussian(_mix(key + minute))
                continue
            knot, into = divmod(minute, scale)
            left = _gaussian(_mix(key + knot))
            right = _gaussian(_mix(key + knot + 1))
            total += size * (left + (right - left) * (into / scale))
        return total

    def log_prices(self, minutes: Sequence[int]) -> list[float]:
        """log_price for many ascending minutes: each knot is hashed once, not once per minute."""
        if self.listing.asset_class == "us_equity":
            minutes = trading_minutes(minutes)
        totals = [self.log_base] * len(minutes)
        for key, scale, size in self.components:
            if scale == 1:
                for i, minute in enumerate(minutes):
                    totals[i] += size * _gaussian(_mix(key + minute))
                continue
            cached_knot, left, right = None, 0.0, 0.0
            for i, minute in enumerate(minutes):
                knot, into = divmod(minute, scale)
                if knot != cached_knot:
                    left = right if cached_knot is not None and knot == cached_knot + 1 else \
                        size * _gaussian(_mix(key + knot))
                    right = size * _gaussian(_mix(key + knot + 1))
                    cached_knot = knot
                totals[i] += left + (right - left) * (into / scale)
        return totals

    def details(self, minute: int) -> tuple[float, float, float]:
        """(upper wick, lower wick, volume) of one minute; wicks as fractions of the price."""
        h = _mix(self.detail_key + minute)
        wick_scale = 0.8 * self.unit * math.sqrt(_VARIANCE_PER_MINUTE_FACTOR)  # ~ one minute's move
        volume = self.listing.minute_volume * (0.3 + 1.4 * _uniform(h, 2)) * (0.5 + _uniform(h, 3))
        return wick_scale * _uniform(h, 0), wick_scale * _uniform(h, 1), volume


@lru_cache(maxsize=1024)
def _path(seed: int, symbol: str) -> _PricePath:
    return _PricePath(seed, _require(symbol))


# --- times -----------------------------------------------------------------------------------------

def minute_index(moment: datetime) -> int:
    """Minutes since the Unix epoch of a timezone-aware time (the minute it falls in)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: the simulated market works in timezone-aware times only")
    return math.floor(moment.timestamp()) // 60


def minute_start(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, UTC)


# --- prices as Decimals ----------------------------------------------------------------------------

def _cents(value: float) -> Decimal:
    return Decimal(round(value * 100)).scaleb(-2)


def _cents_floor(value: float) -> Decimal:
    return Decimal(math.floor(value * 100)).scaleb(-2)


def _cents_ceil(value: float) -> Decimal:
    return Decimal(math.ceil(value * 100)).scaleb(-2)


def minute_price(seed: int, symbol: str, minute: int) -> Decimal:
    """The (closing) price of `symbol` in minute `minute`, in cents. KeyError for an unknown symbol."""
    return _cents(math.exp(_path(seed, _require(symbol).symbol).log_price(minute)))


def minute_prices(seed: int, symbol: str, first: int, last: int) -> list[Decimal]:
    """Prices of minutes first..last inclusive (faster than one minute_price call per minute)."""
    path = _path(seed, _require(symbol).symbol)
    return [_cents(math.exp(level)) for level in path.log_prices(range(first, last + 1))]


def quote(seed: int, symbol: str, now: datetime) -> Quote:
    """The quote at `now`: last = the current minute's price, bid/ask the symbol's spread around it."""
    found = _require(symbol)
    bid, ask, last = _minute_quote(seed, found.symbol, minute_index(now))
    return Quote(symbol=found.symbol, bid=bid, ask=ask, last=last, as_of=now.astimezone(UTC).replace(microsecond=0))


@lru_cache(maxsize=4096)
def _minute_quote(seed: int, symbol: str, minute: int) -> tuple[Decimal, Decimal, Decimal]:
    """(bid, ask, last) of one minute. Cached: every proposal and order asks for the current minute's quote,
    and computing it (the trading-minute mapping, the path's hashes) costs more than the rest of the quote."""
    found = _require(symbol)
    price = math.exp(_path(seed, symbol).log_price(minute))
    half_spread = price * found.spread_bps / 20_000
    bid, ask = _cents_floor(price - half_spread), _cents_ceil(price + half_spread)
    if ask <= bid:
        ask = bid + _CENT
    return bid, ask, _cents(price)


# --- bars ------------------------------------------------------------------------------------------

_INTRADAY_MINUTES: dict[str, int] = {"1Min": 1, "5Min": 5, "15Min": 15, "1Hour": 60}
# Long bars sample their minutes (every Nth plus the last) instead of visiting all of them: a 1Day bar
# would otherwise cost 1,440 price evaluations. Their high/low are then those of the samples.
_SAMPLE_EVERY: dict[str, int] = {"1Min": 1, "5Min": 1, "15Min": 1, "1Hour": 5, "1Day": 30}


def _bar_windows(timeframe: Timeframe, limit: int, now: datetime) -> list[tuple[int, int]]:
    """(first minute, last minute) of the latest `limit` bars, oldest first; the last one is in progress
    and ends at `now`. Intraday bars align to UTC multiples of their length (so hours are whole hours in
    New York too); daily bars run from midnight to midnight in New York, like Alpaca's."""
    current = minute_index(now)
    if timeframe == "1Day":
        today = now.astimezone(NEW_YORK).date()
        windows = []
        for back in range(limit - 1, -1, -1):
            day = today - timedelta(days=back)
            first = minute_index(datetime.combine(day, time(0), NEW_YORK))
            last = minute_index(datetime.combine(day + timedelta(days=1), time(0), NEW_YORK)) - 1
            windows.append((first, min(last, current)))
        return windows
    length = _INTRADAY_MINUTES[timeframe]
    newest_first = current - current % length
    return [(start, min(start + length - 1, current))
            for start in range(newest_first - length * (limit - 1), newest_first + 1, length)]


def _quantity(listing_: Listing, value: float) -> Decimal:
    if listing_.asset_class == "crypto":
        return Decimal(round(value * 10_000)).scaleb(-4)
    return Decimal(round(value))


def bars(seed: int, symbol: str, timeframe: Timeframe, limit: int, now: datetime) -> list[Bar]:
    """The latest `limit` bars (at most MAX_BARS) up to `now`, oldest first; the last bar is in progress.

    A bar opens at the previous minute's close (the tape is continuous), closes at its last minute's
    price, and its high/low cover open, close and each (sampled) minute's wick. KeyError for an unknown
    symbol, ValueError for an unknown timeframe.
    """
    return list(iter_bars(seed, symbol, timeframe, limit, now))


def iter_bars(seed: int, symbol: str, timeframe: Timeframe, limit: int, now: datetime) -> Iterator[Bar]:
    """bars(), one bar at a time: a caller on an event loop can hand the loop back between bars (a bar
    not yet cached costs up to a millisecond). Arguments are checked before the first bar."""
    if timeframe not in _SAMPLE_EVERY:
        raise ValueError(f"unknown timeframe {timeframe!r}; use one of {', '.join(_SAMPLE_EVERY)}")
    found = _require(symbol)
    limit = max(0, min(limit, MAX_BARS))
    every = _SAMPLE_EVERY[timeframe]
    current = minute_index(now)
    windows = _bar_windows(timeframe, limit, now) if limit else []

    def generate() -> Iterator[Bar]:
        # A finished bar never changes (the path is deterministic): computed once, then cached. Only the bar
        # in progress is computed on every call, so an agent polling bars pays for one bar, not `limit`.
        for first, last in windows:
            yield (_finished_bar(seed, found.symbol, first, last, every) if last < current
                   else _bar(seed, found, first, last, every))

    return generate()


@lru_cache(maxsize=16_384)
def _finished_bar(seed: int, symbol: str, first: int, last: int, every: int) -> Bar:
    return _bar(seed, _require(symbol), first, last, every)


def _bar(seed: int, found: Listing, first: int, last: int, every: int) -> Bar:
    """The bar of minutes first..last, sampling every `every`-th minute (and the last)."""
    path = _path(seed, found.symbol)
    sampled = list(range(first, last + 1, every))
    if sampled[-1] != last:
        sampled.append(last)
    # One pass over every minute needed: the samples plus the minute before the bar (its open).
    wanted = [first - 1, *sampled]
    price_of = dict(zip(wanted, (math.exp(level) for level in path.log_prices(wanted)), strict=True))
    open_, close = price_of[first - 1], price_of[last]
    high, low = max(open_, close), min(open_, close)
    weighted = volume = 0.0
    trading = trading_minutes(sampled) if found.asset_class == "us_equity" else sampled
    for minute, traded in zip(sampled, trading, strict=True):
        if traded != minute:
            continue  # the market is closed in this minute: nothing trades
        price = price_of[minute]
        up, down, minute_volume = path.details(minute)
        high, low = max(high, price * (1 + up)), min(low, price * (1 - down))
        weighted += price * minute_volume
        volume += minute_volume
    minutes_in_bar = last - first + 1
    high_d, low_d = _cents(high), _cents(low)
    average = weighted / volume if volume > 0 else close  # a bar of a closed market: no trades
    vwap = min(max(Decimal(average).quantize(Decimal("0.0001"), ROUND_HALF_EVEN), low_d), high_d)
    return Bar(start=minute_start(first), open=_cents(open_), high=high_d, low=low_d, close=_cents(close),
               volume=_quantity(found, volume * minutes_in_bar / len(sampled)), vwap=vwap)


# --- NYSE regular sessions -------------------------------------------------------------------------

def _easter(year: int) -> date:
    """Gregorian Easter Sunday (the anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th `weekday` (Monday=0) of a month; n=-1 for the last one."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: date) -> date:
    """A fixed-date holiday on a weekend is observed on the Friday before or the Monday after."""
    if day.weekday() == 5:
        return day - timedelta(days=1)
    if day.weekday() == 6:
        return day + timedelta(days=1)
    return day


@lru_cache(maxsize=64)
def nyse_holidays(year: int) -> frozenset[date]:
    """Full-day NYSE closures by the exchange's standing rules (early closes and one-off closures,
    e.g. days of mourning, are not modelled)."""
    days = {
        _nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
        _nth_weekday(year, 2, 0, 3),  # Washington's Birthday
        _easter(year) - timedelta(days=2),  # Good Friday
        _nth_weekday(year, 5, 0, -1),  # Memorial Day
        _observed(date(year, 7, 4)),  # Independence Day
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _observed(date(year, 12, 25)),  # Christmas
    }
    new_year = date(year, 1, 1)
    if new_year.weekday() != 5:  # on a Saturday it is not observed (the NYSE keeps Dec 31 open)
        days.add(_observed(new_year))
    if year >= 2022:
        days.add(_observed(date(year, 6, 19)))  # Juneteenth
    return frozenset(days)


def is_trading_day(day: date) -> bool:
    return day.weekday() < 5 and day not in nyse_holidays(day.year)


def session_bounds(day: date) -> tuple[datetime, datetime] | None:
    """(open, close) in UTC of the regular session on a New York calendar day, None if there is none."""
    if not is_trading_day(day):
        return None
    return (datetime.combine(day, SESSION_OPEN, NEW_YORK).astimezone(UTC),
            datetime.combine(day, SESSION_CLOSE, NEW_YORK).astimezone(UTC))


def _sessions_from(moment: datetime) -> list[tuple[datetime, datetime]]:
    """Regular sessions that close after `moment`, the earliest first (the next ten calendar days always
    hold at least two)."""
    day = moment.astimezone(NEW_YORK).date()
    found = []
    for offset in range(10):
        bounds = session_bounds(day + timedelta(days=offset))
        if bounds is not None and bounds[1] > moment:
            found.append(bounds)
    return found


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=4096)
def _session_minutes(day: date) -> tuple[int, int] | None:
    """(first minute, first minute after) of the regular session on a New York day."""
    bounds = session_bounds(day)
    return None if bounds is None else (minute_index(bounds[0]), minute_index(bounds[1]))


def trading_minutes(minutes: Sequence[int]) -> list[int]:
    """Each ascending minute, or while the NYSE is closed the last minute of the session before it: the
    minute whose price a US equity shows (it stands still between sessions)."""
    if not minutes:
        return []
    # New York's date is the UTC date or the day before; a closed spell lasts at most four days.
    first_day = _EPOCH_ORDINAL + minutes[0] // 1440 - 6
    last_day = _EPOCH_ORDINAL + minutes[-1] // 1440
    sessions = [bounds for ordinal in range(first_day, last_day + 1)
                if (bounds := _session_minutes(date.fromordinal(ordinal))) is not None]
    mapped: list[int] = []
    index = -1  # the last session opening at or before the minute
    for minute in minutes:
        while index + 1 < len(sessions) and sessions[index + 1][0] <= minute:
            index += 1
        if index < 0 or minute < sessions[index][1]:
            mapped.append(minute)
        else:
            mapped.append(sessions[index][1] - 1)
    return mapped


def market_clock(now: datetime) -> MarketClock:
    """Open during a regular session; next_open is the next session's open after `now`, next_close the
    close of the session in progress or else of the next one (Alpaca's clock semantics)."""
    sessions = _sessions_from(now)
    current_open, current_close = sessions[0]
    if current_open <= now:
        return MarketClock(is_open=True, next_open=sessions[1][0], next_close=current_close)
    return MarketClock(is_open=False, next_open=current_open, next_close=current_close)


def session_close_after(moment: datetime) -> datetime:
    """When a day order placed at `moment` expires: the close of the session in progress, or else of the
    next session (an order placed before the open or after the close is for the next session)."""
    return _sessions_from(moment)[0][1]
