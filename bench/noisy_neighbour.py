#!/usr/bin/env python3
"""A victim agent's propose_trade latency while another agent sends the heaviest get_market_data calls allowed.

    .venv/bin/python bench/noisy_neighbour.py [--calls N] [--attackers K]

Both agents talk to servers of one process (one event loop, one SQLite file), through the in-memory MCP
client, as two HTTP sessions would. The attacker asks for every symbol it may, every bar it may, and as
many indicators (with the longest periods) as the server accepts; the victim proposes trades one after the
other. Prints p50/p99 of the victim alone, then under attack, and what the attacker's calls cost.
The attacked phase stops after --calls victim calls or --seconds, whichever comes first.
Not a test: it measures and prints (and appends to bench/results-noisy-neighbour.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import percentile, write_config  # noqa: E402

SYMBOLS = ["AAPL", "MSFT", "SPY", "QQQ", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "AMD", "NFLX", "INTC",
           "IWM", "DIA", "JPM", "BAC", "XOM", "CVX", "KO", "PEP", "WMT", "DIS", "BTC/USD", "ETH/USD"]


TIMEFRAMES = ["1Min", "5Min", "15Min", "1Hour", "1Day"]


def heaviest_arguments(max_symbols: int, max_bars: int, max_total: int, max_indicators: int, max_period: int,
                       call: int = 0, rotate: bool = False) -> dict[str, Any]:
    """As many symbols, bars and long indicators as allowed. rotate: a new timeframe on every call, so the
    simulated market's cache of finished bars does not help (the worst case for the server)."""
    limit = max_bars
    symbols = min(max_symbols, max(1, max_total // limit))
    if symbols < max_symbols:  # more symbols at fewer bars each costs more per call than the reverse
        symbols = max_symbols
        limit = max(1, max_total // symbols)
    names = [f"{kind}_{max_period - i}" for i in range(max_indicators) for kind in ("rsi", "ema", "sma")]
    return {"symbols": SYMBOLS[:symbols], "data": "bars",
            "timeframe": TIMEFRAMES[call % len(TIMEFRAMES)] if rotate else "1Min", "limit": limit,
            "indicators": names[:max_indicators]}


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--attackers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=150.0, help="time budget of the attacked phase")
    parser.add_argument("--rotate", action="store_true", help="attacker changes timeframe on every call")
    args = parser.parse_args()

    from mcp import Client

    from server.app import create_server
    from server.config import load_config
    from server.logging import configure_logging
    from tools import market_data

    configure_logging("error")
    workdir = Path(tempfile.mkdtemp(prefix="tradewarden-noisy-"))
    config = load_config(str(write_config(workdir, agents=1 + args.attackers)), env={})
    # The bounds of the code under test (the unchanged code had no bound on indicators: 500 was the issue's).
    max_symbols = getattr(market_data, "MAX_SYMBOLS", 20)
    max_bars = getattr(market_data, "MAX_BARS", 1000)
    max_indicators = getattr(market_data, "MAX_INDICATORS", 500)
    max_period = getattr(market_data, "MAX_PERIOD", 500)
    max_total = getattr(market_data, "MAX_BARS_TOTAL", max_symbols * max_bars)
    heavy = heaviest_arguments(max_symbols, max_bars, max_total, max_indicators, max_period)

    async with Client(create_server(config, agent_id="bench-0")) as victim:
        async def propose(i: int) -> float:
            start = time.perf_counter()
            result = await victim.call_tool("propose_trade", {"symbol": "AAPL", "side": "buy", "qty": 1 + i % 7,
                                                              "reasoning": "bench", "strategy": "bench"})
            elapsed = (time.perf_counter() - start) * 1000
            assert not result.is_error, result
            return elapsed

        for i in range(20):
            await propose(i)
        # A server freezes its start-up heap HEAP_FREEZE_DELAY s after it starts (server/runtime.py); until then
        # each full collection scans the whole heap (~110 ms here, several while the attacker allocates).
        # Measure the steady state of a running server: after the freeze.
        from server.runtime import HEAP_FREEZE_DELAY

        await asyncio.sleep(HEAP_FREEZE_DELAY + 0.5)
        alone = [await propose(i) for i in range(args.calls)]

        attacker_costs: list[float] = []
        attacker_errors: list[str] = []
        stop = asyncio.Event()

        async def attack(index: int) -> None:
            async with Client(create_server(config, agent_id=f"bench-{index}")) as attacker:
                # A real attacker's client runs in its own process: its parsing and schema validation of the
                # large answers are not the server's cost, so they are left out of this shared event loop.
                async def no_validation(name: str, result: Any) -> None:
                    return None

                attacker.session.validate_tool_result = no_validation  # type: ignore[method-assign]
                call = 0
                while not stop.is_set():
                    arguments = heaviest_arguments(max_symbols, max_bars, max_total, max_indicators, max_period,
                                                   call, args.rotate)
                    call += 1
                    start = time.perf_counter()
                    result = await attacker.call_tool("get_market_data", arguments)
                    attacker_costs.append((time.perf_counter() - start) * 1000)
                    if result.is_error:
                        attacker_errors.append(str(result.content[0])[:200])

        attackers = [asyncio.create_task(attack(1 + k)) for k in range(args.attackers)]
        await asyncio.sleep(1.0)
        under_attack: list[float] = []
        budget_ends = time.perf_counter() + args.seconds
        for i in range(args.calls):
            under_attack.append(await propose(i))
            if time.perf_counter() > budget_ends:
                break
        stop.set()
        await asyncio.gather(*attackers)

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at {commit} with "
        f"`{' '.join(sys.argv[1:]) or 'defaults'}`; attacker: {len(heavy['symbols'])} symbols x {heavy['limit']} "
        f"bars ({'timeframe rotating' if args.rotate else heavy['timeframe']}), "
        f"{len(heavy['indicators'])} indicators (period up to {max_period})",
        "", "| measurement | p50 ms | p99 ms | max ms | n |", "|---|---|---|---|---|",
        f"| victim propose_trade, alone | {statistics.median(alone):.2f} | {percentile(alone, 99):.2f} | "
        f"{max(alone):.2f} | {len(alone)} |",
        f"| victim propose_trade, under attack | {statistics.median(under_attack):.2f} | "
        f"{percentile(under_attack, 99):.2f} | {max(under_attack):.2f} | {len(under_attack)} |",
        f"| attacker get_market_data (heaviest allowed) | {statistics.median(attacker_costs):.2f} | "
        f"{percentile(attacker_costs, 99):.2f} | {max(attacker_costs):.2f} | {len(attacker_costs)} |",
        f"\nattacker calls refused: {len(attacker_errors)}" + (f" (e.g. {attacker_errors[0]})" if attacker_errors
                                                             else ""),
    ]
    report = "\n".join(lines)
    print(report)  # stdout-ok: a benchmark script
    with (ROOT / "bench" / "results-noisy-neighbour.md").open("a") as out:
        out.write(report + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
