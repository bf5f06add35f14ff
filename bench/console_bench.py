#!/usr/bin/env python3
"""Console benchmark: server time of the operator console's pages with 32 agents and 100k trades, and whether
the live feed keeps up with 200 events/s. Not a test: it measures and prints (bounded in count and time).

    .venv/bin/python bench/console_bench.py [--agents 32] [--trades 100000] [--repeat 10]

Pages: the console app (server/cli_console.py's ConsoleApp, the same one `tradewarden console` serves) is called
in process through httpx's ASGI transport, so the figures are the server's time (routing, authentication, the
operator layer's queries, rendering), without a network. The ledger is a SQLite file seeded directly with
filled trades (and their proposals), spread over 30 days, 1/30 of them today.
The live feed (when the event stream is present): audit records are appended at 200/s for 5 s while a console
session listens on /console/events/ws; it reports how many arrived and the lag from append to receipt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx2  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from ledger.db import transaction  # noqa: E402
from ledger.models import AgentTrade, TradeProposal  # noqa: E402
from policies.operator_registry import add_operator  # noqa: E402
from policies.operators import CLI_OPERATOR  # noqa: E402
from server.cli_console import ConsoleApp  # noqa: E402
from server.config import AgentConfig, Config, ServerConfig  # noqa: E402
from server.startup import check_ledger  # noqa: E402

SYMBOLS = ["AAPL", "MSFT", "SPY", "NVDA", "AMZN"]
STRATEGIES = ["momentum", "mean-reversion", "swing"]


async def seed(sessions: Any, agents: list[str], trades: int, now: datetime) -> None:
    rng = random.Random(7)
    batch: list[tuple[dict[str, Any], dict[str, Any]]] = []
    price = {symbol: Decimal(100 + 50 * i) for i, symbol in enumerate(SYMBOLS)}
    for n in range(trades):
        agent = agents[n % len(agents)]
        symbol = SYMBOLS[(n // len(agents)) % len(SYMBOLS)]
        side = "buy" if (n // (len(agents) * len(SYMBOLS))) % 2 == 0 else "sell"
        price[symbol] = max(Decimal(1), price[symbol] * Decimal(1 + rng.uniform(-0.01, 0.01))).quantize(
            Decimal("0.01"))
        at = now - timedelta(days=30) + timedelta(seconds=30 * 86400 * n / trades)
        pid = str(uuid.uuid4())
        common = {"agent_id": agent, "symbol": symbol, "side": side, "order_type": "market", "limit_price": None,
                  "stop_price": None, "time_in_force": "day", "strategy": STRATEGIES[n % 3],
                  "reasoning": "bench", "created_at": at, "updated_at": at}
        proposal = {**common, "id": pid, "qty": Decimal(1), "notional": None, "extended_hours": False,
                    "confidence": None, "status": "executed", "order_hash": "0" * 64, "reference_price": price[symbol],
                    "estimated_notional": price[symbol], "violations": [], "approval_mode": "auto",
                    "trading_mode": "paper", "expires_at": at + timedelta(minutes=5), "decided_at": at,
                    "decided_by": "auto", "decided_via": "auto", "decision_note": None}
        trade = {**common, "id": str(uuid.uuid4()), "proposal_id": pid, "client_order_id": pid, "order_id": pid,
                 "quantity": Decimal(1), "notional": None, "reserved_notional": price[symbol], "price": price[symbol],
                 "filled_qty": Decimal(1), "status": "filled", "reject_reason": None, "submitted_at": at,
                 "executed_at": at}
        batch.append((proposal, trade))
        if len(batch) == 5000 or n == trades - 1:
            async with transaction(sessions) as session:
                await session.execute(insert(TradeProposal), [p for p, _ in batch])
                await session.execute(insert(AgentTrade), [t for _, t in batch])
            batch = []


async def timed(client: httpx2.AsyncClient, path: str, repeat: int) -> tuple[float, float, int]:
    await client.get(path)  # warm: templates compiled, caches filled
    times = []
    status = 0
    for _ in range(repeat):
        started = time.perf_counter()
        answer = await client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        status = answer.status_code
    return statistics.median(times), max(times), status


async def feed(app: ConsoleApp, token: str, rate: int, seconds: float) -> str:
    """Append `rate` audit records a second (risk alerts, each in its own transaction) while a console session
    listens on the live feed's WebSocket; how many arrive, and the lag from commit to receipt."""
    try:
        import server.console_events  # the live feed's stream (needs server/events_ws.py)
    except ImportError:
        return "The live feed was not measured: this build has no event stream (server/events_ws.py)."
    import uvicorn
    import websockets

    from policies import audit
    from tests.postgres import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(app.surfaces, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        async with httpx2.AsyncClient(base_url=base) as client:
            await client.post("/console/login", data={"token": token})
            cookie = f"tw_console={client.cookies['tw_console']}"
        total = int(rate * seconds)
        sent: dict[int, float] = {}
        lags: list[float] = []
        url = base.replace("http://", "ws://") + "/console/events/ws"
        async with websockets.connect(url, origin=base, additional_headers={"Cookie": cookie},  # type: ignore[arg-type]
                                      max_queue=None) as socket:
            while json.loads(await socket.recv())["message_type"] != "replay.complete":
                pass

            async def produce() -> None:
                started = time.perf_counter()
                for n in range(total):
                    delay = started + n / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    async with transaction(app.runtime.sessions) as session:
                        await audit.append(session, ts=app.runtime.clock(), actor="system", kind="risk.alert",
                                           payload={"severity": "info", "code": "BENCH", "message": "bench", "n": n})
                    sent[n] = time.perf_counter()

            async def consume() -> None:
                while len(lags) < total:
                    message = json.loads(await asyncio.wait_for(socket.recv(), 10))
                    n = message.get("payload", {}).get("n")
                    if message.get("message_type") == "agent.risk.alert" and isinstance(n, int):
                        lags.append((time.perf_counter() - sent.get(n, time.perf_counter())) * 1000)

            producing = time.perf_counter()
            producer = asyncio.create_task(produce())
            with contextlib.suppress(TimeoutError):  # what did not arrive within 10 s is reported as missing
                await consume()
            await producer
            elapsed = time.perf_counter() - producing
        lags.sort()
        p = (lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]) if lags else (lambda q: float("nan"))
        return (f"Live feed: {total} events appended at {total / elapsed:.0f}/s (target {rate}/s) for {seconds:.0f} s; "
                f"{len(lags)} received by the console's WebSocket; lag from commit to receipt p50 {p(0.5):.0f} ms, "
                f"p99 {p(0.99):.0f} ms, max {lags[-1] if lags else float('nan'):.0f} ms.")
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


async def main(agents_count: int, trades: int, repeat: int) -> int:
    with tempfile.TemporaryDirectory() as root:
        agents = [f"agent-{i:02d}" for i in range(agents_count)]
        config = Config(server=ServerConfig(database_url=f"sqlite+aiosqlite:///{Path(root) / 'bench.db'}",
                                            enforce_market_hours=False, max_agents_per_account=max(64, agents_count)),
                        agents=[AgentConfig(id=agent, allowed_symbols=["*"]) for agent in agents])
        await check_ledger(config)  # the console never creates a ledger; a deployment's first server does
        app = ConsoleApp(config)
        async with app.running():
            runtime = app.runtime
            started = time.perf_counter()
            await seed(runtime.sessions, agents, trades, runtime.clock())
            print(f"seeded {trades} trades for {agents_count} agents in {time.perf_counter() - started:.1f} s",
                  file=sys.stderr)
            async with transaction(runtime.sessions) as session:
                token = await add_operator(session, "bench", "admin", by=CLI_OPERATOR, now=runtime.clock())
            transport = httpx2.ASGITransport(app=app.surfaces)
            async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                          headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
                rows = []
                for label, path in [("overview", "/console/"), ("agents", "/console/agents"),
                                    ("one agent (performance, equity chart)", f"/console/agents/{agents[0]}"),
                                    ("approvals", "/console/approvals"), ("GET /api/status", "/api/status"),
                                    ("GET /api/agents", "/api/agents")]:
                    p50, worst, status = await timed(client, path, repeat)
                    rows.append(f"| {label} | `{path}` | {status} | {p50:.0f} | {worst:.0f} |")
            feed_line = await feed(app, token, rate=200, seconds=5)
        print(f"Console pages, {agents_count} agents, {trades} filled trades (SQLite), {repeat} requests each, "
              "server time in ms:\n")
        print("| page | path | status | p50 ms | max ms |\n|---|---|---|---|---|")
        print("\n".join(rows))
        print(f"\n{feed_line}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--trades", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=10)
    arguments = parser.parse_args()
    started_at = datetime.now(UTC)
    sys.exit(asyncio.run(main(arguments.agents, arguments.trades, arguments.repeat)))
