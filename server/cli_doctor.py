"""`tradewarden doctor`: checks a deployment, one line per check (ok / warn / fail); exit 1 on any fail.

It reads; it never migrates, syncs or writes (a missing SQLite database is reported, not created)."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from server.cli_common import config_option, print_json, say
from server.config import Config, ConfigError, check_broker_credentials, load_config

CLOCK_SKEW_WARN = 2.0  # seconds between this machine's clock and the broker's
BROKER_TIMEOUT = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # ok | warn | fail
    message: str


def database_label(url: str) -> str:
    """The database for people (ledger/database_url.py): a SQLite file's absolute path, other URLs with the
    password masked."""
    from ledger.database_url import describe_database

    return describe_database(url)


def check_config(config_path: str | None) -> tuple[list[Check], Config | None]:
    try:
        config = load_config(config_path)
    except ConfigError as error:
        return [Check("config", "fail", str(error))], None
    return [Check("config", "ok", f"{config.source}: {config.server.trading_mode} mode, {config.server.broker} "
                                  f"broker, {len(config.agents)} agent(s) in the file")], config


def check_mode(config: Config) -> Check:
    server = config.server
    url = (server.alpaca_trading_url or "").lower()
    if server.trading_mode == "live":
        if server.broker == "simulated":
            return Check("mode", "warn", "live mode with the simulated broker: no real orders are sent")
        if "paper" in url:
            return Check("mode", "fail", f"live mode but the trading URL is a paper endpoint: {url}")
        return Check("mode", "ok", "LIVE trading (TRADEWARDEN_ALLOW_LIVE=1 is set)")
    if server.broker == "alpaca" and url and "paper" not in url and "alpaca.markets" in url:
        return Check("mode", "fail", f"paper mode but the trading URL is a live endpoint: {url}")
    return Check("mode", "ok", "paper trading")


def check_keys(config: Config) -> Check:
    if config.server.broker != "alpaca":
        return Check("keys", "ok", "the simulated broker needs no keys")
    try:
        check_broker_credentials(config)
    except ConfigError as error:
        return Check("keys", "fail", str(error))
    return Check("keys", "ok", "ALPACA_API_KEY and ALPACA_SECRET_KEY are set")


def check_database_file(config: Config) -> tuple[Check, bool]:
    """For SQLite: the file, its folder and permissions. Returns (check, whether the database can be read)."""
    from ledger.db import sqlite_path

    label = database_label(config.server.database_url)
    path = sqlite_path(config.server.database_url)
    if path is None:
        return Check("database", "ok", label), True
    file = Path(path).resolve()
    folder = file.parent
    if not folder.is_dir():
        return Check("database", "fail", f"{label}: its folder does not exist"), False
    if not file.exists():
        if not os.access(folder, os.W_OK):
            return Check("database", "fail", f"{label} does not exist and its folder is not writable"), False
        return Check("database", "warn", f"{label} does not exist yet (`tradewarden db upgrade` or the first "
                                         "server start creates it)"), False
    if not os.access(file, os.R_OK | os.W_OK) or not os.access(folder, os.W_OK):
        return Check("database", "fail", f"{label}: not readable and writable by this user (the folder too: "
                                         "SQLite writes its journal beside it)"), False
    mode = stat.S_IMODE(file.stat().st_mode)
    if mode & 0o077:
        return Check("database", "warn", f"{label}: readable by other users (mode {mode:o}; chmod 600 it)"), True
    return Check("database", "ok", f"{label} (mode {mode:o})"), True


async def check_database_contents(config: Config) -> list[Check]:
    """Schema revision, agents and their tokens, the audit log's last time: read only."""
    from sqlalchemy import func, select

    from ledger import db
    from ledger.models import SCHEMA_REVISION, AgentPermissions, AuditEvent

    engine = db.create_engine(config.server.database_url)
    try:
        try:
            revision = await asyncio.wait_for(db.current_revision(engine), BROKER_TIMEOUT)
        except Exception as error:
            return [Check("database", "fail", f"{database_label(config.server.database_url)}: cannot be read: "
                                              f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")]
        if revision is None:
            return [Check("schema", "warn", "no schema yet (`tradewarden db upgrade` creates it)")]
        checks = [Check("schema", "ok", f"revision {revision}") if revision == SCHEMA_REVISION else
                  Check("schema", "warn", f"revision {revision}, this version expects {SCHEMA_REVISION} "
                                          "(`tradewarden db upgrade`, or the next server start, migrates)")]
        if revision != SCHEMA_REVISION:
            return checks
        sessions = db.session_factory(engine)
        async with sessions() as session:
            rows = list((await session.execute(select(AgentPermissions))).scalars())
            last = (await session.execute(select(func.max(AuditEvent.ts)))).scalar_one_or_none()
        enabled = [row for row in rows if row.enabled]
        without = sorted(row.agent_id for row in enabled if row.token_hash is None)
        if not rows and config.agents:
            checks.append(Check("agents", "ok", f"the config file's {len(config.agents)} agent(s) are registered at "
                                                "the next start (or command)"))
        elif not rows:
            checks.append(Check("agents", "warn", "no agents registered (add [[agents]] or `tradewarden agents add`)"))
        elif not enabled:
            checks.append(Check("agents", "warn", f"{len(rows)} registered, none enabled"))
        elif without:
            checks.append(Check("agents", "warn", f"{len(enabled)} enabled; without a bearer token (stdio only; "
                                                  f"HTTP needs `agents rotate-token ID`): {', '.join(without)}"))
        else:
            checks.append(Check("agents", "ok", f"{len(enabled)} enabled, each with a bearer token"))
        if last is not None and last > datetime.now(UTC).replace(microsecond=0) and \
                (last - datetime.now(UTC)).total_seconds() > CLOCK_SKEW_WARN:
            checks.append(Check("clock", "warn", f"the audit log has a record from the future ({last.isoformat()}):"
                                                 " this machine's clock is behind the one that wrote it"))
        return checks
    finally:
        await engine.dispose()


async def check_broker(config: Config) -> list[Check]:
    """The broker answers, and its clock agrees with ours."""
    if config.server.broker == "simulated":
        return [Check("broker", "ok", "simulated broker (embedded)"),
                Check("clock", "ok", f"system clock {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")]
    from broker.alpaca import AlpacaBroker

    try:
        keys = check_broker_credentials(config)
    except ConfigError:
        return [Check("broker", "fail", "not tried: no Alpaca keys (see the keys line)")]
    if keys is None:
        return []
    broker = AlpacaBroker(api_key=keys[0], secret_key=keys[1], paper=config.server.trading_mode == "paper",
                          trading_url=config.server.alpaca_trading_url, data_url=config.server.alpaca_data_url,
                          timeout=config.server.broker_timeout_seconds)
    try:
        await broker.start()
        started = time.monotonic()
        account = await asyncio.wait_for(broker.get_account(), BROKER_TIMEOUT)
        took = time.monotonic() - started
        return [Check("broker", "ok", f"Alpaca answered in {took * 1000:.0f} ms (account equity "
                                      f"{account.equity})")]
    except Exception as error:
        return [Check("broker", "fail", f"Alpaca is not reachable: {type(error).__name__}: "
                                        f"{str(error).splitlines()[0][:200] if str(error) else ''}")]
    finally:
        await broker.close()


def check_anchoring(config: Config) -> Check:
    audit = getattr(config, "audit", None)
    if audit is None or not getattr(audit, "signing_key_file", None):
        return Check("anchoring", "warn", "no [audit] anchoring: someone who can write the database could rewrite "
                                          "the audit chain unseen (see README, Audit anchoring)")
    key = Path(str(audit.signing_key_file))
    if not key.exists():
        return Check("anchoring", "fail", f"[audit] signing_key_file {key} does not exist")
    return Check("anchoring", "ok", f"checkpoints signed with {key} into {getattr(audit, 'checkpoint_dir', '?')}")


def run_checks(config_path: str | None) -> list[Check]:
    checks, config = check_config(config_path)
    if config is None:
        return checks
    mode = check_mode(config)
    checks.append(mode)
    checks.append(check_keys(config))
    file_check, readable = check_database_file(config)
    checks.append(file_check)

    async def rest() -> list[Check]:
        found: list[Check] = []
        if readable:
            found.extend(await check_database_contents(config))
        if mode.level == "fail":  # never send keys to an endpoint of the other mode
            found.append(Check("broker", "fail", "not tried: the trading mode and the endpoint disagree"))
        else:
            found.extend(await check_broker(config))
        return found

    checks.extend(asyncio.run(rest()))
    checks.append(check_anchoring(config))
    return checks


STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@config_option
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check a deployment: config, database path and permissions, schema, keys, broker, mode, audit
    anchoring, agents with tokens, clock. One line per check (ok / warn / fail); exit 1 on any fail.

    \b
    Example: tradewarden doctor --config /srv/tradewarden/tradewarden.toml
    """
    checks = run_checks((ctx.find_root().obj or {}).get("config"))
    if as_json:
        print_json({"checks": checks, "ok": all(c.level != "fail" for c in checks)})
    else:
        for check in checks:
            say(f"{check.level:4}  {check.name:10} {check.message}", style=STYLES[check.level])
    if any(c.level == "fail" for c in checks):
        raise SystemExit(1)
