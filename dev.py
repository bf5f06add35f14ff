#!/usr/bin/env python3
"""Set up and run tradewarden on a fresh machine that has only Python 3.11+.

    python3 dev.py demo     # create .venv from the hash-pinned lock, then run `tradewarden demo`
    python3 dev.py test     # the same set-up, then the whole test suite (pytest)
    python3 dev.py bench    # the same set-up, then the benchmark script
    python3 dev.py setup    # only the set-up
    python3 dev.py lock     # regenerate requirements.lock after changing dependencies in pyproject.toml
                            # (keeps current pins; `python3 dev.py lock --upgrade` moves every pin)

Everything installs from requirements.lock with --require-hashes: exact versions, verified downloads.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements.lock"
STAMP = VENV / ".installed-lock-sha256"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def setup() -> Path:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py must explain itself on an older Python
        sys.exit(f"tradewarden needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not venv_python().exists():
        print("creating .venv …", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    python = str(venv_python())
    wanted = hashlib.sha256(LOCK.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != wanted:
        print("installing pinned dependencies (hash-checked) …", file=sys.stderr)
        pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "install", "--require-hashes", "--no-deps", "-r", str(LOCK)], check=True)
        subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "-e", str(ROOT)], check=True)
        STAMP.write_text(wanted)
    return venv_python()


def lock(extra: list[str]) -> int:
    """requirements.lock from pyproject.toml (with the `test` extra) and build-requirements.in: every package
    pinned with the hashes of its files (pip-tools, installed in a throwaway venv). Index and find-links
    locations stay out of the file: it installs from whatever index pip is configured with."""
    with tempfile.TemporaryDirectory(prefix="tradewarden-lock-") as tmp:
        venv.EnvBuilder(with_pip=True).create(tmp)
        python = str(Path(tmp) / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
        pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "install", "pip-tools"], check=True)
        return subprocess.call([python, "-m", "piptools", "compile", "--quiet", "--generate-hashes",
                                "--allow-unsafe", "--no-header", "--no-emit-index-url", "--no-emit-find-links",
                                "--strip-extras", "--extra", "test", "--output-file", str(LOCK), *extra,
                                "pyproject.toml", "build-requirements.in"], cwd=ROOT)


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    rest = sys.argv[2:]
    if command == "lock":
        return lock(rest)
    if command not in {"setup", "demo", "test", "bench"}:
        print(__doc__)
        return 0 if command in {"help", "-h", "--help"} else 2
    python = str(setup())
    os.chdir(ROOT)
    if command == "setup":
        return 0
    if command == "demo":
        return subprocess.call([python, "-m", "server.cli", "demo", *rest])
    if command == "bench":
        return subprocess.call([python, "bench/run.py", *rest])
    return subprocess.call([python, "-m", "pytest", *rest])


if __name__ == "__main__":
    sys.exit(main())
