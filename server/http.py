"""Streamable HTTP transport: http://HOST:PORT/mcp, each agent authenticated by its own bearer token.

Routes of the HTTP app:
- /mcp                                         MCP (streamable HTTP); 401 without a valid bearer token
- /.well-known/oauth-protected-resource/mcp    RFC 9728 protected-resource metadata (the SDK's route)
- /healthz                                     database, broker, halt (server/health.py); no token
- /metrics                                     Prometheus (server/metrics.py); no token
- /api/events/ws                               the operators' event stream (server/events_ws.py); operator token
- /api, /console                               the operator API and console (server/console.py); operators'
                                               tokens or console sessions only, never an agent's token

The token decides which agent a call acts for (ServerState.agent_id reads it from the access token); nothing
in a tool's arguments can change that. Tokens are issued by `tradewarden agents add|rotate-token` and only
their sha256 is stored. Tool calls are rate limited per agent (server/ratelimit.py).

Replicas: several `tradewarden serve --transport http` processes on one PostgreSQL database behave as one
server behind a load balancer; give them the same server_name, request_state_keys and public_url.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.base import Broker
from ledger import db
from policies.agents import agent_for_token
from server.clock import utc_now
from server.config import Config
from server.events_ws import EventHub, EventStream, EventStreamApp, OperatorAuthenticator, registry_authenticator
from server.health import HealthCheck
from server.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from server.ratelimit import RateLimiter, RateLimitMiddleware
from tradewarden.log import get_logger

log = get_logger("tradewarden.http")
SCOPE = "trade"
BENCH_NOOP_ENV = "TRADEWARDEN_BENCH_NOOP"
LOOPBACK = ("127.0.0.1", "localhost", "::1")

SessionsSource = async_sessionmaker[AsyncSession] | Callable[[], async_sessionmaker[AsyncSession]]


class AgentTokenVerifier:
    """Maps a bearer token to the agent it was issued to (only the token's hash is stored; it is looked up
    on every request, so a rotation applies at once). A disabled agent's token still verifies here, so its
    calls are refused by the gate with AGENT_DISABLED and audited, rather than vanishing as anonymous 401s."""

    def __init__(self, sessions: SessionsSource, resource: str):
        self._sessions = sessions
        self.resource = resource

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        if isinstance(self._sessions, async_sessionmaker):
            return self._sessions
        return self._sessions()

    async def verify_token(self, token: str) -> AccessToken | None:
        async with self.sessions() as session:
            row = await agent_for_token(session, token)
        if row is None:
            log.info("bearer_token_refused")
            return None
        return AccessToken(token="[redacted]", client_id=row.agent_id, scopes=[SCOPE], resource=self.resource)


def urls(config: Config, host: str, port: int) -> tuple[str, str]:
    """(the MCP resource URL agents use, the issuer URL advertised in the metadata)."""
    resource = config.server.public_url or f"http://{_host_for_url(host)}:{port}/mcp"
    parts = urlsplit(resource)
    return resource, f"{parts.scheme}://{parts.netloc}"


def _host_for_url(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def transport_security(config: Config, host: str) -> TransportSecuritySettings | None:
    """DNS-rebinding protection: on loopback only loopback Host headers (the SDK's default), plus the public
    URL's host when one is configured. Bound to another address (behind a proxy) the proxy decides."""
    public = urlsplit(config.server.public_url).netloc if config.server.public_url else None
    if host not in LOOPBACK:
        return None
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if public:
        scheme = urlsplit(config.server.public_url or "").scheme
        hosts += [public, f"{public.split(':')[0]}:*"] if ":" not in public else [public]
        origins.append(f"{scheme}://{public}")
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                     allowed_origins=origins)


class _State:
    """The running server's state, once its lifespan has opened the runtime (None before and after), and
    the sessions bearer tokens are looked up with: on PostgreSQL the runtime's; on SQLite a read-only engine
    of its own, so a token lookup never waits for the write lock (server/http.py, ledger/db.py)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.state: Any = None
        self._reader: AsyncEngine | None = None
        self._reader_sessions: async_sessionmaker[AsyncSession] | None = None

    def set(self, state: Any) -> None:
        self.state = state
        if state is None and self._reader is not None:
            engine, self._reader, self._reader_sessions = self._reader, None, None
            asyncio.get_running_loop().create_task(engine.dispose())

    @property
    def runtime(self) -> Any:
        return self.state.runtime if self.state is not None else None

    def token_sessions(self) -> async_sessionmaker[AsyncSession]:
        if self.runtime is None:
            raise RuntimeError("the server is not running yet")
        if not db.is_sqlite(self.database_url):
            return self.runtime.sessions  # type: ignore[no-any-return]
        if self._reader_sessions is None:
            self._reader = db.create_engine(self.database_url, read_only=True)
            self._reader_sessions = db.session_factory(self._reader)
        return self._reader_sessions


MAX_BODY_BYTES = 64 * 1024  # one JSON-RPC message; the largest legitimate tool call is a few KB


class LimitBody:
    """A request whose body is over MAX_BODY_BYTES is answered 413 with a JSON-RPC error whose message starts
    INVALID_ARGUMENT: at once when its declared length says so (nothing reads it), and for a body without a
    declared length (chunked) as soon as the bytes received pass the limit. Such a body is read here, at most
    MAX_BODY_BYTES of it kept, and handed on whole (the SDK's own limit would answer a plain-text 413)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                await _body_too_large(f"{int(declared)} bytes", scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD"):  # no body (the event stream)
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before the end of its body
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > MAX_BODY_BYTES:
                await _body_too_large(f"more than {MAX_BODY_BYTES} bytes", scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read, then whatever the client sends next (a disconnect)."""
    pending = [body]

    async def replayed() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replayed


async def _body_too_large(size: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"jsonrpc": "2.0", "id": None, "error": {
        "code": -32600, "message": f"INVALID_ARGUMENT: a request body of {size} is over the {MAX_BODY_BYTES}-byte "
                                   f"limit"}}, status_code=413)
    await response(scope, receive, send)


class CountUnauthorized:
    """ASGI wrapper counting 401 answers (bad or missing tokens) for /metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status") == 401:
                self.metrics.unauthorized.inc()
            await send(message)

        await self.app(scope, receive, counting_send)


def http_server_options(config: Config, host: str, port: int,
                        sessions: SessionsSource) -> dict[str, Any]:
    """MCPServer keyword arguments for bearer auth and shared request-state keys."""
    resource, issuer = urls(config, host, port)
    verifier = AgentTokenVerifier(sessions, resource)
    # Tokens are issued out of band (the command line), so the "authorization server" advertised in the
    # protected-resource metadata is this server's own origin.
    auth = AuthSettings(issuer_url=issuer, resource_server_url=resource, validate_token_resource=True,  # type: ignore[arg-type]
                        required_scopes=[SCOPE])
    options: dict[str, Any] = {"token_verifier": verifier, "auth": auth}
    if config.server.request_state_keys:
        from mcp.server.request_state import RequestStateSecurity

        options["request_state_security"] = RequestStateSecurity(keys=[k.encode() for k in
                                                                       config.server.request_state_keys])
    return options


def build_http_app(config: Config, *, host: str, port: int, clock: Callable[[], datetime] = utc_now,
                   broker: Broker | None = None, authenticate_operator: OperatorAuthenticator | None = None
                   ) -> ASGIApp:
    """The whole HTTP application of one replica (an ASGI app; its lifespan opens the runtime).
    `authenticate_operator` checks operators' bearer tokens for the event stream (default: the registry)."""
    from server.app import create_server

    holder = _State(config.server.database_url)
    options = http_server_options(config, host, port, holder.token_sessions)
    server = create_server(config, clock=clock, broker=broker, on_ready=holder.set, **options)
    if os.environ.get(BENCH_NOOP_ENV) == "1":  # the benchmark's floor; never in production's tools/list
        from mcp.types import ToolAnnotations

        async def bench_noop() -> str:
            return "ok"

        server.tool(name="bench_noop", description="No-op (benchmark floor).",
                    annotations=ToolAnnotations(read_only_hint=True))(bench_noop)
        log.warning("bench_noop_tool_enabled")

    metrics = Metrics()

    async def registered_tools() -> list[str]:
        return [tool.name for tool in await server.list_tools()]

    # Outermost first: metrics see rate-limited calls too.
    server.middleware.append(MetricsMiddleware(metrics, registered_tools))
    server.middleware.append(RateLimitMiddleware(RateLimiter(config.server.requests_per_minute)))

    health = HealthCheck()

    @server.custom_route("/healthz", methods=["GET"], include_in_schema=False)
    async def healthz(_request: Request) -> Response:
        status, body = await health.report(holder.runtime)
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    @server.custom_route("/metrics", methods=["GET"], include_in_schema=False)
    async def metrics_route(_request: Request) -> Response:
        if holder.runtime is not None:
            try:
                await metrics.refresh_from_database(holder.runtime.sessions)
                await metrics.refresh_agents(holder.runtime.gate)
                await metrics.refresh_from_audit(holder.runtime.sessions)
            except Exception as error:  # the process metrics are still worth serving
                log.warning("metrics_database_unavailable", error=type(error).__name__)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    mcp_app = server.streamable_http_app(host=host, transport_security=transport_security(config, host),
                                         max_request_body_size=MAX_BODY_BYTES)
    from server.console import OperatorSurfaces
    from server.console_events import ConsoleEventStream

    def runtime_sessions() -> async_sessionmaker[AsyncSession] | None:
        return holder.runtime.sessions if holder.runtime is not None else None

    hub = EventHub(runtime_sessions, on_events=metrics.observe_events)
    stream = EventStream(hub, authenticate_operator or registry_authenticator(runtime_sessions))
    # The operator API (/api) and console (/console) on the same port, over the same runtime; the console's live
    # feed is the same event stream on the same hub, authenticated by the console session.
    app = OperatorSurfaces(mcp_app, lambda: holder.runtime, public_url=config.server.public_url,
                           events=ConsoleEventStream(hub, lambda: holder.runtime))
    return EventStreamApp(CountUnauthorized(LimitBody(app), metrics), stream)


def serve_http(config: Config, *, host: str, port: int, sock: socket.socket | None = None) -> None:
    """Serve until stopped. `sock`: the listening socket, bound by the caller (a busy port is its one-line
    error, not uvicorn's). ServerDidNotStart if the application could not start (its reason is logged)."""
    import uvicorn

    app = build_http_app(config, host=host, port=port)
    resource, _ = urls(config, host, port)
    log.info("serving_http", url=f"http://{_host_for_url(host)}:{port}/mcp", resource=resource,
             mode=config.server.trading_mode)
    if sock is None:
        uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on", access_log=False)
        return
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    server.run(sockets=[sock])
    if not server.started:
        raise ServerDidNotStart("the HTTP server did not start (the reason is in the log above)")


class ServerDidNotStart(Exception):
    """uvicorn stopped during start-up (its lifespan failed); the reason was logged."""
