"""Who an operator is and what each role may do: the one place operator permissions are decided.

Operators are people, with credentials of their own (separate from agents'). Three roles, each a superset of
the one before: `viewer` reads everything; `approver` also approves and rejects proposals, cancels orders and
halts; `admin` also resumes trading and manages agents, their limits, operators and webhooks.

Every operator surface (command line, operator API, console) acts through `policies.operator.Operator`, which
calls `require` before each action; no surface checks roles itself, and no MCP tool reaches this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    APPROVER = "approver"
    ADMIN = "admin"


class Action(StrEnum):
    """What an operator can do, by the least role allowed to do it (see ROLE_ACTIONS)."""

    READ = "read"  # status, agents, positions, orders, approvals, audit, events, performance
    DECIDE_APPROVAL = "decide_approval"  # approve (possibly shrinking the order) or reject a proposal
    CANCEL_ORDER = "cancel_order"
    HALT = "halt"  # halt everyone or one agent; the kill switch
    RESUME = "resume"  # lift a halt or a reduce-only state
    MANAGE_AGENTS = "manage_agents"  # add, enable, disable, remove, set limits, rotate tokens
    MANAGE_OPERATORS = "manage_operators"
    MANAGE_WEBHOOKS = "manage_webhooks"


_VIEWER = frozenset({Action.READ})
_APPROVER = _VIEWER | {Action.DECIDE_APPROVAL, Action.CANCEL_ORDER, Action.HALT}
_ADMIN = _APPROVER | {Action.RESUME, Action.MANAGE_AGENTS, Action.MANAGE_OPERATORS, Action.MANAGE_WEBHOOKS}

ROLE_ACTIONS: dict[Role, frozenset[Action]] = {Role.VIEWER: _VIEWER, Role.APPROVER: _APPROVER, Role.ADMIN: _ADMIN}


class OperatorError(Exception):
    """An operator action cannot be done; the message is one line, safe to print."""


class OperatorForbidden(OperatorError):
    """The operator's role does not allow the action; the message is one line, safe to show."""


@dataclass(frozen=True)
class OperatorIdentity:
    """An authenticated person (or the command line, run by the OS user who owns the deployment)."""

    name: str
    role: Role

    @property
    def actor(self) -> str:
        """How audit records name this operator."""
        return f"operator:{self.name}"

    def may(self, action: Action) -> bool:
        return action in ROLE_ACTIONS[self.role]


# The command line acts with the rights of whoever can run it against the deployment's config and database
# (the OS user who owns them; see docs/SECURITY.md), audited as `operator:cli`.
CLI_OPERATOR = OperatorIdentity(name="cli", role=Role.ADMIN)


def require(identity: OperatorIdentity, action: Action) -> None:
    """Raise OperatorForbidden unless the operator's role allows the action."""
    if not identity.may(action):
        raise OperatorForbidden(f"FORBIDDEN: operator {identity.name!r} ({identity.role}) may not {action.value}; "
                                f"ask an operator with a role that may")
