"""`tradewarden operators list|add|disable|rotate-token`: the people who operate this deployment.

The command line acts as `operator:cli` (policies.operators.CLI_OPERATOR); the registry
(policies/operator_registry.py) checks the role and audits every change. Tokens are printed once, on the last
line of stdout, and stored only as hashes.

The shared helpers of server/cli.py are imported inside the commands: this module is imported by it (its group
is attached there), and `python -m server.cli` runs that module under another name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from policies.operators import Role


def _store_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """--config after the command name, as every command takes it (server.cli.config_option)."""
    if value:
        root = ctx.find_root()
        root.ensure_object(dict)
        root.obj["config"] = value


def _config_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--config", type=click.Path(dir_okay=False), expose_value=False, callback=_store_config,
                        is_eager=True, help="TOML config file.")(command)


def _act(ctx: click.Context, work: Callable[[Any, Any], Any]) -> Any:
    """Run `work(session, now)` in one transaction on the deployment's database, as operator:cli; an operator
    error becomes one line on stderr and exit 1."""
    from server import cli as base

    async def action(runtime: Any) -> Any:
        from ledger.db import transaction

        async with transaction(runtime.sessions) as session:
            return await work(session, runtime.clock())

    return base._guarded(lambda: base._run(base._with_runtime(base._config(ctx), action)))


@click.group("operators")
def operators() -> None:
    """People who operate this deployment: roles viewer, approver, admin; their bearer tokens.

    \b
    Example: tradewarden operators add alice --role approver
    """


@operators.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array (no tokens, no hashes).")
@_config_option
@click.pass_context
def operators_list(ctx: click.Context, as_json: bool) -> None:
    """Every operator: name, role, enabled, when their token was made (never the token).

    \b
    Example: tradewarden operators list --json
    """
    from policies.operator_registry import list_operators
    from policies.operators import CLI_OPERATOR

    rows = _act(ctx, lambda session, _now: list_operators(session, by=CLI_OPERATOR))
    if as_json:
        click.echo(json.dumps([{"name": r.name, "role": r.role.value, "enabled": r.enabled,
                                "created_at": r.created_at.isoformat(), "updated_at": r.updated_at.isoformat(),
                                "token_rotated_at": r.token_rotated_at.isoformat() if r.token_rotated_at else None}
                               for r in rows]))
        return
    if not rows:
        click.echo("no operators (the command line acts as operator:cli)")
        return
    click.echo(f"{'OPERATOR':24} {'ROLE':9} {'ENABLED':8} TOKEN ROTATED")
    for r in rows:
        rotated = r.token_rotated_at.strftime("%Y-%m-%d %H:%M:%S UTC") if r.token_rotated_at else "-"
        click.echo(f"{r.name:24} {r.role.value:9} {str(r.enabled).lower():8} {rotated}")


@operators.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True,
              help="viewer (reads), approver (+ approve, reject, cancel, halt) or admin (+ resume, agents, operators).")
@_config_option
@click.pass_context
def operators_add(ctx: click.Context, name: str, role: str) -> None:
    """Create an operator and print its bearer token once (on the last line).

    \b
    Example: tradewarden operators add alice --role approver
    """
    from policies.operator_registry import add_operator
    from policies.operators import CLI_OPERATOR

    token = _act(ctx, lambda session, now: add_operator(session, name, role, by=CLI_OPERATOR, now=now))
    click.echo(f"operator {name} added with role {role}; their bearer token (shown once, store it now):")
    click.echo(token)


@operators.command("disable")
@click.argument("name")
@_config_option
@click.pass_context
def operators_disable(ctx: click.Context, name: str) -> None:
    """Disable an operator: their token stops working at once.

    \b
    Example: tradewarden operators disable alice
    """
    from policies.operator_registry import disable_operator
    from policies.operators import CLI_OPERATOR

    _act(ctx, lambda session, now: disable_operator(session, name, by=CLI_OPERATOR, now=now))
    click.echo(f"operator {name} disabled")


@operators.command("rotate-token")
@click.argument("name")
@_config_option
@click.pass_context
def operators_rotate(ctx: click.Context, name: str) -> None:
    """Replace the operator's token (the old one stops working at once) and print the new one once.

    \b
    Example: tradewarden operators rotate-token alice
    """
    from policies.operator_registry import rotate_operator_token
    from policies.operators import CLI_OPERATOR

    token = _act(ctx, lambda session, now: rotate_operator_token(session, name, by=CLI_OPERATOR, now=now))
    click.echo(f"new bearer token for operator {name} (the old one no longer works):")
    click.echo(token)
