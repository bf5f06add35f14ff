"""policies/events.py and policies/webhooks.py: audit records as events, and events as webhook messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from policies import webhooks
from policies.audit import canonical_json
from policies.events import AuditRecord, Event, EventFilter, events_of, to_event

TS = datetime(2026, 11, 30, 1, 2, 3, 456789, tzinfo=UTC)
TOKEN = "tw_" + "A" * 40


def record(kind: str, payload: dict[str, Any], *, seq: int = 7, actor: str = "agent:a1", agent_id: str | None = "a1",
           tool: str | None = None) -> AuditRecord:
    return AuditRecord(seq=seq, ts=TS, actor=actor, kind=kind, agent_id=agent_id, tool=tool,
                       payload=canonical_json(payload))


def test_the_envelope_is_the_seeds_with_the_audit_sequence_as_event_id() -> None:
    event = to_event(record("proposal.created", {"proposal_id": "p1", "symbol": "AAPL", "side": "buy", "qty": "1",
                                                 "status": "approved", "violations": []}))
    assert event is not None
    assert event.envelope() == {
        "event_id": 7, "message_type": "agent.trade.signal", "agent_id": "a1", "timestamp": "2026-11-30T01:02:03.456Z",
        "payload": {"proposal_id": "p1", "symbol": "AAPL", "side": "buy", "qty": "1", "notional": None,
                    "order_type": None, "limit_price": None, "stop_price": None, "time_in_force": None,
                    "strategy": None, "confidence": None, "status": "approved", "violations": [],
                    "estimated_notional": None, "reference_price": None}}


def test_reads_intents_and_registry_records_are_not_events() -> None:
    for kind in ("tool.intent", "tool.outcome", "order.intent", "agent.added", "agent.token_rotated",
                 "webhook.tested", "tool.denied"):
        assert to_event(record(kind, {"x": 1})) is None


def test_an_order_outcome_with_a_fill_is_executed_and_without_one_an_order_update() -> None:
    filled = to_event(record("order.outcome", {"proposal_id": "p1", "status": "filled", "filled_qty": "2",
                                               "filled_avg_price": "10", "broker_order_id": "b1"}))
    resting = to_event(record("order.outcome", {"proposal_id": "p1", "status": "new", "filled_qty": "0"}))
    canceled = to_event(record("order.cancel_outcome", {"order_id": "p1", "status": "canceled"}))
    assert filled is not None and filled.message_type == "agent.trade.executed"
    assert filled.payload["filled_qty"] == "2" and filled.payload["order_id"] == "p1"
    assert resting is not None and resting.message_type == "agent.order.updated"
    assert canceled is not None and (canceled.message_type, canceled.payload["status"]) == (
        "agent.order.updated", "canceled")


def test_a_reconciled_update_is_executed_only_when_the_filled_quantity_grew() -> None:
    grew = to_event(record("order.updated", {"order_id": "p1", "from": "new", "to": "partially_filled",
                                             "filled_qty_before": "0", "filled_qty": "1"}))
    same = to_event(record("order.updated", {"order_id": "p1", "from": "partially_filled", "to": "canceled",
                                             "filled_qty_before": "1", "filled_qty": "1"}))
    assert grew is not None and grew.message_type == "agent.trade.executed"
    assert same is not None and (same.message_type, same.payload["previous_status"]) == (
        "agent.order.updated", "partially_filled")


def test_a_breaker_trip_on_denials_alone_is_a_denial_storm() -> None:
    storm = to_event(record("trading_state.changed", {"scope": "a1", "state": "reducing", "reason": "r",
                                                      "triggers": ["denials"]}, actor="system:circuit-breaker"))
    loss = to_event(record("trading_state.changed", {"scope": "a1", "state": "halted", "reason": "r",
                                                     "triggers": ["daily_loss"]}, actor="system:circuit-breaker"))
    assert storm is not None and storm.payload["code"] == "DENIAL_STORM"
    assert loss is not None and (loss.payload["code"], loss.payload["severity"]) == ("CIRCUIT_BREAKER_TRIPPED",
                                                                                    "critical")


def test_drift_and_its_end_are_alerts() -> None:
    drift = to_event(record("reconcile.drift", {"drift": {"AAPL": {"ours": "1", "broker": "2"}}, "previous": {}},
                            actor="system:reconcile", agent_id=None))
    cleared = to_event(record("reconcile.drift", {"drift": {}, "previous": {"AAPL": {}}}, actor="system:reconcile",
                              agent_id=None))
    assert drift is not None and (drift.payload["code"], drift.payload["severity"]) == ("RECONCILIATION_DRIFT",
                                                                                      "critical")
    assert cleared is not None and cleared.payload["code"] == "RECONCILIATION_DRIFT_CLEARED"


def test_secrets_in_a_record_never_reach_the_event() -> None:
    event = to_event(record("risk.alert", {"severity": "warning", "code": "X", "message": f"saw {TOKEN}",
                                           "api_key": "PK1234567890ABCDEFGH", "token": TOKEN}))
    assert event is not None
    text = json.dumps(event.envelope())
    assert TOKEN not in text and "PK1234567890ABCDEFGH" not in text


def test_a_filter_by_type_and_agent() -> None:
    events = events_of([record("proposal.created", {"status": "approved"}, seq=1),
                        record("proposal.created", {"status": "approved"}, seq=2, agent_id="a2"),
                        record("position.updated", {"symbol": "AAPL"}, seq=3)])
    assert [e.event_id for e in events if EventFilter.of(["agent.trade.signal"]).matches(e)] == [1, 2]
    assert [e.event_id for e in events if EventFilter.of(["*"], "a1").matches(e)] == [1, 3]
    assert EventFilter.of(["agent.trade.nope"]).unknown_types() == ["agent.trade.nope"]


def test_a_webhook_body_is_signed_with_hmac_sha256_of_its_exact_bytes() -> None:
    event = Event(event_id=3, message_type="agent.risk.alert", agent_id=None, timestamp=TS,
                  payload={"severity": "critical", "code": "TRADING_HALTED", "message": "halted"})
    body = webhooks.body(event, "json")
    headers = webhooks.headers(event, b"s3cret", body)
    assert json.loads(body)["event_id"] == 3 and headers["X-Tradewarden-Event-Id"] == "3"
    assert webhooks.signature_valid(b"s3cret", body, headers["X-Tradewarden-Signature"])
    assert not webhooks.signature_valid(b"other", body, headers["X-Tradewarden-Signature"])


def test_slack_text_cannot_mention_or_link() -> None:
    event = Event(event_id=4, message_type="agent.trade.signal", agent_id="a1", timestamp=TS,
                  payload={"side": "buy", "symbol": "<!channel>", "qty": "1", "status": "approved"})
    text = json.loads(webhooks.body(event, "slack"))["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text


def test_retries_back_off_exponentially_up_to_the_cap() -> None:
    assert [webhooks.backoff(n, 300).total_seconds() for n in (1, 2, 3, 9, 10, 50)] == [1, 2, 4, 256, 300, 300]
    assert timedelta(hours=24) == webhooks.MAX_AGE
