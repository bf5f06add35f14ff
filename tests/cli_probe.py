"""Run the `tradewarden` command line in its own process, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(config: Path, *args: str, check: bool = False, timeout: float = 120, cwd: Path = ROOT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`tradewarden ARGS --config CONFIG`; with check=True a non-zero exit fails the test with its stderr.
    `cwd`: the operator's working directory (the code is found wherever it is); `env`: extra variables."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    result = subprocess.run([sys.executable, "-m", "server.cli", *args, "--config", str(config)], cwd=cwd,
                            capture_output=True, text=True, timeout=timeout, env=environment)
    if check and result.returncode != 0:
        raise AssertionError(f"tradewarden {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def create_ledger(config: Path) -> Path:
    """`tradewarden db upgrade`, as an operator creates a deployment's ledger (no other command creates one)."""
    run_cli(config, "db", "upgrade", check=True)
    return config
