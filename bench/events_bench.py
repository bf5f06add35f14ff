#!/usr/bin/env python3
"""Event stream benchmark: two HTTP replicas on one PostgreSQL, 32 agents trading through a round-robin load
balancer, operators on the WebSocket stream. Not a test: it measures and prints.

    .venv/bin/python bench/events_bench.py [--seconds 5] [--agents 32] [--operators 10] [--postgres-url URL]

Reports, for propose_trade + execute_trade (a gated write, then a broker order that fills):
1. trading latency (client side, p50/p99 per call) with 0 connected operators;
2. the same with N operators connected (half to each replica), and the event delivery lag: the time from an
   event's audit record (stamped just before its transaction commits) to its arrival at a WebSocket client,
   p50/p99 over every event every client received (the clients on the replica that did not commit it included);
3. the same trading latency with a webhook endpoint that hangs on every request (events ["*"]).
Writes a markdown table to stdout and bench/results-events.md. The load generator, both replicas and
PostgreSQL share this machine's CPUs.

The replicas are processes of this script (`--serve`): the HTTP app of `tradewarden serve` with an operator
authenticator that knows the benchmark's one operator token (operators' registry: trust-identity's work).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import percentile, register_agents  # noqa: E402
from tests.postgres import free_port  # noqa: E402
from tests.server.http_servers import RoundRobin, ServerProcess, mcp_client  # noqa: E402

TOKEN_ENV = "TW_BENCH_OPERATOR_TOKEN"
PROPOSE = {"symbol": "BTC/USD", "side": "buy", "notional": 10, "time_in_force": "gtc", "reasoning": "benchmark"}


def serve(config_path: str, port: int) -> None:
    """One replica: the HTTP app with the benchmark's operator."""
    import uvicorn

    from policies.operators import OperatorIdentity, Role
    from server.config import load_config
    from server.http import build_http_app
    from server.logging import configure_logging

    token = os.environ[TOKEN_ENV]
    operator = OperatorIdentity("bench", Role.VIEWER)

    async def authenticate(presented: str) -> OperatorIdentity | None:
        return operator if secrets.compare_digest(presented, token) else None

    config = load_config(config_path)
    configure_logging("warning", False)
    app = build_http_app(config, host="127.0.0.1", port=port, authenticate_operator=authenticate)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)


def start_replica(config: Path, workdir: Path, token: str) -> ServerProcess:
    import httpx2

    port = free_port()
    log = workdir / f"replica-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, __file__, "--serve", str(config), str(port)], cwd=ROOT,
                                   stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, TOKEN_ENV: token})
    server = ServerProcess(port=port, process=process, log=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"replica exited:\n{server.log_tail()}")
        try:
            if httpx2.get(f"{server.base}/healthz", timeout=2).status_code == 200:
                return server
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"replica did not start:\n{server.log_tail()}")


def write_config(path: Path, database_url: str, hook_url: str | None = None) -> Path:
    lines = ["[server]", f'database_url = "{database_url}"', "enforce_market_hours = false",
             "max_agents_per_account = 100", "requests_per_minute = 10000000", 'server_name = "tradewarden-bench"',
             f'request_state_keys = ["{secrets.token_hex(32)}"]', 'log_level = "warning"', ""]
    if hook_url:
        lines += ["[[webhooks]]", f'url = "{hook_url}"', 'events = ["*"]', 'secret_env = "TW_BENCH_HOOK_SECRET"', ""]
    path.write_text("\n".join(lines))
    return path


# proposal id → when its propose_trade answer reached the agent (after the commit): the lower bound of the lag.
ANSWERED: dict[str, datetime] = {}


async def trade(servers: list[ServerProcess], tokens: list[str], seconds: float) -> tuple[list[float], int]:
    """Every agent proposes and executes in a loop for `seconds`; per-call latencies (s) and errors."""
    latencies: list[float] = []
    errors = 0
    ports = [s.port for s in servers]
    ready = asyncio.Barrier(len(tokens) + 1)
    go = asyncio.Event()
    stop_at = [0.0]

    async def agent(token: str) -> None:
        nonlocal errors
        async with mcp_client(servers[0].url, token, transport=RoundRobin(ports)) as client:
            await client.call_tool("get_trading_status", {})
            await ready.wait()
            await go.wait()
            while time.monotonic() < stop_at[0]:
                started = time.perf_counter()
                proposal = await client.call_tool("propose_trade", PROPOSE)
                middle = time.perf_counter()
                if proposal.is_error or proposal.structured_content is None:
                    errors += 1
                    continue
                ANSWERED[proposal.structured_content["proposal_id"]] = datetime.now(UTC)
                executed = await client.call_tool("execute_trade",
                                                  {"proposal_id": proposal.structured_content["proposal_id"]})
                ended = time.perf_counter()
                latencies.append(middle - started)
                if executed.is_error:
                    errors += 1
                else:
                    latencies.append(ended - middle)

    tasks = [asyncio.create_task(agent(t)) for t in tokens]
    await ready.wait()
    stop_at[0] = time.monotonic() + seconds
    go.set()
    await asyncio.gather(*tasks)
    return latencies, errors


async def operators(servers: list[ServerProcess], count: int, token: str, stop: asyncio.Event,
                    connected: asyncio.Event, arrivals: list[tuple[str, datetime]]) -> tuple[list[float], int]:
    """`count` WebSocket clients (spread over the replicas) collecting the lag of every live event."""
    import websockets

    lags: list[float] = []
    received = [0]
    ready = [0]

    async def client(server: ServerProcess) -> None:
        url = f"ws://127.0.0.1:{server.port}/api/events/ws"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                      max_size=2**22) as ws:
            while json.loads(await ws.recv())["message_type"] != "replay.complete":
                pass
            ready[0] += 1
            if ready[0] == count:
                connected.set()
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                now = datetime.now(UTC)
                event = json.loads(raw)
                if "timestamp" in event:
                    stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                    lags.append((now - stamp).total_seconds())
                    received[0] += 1
                    if event["message_type"] == "agent.trade.signal":
                        arrivals.append((event["payload"]["proposal_id"], now))

    await asyncio.gather(*(client(servers[i % len(servers)]) for i in range(count)))
    return lags, received[0]


def watch(ports: list[int], count: int, seconds: float) -> None:
    """A process of operators (apart from the load generator, so their JSON parsing does not slow the agents'
    clients): prints one JSON line {lags, arrivals} after `seconds` of listening."""

    async def run() -> None:
        servers = [ServerProcess(port=p, process=None, log=Path("-")) for p in ports]  # type: ignore[arg-type]
        stop, connected = asyncio.Event(), asyncio.Event()
        arrivals: list[tuple[str, datetime]] = []
        watching = asyncio.create_task(operators(servers, count, os.environ[TOKEN_ENV], stop, connected, arrivals))
        await asyncio.wait_for(connected.wait(), 30)
        print(json.dumps({"connected": True}), flush=True)
        await asyncio.sleep(seconds)
        stop.set()
        lags, _ = await watching
        print(json.dumps({"lags": lags, "arrivals": [(pid, at.isoformat()) for pid, at in arrivals]}), flush=True)

    asyncio.run(run())


class HangingReceiver:
    """A webhook endpoint that accepts connections and never answers (until the benchmark ends)."""

    def __init__(self) -> None:
        release = self.release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                release.wait(120)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def ms(samples: list[float], q: float) -> str:
    return f"{percentile(samples, q) * 1000:.1f}"


async def run(options: argparse.Namespace, database_url: str, workdir: Path) -> str:
    token = f"tw_op_{secrets.token_urlsafe(24)}"
    tokens = await register_agents(database_url, options.agents)
    rows: list[str] = []
    notes: list[str] = []

    async def with_replicas(config: Path, action: Any) -> Any:
        servers = await asyncio.gather(*(asyncio.to_thread(start_replica, config, workdir, token) for _ in range(2)))
        try:
            await trade(list(servers), tokens, 1.0)  # warm up
            return await action(list(servers))
        finally:
            for server in servers:
                server.stop()

    quiet_all: list[float] = []
    busy_all: list[float] = []
    lags_all: list[float] = []
    after_answer: list[float] = []
    errors_seen = [0, 0, 0]

    async def phases(servers: list[ServerProcess]) -> None:
        for round_ in range(options.rounds):
            quiet, errors = await trade(servers, tokens, options.seconds)
            quiet_all.extend(quiet)
            errors_seen[0] += errors
            print(f"  round {round_}: 0 operators: {len(quiet)} calls p50 {ms(quiet, 50)} ms p99 {ms(quiet, 99)} ms",
                  file=sys.stderr)
            watcher = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--watch", ",".join(str(s.port) for s in servers), str(options.operators),
                str(options.seconds + 2), stdout=asyncio.subprocess.PIPE, env={**os.environ, TOKEN_ENV: token},
                limit=2**26)
            assert watcher.stdout is not None
            await asyncio.wait_for(watcher.stdout.readline(), 60)  # every operator connected
            busy, errors = await trade(servers, tokens, options.seconds)
            busy_all.extend(busy)
            errors_seen[1] += errors
            report = json.loads(await asyncio.wait_for(watcher.stdout.readline(), 60))
            await watcher.wait()
            lags_all.extend(report["lags"])
            after_answer.extend((datetime.fromisoformat(at) - ANSWERED[pid]).total_seconds()
                                for pid, at in report["arrivals"] if pid in ANSWERED)
            print(f"  round {round_}: {options.operators} operators: {len(busy)} calls p50 {ms(busy, 50)} ms p99 "
                  f"{ms(busy, 99)} ms; {len(report['lags'])} events, lag p50 {ms(report['lags'], 50)} ms p99 "
                  f"{ms(report['lags'], 99)} ms", file=sys.stderr)

    await with_replicas(write_config(workdir / "plain.toml", database_url), phases)

    receiver = HangingReceiver()
    os.environ["TW_BENCH_HOOK_SECRET"] = secrets.token_hex(16)

    held_all: list[float] = []

    async def hanging(servers: list[ServerProcess]) -> None:
        for round_ in range(options.rounds):
            held, errors = await trade(servers, tokens, options.seconds)
            held_all.extend(held)
            errors_seen[2] += errors
            print(f"  round {round_}: hanging webhook: {len(held)} calls p50 {ms(held, 50)} ms p99 {ms(held, 99)} ms",
                  file=sys.stderr)

    try:
        await with_replicas(write_config(workdir / "hook.toml", database_url, receiver.url), hanging)
    finally:
        receiver.close()
    rows.append(f"| 0 | no | {len(quiet_all)} | {errors_seen[0]} | {ms(quiet_all, 50)} | {ms(quiet_all, 99)} "
                "| – | – | – |")
    rows.append(f"| {options.operators} | no | {len(busy_all)} | {errors_seen[1]} | {ms(busy_all, 50)} | "
                f"{ms(busy_all, 99)} | {len(lags_all)} | {ms(lags_all, 50)} | {ms(lags_all, 99)} |")
    rows.append(f"| 0 | hanging | {len(held_all)} | {errors_seen[2]} | {ms(held_all, 50)} | {ms(held_all, 99)} "
                "| – | – | – |")
    notes.append(f"Lower bound of the lag (a signal's arrival at an operator minus the moment propose_trade's "
                 f"answer, sent after the commit, reached its agent): p50 {ms(after_answer, 50)} ms, p99 "
                 f"{ms(after_answer, 99)} ms over {len(after_answer)} arrivals.")
    header = ["| operators | webhook | trading calls | errors | call p50 ms | call p99 ms | events received | "
              "lag p50 ms | lag p99 ms |", "|---|---|---|---|---|---|---|---|---|"]
    return "\n".join(header + rows) + "\n\n" + "\n".join(notes)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per phase")
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--operators", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="phases alternate this many times (noise)")
    parser.add_argument("--postgres-url", default=None, help="an empty postgresql+asyncpg:// database to use")
    options = parser.parse_args()
    pg: Any = None
    with tempfile.TemporaryDirectory(prefix="tw-events-bench-") as tmp:
        url = options.postgres_url
        if url is None:
            from tests.postgres import PostgresServer

            pg = PostgresServer.start()
            url = pg.create_database("events_bench")
        try:
            result = await run(options, url, Path(tmp))
        finally:
            if pg is not None:
                pg.stop()
    text = (f"# Event stream benchmark\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}; 2 replicas on PostgreSQL, {options.agents} "
            f"agents (propose_trade + execute_trade), {options.rounds} rounds of {options.seconds:g} s per phase, "
            "operators in a process of their own; lag = audit record time → "
            "WebSocket client.\n\n" + result + "\n")
    print(text)
    (ROOT / "bench" / "results-events.md").write_text(text)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 5 and sys.argv[1] == "--watch":
        watch([int(p) for p in sys.argv[2].split(",")], int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(asyncio.run(main()))
