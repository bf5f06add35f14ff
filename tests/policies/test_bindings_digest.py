"""A row's digest is the sha256 of the canonical JSON of [table, its decisive fields in order], times as
UTC ISO-8601, whether the row is a mapping of column values or an object with attributes: the same digest
for the same row in either form (a record written from a unit's values binds the row read back later)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from policies import bindings

TRADE = {"id": "t-1", "proposal_id": "p-1", "agent_id": "a", "client_order_id": "tw-é\x00", "symbol": "AAPL",
         "side": "buy", "quantity": Decimal("1.50"), "notional": None, "order_type": "limit",
         "limit_price": Decimal("180.7900"), "stop_price": None, "time_in_force": "day"}
PROPOSAL = {"id": "p-1", "agent_id": "a", "order_hash": "f" * 64, "strategy": None, "approval_mode": "auto",
            "trading_mode": "paper", "expires_at": datetime(2026, 11, 30, 12, 0, tzinfo=timezone(timedelta(hours=2)))}


def reference_digest(table: str, row: dict[str, Any]) -> str:
    fields: list[Any] = [table]
    for value in row.values():
        fields.append(value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value)
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=lambda d: format(d.normalize(), "f"))
    return hashlib.sha256(text.encode()).hexdigest()


def test_digest_of_a_mapping_is_the_hash_of_its_decisive_fields_in_order() -> None:
    assert bindings.digest(bindings.TRADES, TRADE) == reference_digest(bindings.TRADES, TRADE)
    assert bindings.digest(bindings.PROPOSALS, PROPOSAL) == reference_digest(bindings.PROPOSALS, PROPOSAL)


def test_digest_of_an_object_equals_the_digest_of_the_same_values_as_a_mapping() -> None:
    assert bindings.digest(bindings.PROPOSALS, SimpleNamespace(**PROPOSAL, extra=1)) == bindings.digest(
        bindings.PROPOSALS, PROPOSAL)


def test_changed_gives_the_decisive_fields_with_the_changes_applied() -> None:
    assert bindings.changed(bindings.PROPOSALS, SimpleNamespace(**PROPOSAL), approval_mode="human") == {
        **PROPOSAL, "expires_at": "2026-11-30T10:00:00+00:00", "approval_mode": "human"}
