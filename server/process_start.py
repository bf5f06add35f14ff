"""The first thing a `tradewarden` command-line process does (server/cli.py imports this module first): cyclic
garbage collection paused while the command's imports run, and the code libraries generate from source text
(dataclasses' methods, typing's ForwardRefs, SQLAlchemy's and attrs' generated functions) compiled once, not by every
process (server/code_cache.py).

Start-up allocates mostly objects that live as long as the process (modules, classes, pydantic schemas, click
commands); the collector kept re-scanning them while the imports ran. `serve` over stdio keeps the pause until its
heap freeze (server/startup.py pause_collection_during_start_up, server/runtime.py freeze_start_up_heap); every
other command resumes collection as soon as the command is known (server/cli.py main). A program or a test that
imports server.cli as a library is not a command-line process and is left alone.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path


def is_command_line(argv0: str) -> bool:
    """`tradewarden ...` (the console script), `python -m tradewarden ...` or `python -m server.cli ...`."""
    path = Path(argv0)
    return path.name == "tradewarden" or path.parts[-2:] in (("tradewarden", "__main__.py"), ("server", "cli.py"))


if is_command_line(sys.argv[0] if sys.argv else ""):
    gc.disable()
    from server import code_cache

    code_cache.install()
