"""Approval rules (policies/approval.py): who must say yes, per mode, in paper and in live."""

from __future__ import annotations

from decimal import Decimal

import pytest

from policies.approval import ApprovalPolicy, approval_for, default_policy


def test_live_defaults_to_a_person_in_the_client_and_no_auto_approval() -> None:
    policy = default_policy(None, None, live=True)
    assert policy == ApprovalPolicy(mode="elicit", auto_approve_max_notional=Decimal(0))
    assert approval_for(policy, Decimal("0.01")) == "pending_approval"


def test_paper_defaults_to_auto_up_to_1000() -> None:
    policy = default_policy(None, None, live=False)
    assert policy == ApprovalPolicy(mode="auto", auto_approve_max_notional=Decimal(1000))
    assert approval_for(policy, Decimal(1000)) == "approved"
    assert approval_for(policy, Decimal("1000.01")) == "pending_approval"


def test_auto_in_live_only_when_asked_for_and_even_then_no_ceiling_unless_given() -> None:
    assert approval_for(default_policy("auto", None, live=True), Decimal(1)) == "pending_approval"
    asked = default_policy("auto", Decimal(500), live=True)
    assert approval_for(asked, Decimal(500)) == "approved"
    assert approval_for(asked, Decimal(501)) == "pending_approval"


@pytest.mark.parametrize("mode", ["elicit", "operator"])
@pytest.mark.parametrize("live", [False, True])
def test_elicit_and_operator_always_need_a_person(mode: str, live: bool) -> None:
    policy = default_policy(mode, Decimal(1_000_000), live=live)
    assert approval_for(policy, Decimal(1)) == "pending_approval"


def test_an_unpriced_order_is_never_auto_approved() -> None:
    assert approval_for(default_policy("auto", Decimal(1_000_000), live=False), None) == "pending_approval"
