"""ledger/rows.py: mapped objects built from values already read, and their values read back."""

from __future__ import annotations

from decimal import Decimal

from ledger.models import SimOrder
from ledger.rows import loaded_values, transient

NAMES = ("id", "symbol", "qty", "leg_role")


def test_loaded_values_are_what_the_attributes_return() -> None:
    order = transient(SimOrder, {"id": "o-1", "symbol": "AAPL", "qty": Decimal("2.50"), "leg_role": None})
    assert loaded_values(order, NAMES) == {name: getattr(order, name) for name in NAMES}


def test_a_column_left_out_of_a_transient_reads_as_its_attribute_does() -> None:
    order = transient(SimOrder, {"id": "o-1"})
    assert loaded_values(order, ("id", "symbol")) == {"id": "o-1", "symbol": None}


def test_a_value_set_after_building_is_the_one_read() -> None:
    order = transient(SimOrder, {"id": "o-1", "status": "new"})
    order.status = "filled"
    assert loaded_values(order, ("status",)) == {"status": "filled"}
