"""Which processes pause garbage collection for their imports (server/process_start.py)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from server.process_start import is_command_line

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv0", ["/srv/venv/bin/tradewarden", "tradewarden", f"{ROOT}/server/cli.py",
                                   f"{ROOT}/tradewarden/__main__.py"])
def test_the_command_line_entry_points_are_command_line_processes(argv0: str) -> None:
    assert is_command_line(argv0)


@pytest.mark.parametrize("argv0", ["/usr/bin/pytest", f"{ROOT}/bench/issue12.py", "-c", "", "/srv/app/cli.py",
                                   "/srv/tradewarden.py"])
def test_other_programs_are_not(argv0: str) -> None:
    assert not is_command_line(argv0)


def test_importing_the_command_line_as_a_library_leaves_collection_on() -> None:
    import server.cli  # noqa: F401

    assert gc.isenabled()


def test_a_command_other_than_serve_collects_as_usual() -> None:
    # Paused for the imports; `main`'s callback resumes collection before the command runs (a long `audit verify`
    # must not grow unbounded). The probe command is added the way server/cli.py adds command groups.
    probe = (f"import sys; sys.argv = [{str(ROOT / 'server' / 'cli.py')!r}, 'probe']\n"
             "import gc, server.cli as cli\n"
             "paused = not gc.isenabled()\n"
             "cli.main.command('probe')(lambda: print(paused, gc.isenabled()))\n"
             "cli.main(prog_name='tradewarden')\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
