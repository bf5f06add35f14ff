#!/usr/bin/env python3
"""Placing one order via Alpaca: tradewarden next to Alpaca's own MCP server, same stub, same run. Not a test.

    .venv/bin/python bench/alpaca_peer.py [--orders 100] [--warmup 5] [--latency-ms 0] [--no-peer]
                                          [--compare-root DIR] [--with-simulated] [--append-results]

- Starts the Alpaca contract server (tests/broker/alpaca_contract_server.py) on 127.0.0.1.
- The peer: a throwaway venv in a temp folder, `pip install alpaca-mcp-server` from the package registry (the
  version installed is printed), run over stdio with fake keys. Its market-data URL is its DATA_API_URL; its
  trading URL is a constant of its server module (paper or live Alpaca, no setting), so a two-line launcher sets
  that constant to the contract server before starting its own command line. Orders: its place_stock_order tool.
- Ours: `tradewarden serve` over stdio, broker = "alpaca" with the base-URL overrides pointed at the same server
  (as tests/alpaca_env.py does), auto-approval; an order is propose_trade + execute_trade.
- Orders alternate one by one between the two (market, 1 share of AAPL), so both see the same machine.
  Printed: p50 / p99 per order, the ratio, and broker requests per order, by method and path (counted at the
  contract server, by the sender's User-Agent, within each order's own calls; reads of orders in that window,
  which placing an order never sends here, are tradewarden's background poll that brings fills into its
  ledger: counted apart, and left out of the round trips). `--latency-ms` adds a network delay to every
  answer, like Alpaca's own distance would; then round trips one after the other are counted too (requests in
  flight together count once). Also the CPU (user + system, from /proc) each server process used per order
  while measuring, background work included: steadier than wall time on a shared machine.
  `--compare-root DIR`: also serve from another checkout (say, an export of main), in turn with the others,
  against a contract server of its own, to compare before and after in the same run. `--with-simulated`: also
  this tree on its simulated broker, in turn with the others: what the gate costs without Alpaca.
- If the peer cannot be installed (no registry), says so and still prints our figures. Bounded in time
  (install 600 s, each MCP request 30 s); the temp folder, the servers and the subprocesses are cleaned up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import percentile  # noqa: E402
from tests.broker.alpaca_contract_server import (  # noqa: E402
    FAKE_API_KEY,
    FAKE_SECRET_KEY,
    AlpacaContractServer,
    sequential_steps,
)

PEER_PACKAGE = "alpaca-mcp-server"
CALL_TIMEOUT = 30.0
INSTALL_TIMEOUT = 600
# Alpaca's MCP server has no setting for its trading URL: point its paper constant at the contract server, then
# run its own command line (stdio). Nothing else of it is changed.
PEER_LAUNCHER = """
import os, sys
import alpaca_mcp_server.server as server
if not isinstance(getattr(server, "TRADING_API_BASE_URLS", None), dict):
    sys.exit("this alpaca-mcp-server has no TRADING_API_BASE_URLS: the launcher cannot point it at the stub")
server.TRADING_API_BASE_URLS["paper"] = os.environ["BENCH_TRADING_URL"]
sys.argv = ["alpaca-mcp-server", "--transport", "stdio"]
from alpaca_mcp_server.cli import main
main()
"""
AGENT = "bench-alpaca"


@dataclass
class Side:
    name: str
    user_agent_prefix: str
    samples: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    polls: list[int] = field(default_factory=list)  # reads of orders (tradewarden's background poll)
    steps: list[int] = field(default_factory=list)
    hot_steps: list[int] = field(default_factory=list)  # of the call that sends the order
    last_call: list[float] = field(default_factory=list)  # ms of the call that sends the order
    kinds: Counter[str] = field(default_factory=Counter)  # "METHOD /path" of the order's own requests
    pid: int | None = None  # its server process
    cpu: list[float] = field(default_factory=list)  # that process's CPU seconds when measuring began and ended


def child_pids() -> set[int]:
    """This process's children (the MCP servers it spawned), from /proc; empty where there is none."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                if int(fields[1]) == os.getpid():
                    found.add(int(entry))
    return found


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of a process, all its threads (less sensitive to a shared machine than wall time)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def install_peer(workdir: Path) -> tuple[Path | None, str]:
    """(the peer venv's python, its version) or (None, why not)."""
    venv = workdir / "peer-venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        python = venv / "bin" / "python"
        installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", PEER_PACKAGE],
                                   capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        if installed.returncode != 0:
            last = (installed.stderr.strip().splitlines() or ["pip failed"])[-1]
            return None, f"pip install {PEER_PACKAGE} failed: {last}"
        version = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                                  f"print(m.version('{PEER_PACKAGE}'))"],
                                 capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        return python, version
    except (subprocess.SubprocessError, OSError) as error:
        return None, f"could not install {PEER_PACKAGE}: {type(error).__name__}: {error}"


def write_config(workdir: Path, server: AlpacaContractServer | None) -> Path:
    """Alpaca at `server`; None: the simulated broker (the gate's own cost, no Alpaca in it)."""
    broker = (f'broker = "alpaca"\nalpaca_trading_url = "{server.trading_url}"\n'
              f'alpaca_data_url = "{server.data_url}"' if server is not None else 'broker = "simulated"')
    path = workdir / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{workdir / 'bench.db'}"
{broker}
enforce_market_hours = false
log_level = "warning"

[[agents]]
id = "{AGENT}"
max_trade_size = 1000000
max_position_size = 100000000
max_daily_trades = 1000000
allowed_symbols = ["*"]
approval = "auto"
auto_approve_max_notional = 1000000
max_order_qty = 1000000
max_gross_exposure = 1000000000
max_orders_per_window = 1000000
rolling_notional_max = 1000000000
duplicate_window_seconds = 0
capital = 1000000000
max_denials_per_window = 1000000
""")
    return path


def payload(result: Any) -> dict[str, Any]:
    """A tool's structured result; Alpaca's MCP server wraps its answer in a trust envelope."""
    if result.is_error or not isinstance(result.structured_content, dict):
        raise RuntimeError(f"tool failed: {result.content}")
    return result.structured_content


def peer_order(content: dict[str, Any]) -> dict[str, Any]:
    """The order inside the peer's envelope, or an error if it holds none."""
    stack: list[Any] = [content]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "error" in item:
                raise RuntimeError(f"the peer's order failed: {json.dumps(item)[:300]}")
            if "client_order_id" in item and "status" in item:
                return item
            stack.extend(item.values())
    raise RuntimeError(f"no order in the peer's answer: {json.dumps(content)[:300]}")


async def timed_order(side: Side, server: AlpacaContractServer, place: Callable[[], Awaitable[list[float]]], *,
                      record: bool) -> None:
    before = len(server.requests)
    start = time.perf_counter()
    call_starts = await asyncio.wait_for(place(), CALL_TIMEOUT * 2)
    elapsed = (time.perf_counter() - start) * 1000
    seen = [r for r in server.requests[before:] if r.user_agent.startswith(side.user_agent_prefix)]
    # Placing an order never reads orders back (only an unknown outcome would, which does not happen here):
    # such reads are the background poll that brings fills into tradewarden's ledger.
    polls = [r for r in seen if r.method == "GET" and r.path.startswith("/v2/orders")]
    mine = [r for r in seen if not any(r is poll for poll in polls)]
    if record:
        side.samples.append(elapsed)
        side.requests.append(len(mine))
        side.polls.append(len(polls))
        side.steps.append(sequential_steps(mine))
        last_call = [r for r in mine if r.received >= call_starts[-1]]
        side.hot_steps.append(sequential_steps(last_call))
        side.last_call.append((time.monotonic() - call_starts[-1]) * 1000)
        side.kinds.update(f"{r.method} {r.path}" for r in mine)


async def run(args: argparse.Namespace) -> int:
    from mcp import Client, StdioServerParameters, stdio_client

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="alpaca-peer-"))
    ours = Side("tradewarden (propose_trade + execute_trade)", "APCA-PY")
    peer = Side("Alpaca's MCP server (place_stock_order)", "APCA-MCP")
    before = Side(f"tradewarden served from {args.compare_root}", "APCA-PY")
    simulated = Side("tradewarden on its simulated broker (no Alpaca requests; the broker is its own database)", "none")
    notes: list[str] = []
    peer_log = (workdir / "peer.stderr").open("w")
    keys = {"ALPACA_API_KEY": FAKE_API_KEY, "ALPACA_SECRET_KEY": FAKE_SECRET_KEY}

    def contract_server() -> AlpacaContractServer:
        server = AlpacaContractServer(cash=10**12, market_open=True).start()
        server.latency = args.latency_ms / 1000
        server.set_price("AAPL", "190.00")
        return server

    def tradewarden(root: Path, server: AlpacaContractServer | None, name: str) -> Any:
        (workdir / name).mkdir()
        config = write_config(workdir / name, server)
        return StdioServerParameters(command=sys.executable, cwd=str(root), env={**os.environ, **keys},
                                     args=["-m", "server.cli", "serve", "--agent", AGENT, "--config", str(config)])

    def connected(params: Any, **options: Any) -> Any:
        return Client(stdio_client(params, **options), read_timeout_seconds=CALL_TIMEOUT)

    async def place_ours(client: Any) -> list[float]:
        t0 = time.monotonic()
        proposal = payload(await client.call_tool(
            "propose_trade", {"symbol": "AAPL", "side": "buy", "qty": "1", "reasoning": "bench"}))
        if proposal.get("status") != "approved":
            raise RuntimeError(f"proposal not approved: {proposal}")
        t1 = time.monotonic()
        executed = payload(await client.call_tool("execute_trade", {"proposal_id": proposal["proposal_id"]}))
        if executed.get("status") not in ("submitted", "filled", "accepted", "new", "partially_filled"):
            raise RuntimeError(f"order not placed: {executed}")
        return [t0, t1]

    async def place_peer(client: Any) -> list[float]:
        t0 = time.monotonic()
        order = peer_order(payload(await client.call_tool("place_stock_order", {
            "symbol": "AAPL", "side": "buy", "qty": "1", "type": "market", "time_in_force": "day",
            "client_order_id": str(uuid.uuid4())})))
        if order.get("status") in ("rejected", "canceled"):
            raise RuntimeError(f"the peer's order was refused: {order}")
        return [t0]

    servers: list[AlpacaContractServer] = []
    peer_version = ""
    try:
        peer_python: Path | None = None
        if args.no_peer:
            notes.append("peer not run (--no-peer)")
        else:
            print(f"installing {PEER_PACKAGE} into a throwaway venv …", file=sys.stderr)
            peer_python, peer_version = install_peer(workdir)
            if peer_python is None:
                notes.append(f"peer NOT measured: {peer_version}")
                print(notes[-1], file=sys.stderr)
        # The peer and this tree's tradewarden share one contract server (their requests told apart by
        # User-Agent); a checkout compared with --compare-root gets its own, or its alpaca-py requests would mix.
        shared = contract_server()
        servers.append(shared)
        async with AsyncExitStack() as stack:
            contestants: list[tuple[Side, AlpacaContractServer, Callable[[], Awaitable[list[float]]]]] = []
            known = child_pids()

            def spawned(side: Side) -> None:  # the process the client just started is the side's server
                nonlocal known
                now = child_pids()
                new = now - known
                side.pid = new.pop() if len(new) == 1 else None
                known = now

            ours_client = await stack.enter_async_context(connected(tradewarden(ROOT, shared, "ours")))
            spawned(ours)
            contestants.append((ours, shared, functools.partial(place_ours, ours_client)))
            if peer_python is not None:
                peer_params = StdioServerParameters(
                    command=str(peer_python), args=["-c", PEER_LAUNCHER], cwd=str(workdir),
                    env={**keys, "ALPACA_PAPER_TRADE": "true", "DATA_API_URL": shared.data_url,
                         "BENCH_TRADING_URL": shared.trading_url, "PATH": os.environ.get("PATH", ""),
                         "HOME": str(workdir)})
                # Its log (and its complaints about a newer client's discovery request) stays off the console.
                try:
                    peer_client = await stack.enter_async_context(connected(peer_params, errlog=peer_log))
                    spawned(peer)
                    await place_peer(peer_client)  # it does place orders on the stub
                    contestants.append((peer, shared, functools.partial(place_peer, peer_client)))
                except Exception as error:  # any failure of the peer: say so, and measure ours
                    peer_log.flush()
                    why = (workdir / "peer.stderr").read_text(errors="replace").strip().splitlines()[-1:]
                    notes.append(f"peer NOT measured: {PEER_PACKAGE} {peer_version} did not start or place an "
                                 f"order ({type(error).__name__}: {error}; {' '.join(why)})")
                    print(notes[-1], file=sys.stderr)
            if args.compare_root is not None:
                other = contract_server()
                servers.append(other)
                before_client = await stack.enter_async_context(
                    connected(tradewarden(args.compare_root, other, "before")))
                spawned(before)
                contestants.append((before, other, functools.partial(place_ours, before_client)))
            if args.with_simulated:
                simulated_client = await stack.enter_async_context(
                    connected(tradewarden(ROOT, None, "simulated")))
                spawned(simulated)
                contestants.append((simulated, shared, functools.partial(place_ours, simulated_client)))
            for i in range(args.warmup + args.orders):
                if i == args.warmup:
                    for side, _, _ in contestants:
                        side.cpu = [cpu_seconds(side.pid) or 0.0]
                # One order each in turn, the order of turns rotating, so all see the same machine.
                turn = i % len(contestants)
                for side, server, place in contestants[turn:] + contestants[:turn]:
                    await timed_order(side, server, place, record=i >= args.warmup)
            for side, _, _ in contestants:
                side.cpu.append(cpu_seconds(side.pid) or 0.0)
        for server in servers:
            server.assert_no_violations()
    except BaseException:
        peer_log.close()
        tail = (workdir / "peer.stderr").read_text(errors="replace").strip().splitlines()[-5:]
        if tail:
            print("the peer's last log lines:\n" + "\n".join(tail), file=sys.stderr)
        raise
    finally:
        peer_log.close()
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def fmt(side: Side) -> str:
        if not side.samples:
            return "not measured"
        kinds = ", ".join(f"{count / len(side.samples):.2f} {kind}" for kind, count in side.kinds.most_common())
        text = (f"{statistics.median(side.samples):.1f} ms / {percentile(side.samples, 99):.1f} ms; "
                f"{statistics.mean(side.requests):.2f} requests" + (f" ({kinds})" if kinds else ""))
        if any(side.polls):
            text += f" (and {statistics.mean(side.polls):.2f} background reads of open orders)"
        if args.latency_ms > 0:  # without a latency, requests sent together need not overlap at the server
            text += (f", {statistics.median(side.steps):g} sequential (p50; at most {max(side.steps)}), "
                     f"{statistics.median(side.hot_steps):g} in the call that sends the order "
                     f"(at most {max(side.hot_steps)})")
        text += f"; the call that sends the order p50 {statistics.median(side.last_call):.1f} ms"
        if side.pid is not None and len(side.cpu) == 2:
            text += f"; server CPU {(side.cpu[1] - side.cpu[0]) / len(side.samples) * 1000:.1f} ms per order"
        return text

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = shlex.join(["bench/alpaca_peer.py", *sys.argv[1:]])
    lines = [f"Measured {stamp} with `{command}` "
             f"({time.perf_counter() - started:.0f} s; 2 shared cores), orders alternating one by one"
             + (f"; peer: {PEER_PACKAGE} {peer_version} from the package registry" if peer.samples else ""),
             "",
             "| placing one order via Alpaca (market, 1 AAPL) | p50 / p99 per order; broker requests per order |",
             "|---|---|",
             f"| {ours.name} | {fmt(ours)} |",
             f"| {peer.name} | {fmt(peer)} |"]
    if args.compare_root is not None:
        lines.append(f"| {before.name} | {fmt(before)} |")
    if args.with_simulated:
        lines.append(f"| {simulated.name} | {fmt(simulated)} |")
    if ours.samples and peer.samples:
        ratio = statistics.median(ours.samples) / statistics.median(peer.samples)
        lines.append(f"| ratio, p50 (target ≤ 2×) | {ratio:.2f}× |")
    if ours.samples and before.samples:
        lines.append(f"| {before.name} / this tree, p50 | "
                     f"{statistics.median(before.samples) / statistics.median(ours.samples):.2f}× |")
    lines += [f"\n{note}" for note in notes]
    print("\n".join(lines))  # stdout-ok: a benchmark script
    if args.append_results:
        with (ROOT / "bench" / "results-issue12.md").open("a") as results:
            results.write("\n## Placing an order via Alpaca next to Alpaca's own MCP server\n\n" + "\n".join(lines)
                          + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100, help="orders measured per side (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="orders per side before measuring (default 5)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="network delay added to every answer")
    parser.add_argument("--no-peer", action="store_true", help="measure tradewarden only")
    parser.add_argument("--with-simulated", action="store_true",
                        help="also measure this tree on its simulated broker: the cost without Alpaca")
    parser.add_argument("--compare-root", type=Path, default=None,
                        help="also measure `tradewarden serve` of another checkout (say, an export of main)")
    parser.add_argument("--append-results", action="store_true", help="append the table to bench/results-issue12.md")
    args = parser.parse_args()
    if not 1 <= args.orders <= 2000 or not 0 <= args.warmup <= 100 or not 0 <= args.latency_ms <= 1000:
        parser.error("--orders 1..2000, --warmup 0..100, --latency-ms 0..1000")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
