"""Agent registry: agents from the config file, agents added by operators, and their bearer tokens.

Only a hash of each token is stored; the token itself is shown once, when created or rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ledger.db import REGISTRY_LOCK, advisory_lock, execute
from ledger.models import AgentPermissions
from policies import audit
from policies.agent_settings import COLUMN_SETTINGS, sync_from_file
from policies.limits import OPTIONAL_LIMITS

TOKEN_PREFIX = "tw_"


class RegistryError(Exception):
    """An operator request on the registry that cannot be done; the message is one line."""


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_match(token: str, stored_hash: str | None) -> bool:
    return stored_hash is not None and hmac.compare_digest(hash_token(token), stored_hash)


def _limits_json(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in overrides.items()}


def permissions_from_config(agent: Any, now: datetime) -> dict[str, Any]:
    return {
        "max_trade_size": agent.max_trade_size, "max_position_size": agent.max_position_size,
        "max_daily_trades": agent.max_daily_trades, "allowed_symbols": list(agent.allowed_symbols),
        "allowed_strategies": list(agent.allowed_strategies), "risk_level": agent.risk_level,
        "approval": agent.approval or "", "auto_approve_max_notional": agent.auto_approve_max_notional
        if agent.auto_approve_max_notional is not None else Decimal(-1),
        "limits": _limits_json(agent.limit_overrides()), "capital": agent.capital, "enabled": agent.enabled,
        "updated_at": now,
    }


_PERMISSIONS: Table = AgentPermissions.__table__  # type: ignore[assignment]
# Core statements, not the ORM session: a server's start runs this before its first answer, and the ORM's
# mapper configuration and statement compilation cost more CPU than the rows (tests/server/test_startup.py).
_CONFIG_AGENT_ROWS = select(_PERMISSIONS).where(_PERMISSIONS.c.agent_id.in_(bindparam("ids", expanding=True)))
_ADD_CONFIG_AGENT = insert(_PERMISSIONS)


async def _stored_config_agents(connection: AsyncSession | AsyncConnection, agents: list[Any]
                                ) -> dict[str, SimpleNamespace]:
    return {row.agent_id: SimpleNamespace(**row._mapping)
            for row in await execute(connection, _CONFIG_AGENT_ROWS, {"ids": [agent.id for agent in agents]})}


async def config_agents_in_line(connection: AsyncSession | AsyncConnection, agents: Iterable[Any]) -> bool:
    """Whether sync_config_agents would change nothing: every agent of the config file has its row, and the row
    already follows the file. A read (the usual restart then needs no write unit at all)."""
    agents = list(agents)
    if not agents:
        return True
    stored = await _stored_config_agents(connection, agents)
    return all(agent.id in stored and not sync_from_file(stored[agent.id], agent) for agent in agents)


async def sync_config_agents(session: AsyncSession, agents: Iterable[Any], now: datetime) -> list[str]:
    """The config file sets the agents it names: their rows follow it at every start, except for the
    fields an operator set (policies/agent_settings.py: an operator's action is never undone by a sync).
    Tokens and agents added from the command line are left alone."""
    agents = list(agents)
    if not agents:
        return []
    stored = await _stored_config_agents(session, agents)
    changed: list[str] = []
    for agent in agents:
        row = stored.get(agent.id)
        if row is None:
            await execute(session, _ADD_CONFIG_AGENT,
                          {"agent_id": agent.id, "source": "config", "created_at": now, "operator_overrides": {},
                           "token_hash": None, "token_rotated_at": None, **permissions_from_config(agent, now)})
            changed.append(agent.id)
            continue
        fields = sync_from_file(row, agent)
        if fields:
            values = {name: getattr(row, name) for name in fields if name in COLUMN_SETTINGS}
            if any(name in OPTIONAL_LIMITS for name in fields):
                values["limits"] = row.limits
            values["updated_at"] = now
            await execute(session, update(_PERMISSIONS).where(_PERMISSIONS.c.agent_id == agent.id).values(values))
            changed.append(agent.id)
    if changed:
        await audit.append(session, ts=now, actor="system:config", kind="agents.synced",
                           payload={"agents": changed})
    return changed


async def add_agent(session: AsyncSession, agent_config: Any, *, max_agents: int, actor: str,
                    now: datetime) -> str:
    # Count and insert alone (across replicas and commands), or two registrations could both fit under the max.
    await advisory_lock(session, REGISTRY_LOCK)
    if await session.get(AgentPermissions, agent_config.id) is not None:
        raise RegistryError(f"agent {agent_config.id!r} already exists")
    count = (await session.execute(select(func.count()).select_from(AgentPermissions))).scalar_one()
    if count >= max_agents:
        raise RegistryError(f"max_agents_per_account is {max_agents}: {count} agents exist already")
    token = new_token()
    session.add(AgentPermissions(agent_id=agent_config.id, source="cli", created_at=now,
                                 token_hash=hash_token(token), token_rotated_at=now,
                                 **permissions_from_config(agent_config, now)))
    await audit.append(session, ts=now, actor=actor, kind="agent.added", agent_id=agent_config.id,
                       payload={"agent_id": agent_config.id})
    return token


async def rotate_token(session: AsyncSession, agent_id: str, *, actor: str, now: datetime) -> str:
    row = await session.get(AgentPermissions, agent_id)
    if row is None:
        raise RegistryError(f"no agent {agent_id!r}")
    token = new_token()
    row.token_hash, row.token_rotated_at, row.updated_at = hash_token(token), now, now
    await audit.append(session, ts=now, actor=actor, kind="agent.token_rotated", agent_id=agent_id,
                       payload={"agent_id": agent_id})
    return token


async def agent_for_token(session: AsyncSession, token: str) -> AgentPermissions | None:
    row = (await session.execute(select(AgentPermissions).where(AgentPermissions.token_hash == hash_token(token)))
           ).scalar_one_or_none()
    return row
