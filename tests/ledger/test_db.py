"""ledger/db.py: what every connection asks of the database."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ledger import db


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
