"""Technical indicators over bars: pure functions, Decimal in and out.

Names (case-insensitive, surrounding spaces ignored): `sma_N`, `ema_N`, `rsi_N` (also written without the
underscore, e.g. `sma20`), `vwap`, `macd`, `macd_signal`, `macd_hist`. Every value is computed on bar closes
and describes the latest bar; results are quantized to 4 decimal places, and an indicator the bars are too
few for is None.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import pairwise

from broker.base import Bar

SUPPORTED_FORMS = ("sma_N", "ema_N", "rsi_N", "vwap", "macd", "macd_signal", "macd_hist")
MAX_PERIOD = 1000

_PERIODIC = re.compile(r"^(sma|ema|rsi)_?(\d+)$")
_PLACES = Decimal("0.0001")
_HUNDRED = Decimal(100)
# MACD's standard parameters: fast and slow EMAs of closes, and an EMA of their difference.
_MACD_FAST, _MACD_SLOW, _MACD_SIGNAL = 12, 26, 9


def sma(values: Sequence[Decimal], period: int) -> Decimal | None:
    """Mean of the last `period` values."""
    if len(values) < period:
        return None
    return sum(values[-period:], Decimal(0)) / period


def ema_series(values: Sequence[Decimal], period: int) -> list[Decimal]:
    """EMA after each value from the period-th on, seeded with the SMA of the first `period` values
    (the usual convention, e.g. TA-Lib's); smoothing factor 2 / (period + 1)."""
    if len(values) < period:
        return []
    alpha = Decimal(2) / (period + 1)
    current = sum(values[:period], Decimal(0)) / period
    series = [current]
    for value in values[period:]:
        current = current + alpha * (value - current)
        series.append(current)
    return series


def ema(values: Sequence[Decimal], period: int) -> Decimal | None:
    series = ema_series(values, period)
    return series[-1] if series else None


def rsi(values: Sequence[Decimal], period: int) -> Decimal | None:
    """Wilder's RSI: average gain and loss seeded with the simple mean of the first `period` changes,
    then smoothed as avg = (avg * (period - 1) + change) / period. Needs period + 1 values."""
    if len(values) < period + 1:
        return None
    changes = [later - earlier for earlier, later in pairwise(values)]
    avg_gain = sum((c for c in changes[:period] if c > 0), Decimal(0)) / period
    avg_loss = sum((-c for c in changes[:period] if c < 0), Decimal(0)) / period
    for change in changes[period:]:
        avg_gain = (avg_gain * (period - 1) + max(change, Decimal(0))) / period
        avg_loss = (avg_loss * (period - 1) + max(-change, Decimal(0))) / period
    if avg_loss == 0:
        return _HUNDRED if avg_gain > 0 else Decimal(50)  # no losses: 100; no movement at all: neutral
    return _HUNDRED - _HUNDRED / (1 + avg_gain / avg_loss)


def vwap(bars: Sequence[Bar]) -> Decimal | None:
    """Volume-weighted average price over the bars: each bar's own vwap when it has one, else its
    typical price (high + low + close) / 3."""
    total_volume = sum((bar.volume for bar in bars), Decimal(0))
    if total_volume <= 0:
        return None
    weighted = sum((_bar_price(bar) * bar.volume for bar in bars), Decimal(0))
    return weighted / total_volume


def _bar_price(bar: Bar) -> Decimal:
    return bar.vwap if bar.vwap is not None else (bar.high + bar.low + bar.close) / 3


def _macd_lines(closes: Sequence[Decimal]) -> tuple[list[Decimal], list[Decimal]]:
    """(MACD line, signal line), each aligned to end at the latest close."""
    fast, slow = ema_series(closes, _MACD_FAST), ema_series(closes, _MACD_SLOW)
    if not slow:
        return [], []
    line = [f - s for f, s in zip(fast[-len(slow):], slow, strict=True)]
    return line, ema_series(line, _MACD_SIGNAL)


def macd(closes: Sequence[Decimal]) -> Decimal | None:
    line, _ = _macd_lines(closes)
    return line[-1] if line else None


def macd_signal(closes: Sequence[Decimal]) -> Decimal | None:
    _, signal = _macd_lines(closes)
    return signal[-1] if signal else None


def macd_hist(closes: Sequence[Decimal]) -> Decimal | None:
    line, signal = _macd_lines(closes)
    return line[-1] - signal[-1] if signal else None


Indicator = Callable[[Sequence[Bar]], Decimal | None]


def bars_needed(name: str) -> int:
    """How many bars the (normalized) indicator needs before it has a value."""
    if name == "vwap":
        return 1
    if name == "macd":
        return _MACD_SLOW
    if name in ("macd_signal", "macd_hist"):
        return _MACD_SLOW + _MACD_SIGNAL - 1
    match = _PERIODIC.match(name)
    if match is None:
        return 1
    period = int(match.group(2))
    return period + 1 if match.group(1) == "rsi" else period


def parse_indicator(name: str, max_period: int = MAX_PERIOD) -> tuple[str, Indicator]:
    """The normalized name and the function computing it. ValueError for anything unsupported (periods
    above `max_period` included)."""
    normalized = name.strip().lower()

    def closes(bars: Sequence[Bar]) -> list[Decimal]:
        return [bar.close for bar in bars]

    fixed: dict[str, Indicator] = {
        "vwap": vwap,
        "macd": lambda bars: macd(closes(bars)),
        "macd_signal": lambda bars: macd_signal(closes(bars)),
        "macd_hist": lambda bars: macd_hist(closes(bars)),
    }
    if normalized in fixed:
        return normalized, fixed[normalized]
    match = _PERIODIC.match(normalized)
    if match is None:
        raise ValueError(f"unknown indicator {name!r}; supported: {', '.join(SUPPORTED_FORMS)} "
                         f"(N a whole number of bars, e.g. sma_20, ema_12, rsi_14)")
    kind, period = match.group(1), int(match.group(2))
    if not 1 <= period <= max_period or (kind == "rsi" and period < 2):
        low = 2 if kind == "rsi" else 1
        raise ValueError(f"indicator {name!r}: N must be between {low} and {max_period}")
    functions: dict[str, Callable[[Sequence[Decimal], int], Decimal | None]] = {"sma": sma, "ema": ema,
                                                                                "rsi": rsi}
    compute = functions[kind]
    return f"{kind}_{period}", lambda bars: compute(closes(bars), period)


def compute_indicators(bars: list[Bar], names: list[str], max_period: int = MAX_PERIOD
                       ) -> dict[str, Decimal | None]:
    """Each requested indicator over `bars` (oldest first), keyed by its normalized name (lower case,
    with underscore: "SMA20" -> "sma_20"). Every name is validated before anything is computed."""
    parsed = [parse_indicator(name, max_period) for name in names]
    results: dict[str, Decimal | None] = {}
    for normalized, compute in parsed:
        value = compute(bars)
        results[normalized] = None if value is None else value.quantize(_PLACES, ROUND_HALF_EVEN)
    return results
