"""Migrations build the schema from nothing, and the schema they build is the models'."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from ledger import db
from ledger.models import SCHEMA_REVISION, Base


async def test_upgrade_of_an_empty_database_reaches_the_models_revision(db_url: str) -> None:
    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    assert await db.current_revision(engine) == SCHEMA_REVISION
    await engine.dispose()


async def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    async with engine.connect() as conn:
        diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    await engine.dispose()
    assert diff == []


def test_models_revision_is_the_migrations_head() -> None:
    script = ScriptDirectory(str(Path(db.MIGRATIONS_DIR)))
    assert script.get_current_head() == SCHEMA_REVISION


async def test_upgrade_twice_is_harmless(db_url: str) -> None:
    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    await db.upgrade(engine)
    assert await db.current_revision(engine) == SCHEMA_REVISION
    await engine.dispose()
