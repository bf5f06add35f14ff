"""The operator registry (policies/operator_registry.py): people, their roles and tokens, on a real database.
`authenticate` is the one door every operator surface uses: it lets in an enabled operator's own token only."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger import db
from ledger.db import transaction
from ledger.models import AuditEvent, OperatorRecord
from policies.agents import add_agent, hash_token
from policies.operator_registry import (
    OPERATOR_TOKEN_PREFIX,
    add_operator,
    authenticate,
    disable_operator,
    list_operators,
    rotate_operator_token,
)
from policies.operators import CLI_OPERATOR, OperatorError, OperatorForbidden, OperatorIdentity, Role
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


async def add(sessions: async_sessionmaker[AsyncSession], name: str, role: str = "approver",
              by: OperatorIdentity = CLI_OPERATOR) -> str:
    async with transaction(sessions) as session:
        return await add_operator(session, name, role, by=by, now=NOW)


async def who(sessions: async_sessionmaker[AsyncSession], token: str) -> OperatorIdentity | None:
    async with sessions() as session:
        return await authenticate(session, token)


async def test_an_added_operator_authenticates_with_its_role(sessions: async_sessionmaker[AsyncSession]) -> None:
    token = await add(sessions, "ann", "approver")
    assert token.startswith(OPERATOR_TOKEN_PREFIX)
    assert await who(sessions, token) == OperatorIdentity("ann", Role.APPROVER)


async def test_only_the_tokens_hash_is_stored(sessions: async_sessionmaker[AsyncSession]) -> None:
    token = await add(sessions, "ann")
    async with sessions() as session:
        row = await session.get(OperatorRecord, "ann")
        records = [e.payload for e in (await session.execute(select(AuditEvent))).scalars()]
    assert row is not None and row.token_hash == hash_token(token)
    assert all(token not in payload for payload in records)


async def test_an_agents_token_never_authenticates_as_an_operator(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with transaction(sessions) as session:
        agent_token = await add_agent(session, agent("bot"), max_agents=5, actor="operator:cli", now=NOW)
    await add(sessions, "ann", "admin")
    assert await who(sessions, agent_token) is None
    # Even an operator row forged to carry the agent's token hash does not let the agent's token in.
    async with transaction(sessions) as session:
        session.add(OperatorRecord(name="forged", role="admin", token_hash=hash_token(agent_token), enabled=True,
                                   created_at=NOW, updated_at=NOW))
    assert await who(sessions, agent_token) is None
    assert await who(sessions, OPERATOR_TOKEN_PREFIX + agent_token) is None


@pytest.mark.parametrize("token", ["", "twop_", "twop_not-a-real-token", "Bearer twop_x", "x" * 10_000])
async def test_unknown_or_malformed_tokens_do_not_authenticate(sessions: async_sessionmaker[AsyncSession],
                                                              token: str) -> None:
    await add(sessions, "ann")
    assert await who(sessions, token) is None


async def test_a_disabled_operator_no_longer_authenticates(sessions: async_sessionmaker[AsyncSession]) -> None:
    token = await add(sessions, "ann")
    async with transaction(sessions) as session:
        await disable_operator(session, "ann", by=CLI_OPERATOR, now=NOW)
    assert await who(sessions, token) is None
    async with sessions() as session:
        [listed] = await list_operators(session, by=CLI_OPERATOR)
    assert (listed.name, listed.enabled) == ("ann", False)


async def test_rotating_a_token_stops_the_old_one_at_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    old = await add(sessions, "ann", "viewer")
    async with transaction(sessions) as session:
        new = await rotate_operator_token(session, "ann", by=CLI_OPERATOR, now=NOW)
    assert new != old
    assert await who(sessions, old) is None
    assert await who(sessions, new) == OperatorIdentity("ann", Role.VIEWER)


async def test_a_row_with_an_unknown_role_does_not_authenticate(sessions: async_sessionmaker[AsyncSession]) -> None:
    token = await add(sessions, "ann")
    async with transaction(sessions) as session:
        await session.execute(update(OperatorRecord).where(OperatorRecord.name == "ann").values(role="root"))
    assert await who(sessions, token) is None


async def test_every_registry_change_is_audited_with_the_acting_operator(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    await add(sessions, "ann")
    admin = OperatorIdentity("root", Role.ADMIN)
    async with transaction(sessions) as session:
        await rotate_operator_token(session, "ann", by=admin, now=NOW)
        await disable_operator(session, "ann", by=CLI_OPERATOR, now=NOW)
    async with sessions() as session:
        events = (await session.execute(select(AuditEvent).where(AuditEvent.kind.startswith("operator."))
                                        .order_by(AuditEvent.seq))).scalars()
        records = [(e.kind, e.actor, json.loads(e.payload)) for e in events]
    assert records == [("operator.added", "operator:cli", {"operator": "ann", "role": "approver"}),
                       ("operator.token_rotated", "operator:root", {"operator": "ann"}),
                       ("operator.disabled", "operator:cli", {"operator": "ann"})]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.APPROVER])
async def test_only_an_admin_manages_operators(sessions: async_sessionmaker[AsyncSession], role: Role) -> None:
    await add(sessions, "ann")
    actor = OperatorIdentity("someone", role)
    with pytest.raises(OperatorForbidden, match="may not manage_operators"):
        await add(sessions, "eve", "admin", by=actor)
    async with transaction(sessions) as session:
        with pytest.raises(OperatorForbidden):
            await rotate_operator_token(session, "ann", by=actor, now=NOW)
        with pytest.raises(OperatorForbidden):
            await disable_operator(session, "ann", by=actor, now=NOW)
        assert [o.name for o in await list_operators(session, by=actor)] == ["ann"]  # reading is for everyone


@pytest.mark.parametrize(("name", "reason"), [("cli", "reserved"), ("Bad Name", "must be"), ("", "must be"),
                                              ("x" * 65, "must be"), ("ann\x1b[2K", "must be")])
async def test_invalid_or_reserved_names_are_refused(sessions: async_sessionmaker[AsyncSession], name: str,
                                                     reason: str) -> None:
    with pytest.raises(OperatorError, match=f"^INVALID_ARGUMENT: .*{reason}"):
        await add(sessions, name)


async def test_a_name_is_taken_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    await add(sessions, "ann")
    with pytest.raises(OperatorError, match="already exists"):
        await add(sessions, "ann", "admin")


async def test_an_unknown_role_is_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(OperatorError, match=r"^INVALID_ARGUMENT: role must be one of viewer, approver, admin"):
        await add(sessions, "ann", "superuser")


async def test_an_operators_token_is_not_an_agents(sessions: async_sessionmaker[AsyncSession]) -> None:
    from policies.agents import agent_for_token

    token = await add(sessions, "ann", "admin")
    async with sessions() as session:
        assert await agent_for_token(session, token) is None
