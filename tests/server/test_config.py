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
    path = _write(tmp_path, '[server]\ntrading_mode = "live"\nbroker = "alpaca"\n')
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


# -- paper and live, strictly (SPEC invariant 6) --------------------------------------------------------------

@pytest.mark.parametrize("mode", [" LIVE ", "Live", "LIVE", "live ", "Paper", " paper"])
@pytest.mark.parametrize("variable", ["AGENT_TRADING_MODE", "TRADEWARDEN_TRADING_MODE"])
def test_a_sloppy_mode_from_the_environment_is_refused_naming_the_variable(mode: str, variable: str) -> None:
    with pytest.raises(ConfigError, match=f"trading_mode \\(from {variable}\\)"):
        load_config(env={variable: mode, "TRADEWARDEN_ALLOW_LIVE": "1"})


@pytest.mark.parametrize("mode", ["Live", " live", "PAPER"])
def test_a_sloppy_mode_in_the_file_is_refused(tmp_path: Path, mode: str) -> None:
    with pytest.raises(ConfigError, match="trading_mode"):
        load_config(_write(tmp_path, f'[server]\ntrading_mode = "{mode}"\n'), env={"TRADEWARDEN_ALLOW_LIVE": "1"})


def test_two_mode_variables_that_disagree_are_refused() -> None:
    with pytest.raises(ConfigError, match="AGENT_TRADING_MODE and TRADEWARDEN_TRADING_MODE disagree"):
        load_config(env={"AGENT_TRADING_MODE": "paper", "TRADEWARDEN_TRADING_MODE": "live"})


@pytest.mark.parametrize("url", ["https://api.alpaca.markets", "https://api.alpaca.markets/",
                                 "http://API.alpaca.markets", "https://broker-api.alpaca.markets"])
def test_paper_mode_with_a_live_endpoint_is_refused(tmp_path: Path, url: str) -> None:
    path = _write(tmp_path, f'[server]\nbroker = "alpaca"\nalpaca_trading_url = "{url}"\n')
    with pytest.raises(ConfigError, match="trading_mode is paper but alpaca_trading_url"):
        load_config(path, env={})


def test_paper_mode_with_a_live_endpoint_from_the_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match="trading_mode is paper but alpaca_trading_url is the live endpoint"):
        load_config(env={"TRADEWARDEN_BROKER": "alpaca", "TRADEWARDEN_ALPACA_TRADING_URL": "https://api.alpaca.markets"})


@pytest.mark.parametrize("url", ["https://paper-api.alpaca.markets", "http://127.0.0.1:9999", "https://proxy.example"])
def test_live_mode_accepts_only_alpacas_live_endpoint(tmp_path: Path, url: str) -> None:
    path = _write(tmp_path, f'[server]\nbroker = "alpaca"\ntrading_mode = "live"\nalpaca_trading_url = "{url}"\n')
    with pytest.raises(ConfigError, match="trading_mode is live but alpaca_trading_url"):
        load_config(path, env={"TRADEWARDEN_ALLOW_LIVE": "1"})


def test_each_mode_defaults_to_its_own_endpoint(tmp_path: Path) -> None:
    from server.config import ALPACA_LIVE_URL, ALPACA_PAPER_URL, alpaca_trading_url, is_custom_trading_url

    paper = load_config(_write(tmp_path, '[server]\nbroker = "alpaca"\n'), env={})
    live = load_config(_write(tmp_path, '[server]\nbroker = "alpaca"\ntrading_mode = "live"\n'),
                       env={"TRADEWARDEN_ALLOW_LIVE": "1"})
    assert alpaca_trading_url(paper.server) == ALPACA_PAPER_URL
    assert alpaca_trading_url(live.server) == ALPACA_LIVE_URL
    assert not is_custom_trading_url(paper.server) and not is_custom_trading_url(live.server)


def test_a_custom_endpoint_is_allowed_in_paper_and_marked_custom(tmp_path: Path) -> None:
    from server.config import is_custom_trading_url

    config = load_config(_write(tmp_path, '[server]\nbroker = "alpaca"\nalpaca_trading_url = "http://127.0.0.1:9"\n'),
                         env={})
    assert is_custom_trading_url(config.server)


def test_live_mode_on_the_simulated_broker_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="live but broker is simulated"):
        load_config(_write(tmp_path, '[server]\ntrading_mode = "live"\n'), env={"TRADEWARDEN_ALLOW_LIVE": "1"})


@pytest.mark.parametrize(("key", "value"), [
    ("broker_timeout_seconds", "inf"), ("broker_timeout_seconds", "nan"), ("broker_timeout_seconds", "1e400"),
    ("broker_timeout_seconds", "3600"), ("reconcile_interval_seconds", "inf"), ("state_poll_seconds", "inf"),
    ("proposal_ttl_seconds", str(3000 * 365 * 86400)), ("limit_proposal_ttl_seconds", str(8 * 86400)),
])
def test_unbounded_durations_are_refused_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^invalid configuration: {key} \\(from TRADEWARDEN_{key.upper()}\\)"):
        load_config(env={f"TRADEWARDEN_{key.upper()}": value})


def test_an_infinite_timeout_in_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="broker_timeout_seconds"):
        load_config(_write(tmp_path, "[server]\nbroker_timeout_seconds = inf\n"), env={})


def test_an_agent_window_of_centuries_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="order_rate_window_seconds"):
        load_config(_write(tmp_path, '[[agents]]\nid = "a"\norder_rate_window_seconds = 99999999999\n'), env={})


# -- the database ----------------------------------------------------------------------------------------------

def test_a_relative_sqlite_path_is_the_config_files_neighbour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    folder = tmp_path / "deploy"
    folder.mkdir()
    path = folder / "tradewarden.toml"
    path.write_text('[server]\ndatabase_url = "sqlite+aiosqlite:///data/ledger.db"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config("deploy/tradewarden.toml", env={})
    assert config.server.database_url == f"sqlite+aiosqlite:///{folder / 'data' / 'ledger.db'}"


def test_without_a_config_file_the_sqlite_path_is_the_working_directorys(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(env={}).server.database_url == f"sqlite+aiosqlite:///{tmp_path / 'tradewarden.db'}"


def test_postgresql_without_a_driver_means_asyncpg() -> None:
    config = load_config(env={"TRADEWARDEN_DATABASE_URL": "postgresql://tw@db.internal/tw"})
    assert config.server.database_url == "postgresql+asyncpg://tw@db.internal/tw"


@pytest.mark.parametrize("url", ["mysql://x/y", "postgresql+psycopg2://x/y", "tradewarden.db"])
def test_a_database_tradewarden_does_not_run_on_is_refused_in_one_line(url: str) -> None:
    with pytest.raises(ConfigError, match="database_url") as caught:
        load_config(env={"TRADEWARDEN_DATABASE_URL": url})
    assert "\n" not in str(caught.value)


# -- secrets ---------------------------------------------------------------------------------------------------

SECRET = "SKfake0123456789abcdefghijkl"


@pytest.mark.parametrize("bad", [SECRET[:10] + "\n" + SECRET[10:], SECRET[:10] + "\r\n" + SECRET[10:],
                                 SECRET[:10] + " " + SECRET[10:], SECRET[:10] + "\x1b[2K" + SECRET[10:],
                                 SECRET[:10] + "\u202e" + SECRET[10:], SECRET[:10] + "\t" + SECRET[10:]])
@pytest.mark.parametrize("variable", ["ALPACA_API_KEY", "ALPACA_SECRET_KEY"])
def test_a_key_with_whitespace_or_control_characters_inside_is_refused_without_showing_it(
        bad: str, variable: str) -> None:
    from server.config import check_broker_credentials

    env = {"TRADEWARDEN_BROKER": "alpaca", "ALPACA_API_KEY": "PKfake0123456789abcdef", "ALPACA_SECRET_KEY": SECRET}
    env[variable] = bad
    config = load_config(env=env)
    with pytest.raises(ConfigError, match=f"^{variable} has") as caught:
        check_broker_credentials(config, env)
    message = str(caught.value)
    assert "\n" not in message
    assert not any(fragment in message for fragment in (SECRET[:10], SECRET[10:], "fake0123"))


def test_surrounding_whitespace_of_a_key_is_dropped() -> None:
    from server.config import check_broker_credentials

    env = {"TRADEWARDEN_BROKER": "alpaca", "ALPACA_API_KEY": " PKfake0123456789abcdef\n", "ALPACA_SECRET_KEY": SECRET}
    assert check_broker_credentials(load_config(env=env), env) == ("PKfake0123456789abcdef", SECRET)
