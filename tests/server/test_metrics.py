"""server/metrics.py: what a scrape shows of the ledger's units of work."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from ledger import db
from server.metrics import Metrics


def _value(rendered: str, name: str) -> float:
    line = next(line for line in rendered.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[1])


async def test_units_of_work_and_their_commits_are_exported(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}")
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    metrics = Metrics()
    before = metrics.render().decode()
    async with db.transaction(sessions) as session:
        await session.execute(text("SELECT 1"))
    after = metrics.render().decode()
    await engine.dispose()
    for name in ("tradewarden_ledger_units_total", "tradewarden_ledger_commits_total"):
        assert _value(after, name) == _value(before, name) + 1
