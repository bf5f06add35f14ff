"""ledger/db.py: what every connection asks of the database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from ledger import db
from tests.cli_probe import ROOT


@pytest.mark.postgres
async def test_postgres_connections_commit_synchronously(pg_url: str) -> None:
    """A COMMIT returns once its WAL record is flushed, whatever the server's default: the test cluster runs
    with synchronous_commit=off (tests/postgres.py), and the connections still ask for, and get, on."""
    engine = db.create_engine(pg_url)
    try:
        async with db.read(db.session_factory(engine)) as connection:
            assert (await connection.execute(text("SHOW synchronous_commit"))).scalar_one() == "on"
        async with db.transaction(db.session_factory(engine)) as session:
            assert (await session.execute(text("SHOW synchronous_commit"))).scalar_one() == "on"
    finally:
        await engine.dispose()


def test_commands_started_together_on_a_fresh_file_all_migrate_it(tmp_path: Path) -> None:
    """Six `tradewarden db upgrade` at the same instant on a file that does not exist yet (an operator's
    scripts, or servers started together): each waits its turn for the write lock, none fails "database is
    locked", and the schema is there once."""
    config = tmp_path / "tradewarden.toml"
    config.write_text(f'[server]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "ledger.db"}"\n')
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    commands = [subprocess.Popen([sys.executable, "-m", "server.cli", "db", "upgrade", "--config", str(config)],
                                 cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(6)]
    outcomes = [(command.wait(timeout=120), command.stderr.read() if command.stderr else "") for command in commands]
    assert [code for code, _ in outcomes] == [0] * 6, outcomes
    with sqlite3.connect(tmp_path / "ledger.db") as ledger:
        assert ledger.execute("SELECT version_num FROM alembic_version").fetchall() == [(db.SCHEMA_REVISION,)]


async def test_sqlite_connections_keep_savepoint_journals_in_memory(tmp_path: Path) -> None:
    """A unit's savepoint journal (the pages it changed, ~16 for an execution's first unit) is kept in memory,
    not spilled past 64 KiB to a temporary file created and deleted by every such unit: the writer's connection
    and the readers' keep temporary storage in memory."""
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    memory = 2
    try:
        sessions = db.session_factory(engine)
        async with db.transaction(sessions) as session:  # the group-commit writer
            assert (await session.execute(text("PRAGMA temp_store"))).scalar_one() == memory
        async with db.read(sessions) as connection:
            assert (await connection.execute(text("PRAGMA temp_store"))).scalar_one() == memory
    finally:
        await engine.dispose()
