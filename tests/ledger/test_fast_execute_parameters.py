"""A prepared statement's positional parameters (ledger/fast_execute.py _Assembly) are exactly what its plan
gives position by position (plan_parameters, the loop it replaced): each value processed once however often it
is bound, gathered and placed in C, with the same failure when a value cannot be bound."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from ledger import fast_execute
from ledger.usage import _BOOK_COUNTS_AND_DUPLICATE, _open_rows_statement
from policies.audit import _ADVANCE_HEAD, _insert_of
from policies.gate import _AGENT_HOLDINGS_AND_STATE, _INSERT_PROPOSAL

KEYS = ("a", "b", "c", "d", "e")


def doubled(value: Any) -> Any:
    return value * 2


def text(value: Any) -> str:
    return f"<{value!r}>"


def refuses_negatives(value: Any) -> Any:
    if isinstance(value, int) and value < 0:
        raise ValueError(f"negative: {value}")
    return value


PROCESSORS = st.sampled_from([None, doubled, text, refuses_negatives])
ENTRIES = st.one_of(
    st.tuples(st.sampled_from(KEYS), st.none(), PROCESSORS),  # the call's value under a key
    st.tuples(st.none(), st.integers(-3, 3), PROCESSORS))  # a value fixed in the statement
PARAMETERS = st.fixed_dictionaries({key: st.integers(-3, 3) for key in KEYS})


def outcome(function: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "value", function(*args)
    except Exception as error:
        return "error", (type(error), str(error))


@given(st.lists(ENTRIES, max_size=40), PARAMETERS)
def test_any_plan_gives_what_its_positions_give_one_by_one(plan: list[tuple[Any, Any, Any]],
                                                            params: dict[str, int]) -> None:
    assembly = fast_execute._Assembly(plan)
    assert outcome(assembly, params) == outcome(fast_execute.plan_parameters, plan, params)


@given(st.lists(ENTRIES, max_size=12), PARAMETERS)
def test_the_result_is_a_fresh_list_each_call(plan: list[tuple[Any, Any, Any]], params: dict[str, int]) -> None:
    assembly = fast_execute._Assembly([(source, constant, None) for source, constant, _ in plan])
    first, second = assembly(params), assembly(params)
    assert type(first) is list and first == second and (first is not second or not first)


def test_a_value_bound_in_several_places_is_processed_once() -> None:
    calls: list[Any] = []

    def counted(value: Any) -> Any:
        calls.append(value)
        return value + 1

    assembly = fast_execute._Assembly([("a", None, counted), ("b", None, None), ("a", None, counted),
                                       (None, 7, counted), ("a", None, None)])
    assert assembly({"a": 1, "b": 2}) == [2, 2, 2, 8, 1]
    assert calls == [1, 7]


T0 = datetime(2026, 11, 30, 15, 0, 0, 123456, tzinfo=UTC)
HOT: list[tuple[Any, dict[str, Any]]] = [
    (_AGENT_HOLDINGS_AND_STATE, {"agent_id": "a1"}),
    (_open_rows_statement(sqlite=True), {"agent_id": "a1", "unknown_since": T0}),
    (_BOOK_COUNTS_AND_DUPLICATE, {"agent_id": "a1", "rolling_since": T0 - timedelta(hours=24),
                                  "rate_since": T0 - timedelta(minutes=1), "day_start": T0 - timedelta(hours=10),
                                  "symbol": "AAPL", "duplicate_since": T0 - timedelta(seconds=30),
                                  "order_hash": "h" * 64}),
    (_ADVANCE_HEAD, {"old_seq": 1, "old_hash": "0" * 64, "new_seq": 2, "new_hash": "1" * 64}),
    (_insert_of(3), {f"{name}_{row}": value for row in range(3) for name, value in {
        "seq": row, "event_id": f"e{row}", "ts": T0, "actor": "agent:a1", "agent_id": "a1", "kind": "k",
        "tool": "propose_trade", "payload": "{}", "prev_hash": "0" * 64, "hash": "1" * 64}.items()}),
    (_INSERT_PROPOSAL, {
        "id": "p1", "agent_id": "a1", "symbol": "AAPL", "side": "buy", "qty": Decimal("1.50"), "notional": None,
        "order_type": "market", "limit_price": None, "stop_price": None, "time_in_force": "day",
        "extended_hours": False, "strategy": None, "reasoning": "r", "confidence": None, "status": "approved",
        "order_hash": "h" * 64, "reference_price": Decimal("180.79"), "estimated_notional": Decimal("271.185"),
        "violations": [], "approval_mode": "auto", "trading_mode": "paper", "created_at": T0,
        "expires_at": T0 + timedelta(minutes=5), "updated_at": T0, "decided_at": T0, "decided_by": "policy:auto",
        "decided_via": "auto", "decision_note": None, "audit_event_id": "e1", "exits": None}),
]


def test_the_hot_statements_bind_what_their_plans_bind() -> None:
    dialect = sqlite.dialect(paramstyle="qmark")
    for statement, params in HOT:
        prepared = fast_execute._prepare(statement, frozenset(params), dialect)
        assert isinstance(prepared, fast_execute._Prepared) and prepared.plan is not None
        assert prepared.parameters(params) == fast_execute.plan_parameters(prepared.plan, params)


# Values fixed in a statement written into SQLite's SQL (fast_execute._inlined): what SQLite reads from the text is
# what it reads bound. Checked on SQLite itself, value by value and type by type.
FIXED = st.one_of(st.text(max_size=6), st.text(alphabet="'\"?;-x", max_size=6), st.integers(),
                  st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1), st.booleans(), st.none(),
                  st.floats(allow_nan=False), st.binary(max_size=3))
FIXED_ENTRIES = st.one_of(st.tuples(st.sampled_from(KEYS), st.none(), st.none()),
                          st.tuples(st.none(), FIXED, st.none()))


@given(st.lists(FIXED_ENTRIES, min_size=1, max_size=12), PARAMETERS)
@example([(None, -(2 ** 63), None), (None, 2 ** 63 - 1, None), (None, "it's", None),
          (None, "", None), (None, "-- ?", None), ("a", None, None)], dict.fromkeys(KEYS, 1))
def test_fixed_values_written_into_the_sql_read_as_they_read_bound(plan: list[tuple[Any, Any, Any]],
                                                                  params: dict[str, int]) -> None:
    sql = "SELECT " + ", ".join("?" for _ in plan)
    connection = sqlite3.connect(":memory:")

    def read(text: str, parameters: list[Any]) -> list[list[tuple[Any, type]]]:
        return [[(value, type(value)) for value in row] for row in connection.execute(text, parameters).fetchall()]

    try:
        expected = outcome(read, sql, fast_execute.plan_parameters(plan, params))
        inlined = fast_execute._inlined(sql, plan)
        if inlined is None:  # nothing to write in
            assert all(source is not None or fast_execute._literal(constant) is None
                       for source, constant, _ in plan)
            return
        run_sql, assembly = inlined
        assert outcome(read, run_sql, assembly(params)) == expected  # a value too large for SQLite fails alike
    finally:
        connection.close()


def test_a_statement_runs_with_its_fixed_values_written_in_and_fails_naming_them_bound() -> None:
    from sqlalchemy import bindparam, select

    from ledger.models import TradingState

    statement = select(TradingState.scope).where(TradingState.state == "active",
                                                 TradingState.changed_by == bindparam("by"))
    prepared = fast_execute._prepare(statement, frozenset({"by"}), sqlite.dialect(paramstyle="qmark"))
    assert isinstance(prepared, fast_execute._Prepared)
    assert prepared.sql.count("?") == 2 and prepared.parameters({"by": "system"}) == ["active", "system"]
    assert prepared.run_sql.count("?") == 1 and "'active'" in prepared.run_sql
    assert prepared.run_parameters({"by": "system"}) == ["system"]


def test_a_question_mark_that_is_not_a_parameter_leaves_the_sql_as_it_is() -> None:
    assert fast_execute._inlined("SELECT '?', ?", [(None, "x", None)]) is None
