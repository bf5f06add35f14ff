"""`tradewarden demo` shows a closed market instead of hiding it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_shows_a_closed_market_moment_with_the_next_open() -> None:
    result = subprocess.run([sys.executable, "-m", "server.cli", "demo"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "with exchange hours enforced" in out
    assert "MARKET_CLOSED: the US equity market is closed" in out and "it opens next at Mon" in out
    assert "→ APPROVED (time_in_force left out: gtc" in out
    assert "audit chain OK" in out
