"""server/security.py: a server that trades real money over stdio says at start what that does not protect
against (docs/SECURITY.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from server.security import STDIO_LIVE_WARNING, stdio_live_warning
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]


def test_only_live_mode_over_stdio_is_warned_about(db_url: str) -> None:
    live, paper = make_config(db_url, trading_mode="live"), make_config(db_url)
    assert stdio_live_warning(live, "stdio") == STDIO_LIVE_WARNING
    assert stdio_live_warning(live, "http") is None
    assert stdio_live_warning(paper, "stdio") is None
    assert "act as the operator" in STDIO_LIVE_WARNING and "docs/SECURITY.md" in STDIO_LIVE_WARNING


def test_a_live_stdio_server_warns_on_stderr_at_start_and_keeps_stdout_clean(tmp_path: Path) -> None:
    config = tmp_path / "tradewarden.toml"
    config.write_text(f"""
[server]
database_url = "sqlite+aiosqlite:///{tmp_path / 'live.db'}"
trading_mode = "live"
broker = "alpaca"
broker_timeout_seconds = 1

[[agents]]
id = "agent-1"
""")
    env = {**os.environ, "TRADEWARDEN_ALLOW_LIVE": "1", "ALPACA_API_KEY": "AKFAKEKEY0000000000000",
           "ALPACA_SECRET_KEY": "fakesecretfakesecretfakesecretfakesecret0"}
    # No client: stdin is closed at once, so the server starts, warns and ends.
    result = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--agent", "agent-1", "--config",
                             str(config)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=120)
    assert "live_mode_over_stdio" in result.stderr and "act as the operator" in result.stderr, result.stderr
    assert result.stdout == ""
    assert "fakesecret" not in result.stderr
