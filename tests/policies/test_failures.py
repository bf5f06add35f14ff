"""Which failures are the ledger's or the broker's, and how arguments are kept bounded in audit records."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from broker.base import BrokerError
from policies.failures import bounded, broker_unavailable, has_nul, ledger_failure


def operational(message: str) -> OperationalError:
    return OperationalError("INSERT ...", {}, sqlite3.OperationalError(message))


@pytest.mark.parametrize("message, reason", [
    ("database is locked", "locked"),
    ("attempt to write a readonly database", "read-only"),
    ("database or disk is full", "full"),
    ("disk I/O error", "cannot be reached or written"),
])
def test_sqlite_failures_to_write_are_the_ledgers(message: str, reason: str) -> None:
    assert reason in (ledger_failure(operational(message)) or "")


def test_a_constraint_violation_is_not_the_ledger_being_unavailable() -> None:
    assert ledger_failure(IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))) is None
    assert ledger_failure(ValueError("bad")) is None


def test_a_refused_connection_or_timeout_is_the_broker_being_unavailable() -> None:
    assert broker_unavailable(TimeoutError())
    assert broker_unavailable(BrokerError("connection refused", code="BROKER_UNAVAILABLE", retryable=True))
    assert not broker_unavailable(BrokerError("Alpaca 422: bad order", code="INVALID_ORDER", status=422))
    assert not broker_unavailable(BrokerError("Alpaca 429", status=429, retryable=True))


def test_a_long_string_is_kept_as_an_excerpt_with_its_length_and_hash() -> None:
    value = "x" * 2_000_000
    kept = bounded({"reasoning": value, "qty": 1})
    assert kept["qty"] == 1
    assert kept["reasoning"]["length"] == 2_000_000
    assert kept["reasoning"]["sha256"] == hashlib.sha256(value.encode()).hexdigest()
    assert len(json.dumps(kept)) < 400


def test_long_lists_are_cut_with_a_count_and_nul_is_made_storable() -> None:
    kept = bounded({"indicators": [f"sma_{n}" for n in range(500)], "note": "a\x00b"})
    assert len(kept["indicators"]) == 51 and kept["indicators"][-1] == "… 450 more items"
    assert kept["note"] == "a\ufffdb" and not has_nul(kept)
    assert has_nul({"deep": [{"k": "v\x00"}]})
