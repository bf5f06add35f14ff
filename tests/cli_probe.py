"""Run the `tradewarden` command line in its own process, as an operator would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(config: Path, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`tradewarden ARGS --config CONFIG`; with check=True a non-zero exit fails the test with its stderr."""
    result = subprocess.run([sys.executable, "-m", "server.cli", *args, "--config", str(config)], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"tradewarden {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result
