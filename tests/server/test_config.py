"""Configuration is strict: anything doubtful stops the server with a one-line reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, load_config


def _write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "tradewarden.toml"
    path.write_text(body)
    return str(path)


def test_defaults_are_simulated_paper_sqlite() -> None:
    config = load_config(env={})
    assert (config.server.broker, config.server.trading_mode) == ("simulated", "paper")
    assert config.server.database_url.startswith("sqlite+aiosqlite:///")


def test_trading_mode_other_than_paper_or_live_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trading_mode"):
        load_config(_write(tmp_path, '[server]\ntrading_mode = "demo"\n'), env={})


def test_live_needs_the_second_switch(tmp_path: Path) -> None:
    path = _write(tmp_path, '[server]\ntrading_mode = "live"\n')
    with pytest.raises(ConfigError, match="TRADEWARDEN_ALLOW_LIVE"):
        load_config(path, env={})
    assert load_config(path, env={"TRADEWARDEN_ALLOW_LIVE": "1"}).is_live


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_trade_sise"):
        load_config(_write(tmp_path, '[[agents]]\nid = "a"\nmax_trade_sise = 5\n'), env={})


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(_write(tmp_path, "[risk]\nx = 1\n"), env={})


def test_negative_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_trade_size"):
        load_config(_write(tmp_path, '[[agents]]\nid = "a"\nmax_trade_size = -1\n'), env={})


def test_unreadable_toml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[server\n"), env={})


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "absent.toml"), env={})


def test_seed_environment_names_override_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[server]\nenable_agent_trading = true\nmax_agents_per_account = 5\n")
    config = load_config(path, env={"ENABLE_AGENT_TRADING": "false", "MAX_AGENTS_PER_ACCOUNT": "7",
                                    "AGENT_RISK_MULTIPLIER": "0.5"})
    assert config.server.enable_agent_trading is False
    assert config.server.max_agents_per_account == 7
    assert str(config.server.agent_risk_multiplier) == "0.5"


def test_seed_trading_mode_variable_is_honoured() -> None:
    with pytest.raises(ConfigError, match="TRADEWARDEN_ALLOW_LIVE"):
        load_config(env={"AGENT_TRADING_MODE": "live"})


def test_more_agents_than_allowed_is_refused(tmp_path: Path) -> None:
    agents = "".join(f'[[agents]]\nid = "a{i}"\n' for i in range(3))
    with pytest.raises(ConfigError, match="max_agents_per_account"):
        load_config(_write(tmp_path, "[server]\nmax_agents_per_account = 2\n" + agents), env={})


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, '[server]\nbroker = "simulated"\nsimulated_seed = 7\n')
    assert load_config(env={"TRADEWARDEN_CONFIG": path}).server.simulated_seed == 7
