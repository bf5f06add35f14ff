"""Console sessions: an operator logs in once with their bearer token and then holds a session id.

The browser holds only a random id (in an HttpOnly cookie); the database only its sha256, so a copy of the
table opens no session. Every request re-checks the operator behind a session: a session ends at logout, at its
expiry, when its operator is disabled, and when its operator's token is rotated (the rotation it was made under
is stored with it). The CSRF token of a session is an HMAC of its id: it is never stored, and only someone who
holds the id (the cookie, which scripts cannot read) can compute it. Logins and logouts are audited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.models import OperatorRecord, OperatorSession
from policies import audit
from policies.agents import hash_token
from policies.operator_registry import authenticate
from policies.operators import OperatorIdentity, Role

SESSION_TTL = timedelta(hours=12)
MAX_SESSION_ID_LENGTH = 128  # longer is not an id of ours; refused before hashing


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(session_id: str) -> str:
    """The CSRF token of a session (derived from its id, so it needs no storage)."""
    return hmac.new(session_id.encode(), b"tradewarden-console-csrf", hashlib.sha256).hexdigest()


def csrf_matches(session_id: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(csrf_token(session_id), str(given))


async def login(session: AsyncSession, token: str, *, now: datetime) -> tuple[str, OperatorIdentity] | None:
    """A new session for the operator whose token this is (None for anything else, an agent's token included).
    Returns the session id to give the browser (once; only its hash is kept)."""
    identity = await authenticate(session, token)
    if identity is None:
        return None
    record = await session.get(OperatorRecord, identity.name)
    assert record is not None
    await session.execute(delete(OperatorSession).where(OperatorSession.expires_at <= now))
    session_id = new_session_id()
    session.add(OperatorSession(id_hash=hash_token(session_id), operator=identity.name,
                                token_rotated_at=record.token_rotated_at, created_at=now,
                                expires_at=now + SESSION_TTL))
    await audit.append(session, ts=now, actor=identity.actor, kind="operator.login",
                       payload={"operator": identity.name, "via": "console"})
    return session_id, identity


async def resolve(session: AsyncSession, session_id: str, *, now: datetime) -> OperatorIdentity | None:
    """The operator a session id belongs to, or None: unknown, expired, logged out, its operator disabled or
    removed, or their token rotated since the login."""
    if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
        return None
    row = await session.get(OperatorSession, hash_token(session_id))
    if row is None or row.expires_at <= now:
        return None
    record = await session.get(OperatorRecord, row.operator)
    if record is None or not record.enabled or record.token_rotated_at != row.token_rotated_at:
        return None
    try:
        return OperatorIdentity(name=record.name, role=Role(record.role))
    except ValueError:
        return None


async def logout(session: AsyncSession, session_id: str, *, now: datetime) -> bool:
    """End a session (True if there was one)."""
    if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
        return False
    row = await session.get(OperatorSession, hash_token(session_id))
    if row is None:
        return False
    await session.delete(row)
    await audit.append(session, ts=now, actor=f"operator:{row.operator}", kind="operator.logout",
                       payload={"operator": row.operator, "via": "console"})
    return True
