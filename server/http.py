"""Streamable HTTP transport: http://HOST:PORT/mcp, each agent authenticated by its own bearer token."""

from __future__ import annotations

from typing import Any

import structlog
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger import db
from policies.agents import agent_for_token
from server.config import Config

log = structlog.get_logger("tradewarden.http")


class AgentTokenVerifier:
    """Maps a bearer token to the agent it was issued to (only the token's hash is stored).
    A disabled agent's token still verifies here, so its calls are refused by the gate with
    AGENT_DISABLED and audited, rather than vanishing as anonymous 401s."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], resource: str):
        self.sessions = sessions
        self.resource = resource

    async def verify_token(self, token: str) -> AccessToken | None:
        async with self.sessions() as session:
            row = await agent_for_token(session, token)
        if row is None:
            log.info("bearer_token_refused")
            return None
        return AccessToken(token="[redacted]", client_id=row.agent_id, scopes=["trade"], resource=self.resource)


def http_server_options(config: Config, host: str, port: int) -> tuple[dict[str, Any], Any]:
    """MCPServer keyword arguments for bearer auth, and the engine the verifier reads tokens from."""
    resource = f"http://{host}:{port}/mcp"
    engine = db.create_engine(config.server.database_url)
    verifier = AgentTokenVerifier(db.session_factory(engine), resource)
    auth = AuthSettings(issuer_url=f"http://{host}:{port}", resource_server_url=resource,
                        validate_token_resource=True)
    options: dict[str, Any] = {"token_verifier": verifier, "auth": auth}
    if config.server.request_state_keys:
        from mcp.server.request_state import RequestStateSecurity

        options["request_state_security"] = RequestStateSecurity(keys=[k.encode() for k in
                                                                       config.server.request_state_keys])
    return options, engine


def serve_http(config: Config, *, host: str, port: int) -> None:
    import uvicorn

    from server.app import create_server

    options, _engine = http_server_options(config, host, port)
    server = create_server(config, **options)
    app = server.streamable_http_app(host=host)
    log.info("serving_http", url=f"http://{host}:{port}/mcp", mode=config.server.trading_mode)
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")
