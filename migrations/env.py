"""Alembic environment: runs on the connection the server hands it, or on TRADEWARDEN_DATABASE_URL."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from ledger.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # A migration waits for the locks its DDL needs however long (ledger.db.LOCK_WAIT_SECONDS bounds
            # only the agents' calls).
            connection.execute(text("SET LOCAL lock_timeout = 0"))
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from ledger.db import create_engine

    url = os.environ.get("TRADEWARDEN_DATABASE_URL", "sqlite+aiosqlite:///tradewarden.db")

    async def _async() -> None:
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(_run)
        await engine.dispose()

    asyncio.run(_async())


run_migrations_online()
