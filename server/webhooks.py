"""Webhook delivery: a background task of every server, off the path of every tool call.

Per endpoint, the state is a row of `webhook_deliveries`: the audit sequence number up to which every event has
been delivered (or passed over as not wanted), the failed attempts at the next one, and a lease. Each replica's
dispatcher tries to take the lease (a conditional update); the holder sends, the others wait, and when the holder
dies its lease lapses (LEASE) and another replica resumes from the stored cursor. So a restart resumes where
delivery stood; events go out in order, one at a time, each once — a crash between a receiver's answer and the
cursor's update can send that one event again (never on purpose). A failure is retried with exponential backoff
until it succeeds or the event is 24 h old (then it is given up, counted, and the next one is sent).

A receiver that hangs or answers 500 only delays its own endpoint: trading never waits for this task, which
reads committed audit records and writes only its own row.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx2
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ledger.db import insert_if_absent, read, transaction
from ledger.models import WebhookDelivery
from policies import webhooks
from policies.event_log import events_after, head_seq
from policies.events import Event, EventFilter
from server.config import WebhookConfig
from tradewarden.log import get_logger

log = get_logger("tradewarden.webhooks")

POLL_SECONDS = 0.5
LEASE = timedelta(seconds=30)
POST_TIMEOUT = 10.0  # a receiver that does not answer in this long has failed this attempt
BATCH = 100


@dataclass(frozen=True)
class Endpoint:
    config: WebhookConfig
    secret: bytes

    @property
    def key(self) -> str:
        return self.config.key

    @property
    def only(self) -> EventFilter:
        return EventFilter.of(self.config.events)


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status: int | None
    error: str | None


async def post(client: httpx2.AsyncClient, endpoint: Endpoint, event: Event) -> Attempt:
    content = webhooks.body(event, endpoint.config.format)
    try:
        response = await client.post(endpoint.config.url, content=content,
                                     headers=webhooks.headers(event, endpoint.secret, content),
                                     timeout=POST_TIMEOUT)
    except Exception as error:  # refused, reset, timed out, bad TLS: a failed attempt, retried later
        return Attempt(False, None, f"{type(error).__name__}: {str(error)[:200]}")
    if 200 <= response.status_code < 300:
        return Attempt(True, response.status_code, None)
    return Attempt(False, response.status_code, f"HTTP {response.status_code}")


class WebhookDispatcher:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], endpoints: list[Endpoint],
                 clock: Callable[[], datetime], *, poll_seconds: float = POLL_SECONDS):
        self.sessions = sessions
        self.endpoints = endpoints
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.owner = f"{uuid.uuid4()}"
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with httpx2.AsyncClient(follow_redirects=False) as client:
            tasks = [asyncio.create_task(self._endpoint_loop(client, e), name=f"webhook-{e.key}")
                     for e in self.endpoints]
            try:
                await self._stop.wait()
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                with contextlib.suppress(Exception):
                    await self._release()

    async def _release(self) -> None:
        """At shutdown: give up this replica's leases, so another (or the next start) resumes at once."""
        async with transaction(self.sessions) as session:
            await session.execute(update(WebhookDelivery).where(WebhookDelivery.lease_owner == self.owner)
                                  .values(lease_owner=None, lease_until=None)
                                  .execution_options(synchronize_session=False))

    def stop(self) -> None:
        self._stop.set()

    async def _endpoint_loop(self, client: httpx2.AsyncClient, endpoint: Endpoint) -> None:
        while not self._stop.is_set():
            try:
                await self.step(client, endpoint)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database is away for a moment: next tick
                log.warning("webhook_step_failed", endpoint=endpoint.key, error=type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_seconds)

    async def _claim(self, endpoint: Endpoint) -> WebhookDelivery | None:
        """Take (or renew) the endpoint's lease; None when another replica holds it or a retry is not due."""
        now = self.clock()
        async with transaction(self.sessions) as session:
            row = await session.get(WebhookDelivery, endpoint.key, with_for_update=True)
            if row is None:  # a new endpoint starts at the head: it gets what happens from now on
                await insert_if_absent(session, WebhookDelivery, {
                    "endpoint": endpoint.key, "cursor": await head_seq(session), "attempts": 0, "delivered": 0,
                    "failures": 0, "dropped": 0, "updated_at": now})
                row = (await session.execute(select(WebhookDelivery).where(WebhookDelivery.endpoint == endpoint.key)
                                             .with_for_update())).scalar_one()
            held_by_other = (row.lease_owner not in (None, self.owner) and row.lease_until is not None
                             and row.lease_until > now)
            if held_by_other:
                return None
            row.lease_owner, row.lease_until = self.owner, now + LEASE
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                return None
            return row

    async def _save(self, endpoint: Endpoint, **values: Any) -> bool:
        """Write the endpoint's state, only while this replica still holds the lease."""
        now = self.clock()
        async with transaction(self.sessions) as session:
            result = await session.execute(
                update(WebhookDelivery).where(WebhookDelivery.endpoint == endpoint.key,
                                              WebhookDelivery.lease_owner == self.owner)
                .values(**values, lease_until=now + LEASE, updated_at=now)
                .execution_options(synchronize_session=False))
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def step(self, client: httpx2.AsyncClient, endpoint: Endpoint) -> int:
        """Send what is due to one endpoint, in order, until it is caught up or an attempt fails. Returns how many
        events were delivered."""
        state = await self._claim(endpoint)
        if state is None:
            return 0
        cursor, attempts = state.cursor, state.attempts
        delivered, failures, dropped = state.delivered, state.failures, state.dropped
        sent = 0
        while not self._stop.is_set():
            async with read(self.sessions) as connection:
                events, read_to = await events_after(connection, cursor, limit=BATCH, only=endpoint.only)
            if not events:
                if read_to != cursor:
                    await self._save(endpoint, cursor=read_to)
                return sent
            for event in events:
                now = self.clock()
                if now - event.timestamp > webhooks.MAX_AGE:
                    dropped += 1
                    log.warning("webhook_event_given_up", endpoint=endpoint.key, event_id=event.event_id)
                    cursor, attempts = event.event_id, 0
                    if not await self._save(endpoint, cursor=cursor, attempts=0, next_attempt_at=None,
                                            dropped=dropped):
                        return sent
                    continue
                attempt = await post(client, endpoint, event)
                if not attempt.ok:
                    attempts, failures = attempts + 1, failures + 1
                    wait = webhooks.backoff(attempts, endpoint.config.max_backoff_seconds)
                    log.warning("webhook_delivery_failed", endpoint=endpoint.key, event_id=event.event_id,
                                attempts=attempts, error=attempt.error, retry_in=wait.total_seconds())
                    await self._save(endpoint, cursor=event.event_id - 1, attempts=attempts, failures=failures,
                                     next_attempt_at=self.clock() + wait, last_error=attempt.error)
                    return sent
                cursor, attempts, delivered, sent = event.event_id, 0, delivered + 1, sent + 1
                if not await self._save(endpoint, cursor=cursor, attempts=0, delivered=delivered,
                                        next_attempt_at=None, last_error=None):
                    return sent  # the lease went to another replica meanwhile: it resumes from the stored cursor
            if read_to > cursor:
                cursor = read_to
                await self._save(endpoint, cursor=cursor)
        return sent


async def delivery_states(sessions: async_sessionmaker[AsyncSession]) -> dict[str, WebhookDelivery]:
    async with sessions() as session:
        return {row.endpoint: row for row in (await session.execute(select(WebhookDelivery))).scalars()}


def endpoints_of(hooks: list[WebhookConfig], secrets: dict[str, bytes]) -> list[Endpoint]:
    return [Endpoint(config=hook, secret=secrets[hook.key]) for hook in hooks]


async def send_test(endpoint: Endpoint, event: Event) -> Attempt:
    """One signed POST of `event` now, outside the delivery order (tradewarden webhooks test)."""
    async with httpx2.AsyncClient(follow_redirects=False) as client:
        return await post(client, endpoint, event)
