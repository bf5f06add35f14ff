"""A real HTTP server with operators of each role and an agent whose trades wait for a person: what the
operator API tests, the browser tests, the screenshots and the console benchmark run against."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from tests.server.http_servers import ServerProcess, cli, last_line, mcp_client, start_server

AGENT = "swing-1"


def write_config(path: Path, db_url: str, **server: Any) -> Path:
    lines = ["[server]", f'database_url = "{db_url}"', "enforce_market_hours = false", "max_agents_per_account = 50",
             "requests_per_minute = 10000"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in server.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class ConsoleDeployment:
    config: Path
    server: ServerProcess
    db_url: str
    tokens: dict[str, str] = field(default_factory=dict)  # operator name -> token; "agent" -> the agent's

    @property
    def base(self) -> str:
        return self.server.base

    def add_operator(self, name: str, role: str) -> str:
        token = last_line(cli(self.config, "operators", "add", name, "--role", role).stdout)
        self.tokens[name] = token
        return token

    def api(self, who: str | None) -> httpx2.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx2.Client(base_url=self.base, headers=headers, timeout=30, follow_redirects=False)

    @contextmanager
    def login(self, who: str) -> Iterator[tuple[httpx2.Client, str]]:
        """A client holding a console session of `who`, and the session's CSRF token (from a page)."""
        with httpx2.Client(base_url=self.base, timeout=30, follow_redirects=False) as client:
            answer = client.post("/console/login", data={"token": self.tokens[who]})
            assert answer.status_code == 303, answer.text
            page = client.get("/console/")
            assert page.status_code == 200, page.text
            match = re.search(r'data-csrf="([0-9a-f]+)"', page.text)
            assert match is not None
            yield client, match.group(1)

    async def propose(self, **order: Any) -> dict[str, Any]:
        async with mcp_client(self.server.url, self.tokens["agent"]) as client:
            size = {} if "qty" in order or "notional" in order else {"qty": 3}
            result = await client.call_tool("propose_trade", {"symbol": "SPY", "side": "buy", **size,
                                                              "reasoning": "pullback to support", **order})
        assert not result.is_error, result.content
        assert result.structured_content is not None
        return result.structured_content

    async def execute(self, proposal_id: str) -> tuple[bool, dict[str, Any] | None, str]:
        async with mcp_client(self.server.url, self.tokens["agent"]) as client:
            result = await client.call_tool("execute_trade", {"proposal_id": proposal_id})
        text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
        return result.is_error, result.structured_content, text


def start_console_deployment(root: Path, db_url: str | None = None, **server: Any) -> ConsoleDeployment:
    db_url = db_url or f"sqlite+aiosqlite:///{root / 'console.db'}"
    config = write_config(root / "tradewarden.toml", db_url, **server)
    process = start_server(config, root)
    deployment = ConsoleDeployment(config, process, db_url)
    try:
        for name, role in (("vera", "viewer"), ("alice", "approver"), ("adam", "admin")):
            deployment.add_operator(name, role)
        added = cli(config, "agents", "add", AGENT, "--symbols", "*", "--approval", "operator")
        deployment.tokens["agent"] = last_line(added.stdout)
    except BaseException:
        process.stop()
        raise
    return deployment
