#!/usr/bin/env python3
"""The table of issue 12, measured in one run next to its floors. Not a test: it measures and prints.

    .venv/bin/python bench/issue12.py [--calls 200] [--seconds 4] [--verify-records 1000000]

Rows (2 cores, shared: the ratios to the floor of the same run are what count):
- propose_trade / execute_trade over stdio (`tradewarden serve`, simulated broker, SQLite file) next to a bare
  one-tool MCPServer over stdio (bench/bare_server.py, same SDK); propose also interleaved with executions;
- audited proposals/s and executions/s in one process, 8 agents (in-memory MCP clients), next to a bare MCP
  server's calls/s (8 in-memory clients) and durable SQLite commits/s (WAL, synchronous=FULL, raw driver);
- propose_trade p50 after 1k / 10k / 50k trades in the agent's last hour, and get_positions / get_orders /
  cancel_order at 50k trades of history, next to a fresh agent on the same database (history seeded by direct
  inserts through the models' tables: agent_trades, their trade_proposals and the simulated broker's orders,
  buys and sells in pairs so positions and cash stay flat and the books reconcile);
- `audit verify` of N records (bench/audit_verify.py: wall time, peak RSS);
- first tool result after spawn, next to the bare server.
Not measured here: placing an order via Alpaca next to Alpaca's own MCP server: bench/alpaca_peer.py measures it
(a throwaway venv with `alpaca-mcp-server`, both against tests/broker/alpaca_contract_server.py; see the results file).
Writes its table to bench/results-issue12-table.md, replacing the last one (not with --no-results-file); the
dated notes of each change are kept in bench/results-issue12.md, which this script never touches.
--no-group-commit: units of work commit one by one
(synchronous=FULL still), to show what group commit buys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import percentile, write_config  # noqa: E402

BARE = ROOT / "bench" / "bare_server.py"
HISTORY = {"bench-1": 1_000, "bench-2": 10_000, "bench-3": 50_000}  # trades in the agent's last hour
FRESH = "bench-0"


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


async def timed(call: Callable[[int], Awaitable[Any]], count: int) -> list[float]:
    samples: list[float] = []
    for i in range(count):
        start = time.perf_counter()
        await call(i)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _tradewarden(config: Path, agent: str) -> Any:
    from mcp import StdioServerParameters
    return StdioServerParameters(command=sys.executable, cwd=str(ROOT),
                                 args=["-m", "server.cli", "serve", "--agent", agent, "--config", str(config)])


def _bare() -> Any:
    from mcp import StdioServerParameters
    return StdioServerParameters(command=sys.executable, cwd=str(ROOT), args=[str(BARE)])


def _ok(result: Any, status: str | None = None) -> dict[str, Any]:
    content = result.structured_content
    if result.is_error or content is None or (status is not None and content.get("status") != status):
        raise RuntimeError(f"unexpected result: {result}")
    return dict(content)


PROPOSE = {"symbol": "AAPL", "side": "buy", "qty": 1, "reasoning": "bench", "strategy": "bench"}


BLOCK = 10  # calls of one kind in a row when the floor and ours alternate


async def stdio_rows(config: Path, calls: int) -> dict[str, list[float]]:
    """The bare no-op and our calls alternate in blocks of BLOCK calls (both servers running, the idle one
    waiting on its stdin), so the floor and ours are sampled in the same seconds of a noisy machine."""
    from mcp import Client, stdio_client

    out: dict[str, list[float]] = {"bare no-op": [], "propose": [], "execute": [], "propose interleaved": []}
    async with Client(stdio_client(_bare())) as bare, Client(stdio_client(_tradewarden(config, FRESH))) as client:
        for _ in range(30):
            await bare.call_tool("noop", {})
        for _ in range(20):
            _ok(await client.call_tool("propose_trade", PROPOSE), "approved")
        proposals: list[str] = []

        async def floor_block() -> None:
            out["bare no-op"] += await timed(lambda i: bare.call_tool("noop", {}), BLOCK)

        async def propose(i: int) -> None:
            proposals.append(_ok(await client.call_tool("propose_trade", PROPOSE), "approved")["proposal_id"])

        async def execute(i: int) -> None:
            _ok(await client.call_tool("execute_trade", {"proposal_id": proposals[len(out["execute"]) + i]}),
                "filled")

        for first in range(0, calls, BLOCK):
            await floor_block()
            out["propose"] += await timed(propose, min(BLOCK, calls - first))
        for first in range(0, calls, BLOCK):
            await floor_block()
            out["execute"] += await timed(execute, min(BLOCK, calls - first))
        for first in range(0, calls // 2, BLOCK):
            await floor_block()
            for _ in range(min(BLOCK, calls // 2 - first)):
                start = time.perf_counter()
                proposal = _ok(await client.call_tool("propose_trade", PROPOSE), "approved")["proposal_id"]
                out["propose interleaved"].append((time.perf_counter() - start) * 1000)
                _ok(await client.call_tool("execute_trade", {"proposal_id": proposal}), "filled")
    return out


async def startup_rows(config: Path, runs: int) -> dict[str, list[float]]:
    from mcp import Client, stdio_client

    out: dict[str, list[float]] = {"tradewarden": [], "bare": []}
    for _ in range(runs):  # alternate, so both see the same machine
        start = time.perf_counter()
        async with Client(stdio_client(_bare())) as bare:
            await bare.call_tool("noop", {})
            out["bare"].append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        async with Client(stdio_client(_tradewarden(config, FRESH))) as client:
            await client.call_tool("get_trading_status", {})
            out["tradewarden"].append((time.perf_counter() - start) * 1000)
    return out


def _units() -> tuple[int, int | None]:
    """Units of work begun and COMMITs so far in this process (commits: None on a tree without group commit)."""
    from ledger.db import UnitCounter

    return UnitCounter.begun, getattr(UnitCounter, "commits", None)


async def throughput(config: Any, seconds: float) -> dict[str, Any]:
    from mcp import Client
    from mcp.server import MCPServer

    from server.app import create_server

    latencies: dict[str, list[float]] = {}  # ms per loop body, calls in the window only
    batching: dict[str, float] = {}  # units of work per COMMIT in the window
    cpu_share: dict[str, float] = {}  # this process's CPU time over the window's wall time (1.0: one core busy)

    async def run(loop_body: Callable[[Any, int], Awaitable[int]], factory: Callable[[int], Any]) -> float:
        done = warmed = 0
        deadline = 0.0
        ready, all_warm = asyncio.Event(), asyncio.Event()
        samples = latencies.setdefault(getattr(loop_body, "__name__", "?"), [])

        async def agent(index: int) -> None:
            nonlocal done, warmed
            async with Client(factory(index)) as client:
                await loop_body(client, -1)  # warm
                warmed += 1
                if warmed == 8:
                    all_warm.set()
                await ready.wait()
                while time.perf_counter() < deadline:
                    began = time.perf_counter()
                    finished = await loop_body(client, index)
                    ended = time.perf_counter()
                    if ended <= deadline:  # not the clients' teardown: only calls in the window
                        done += finished
                        samples.append((ended - began) * 1000)

        tasks = [asyncio.create_task(agent(i)) for i in range(8)]
        await all_warm.wait()  # every agent connected and warm before the clock starts
        units_before = _units()
        cpu_before = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        ready.set()
        await asyncio.sleep(seconds)
        cpu_share[getattr(loop_body, "__name__", "?")] = (time.process_time() - cpu_before) / seconds
        await asyncio.gather(*tasks)
        units_after = _units()
        if units_before[1] is not None and units_after[1] is not None and units_after[1] > units_before[1]:
            batching[getattr(loop_body, "__name__", "?")] = ((units_after[0] - units_before[0])
                                                             / (units_after[1] - units_before[1]))
        return done / seconds

    def bare_factory(index: int) -> Any:
        server: MCPServer = MCPServer("bare")

        @server.tool(description="no-op")
        async def noop() -> dict[str, bool]:
            return {"ok": True}
        return server

    async def noop(client: Any, index: int) -> int:
        await client.call_tool("noop", {})
        return 1

    async def propose(client: Any, index: int) -> int:
        _ok(await client.call_tool("propose_trade", {**PROPOSE, "symbol": "MSFT"}), "approved")
        return 1

    async def propose_execute(client: Any, index: int) -> int:
        proposal = _ok(await client.call_tool("propose_trade", {**PROPOSE, "symbol": "MSFT"}), "approved")
        _ok(await client.call_tool("execute_trade", {"proposal_id": proposal["proposal_id"]}), "filled")
        return 1

    def ours(index: int) -> Any:
        return create_server(config, agent_id=f"bench-{index}")

    rates = {"bare calls/s": await run(noop, bare_factory), "proposals/s": await run(propose, ours),
             "executions/s": await run(propose_execute, ours)}
    return {**rates, "latencies": latencies, "units per commit": batching, "cpu share": cpu_share}


def durable_commits_per_second(workdir: Path, seconds: float) -> float:
    """The raw driver committing one small row at a time, WAL + synchronous=FULL: what the disk allows."""
    connection = sqlite3.connect(workdir / "floor.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT)")
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO t (payload) VALUES (?)", ("x" * 200,))
        connection.execute("COMMIT")
        done += 1
    rate = done / (time.perf_counter() - start)
    connection.close()
    return rate


def seed_history(database: Path, trades_by_agent: dict[str, int], now: datetime) -> None:
    """Filled orders of the last hour, as the gate and the simulated broker leave them: one trade_proposals
    row (executed), one agent_trades row and one sim_orders row per order; buys and sells alternate at one
    price, so the agent's position and the broker's stay flat."""
    from sqlalchemy import create_engine, insert

    from ledger.models import AgentTrade, SimOrder, TradeProposal
    from ledger.traded import window_micros

    engine = create_engine(f"sqlite:///{database}")
    price = Decimal("100.00")
    # What the ORM hook of ledger.models stores on a filled row (this Core insert bypasses the hook).
    micros = window_micros("filled", Decimal(1), price, price, Decimal(1))
    with engine.begin() as connection:
        for agent_id, count in trades_by_agent.items():
            for first in range(0, count, 5_000):
                proposals, trades, orders = [], [], []
                for i in range(first, min(count, first + 5_000)):
                    at = now - timedelta(minutes=59) + timedelta(seconds=3000 * i / count)
                    side = "buy" if i % 2 == 0 else "sell"
                    proposal_id, order_id = str(uuid.uuid4()), str(uuid.uuid4())
                    proposals.append({
                        "id": proposal_id, "agent_id": agent_id, "symbol": "AAPL", "side": side, "qty": Decimal(1),
                        "notional": None, "order_type": "market", "limit_price": None, "stop_price": None,
                        "time_in_force": "day", "extended_hours": False, "strategy": "bench",
                        "reasoning": "history", "confidence": None, "status": "executed", "order_hash": "0" * 64,
                        "reference_price": price, "estimated_notional": price, "violations": [],
                        "approval_mode": "auto", "trading_mode": "paper", "created_at": at,
                        "expires_at": at + timedelta(minutes=5), "decided_at": at, "decided_by": "policy",
                        "decided_via": "auto", "decision_note": None, "updated_at": at, "audit_event_id": None})
                    trades.append({
                        "id": str(uuid.uuid4()), "agent_id": agent_id, "proposal_id": proposal_id,
                        "client_order_id": proposal_id, "order_id": order_id, "symbol": "AAPL", "side": side,
                        "quantity": Decimal(1), "notional": None, "order_type": "market", "limit_price": None,
                        "stop_price": None, "time_in_force": "day", "reserved_notional": price, "price": price,
                        "filled_qty": Decimal(1), "strategy": "bench", "reasoning": "history", "status": "filled",
                        "reject_reason": None, "created_at": at, "submitted_at": at, "executed_at": at,
                        "updated_at": at, "audit_event_id": None, "window_micros": micros})
                    orders.append({
                        "id": order_id, "client_order_id": proposal_id, "symbol": "AAPL", "side": side,
                        "qty": Decimal(1), "notional": None, "order_type": "market", "limit_price": None,
                        "stop_price": None, "time_in_force": "day", "status": "filled", "filled_qty": Decimal(1),
                        "filled_avg_price": price, "submitted_at": at, "updated_at": at, "filled_at": at})
                connection.execute(insert(TradeProposal), proposals)
                connection.execute(insert(AgentTrade), trades)
                connection.execute(insert(SimOrder), orders)
    engine.dispose()


async def history_rows(workdir: Path, calls: int) -> dict[str, list[float]]:
    from mcp import Client

    from ledger import db
    from server.app import create_server
    from server.config import load_config

    config_path = write_config(workdir)
    config = load_config(str(config_path), env={})
    database = workdir / "bench.db"
    engine = db.create_engine(f"sqlite+aiosqlite:///{database}")
    await db.upgrade(engine)
    await engine.dispose()
    seed_history(database, HISTORY, datetime.now(UTC))

    out: dict[str, list[float]] = {}
    for agent in [FRESH, *HISTORY]:
        async with Client(create_server(config, agent_id=agent)) as client:
            for _ in range(5):
                _ok(await client.call_tool("propose_trade", PROPOSE), "approved")
            out[f"propose {agent}"] = await timed(
                lambda i: client.call_tool("propose_trade", PROPOSE), calls if agent != "bench-3" else calls // 2)
            if agent not in (FRESH, "bench-3"):
                continue
            out[f"get_positions {agent}"] = await timed(lambda i: client.call_tool("get_positions", {}), calls // 2)
            out[f"get_orders {agent}"] = await timed(lambda i: client.call_tool("get_orders", {}), calls // 2)
            resting: list[str] = []
            for _ in range(calls // 4):  # limit buys far below the market: they rest until cancelled
                proposal = _ok(await client.call_tool("propose_trade", {**PROPOSE, "order_type": "limit",
                                                                        "limit_price": 1}), "approved")
                order = _ok(await client.call_tool("execute_trade", {"proposal_id": proposal["proposal_id"]}))
                resting.append(order["order_id"])

            async def cancel(i: int, resting: list[str] = resting) -> None:
                _ok(await client.call_tool("cancel_order", {"order_id": resting[i]}), "canceled")

            out[f"cancel {agent}"] = await timed(cancel, len(resting))
    return out


def audit_verify(records: int) -> dict[str, Any]:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "audit_verify.py"), "--records", str(records)],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def fmt(ms: float) -> str:
    return f"{ms:.2f} ms"


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--startups", type=int, default=5)
    parser.add_argument("--verify-records", type=int, default=1_000_000)
    parser.add_argument("--skip", action="append", default=[], choices=["stdio", "throughput", "history", "verify"])
    parser.add_argument("--no-group-commit", action="store_true",
                        help="units of work commit one by one (synchronous=FULL still): what grouping buys")
    parser.add_argument("--no-results-file", action="store_true", help="print only, leave the results file")
    args = parser.parse_args()
    if args.no_group_commit:
        from ledger import group_commit

        group_commit.writer_of = lambda engine: None  # transaction() falls back to one COMMIT per unit

    from server.config import load_config
    from server.logging import configure_logging

    configure_logging("error")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tw-issue12-") as tmp:
        work = Path(tmp)
        lines = ["| what | measured | floor / peer, same run |", "|---|---|---|"]
        if "stdio" not in args.skip:
            (work / "stdio").mkdir()
            stdio_config = write_config(work / "stdio")
            s = await stdio_rows(stdio_config, args.calls)
            floor = p50(s["bare no-op"])
            lines += [
                f"| `propose_trade` p50 / p99 over stdio | {fmt(p50(s['propose']))} / "
                f"{fmt(percentile(s['propose'], 99))} ({p50(s['propose']) / floor:.1f}× the no-op); interleaved with "
                f"executes: {fmt(p50(s['propose interleaved']))} ({p50(s['propose interleaved']) / floor:.1f}×) | "
                f"bare no-op {fmt(floor)} / {fmt(percentile(s['bare no-op'], 99))} |",
                f"| `execute_trade` p50 over stdio (market, fills) | {fmt(p50(s['execute']))} "
                f"({p50(s['execute']) / floor:.1f}×) | |",
            ]
        if "throughput" not in args.skip:
            (work / "tp").mkdir()
            tp_config = load_config(str(write_config(work / "tp")), env={})
            t = await throughput(tp_config, args.seconds)
            durable = durable_commits_per_second(work, 2.0)
            lat, per_commit, busy = t["latencies"], t["units per commit"], t["cpu share"]

            def spread(name: str) -> str:
                cell = f"p50 {fmt(p50(lat[name]))} / p99 {fmt(percentile(lat[name], 99))} a call"
                cell += f", {per_commit[name]:.1f} units per COMMIT" if name in per_commit else ""
                # Below 100 %, the process waited (for COMMITs' syncs) rather than computed.
                return cell + f", CPU {busy[name]:.0%} of one core"

            lines += [
                f"| audited proposals/s, one process, 8 agents (in-memory MCP clients, SQLite file) | "
                f"{t['proposals/s']:.0f}/s ({spread('propose')}) | bare MCP "
                f"{t['bare calls/s']:,.0f} calls/s; durable SQLite (raw driver, synchronous=FULL) {durable:,.0f} "
                f"commits/s |",
                f"| executions/s, one process, 8 agents (propose + execute, in-memory MCP clients, SQLite file) | "
                f"{t['executions/s']:.0f}/s ({spread('propose_execute')}) | |",
            ]
        lines.append("| placing one order via Alpaca (propose + execute) vs Alpaca's own MCP server | not measured "
                     "(see below) | |")
        if "history" not in args.skip:
            (work / "history").mkdir()
            h = await history_rows(work / "history", max(20, args.calls // 4))
            fresh = p50(h[f"propose {FRESH}"])
            lines.append(
                "| propose after 1k / 10k / 50k trades in the agent's last hour (in memory) | "
                + " / ".join(f"{fmt(p50(h[f'propose {a}']))} ({p50(h[f'propose {a}']) / fresh:.1f}×)" for a in HISTORY)
                + f" | {fmt(fresh)} fresh |")
            cells = []
            floors = []
            for tool in ("get_positions", "get_orders", "cancel"):
                busy, idle = p50(h[f"{tool} bench-3"]), p50(h[f"{tool} {FRESH}"])
                cells.append(f"{fmt(busy)} ({busy / idle:.1f}×)")
                floors.append(fmt(idle))
            lines.append("| `get_positions` / `get_orders` (open) / `cancel` at 50k trades of history "
                         f"(in memory) | {' / '.join(cells)} | {' / '.join(floors)} fresh |")
        if "verify" not in args.skip:
            v = audit_verify(args.verify_records)
            lines.append(f"| `audit verify`, {args.verify_records:,} records | {v['verify_wall_seconds']:.1f} s, "
                         f"{v['peak_rss_mb']:.0f} MB peak | |")
        if "stdio" not in args.skip:
            st = await startup_rows(stdio_config, args.startups)
            ours, bare = p50(st["tradewarden"]), p50(st["bare"])
            lines.append(f"| first tool result after spawn (p50 of {args.startups}) | {ours:.0f} ms "
                         f"({ours / bare:.2f}× the bare server) | bare server {bare:.0f} ms |")
    report = "\n".join(lines)
    print(report)  # stdout-ok: a benchmark script
    note = ("Placing an order via Alpaca next to Alpaca's own MCP server (`alpaca-mcp-server` in a throwaway venv "
            "against tests/broker/alpaca_contract_server.py) is not measured by this command: "
            "bench/alpaca_peer.py measures it.")
    if args.no_results_file:
        return 0
    (ROOT / "bench" / "results-issue12-table.md").write_text(
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{shlex.join(sys.argv)}` "
        f"({time.perf_counter() - started:.0f} s; 2 shared cores)\n\n{report}\n\n{note}\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
