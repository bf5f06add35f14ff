"""get_market_data: quotes, bars and indicators for a few symbols.

Bounded so one agent's call cannot stall the others: at most MAX_SYMBOLS symbols, MAX_BARS bars each and
MAX_BARS_TOTAL bars in all, MAX_INDICATORS indicators with periods up to MAX_PERIOD. The work is done in
small steps that hand the event loop back between them (bars per symbol, one indicator at a time), so other
agents' calls run in between.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from mcp.server.mcpserver import Context
from pydantic import Field

from broker.base import Bar, Quote, Timeframe
from broker.indicators import bars_needed, compute_indicators, parse_indicator
from policies.orders import normalize_symbol
from policies.results import BarOut, MarketDataResult, SymbolData, price_text
from policies.violations import Code, deny
from tools.common import compact_call_result, nothing_to_read, read_through_gate

if TYPE_CHECKING:
    from policies.gate import Agent, Gate

MAX_SYMBOLS = 20
MAX_BARS = 1000
MAX_BARS_TOTAL = 1000  # symbols x limit, when bars are fetched (for bars or indicators)
MAX_INDICATORS = 10
MAX_PERIOD = 200
STEP_SECONDS = 0.0005  # computation between two hand-backs of the event loop

DESCRIPTION = (
    "Latest quote per symbol; data='bars' adds OHLCV bars. Indicators on the last `limit` bar closes: sma_N, "
    "ema_N, rsi_N (N up to 200), vwap, macd, macd_signal, macd_hist; one without enough bars is left out, "
    f"with the reason in notes. 1-{MAX_SYMBOLS} symbols, limit 1-{MAX_BARS}, symbols x limit <= "
    f"{MAX_BARS_TOTAL} with bars or indicators, up to {MAX_INDICATORS} indicators.")


async def get_market_data(
    symbols: Annotated[list[Annotated[str, Field(max_length=32)]],
                       Field(min_length=1, max_length=MAX_SYMBOLS, description="e.g. ['AAPL','BTC/USD']")],
    ctx: Context,
    data: Literal["snapshot", "quote", "bars"] = "snapshot",
    timeframe: Literal["1Min", "5Min", "15Min", "1Hour", "1Day"] = "1Day",
    limit: Annotated[int, Field(ge=1, le=MAX_BARS)] = 30,
    indicators: Annotated[list[Annotated[str, Field(max_length=16)]],
                          Field(max_length=MAX_INDICATORS, description="e.g. ['sma_20','rsi_14']")] = [],  # noqa: B006 - pydantic copies defaults
) -> MarketDataResult:
    args = {"symbols": symbols, "data": data, "timeframe": timeframe, "limit": limit, "indicators": indicators}
    result = await read_through_gate(ctx, "get_market_data", args, nothing_to_read,
                                     lambda gate, agent, _: _market_data(gate, agent, symbols, data, timeframe,
                                                                         limit, list(indicators or [])))
    # Up to a thousand bars make ~100 KB of JSON: it is written in a worker thread, so the event loop (and every
    # other agent's call) is held only for the GIL's switch interval at a time, not for the whole answer.
    answer: Any = await asyncio.to_thread(compact_call_result, result)
    return cast(MarketDataResult, answer)  # the SDK passes a CallToolResult through, checked against the schema


def _check_arguments(symbols: list[str], data: str, limit: int, indicators: list[str]) -> list[str]:
    """The symbols to fetch; INVALID_ARGUMENT (at once, before any work) for anything out of bounds."""
    wanted = list(dict.fromkeys(normalize_symbol(s) for s in symbols if s.strip()))
    if not wanted or len(wanted) > MAX_SYMBOLS:
        raise deny(Code.INVALID_ARGUMENT, f"give 1 to {MAX_SYMBOLS} symbols")
    if not 1 <= limit <= MAX_BARS:
        raise deny(Code.INVALID_ARGUMENT, f"limit must be between 1 and {MAX_BARS}")
    if len(indicators) > MAX_INDICATORS:
        raise deny(Code.INVALID_ARGUMENT, f"at most {MAX_INDICATORS} indicators per call (got {len(indicators)})")
    for name in indicators:
        try:
            parse_indicator(name, max_period=MAX_PERIOD)
        except ValueError as error:
            raise deny(Code.INVALID_ARGUMENT, str(error)) from None
    if (data == "bars" or indicators) and len(wanted) * limit > MAX_BARS_TOTAL:
        raise deny(Code.INVALID_ARGUMENT, f"{len(wanted)} symbols x {limit} bars is more than {MAX_BARS_TOTAL} "
                                          "bars in one call; ask for fewer symbols or a smaller limit")
    return wanted


async def _market_data(gate: Gate, agent: Agent, symbols: list[str], data: str, timeframe: Timeframe,
                       limit: int, indicators: list[str]) -> MarketDataResult:
    wanted = _check_arguments(symbols, data, limit, indicators)
    quotes = await gate.broker.get_quotes(wanted)  # the broker adapter bounds each request and its retries
    results: list[SymbolData] = []
    for symbol in wanted:  # one symbol at a time, the loop handed back in between
        bars: list[Bar] | None = None
        if data == "bars" or indicators:
            try:
                bars = await gate.broker.get_bars(symbol, timeframe, limit)
            except Exception:  # one symbol without bars does not fail the others
                bars = None
            await asyncio.sleep(0)
        results.append(await _symbol_data(symbol, quotes.get(symbol), bars, data, limit, indicators))
    return MarketDataResult(data=results)


async def _symbol_data(symbol: str, quote: Quote | None, bars: list[Bar] | None, data: str, limit: int,
                       indicators: list[str]) -> SymbolData:
    if quote is None and not bars:
        return SymbolData(symbol=symbol, error=f"{Code.NO_MARKET_DATA}: no data for {symbol}")
    values: dict[str, Decimal | None] = {}
    notes: dict[str, str] = {}
    started = time.perf_counter()
    for name in indicators:
        values.update(compute_indicators(bars or [], [name], max_period=MAX_PERIOD))
        key = next(reversed(values))
        if values[key] is None:
            notes[key] = _missing_reason(key, len(bars or []), limit)
        if time.perf_counter() - started > STEP_SECONDS:
            await asyncio.sleep(0)
            started = time.perf_counter()
    return SymbolData(
        symbol=symbol,
        last_price=price_text(quote.last) if quote else None,
        bid=price_text(quote.bid) if quote else None,
        ask=price_text(quote.ask) if quote else None,
        as_of=quote.as_of if quote else None,
        bars=[BarOut(t=b.start, o=price_text(b.open), h=price_text(b.high), l=price_text(b.low),
                     c=price_text(b.close), v=b.volume) for b in (bars or [])] if data == "bars" else [],
        indicators=values,
        notes=notes,
    )


def _missing_reason(name: str, have: int, limit: int) -> str:
    need = bars_needed(name)
    if need > have:
        return f"needs {need} bars, only {have} available" if have < limit else f"needs {need} bars, limit is {limit}"
    return "no volume in these bars" if name == "vwap" else "not computable from these bars"
