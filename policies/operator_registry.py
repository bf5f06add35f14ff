"""Operator registry: the people who operate a deployment, their roles and bearer tokens.

Tokens are stored hashed exactly like agents' (policies/agents.py) and shown once, when created or rotated.
Operator tokens carry their own prefix, and `authenticate` refuses anything that is an agent's credential, so
an agent's token never passes where an operator's is required, whatever the tables hold.

`authenticate` is the one entry point every operator surface (operator API, console, event stream) uses to
turn a presented token into an OperatorIdentity; the role checks then happen in policies.operators.
Every change to the registry is audited with the acting operator as the actor.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.db import REGISTRY_LOCK, advisory_lock
from ledger.models import AgentPermissions, OperatorRecord
from policies import audit
from policies.agents import TOKEN_PREFIX as AGENT_TOKEN_PREFIX
from policies.agents import hash_token, tokens_match
from policies.operators import CLI_OPERATOR, Action, OperatorError, OperatorIdentity, Role, require

OPERATOR_TOKEN_PREFIX = "twop_"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Names that already mean something in the audit log's `operator:NAME` actors.
RESERVED_NAMES = frozenset({CLI_OPERATOR.name, "system"})
MAX_TOKEN_LENGTH = 256  # longer is not a token of ours; refused before hashing


@dataclass(frozen=True)
class OperatorView:
    """An operator as listed: never the token or its hash."""

    name: str
    role: Role
    enabled: bool
    created_at: datetime
    updated_at: datetime
    token_rotated_at: datetime | None


def new_operator_token() -> str:
    return OPERATOR_TOKEN_PREFIX + secrets.token_urlsafe(32)


def _valid_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise OperatorError(f"INVALID_ARGUMENT: operator name {name[:80]!r} must be 1-64 characters of a-z, 0-9, "
                            "'.', '_' or '-', starting with a letter or digit")
    if name in RESERVED_NAMES:
        raise OperatorError(f"INVALID_ARGUMENT: operator name {name!r} is reserved")
    return name


async def _record(session: AsyncSession, by: OperatorIdentity, kind: str, name: str, now: datetime,
                  **details: object) -> None:
    await audit.append(session, ts=now, actor=by.actor, kind=kind, payload={"operator": name, **details})


async def _row(session: AsyncSession, name: str) -> OperatorRecord:
    row = await session.get(OperatorRecord, name)
    if row is None:
        raise OperatorError(f"no operator {name!r}")
    return row


async def add_operator(session: AsyncSession, name: str, role: Role | str, *, by: OperatorIdentity,
                       now: datetime) -> str:
    """Create an operator; returns its bearer token (shown once, stored only as a hash)."""
    require(by, Action.MANAGE_OPERATORS)
    name = _valid_name(name)
    try:
        role = Role(role)
    except ValueError:
        raise OperatorError(f"INVALID_ARGUMENT: role must be one of {', '.join(r.value for r in Role)}") from None
    await advisory_lock(session, REGISTRY_LOCK)
    if await session.get(OperatorRecord, name) is not None:
        raise OperatorError(f"operator {name!r} already exists")
    token = new_operator_token()
    session.add(OperatorRecord(name=name, role=role.value, token_hash=hash_token(token), enabled=True,
                               created_at=now, updated_at=now, token_rotated_at=now))
    await _record(session, by, "operator.added", name, now, role=role.value)
    return token


async def list_operators(session: AsyncSession, *, by: OperatorIdentity) -> list[OperatorView]:
    require(by, Action.READ)
    rows = (await session.execute(select(OperatorRecord).order_by(OperatorRecord.name))).scalars()
    return [OperatorView(name=r.name, role=Role(r.role), enabled=r.enabled, created_at=r.created_at,
                         updated_at=r.updated_at, token_rotated_at=r.token_rotated_at) for r in rows]


async def disable_operator(session: AsyncSession, name: str, *, by: OperatorIdentity, now: datetime) -> None:
    """The operator's token stops working at once (every request authenticates against the database)."""
    require(by, Action.MANAGE_OPERATORS)
    row = await _row(session, name)
    if not row.enabled:
        raise OperatorError(f"operator {name!r} is already disabled")
    row.enabled, row.updated_at = False, now
    await _record(session, by, "operator.disabled", name, now)


async def rotate_operator_token(session: AsyncSession, name: str, *, by: OperatorIdentity, now: datetime) -> str:
    """Replace the operator's token (the old one stops working at once); returns the new one."""
    require(by, Action.MANAGE_OPERATORS)
    row = await _row(session, name)
    token = new_operator_token()
    row.token_hash, row.token_rotated_at, row.updated_at = hash_token(token), now, now
    await _record(session, by, "operator.token_rotated", name, now)
    return token


async def authenticate(session: AsyncSession, token: str) -> OperatorIdentity | None:
    """The operator a bearer token belongs to, or None: unknown, disabled, malformed, or an agent's token.
    The one way any operator surface turns a credential into an identity."""
    if (not token or len(token) > MAX_TOKEN_LENGTH or not token.startswith(OPERATOR_TOKEN_PREFIX)
            or token.startswith(AGENT_TOKEN_PREFIX)):
        return None
    token_hash = hash_token(token)
    # Defence in depth: a credential an agent holds is never an operator's, even if a row was forged to match.
    agent = (await session.execute(select(AgentPermissions.agent_id)
                                   .where(AgentPermissions.token_hash == token_hash))).first()
    if agent is not None:
        return None
    row = (await session.execute(select(OperatorRecord).where(OperatorRecord.token_hash == token_hash))
           ).scalar_one_or_none()
    if row is None or not row.enabled or not tokens_match(token, row.token_hash):
        return None
    try:
        role = Role(row.role)
    except ValueError:  # a row written behind the registry's back with a role that does not exist
        return None
    return OperatorIdentity(name=row.name, role=role)
