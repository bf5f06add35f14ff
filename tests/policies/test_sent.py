"""policies/sent.py: a result is dumped once per call, for the audit record and for the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from policies.results import ProposeResult
from policies.sent import wire_dump


def proposed(price: Decimal) -> ProposeResult:
    return ProposeResult(proposal_id="p-1", status="approved", violations=[], estimated_notional=price,
                         reference_price=price, expires_at=datetime(2026, 11, 30, 15, 0, tzinfo=UTC),
                         trading_mode="paper", message="Approved.")


def test_the_dump_is_the_sdks_dump_of_the_result() -> None:
    result = proposed(Decimal("187.2300"))
    assert wire_dump(result) == result.model_dump(mode="json", by_alias=True)


def test_the_same_result_is_dumped_once() -> None:
    result = proposed(Decimal("10"))
    assert wire_dump(result) is wire_dump(result)


def test_an_equal_result_that_renders_differently_gets_its_own_dump() -> None:
    # Decimal("1.0") == Decimal("1"), so the two results are equal, but they are not sent alike.
    first, second = proposed(Decimal("1.0")), proposed(Decimal("1"))
    assert first == second
    assert wire_dump(first)["reference_price"] == "1.0"
    assert wire_dump(second)["reference_price"] == "1"
