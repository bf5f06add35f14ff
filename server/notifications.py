"""Resource-updated notifications for `proposals://{id}` when a proposal changes state.

Changes made by this process (the gate calls its proposal listeners) are published at once: on the SDK's
subscriptions bus, which serves 2026-07-28 clients' `subscriptions/listen` streams, and to 2025 clients that
called `resources/subscribe` for that proposal. Changes made by other processes (`tradewarden approvals
approve` on the command line, another replica) are found by a light poll of the live proposals (pending or
approved), run only while someone is listening.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated, ServerEvent, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    EmptyResult,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    UnsubscribeRequestParams,
)

from policies.violations import GateDenied
from tools.approval import PROPOSAL_URI, proposal_uri
from tradewarden.log import get_logger

if TYPE_CHECKING:
    from policies.gate import Gate

log = get_logger("tradewarden.notifications")

POLL_SECONDS = 1.0
LIVE_PROPOSAL_STATES = ("pending_approval", "approved")
MAX_LEGACY_SUBSCRIPTIONS = 1000


class ListenedBus(InMemorySubscriptionBus):
    """The SDK's in-process bus, counting its listeners (open listen streams) so polling runs only when
    somebody would hear the result."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners = 0

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        unsubscribe = super().subscribe(listener)
        self.listeners += 1
        done = False

        def counted_unsubscribe() -> None:
            nonlocal done
            if not done:
                done = True
                self.listeners -= 1
            unsubscribe()

        return counted_unsubscribe


class LegacySubscriptions:
    """`resources/subscribe` for 2025 clients (the 2026-07-28 wire uses `subscriptions/listen` instead): the
    sessions that asked about each proposal, notified on its standalone channel. A session that can no
    longer be reached is dropped; the table is bounded (oldest subscriptions go first)."""

    def __init__(self) -> None:
        self.sessions: dict[str, list[ServerSession]] = {}

    async def subscribe(self, ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        await _own_proposal(ctx, uri)
        sessions = self.sessions.pop(uri, [])
        sessions = [s for s in sessions if not _same_connection(s, ctx.session)] + [ctx.session]
        self.sessions[uri] = sessions  # (re)inserted last: the dict's order is the age of subscriptions
        while len(self.sessions) > MAX_LEGACY_SUBSCRIPTIONS:
            self.sessions.pop(next(iter(self.sessions)))
        return EmptyResult()

    async def unsubscribe(self, ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        remaining = [s for s in self.sessions.get(uri, []) if not _same_connection(s, ctx.session)]
        if remaining:
            self.sessions[uri] = remaining
        else:
            self.sessions.pop(uri, None)
        return EmptyResult()

    async def notify(self, uri: str) -> None:
        for session in list(self.sessions.get(uri, [])):
            try:
                await session.send_resource_updated(uri)
            except Exception:  # the client went away
                remaining = [s for s in self.sessions.get(uri, []) if s is not session]
                if remaining:
                    self.sessions[uri] = remaining
                else:
                    self.sessions.pop(uri, None)


def _same_connection(a: ServerSession, b: ServerSession) -> bool:
    return getattr(a, "_connection", a) is getattr(b, "_connection", b)


async def _own_proposal(ctx: ServerRequestContext[Any], uri: str) -> None:
    """Only the calling agent's own proposals can be subscribed to (like reading them)."""
    prefix = PROPOSAL_URI.split("{", 1)[0]
    state = ctx.lifespan_context
    await state.ready()
    try:
        if not uri.startswith(prefix):
            raise GateDenied([])
        agent = await state.gate.load_agent(state.agent_id())
        await state.gate.read_proposal(agent, uri[len(prefix):])
    except GateDenied:
        raise MCPError(code=INVALID_PARAMS, message=f"no proposal resource {uri} for this agent") from None


class ProposalEvents:
    def __init__(self, bus: SubscriptionBus, legacy: LegacySubscriptions | None = None):
        self.bus = bus
        self.legacy = legacy or LegacySubscriptions()

    async def changed(self, proposal_id: str) -> None:
        uri = proposal_uri(proposal_id)
        await self.bus.publish(ResourceUpdated(uri=uri))
        await self.legacy.notify(uri)

    @property
    def anyone_listening(self) -> bool:
        if self.legacy.sessions:
            return True
        # A custom (e.g. cross-replica) bus cannot tell: assume someone listens.
        return self.bus.listeners > 0 if isinstance(self.bus, ListenedBus) else True

    async def watch(self, gate: Gate, interval: float = POLL_SECONDS) -> None:
        """Notify changes made elsewhere: a live proposal that left its state (approved, declined, expired,
        executed) or changed (updated_at) since the last look."""
        from sqlalchemy import select

        from ledger.models import TradeProposal

        seen: dict[str, tuple[str, object]] | None = None
        while True:
            await asyncio.sleep(interval)
            if not self.anyone_listening:
                seen = None
                continue
            try:
                async with gate.sessions() as session:
                    rows = (await session.execute(
                        select(TradeProposal.id, TradeProposal.status, TradeProposal.updated_at)
                        .where(TradeProposal.status.in_(LIVE_PROPOSAL_STATES)))).all()
            except Exception as error:  # the database is briefly unavailable: try again next time
                log.warning("proposal_watch_failed", error=type(error).__name__)
                continue
            now_live = {row.id: (row.status, row.updated_at) for row in rows}
            if seen is not None:
                for proposal_id, before in seen.items():
                    if now_live.get(proposal_id) != before:
                        await self.changed(proposal_id)
            seen = now_live


def serve_legacy_subscriptions(server: MCPServer[Any], legacy: LegacySubscriptions) -> None:
    """Answer `resources/subscribe` / `resources/unsubscribe` on 2025 connections (MCPServer leaves them
    unserved); this also advertises `resources.subscribe` to those clients."""
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, legacy.subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, legacy.unsubscribe)


def guard_listen_subscriptions(server: MCPServer[Any]) -> None:
    """Refuse a 2026-07-28 `subscriptions/listen` that names a proposal the calling agent does not own, as
    `resources/subscribe` and `resources/read` do: the SDK's own listen handler honours any URI, so it is
    wrapped. Every URI is checked before the stream is acknowledged; one foreign URI refuses the whole listen."""
    lowlevel = server._lowlevel_server
    entry = lowlevel._request_handlers.get("subscriptions/listen")
    if entry is None:  # listening is not served at all
        return
    listen = entry.handler

    async def owned_listen(ctx: ServerRequestContext[Any], params: SubscriptionsListenRequestParams) -> Any:
        for uri in params.notifications.resource_subscriptions or ():
            await _own_proposal(ctx, str(uri))
        return await listen(ctx, params)

    lowlevel.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, owned_listen)


@contextlib.asynccontextmanager
async def proposal_notifications(gate: Gate, bus: SubscriptionBus | None,
                                 legacy: LegacySubscriptions | None = None) -> AsyncIterator[None]:
    """Wire the gate's proposal changes to the bus (and 2025 subscribers) for the life of a server."""
    if bus is None:
        yield
        return
    events = ProposalEvents(bus, legacy)
    gate.on_proposal_change(events.changed)
    watcher = asyncio.create_task(events.watch(gate), name="tradewarden-proposal-watch")
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
