"""A command's loop ending right after it used the ledger, in a subprocess: what it leaves on stderr.

Shared by the tests of the connections the ledger keeps between units (ledger/group_commit.py) and between reads
(ledger/kept_reads.py): a connection still checked out when the loop ends makes aiosqlite warn.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENDINGS = ["dispose", "idle", "neither"]  # the engine disposed of; a quiet moment, then disposed of; neither


def end_loop_after(url: str, uses: str, *, idle_seconds: str, ending: str) -> subprocess.CompletedProcess[str]:
    """Run `uses` (statements inside `async def main()`, given `db`, `sessions` and `text`) on a fresh engine of
    `url`, then end the loop as `ending` says; `idle_seconds` is the expression of the quiet moment's length.
    Every warning is shown, except for an engine never disposed of: its pooled connections are left to the
    garbage collector (aiosqlite's ResourceWarning, as before anything was kept), so Python's default filters."""
    body = textwrap.indent(textwrap.dedent(uses).strip(), " " * 12)
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT)!r})
        from sqlalchemy import text
        from ledger import db, group_commit, kept_reads

        async def main():
            engine = db.create_engine({url!r})
            sessions = db.session_factory(engine)
{body}
            if {ending!r} == "idle":
                await asyncio.sleep({idle_seconds} * 3)
            if {ending!r} != "neither":
                await engine.dispose()

        asyncio.run(main())
        import gc
        gc.collect()
    """)
    warnings = [] if ending == "neither" else ["-W", "default"]
    return subprocess.run([sys.executable, *warnings, "-c", script], capture_output=True, text=True, timeout=60,
                          check=False)
