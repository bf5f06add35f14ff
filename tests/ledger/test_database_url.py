"""The database URL: one absolute SQLite path or one asyncpg URL for the engine, and one description for people."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.database_url import DatabaseUrlError, describe_database, normalize_database_url, sqlite_file


def test_a_relative_sqlite_path_is_made_absolute_against_the_base_folder(tmp_path: Path) -> None:
    url = normalize_database_url("sqlite+aiosqlite:///data/../ledger.db", tmp_path)
    assert url == f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    assert sqlite_file(url) == tmp_path / "ledger.db"


def test_an_absolute_sqlite_path_is_kept(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    assert normalize_database_url(url, Path("/elsewhere")) == url


def test_sqlite_without_a_driver_gets_aiosqlite_and_keeps_its_query(tmp_path: Path) -> None:
    assert (normalize_database_url("sqlite:///x.db?timeout=5", tmp_path)
            == f"sqlite+aiosqlite:///{tmp_path / 'x.db'}?timeout=5")


def test_in_memory_sqlite_stays_in_memory() -> None:
    url = normalize_database_url("sqlite+aiosqlite:///:memory:", Path("/base"))
    assert url == "sqlite+aiosqlite:///:memory:" and sqlite_file(url) is None
    assert describe_database(url) == "in-memory SQLite"


@pytest.mark.parametrize("url", ["postgresql://u:p@h:5432/db", "postgres://u:p@h:5432/db",
                                 "postgresql+asyncpg://u:p@h:5432/db"])
def test_postgresql_means_asyncpg(url: str) -> None:
    assert normalize_database_url(url) == "postgresql+asyncpg://u:p@h:5432/db"


@pytest.mark.parametrize(("url", "reason"), [
    ("mysql://x/y", "mysql:// is not supported"), ("mysql+aiomysql://x/y", "mysql:// is not supported"),
    ("postgresql+psycopg2://x/y", "runs on asyncpg"), ("ledger.db", "must look like"),
    ("sqlite+aiosqlite:ledger.db", "must look like"), ("sqlite+aiosqlite://ledger.db", "three slashes"),
])
def test_databases_tradewarden_does_not_run_on_are_refused(url: str, reason: str) -> None:
    with pytest.raises(DatabaseUrlError, match=reason):
        normalize_database_url(url)


def test_people_see_the_sqlite_files_absolute_path(tmp_path: Path) -> None:
    assert describe_database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}") == str(tmp_path / "x.db")


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+asyncpg://tw:s3cr%40t@db:5432/tw", "postgresql+asyncpg://tw:***@db:5432/tw"),
    ("postgresql+asyncpg://tw@db/tw", "postgresql+asyncpg://tw@db/tw"),
    ("postgresql+asyncpg://db/tw?user=tw&password=s3cret&ssl=require",
     "postgresql+asyncpg://db/tw?user=tw&password=***&ssl=require"),
])
def test_people_never_see_a_postgresql_password(url: str, shown: str) -> None:
    assert describe_database(url) == shown
