#!/usr/bin/env python3
"""HTTP benchmarks: real `tradewarden serve --transport http` replicas, the SDK's streamable HTTP client,
one bearer token per agent. Not a test: it measures and prints.

    .venv/bin/python bench/http_bench.py [--seconds 3] [--backends sqlite,postgres] [--agents 1,8,32]

For each database (SQLite file; PostgreSQL 15 started in a temporary directory by tests/postgres.py, or
--postgres-url), with one replica and with two (a round-robin load balancer in the client), and 1, 8 and 32
concurrent agents: tool calls per second and p50/p99 latency (client side, per call) of `propose_trade`
(a gated write: identity, trading state, all pre-trade checks, quote, proposal row, audit intent and
outcome) and of a no-op tool on the same server (the floor: HTTP, auth, the MCP SDK; enabled only because
the servers are started with TRADEWARDEN_BENCH_NOOP=1). Writes a markdown table to stdout and to
bench/results-http.md. The load generator runs in this one Python process, on the same machine as the
servers and the database: on a small machine it competes with them for the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledger import db  # noqa: E402
from policies.agents import add_agent  # noqa: E402
from server.config import AgentConfig  # noqa: E402
from tests.server.http_servers import RoundRobin, ServerProcess, mcp_client, start_server  # noqa: E402

PROPOSE = {"symbol": "BTC/USD", "side": "buy", "notional": 10, "time_in_force": "gtc", "reasoning": "benchmark"}
BIG = 10**12


@dataclass
class Cell:
    backend: str
    replicas: int
    agents: int
    tool: str
    calls: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def write_config(path: Path, database_url: str) -> Path:
    path.write_text("\n".join([
        "[server]", f'database_url = "{database_url}"', "enforce_market_hours = false",
        "max_agents_per_account = 100", "requests_per_minute = 10000000", 'server_name = "tradewarden-bench"',
        f'request_state_keys = ["{secrets.token_hex(32)}"]', 'log_level = "warning"', ""]))
    return path


async def register_agents(database_url: str, count: int) -> list[str]:
    engine = db.create_engine(database_url)
    await db.upgrade(engine)
    tokens = []
    try:
        for i in range(count):
            agent = AgentConfig(id=f"bench-{i}", max_trade_size=BIG, max_position_size=BIG, max_daily_trades=10**6,
                                allowed_symbols=["*"], approval="auto", auto_approve_max_notional=BIG,
                                max_orders_per_window=10**6, duplicate_window_seconds=0, capital=BIG,
                                rolling_notional_max=BIG, max_gross_exposure=BIG, max_denials_per_window=10**6)
            async with db.transaction(db.session_factory(engine)) as session:
                tokens.append(await add_agent(session, agent, max_agents=100, actor="operator:bench",
                                              now=datetime.now(UTC)))
    finally:
        await engine.dispose()
    return tokens


async def run_cell(servers: list[ServerProcess], tokens: list[str], agents: int, tool: str, seconds: float,
                   backend: str) -> Cell:
    name, args = ("propose_trade", PROPOSE) if tool == "propose_trade" else ("bench_noop", {})
    latencies: list[float] = []
    errors = 0
    ports = [s.port for s in servers]
    ready = asyncio.Barrier(agents + 1)
    go = asyncio.Event()
    stop_at: list[float] = [0.0]

    async def one_agent(token: str) -> None:
        nonlocal errors
        async with mcp_client(servers[0].url, token, transport=RoundRobin(ports)) as client:
            for _ in range(3):  # warm up: connection, discovery, first calls
                await client.call_tool(name, args)
            await ready.wait()
            await go.wait()
            while time.monotonic() < stop_at[0]:
                started = time.perf_counter()
                result = await client.call_tool(name, args)
                elapsed = time.perf_counter() - started
                if result.is_error:
                    errors += 1
                else:
                    latencies.append(elapsed)

    tasks = [asyncio.create_task(one_agent(tokens[i])) for i in range(agents)]
    await ready.wait()
    begun = time.monotonic()
    stop_at[0] = begun + seconds
    go.set()
    await asyncio.gather(*tasks)
    took = time.monotonic() - begun
    return Cell(backend=backend, replicas=len(servers), agents=agents, tool=tool, calls=len(latencies),
                errors=errors, seconds=took, p50_ms=percentile(latencies, 50) * 1000,
                p99_ms=percentile(latencies, 99) * 1000)


async def bench_backend(backend: str, database_url: str, workdir: Path, agent_counts: list[int],
                        seconds: float) -> list[Cell]:
    config = write_config(workdir / f"{backend}.toml", database_url)
    tokens = await register_agents(database_url, max(agent_counts))
    servers: list[ServerProcess] = []
    cells: list[Cell] = []
    try:
        servers = await asyncio.gather(*(asyncio.to_thread(start_server, config, workdir,
                                                           env={"TRADEWARDEN_BENCH_NOOP": "1"}) for _ in range(2)))
        for replicas in (1, 2):
            for agents in agent_counts:
                for tool in ("propose_trade", "noop"):
                    cell = await run_cell(servers[:replicas], tokens, agents, tool, seconds, backend)
                    print(f"  {backend:8} replicas={replicas} agents={agents:2} {tool:13} "
                          f"{cell.rate:7.1f}/s p50 {cell.p50_ms:7.2f} ms p99 {cell.p99_ms:7.2f} ms"
                          f"{f' errors {cell.errors}' if cell.errors else ''}", file=sys.stderr, flush=True)
                    cells.append(cell)
    finally:
        for server in servers:
            server.stop()
    return cells


def table(cells: list[Cell]) -> str:
    rows = ["| database | replicas | agents | propose_trade calls/s | p50 ms | p99 ms | no-op calls/s | p50 ms "
            "| p99 ms |", "|---|---|---|---|---|---|---|---|---|"]
    keyed = {(c.backend, c.replicas, c.agents, c.tool): c for c in cells}
    for backend, replicas, agents in sorted({(c.backend, c.replicas, c.agents) for c in cells},
                                            key=lambda k: (k[0] != "sqlite", k[1], k[2])):
        gated, floor = keyed[(backend, replicas, agents, "propose_trade")], keyed[(backend, replicas, agents, "noop")]
        errors = f" ({gated.errors} errors)" if gated.errors else ""
        rows.append(f"| {backend} | {replicas} | {agents} | {gated.rate:.0f}{errors} | {gated.p50_ms:.1f} | "
                    f"{gated.p99_ms:.1f} | {floor.rate:.0f} | {floor.p50_ms:.1f} | {floor.p99_ms:.1f} |")
    return "\n".join(rows)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--agents", default="1,8,32")
    parser.add_argument("--postgres-url", default=None, help="an empty postgresql+asyncpg:// database to use")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results-http.md"))
    options = parser.parse_args()
    agent_counts = [int(a) for a in options.agents.split(",")]
    backends = [b.strip() for b in options.backends.split(",") if b.strip()]
    cells: list[Cell] = []
    pg_version = "-"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tw-http-bench-") as tmp:
        workdir = Path(tmp)
        for backend in backends:
            if backend == "sqlite":
                cells += await bench_backend("sqlite", f"sqlite+aiosqlite:///{workdir / 'bench.db'}", workdir,
                                             agent_counts, options.seconds)
            elif backend == "postgres":
                pg = None
                url = options.postgres_url
                if url is None:
                    from tests.postgres import PostgresServer

                    pg = PostgresServer.start()
                    url = pg.create_database("bench")
                    pg_version = pg.bin_dir.parent.name
                try:
                    cells += await bench_backend("postgres", url, workdir, agent_counts, options.seconds)
                finally:
                    if pg is not None:
                        pg.stop()
            else:
                parser.error(f"unknown backend {backend!r}")
    result = table(cells)
    header = (f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with "
              f"`bench/http_bench.py --seconds {options.seconds:g}` "
              f"on {os.cpu_count()} CPUs, Python {platform.python_version()}, PostgreSQL {pg_version} "
              f"(fsync off, loopback), simulated broker; load generator, servers and database on one machine. "
              f"Latency is per call at the client; calls/s is all agents together. Total run "
              f"{time.monotonic() - started:.0f} s.\n")
    text = f"{header}\n{result}\n"
    print(text)
    Path(options.output).write_text(text)
    errors = sum(c.errors for c in cells)
    if errors:
        print(f"{errors} calls failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
