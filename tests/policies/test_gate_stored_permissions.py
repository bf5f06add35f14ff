"""An agent's stored permissions read off a result row by position (policies/gate.py _stored_of) are the values
read by name, for the rows of both identity statements and for a model object."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData

from ledger.models import AgentPermissions
from policies.gate import (
    _AGENT_AND_HOLDINGS,
    _AGENT_HOLDINGS_AND_STATE,
    _PERMISSION_NAMES,
    _stored_of,
    _stored_permissions,
)

VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.text(max_size=3), max_size=2))


def result_row(statement: Any, values: list[Any]) -> Any:
    keys = list(statement.selected_columns.keys())
    return IteratorResult(SimpleResultMetaData(keys), iter([tuple(values[:len(keys)])])).all()[0]


@given(st.lists(VALUES, min_size=40, max_size=40))
def test_a_result_row_gives_its_permissions_by_position_as_by_name(values: list[Any]) -> None:
    for statement in (_AGENT_AND_HOLDINGS, _AGENT_HOLDINGS_AND_STATE):
        row = result_row(statement, values)
        assert _stored_of(row) == _stored_permissions(row) == tuple(values[:len(_PERMISSION_NAMES)])


def test_a_model_object_gives_its_permissions_by_name() -> None:
    agent = AgentPermissions(agent_id="a1", max_trade_size=Decimal(5), allowed_symbols=["AAPL"], enabled=True)
    assert _stored_of(agent) == _stored_permissions(agent)
    assert _stored_of(agent)[_PERMISSION_NAMES.index("allowed_symbols")] == ["AAPL"]
