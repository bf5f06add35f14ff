"""What the operator commands share: loading the config, running one operator action on the runtime, the
one-line failure, and output a person (or a program, with --json) reads.

Output rules: tables with rich, colour only on a terminal and never with NO_COLOR set; decimals without
noise (no `0E-11`, money to the cent); times in UTC with their age; ids shortened to a prefix the commands
accept; `--json` prints full ids, exact decimals as strings and ISO times, under stable keys.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import click

from server.config import Config, ConfigError, load_config

T = TypeVar("T")
SHORT_ID = 13  # "1234abcd-12ab": a prefix the commands accept (policies/operator_books.py MIN_PREFIX is 8)
CENT = Decimal("0.01")


def fail(message: str, code: int = 1) -> NoReturn:
    """The one-line failure of every command: secrets masked (policies/secrets.py), line breaks folded."""
    from policies.secrets import scrub

    line = " ".join(scrub(message).split())
    click.echo(f"tradewarden: {line}", err=True)
    sys.exit(code)


def config_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every command takes --config too (after the command name), like `serve`."""

    def store(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value:
            root = ctx.find_root()
            root.ensure_object(dict)
            root.obj["config"] = value

    return click.option("--config", type=click.Path(dir_okay=False), expose_value=False, callback=store,
                        is_eager=True, help="TOML config file (default: $TRADEWARDEN_CONFIG or "
                                            "./tradewarden.toml).")(command)


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (stable keys, full ids, decimals as strings) instead of a table.")(command)


def load(ctx: click.Context) -> Config:
    root = ctx.find_root()
    try:
        config = load_config((root.obj or {}).get("config"))
    except ConfigError as error:
        fail(str(error), 2)
    root.ensure_object(dict)
    root.obj["loaded_config"] = config  # a failure names its database (server/cli.py _failure)
    return config


def operate(ctx: click.Context, action: Callable[[Any], Awaitable[T]], *, broker: bool = False,
            config: Config | None = None) -> T:
    """Run `action(operator)` with the command line's operator (operator:cli) on the deployment's database.
    broker=False: the command only reads or writes the ledger, so no broker client is built (no Alpaca keys
    needed, nothing reached over the network). Never creates the database. Failures become one line and an
    exit code in the command line's one error wrapper (server/cli.py OneLineErrors)."""
    from policies.operator import Operator
    from policies.operators import CLI_OPERATOR
    from server.runtime import open_runtime

    config = config or load(ctx)

    async def run() -> T:
        offline: Any = None
        if not broker:
            from broker.offline import OfflineBroker

            offline = OfflineBroker()
        async with open_runtime(config, reconcile=False, broker=offline, create_database=False) as runtime:
            return await action(Operator(runtime.gate, CLI_OPERATOR))

    return asyncio.run(run())


# --- values a person reads ---------------------------------------------------------------------------

def plain(value: Decimal | int | None) -> str:
    """A decimal as people write it: no exponent, no trailing zeros (`0E-11` → `0`, `5000.00` → `5000`)."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    text = format(value.normalize(), "f") if value != 0 else "0"
    return text


def money(value: Decimal | None) -> str:
    """Money to the cent, with thousands separators: 1234.5 → 1,234.50."""
    if value is None:
        return "-"
    return f"{value.quantize(CENT):,}"


def pct(value: Decimal | None) -> str:
    return "-" if value is None else f"{value.quantize(Decimal('0.1'))}%"


def when(moment: datetime | None, now: datetime | None = None) -> str:
    """`2026-11-30 14:03 UTC (5m ago)`."""
    if moment is None:
        return "-"
    now = now or datetime.now(UTC)
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M} UTC ({age(int((now - moment).total_seconds()))})"


def age(seconds: int) -> str:
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds}s"
    elif seconds < 3600:
        text = f"{seconds // 60}m"
    elif seconds < 86400:
        text = f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    else:
        text = f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    return f"in {text}" if future else f"{text} ago"


def short(identifier: str | None) -> str:
    return "-" if identifier is None else identifier[:SHORT_ID]


# --- printing ----------------------------------------------------------------------------------------

def _console() -> Any:
    from rich.console import Console

    # rich colours only a terminal and honours NO_COLOR; off a terminal, wide lines (no wrapping for grep).
    terminal = sys.stdout.isatty()
    return Console(highlight=False, soft_wrap=not terminal, width=None if terminal else 200,
                   no_color=bool(os.environ.get("NO_COLOR")) or None)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None,
          empty: str = "nothing to show") -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from policies.text import inert

    rows = list(rows)
    console = _console()
    if not rows:
        console.print(empty)
        return
    grid = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False, show_edge=False,
                 header_style="bold")
    for index, name in enumerate(columns):  # numbers line up on the right
        numeric = all(_numeric(str(row[index])) for row in rows) and any(str(row[index]) != "-" for row in rows)
        grid.add_column(name, justify="right" if numeric else "left")
    # Cells are plain text, never rich markup, and inert: some hold what agents wrote (strategy names).
    for row in rows:
        grid.add_row(*(Text(inert(str(cell))) for cell in row))
    console.print(grid)


def _numeric(text: str) -> bool:
    cleaned = text.replace(",", "").replace("$", "").rstrip("%").split(" (")[0]
    if cleaned == "-":
        return True
    try:
        Decimal(cleaned)
    except ArithmeticError:
        return False
    return True


def say(text: str, style: str | None = None) -> None:
    """One line to stdout (styled on a terminal only)."""
    _console().print(text, style=style, markup=False)


def to_json(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_json(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [to_json(v) for v in value]
        return sorted(items) if isinstance(value, set | frozenset) else items
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def print_json(value: Any) -> None:
    click.echo(json.dumps(to_json(value), indent=2, sort_keys=True))
