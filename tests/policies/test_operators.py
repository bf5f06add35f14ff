"""Operator roles: what each role may do is decided in one place."""

from __future__ import annotations

import pytest

from policies.operators import CLI_OPERATOR, Action, OperatorForbidden, OperatorIdentity, Role, require


def test_a_viewer_may_only_read() -> None:
    viewer = OperatorIdentity("vera", Role.VIEWER)
    assert [a for a in Action if viewer.may(a)] == [Action.READ]


def test_an_approver_may_decide_cancel_and_halt_but_not_resume_or_manage() -> None:
    approver = OperatorIdentity("ann", Role.APPROVER)
    assert {a for a in Action if approver.may(a)} == {Action.READ, Action.DECIDE_APPROVAL, Action.CANCEL_ORDER,
                                                        Action.HALT}


def test_an_admin_may_do_everything() -> None:
    assert all(OperatorIdentity("root", Role.ADMIN).may(a) for a in Action)


def test_require_refuses_with_a_one_line_forbidden_reason() -> None:
    with pytest.raises(OperatorForbidden) as refused:
        require(OperatorIdentity("vera", Role.VIEWER), Action.DECIDE_APPROVAL)
    assert str(refused.value).startswith("FORBIDDEN: operator 'vera' (viewer) may not decide_approval")
    assert "\n" not in str(refused.value)


def test_the_command_line_is_audited_as_operator_cli() -> None:
    assert CLI_OPERATOR.actor == "operator:cli"
