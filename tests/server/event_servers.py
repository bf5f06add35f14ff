"""The HTTP app served by a real uvicorn on a loopback port inside the test's event loop, with a WebSocket client.

Operators' tokens are checked by the operators' registry once it exists; until then these servers are given an
authenticator that knows a fixed set of operator tokens (the stream's own code is what is under test).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import uvicorn
import websockets

from ledger import db
from policies.agents import add_agent
from policies.operators import OperatorIdentity, Role
from server.config import AgentConfig, Config
from server.http import build_http_app
from tests.postgres import free_port

OPERATOR_TOKENS = {f"tw_op_{secrets.token_urlsafe(24)}": OperatorIdentity("alice", Role.VIEWER)}
OPERATOR_TOKEN = next(iter(OPERATOR_TOKENS))


async def known_operators(token: str) -> OperatorIdentity | None:
    return OPERATOR_TOKENS.get(token)


@asynccontextmanager
async def serving(config: Config, **options: Any) -> AsyncIterator[str]:
    """Serve the app; yields its base URL (http://127.0.0.1:PORT)."""
    port = free_port()
    app = build_http_app(config, host="127.0.0.1", port=port, authenticate_operator=known_operators, **options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(300):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def register(db_url: str, agent: AgentConfig) -> str:
    """Register an agent (as `tradewarden agents add` does); returns its bearer token."""
    engine = db.create_engine(db_url)
    try:
        async with db.transaction(db.session_factory(engine)) as session:
            return await add_agent(session, agent, max_agents=100, actor="operator:test", now=datetime.now(UTC))
    finally:
        await engine.dispose()


def ws_url(base: str, **query: Any) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
    return f"{base.replace('http://', 'ws://')}/api/events/ws" + (f"?{params}" if params else "")


@asynccontextmanager
async def event_stream(base: str, token: str | None = OPERATOR_TOKEN, **query: Any
                       ) -> AsyncIterator[websockets.ClientConnection]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with websockets.connect(ws_url(base, **query), additional_headers=headers, open_timeout=10) as ws:
        yield ws


async def receive(ws: websockets.ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def until_replayed(ws: websockets.ClientConnection) -> list[dict[str, Any]]:
    """The replayed events, up to (not including) replay.complete."""
    events: list[dict[str, Any]] = []
    while (message := await receive(ws))["message_type"] != "replay.complete":
        events.append(message)
    return events


async def collect(ws: websockets.ClientConnection, until: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Live events until `until(events)` is true (bounded)."""
    events: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while not until(events):
        events.append(await receive(ws, max(0.01, deadline - asyncio.get_running_loop().time())))
    return events
