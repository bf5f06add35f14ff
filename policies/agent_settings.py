"""An agent's settings, where each comes from, and who wins when the config file and an operator disagree.

Precedence, highest first:
  1. an operator's action (`agents disable|enable|set` on the command line, later the operator API): recorded
     in the row's `operator_overrides` (which field, by whom, when) and never undone by a config sync;
  2. the config file's `[[agents]]` entry (synced into the database at every start and every command);
  3. the defaults: the risk level's defaults for the optional limits, the built-in defaults for the rest.
`agents set ID --reset FIELD` forgets an operator's value: the file's (or the default) applies again.

The functions here are pure (rows and file entries in, values out); the operator layer does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from policies.limits import OPTIONAL_LIMITS, RISK_LEVEL_DEFAULTS

# Settings stored in their own column of agent_trading_permissions (the optional limits live in `limits`).
COLUMN_SETTINGS = ("enabled", "max_trade_size", "max_position_size", "max_daily_trades", "allowed_symbols",
                   "allowed_strategies", "risk_level", "approval", "auto_approve_max_notional", "capital")
SETTINGS = COLUMN_SETTINGS + tuple(OPTIONAL_LIMITS)
# How the row spells "not set: the mode's default applies" (policies/approval.py).
UNSET_APPROVAL = ""
UNSET_AUTO_APPROVE = Decimal(-1)


def stored_value(name: str, value: Any) -> Any:
    """A setting as its column (or the limits JSON) stores it."""
    if name == "approval":
        return value or UNSET_APPROVAL
    if name == "auto_approve_max_notional":
        return UNSET_AUTO_APPROVE if value is None else value
    if name in ("allowed_symbols", "allowed_strategies"):
        return list(value)
    if name in OPTIONAL_LIMITS:
        return str(value) if isinstance(value, Decimal) else value
    return value


def file_settings(agent: Any) -> dict[str, Any]:
    """Every setting of a config-file agent (an AgentConfig), as stored; optional limits it leaves unset: None."""
    values = {name: stored_value(name, getattr(agent, name)) for name in COLUMN_SETTINGS}
    values.update({name: stored_value(name, getattr(agent, name)) if getattr(agent, name) is not None else None
                   for name in OPTIONAL_LIMITS})
    return values


def current_settings(row: Any) -> dict[str, Any]:
    """Every setting of a stored agent row; optional limits not set: None."""
    values = {name: getattr(row, name) for name in COLUMN_SETTINGS}
    limits = dict(row.limits or {})
    values.update({name: limits.get(name) for name in OPTIONAL_LIMITS})
    return values


def write_settings(row: Any, values: Mapping[str, Any]) -> None:
    """Set these settings on the row (optional limits: None removes the override of the risk level's default)."""
    limits = dict(row.limits or {})
    for name, value in values.items():
        if name in OPTIONAL_LIMITS:
            if value is None:
                limits.pop(name, None)
            else:
                limits[name] = stored_value(name, value)
        elif name in COLUMN_SETTINGS:
            setattr(row, name, stored_value(name, value))
        else:
            raise KeyError(name)
    row.limits = limits  # a new dict: the JSON column sees the change


def overridden(row: Any) -> dict[str, dict[str, str]]:
    return dict(row.operator_overrides or {})


def sync_from_file(row: Any, agent: Any) -> list[str]:
    """Apply the file's values to the fields an operator has not set. Returns the fields that changed."""
    keep = overridden(row)
    wanted = {name: value for name, value in file_settings(agent).items() if name not in keep}
    now = current_settings(row)
    changed = [name for name, value in wanted.items() if not _same(now[name], value)]
    write_settings(row, {name: wanted[name] for name in changed})
    return changed


def mark_overridden(row: Any, names: Iterable[str], actor: str, at: datetime) -> None:
    marks = overridden(row)
    for name in names:
        marks[name] = {"by": actor, "at": at.isoformat()}
    row.operator_overrides = marks


def forget_overrides(row: Any, names: Iterable[str]) -> list[str]:
    marks = overridden(row)
    forgotten = [name for name in names if marks.pop(name, None) is not None]
    row.operator_overrides = marks
    return forgotten


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    try:
        return Decimal(str(a)) == Decimal(str(b))
    except (ArithmeticError, ValueError):
        return bool(a == b)


@dataclass(frozen=True)
class SettingSource:
    """One setting of an agent: the value in force and why."""

    name: str
    value: Any  # as stored (before agent_risk_multiplier); None: not set, the default below applies
    in_force: Any  # what the checks use (defaults filled in; money and counts scaled by the multiplier)
    source: str  # "operator" | "config file" | "risk-level default" | "default"
    detail: str  # e.g. "set by operator:cli at 2026-11-30T01:00:00+00:00; the file says 5000"


def explain_settings(row: Any, file_agent: Any | None, in_force: Mapping[str, Any]) -> list[SettingSource]:
    """For each setting: the value in force and where it comes from (operator override, config file,
    risk-level default). `file_agent` is the agent's config-file entry, if it has one."""
    marks = overridden(row)
    stored = current_settings(row)
    from_file = file_settings(file_agent) if file_agent is not None else {}
    given_in_file = set(getattr(file_agent, "model_fields_set", set())) if file_agent is not None else set()
    lines = []
    for name in SETTINGS:
        value = stored[name]
        if name in marks:
            mark = marks[name]
            detail = f"set by {mark.get('by')} at {str(mark.get('at'))[:19].replace('T', ' ')} UTC"
            if file_agent is not None and name in given_in_file and not _same(from_file.get(name), value):
                detail += f"; the config file says {_plain(from_file.get(name))}"
            source = "operator"
        elif name in OPTIONAL_LIMITS and value is None:
            defaults = RISK_LEVEL_DEFAULTS.get(row.risk_level, {})
            source, detail = "risk-level default", f"{row.risk_level}: {_plain(defaults.get(name))}"
        elif file_agent is not None:
            source = "config file" if name in given_in_file else "default"
            detail = ""
        else:  # added by an operator: what it gave at `agents add` is marked above
            source, detail = "default", ""
        if name == "approval" and value == UNSET_APPROVAL:
            source, detail = "default", "auto in paper, elicit in live"
        if name == "auto_approve_max_notional" and value == UNSET_AUTO_APPROVE:
            source, detail = "default", "1000 in paper, 0 in live"
        lines.append(SettingSource(name=name, value=value, in_force=in_force.get(name, value), source=source,
                                   detail=detail))
    return lines


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
