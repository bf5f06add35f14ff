"""UTCDateTime's one-step SQLite bind processor writes exactly what SQLAlchemy's chain (process_bind_param, then
SQLite's DATETIME text) writes, and fails where it fails: naive times, values that are not datetimes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TypeDecorator

from ledger.types import SQLITE_DATETIME_FORMAT, UTCDateTime

SQLITE = sqlite.dialect()
ON_SQLITE: Any = UTCDateTime().dialect_impl(SQLITE)
FUSED: Any = ON_SQLITE.bind_processor(SQLITE)
CHAINED: Any = TypeDecorator.bind_processor(ON_SQLITE, SQLITE)  # SQLAlchemy's own, as before
OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes)))


class Stamp(datetime):
    """A datetime subclass: left to SQLAlchemy's chain."""


def outcome(process: Any, value: Any) -> tuple[str, Any]:
    try:
        return "value", process(value)
    except Exception as error:  # the same failure, type and message
        return "error", (type(error), str(error))


def test_sqlalchemy_keeps_the_storage_format_the_fused_processor_writes() -> None:
    assert ON_SQLITE.impl_instance._storage_format == SQLITE_DATETIME_FORMAT
    assert FUSED is not CHAINED


@given(st.datetimes(timezones=st.one_of(st.just(UTC), OFFSETS)))
@example(datetime(1, 1, 1, tzinfo=UTC))
@example(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
@example(datetime(2026, 3, 8, 7, 0, tzinfo=timezone(timedelta(hours=-5))))
@example(datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))))  # before year 1 in UTC: overflows
def test_an_aware_time_is_written_as_sqlalchemy_writes_it(value: datetime) -> None:
    assert outcome(FUSED, value) == outcome(CHAINED, value)


@pytest.mark.parametrize("value", [None, datetime(2026, 11, 30, 15, 0), date(2026, 11, 30), "2026-11-30",
                                   Stamp(2026, 11, 30, 15, 0, tzinfo=UTC), Stamp(2026, 11, 30, 15, 0)])
def test_anything_else_gives_or_raises_what_the_chain_does(value: Any) -> None:
    assert outcome(FUSED, value) == outcome(CHAINED, value)


def test_a_naive_time_is_still_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        FUSED(datetime(2026, 11, 30, 15, 0))


def test_postgresql_keeps_sqlalchemys_processor() -> None:
    dialect = postgresql.dialect()
    impl: Any = UTCDateTime().dialect_impl(dialect)
    processor = impl.bind_processor(dialect)
    value = datetime(2026, 11, 30, 10, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert outcome(processor, value) == outcome(TypeDecorator.bind_processor(impl, dialect), value)


@given(st.lists(st.datetimes(timezones=st.one_of(st.just(UTC), OFFSETS)), max_size=6))
def test_the_same_time_bound_again_is_written_the_same(values: list[datetime]) -> None:
    """The processor keeps the last time it wrote: bound again (the same object) or after others, same text."""
    for value in [*values, *values, *reversed(values)]:
        assert outcome(FUSED, value) == outcome(CHAINED, value)
