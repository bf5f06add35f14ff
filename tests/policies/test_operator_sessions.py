"""Console sessions (policies/operator_sessions.py) on a real database: a login with an operator's token gives a
session id whose hash alone is stored; the session ends at logout, at expiry, and when the operator is disabled
or their token rotated; an agent's token opens none; the CSRF token is bound to the session."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger import db
from ledger.db import transaction
from ledger.models import AuditEvent, OperatorSession
from policies import operator_sessions
from policies.agents import add_agent, hash_token
from policies.operator_registry import add_operator, disable_operator, rotate_operator_token
from policies.operators import CLI_OPERATOR, OperatorIdentity, Role
from tests.conftest import agent

NOW = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.create_engine(database_url)
    await db.upgrade(engine)
    try:
        yield db.session_factory(engine)
    finally:
        await engine.dispose()


async def operator(sessions: async_sessionmaker[AsyncSession], name: str = "ann") -> str:
    async with transaction(sessions) as session:
        return await add_operator(session, name, "approver", by=CLI_OPERATOR, now=NOW)


async def login(sessions: async_sessionmaker[AsyncSession], token: str, now: datetime = NOW) -> str | None:
    async with transaction(sessions) as session:
        made = await operator_sessions.login(session, token, now=now)
    return made[0] if made else None


async def resolve(sessions: async_sessionmaker[AsyncSession], session_id: str,
                  now: datetime = NOW) -> OperatorIdentity | None:
    async with sessions() as session:
        return await operator_sessions.resolve(session, session_id, now=now)


async def test_a_login_stores_only_the_hash_of_the_session_id(sessions: async_sessionmaker[AsyncSession]) -> None:
    session_id = await login(sessions, await operator(sessions))
    assert session_id is not None
    assert await resolve(sessions, session_id) == OperatorIdentity("ann", Role.APPROVER)
    async with sessions() as session:
        [row] = (await session.execute(select(OperatorSession))).scalars()
        logins = list((await session.execute(select(AuditEvent).where(AuditEvent.kind == "operator.login")))
                      .scalars())
    assert row.id_hash == hash_token(session_id) and session_id not in row.id_hash
    assert [(e.actor, json.loads(e.payload)["via"]) for e in logins] == [("operator:ann", "console")]
    assert session_id not in logins[0].payload


async def test_an_agents_token_or_a_wrong_one_opens_no_session(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with transaction(sessions) as session:
        agent_token = await add_agent(session, agent("bot"), max_agents=10, actor="operator:cli", now=NOW)
    assert await login(sessions, agent_token) is None
    assert await login(sessions, "twop_" + "x" * 43) is None
    assert await login(sessions, "") is None


async def test_a_session_ends_at_logout(sessions: async_sessionmaker[AsyncSession]) -> None:
    session_id = await login(sessions, await operator(sessions))
    assert session_id is not None
    async with transaction(sessions) as session:
        assert await operator_sessions.logout(session, session_id, now=NOW) is True
    assert await resolve(sessions, session_id) is None


async def test_a_session_ends_at_its_expiry(sessions: async_sessionmaker[AsyncSession]) -> None:
    session_id = await login(sessions, await operator(sessions))
    assert session_id is not None
    assert await resolve(sessions, session_id, NOW + operator_sessions.SESSION_TTL - timedelta(seconds=1))
    assert await resolve(sessions, session_id, NOW + operator_sessions.SESSION_TTL) is None


async def test_a_token_rotation_or_a_disable_ends_every_session(sessions: async_sessionmaker[AsyncSession]) -> None:
    rotated = await login(sessions, await operator(sessions, "ann"))
    disabled = await login(sessions, await operator(sessions, "bob"))
    assert rotated is not None and disabled is not None
    async with transaction(sessions) as session:
        await rotate_operator_token(session, "ann", by=CLI_OPERATOR, now=NOW + timedelta(seconds=1))
        await disable_operator(session, "bob", by=CLI_OPERATOR, now=NOW)
    assert await resolve(sessions, rotated) is None
    assert await resolve(sessions, disabled) is None


async def test_the_csrf_token_belongs_to_its_session_only() -> None:
    first, second = operator_sessions.new_session_id(), operator_sessions.new_session_id()
    token = operator_sessions.csrf_token(first)
    assert operator_sessions.csrf_matches(first, token)
    assert not operator_sessions.csrf_matches(second, token)
    assert not operator_sessions.csrf_matches(first, None) and not operator_sessions.csrf_matches(first, "")
    assert first not in token
