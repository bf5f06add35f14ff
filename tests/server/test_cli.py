"""The `tradewarden` command line, run as a real process against the database a server uses."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mcp import Client

from tests.cli_probe import create_ledger, run_cli
from tests.conftest import call

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, extra: str = "", *, ledger: bool = True) -> Path:
    path = tmp_path / "tradewarden.toml"
    path.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{tmp_path / 'tradewarden.db'}"
{extra}
[[agents]]
id = "agent-1"
allowed_symbols = ["*"]
approval = "auto"
auto_approve_max_notional = 5000
""")
    return create_ledger(path) if ledger else path  # as an operator does first


cli = run_cli


def test_bad_config_exits_non_zero_with_one_line_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[server]\ntrading_mode = "yolo"\n')
    result = cli(path, "status")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "trading_mode" in result.stderr


def test_live_mode_without_the_switch_refuses_to_serve(tmp_path: Path) -> None:
    result = cli(write_config(tmp_path, 'trading_mode = "live"', ledger=False), "serve")
    assert result.returncode == 2 and "TRADEWARDEN_ALLOW_LIVE" in result.stderr
    assert result.stdout == ""


def test_audit_verify_passes_then_fails_after_tampering(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli(config, "halt", "--reason", "test").returncode == 0
    assert cli(config, "resume").returncode == 0
    ok = cli(config, "audit", "verify")
    assert ok.returncode == 0 and "OK" in ok.stdout
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:
        db.execute("UPDATE audit_events SET payload = '{\"reason\":\"nothing happened\"}' WHERE seq = 2")
    broken = cli(config, "audit", "verify")
    assert broken.returncode == 1
    assert "record 2" in broken.stdout and "BROKEN" in broken.stderr


def test_audit_tail_shows_latest_records(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cli(config, "halt", "--agent", "agent-1", "--reason", "cooling off")
    tail = cli(config, "audit", "tail", "-n", "5")
    assert tail.returncode == 0 and "trading_state.changed" in tail.stdout and "cooling off" in tail.stdout


def test_agents_add_prints_token_once_on_last_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    added = cli(config, "agents", "add", "new-agent", "--max-trade-size", "100")
    assert added.returncode == 0
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("tw_")
    listed = cli(config, "agents", "list")
    assert "new-agent" in listed.stdout and token not in listed.stdout
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:
        assert token not in str(db.execute("SELECT * FROM agent_trading_permissions").fetchall())
        assert token not in str(db.execute("SELECT payload FROM audit_events").fetchall())


def test_agents_add_beyond_max_agents_fails(tmp_path: Path) -> None:
    config = write_config(tmp_path, "max_agents_per_account = 1")
    result = cli(config, "agents", "add", "second")
    assert result.returncode == 1 and "max_agents_per_account" in result.stderr


def test_rotate_token_prints_a_new_token(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    first = cli(config, "agents", "add", "bot").stdout.strip().splitlines()[-1]
    second = cli(config, "agents", "rotate-token", "bot").stdout.strip().splitlines()[-1]
    assert second.startswith("tw_") and second != first


def test_halt_of_unknown_agent_fails(tmp_path: Path) -> None:
    result = cli(write_config(tmp_path), "halt", "--agent", "ghost", "--reason", "x")
    assert result.returncode == 1 and "ghost" in result.stderr


def test_status_shows_mode_and_halt(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cli(config, "halt", "--reason", "maintenance")
    status = cli(config, "status")
    assert status.returncode == 0
    assert "PAPER" in status.stdout and "HALTED" in status.stdout and "maintenance" in status.stdout


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli(config, "db", "upgrade").returncode == 0
    with sqlite3.connect(tmp_path / "tradewarden.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"agent_trading_permissions", "agent_trades", "trade_proposals", "audit_events"} <= tables


async def test_halt_from_the_command_line_stops_a_running_server(tmp_path: Path, market_open: object) -> None:
    from server.config import load_config
    from tests.conftest import connect

    config_path = write_config(tmp_path, "enforce_market_hours = false")
    config = load_config(str(config_path), env={})
    client: Client
    async with connect(config) as client:
        assert (await call(client, "propose_trade", symbol="SPY", side="buy", qty=1, reasoning="r"))["status"] == \
            "approved"
        assert cli(config_path, "halt", "--reason", "operator says stop").returncode == 0
        denied = await call(client, "propose_trade", symbol="SPY", side="buy", qty=2, reasoning="r")
        status = await call(client, "get_trading_status")
    assert "TRADING_HALTED" in [v["code"] for v in denied["violations"]]
    assert status["halted"] is True and status["reason"] == "operator says stop"
