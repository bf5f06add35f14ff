"""The `tradewarden` command line. Every command acts on the database a running server uses.

Exit codes: 0 success; 1 the action failed or found a problem; 2 bad configuration or usage.
Human-readable output goes to stdout, the one-line reason of a failure to stderr.
"""

from __future__ import annotations

from server import process_start  # noqa: F401 - first: collection paused while a command's imports run

# isort: split
import asyncio
import gc
import importlib
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from server.config import Config, ConfigError, load_config
from tradewarden import __version__

T = TypeVar("T")


def fail(message: str, code: int = 1) -> None:
    from server.cli_common import fail as one_line_failure

    one_line_failure(message, code)


def _config(ctx: click.Context) -> Config:
    try:
        config = load_config(ctx.obj.get("config"))
    except ConfigError as error:
        fail(str(error), 2)
        raise  # unreachable
    ctx.obj["loaded_config"] = config  # failures name its database (_failure)
    return config


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _with_runtime(config: Config, action: Callable[[Any], Awaitable[T]], *, broker: bool = True) -> T:
    """broker=False: the command only reads or writes the ledger: no broker client (no keys needed)."""
    from broker.offline import OfflineBroker
    from server.runtime import open_runtime

    # One-shot commands leave reconciliation to the running server(s), and never create a database.
    async with open_runtime(config, reconcile=False, broker=None if broker else OfflineBroker(),
                            create_database=False) as runtime:
        return await action(runtime)


def _failure(error: Exception, config: Config | None) -> tuple[str, int]:
    """The one line and exit code of a command that raised: 2 for configuration, 1 for everything else. A
    failure names the database the command acted on (a "no such proposal" on the wrong ledger says so)."""
    from broker.base import BrokerError
    from ledger.database_url import describe_database
    from ledger.db import DatabaseUnavailable
    from policies.agents import RegistryError
    from policies.operator import OperatorError
    from policies.operator_books import AmbiguousId
    from policies.violations import GateDenied
    from server.startup import StartupError

    if isinstance(error, ConfigError | AmbiguousId):
        return str(error), 2
    if isinstance(error, StartupError):
        return str(error), error.exit_code
    if isinstance(error, DatabaseUnavailable):
        return str(error), 1  # it names the database
    if isinstance(error, OperatorError | RegistryError | GateDenied):
        message = str(error)
    elif isinstance(error, BrokerError | TimeoutError):
        message = f"BROKER_UNAVAILABLE: the broker did not answer: {str(error) or type(error).__name__}"
    elif isinstance(error, OSError):
        message = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    else:
        first = (str(error).strip().splitlines() or [""])[0][:300]
        message = f"unexpected error: {type(error).__name__}" + (f": {first}" if first else "")
    if config is not None:
        message += f" (database: {describe_database(config.server.database_url)})"
    return message, 1


def _guarded(action: Callable[[], T]) -> T:
    """Run an operator action; its failures become one line and an exit code (_failure), like every command's."""
    try:
        return action()
    except Exception as error:
        message, code = _failure(error, click.get_current_context().obj.get("loaded_config"))
        fail(message, code)
        raise  # unreachable


class OneLineErrors(click.Group):
    """The one error wrapper of every command (subgroups included): whatever a command raises ends as one line
    on stderr and exit code 1 or 2, never a traceback. Click's own usage errors and exits pass through."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.UsageError as error:  # an unknown option before the command
            fail(f"{error.format_message()} (see `{info_name or 'tradewarden'} --help`)", 2)
            raise  # unreachable

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(LAZY_COMMANDS if self is main else ())})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if self is main and cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            module, _, attribute = LAZY_COMMANDS[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.UsageError as error:  # a command's bad option or argument: one line, exit 2
            where = error.ctx.command_path if error.ctx is not None else ctx.command_path
            fail(f"{error.format_message()} (see `{where} --help`)", 2)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:
            message, code = _failure(error, (ctx.obj or {}).get("loaded_config"))
            fail(message, code)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tradewarden", message="%(prog)s %(version)s")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML config file (default: $TRADEWARDEN_CONFIG or ./tradewarden.toml).")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """tradewarden: an MCP server through which AI agents trade, behind one gate.

    \b
    Every command takes --config PATH and acts on the database the running servers use.
    Exit codes: 0 success, 1 failure, 2 bad configuration or usage.
    Example: tradewarden status --config /srv/tradewarden/tradewarden.toml
    """
    ctx.ensure_object(dict)
    if config_path:
        ctx.obj["config"] = config_path
    if ctx.invoked_subcommand != "serve":
        gc.enable()  # paused for the imports (server/process_start.py); only `serve` keeps the pause longer
    from server.logging import configure_logging

    # Log lines of one-shot commands go to stderr (stdout is their output); `serve` configures its own.
    configure_logging("warning")


def config_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every command takes --config too (after the command name), like `serve`."""

    def store(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value:
            ctx.ensure_object(dict)
            root = ctx.find_root()
            root.ensure_object(dict)
            root.obj["config"] = value

    return click.option("--config", type=click.Path(dir_okay=False), expose_value=False, callback=store,
                        is_eager=True, help="TOML config file.")(command)


# --- serve / demo ----------------------------------------------------------------------------------

@main.command()
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio",
              help="stdio (one agent, started by its MCP client) or http (every agent, bearer tokens).")
@click.option("--host", default=None, help="HTTP bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="HTTP port (default 8000).")
@click.option("--agent", "agent_id", envvar="TRADEWARDEN_AGENT", default=None,
              help="The agent a stdio server acts for (or TRADEWARDEN_AGENT).")
@config_option
@click.pass_context
def serve(ctx: click.Context, transport: str, host: str | None, port: int | None, agent_id: str | None) -> None:
    """Run the MCP server (stdio by default; streamable HTTP at http://HOST:PORT/mcp).

    It creates its SQLite ledger on its first start (no other command but `db upgrade`, `demo` and `doctor`
    does). It stops at once, with one line, when it could only fail: over stdio without a known agent (exit
    2), over HTTP on a busy port or an unreachable database (exit 1).

    \b
    Example: tradewarden serve --agent momentum-1 --config /abs/path/tradewarden.toml
    Example: tradewarden serve --transport http --port 8000
    """
    config = _config(ctx)
    from server.config import check_broker_credentials, webhook_secrets
    from server.logging import configure_logging
    from server.security import warn_at_start
    from server.startup import (
        StartupError,
        bind_port,
        check_ledger,
        check_stdio_agent,
        log_start,
        pause_collection_during_start_up,
        skip_sdk_logging_setup,
    )

    check_broker_credentials(config)
    webhook_secrets(config)
    if transport == "stdio":
        check_stdio_agent(config, agent_id)
        listening = None
    else:
        if ctx.get_parameter_source("agent_id") == click.core.ParameterSource.COMMANDLINE:
            raise StartupError("--agent is for stdio: over HTTP each agent's bearer token says who it is", 2)
        # Bound first: a busy port is one line before anything else starts.
        listening = bind_port(host or config.server.host, port if port is not None else config.server.port)
        gc.enable()  # an HTTP server collects as before (server/process_start.py paused it for the imports)
    if config.audit is not None:  # refuse a database behind its own last checkpoint before serving anything
        from server.cli_audit import preflight_anchoring

        preflight_anchoring(config)
    if listening is None:
        pause_collection_during_start_up()
        configure_logging(config.server.log_level, config.server.log_json)
        log_start(config, agent_id, transport)
        warn_at_start(config, transport)  # live over stdio: the agent's host can act as the operator
        skip_sdk_logging_setup()
        from server.app import create_server

        create_server(config, agent_id=agent_id, open_in_background=True).run("stdio")
        return
    from server.http import serve_http

    try:
        _run(check_ledger(config))
        configure_logging(config.server.log_level, config.server.log_json)
        log_start(config, None, transport)
        warn_at_start(config, transport)
        serve_http(config, host=host or config.server.host, port=listening.getsockname()[1], sock=listening)
    finally:
        listening.close()


@main.command()
@config_option
@click.pass_context
def demo(ctx: click.Context) -> None:
    """A scripted agent session against a fresh embedded server, printed readably.

    \b
    Example: tradewarden demo
    """
    from server.demo import run_demo

    sys.exit(_run(run_demo()))


# --- approvals -------------------------------------------------------------------------------------

@main.group()
def approvals() -> None:
    """Approve or reject proposed trades out of band.

    \b
    Ids are shown shortened; any unique prefix of 8 or more characters is accepted.
    Example: tradewarden approvals list
    """


@approvals.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (stable keys, full ids) instead of text.")
@config_option
@click.pass_context
def approvals_list(ctx: click.Context, as_json: bool) -> None:
    """Proposals waiting for a person: the order as it would be sent, the agent's reasoning, age and expiry.

    \b
    Example: tradewarden approvals list --json
    """
    if as_json:
        from server.cli_common import operate, print_json

        pending = operate(ctx, lambda op: op.pending())
        print_json({"proposals": [_proposal_json(p) for p in pending]})
        return

    async def action(runtime: Any) -> None:
        from sqlalchemy import select

        from ledger.models import AgentPermissions
        from policies.approval_form import approval_warnings, money_text, order_line, utc_text
        from policies.operator import Operator
        from policies.operators import CLI_OPERATOR
        from policies.text import inert  # agents' words never reach the terminal raw

        pending = await Operator(runtime.gate, CLI_OPERATOR).pending()
        async with runtime.sessions() as session:
            rows = (await session.execute(select(AgentPermissions).where(
                AgentPermissions.agent_id.in_({p.agent_id for p in pending})))).scalars()
            policies = {row.agent_id: runtime.gate.agent_from_row(row).approval for row in rows}
        now = runtime.clock()
        if not pending:
            click.echo("no proposals waiting for approval")
        for p in pending:
            age = int((now - p.created_at).total_seconds())
            left = int((p.expires_at - now).total_seconds())
            expiry = "EXPIRED" if left <= 0 else f"expires in {_duration(left)} ({utc_text(p.expires_at)})"
            click.echo(f"{p.id}  {inert(p.agent_id)}  [{p.trading_mode.upper()}]  age {_duration(age)}, {expiry}")
            click.echo(f"    {order_line(p)}")
            details = [f"estimated {money_text(p.estimated_notional)}"
                       + (f" at reference price {money_text(p.reference_price)}" if p.reference_price else "")]
            if p.strategy:
                details.append(f"strategy {inert(p.strategy)}")
            if p.confidence is not None:
                details.append(f"confidence {p.confidence:.2f}")
            details.append(f"approval mode {p.approval_mode}")
            click.echo(f"    {'; '.join(details)}")
            click.echo(f"    reasoning: {inert(p.reasoning)}")
            warnings = approval_warnings(p, policies.get(p.agent_id))
            if warnings:
                click.echo(f"    warnings: {' '.join(warnings)}")

    _run(_with_runtime(_config(ctx), action, broker=False))


def _proposal_json(p: Any) -> dict[str, Any]:
    return {"proposal_id": p.id, "agent_id": p.agent_id, "symbol": p.symbol, "side": p.side, "qty": p.qty,
            "notional": p.notional, "order_type": p.order_type, "limit_price": p.limit_price,
            "stop_price": p.stop_price, "time_in_force": p.time_in_force, "strategy": p.strategy,
            "reasoning": p.reasoning, "confidence": p.confidence, "estimated_notional": p.estimated_notional,
            "reference_price": p.reference_price, "approval_mode": p.approval_mode,
            "trading_mode": p.trading_mode, "created_at": p.created_at, "expires_at": p.expires_at}


def _duration(seconds: int) -> str:
    seconds = max(seconds, 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _decimal_option(name: str, value: str | None) -> Any:
    from decimal import Decimal, InvalidOperation

    if value is None:
        return None
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        fail(f"INVALID_ARGUMENT: {name} must be a decimal number, not {value[:40]!r}", 2)
    return number


def _decide(ctx: click.Context, proposal_id: str, approve: bool, note: str | None,
            qty: str | None = None, limit_price: str | None = None, stop_loss: str | None = None) -> None:
    edits = {"qty": _decimal_option("--qty", qty), "limit_price": _decimal_option("--limit-price", limit_price),
             "stop_loss": _decimal_option("--stop-loss", stop_loss)}
    from server.cli_common import operate

    # An id may be given by a unique prefix of at least 8 characters (ambiguous: exit 2, listing them).
    proposal_id = operate(ctx, lambda op: op.resolve_proposal_id(proposal_id))

    async def action(runtime: Any) -> Any:
        from policies.operator import Operator
        from policies.operators import CLI_OPERATOR

        return await Operator(runtime.gate, CLI_OPERATOR).decide(proposal_id, approve, note, **edits)

    proposal = _guarded(lambda: _run(_with_runtime(_config(ctx), action)))
    # The ledger calls a person's "no" `declined` (the agent's APPROVAL_DECLINED); the operator said reject.
    click.echo(f"proposal {proposal.id} {'rejected' if proposal.status == 'declined' else proposal.status}")
    if approve and any(v is not None for v in edits.values()):
        from policies.approval_form import order_line

        click.echo(f"approved order: {order_line(proposal)}")
        if proposal.exits:
            from policies.approval_form import exit_lines

            click.echo(exit_lines(proposal)[0].replace("Exits:      ", "exits: "))
    if proposal.status == "approved":
        click.echo("the agent's next execute_trade for it sends the order (after its checks pass again)")


@approvals.command("approve")
@click.argument("proposal_id")
@click.option("--qty", default=None, help="Approve a smaller quantity (above 0, at most the proposed).")
@click.option("--limit-price", default=None,
              help="Approve a better limit price (buy: no higher, sell: no lower); limit/stop_limit orders.")
@click.option("--stop-loss", default=None,
              help="Approve with a tighter stop-loss (toward the entry, or one added); never a looser one.")
@click.option("--note", default=None, help="Stored with the approval and in the audit log.")
@config_option
@click.pass_context
def approvals_approve(ctx: click.Context, proposal_id: str, qty: str | None, limit_price: str | None,
                      stop_loss: str | None, note: str | None) -> None:
    """Approve a pending proposal (its exact order, or shrunk: every check runs again on the edited order);
    the agent's execute_trade then sends exactly the approved order.

    \b
    Example: tradewarden approvals approve 3f2a9c1e --note "checked the news"
    Example: tradewarden approvals approve 3f2a9c1e --qty 5 --limit-price 180.50
    Example: tradewarden approvals approve 3f2a9c1e --stop-loss 182.00
    """
    _decide(ctx, proposal_id, True, note, qty, limit_price, stop_loss)


@approvals.command("reject")
@click.argument("proposal_id")
@click.option("--reason", default=None, help="Stored with the rejection and in the audit log.")
@config_option
@click.pass_context
def approvals_reject(ctx: click.Context, proposal_id: str, reason: str | None) -> None:
    """Reject a pending proposal for good (the agent gets APPROVAL_DECLINED).

    \b
    Example: tradewarden approvals reject 3f2a9c1e --reason "too large before earnings"
    """
    _decide(ctx, proposal_id, False, reason)


# --- halt / resume ---------------------------------------------------------------------------------

@main.command()
@click.option("--agent", "agent_id", default=None, help="Halt one agent (default: everyone).")
@click.option("--cancel-open", is_flag=True, help="Kill switch: also cancel every open order.")
@click.option("--reason", required=True, help="Why (shown to agents in their denials, and audited).")
@config_option
@click.pass_context
def halt(ctx: click.Context, agent_id: str | None, cancel_open: bool, reason: str) -> None:
    """Stop new trading (cancels still pass) until a person resumes it.

    \b
    Example: tradewarden halt --reason "broker incident"
    Example: tradewarden halt --agent momentum-1 --cancel-open --reason "runaway loop"
    """

    async def action(runtime: Any) -> Any:
        from policies.operator import Operator
        from policies.operators import CLI_OPERATOR

        return await Operator(runtime.gate, CLI_OPERATOR).halt(agent_id, reason, cancel_open)

    # A halt alone must work with the broker down; only cancelling open orders reaches it.
    report = _guarded(lambda: _run(_with_runtime(_config(ctx), action, broker=cancel_open)))
    click.echo(f"halted {'agent ' + agent_id if agent_id else 'all trading'}: {reason}")
    if cancel_open:
        failures = f"; {len(report.failed)} failed" if report.failed else ""
        click.echo(f"canceled {len(report.canceled)} open orders{failures}")
        if report.kept_exits:  # entries are cancelled; the stops protecting positions keep working
            click.echo(f"kept {len(report.kept_exits)} protective exits working (positions keep their stops):")
            for leg in report.kept_exits:
                click.echo(f"  {leg}")
        for order_id, why in report.failed.items():
            click.echo(f"  could not cancel {order_id}: {why}")
        if report.failed:
            sys.exit(1)


@main.command()
@click.option("--agent", "agent_id", default=None, help="Resume one agent (default: the global halt).")
@config_option
@click.pass_context
def resume(ctx: click.Context, agent_id: str | None) -> None:
    """Lift a halt or a circuit breaker (only people can).

    \b
    Example: tradewarden resume --agent momentum-1
    """

    async def action(runtime: Any) -> None:
        from policies.operator import Operator
        from policies.operators import CLI_OPERATOR

        await Operator(runtime.gate, CLI_OPERATOR).resume(agent_id)

    _guarded(lambda: _run(_with_runtime(_config(ctx), action, broker=False)))
    click.echo(f"resumed {'agent ' + agent_id if agent_id else 'all trading'}")


# --- audit -----------------------------------------------------------------------------------------

@main.group("audit")
def audit_group() -> None:
    """Verify, read and export the hash-chained audit log.

    \b
    Example: tradewarden audit verify
    """


@audit_group.command("verify")
@click.option("--export", "export_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Verify an `audit export` file instead of the database (no database or config needed).")
@click.option("--public-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The deployment's public key (`<signing_key_file>.pub`), with --export.")
@config_option
@click.pass_context
def audit_verify(ctx: click.Context, export_file: Path | None, public_key: Path | None) -> None:
    """Recompute the chain and check it against every signed checkpoint; exit 1 and say where if any record
    was edited, deleted, inserted, reordered or truncated, or a row was written outside the gate.

    \b
    Example: tradewarden audit verify --config /abs/path/tradewarden.toml
    Example: tradewarden audit verify --export audit.jsonl --public-key audit.ed25519.pub
    """
    from server import cli_audit

    if export_file is not None:
        if public_key is None:
            fail("--export needs --public-key FILE (the deployment's public key)", 2)
        cli_audit.verify_export(export_file, public_key)  # type: ignore[arg-type]
        return
    if public_key is not None:
        fail("--public-key goes with --export FILE", 2)
    cli_audit.verify_database(_config(ctx))


@audit_group.command("keygen")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Private key file (default: [audit] signing_key_file).")
@config_option
@click.pass_context
def audit_keygen(ctx: click.Context, output: str | None) -> None:
    """Make the Ed25519 key that signs checkpoints: the private key in a 0600 file (never overwritten), the
    public key in `<file>.pub` and on the last line of stdout.

    \b
    Example: tradewarden audit keygen --config /abs/path/tradewarden.toml
    """
    from server import cli_audit

    cli_audit.keygen(None if output else _config(ctx), output)


@audit_group.command("tail")
@click.option("-n", "count", type=int, default=20, show_default=True, help="How many of the latest records.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (stable keys, full payloads) instead of text.")
@config_option
@click.pass_context
def audit_tail(ctx: click.Context, count: int, as_json: bool) -> None:
    """The latest audit records, oldest first.

    \b
    Example: tradewarden audit tail -n 50
    """

    async def action(runtime: Any) -> list[Any]:
        from policies import audit

        async with runtime.sessions() as session:
            return await audit.tail(session, count)

    events = _run(_with_runtime(_config(ctx), action, broker=False))
    if as_json:
        from server.cli_common import print_json

        print_json({"records": [{"seq": e.seq, "event_id": e.event_id, "ts": e.ts, "actor": e.actor,
                                 "agent_id": e.agent_id, "kind": e.kind, "tool": e.tool,
                                 "payload": json.loads(e.payload)} for e in events]})
        return
    for event in events:
        payload = json.loads(event.payload)
        summary = json.dumps(payload, separators=(",", ":"))
        click.echo(f"#{event.seq:<6} {event.ts.strftime('%Y-%m-%d %H:%M:%S')} {event.actor:24} "
                   f"{event.kind:24} {event.tool or '':18} {summary[:140]}")


@audit_group.command("export")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="File (default: stdout).")
@config_option
@click.pass_context
def audit_export(ctx: click.Context, output: str | None) -> None:
    """Signed checkpoints, every record with its hashes, and the head, as JSON lines (to archive, or to check
    elsewhere with `audit verify --export FILE --public-key FILE`).

    \b
    Example: tradewarden audit export -o audit.jsonl
    """
    from server import cli_audit

    cli_audit.export(_config(ctx), output)


# --- db / status -----------------------------------------------------------------------------------

@main.group("db")
def db_group() -> None:
    """Database schema.

    \b
    Example: tradewarden db upgrade
    """


@db_group.command("upgrade")
@config_option
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create the database or migrate it to this version's schema.

    \b
    Example: tradewarden db upgrade --config /abs/path/tradewarden.toml
    """
    from ledger.db import run_upgrade

    config = _config(ctx)
    run_upgrade(config.server.database_url)
    click.echo("database schema is up to date")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (stable keys) instead of text.")
@config_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Database, mode, halts, agents, open orders and pending approvals at a glance (never reaches the broker).

    \b
    Example: tradewarden status --config /srv/tradewarden/tradewarden.toml
    """
    from server.cli_common import operate, print_json
    from server.cli_doctor import database_label

    config = _config(ctx)
    report = operate(ctx, lambda op: op.status(), config=config)
    database = database_label(config.server.database_url)
    if as_json:
        print_json({"database": database, "config": config.source, "trading_mode": config.server.trading_mode,
                    "broker": config.server.broker, "agent_trading": config.server.enable_agent_trading,
                    "states": [{"scope": s.scope, "state": s.state, "reason": s.reason, "changed_by": s.changed_by,
                                "changed_at": s.changed_at} for s in report.states],
                    "agents": report.agents, "enabled_agents": report.enabled_agents,
                    "open_orders": report.open_orders, "pending_approvals": report.pending_approvals,
                    "expired_unanswered": report.expired_unanswered, "reconciliation": report.reconciliation})
        return
    click.echo(f"database: {database}   config: {config.source}")
    click.echo(f"trading mode: {config.server.trading_mode.upper()}   broker: {config.server.broker}   "
               f"agent trading: {'enabled' if config.server.enable_agent_trading else 'DISABLED'}")
    for state in report.states:
        if state.state != "active" or state.scope == "*":
            who = "global" if state.scope == "*" else f"agent {state.scope}"
            click.echo(f"{who}: {state.state.upper()}" + (f" — {state.reason} (by {state.changed_by})"
                                                           if state.reason else ""))
    expired = f" ({report.expired_unanswered} expired unanswered)" if report.expired_unanswered else ""
    click.echo(f"agents: {report.agents} ({report.enabled_agents} enabled)   open orders: {report.open_orders}   "
               f"pending approvals: {report.pending_approvals}{expired}")
    if report.reconciliation is not None:
        for line in reconciliation_lines(report.reconciliation):
            click.echo(line)


def reconciliation_lines(report: dict[str, Any]) -> list[str]:
    """The last reconciliation with the broker (server_state["reconciliation"]), drift first."""
    checked = str(report.get("checked_at", "?"))
    drift = report.get("drift") or {}
    lines = []
    if drift:
        lines.append(f"reconciliation DRIFT (checked {checked}): positions differ from the broker's")
        for symbol, sides in sorted(drift.items()):
            lines.append(f"  {symbol}: ours {sides.get('ours')}  broker {sides.get('broker')}")
    else:
        lines.append(f"reconciliation: no drift (checked {checked}; {report.get('resolved', 0)} orders resolved)")
    unresolved = report.get("unresolved") or []
    if unresolved:
        lines.append(f"  orders not yet settled with the broker: {', '.join(map(str, unresolved))}")
    for error in report.get("errors") or []:
        lines.append(f"  broker error: {error}")
    return lines


# The command groups of their own modules, by name ("module:attribute"): imported when a command line names
# them (or --help lists them), so `serve` starts without them (tests/server/test_startup.py).
LAZY_COMMANDS = {
    "operators": "server.cli_operators:operators",
    "agents": "server.cli_agents:agents",
    "positions": "server.cli_books:positions",
    "orders": "server.cli_books:orders",
    "performance": "server.cli_books:performance",
    "doctor": "server.cli_doctor:doctor",
    "events": "server.cli_events:events_group",
    "webhooks": "server.cli_events:webhooks_group",
    "console": "server.cli_console:console",
}

if __name__ == "__main__":
    main(prog_name="tradewarden")
