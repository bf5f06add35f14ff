"""The command line acts on the ledger the config file names, from any working directory, never creates one by
accident, and fails in one line with the documented exit code (0 success, 1 failure, 2 bad configuration or
usage), never a traceback. Every test runs `tradewarden` as its own process, as an operator would."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from tests.cli_probe import create_ledger, run_cli

SECRET_WITH_LINE_BREAK = "pastedSecretFirstHalf0123\npastedSecretSecondHalf4567"


def deployment(tmp_path: Path, server: str = "", database: str = "sqlite+aiosqlite:///ledger.db") -> Path:
    """A config file in its own folder, with a relative database path, and an operator's folder elsewhere."""
    folder = tmp_path / "deploy"
    folder.mkdir(exist_ok=True)
    (tmp_path / "elsewhere").mkdir(exist_ok=True)
    path = folder / "tradewarden.toml"
    path.write_text(f'[server]\ndatabase_url = "{database}"\nenforce_market_hours = false\n{server}\n'
                    '[[agents]]\nid = "agent-1"\nallowed_symbols = ["*"]\n\n[[agents]]\nid = "agent-2"\n')
    return path


def one_line(result: object) -> str:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def clean_env(**extra: str) -> dict[str, str]:
    """The operator's environment without keys, agent or mode variables the test runner may hold."""
    drop = ("ALPACA_API_KEY", "ALPACA_SECRET_KEY", "TRADEWARDEN_AGENT", "TRADEWARDEN_ALLOW_LIVE", "TRADEWARDEN_CONFIG",
            "AGENT_TRADING_MODE", "TRADEWARDEN_TRADING_MODE")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


# -- paths and ledgers ---------------------------------------------------------------------------------------

def test_a_relative_sqlite_path_is_the_config_files_neighbour_from_any_working_directory(tmp_path: Path) -> None:
    config = deployment(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    assert run_cli(config, "db", "upgrade", cwd=elsewhere).returncode == 0
    assert (tmp_path / "deploy" / "ledger.db").exists() and not (elsewhere / "ledger.db").exists()
    assert run_cli(config, "halt", "--reason", "drill", cwd=Path("/")).returncode == 0
    status = run_cli(config, "status", cwd=elsewhere)
    assert status.returncode == 0 and "HALTED" in status.stdout
    assert f"database: {tmp_path / 'deploy' / 'ledger.db'}" in status.stdout
    assert not (elsewhere / "ledger.db").exists()


@pytest.mark.parametrize("command", [
    ("halt", "--cancel-open", "--reason", "EMERGENCY"), ("resume",),
    ("approvals", "approve", "00000000-0000-0000-0000-000000000000"), ("approvals", "list"), ("status",),
    ("agents", "list"), ("audit", "verify"),
])
def test_a_command_on_a_missing_ledger_fails_naming_the_path_and_creates_nothing(tmp_path: Path,
                                                                                command: tuple[str, ...]) -> None:
    config = deployment(tmp_path)
    result = run_cli(config, *command, cwd=tmp_path / "elsewhere")
    assert result.returncode == 1
    assert f"no database at {tmp_path / 'deploy' / 'ledger.db'}" in one_line(result)
    assert result.stdout == ""
    assert not any(p.name.startswith("ledger.db") for p in (tmp_path / "deploy").iterdir())
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_failure_on_an_existing_ledger_names_it(tmp_path: Path) -> None:
    config = create_ledger(deployment(tmp_path))
    result = run_cli(config, "approvals", "approve", "00000000-0000-0000-0000-000000000000")
    assert result.returncode == 1
    assert f"(database: {tmp_path / 'deploy' / 'ledger.db'})" in one_line(result)


# -- one line, the documented exit code ------------------------------------------------------------------------

def test_an_unsupported_database_is_bad_configuration(tmp_path: Path) -> None:
    result = run_cli(deployment(tmp_path, database="mysql://x/y"), "status")
    assert result.returncode == 2
    assert "database_url mysql:// is not supported" in one_line(result)


def test_postgresql_that_does_not_answer_fails_in_bounded_time_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = deployment(tmp_path, database=f"postgresql://tw:hunter2secret@127.0.0.1:{port}/tw")
    started = time.monotonic()
    result = run_cli(config, "status", timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    line = one_line(result)
    assert f"database postgresql+asyncpg://tw:***@127.0.0.1:{port}/tw is unavailable" in line
    assert "hunter2secret" not in result.stderr + result.stdout


def test_a_sqlite_folder_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    result = run_cli(deployment(tmp_path, database="sqlite+aiosqlite:///no/such/folder/ledger.db"), "db", "upgrade")
    assert result.returncode == 1
    assert f"the folder {tmp_path / 'deploy' / 'no' / 'such' / 'folder'} does not exist" in one_line(result)


def test_a_sqlite_path_where_no_file_can_be_written_is_one_line(tmp_path: Path) -> None:
    result = run_cli(deployment(tmp_path, database="sqlite+aiosqlite:////proc/ledger.db"), "db", "upgrade")
    assert result.returncode == 1
    assert one_line(result).startswith("tradewarden: ") and "/proc/ledger.db" in result.stderr


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    config = deployment(tmp_path)
    (tmp_path / "deploy" / "ledger.db").write_bytes(b"this is not a database" * 100)
    result = run_cli(config, "status")
    assert result.returncode == 1
    assert f"database {tmp_path / 'deploy' / 'ledger.db'} is unavailable" in one_line(result)


def test_http_serve_on_a_busy_port_exits_1_saying_so(tmp_path: Path) -> None:
    config = create_ledger(deployment(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(config, "serve", "--transport", "http", "--port", str(port), timeout=60)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in one_line(result)


# -- a server for no agent does not start ------------------------------------------------------------------------

def test_stdio_serve_for_an_unknown_agent_exits_2_listing_the_known_ones(tmp_path: Path) -> None:
    config = create_ledger(deployment(tmp_path))
    added = run_cli(config, "agents", "add", "cli-added")
    assert added.returncode == 0
    result = run_cli(config, "serve", "--agent", "nosuch", env=clean_env(), timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    line = one_line(result)
    assert "unknown agent 'nosuch'" in line and "agent-1, agent-2, cli-added" in line


def test_stdio_serve_without_an_agent_exits_2(tmp_path: Path) -> None:
    result = run_cli(deployment(tmp_path), "serve", env=clean_env(), timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert "--agent ID or set TRADEWARDEN_AGENT" in one_line(result)


def test_a_server_says_at_start_which_agent_mode_broker_and_database(tmp_path: Path) -> None:
    config = deployment(tmp_path)
    result = run_cli(config, "serve", "--agent", "agent-2", env=clean_env(), timeout=60)  # stdin closed: it ends
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # stdout is the protocol's
    start = next(line for line in result.stderr.splitlines() if "starting" in line)
    for field in ("agent=agent-2", "mode=paper", "broker=simulated",
                  f"database={tmp_path / 'deploy' / 'ledger.db'}"):
        assert field in start, start
    assert (tmp_path / "deploy" / "ledger.db").exists()  # a server creates its ledger on its first start


def test_a_custom_broker_endpoint_in_paper_is_announced_at_start(tmp_path: Path) -> None:
    config = deployment(tmp_path, 'broker = "alpaca"\nalpaca_trading_url = "http://127.0.0.1:9"\n'
                                  'alpaca_data_url = "http://127.0.0.1:9"\nbroker_timeout_seconds = 1\n')
    result = run_cli(config, "serve", "--agent", "agent-1", timeout=60,
                     env=clean_env(ALPACA_API_KEY="PKTEST0123456789", ALPACA_SECRET_KEY="secret0123456789abcd"))
    assert "custom_broker_endpoint" in result.stderr and "http://127.0.0.1:9" in result.stderr


# -- live never by accident -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("server", "env", "reason"), [
    ('broker = "alpaca"\nalpaca_trading_url = "https://api.alpaca.markets"\n', {},
     "trading_mode is paper but alpaca_trading_url is the live endpoint"),
    ('broker = "alpaca"\n', {"TRADEWARDEN_ALPACA_TRADING_URL": "https://api.alpaca.markets"},
     "trading_mode is paper but alpaca_trading_url is the live endpoint"),
    ('broker = "alpaca"\n', {"AGENT_TRADING_MODE": " LIVE ", "TRADEWARDEN_ALLOW_LIVE": "1"},
     "trading_mode (from AGENT_TRADING_MODE)"),
    ('broker = "alpaca"\ntrading_mode = "Live"\n', {"TRADEWARDEN_ALLOW_LIVE": "1"}, "trading_mode"),
    ("broker_timeout_seconds = inf\n", {}, "broker_timeout_seconds"),
    ("proposal_ttl_seconds = 94608000000\n", {}, "proposal_ttl_seconds"),
    ('trading_mode = "live"\n', {"TRADEWARDEN_ALLOW_LIVE": "1"}, "live but broker is simulated"),
])
def test_serve_refuses_to_start_on_a_doubtful_mode(tmp_path: Path, server: str, env: dict[str, str],
                                                   reason: str) -> None:
    keys = {"ALPACA_API_KEY": "PKTEST0123456789", "ALPACA_SECRET_KEY": "secret0123456789abcd"}
    result = run_cli(deployment(tmp_path, server), "serve", "--agent", "agent-1", env=clean_env(**keys, **env))
    assert result.returncode == 2 and result.stdout == ""
    assert reason in one_line(result)
    assert not (tmp_path / "deploy" / "ledger.db").exists()


@pytest.mark.parametrize("command", [("serve", "--agent", "agent-1"), ("halt", "--cancel-open", "--reason", "x")])
def test_a_key_with_a_line_break_is_refused_and_never_shown(tmp_path: Path, command: tuple[str, ...]) -> None:
    config = create_ledger(deployment(tmp_path, 'broker = "alpaca"\n'))
    result = run_cli(config, *command, env=clean_env(ALPACA_API_KEY="PKTEST0123456789",
                                                     ALPACA_SECRET_KEY=SECRET_WITH_LINE_BREAK))
    assert result.returncode == 2
    assert "ALPACA_SECRET_KEY has a line break inside" in one_line(result)
    for half in SECRET_WITH_LINE_BREAK.split("\n"):
        assert half not in result.stderr and half not in result.stdout


def test_http_serve_on_a_database_that_does_not_answer_exits_1_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = deployment(tmp_path, database=f"postgresql://tw@127.0.0.1:{port}/tw")
    result = run_cli(config, "serve", "--transport", "http", "--port", "0", timeout=60)
    assert result.returncode == 1
    assert f"database postgresql+asyncpg://tw@127.0.0.1:{port}/tw is unavailable" in one_line(result)


def test_http_serve_refuses_an_agent_option(tmp_path: Path) -> None:
    result = run_cli(create_ledger(deployment(tmp_path)), "serve", "--transport", "http", "--agent", "agent-1")
    assert result.returncode == 2
    assert "--agent is for stdio" in one_line(result)


@pytest.mark.parametrize(("args", "reason"), [
    (("halt",), "Missing option '--reason'"), (("approvals", "approve"), "Missing argument 'PROPOSAL_ID'"),
    (("serve", "--transport", "carrier-pigeon"), "Invalid value for '--transport'"),
    (("--bogus", "status"), "No such option '--bogus'"), (("nosuch",), "No such command 'nosuch'"),
])
def test_a_usage_error_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], reason: str) -> None:
    result = run_cli(deployment(tmp_path), *args)
    assert result.returncode == 2 and result.stdout == ""
    assert reason in one_line(result) and "--help" in result.stderr
