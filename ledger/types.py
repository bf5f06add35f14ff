"""Column types that keep money exact and times in UTC on both SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy.sql.type_api import _BindProcessorType

from policies.orders import decimal_text


class ExactDecimal(TypeDecorator[Decimal]):
    """Decimals stored as canonical text: SQLite has no exact numeric type, and binary floats lose cents."""

    impl = String(48)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("binary floats are not stored in the ledger; pass a Decimal")
        return decimal_text(Decimal(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


# SQLAlchemy's SQLite DATETIME storage format (its default, which the ledger keeps): what UTCDateTime's fused
# SQLite processor writes.
SQLITE_DATETIME_FORMAT = ("%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d"
                          ".%(microsecond)06d")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in, timezone-aware UTC datetimes out (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the ledger stores UTC-aware times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> _BindProcessorType[datetime] | None:
        """On SQLite, SQLAlchemy's chain (process_bind_param, then DATETIME's text built from a dict of the
        fields) done in one step for an aware `datetime`, the type every caller binds (a proposal binds about a
        dozen times): the same text. Anything else (None, naive, a subclass, a date) goes through the chain, so
        it gives or raises what it did (tests/ledger/test_types.py holds the two equal)."""
        chained = super().bind_processor(dialect)
        if (chained is None or dialect.name != "sqlite"
                or getattr(self.impl_instance, "_storage_format", None) != SQLITE_DATETIME_FORMAT):
            return chained
        exact = datetime
        # The last time written and its text: a unit binds the same `now` several times (a proposal's created_at,
        # updated_at, decided_at and its approval's created_at). Kept as one tuple, replaced in one assignment
        # (a reader sees the old pair or the new one, whole); it holds the datetime, so its id is not reused.
        last: tuple[Any, str] = (None, "")

        def process(value: Any) -> Any:
            nonlocal last
            if type(value) is exact and value.tzinfo is not None:
                known = last
                if known[0] is value:
                    return known[1]
                utc = value.astimezone(UTC)
                text = "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031 - the storage format, positionally
                    utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond)
                last = (value, text)
                return text
            return chained(value)

        return process
