"""What a person sees before approving (policies/approval_form.py): the exits and the money at risk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ledger.models import TradeProposal
from policies.approval_form import approval_message

NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)


def proposal(**fields: Any) -> TradeProposal:
    values: dict[str, Any] = dict(
        id="00000000-0000-0000-0000-000000000001", agent_id="agent-1", symbol="AAPL", side="buy", qty=Decimal(10),
        notional=None, order_type="market", limit_price=None, stop_price=None, time_in_force="day",
        extended_hours=False, strategy=None, reasoning="r", confidence=None, status="pending_approval",
        order_hash="h", reference_price=Decimal(100), estimated_notional=Decimal(1000), violations=[],
        approval_mode="elicit", trading_mode="paper", created_at=NOW, expires_at=NOW + timedelta(minutes=5),
        updated_at=NOW, exits=None)
    values.update(fields)
    return TradeProposal(**values)


def test_the_form_shows_the_exits_and_the_money_at_risk_to_the_stop() -> None:
    text = approval_message(proposal(exits={"stop_loss": {"stop_price": "95", "limit_price": None},
                                            "take_profit": {"limit_price": "110"}}), None)
    assert "Exits:      stop-loss $95, take-profit $110" in text
    assert "At risk:    $50.00 (10 x $5.00 from the entry to the stop)" in text


def test_the_form_says_an_order_without_a_stop_risks_the_whole_position() -> None:
    assert "At risk:    $1,000.00 - no stop: the whole position" in approval_message(proposal(), None)


def test_a_limit_entry_risks_from_its_limit_and_a_trailing_stop_its_trail() -> None:
    text = approval_message(proposal(order_type="limit", limit_price=Decimal(98),
                                     exits={"trailing_stop": {"percent": "2", "price": None}}), None)
    assert "trailing stop 2%" in text and "At risk:    $19.60 (10 x $1.96" in text
