"""Real `tradewarden serve --transport http` processes for the tests, and MCP clients that reach them.

Servers listen on loopback at free ports, log to a file, and are stopped (terminate, then kill) by the
fixtures that start them. `mcp_client` connects the SDK's streamable HTTP client with a bearer token;
`RoundRobin` is a load balancer in the client: each HTTP request goes to the next replica in turn.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.cli_probe import run_cli
from tests.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 45.0


@dataclass
class ServerProcess:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_server(config: Path, log_dir: Path, *, env: dict[str, str] | None = None,
                 port: int | None = None) -> ServerProcess:
    """Start one server and wait until /healthz answers 200 (bounded)."""
    for _attempt in range(3):
        chosen = port or free_port()
        log = log_dir / f"server-{chosen}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "serve", "--transport", "http", "--host", "127.0.0.1",
                 "--port", str(chosen), "--config", str(config)],
                cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})})
        server = ServerProcess(port=chosen, process=process, log=log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                if httpx2.get(f"{server.base}/healthz", timeout=2).status_code == 200:
                    return server
            except httpx2.HTTPError:
                pass
            time.sleep(0.1)
        server.stop()
        if "address already in use" not in server.log_tail().lower():
            raise RuntimeError(f"server on port {chosen} did not become healthy:\n{server.log_tail()}")
    raise RuntimeError("no free port for the server")


def start_servers(config: Path, log_dir: Path, count: int, **options: Any) -> list[ServerProcess]:
    """Several replicas, started at the same time (they race for migrations and start-up on purpose)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(start_server, config, log_dir, **options) for _ in range(count)]
        servers = []
        errors = []
        for future in futures:
            try:
                servers.append(future.result())
            except Exception as error:
                errors.append(error)
    if errors:
        for server in servers:
            server.stop()
        raise errors[0]
    return servers


def cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `tradewarden ARGS --config CONFIG` (a separate process, like an operator would)."""
    return run_cli(config, *args, check=check)


class RoundRobin(httpx2.AsyncBaseTransport):
    """A load balancer inside the client: request n goes to replica n mod len(ports)."""

    def __init__(self, ports: Sequence[int]):
        self._inner = httpx2.AsyncHTTPTransport()
        self._ports = cycle(ports)
        self.sent: dict[int, int] = dict.fromkeys(ports, 0)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = next(self._ports)
        self.sent[port] += 1
        request.url = request.url.copy_with(port=port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def mcp_client(url: str, token: str | None, *, transport: httpx2.AsyncBaseTransport | None = None,
                     **options: Any) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, transport=transport,
                              timeout=httpx2.Timeout(30, read=120))
    async with http, Client(streamable_http_client(url, http_client=http), **options) as client:
        yield client


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1].strip()


async def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> float:
    """Await `predicate()` until it is true; returns the seconds it took (raises on timeout)."""
    started = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
