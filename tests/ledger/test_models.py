"""The models' indexes as each database builds them (ledger/models.py), and what importing the models loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Index, MetaData, Table, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex

from ledger import models
from ledger.models import AgentTrade, Base

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



def _models() -> list[type[Base]]:
    return [model for model in vars(models).values()
            if isinstance(model, type) and issubclass(model, Base) and model is not Base]


def test_every_model_is_mapped_onto_its_own_table_in_the_models_metadata() -> None:
    assert len(_models()) == 16
    for model in _models():
        assert inspect(model).local_table is model.__table__, model
        assert Base.metadata.tables[model.__tablename__] is model.__table__, model


def test_a_model_takes_its_columns_as_keyword_arguments_and_refuses_any_other_name() -> None:
    trade = AgentTrade(id="t-1", status="new")
    assert (trade.id, trade.status, trade.order_id) == ("t-1", "new", None)
    with pytest.raises(TypeError, match="'colour' is an invalid keyword argument for AgentTrade"):
        AgentTrade(id="t-2", colour="red")
