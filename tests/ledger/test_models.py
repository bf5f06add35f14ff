"""The models' indexes as each database builds them (ledger/models.py), and what importing the models loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import Index, MetaData, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex

from ledger.models import AgentTrade

TRADES: Table = AgentTrade.__table__  # type: ignore[assignment]  # declared: a Table

ROOT = Path(__file__).resolve().parents[2]


def _unstored_micros_index(indexes: set[Index]) -> Index:
    return next(index for index in indexes if index.name == "ix_agent_trades_unstored_micros")


def test_the_partial_index_is_partial_on_sqlite_and_on_postgresql() -> None:
    index = _unstored_micros_index(TRADES.indexes)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        ddl = str(CreateIndex(index).compile(dialect=dialect))
        assert ddl.endswith("ON agent_trades (agent_id, created_at) WHERE window_micros IS NULL"), (dialect.name, ddl)


def test_the_partial_index_lists_its_where_clause_for_both_databases() -> None:
    kwargs = _unstored_micros_index(TRADES.indexes).dialect_kwargs
    assert {str(kwargs["sqlite_where"]), str(kwargs["postgresql_where"])} == {"window_micros IS NULL"}


def test_a_copy_of_the_table_keeps_the_index_partial_on_postgresql() -> None:
    copy = TRADES.to_metadata(MetaData())
    ddl = str(CreateIndex(_unstored_micros_index(copy.indexes)).compile(dialect=postgresql.dialect()))
    assert ddl.endswith("WHERE window_micros IS NULL"), ddl


def test_importing_the_models_does_not_load_the_postgresql_dialect() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, ledger.models; print('sqlalchemy.dialects.postgresql' in sys.modules)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert loaded == "False"


def test_the_models_are_mapped_from_evaluated_annotations_not_strings() -> None:
    from ledger import models

    mapped = [cls for cls in vars(models).values() if isinstance(cls, type) and issubclass(cls, models.Base)
              and cls is not models.Base]
    written_as_text = [f"{cls.__name__}.{name}" for cls in mapped
                       for name, annotation in cls.__annotations__.items() if isinstance(annotation, str)]
    assert len(mapped) == 16
    assert written_as_text == []
