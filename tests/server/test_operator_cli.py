"""The operator command line as an operator uses it: separate processes, run from another working directory,
against the database a server uses. Agents (disable sticks, enable, set, remove), ids by prefix, and
positions / orders / cancel / performance agreeing with what the agent sees through its own tools."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from mcp import Client

from server.config import load_config
from tests.conftest import call, call_error, connect

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, agent_extra: str = "", server_extra: str = "", approval: str = "auto", *,
                 ledger: bool = True) -> Path:
    path = tmp_path / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{tmp_path / 'tradewarden.db'}"
enforce_market_hours = false
{server_extra}
[[agents]]
id = "agent-1"
allowed_symbols = ["*"]
approval = "{approval}"
auto_approve_max_notional = 50000
max_trade_size = 5000
{agent_extra}
""")
    if ledger:
        ok(path, "db", "upgrade")  # a new deployment's ledger (no other command creates one)
    return path


def tw(config: Path | None, *args: str, env: dict[str, str] | None = None, module: str = "tradewarden"
       ) -> subprocess.CompletedProcess[str]:
    """`python -m tradewarden ARGS --config CONFIG`, run from a folder that is not the project's."""
    elsewhere = (config.parent if config else Path(os.environ.get("TMPDIR", "/tmp"))) / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    command = [sys.executable, "-m", module, *args] + (["--config", str(config)] if config else [])
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, cwd=elsewhere, capture_output=True, text=True, timeout=120, env=environment)


def ok(config: Path | None, *args: str, **options: Any) -> str:
    result = tw(config, *args, **options)
    assert result.returncode == 0, f"tradewarden {' '.join(args)} exited {result.returncode}: {result.stderr}"
    return result.stdout


def as_json(config: Path, *args: str) -> Any:
    return json.loads(ok(config, *args, "--json"))


def audit_rows(tmp_path: Path, kind: str) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:
        return db.execute("SELECT actor, payload FROM audit_events WHERE kind = ? ORDER BY seq", (kind,)).fetchall()


# --- agents ------------------------------------------------------------------------------------------

async def test_disable_sticks_across_commands_and_server_starts(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    ok(config, "agents", "disable", "agent-1")
    ok(config, "status")  # every command syncs the config file first
    ok(config, "agents", "list")
    [listed] = as_json(config, "agents", "list")["agents"]
    assert listed["enabled"] is False and listed["overridden"] == ["enabled"]
    client: Client
    async with connect(load_config(str(config), env={})) as client:  # a server start syncs the file too
        assert (await call_error(client, "get_positions")).startswith("AGENT_DISABLED")
    assert [actor for actor, _ in audit_rows(tmp_path, "agent.disabled")] == ["operator:cli"]
    assert len(audit_rows(tmp_path, "agents.synced")) == 1  # registered once; an unchanged file changes nothing


async def test_enable_lets_the_agent_trade_again_even_against_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path, agent_extra="enabled = false")
    ok(config, "agents", "enable", "agent-1")
    async with connect(load_config(str(config), env={})) as client:
        assert "positions" in await call(client, "get_positions")
    shown = as_json(config, "agents", "show", "agent-1")["settings"]["enabled"]
    assert shown["in_force"] is True and shown["source"] == "operator"
    assert [actor for actor, _ in audit_rows(tmp_path, "agent.enabled")] == ["operator:cli"]


async def test_a_limit_set_from_the_command_line_wins_over_the_file_until_reset(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    ok(config, "agents", "set", "agent-1", "--max-trade-size", "100", "--daily-loss-limit", "50")
    ok(config, "status")
    settings = as_json(config, "agents", "show", "agent-1")["settings"]
    assert settings["max_trade_size"]["in_force"] == "100" and settings["max_trade_size"]["source"] == "operator"
    assert "the config file says 5000" in settings["max_trade_size"]["detail"]
    assert settings["daily_loss_limit"]["in_force"] == "50"
    assert settings["max_position_size"]["source"] == "default"
    assert settings["max_order_qty"]["source"] == "risk-level default"
    async with connect(load_config(str(config), env={})) as client:
        denied = await call(client, "propose_trade", symbol="SPY", side="buy", qty=2, reasoning="r")
    assert "ORDER_NOTIONAL_EXCEEDS_MAX" in [v["code"] for v in denied["violations"]]
    [(actor, payload)] = audit_rows(tmp_path, "agent.settings_changed")
    assert actor == "operator:cli" and json.loads(payload)["changes"]["max_trade_size"] == {"from": "5000",
                                                                                          "to": "100"}
    ok(config, "agents", "set", "agent-1", "--reset", "max_trade_size")
    settings = as_json(config, "agents", "show", "agent-1")["settings"]
    assert settings["max_trade_size"]["in_force"] == "5000"
    assert settings["max_trade_size"]["source"] == "config file"
    assert settings["daily_loss_limit"]["source"] == "operator"


def test_every_limit_of_the_config_has_a_flag(tmp_path: Path) -> None:
    from server.config import AgentConfig

    text = ok(None, "agents", "set", "--help")
    for name in AgentConfig.model_fields:
        if name not in ("id", "enabled"):
            assert "--" + name.replace("_", "-") in text, name


def test_a_bad_limit_is_a_usage_error_and_changes_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = tw(config, "agents", "set", "agent-1", "--max-drawdown-pct", "250")
    assert result.returncode == 2 and "max_drawdown_pct" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert as_json(config, "agents", "show", "agent-1")["settings"]["max_drawdown_pct"]["in_force"] == "10"


def test_remove_an_added_agent_but_not_one_from_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    token = ok(config, "agents", "add", "bot-2", "--max-trade-size", "100").strip().splitlines()[-1]
    assert token.startswith("tw_")
    assert as_json(config, "agents", "show", "bot-2")["settings"]["max_trade_size"]["source"] == "operator"
    ok(config, "agents", "remove", "bot-2")
    assert [a["agent_id"] for a in as_json(config, "agents", "list")["agents"]] == ["agent-1"]
    assert [actor for actor, _ in audit_rows(tmp_path, "agent.removed")] == ["operator:cli"]
    refused = tw(config, "agents", "remove", "agent-1")
    assert refused.returncode == 1 and "config file" in refused.stderr


def test_adding_an_agent_twice_is_one_line_exit_1(tmp_path: Path) -> None:
    result = tw(write_config(tmp_path), "agents", "add", "agent-1")
    assert result.returncode == 1
    database = tmp_path / "tradewarden.db"
    assert result.stderr.strip() == f"tradewarden: agent 'agent-1' already exists (database: {database})"


def test_unknown_agent_is_one_line_exit_1(tmp_path: Path) -> None:
    result = tw(write_config(tmp_path), "agents", "disable", "ghost")
    assert result.returncode == 1
    assert result.stderr.strip() == f"tradewarden: no agent 'ghost' (database: {tmp_path / 'tradewarden.db'})"


# --- ids by prefix, approvals, status ------------------------------------------------------------------

async def _pending_proposals(config: Path, count: int) -> list[str]:
    async with connect(load_config(str(config), env={})) as client:
        ids = []
        for qty in range(1, count + 1):
            proposal = await call(client, "propose_trade", symbol="SPY", side="buy", qty=qty, reasoning="r")
            assert proposal["status"] == "pending_approval", proposal
            ids.append(proposal["proposal_id"])
    return ids


async def test_proposal_ids_are_accepted_by_a_unique_prefix_and_reject_says_rejected(tmp_path: Path) -> None:
    config = write_config(tmp_path, approval="operator")
    [first, second] = await _pending_proposals(config, 2)
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:  # two ids that share their first 9 characters
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("UPDATE trade_proposals SET id = 'abcdef12-' || substr(id, 10) WHERE id = ?", (first,))
        db.execute("UPDATE trade_proposals SET id = 'abcdef12-' || substr(id, 10) WHERE id = ?", (second,))
    ambiguous = tw(config, "approvals", "reject", "abcdef12")
    assert ambiguous.returncode == 2 and "matches several" in ambiguous.stderr
    too_short = tw(config, "approvals", "reject", "abcdef1")
    assert too_short.returncode == 1 and "at least 8" in too_short.stderr
    full = "abcdef12-" + second[9:]
    rejected = ok(config, "approvals", "reject", full[:13], "--reason", "no")
    assert rejected.strip() == f"proposal {full} rejected"


async def test_status_does_not_count_expired_proposals_as_pending(tmp_path: Path) -> None:
    config = write_config(tmp_path, approval="operator")
    [stale, _fresh] = await _pending_proposals(config, 2)
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:
        db.execute("UPDATE trade_proposals SET expires_at = '2020-01-01 00:00:00.000000' WHERE id = ?", (stale,))
    status = as_json(config, "status")
    assert status["pending_approvals"] == 1 and status["expired_unanswered"] == 1
    assert status["database"] == str(tmp_path / "tradewarden.db")
    assert f"database: {tmp_path / 'tradewarden.db'}" in ok(config, "status")


def test_ledger_only_commands_need_no_alpaca_keys(tmp_path: Path) -> None:
    config = write_config(tmp_path, server_extra='broker = "alpaca"')
    env = {"ALPACA_API_KEY": "", "ALPACA_SECRET_KEY": ""}
    ok(config, "db", "upgrade", env=env)
    for command in (["agents", "list"], ["status"], ["audit", "verify"], ["approvals", "list"],
                    ["halt", "--reason", "keys rotated"], ["resume"]):
        ok(config, *command, env=env)


# --- what agents hold, as the agent sees it --------------------------------------------------------------

async def test_positions_orders_cancel_and_performance_agree_with_the_agents_tools(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    config = load_config(str(config_path), env={})
    async with connect(config) as client:
        bought = await call(client, "propose_trade", symbol="SPY", side="buy", qty=3, reasoning="r",
                            strategy="momentum")
        filled = await call(client, "execute_trade", proposal_id=bought["proposal_id"])
        assert filled["status"] == "filled", filled
        quote = await call(client, "get_market_data", symbols=["AAPL"], data="quote")
        limit = (Decimal(quote["data"][0]["bid"]) * Decimal("0.97")).quantize(Decimal("0.01"))
        resting = await call(client, "propose_trade", symbol="AAPL", side="buy", qty=1, order_type="limit",
                             limit_price=str(limit), time_in_force="gtc", reasoning="dip")
        order = await call(client, "execute_trade", proposal_id=resting["proposal_id"])
        assert order["status"] == "submitted", order
        agent_positions = await call(client, "get_positions")
        agent_orders = await call(client, "get_orders", status="all")

        [book] = as_json(config_path, "positions", "--agent", "agent-1")["agents"]
        [spy] = [p for p in agent_positions["positions"] if p["symbol"] == "SPY"]
        [ours] = [p for p in book["positions"] if p["symbol"] == "SPY"]
        for key in ("qty", "avg_entry_price", "realized_pl"):
            assert Decimal(ours[key]) == Decimal(spy[key]), key
        assert Decimal(book["cash"]) == Decimal(agent_positions["cash"])

        listed = as_json(config_path, "orders", "--status", "all")["orders"]
        assert {(o["order_id"], o["status"]) for o in listed} == \
            {(o["order_id"], o["status"]) for o in agent_orders["orders"]}
        assert order["order_id"][:13] in ok(config_path, "orders")  # shown shortened, as a usable prefix

        canceled = ok(config_path, "orders", "cancel", order["order_id"][:8])
        assert canceled.strip() == f"order {order['order_id']} canceled"
        after = await call(client, "get_orders", status="all")
        assert {o["order_id"]: o["status"] for o in after["orders"]}[order["order_id"]] == "canceled"

    cancels = audit_rows(tmp_path, "order.cancel_intent")
    assert [actor for actor, _ in cancels] == ["operator:cli"]
    [report] = as_json(config_path, "performance", "--agent", "agent-1")["agents"]
    assert report["trades"] == 1 and Decimal(report["realized_pl"]) == Decimal(spy["realized_pl"])
    assert Decimal(report["exposure"]) > 0 and report["open_positions"] == 1
    assert report["by_strategy"]["momentum"]["trades"] == 1


def test_views_of_an_unknown_agent_or_order_are_one_line_exit_1(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    for command, reason in ((["positions", "--agent", "ghost"], "no agent 'ghost'"),
                            (["performance", "--agent", "ghost"], "no agent 'ghost'"),
                            (["orders", "cancel", "0123456789abcdef"], "no order '0123456789abcdef'")):
        result = tw(config, *command)
        assert result.returncode == 1, command
        assert result.stderr.strip() == f"tradewarden: {reason} (database: {tmp_path / 'tradewarden.db'})", command


# --- the package ---------------------------------------------------------------------------------------

def test_version_from_the_entry_point_and_python_m(tmp_path: Path) -> None:
    from tradewarden import __version__

    assert ok(None, "--version").strip() == f"tradewarden {__version__}"
    assert ok(None, "--version", module="server.cli").strip() == f"tradewarden {__version__}"


def test_no_color_is_honoured_even_when_colour_is_forced(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    coloured = tw(config, "doctor", env={"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"})
    assert "\x1b[" in coloured.stdout
    plain = tw(config, "doctor", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[3" not in plain.stdout and "ok    config" in plain.stdout


def test_every_command_has_help_with_an_example() -> None:
    import click

    from server.cli import main

    def walk(command: click.Command, path: list[str]) -> list[tuple[str, click.Command, str]]:
        with click.Context(command, info_name=" ".join(path)) as ctx:
            found = [(" ".join(path), command, command.get_help(ctx))]
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                found.extend(walk(sub, [*path, name]))
        return found

    helps = walk(main, ["tradewarden"])
    assert [name for name, _, text in helps if "Example:" not in text] == []
    assert [(name, param.name) for name, command, _ in helps for param in command.params
            if isinstance(param, click.Option) and not param.help] == []
