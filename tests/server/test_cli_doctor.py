"""`tradewarden doctor`, run as a real process: one ok/warn/fail line per check, exit 1 on any fail, and it
creates nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.server.test_operator_cli import tw, write_config


def checks(result_stdout: str) -> dict[str, str]:
    return {c["name"]: c["level"] for c in json.loads(result_stdout)["checks"]}


def test_a_healthy_simulated_deployment_passes_and_names_its_database(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert tw(config, "db", "upgrade").returncode == 0
    result = tw(config, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(tmp_path / "tradewarden.db") in result.stdout
    for line in result.stdout.strip().splitlines():
        assert line.split()[0] in ("ok", "warn")
    found = checks(tw(config, "doctor", "--json").stdout)
    assert {"config", "mode", "keys", "database", "schema", "agents", "broker", "clock", "anchoring"} <= set(found)


def test_a_missing_database_is_reported_not_created(tmp_path: Path) -> None:
    config = write_config(tmp_path, ledger=False)
    result = tw(config, "doctor", "--json")
    assert result.returncode == 0 and checks(result.stdout)["database"] == "warn"
    assert not (tmp_path / "tradewarden.db").exists()


def test_alpaca_without_keys_fails(tmp_path: Path) -> None:
    config = write_config(tmp_path, server_extra='broker = "alpaca"')
    result = tw(config, "doctor", env={"ALPACA_API_KEY": "", "ALPACA_SECRET_KEY": ""})
    assert result.returncode == 1
    assert any(line.startswith("fail") and "ALPACA_API_KEY" in line for line in result.stdout.splitlines())


def test_paper_mode_with_a_live_endpoint_fails(tmp_path: Path) -> None:
    # The configuration itself is refused (server/config.py check_mode_and_broker): doctor says so.
    config = write_config(tmp_path, server_extra='broker = "alpaca"\nalpaca_trading_url = "https://api.alpaca.markets"',
                          ledger=False)
    result = tw(config, "doctor", "--json", env={"ALPACA_API_KEY": "k", "ALPACA_SECRET_KEY": "s",
                                                 "TRADEWARDEN_ALPACA_TRADING_URL": "https://api.alpaca.markets"})
    assert result.returncode == 1 and checks(result.stdout)["config"] == "fail"
    assert "alpaca_trading_url is the live endpoint" in result.stdout


def test_a_bad_config_is_one_fail_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[server]\ntrading_mode = "yolo"\n')
    result = tw(path, "doctor")
    assert result.returncode == 1
    [line] = result.stdout.strip().splitlines()
    assert line.startswith("fail") and "trading_mode" in line


def test_an_unreachable_broker_fails_in_bounded_time(tmp_path: Path) -> None:
    config = write_config(tmp_path, server_extra='broker = "alpaca"\nalpaca_trading_url = "http://127.0.0.1:9"\n'
                                                 'alpaca_data_url = "http://127.0.0.1:9"\nbroker_timeout_seconds = 2')
    result = tw(config, "doctor", "--json", env={"ALPACA_API_KEY": "key", "ALPACA_SECRET_KEY": "secret"})
    assert result.returncode == 1 and checks(result.stdout)["broker"] == "fail"
    assert "secret" not in result.stdout
