"""get_market_data: quotes, bars and indicators for a few symbols."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Literal

from mcp.server.mcpserver import Context
from pydantic import Field

from broker.base import Bar, Quote, Timeframe
from broker.indicators import compute_indicators
from policies.orders import normalize_symbol
from policies.results import BarOut, MarketDataResult, SymbolData
from policies.violations import Code, deny
from tools.common import through_gate

if TYPE_CHECKING:
    from policies.gate import Agent, Gate

MAX_SYMBOLS = 20
MAX_BARS = 1000
DESCRIPTION = "Latest quote, bars and indicators (sma_N, ema_N, rsi_N, vwap) per symbol."


async def get_market_data(
    symbols: Annotated[list[str], Field(description="e.g. ['AAPL','BTC/USD']")],
    ctx: Context,
    data: Literal["snapshot", "quote", "bars"] = "snapshot",
    timeframe: Literal["1Min", "5Min", "15Min", "1Hour", "1Day"] = "1Day",
    limit: int = 30,
    indicators: list[str] | None = None,
) -> MarketDataResult:
    args = {"symbols": symbols, "data": data, "timeframe": timeframe, "limit": limit, "indicators": indicators}
    return await through_gate(ctx, "get_market_data", args,
                              lambda gate, agent: _market_data(gate, agent, symbols, data, timeframe, limit,
                                                               indicators or []),
                              acts_at_broker=False)


async def _market_data(gate: Gate, agent: Agent, symbols: list[str], data: str, timeframe: Timeframe,
                       limit: int, indicators: list[str]) -> MarketDataResult:
    wanted = list(dict.fromkeys(normalize_symbol(s) for s in symbols if s.strip()))
    if not wanted or len(wanted) > MAX_SYMBOLS:
        raise deny(Code.INVALID_ORDER, f"give 1 to {MAX_SYMBOLS} symbols")
    if not 1 <= limit <= MAX_BARS:
        raise deny(Code.INVALID_ORDER, f"limit must be between 1 and {MAX_BARS}")
    try:
        compute_indicators([], indicators)
    except ValueError as error:
        raise deny(Code.INVALID_ORDER, str(error)) from None
    need_bars = data == "bars" or bool(indicators)
    quotes = await gate.broker.get_quotes(wanted)
    bars: dict[str, list[Bar]] = {}
    if need_bars:
        results = await asyncio.gather(*(gate.broker.get_bars(s, timeframe, limit) for s in wanted),
                                       return_exceptions=True)
        bars = {s: r for s, r in zip(wanted, results, strict=True) if isinstance(r, list)}
    return MarketDataResult(data=[_symbol_data(s, quotes.get(s), bars.get(s), data, indicators) for s in wanted])


def _symbol_data(symbol: str, quote: Quote | None, bars: list[Bar] | None, data: str,
                 indicators: list[str]) -> SymbolData:
    if quote is None and not bars:
        return SymbolData(symbol=symbol, error=f"{Code.NO_MARKET_DATA}: no data for {symbol}")
    return SymbolData(
        symbol=symbol,
        last_price=quote.last if quote else None,
        bid=quote.bid if quote else None,
        ask=quote.ask if quote else None,
        as_of=quote.as_of if quote else None,
        bars=[BarOut(t=b.start, o=b.open, h=b.high, l=b.low, c=b.close, v=b.volume) for b in (bars or [])]
        if data == "bars" else [],
        indicators=compute_indicators(bars or [], indicators) if indicators else {},
    )
