"""`tradewarden console`: the operator console and API for stdio deployments, as its own process on the
deployment's database, on loopback, without MCP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import websockets

from tests.postgres import free_port
from tests.server.console_env import write_config
from tests.server.http_servers import ROOT, cli, last_line


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    config = write_config(tmp_path / "tradewarden.toml", f"sqlite+aiosqlite:///{tmp_path / 'console.db'}")
    cli(config, "db", "upgrade")  # the console never creates a ledger
    port = free_port()
    log = (tmp_path / "console.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "server.cli", "console", "--port", str(port), "--config",
                                str(config)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx2.get(f"{base}/console/login", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError((tmp_path / "console.log").read_text())
        yield base, config
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def test_the_console_command_serves_the_api_and_pages_without_mcp(console: tuple[str, Path]) -> None:
    base, config = console
    operator = last_line(cli(config, "operators", "add", "olga", "--role", "approver").stdout)
    agent = last_line(cli(config, "agents", "add", "stdio-bot", "--symbols", "*").stdout)
    with httpx2.Client(base_url=base, timeout=30) as client:
        assert client.get("/api/status", headers={"Authorization": f"Bearer {operator}"}).status_code == 200
        assert client.get("/api/status", headers={"Authorization": f"Bearer {agent}"}).status_code == 401
        assert client.post("/mcp", json={}).status_code in (307, 404, 405)  # no MCP here
        assert client.get("/").headers["location"] == "/console/"
        login = client.post("/console/login", data={"token": operator})
        assert login.status_code == 303
        assert "Overview" in client.get("/console/").text
    assert asyncio.run(first_message(base, operator))["message_type"] == "replay.complete"


async def first_message(base: str, token: str) -> dict[str, object]:
    """The operators' event stream is mounted too (/api/events/ws, with an operator's token)."""
    url = base.replace("http://", "ws://") + "/api/events/ws?since=0"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as socket:
        while True:
            message = json.loads(await asyncio.wait_for(socket.recv(), 10))
            if message["message_type"] == "replay.complete":
                return dict(message)


def test_without_a_ledger_the_console_says_so_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "tradewarden.toml", f"sqlite+aiosqlite:///{tmp_path / 'none.db'}")
    result = subprocess.run([sys.executable, "-m", "server.cli", "console", "--port", str(free_port()),
                             "--config", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no database at" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "none.db").exists()


def test_the_console_listens_on_loopback_by_default() -> None:
    result = subprocess.run([sys.executable, "-m", "server.cli", "console", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "default: 127.0.0.1" in result.stdout
