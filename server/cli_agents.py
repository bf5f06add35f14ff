"""`tradewarden agents ...`: list, show, add, enable, disable, set, remove, rotate-token. Every action goes
through the operator layer (policies/operator.py), which checks the role and audits it as operator:cli."""

from __future__ import annotations

import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import click

from server.cli_common import config_option, fail, json_option, load, operate, plain, print_json, say, table, when
from server.config import AgentConfig

# Help for each setting's flag. A setting added to AgentConfig without an entry here still gets a flag.
SETTING_HELP: dict[str, str] = {
    "max_trade_size": "USD notional per order.",
    "max_position_size": "USD per symbol.",
    "max_daily_trades": "Orders per trading day.",
    "allowed_symbols": "Comma-separated symbols the agent may trade ('*' for all), e.g. AAPL,SPY.",
    "allowed_strategies": "Comma-separated strategy names the agent may use ('*' for any).",
    "risk_level": "Defaults for the limits not set: conservative, moderate or aggressive.",
    "approval": "Who approves its trades: auto, elicit (its MCP client) or operator.",
    "auto_approve_max_notional": "Largest order (USD) approved automatically.",
    "capital": "Capital allocated to the agent (USD): its own buying power.",
    "max_order_qty": "Shares or units per order.",
    "max_gross_exposure": "USD held across all symbols.",
    "max_orders_per_window": "Orders per order-rate window.",
    "order_rate_window_seconds": "Length of the order-rate window (seconds).",
    "rolling_notional_max": "USD ordered within the rolling window (stops splitting an order).",
    "rolling_notional_window_seconds": "Length of the rolling-notional window (seconds).",
    "duplicate_window_seconds": "The same order again within this many seconds is a DUPLICATE_ORDER.",
    "daily_loss_limit": "USD loss in a day that trips the breaker.",
    "max_drawdown_pct": "Percent fall from the equity peak that trips the breaker.",
    "price_collar_pct": "Percent a limit or stop price may be from the quote.",
    "max_quote_age_seconds": "Older quotes are stale: no trade.",
    "allow_short": "Whether it may sell short: true or false.",
    "max_denials_per_window": "Denials within the denials window that trip the breaker.",
    "denials_window_seconds": "Length of the denials window (seconds).",
    "breaker_action": "What a tripped breaker does: reducing or halted.",
    "require_stop_loss": "Whether every opening order needs a stop_loss or trailing_stop: true or false.",
    "max_risk_per_trade": "Money at risk per trade (qty x distance to the stop): USD, e.g. 500, or 1% of capital.",
}
FLAG_ALIASES = {"allowed_symbols": ["--symbols"], "allowed_strategies": ["--strategies"]}  # earlier spellings
NOT_FLAGS = ("id", "enabled")  # the id is the argument; enabled has its own commands


def setting_names() -> list[str]:
    return [name for name in AgentConfig.model_fields if name not in NOT_FLAGS]


def _flag_type(name: str) -> click.ParamType | type:
    annotation = AgentConfig.model_fields[name].annotation
    if typing.get_origin(annotation) is not typing.Literal:  # X | None: look at X
        annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(c) for c in typing.get_args(annotation)])
    if annotation is bool:
        return click.Choice(["true", "false"])
    if annotation is int:
        return int
    return str  # decimals and lists: validated by AgentConfig


def setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One --flag per agent setting (every limit of the config file)."""
    for name in reversed(setting_names()):
        flags = ["--" + name.replace("_", "-"), *FLAG_ALIASES.get(name, [])]
        command = click.option(*flags, name, type=_flag_type(name), default=None,
                               help=SETTING_HELP.get(name, f"The {name} limit (see README, Configuration)."))(command)
    return command


def validated(agent_id: str, options: dict[str, Any]) -> dict[str, Any]:
    """The settings given on the command line, checked like the config file's (exit 2 when bad)."""
    from pydantic import ValidationError

    given = {name: value for name, value in options.items() if value is not None}
    for name in ("allowed_symbols", "allowed_strategies"):
        if name in given:
            given[name] = [item.strip() for item in given[name].split(",") if item.strip()]
    try:
        checked = AgentConfig(id=agent_id, **given)
    except ValidationError as error:
        first = error.errors()[0]
        fail(f"invalid agent setting: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}", 2)
    return {name: getattr(checked, name) for name in given}


@click.group()
def agents() -> None:
    """Manage agents: list, show, add, enable, disable, set limits, remove, rotate tokens.

    \b
    An operator's action wins over the config file: a disable, an enable or a limit set here is never
    undone by the next start (`agents show` says where each value comes from; `agents set ID --reset NAME`
    hands a setting back to the file).
    Example: tradewarden agents list --config /srv/tradewarden/tradewarden.toml
    """


@agents.command("list")
@json_option
@config_option
@click.pass_context
def agents_list(ctx: click.Context, as_json: bool) -> None:
    """Every agent: enabled or not, trading state, risk level, approval mode, token, source.

    \b
    Example: tradewarden agents list --json
    """
    found = operate(ctx, lambda op: op.agents())
    if as_json:
        print_json({"agents": found})
        return
    table(["AGENT", "ENABLED", "STATE", "RISK", "APPROVAL", "TOKEN", "SOURCE", "OPERATOR SET"],
          [(a.agent_id, "yes" if a.enabled else "NO", a.state, a.risk_level, a.approval,
            "yes" if a.has_token else "no", a.source, ",".join(a.overridden) or "-") for a in found],
          empty="no agents")


@agents.command("show")
@click.argument("agent_id")
@json_option
@config_option
@click.pass_context
def agents_show(ctx: click.Context, agent_id: str, as_json: bool) -> None:
    """One agent's settings: the value in force and why (operator, config file, risk-level default).

    \b
    Example: tradewarden agents show momentum-1
    """
    config = load(ctx)
    detail = operate(ctx, lambda op: op.agent_detail(agent_id, config.agent(agent_id)), config=config)
    summary = detail.summary
    if as_json:
        print_json({"agent": summary, "in_config_file": detail.in_config_file,
                    "risk_multiplier": config.server.agent_risk_multiplier,
                    "settings": {s.name: {"in_force": s.in_force, "stored": s.value, "source": s.source,
                                          "detail": s.detail} for s in detail.settings}})
        return
    say(f"agent {summary.agent_id}: {'enabled' if summary.enabled else 'DISABLED'}, trading {summary.state}, "
        f"approval {summary.approval}, token {'set' if summary.has_token else 'none'}, "
        f"{'in the config file' if detail.in_config_file else 'added from the command line'}")
    say(f"created {when(summary.created_at)}, updated {when(summary.updated_at)}; money and count limits in force "
        f"are scaled by agent_risk_multiplier = {plain(config.server.agent_risk_multiplier)}")
    table(["SETTING", "IN FORCE", "SOURCE", "DETAIL"],
          [(s.name, _shown(s.in_force), s.source, s.detail or "-") for s in detail.settings])


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple | frozenset | set):
        return ",".join(sorted(str(v) for v in value)) or "-"
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "-" if value is None else str(value)


@agents.command("add")
@click.argument("agent_id")
@setting_options
@config_option
@click.pass_context
def agents_add(ctx: click.Context, agent_id: str, **options: Any) -> None:
    """Register an agent and print its bearer token once, on the last line (store it now).

    \b
    Settings not given take the defaults (and the risk level's defaults for the optional limits).
    Example: tradewarden agents add swing-2 --max-trade-size 2000 --allowed-symbols AAPL,MSFT --approval operator
    """
    given = validated(agent_id, options)
    config = load(ctx)
    agent_config = AgentConfig(id=agent_id, **given)
    token = operate(ctx, lambda op: op.add_agent(agent_config, max_agents=config.server.max_agents_per_account,
                                                 given=list(given)), config=config)
    click.echo(f"agent {agent_id} added; its bearer token (shown once, store it now):")
    click.echo(token)


@agents.command("set")
@click.argument("agent_id")
@setting_options
@click.option("--reset", "reset", multiple=True, metavar="NAME",
              help="Forget the operator's value of NAME ('all' for every one): the config file's value, or the "
                   "default, applies again. Repeatable.")
@config_option
@click.pass_context
def agents_set(ctx: click.Context, agent_id: str, reset: tuple[str, ...], **options: Any) -> None:
    """Change an agent's limits at once; what is set here wins over the config file from now on.

    \b
    Example: tradewarden agents set momentum-1 --max-trade-size 2500 --daily-loss-limit 500
    Example: tradewarden agents set momentum-1 --reset max_trade_size
    """
    from policies.agent_settings import SETTINGS

    values = validated(agent_id, options)
    if not values and not reset:
        fail("nothing to change: give at least one setting (see `tradewarden agents set --help`) or --reset NAME", 2)
    names = [name.replace("-", "_") for name in reset]
    if "all" in names:
        names = list(SETTINGS)
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        fail(f"--reset: unknown setting(s) {', '.join(unknown)} (one of: {', '.join(SETTINGS)})", 2)
    config = load(ctx)
    baseline = config.agent(agent_id) or AgentConfig(id=agent_id)
    changes = operate(ctx, lambda op: op.set_settings(agent_id, values, reset=names, baseline=baseline),
                      config=config)
    shown = 0
    for name, (old, new) in changes.items():
        if name in values or _shown(old) != _shown(new):
            origin = "reset to the file/default" if name not in values else "set by operator"
            click.echo(f"{agent_id} {name}: {_shown(old)} -> {_shown(new)} ({origin})")
            shown += 1
    if not shown:
        click.echo(f"{agent_id}: the operator's values are forgotten; nothing changed")


@agents.command("enable")
@click.argument("agent_id")
@config_option
@click.pass_context
def agents_enable(ctx: click.Context, agent_id: str) -> None:
    """Let a disabled agent trade again (wins over `enabled = false` in the config file).

    \b
    Example: tradewarden agents enable momentum-1
    """
    operate(ctx, lambda op: op.set_enabled(agent_id, True))
    click.echo(f"agent {agent_id} enabled")


@agents.command("disable")
@click.argument("agent_id")
@config_option
@click.pass_context
def agents_disable(ctx: click.Context, agent_id: str) -> None:
    """Stop an agent at once: every call it makes fails with AGENT_DISABLED. The config file does not undo it.

    \b
    Example: tradewarden agents disable momentum-1
    """
    operate(ctx, lambda op: op.set_enabled(agent_id, False))
    click.echo(f"agent {agent_id} disabled")


@agents.command("remove")
@click.argument("agent_id")
@config_option
@click.pass_context
def agents_remove(ctx: click.Context, agent_id: str) -> None:
    """Remove an agent added from the command line (its token stops working; its history stays).

    \b
    Refused for an agent in the config file (remove its entry there, or disable it) and for one that
    still has open orders or positions.
    Example: tradewarden agents remove swing-2
    """
    config = load(ctx)
    operate(ctx, lambda op: op.remove_agent(agent_id, in_config_file=config.agent(agent_id) is not None),
            config=config)
    click.echo(f"agent {agent_id} removed")


@agents.command("rotate-token")
@click.argument("agent_id")
@config_option
@click.pass_context
def agents_rotate(ctx: click.Context, agent_id: str) -> None:
    """Replace the agent's bearer token (the old one stops working at once) and print the new one once.

    \b
    Example: tradewarden agents rotate-token momentum-1
    """
    token = operate(ctx, lambda op: op.rotate_token(agent_id))
    click.echo(f"new bearer token for {agent_id} (the old one no longer works):")
    click.echo(token)
