"""`tradewarden console`: the operator console and API for deployments whose agents use stdio.

The same pages and API as the HTTP server's /console and /api (server/console.py, server/operator_api.py),
on the deployment's database, without MCP: a process of its own, bound to loopback unless told otherwise
(put a TLS proxy in front to reach it from elsewhere, and set public_url to its https address).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import click
from starlette.types import Receive, Scope, Send

from server.config import Config

DEFAULT_PORT = 8765
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _store_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """--config after the command name, as every command takes it (server.cli.config_option)."""
    if value:
        root = ctx.find_root()
        root.ensure_object(dict)
        root.obj["config"] = value


def _config_option(command: Any) -> Any:
    return click.option("--config", type=click.Path(dir_okay=False), expose_value=False, callback=_store_config,
                        is_eager=True, help="TOML config file.")(command)


class ConsoleApp:
    """ASGI: opens the runtime in its lifespan, then serves /api (with the operators' event stream at
    /api/events/ws) and /console (with the live feed's stream), and / redirects to /console/."""

    def __init__(self, config: Config, *, broker: Any = None):
        from server.console import OperatorSurfaces
        from server.console_events import ConsoleEventStream
        from server.events_ws import EventHub, EventStream, EventStreamApp, registry_authenticator

        self.config = config
        self.broker = broker
        self.runtime: Any = None
        self.hub = EventHub(self._sessions)
        surfaces = OperatorSurfaces(None, lambda: self.runtime, public_url=config.server.public_url,
                                    events=ConsoleEventStream(self.hub, lambda: self.runtime))
        self.surfaces = EventStreamApp(surfaces, EventStream(self.hub, registry_authenticator(self._sessions)))

    def _sessions(self) -> Any:
        return self.runtime.sessions if self.runtime is not None else None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        from server.runtime import open_runtime

        # The agents' own server processes reconcile with the broker; the console only reads and acts.
        async with open_runtime(self.config, broker=self.broker, reconcile=False, create_database=False) as runtime:
            self.runtime = runtime
            try:
                yield
            finally:
                await self.hub.close()
                self.runtime = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.surfaces(scope, receive, send)
            return
        stack = contextlib.AsyncExitStack()
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await stack.enter_async_context(self.running())
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": type(error).__name__})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await stack.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return



@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback by default).")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port.")
@_config_option
@click.pass_context
def console(ctx: click.Context, host: str, port: int) -> None:
    """Serve the operator console (http://HOST:PORT/console/) and API (/api) on this deployment's database.

    It never creates a ledger (the agents' servers or `tradewarden db upgrade` do): a missing database, a busy
    port or a bad config is one line and exit 1 or 2.

    \b
    Log in with an operator's token (`tradewarden operators add NAME --role approver`).
    Example: tradewarden console --config /srv/tradewarden/tradewarden.toml
    """
    from server import cli as base
    from server.config import check_broker_credentials
    from server.http import ServerDidNotStart
    from server.logging import configure_logging
    from server.startup import bind_port, check_ledger

    config = base._config(ctx)
    check_broker_credentials(config)
    from ledger import db

    db.check_location(config.server.database_url, create=False)
    listening = bind_port(host, port)  # a busy port is one line before anything else starts
    try:
        base._run(check_ledger(config))  # the ledger exists (checked above): this only migrates it
        configure_logging(config.server.log_level, config.server.log_json)
        if host not in LOOPBACK:
            click.echo(f"tradewarden: warning: the console listens on {host}, not loopback; serve it only behind "
                       "TLS (set public_url to its https address so cookies are Secure)", err=True)
        import uvicorn

        shown = host if ":" not in host else f"[{host}]"
        click.echo(f"tradewarden console: http://{shown}:{listening.getsockname()[1]}/console/", err=True)
        server = uvicorn.Server(uvicorn.Config(ConsoleApp(config), log_level="warning", lifespan="on",
                                               access_log=False))
        server.run(sockets=[listening])
        if not server.started:
            raise ServerDidNotStart("the console did not start (the reason is in the log above)")
    finally:
        listening.close()
