"""What `tradewarden serve` checks before it answers anyone: the agent a stdio server acts for exists, the HTTP
port is free, the ledger opens; and the one start-up line that says what this server is (agent, mode, broker,
database) on stderr.

Each failure is a StartupError with the exit code it deserves (2 bad configuration or usage, 1 failure) and a
one-line reason: a server that cannot do its job stops at once instead of answering the handshake and then
failing every call.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import socket
import sqlite3
from typing import Any

from ledger.database_url import describe_database, sqlite_file
from server.config import Config, alpaca_trading_url, is_custom_trading_url


class StartupError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def known_agent_ids(config: Config) -> list[str]:
    """Agents of the config file and of the ledger (added with `agents add`). A SQLite ledger is read with the
    standard library, read-only (a stdio server's start stays fast, and nothing is created); a missing file
    has no agents yet. PostgreSQL through the ledger's engine (db.DatabaseUnavailable if it does not answer)."""
    ids = {agent.id for agent in config.agents}
    url = config.server.database_url
    path = sqlite_file(url)
    if path is not None:
        if path.is_file():
            try:
                with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as connection:
                    ids |= {row[0] for row in connection.execute("SELECT agent_id FROM agent_trading_permissions")}
            except sqlite3.OperationalError as error:
                if "no such table" not in str(error):  # a ledger not yet migrated has no agents
                    raise StartupError(f"database {describe_database(url)} is unavailable: {error}", 1) from None
        return sorted(ids)
    if url.startswith("sqlite"):
        return sorted(ids)  # in memory: only the config's
    import asyncio

    return sorted(ids | set(asyncio.run(_ledger_agent_ids(url))))


async def _ledger_agent_ids(url: str) -> list[str]:
    from sqlalchemy import inspect, text

    from ledger import db

    engine = db.create_engine(url, pool_size=1, max_overflow=0)
    try:
        with db.reported(url):
            async with engine.connect() as connection:
                exists = await connection.run_sync(lambda c: inspect(c).has_table("agent_trading_permissions"))
                if not exists:
                    return []
                rows = await connection.execute(text("SELECT agent_id FROM agent_trading_permissions"))
                return [row[0] for row in rows]
    finally:
        await engine.dispose()


def check_stdio_agent(config: Config, agent_id: str | None) -> str:
    """The agent a stdio server acts for: given, and known. StartupError (exit 2) listing the known ids."""
    if agent_id and config.agent(agent_id) is not None:
        return agent_id  # in the config file: no need to read the ledger
    known = known_agent_ids(config)
    listing = f"known agents: {', '.join(known)}" if known else "no agents are configured yet"
    if not agent_id:
        raise StartupError(f"serve over stdio acts for one agent: pass --agent ID or set TRADEWARDEN_AGENT "
                           f"({listing})", 2)
    if agent_id not in known:
        raise StartupError(f"unknown agent {agent_id!r} in {describe_database(config.server.database_url)} "
                           f"and the config file ({listing})", 2)
    return agent_id


def bind_port(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts, so a busy port is one line and exit 1."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise StartupError(f"cannot listen on {host}:{port}: {error.strerror}", 2) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise StartupError(f"port {port} on {host} is in use (another server is running?)", 1) from None
        raise StartupError(f"cannot listen on {host}:{port}: {error.strerror or error}", 1) from None
    return sock


async def check_ledger(config: Config) -> None:
    """Open (create on a first start), migrate and close the ledger: its failures become one line before the
    HTTP server starts (inside uvicorn's start-up they would be a traceback and exit 3)."""
    from ledger import db
    from server.clock import utc_now
    from server.runtime import prepare_database

    url = config.server.database_url
    db.check_location(url, create=True)
    engine = db.create_engine(url)
    try:
        with db.reported(url):
            await prepare_database(config, engine, db.session_factory(engine), utc_now)
    finally:
        await engine.dispose()


def start_fields(config: Config, agent_id: str | None, transport: str) -> dict[str, Any]:
    """What the start-up log line says about this server (never a key)."""
    fields: dict[str, Any] = {"transport": transport, "agent": agent_id or "(per bearer token)",
                              "mode": config.server.trading_mode, "broker": config.server.broker,
                              "database": describe_database(config.server.database_url)}
    if config.server.broker == "alpaca":
        fields["trading_url"] = alpaca_trading_url(config.server)
    return fields


def log_start(config: Config, agent_id: str | None, transport: str) -> None:
    from tradewarden.log import get_logger

    log = get_logger("tradewarden.serve")
    log.info("starting", **start_fields(config, agent_id, transport))
    if is_custom_trading_url(config.server):
        log.warning("custom_broker_endpoint", trading_url=alpaca_trading_url(config.server),
                    detail="not Alpaca's own endpoint: allowed in paper mode only")


def pause_collection_during_start_up() -> None:
    """No cyclic garbage collection until the runtime's heap freeze (server/runtime.py freeze_start_up_heap,
    a few seconds after the runtime opens), which collects once and turns it back on. Start-up allocates
    mostly objects that live as long as the process (modules, classes, schemas, mappers): the collector
    kept re-scanning them while the server's imports ran, about 15 % of the time to its first answer."""
    gc.disable()


def skip_sdk_logging_setup() -> None:
    """MCPServer() sets up logging with rich's handler through logging.basicConfig, which does nothing when the
    root logger has handlers, as ours has by then (server/logging.py configure_logging): the SDK's call only loads
    rich's console and builds one (~13 ms of CPU before the first answer). A stdio server skips it; its log lines
    are exactly the same."""
    from mcp.server.mcpserver import server as sdk_server

    if logging.getLogger().handlers and hasattr(sdk_server, "configure_logging"):
        sdk_server.configure_logging = lambda *_args, **_kwargs: None
